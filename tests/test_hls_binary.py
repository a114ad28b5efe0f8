"""The binarized ops and PReLU in HLS: C simulation in both interfaces equals PyTorch eval and the interpreter.

Channel counts are odd and one row takes two 64-bit words and six bits, so the
packed words are partly empty; padding is +1 in one convolution and -1 in the
other; the slopes multiply in one interface and are one-hot shifts in the other.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch
from torch import nn

import qfx
from qfx.boards import load_board
from qfx.format import FixedType
from qfx.hls import float_inputs, generate, run_csim, write_project
from qfx.hls.binary import packed_words
from qfx.nn import (LayerQConfig, QBatchNorm2d, QBinaryConv1d, QBinaryConv2d, QBinaryLinear, QFlatten, QInput, QPReLU,
                    QRPReLU, QSign, QThermometer)


@pytest.fixture(autouse=True, scope="module")
def _cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A compile cache private to this module, so every test compiles what it generated."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("QFX_CACHE_DIR", str(tmp_path_factory.mktemp("qfx_cache")))
        yield


class _Conv2dNet(nn.Module):
    """Thermometer, binary conv (70 channels, +1 padding), BN, RPReLU, sign, grouped strided binary conv, PReLU,
    sign, binary dense."""

    def __init__(self, khot) -> None:
        super().__init__()
        cfg = LayerQConfig(output=FixedType(10, 4), scale=FixedType(6 if khot else 10, 2), shift=FixedType(6, 3),
                           scale_khot=khot, learn_int_bits=True)
        self.inp = QInput(LayerQConfig(output="ap_ufixed<8,1>"))
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


class _Conv1dNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = QInput(LayerQConfig(output="ap_fixed<8,2>"))
        self.sign = QSign()
        self.conv = QBinaryConv1d(3, 7, 3, padding=2, dilation=2)
        self.sign2 = QSign()
        self.conv2 = QBinaryConv1d(7, 5, 2, stride=2)

    def forward(self, x):
        return self.conv2(self.sign2(self.conv(self.sign(self.inp(x)))))


def _prepared(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Random slopes and shifts (both branches taken), BatchNorm statistics, binary points calibrated."""
    torch.manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in ("ract.weight", "ract.bias", "ract.shift", "act.weight"):
                p.uniform_(-0.7, 0.7)
    model.train()
    with torch.no_grad():
        model(x)
    qfx.calibrate(model, [x])
    return model.eval()


@pytest.mark.filterwarnings("ignore:export")  # near-zero constants reach the binary point range's end
@pytest.mark.parametrize("net,shape,io", [(_Conv2dNet, (2, 6, 6), "parallel"), (_Conv2dNet, (2, 6, 6), "stream"),
                                          (_Conv1dNet, (3, 11), "stream")])
def test_csim_equals_pytorch_and_interpreter(tmp_path: pathlib.Path, net, shape, io) -> None:
    torch.manual_seed(0)
    x = torch.rand(24, *shape) * 2 - (0.5 if net is _Conv2dNet else 1)
    model = _prepared(net(1 if io == "stream" else None) if net is _Conv2dNet else net(), x)
    graph = qfx.export(model, x[:1])
    with torch.no_grad():
        expected = model(x).double().numpy()
    assert np.array_equal(qfx.ir.run(graph, x.numpy()), expected)
    files = generate(graph, load_board("ultra96v2"), io, float_inputs(graph, x.numpy()))
    if net is _Conv2dNet:
        slopes = files["firmware/weights.h"].split("_slope[")[1]
        assert slopes.startswith("70] =\n    {{{")  == (io == "stream")  # one-hot slopes as digit tables (shifts)
        prelus = [n for n in graph.nodes if n.op == "prelu"]
        assert any(len(set(n.constants["slope"].frac_bits().tolist())) > 1 for n in prelus)
        assert any((n.constants["slope"].codes < 0).any() for n in prelus)
    report = run_csim(write_project(files, tmp_path / io))
    assert report.ok and report.mismatches == 0, report.summary()
    assert report.samples == len(x)


def test_weights_are_packed_words_with_empty_high_bits() -> None:
    """Packing against numpy's own little-endian bit packing, 70 bits into a 64-bit and a 6-bit-full word."""
    rng = np.random.default_rng(0)
    codes = rng.choice([-1, 1], size=(3, 70))
    words = packed_words(codes, 64)
    assert words.shape == (3, 2)
    as_bytes = np.packbits(codes > 0, axis=1, bitorder="little")  # 9 bytes per row, the last half empty
    expected = [[int.from_bytes(row[:8].tobytes(), "little"), int.from_bytes(row[8:].tobytes(), "little")]
                for row in as_bytes]
    assert words.tolist() == expected
    assert all(w[1] < 2 ** 6 for w in words.tolist())
