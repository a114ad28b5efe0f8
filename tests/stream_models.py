"""PyTorch models of the layers real CNNs use, for the streaming Verilog back end's tests (small inputs)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from qfx.nn import LayerQConfig, QBatchNorm2d, QBinaryConv2d, QBinaryLinear, QFlatten, QInput, QSign, QThermometer


class Pool1d(nn.Module):
    """A 1-d CNN with padded pooling: MaxPool1d(3, 2, padding 1) and AvgPool1d(3, 2, padding
    1), each on signed values (a maximum that took the padding's zero would show)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv1d(2, 4, 3, padding=1), nn.Conv1d(4, 4, 3, padding=1)
        self.max, self.avg = nn.MaxPool1d(3, stride=2, padding=1), nn.AvgPool1d(3, stride=2, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        y = self.max(self.c1(x))
        y = self.avg(F.relu6(self.c2(y)))
        return self.fc(y.mean(-1))


class Pool2d(nn.Module):
    """A ResNet-style stem: conv, BatchNorm, MaxPool2d(3, 2, padding 1); a padded AvgPool2d and a
    MaxPool2d in ceil mode on an odd image, all on signed values."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.max = nn.MaxPool2d(3, stride=2, padding=1)
        self.avg = nn.AvgPool2d(3, stride=1, padding=1)
        self.ceil = nn.MaxPool2d(2, ceil_mode=True)
        self.fc = nn.Linear(4 * 2 * 2, 3)

    def forward(self, x):
        y = self.max(self.bn(self.conv(x)))
        y = self.ceil(self.avg(y))
        return self.fc(torch.flatten(y, 1))


class Branches(nn.Module):
    """Branches of one input joined: a difference, a product of two streams, and the channel concat of the
    input, the difference and the product."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(2, 3, 1)
        self.fc = nn.Linear(8 * 4 * 4, 3)

    def forward(self, x):
        d = self.a(x) - F.relu(self.b(x))
        return self.fc(torch.flatten(torch.cat([x, d, d * F.hardtanh(self.b(x))], 1), 1))


class Binary2d(nn.Module):
    """Thermometer codes, a binarized conv padded with +1, BatchNorm, sign, a binarized dense layer."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = QInput(LayerQConfig(output="ap_ufixed<8,1,AP_RND_CONV,AP_SAT>"))
        self.thermo = QThermometer(2)
        self.conv = QBinaryConv2d(4, 6, 3, padding=1, pad_value=1)
        self.bn, self.sign = QBatchNorm2d(6), QSign()
        self.flat, self.fc = QFlatten(), QBinaryLinear(6 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(self.flat(self.sign(self.bn(self.conv(self.thermo(self.inp(x)))))))


class TwoStreams(nn.Module):
    """Two images in (their own convolutions, joined by an add), two outputs: the joined map and a pooled head."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(1, 3, 1)
        self.fc = nn.Linear(3, 2)

    def forward(self, x, s):
        y = F.relu(self.a(x) + self.b(s))
        return self.fc(y.mean((2, 3))), y
