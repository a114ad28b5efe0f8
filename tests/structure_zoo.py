"""Models of the structural ops (cat, -, *, constants, clamp, mean, 1-D and adaptive pooling, padding,
upsampling, transposed convolutions), whole models (a 1-d signal CNN, a U-Net, MobileNetV2-style blocks, a gated
MLP with a softmax head) and a chain that puts every casting one through every mode pair."""

from __future__ import annotations

import itertools
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

import qfx
from qfx.format import FixedType, Overflow, Rounding
from qfx.nn import (LayerQConfig, QAvgPool1d, QClamp, QConcat, QConstantAdd, QConstantMul, QInput, QMul, QSub)


class Signal1d(nn.Module):
    """A 1-d signal CNN: conv, MaxPool1d, AvgPool1d, ReLU6, a transposed conv, upsampling, global mean."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(2, 4, 3, padding=1)
        self.pool = nn.MaxPool1d(2)
        self.conv2 = nn.Conv1d(4, 6, 3, padding=1, groups=2)
        self.avg = nn.AvgPool1d(2)
        self.up = nn.ConvTranspose1d(6, 4, 3, stride=2, padding=1, output_padding=1)
        self.adaptive = nn.AdaptiveAvgPool1d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        y = self.pool(F.relu6(self.conv1(x)))
        y = self.avg(F.hardtanh(self.conv2(y), -2.0, 3.0))
        y = self.adaptive(F.relu(self.up(y)))
        return self.fc(y.mean(-1))


class UNet(nn.Module):
    """A small U-Net: down by a strided conv, up by ConvTranspose2d and by nearest upsampling, skip concat."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Conv2d(2, 4, 3, padding=1)
        self.down = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.mid = nn.Conv2d(6, 6, 3, padding=1)
        self.tconv = nn.ConvTranspose2d(6, 4, 2, stride=2)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.dec = nn.Conv2d(14, 4, 3)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        e = F.relu(self.enc(x))
        m = F.relu(self.mid(F.relu(self.down(e))))
        u = torch.cat([e, self.tconv(m), self.up(m)], 1)
        return self.head(F.relu(self.dec(F.pad(u, (1, 1, 1, 1)))))


class MobileBlocks(nn.Module):
    """MobileNetV2-style inverted residual blocks: expand 1x1, ReLU6, depthwise 3x3, hardswish, project, residual."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, padding=1)
        self.blocks = nn.ModuleList()
        for _ in range(2):
            self.blocks.append(nn.Sequential(
                nn.Conv2d(4, 8, 1), nn.BatchNorm2d(8), nn.ReLU6(),
                nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.Hardswish(),
                nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4)))
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        y = F.relu6(self.stem(x))
        for block in self.blocks:
            y = y + block(y)
        return self.fc(torch.flatten(self.pool(y), 1))


class GatedMLP(nn.Module):
    """A gated MLP: a GLU-style unit ``fc(x) * sigmoid(gate(x))``, a ``h * sigmoid(h)`` gate, a softmax head."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.gate = nn.Linear(6, 8), nn.Linear(6, 8)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        h = self.fc(x) * torch.sigmoid(self.gate(x))
        h = h * torch.sigmoid(h)
        return F.softmax(self.head(h), dim=1)


class Arithmetic(nn.Module):
    """a - b, a * b, constants added, subtracted, multiplied and divided, clamp, hardtanh, cat of features."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 8), nn.Linear(6, 8)
        self.drop, self.keep = nn.Dropout(0.5), nn.Identity()
        self.fc3 = nn.Linear(16, 3)

    def forward(self, x):
        a, b = self.fc1(x), self.keep(self.fc2(x))
        d = (a - b) * 0.75 + 1.5
        p = torch.clamp(a * b, min=-2.0, max=1.75) - 0.25
        h = F.hardtanh(d / 4) * 3
        return self.fc3(self.drop(torch.cat([h, p], dim=1)))


class Wiring1d(nn.Module):
    """What the Verilog back end takes: convs, a - b, constants, clamp, cat, zero padding, upsampling, ConvTranspose."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv1d(2, 2, 3, padding=1), nn.Conv1d(2, 2, 1)
        self.up = nn.ConvTranspose1d(4, 2, 2, stride=2)
        self.fc = nn.Linear(2 * 10, 3)

    def forward(self, x):
        a, b = self.conv1(x), self.conv2(x)
        d = torch.clamp(a - b * 0.5, -1.5, 2.0) + 0.25
        u = F.pad(F.hardtanh(self.up(torch.cat([d, x], 1))), (1, 1))
        return self.fc(torch.flatten(F.relu6(u), 1))


class Nearest2d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        self.fc = nn.Linear(2 * 4 * 6, 2)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.interpolate(self.conv(x), scale_factor=(2, 3)), 1))


class TwoByTwo(nn.Module):
    """Two inputs, two outputs: a 1-d signal and side features, joined; a class head and a per-step map."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 3, 3, padding=1)
        self.side = nn.Linear(4, 3)
        self.head = nn.Linear(3 * 6 + 3, 2)

    def forward(self, x, s):
        y = F.relu(self.conv(x))
        z = self.side(s)
        return self.head(torch.cat([torch.flatten(y, 1), z], 1)), y - 0.5


#: name -> (float model, input shape per sample)
MODELS = {"signal1d": (Signal1d, (2, 16)), "unet": (UNet, (2, 8, 8)), "mobile": (MobileBlocks, (2, 8, 8)),
          "gated": (GatedMLP, (6,)),
          "arithmetic": (Arithmetic, (6,)), "wiring1d": (Wiring1d, (2, 4)), "nearest2d": (Nearest2d, (1, 2, 2))}

#: Every rounding and overflow pair, 7 bits, 2 integer bits (saturation bits with the wrapping modes).
MODE_PAIRS = [FixedType(7, 2, rounding=r, overflow=o, sat_bits=1 if o in (Overflow.WRAP, Overflow.WRAP_SM) else 0)
              for r, o in itertools.product(Rounding, Overflow)]


class ModeChain(nn.Module):
    """Stage ``k`` runs every casting structural op with output format ``formats[k]``:
    ``h' = avgpool1d(cat([clamp((h * 0.75 - (x + 0.375)) * x), x], length))``, ``x`` the input."""

    def __init__(self, formats: list[FixedType]) -> None:
        super().__init__()
        self.input = QInput(LayerQConfig(output=FixedType(8, 3, rounding="RND_CONV", overflow="SAT")))
        self.stages = nn.ModuleList()
        for t in formats:
            cfg = LayerQConfig(output=t)
            self.stages.append(nn.ModuleDict({
                "scaled": QConstantMul(0.75, cfg, input_width=8), "shifted": QConstantAdd(0.375, cfg, input_width=8),
                "sub": QSub(cfg), "mul": QMul(cfg, 7, 8), "clamp": QClamp(-1.5, 1.25, cfg), "cat": QConcat(2, cfg),
                "pool": QAvgPool1d(2, cfg=cfg, input_width=7)}))

    def forward(self, x):
        x = self.input(x)
        h = x
        for s in self.stages:
            d = s["sub"](s["scaled"](h), s["shifted"](x))
            h = s["pool"](s["cat"](s["clamp"](s["mul"](d, x)), x))
        return h


def quantized(name: str, batch: int = 64, seed: int = 0, config: qfx.QConfig = qfx.QConfig(),
              shape: Optional[tuple[int, ...]] = None):
    """``MODELS[name]`` with warmed BatchNorm statistics, quantized and calibrated, in eval mode, and its inputs
    (of ``MODELS[name]``'s shape per sample unless ``shape`` is given)."""
    make, default_shape = MODELS[name]
    shape = shape or default_shape
    torch.manual_seed(seed)
    model = make()
    x = torch.randn((batch,) + shape, generator=torch.Generator().manual_seed(seed + 1)) * 2
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(x)
    qm = qfx.quantize_model(model.eval(), config, example_input=x)
    qfx.calibrate(qm, [x])
    return qm.eval(), x


def mode_chain(formats: list[FixedType] = MODE_PAIRS, batch: int = 64):
    """A calibrated :class:`ModeChain` whose formats keep their 2 integer bits, so that values overflow."""
    x = torch.randn(batch, 2, 4, generator=torch.Generator().manual_seed(3)) * 3
    model = ModeChain(formats).eval()
    return model, x
