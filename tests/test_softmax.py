"""Softmax and log-softmax on codes (``qfx.nn.QSoftmax``, IR op ``softmax``): one pipeline, every rounding and
overflow mode, PyTorch eval = training forward = ``qfx.ir.run`` = ``qfx.emulate``; back ends that cannot express
it refuse naming the node and the op."""

from __future__ import annotations

import itertools
import math
import sys
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import qfx
from qfx.format import FixedType, Overflow, Rounding
from qfx.nn import LayerQConfig, QAdd, QInput, QSoftmax
from reference_fixed import ap_fixed_code

PAIRS = list(itertools.product(Rounding, Overflow))
IN_TYPE = FixedType(8, 3, rounding="RND_CONV", overflow="SAT")
FEATURES = 6


def mode_softmax(rounding: Rounding, overflow: Overflow, log: bool = False) -> QSoftmax:
    """A softmax whose every cast (exp input, exp table, sum, second table, output) uses these modes and drops bits
    or overflows on the test inputs."""
    def t(width, int_bits, signed=True):  # ap_ufixed takes no AP_WRAP_SM
        return FixedType(width, int_bits, signed=signed or overflow is Overflow.WRAP_SM, rounding=rounding,
                         overflow=overflow)
    cfg = LayerQConfig(table=t(6, 3), accum=t(6, 2, signed=False), output=t(7, 3 if log else 1))
    return QSoftmax(1, log, cfg, exp_type=t(9, 1, signed=False), reciprocal_type=t(9, 3 if log else 1, signed=False))


class EveryMode(nn.Module):
    def __init__(self, log: bool, pairs=PAIRS) -> None:
        super().__init__()
        self.quant = QInput(LayerQConfig(output=IN_TYPE))
        self.softmaxes = nn.ModuleList(mode_softmax(q, o, log) for q, o in pairs)
        wide = LayerQConfig(output=FixedType(20, 12, rounding="RND_CONV", overflow="SAT"))
        self.adds = nn.ModuleList(QAdd(wide) for _ in pairs[1:])

    def forward(self, x):
        x = self.quant(x)
        total = self.softmaxes[0](x)
        for layer, add in zip(self.softmaxes[1:], self.adds):
            total = add(total, layer(x))
        return total


def inputs(batch: int = 96) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    codes = torch.randint(IN_TYPE.code_min, IN_TYPE.code_max + 1, (batch, FEATURES), generator=g)
    return (codes * IN_TYPE.lsb).float()


def reference(x: list[float], layer: QSoftmax) -> list[Fraction]:
    """The pipeline from its docstring, on rationals with the independent cast."""
    def code(v, t):
        return ap_fixed_code(v, t.width, t.int_bits, t.signed, t.rounding.name, t.overflow.name, t.sat_bits)

    def value(c, t):
        return Fraction(c, 2 ** t.frac_bits) if t.frac_bits >= 0 else Fraction(c * 2 ** -t.frac_bits)
    tt, st, et = layer.table_quantizer.fixed_type, layer.accum_quantizer.fixed_type, layer.exp_quantizer.fixed_type
    rt, out = layer.second_quantizer.fixed_type, layer.output_quantizer.fixed_type
    d = [Fraction(v) - max(Fraction(u) for u in x) for v in x]
    e = [value(code(Fraction(math.exp(float(value(code(v, tt), tt)))), et), et) for v in d]
    s = value(code(sum(e), st), st)
    second = math.log(max(float(s), sys.float_info.min)) if layer.log else (1 / float(s) if s else math.inf)
    r = value(code(Fraction(min(second, 1e300)), rt), rt)
    return [value(code(v - r if layer.log else ev * r, out), out) for v, ev in zip(d, e)]


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("rounding,overflow", PAIRS[::3])
def test_eval_matches_the_rational_reference(rounding, overflow, log):
    layer = mode_softmax(rounding, overflow, log).eval()
    x = inputs(24)
    y = layer(x)
    for row, got in zip(x.tolist(), y.tolist()):
        assert [Fraction(v) for v in got] == reference(row, layer)


@pytest.mark.parametrize("log", [False, True])
def test_every_mode_pytorch_training_interpreter_and_emulator_agree(log):
    model = EveryMode(log).eval()
    x = inputs()
    with torch.no_grad():
        expected = model(x).double().numpy()
        assert np.array_equal(model.train()(x).double().numpy(), expected)  # training runs the same pipeline
    graph = qfx.export(model.eval(), x[:1])
    assert [n.op for n in graph.nodes].count("softmax") == len(PAIRS)
    np.testing.assert_array_equal(qfx.ir.run(graph, x.numpy()), expected)
    np.testing.assert_array_equal(qfx.emulate(graph, x.numpy()), expected)


def test_quantize_model_converts_calibrates_and_trains_a_softmax_head():
    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(5, 4)
            self.soft = nn.Softmax(dim=1)

        def forward(self, x):
            y = self.fc(x)
            return self.soft(y) + F.log_softmax(y, dim=-1) + y.softmax(dim=1)

    x = torch.randn(128, 5) * 2
    qm = qfx.quantize_model(Head(), example_input=x)
    kinds = sorted((m.log, m.dim) for m in qm.modules() if isinstance(m, QSoftmax))
    assert kinds == [(False, 1), (False, 1), (True, -1)]
    formats = qfx.calibrate(qm, [x])
    assert {"soft.table", "soft.accum", "soft.output"} <= set(formats)
    assert qfx.bit_cost(qm.eval(), x) > 2 * (1 << 10) * 16
    graph = qfx.export(qm, x[:1])
    np.testing.assert_array_equal(qfx.ir.run(graph, x.numpy()), qm(x).double().detach().numpy())
    qm.train()
    qm(x)[:, 0].sum().backward()
    assert qm.fc.weight.grad.abs().sum() > 0


def test_rtl_refuses_naming_the_node_and_the_op():
    from qfx.rtl import RTLError
    from qfx.rtl.generate import render
    model = EveryMode(False, PAIRS[:1]).eval()
    graph = qfx.export(model, inputs()[:1])
    with pytest.raises(RTLError, match=r"node 'softmaxes_0'.*op 'softmax'"):
        render(graph)


def test_export_refuses_a_softmax_over_another_dimension():
    model = nn.Sequential(QInput(LayerQConfig(output=IN_TYPE)), QSoftmax(dim=2))
    with pytest.raises(qfx.ir.IRError, match="dimension 2"):
        qfx.export(model, torch.zeros(1, 3, 4))


@pytest.mark.parametrize("io", ["parallel", "stream"])
def test_hls_csim_is_bit_exact(tmp_path, io):
    from qfx.boards import load_board
    from qfx.hls import float_inputs, generate, run_csim, write_project
    model = EveryMode(io == "stream", PAIRS[::4]).eval()  # softmax in one interface, log-softmax in the other
    x = inputs(48)
    graph = qfx.export(model, x[:1])
    with torch.no_grad():
        np.testing.assert_array_equal(qfx.ir.run(graph, x.numpy()), model(x).double().numpy())
    report = run_csim(write_project(generate(graph, load_board("ultra96v2"), io, float_inputs(graph, x.numpy())),
                                    tmp_path / io))
    assert report.ok and report.mismatches == 0, report.summary()
