"""Softmax and log-softmax on codes (``qfx.nn.QSoftmax``, IR op ``softmax``): one pipeline, every rounding and
overflow mode, PyTorch eval = training forward = ``qfx.ir.run`` = ``qfx.emulate``; back ends that cannot express
it refuse naming the node and the op."""

from __future__ import annotations

import itertools
import math
import sys
import warnings
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


# ------------------------------------------------------------------ QONNX
def _qonnx_pairs():
    from qfx.onnx import ROUNDING_MODES
    return [(q, o) for q, o in PAIRS if q in ROUNDING_MODES and o in (Overflow.SAT, Overflow.SAT_SYM)]


class DefaultHead(nn.Module):
    """A dense layer into softmax and log-softmax of qfx's default formats (16-bit tables: products of 32 bits)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 6)

    def forward(self, x):
        y = self.fc(x)
        return F.softmax(y, dim=1) + F.log_softmax(y, dim=1)


def _default_head():
    torch.manual_seed(5)
    x = torch.randn(64, 5) * 2
    qm = qfx.quantize_model(DefaultHead(), example_input=x)
    qfx.calibrate(qm, [x])
    return qm.eval(), x


@pytest.mark.parametrize("name", ["every mode", "every mode, log", "default formats"])
def test_qonnx_execution_is_bit_exact(name):
    """Softmax and log-softmax, every mode QONNX's Quant expresses and the default 16-bit tables: each tensor
    under qonnx's executor equals qfx.ir.run, and the output PyTorch's eval."""
    model, x = (_default_head() if name == "default formats" else
                (EveryMode(name.endswith("log"), _qonnx_pairs()).eval(), inputs(64)))
    graph = qfx.export(model, x[:1])
    tensors = _assert_qonnx_matches_the_interpreter(graph, x.numpy())
    with torch.no_grad():
        expected = model(x).double().numpy()
    np.testing.assert_array_equal(tensors[graph.outputs[0]].astype(np.float64), expected)


def _assert_qonnx_matches_the_interpreter(graph, x: np.ndarray) -> dict:
    """Export with no float32 warning, run under qonnx's executor, compare every IR tensor; returns the tensors."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    from qfx.onnx import to_onnx
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no float32 rounding anywhere
        onnx_model = to_onnx(graph, batch_size=len(x))
    ops = [n.op_type for n in onnx_model.graph.node]
    softmaxes = [n.op for n in graph.nodes].count("softmax")
    assert ops.count("Gather") == 2 * softmaxes and ops.count("ReduceMax") == ops.count("ReduceSum") == softmaxes
    tensors = execute_onnx(ModelWrapper(onnx_model), {graph.inputs[0].name: x}, return_full_exec_context=True)
    codes = qfx.ir.run_codes(graph, [qfx.ir.input_codes(x, graph.inputs[0].type)])
    for node in graph.nodes:
        expected = qfx.ir.values_of(codes[node.name], node.output.type)
        assert np.array_equal(np.asarray(tensors[node.name], np.float64), expected), node.describe()
    return tensors


def test_qonnx_product_beyond_float32_stays_exact():
    """exp * reciprocal = (1 - 2**-16)(1 + 2**-16) = 1 - 2**-32, which float32 rounds to 1: truncated to 9
    fractional bits it must stay 511/512."""
    from qfx.ir import Constant, Graph, Node, Value
    table, total = FixedType(4, 2, overflow="SAT"), FixedType(4, 2, signed=False, overflow="SAT")
    exp_t, rec_t = FixedType(16, 0, signed=False), FixedType(18, 2, signed=False)
    out = FixedType(10, 1, signed=False, rounding="TRN", overflow="SAT")
    node = Node("soft", "softmax", ("x",), Value("soft", (1,), out), attrs={"log": False},
                formats={"table": table, "accum": total},
                constants={"exp": Constant(np.full(16, 2 ** 16 - 1), (exp_t,)),
                           "reciprocal": Constant(np.full(16, 2 ** 16 + 1), (rec_t,))})
    graph = Graph("product", [Value("x", (1,), FixedType(6, 3, overflow="SAT"))], [node], ["soft"]).check()
    x = np.array([[0.5], [-1.0], [2.0]], np.float32)
    assert (qfx.ir.run(graph, x) == 511 / 512).all()
    _assert_qonnx_matches_the_interpreter(graph, x)


def test_qonnx_refuses_a_wrapping_softmax_naming_the_node():
    from qfx.onnx import ONNXExportError, to_onnx
    model = EveryMode(False, [(Rounding.RND_CONV, Overflow.WRAP)]).eval()
    graph = qfx.export(model, inputs()[:1])
    with pytest.raises(ONNXExportError, match=r"softmaxes_0.*AP_WRAP"):
        to_onnx(graph)
