"""Small binarized networks shared by the back-end tests: odd channel counts, words left partly empty."""

from __future__ import annotations

import torch
from torch import nn

import qfx
from qfx.observers import MinMaxObserver
from qfx.format import FixedType
from qfx.nn import (LayerQConfig, QBatchNorm2d, QBinaryConv1d, QBinaryConv2d, QBinaryLinear, QFlatten, QInput, QPReLU,
                    QRPReLU, QSign, QThermometer)


class Conv2dNet(nn.Module):
    """Thermometer, binary conv (70 channels, +1 padding), BN, RPReLU, sign, grouped strided binary conv, PReLU,
    sign, binary dense."""

    def __init__(self, khot) -> None:
        super().__init__()
        modes = {"rounding": "RND_CONV", "overflow": "SAT"}
        cfg = LayerQConfig(output=FixedType(10, 4, **modes), scale=FixedType(6 if khot else 8, 2, **modes),
                           shift=FixedType(6, 3, **modes),
                           scale_khot=khot, learn_int_bits=True)
        self.inp = QInput(LayerQConfig(output="ap_ufixed<8,1,AP_RND_CONV,AP_SAT>"))
        self.thermo = QThermometer(3)
        self.conv1 = QBinaryConv2d(6, 70, 3, padding=1, pad_value=1)
        self.bn = QBatchNorm2d(70)
        self.ract = QRPReLU(70, cfg=cfg)
        self.sign1 = QSign()
        self.conv2 = QBinaryConv2d(70, 10, 3, stride=2, padding=1, groups=2)
        self.act = QPReLU(1, cfg=cfg)
        self.sign2 = QSign()
        self.flat = QFlatten()
        self.fc = QBinaryLinear(10 * 3 * 3, 5)

    def forward(self, x):
        x = self.sign1(self.ract(self.bn(self.conv1(self.thermo(self.inp(x))))))
        return self.fc(self.flat(self.sign2(self.act(self.conv2(x)))))


class Conv1dNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = QInput(LayerQConfig(output="ap_fixed<8,2,AP_RND_CONV,AP_SAT>"))
        self.sign = QSign()
        self.conv = QBinaryConv1d(3, 7, 3, padding=2, dilation=2)
        self.sign2 = QSign()
        self.conv2 = QBinaryConv1d(7, 5, 2, stride=2)

    def forward(self, x):
        return self.conv2(self.sign2(self.conv(self.sign(self.inp(x)))))


def prepared(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Random slopes and shifts (both branches taken), BatchNorm statistics, binary points from the ranges."""
    torch.manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in ("ract.weight", "ract.bias", "ract.shift", "act.weight"):
                p.uniform_(-0.7, 0.7)
    model.train()
    with torch.no_grad():
        model(x)
    qfx.calibrate(model, [x], observer=MinMaxObserver, constant_observer=MinMaxObserver)  # fast; any would do
    return model.eval()
