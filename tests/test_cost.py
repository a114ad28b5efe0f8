"""qfx.bit_cost (differentiable bit-operations) and qfx.summary."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import qfx
from qfx import QConfig, quantize_model
from qfx.cost import layer_costs


class Res(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        y = F.relu(self.bn(self.conv(x)) + x)
        return self.fc(torch.flatten(self.pool(y), 1))


X = torch.randn(2, 2, 4, 4)


def test_bit_cost_value_of_a_linear_layer():
    torch.manual_seed(0)
    q = quantize_model(nn.Sequential(nn.Linear(4, 3, bias=False)), QConfig(weight=6, activation=8),
                       example_input=torch.randn(5, 4))
    # 3 outputs x 4 products of 8 x 6 bits, plus 3 x 3 additions of 8 + 6 + 2 bits
    assert float(qfx.bit_cost(q)) == 3 * 4 * 8 * 6 + 3 * 3 * 16


def test_bit_cost_differentiable_with_learned_binary_points():
    q = quantize_model(Res(), QConfig(learn_int_bits=True), example_input=X)
    with torch.no_grad():  # misalign the residual add's operands
        q.bn.output_quantizer.int_bits.fill_(1.0)
    cost = qfx.bit_cost(q)
    assert cost.requires_grad and cost.dim() == 0
    cost.backward()
    grads = [p.grad for n, p in q.named_parameters() if n.endswith("int_bits_move")]
    assert any(g is not None and bool((g != 0).any()) for g in grads)
    # the residual adder widens as the operands' binary points move apart: gradient pulls them together
    assert float(q.bn.output_quantizer.int_bits_move.grad) < 0


def test_bit_cost_decreases_when_widths_shrink():
    wide = quantize_model(Res(), QConfig(weight=8, activation=8), example_input=X)
    narrow = quantize_model(Res(), QConfig(weight=4, activation=6), example_input=X)
    khot = quantize_model(Res(), QConfig(weight=8, activation=8, multiplier_free="khot:2"), example_input=X)
    assert float(qfx.bit_cost(narrow)) < float(qfx.bit_cost(wide))
    assert float(qfx.bit_cost(khot)) < float(qfx.bit_cost(wide))
    names = [c.name for c in layer_costs(wide)]
    assert names == ["x_quant", "conv", "bn", "add", "relu", "pool", "flatten", "fc"]


def test_bit_cost_needs_shapes():
    q = quantize_model(Res())
    with pytest.raises(ValueError, match="example_input"):
        qfx.bit_cost(q)
    assert float(qfx.bit_cost(q, X)) > 0


def test_summary_lists_every_layer():
    q = quantize_model(Res(), QConfig(multiplier_free="khot:2"), example_input=X)
    lines = []
    text = qfx.summary(q, print_fn=lines.append)
    assert lines == [text]
    for name in ("x_quant", "conv", "bn", "add", "relu", "pool", "flatten", "fc", "total"):
        assert any(line.startswith(name + " ") for line in text.splitlines()), name
    assert "k-hot(2)" in text and "ap_fixed<8," in text and "weight" in text and "bias" in text
    assert f"{float(qfx.bit_cost(q)):,.0f}" in text.splitlines()[-1]


def test_summary_of_a_hand_built_model():
    model = nn.Sequential(qfx.nn.QInput(), qfx.nn.QLinear(4, 2))
    text = qfx.summary(model, torch.randn(3, 4), print_fn=None)
    assert "QLinear" in text and "QInput" in text


def test_bit_cost_gradient_of_learned_word_lengths_matches_finite_differences():
    """With learned widths the cost is linear in each word length between the max() kinks: its gradient (through
    ``round(W)``, straight-through) equals the cost's change when a width drops by one bit."""
    from qfx.nn.quantizers import STEP_SCALE
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 3, bias=False), nn.ReLU(), nn.Linear(3, 2, bias=False))
    x = torch.randn(4, 5)
    q = quantize_model(model, QConfig(weight=6, activation=8, learn_int_bits=True, learn_widths=True),
                       example_input=x)
    quantizers = {"input": q.input_1_quant.output_quantizer, "w0": q.get_submodule("0").weight_quantizer,
                  "out0": q.get_submodule("0").output_quantizer, "w2": q.get_submodule("2").weight_quantizer}
    cost = qfx.bit_cost(q)
    cost.backward()
    base = float(cost.detach())
    # by hand: Linear(5 -> 3) is 3 * (5 * W_in * W_w + 4 * (W_in + W_w + 3)); Linear(3 -> 2) likewise; ReLU 3 * W
    assert base == 3 * (5 * 8 * 6 + 4 * (8 + 6 + 3)) + 3 * 8 + 2 * (3 * 8 * 6 + 2 * (8 + 6 + 2))
    for name, quantizer in quantizers.items():
        with torch.no_grad():
            quantizer.width -= 1
        narrower = float(qfx.bit_cost(q).detach())
        with torch.no_grad():
            quantizer.width += 1
        assert float(quantizer.width_move.grad) * STEP_SCALE == pytest.approx(base - narrower), name
    assert float(quantizers["w0"].width_move.grad) * STEP_SCALE == 3 * (5 * 8 + 4)
