"""Binary layers: sign, thermometer, binary dense and convolutions, PyTorch eval = interpreter = emulator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import qfx
from binary_zoo import Conv1dNet
from qfx.emulator import emulate, generate
from qfx.format import BIPOLAR
from qfx.nn.binary import sum_type
from qfx.ir import IRError
from qfx.nn import (LayerQConfig, QBatchNorm2d, QBinaryConv1d, QBinaryConv2d, QBinaryLinear, QFlatten, QInput,
                    QSign, QThermometer)


def _reference_sums(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Independent reference: count agreeing signs bit by bit, ``2 * agree - N``, row by row."""
    out = np.zeros((x.shape[0], w.shape[0]), dtype=np.int64)
    for n in range(x.shape[0]):
        for o in range(w.shape[0]):
            agree = sum(1 for a, b in zip(x[n], w[o]) if (a > 0) == (b > 0))
            out[n, o] = 2 * agree - x.shape[1]
    return out


class _Conv2dNet(nn.Module):
    """Thermometer, two binary convolutions (odd channel counts, one with 70 channels: two words), a binary dense."""

    def __init__(self, groups: int = 1) -> None:
        super().__init__()
        self.inp = QInput(LayerQConfig(output="ap_ufixed<8,1>"))
        self.thermo = QThermometer(3)
        self.conv1 = QBinaryConv2d(6, 70, 3, padding=1, pad_value=1)
        self.bn = QBatchNorm2d(70)
        self.sign1 = QSign()
        self.conv2 = QBinaryConv2d(70, 10, 3, stride=2, padding=1, groups=groups)
        self.sign2 = QSign()
        self.flat = QFlatten()
        self.fc = QBinaryLinear(10 * 3 * 3, 5)

    def forward(self, x):
        x = self.sign1(self.bn(self.conv1(self.thermo(self.inp(x)))))
        return self.fc(self.flat(self.sign2(self.conv2(x))))


def _trained_a_little(model: nn.Module, x: torch.Tensor) -> nn.Module:
    model.train()
    model(x).sum().backward()  # the straight-through gradients run
    with torch.no_grad():
        model(x)  # BatchNorm statistics
    return model.eval()


def _chain(model: nn.Module, x: torch.Tensor) -> None:
    graph = qfx.export(model, x[:1])
    expected = model(x).detach().double().numpy()
    assert np.array_equal(qfx.ir.run(graph, x.numpy()), expected)
    assert np.array_equal(emulate(graph, x.numpy()), expected)


@pytest.mark.parametrize("groups", [1, 2])
def test_binary_conv2d_chain(groups):
    torch.manual_seed(0)
    x = torch.rand(16, 2, 6, 6)
    _chain(_trained_a_little(_Conv2dNet(groups), x), x)


def test_binary_conv1d_chain():
    torch.manual_seed(1)
    x = torch.randn(16, 3, 11)
    _chain(_trained_a_little(Conv1dNet(), x), x)


def test_binary_dense_matches_popcount_reference():
    torch.manual_seed(2)
    layer = QBinaryLinear(67, 9).eval()  # 67 bits: a word and three bits
    x = torch.where(torch.rand(5, 67) < 0.5, 1.0, -1.0)
    w = torch.where(layer.weight >= 0, 1, -1).numpy()
    assert np.array_equal(layer(x).numpy().astype(np.int64), _reference_sums(x.numpy(), w))


def test_sign_and_weights_have_clipped_straight_through_gradients():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0], requires_grad=True)
    y = QSign()(x)
    assert y.tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0]
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]
    layer = QBinaryLinear(2, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.3, -1.5]]))
    layer(torch.ones(1, 2)).sum().backward()
    assert layer.weight.grad.tolist() == [[1.0, 0.0]]


def test_thermometer_encodes_levels_channel_by_channel():
    thermo = QThermometer(thresholds=[0.25, 0.5, 0.75])
    y = thermo(torch.tensor([[[0.1], [0.6]]]))  # (N=1, C=2, L=1)
    assert y[0, :, 0].tolist() == [-1, -1, -1, 1, 1, -1]
    assert thermo.formats()["output"] == BIPOLAR


def test_binary_ops_refuse_non_binary_inputs():
    model = nn.Sequential(QInput(LayerQConfig(output="ap_fixed<4,2>")), QBinaryLinear(4, 2))
    with pytest.raises(IRError, match="must be binary"):
        qfx.export(model.eval(), torch.zeros(1, 4))


def test_emulator_packs_words_and_uses_popcount():
    torch.manual_seed(3)
    x = torch.rand(2, 2, 6, 6)
    source = generate(qfx.export(_trained_a_little(_Conv2dNet(), x), x[:1]))
    assert "qfx::binary_conv2d<" in source and "qfx::binary_dense<" in source
    assert "std::uint64_t" in source


class _FloatNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Conv2d(1, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.mid = nn.Conv2d(4, 5, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(5)
        self.flat = nn.Flatten()
        self.last = nn.Linear(5 * 16, 3)

    def forward(self, x):
        return self.last(self.flat(self.bn2(self.mid(self.bn1(self.first(x))))))


def test_quantize_model_makes_chosen_layers_binary():
    """A type override makes every Conv2d binary, a name override keeps the first one fixed-point."""
    x = torch.rand(8, 1, 4, 4)
    config = qfx.QConfig(activation=8, overrides={nn.Conv2d: {"binary": True}, "first": {"binary": False}})
    qm = qfx.quantize_model(_FloatNet(), config, x[:1])
    assert type(qm.first) is qfx.nn.QConv2d and isinstance(qm.mid, QBinaryConv2d)
    assert type(qm.last) is qfx.nn.QLinear and isinstance(qm.mid_sign, QSign)
    qm.train()
    qm(x).sum().backward()
    assert qm.mid.weight.grad is not None
    qfx.calibrate(qm, [x])
    _chain(qm.eval(), x)
    with pytest.raises(qfx.UnsupportedOperationError, match="bias=False"):
        qfx.quantize_model(_FloatNet(), qfx.QConfig(overrides={"first": {"binary": True}}))


class _SmallNet(nn.Module):
    """Small enough to unroll in Verilog: thermometer, binary conv (odd channels, -1 padding), sign, dense."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = QInput(LayerQConfig(output="ap_ufixed<6,1>"))
        self.thermo = QThermometer(2)
        self.conv = QBinaryConv2d(2, 3, 3, padding=1, stride=2)
        self.sign = QSign()
        self.flat = QFlatten()
        self.fc = QBinaryLinear(3 * 2 * 2, 5)

    def forward(self, x):
        return self.fc(self.flat(self.sign(self.conv(self.thermo(self.inp(x))))))


class _Small1d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = QInput(LayerQConfig(output="ap_fixed<5,2>"))
        self.sign = QSign()
        self.conv = QBinaryConv1d(3, 5, 3, padding=1, pad_value=1)

    def forward(self, x):
        return self.conv(self.sign(self.inp(x)))


@pytest.mark.parametrize("net,shape,simulator", [(_SmallNet, (1, 4, 4), "icarus"), (_SmallNet, (1, 4, 4), "verilator"),
                                                 (_Small1d, (3, 5), "icarus")])
def test_binary_rtl_matches(tmp_path, net, shape, simulator):
    """XNOR and popcount adder trees in Verilog (no ``*``) against the interpreter, which matches PyTorch."""
    from qfx.rtl import generate, simulate
    torch.manual_seed(4)
    model = net().eval()
    x = torch.rand(64, *shape) * (1 if net is _SmallNet else 4) - (0 if net is _SmallNet else 2)
    graph = qfx.export(model, x[:1])
    assert np.array_equal(qfx.ir.run(graph, x.numpy()), model(x).detach().double().numpy())
    design = generate(graph, tmp_path / "design")
    assert " * " not in "".join(p.read_text() for p in design.rglob("*.v"))
    simulate(design, simulator)


class _Scaled(nn.Module):
    """Scaled binary convolution and dense layers, each followed by the BatchNorm its scale folds into."""

    def __init__(self) -> None:
        super().__init__()
        cfg = LayerQConfig(scale="ap_fixed<6,1,AP_RND_CONV,AP_SAT>")
        self.inp = QInput(LayerQConfig(output="ap_fixed<8,2>"))
        self.sign = QSign()
        self.conv = QBinaryConv2d(3, 5, 3, padding=1, scale=True, cfg=cfg)
        self.bn = QBatchNorm2d(5, input_width=self.conv.formats()["output"].width)
        self.sign2 = QSign()
        self.flat = QFlatten()
        self.fc = QBinaryLinear(5 * 16, 4, scale=True, cfg=cfg)
        self.bn2 = qfx.nn.QBatchNorm1d(4, input_width=self.fc.formats()["output"].width)

    def forward(self, x):
        x = self.sign2(self.bn(self.conv(self.sign(self.inp(x)))))
        return self.bn2(self.fc(self.flat(x)))


def test_scale_folds_into_the_next_batchnorm_exactly():
    torch.manual_seed(6)
    x = torch.randn(32, 3, 4, 4)
    model = _trained_a_little(_Scaled(), x)
    with torch.no_grad():
        model.conv.scale.uniform_(-1.5, 1.5)  # both signs, several binary digits
    assert model.conv.scale.grad is not None  # the scale trains
    graph = qfx.export(model, x[:1])
    conv, bn = graph.nodes[1:3]
    assert (conv.op, bn.op) == ("binary_conv2d", "scale_shift")
    assert conv.output.type == sum_type(27)  # the node keeps the integer sum
    # The folded scale is the product of the two quantized constants, value for value.
    alpha = qfx.quantize(model.conv.scale.detach().double(), model.conv.scale_quantizer.fixed_type)
    k = model.bn.constants()["scale"].values
    folded = bn.constants["scale"]
    assert np.array_equal(folded.codes * 2.0 ** -folded.frac_bits(), (alpha * k).numpy())
    expected = model(x).detach().double().numpy()
    assert np.array_equal(qfx.ir.run(graph, x.numpy()), expected)
    assert np.array_equal(emulate(graph, x.numpy()), expected)


def test_a_scale_without_a_batchnorm_after_it_is_refused_naming_the_layer():
    model = nn.Sequential(QInput(LayerQConfig(output="ap_fixed<8,2>")), QSign(), QBinaryLinear(6, 3, scale=True),
                          QSign()).eval()
    with pytest.raises(IRError, match="layer '2' has a per-channel scale.*BatchNorm"):
        qfx.export(model, torch.zeros(1, 6))
