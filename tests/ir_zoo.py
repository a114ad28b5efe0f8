"""Small float models and their quantized, calibrated, eval-mode versions for the IR and back-end tests."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

import qfx


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(12, 16), nn.Linear(16, 16), nn.Linear(16, 5)

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class CNN(nn.Module):
    """Conv/BN/ReLU, stride 2, non-square input, max, average and global pooling, a residual add."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 6, (3, 1), padding=(1, 0), bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.pool = nn.MaxPool2d(2)
        self.down = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.point = nn.Conv2d(8, 8, 1)
        self.avg = nn.AvgPool2d(2, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(y + self.bn2(self.conv2(y)))
        y = self.pool(y)
        y = torch.relu(self.down(y))
        y = self.point(y)
        y = self.avg(y)
        return self.fc(torch.flatten(self.gap(y), 1))


class Odd(nn.Module):
    """Conv1d with dilation and 'same' padding, grouped conv, ReLU6, LeakyReLU, BatchNorm1d, 1x1 images."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 6, 4, padding="same", dilation=2)
        self.bn = nn.BatchNorm1d(6)
        self.act = nn.ReLU6()
        self.grouped = nn.Conv1d(6, 6, 3, stride=2, groups=3)
        self.leaky = nn.LeakyReLU(0.1)
        self.fc = nn.Linear(6 * 4, 3)

    def forward(self, x):
        y = self.act(self.bn(self.conv(x)))
        y = self.leaky(self.grouped(y))
        return self.fc(y.flatten(1))


def warm(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Train-mode passes so BatchNorm statistics differ from their defaults, then eval."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x)
    return model.eval()


def quantized(make: Callable[[], nn.Module], x: torch.Tensor, config: qfx.QConfig = qfx.QConfig(),
              seed: int = 0) -> torch.fx.GraphModule:
    """``make()`` with warmed statistics, quantized with ``config``, calibrated on ``x``, in eval mode."""
    torch.manual_seed(seed)
    model = warm(make(), x)
    qm = qfx.quantize_model(model, config, example_input=x)
    qfx.calibrate(qm, [x])
    return qm.eval()


def inputs(shape: tuple[int, ...], batch: int = 32, seed: int = 1, scale: float = 3.0) -> torch.Tensor:
    """A reproducible float batch."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn((batch,) + shape, generator=g) * scale


ZOO = {"mlp": (MLP, (12,)), "cnn": (CNN, (2, 10, 6)), "odd": (Odd, (4, 9))}
