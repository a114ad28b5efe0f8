"""QPReLU and QRPReLU: quantize_model converts nn.PReLU and RPReLU; PyTorch eval = interpreter = emulator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import qfx
from qfx.emulator import emulate
from qfx.nn import QPReLU, QRPReLU, RPReLU


class _Net(nn.Module):
    def __init__(self, shared: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3)
        self.act = nn.PReLU(1 if shared else 5)
        self.bn = nn.BatchNorm2d(5)
        self.ract = RPReLU(5)

    def forward(self, x):
        return self.ract(self.bn(self.act(self.conv(x))))


def _randomized(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "act" in name:
                p.uniform_(-0.7, 0.7)
    return model


def _converted(model: nn.Module, x: torch.Tensor, config: qfx.QConfig) -> nn.Module:
    qm = qfx.quantize_model(model, config, x[:1])
    qm.train()
    qm(x).sum().backward()  # gradients reach the slopes and shifts
    assert qm.act.weight.grad is not None and qm.ract.shift.grad is not None
    qfx.calibrate(qm, [x])
    return qm.eval()


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("khot", [None, "khot:1"])
def test_prelu_chain(shared, khot):
    x = torch.randn(32, 3, 6, 6)
    config = qfx.QConfig(activation=10, scale=6, shift=6, multiplier_free=khot)
    qm = _converted(_randomized(_Net(shared)), x, config)
    assert isinstance(qm.act, QPReLU) and isinstance(qm.ract, QRPReLU)
    graph = qfx.export(qm, x[:1])
    expected = qm(x).detach().double().numpy()
    assert np.array_equal(qfx.ir.run(graph, x.numpy()), expected)
    assert np.array_equal(emulate(graph, x.numpy()), expected)
    if khot:
        slopes = graph.nodes[1].constants["slope"].codes
        assert all(bin(abs(int(c))).count("1") <= 1 for c in slopes)


def test_rprelu_formula_against_float():
    """With fine formats, QRPReLU follows the float RPReLU it came from."""
    torch.manual_seed(1)
    float_layer = _randomized(nn.Sequential(RPReLU(4)))[0]
    cfg = qfx.nn.LayerQConfig(output="ap_fixed<24,8>", scale="ap_fixed<16,2>", shift="ap_fixed<16,4>")
    q = QRPReLU.from_float(float_layer, cfg, input_width=24).eval()
    x = torch.randn(8, 4, 3)
    assert torch.allclose(q(x).float(), float_layer(x), atol=1e-3)


@pytest.mark.parametrize("khot", [None, "khot:2"])
def test_prelu_rtl_on_icarus(tmp_path, khot):
    """The Verilog prelu (shift-add slopes, both shifts) matches the interpreter on Icarus."""
    from qfx.rtl import generate, simulate
    x = torch.randn(64, 3, 4, 4)
    model = nn.Sequential(nn.Conv2d(3, 3, 1), RPReLU(3), nn.PReLU(3))
    config = qfx.QConfig(activation=6, scale=5, shift=5, multiplier_free=khot)
    qm = qfx.quantize_model(_randomized(model), config, x[:1])
    qfx.calibrate(qm, [x])
    graph = qfx.export(qm.eval(), x[:1])
    design = generate(graph, tmp_path / "design")
    assert " * " not in "".join(p.read_text() for p in design.rglob("*.v"))
    simulate(design, "icarus")
