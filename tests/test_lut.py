"""Lookup tables (``qfx.nn.QTable``, IR op ``table``): exact tables, training, and one chain of equality
PyTorch eval = ``qfx.ir.run`` = ``qfx.emulate`` = HLS C simulation (both interfaces) = RTL simulation = QONNX.
"""

from __future__ import annotations

import itertools
import pathlib
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import qfx
from qfx.format import FixedType, Overflow, Rounding
from qfx.nn import LayerQConfig, QAdd, QInput, QTable
from reference_fixed import ap_fixed_code

PAIRS = list(itertools.product(Rounding, Overflow))
IN_TYPE = FixedType(8, 3, rounding="RND_CONV", overflow="SAT")  # the graph input: 256 codes, all of them tested


def shifted_tanh(v: torch.Tensor) -> torch.Tensor:
    """Overflows a 1-integer-bit output on both sides and is not symmetric: every mode acts."""
    return 1.5 * torch.tanh(v) + 0.1


def mode_cfg(rounding: Rounding, overflow: Overflow) -> LayerQConfig:
    # The table's input drops 2 fractional bits of the input and cannot hold [-4, 4): its cast rounds and overflows.
    return LayerQConfig(table=FixedType(6, 2, rounding=rounding, overflow=overflow),
                        output=FixedType(6, 1, rounding=rounding, overflow=overflow))


class EveryMode(nn.Module):
    """One table per (rounding, overflow) pair on the same input, summed by adds wide enough to be exact."""

    def __init__(self, pairs=PAIRS) -> None:
        super().__init__()
        self.quant = QInput(LayerQConfig(output=IN_TYPE))
        self.tables = nn.ModuleList(QTable(shifted_tanh, "shifted_tanh", mode_cfg(q, o)) for q, o in pairs)
        wide = LayerQConfig(output=FixedType(16, 10, rounding="RND_CONV", overflow="SAT"))
        self.adds = nn.ModuleList(QAdd(wide) for _ in pairs[1:])

    def forward(self, x):
        x = self.quant(x)
        total = self.tables[0](x)
        for table, add in zip(self.tables[1:], self.adds):
            total = add(total, table(x))
        return total


def every_code(t: FixedType, features: int = 2) -> torch.Tensor:
    """Every value of ``t``, in ``features`` columns (the second reversed)."""
    values = torch.arange(t.code_min, t.code_max + 1, dtype=torch.float64) * t.lsb
    return torch.stack([values if k % 2 == 0 else values.flip(0) for k in range(features)], 1).float()


# ------------------------------------------------------------------ the table itself
@pytest.mark.parametrize("rounding,overflow", PAIRS)
def test_table_and_eval_match_the_rational_reference(rounding, overflow):
    layer = QTable(shifted_tanh, "shifted_tanh", mode_cfg(rounding, overflow)).eval()
    t, out = layer.table_quantizer.fixed_type, layer.output_quantizer.fixed_type
    mode = dict(rounding=rounding.name, overflow=overflow.name)
    entries = [ap_fixed_code(Fraction(float(shifted_tanh(torch.tensor(float(k * Fraction(1, 2 ** t.frac_bits)),
                                                                            dtype=torch.float64)))),
                             out.width, out.int_bits, **mode) for k in range(t.code_min, t.code_max + 1)]
    assert layer.table_codes().tolist() == entries
    x = every_code(IN_TYPE, 1)[:, 0]
    y = layer(x)
    for v, got in zip(x.tolist(), y.tolist()):
        k = ap_fixed_code(Fraction(v), t.width, t.int_bits, **mode)
        assert got == entries[k - t.code_min] * 2.0 ** -out.frac_bits


def test_infinity_takes_the_extreme_code_and_nan_is_refused():
    layer = QTable(torch.reciprocal, "reciprocal", LayerQConfig(table=FixedType(6, 3),
                                                                       output=FixedType(8, 4, overflow="SAT")))
    assert layer.table_codes()[-layer.table_quantizer.fixed_type.code_min].item() == 127  # 1/0 = +inf
    nan = QTable(torch.log, "log", LayerQConfig(table=FixedType(6, 3)))
    with pytest.raises(ValueError, match=r"QTable\(log\).*NaN at table input -4"):
        nan.table_codes()


def test_training_forward_is_the_table_and_backward_the_derivative():
    cfg = LayerQConfig(table=FixedType(10, 4), output=FixedType(8, 1), learn_int_bits=True)
    layer = QTable(torch.sigmoid, "sigmoid", cfg)
    x = (torch.randn(500, generator=torch.Generator().manual_seed(0)) * 3).requires_grad_()
    y = layer.train()(x)
    assert torch.equal(y, layer.eval()(x))
    y.sum().backward()
    xq = qfx.quantize(x.detach(), layer.table_quantizer.fixed_type)
    inside = x.detach().abs() < 7.9
    s = torch.sigmoid(xq.double())
    torch.testing.assert_close(x.grad[inside], (s * (1 - s)).float()[inside], rtol=1e-6, atol=0)
    assert layer.output_quantizer.int_bits_move.grad is not None
    assert layer.table_quantizer.int_bits_move.grad is not None


def test_quantize_model_converts_modules_functions_and_methods():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.acts = nn.Sequential(nn.Sigmoid(), nn.Tanh(), nn.SiLU(), nn.GELU(approximate="tanh"), nn.ELU(0.5),
                                      nn.Softplus(2.0), nn.Hardsigmoid(), nn.Hardswish())

        def forward(self, x):
            y = self.acts(self.fc(x))
            return F.silu(y).exp() + torch.reciprocal(y.sigmoid() + F.gelu(y))

    x = torch.randn(64, 4)
    qm = qfx.quantize_model(Net(), example_input=x)
    tables = {name: m.name for name, m in qm.named_modules() if isinstance(m, QTable)}
    assert sorted(tables.values()) == sorted(["sigmoid", "tanh", "silu", "gelu(tanh)", "elu(alpha=0.5)",
                                              "softplus(beta=2.0, threshold=20.0)", "hardsigmoid", "hardswish",
                                              "silu", "exp", "reciprocal", "sigmoid", "gelu(none)"])
    formats = qfx.calibrate(qm, [x])
    assert "acts.0.table" in formats and "acts.0.output" in formats
    assert formats["acts.0.table"].int_bits != 4  # placed from the data, not left at the default
    layer = qm.get_submodule("acts.0")
    assert qfx.bit_cost(qm.eval(), x) > 0
    assert layer.rom_bits() == 1024 * 8
    graph = qfx.export(qm, x[:1])
    np.testing.assert_array_equal(qfx.ir.run(graph, x.numpy()), qm(x).double().detach().numpy())


def test_an_unsupported_function_names_itself_its_node_and_the_op_table():
    class Net(nn.Module):
        def forward(self, x):
            return torch.sin(x)

    with pytest.raises(qfx.UnsupportedOperationError) as info:
        qfx.quantize_model(Net())
    message = str(info.value)
    assert "torch.sin" in message and "node 'sin'" in message and "docs/ops.md" in message and len(message) < 300


# ------------------------------------------------------------------ the chain of equality
_CACHE: dict = {}


def _every_mode():
    if "graph" not in _CACHE:
        model = EveryMode().eval()
        x = every_code(IN_TYPE)
        graph = qfx.export(model, x[:1])
        with torch.no_grad():
            _CACHE["graph"] = (model, graph, x, model(x).double().numpy())
    return _CACHE["graph"]


def test_every_mode_interpreter_and_emulator_equal_pytorch():
    model, graph, x, expected = _every_mode()
    assert [n.op for n in graph.nodes].count("table") == len(PAIRS)
    np.testing.assert_array_equal(qfx.ir.run(graph, x.numpy()), expected)
    np.testing.assert_array_equal(qfx.emulate(graph, x.numpy()), expected)


def test_every_mode_survives_save_and_load(tmp_path: pathlib.Path):
    model, graph, x, expected = _every_mode()
    qfx.ir.save(graph, tmp_path / "g.json")
    np.testing.assert_array_equal(qfx.ir.run(qfx.ir.load(tmp_path / "g.json"), x.numpy()), expected)


@pytest.mark.parametrize("io", ["parallel", "stream"])
def test_every_mode_hls_csim_is_bit_exact(tmp_path: pathlib.Path, io: str):
    from qfx.boards import load_board
    from qfx.hls import float_inputs, generate, run_csim, write_project
    model, graph, x, expected = _every_mode()
    project = write_project(generate(graph, load_board("ultra96v2"), io, float_inputs(graph, x.numpy())),
                            tmp_path / io)
    report = run_csim(project)
    assert report.ok and report.mismatches == 0, report.summary()
    assert report.samples == len(x)


def test_every_mode_rtl_case_roms_are_bit_exact(tmp_path: pathlib.Path):
    from qfx.ir.interpreter import input_codes
    from qfx.rtl import generate, simulate
    model, graph, x, expected = _every_mode()
    design = generate(graph, tmp_path / "design", pipeline=1, inputs=input_codes(x.numpy(), graph.inputs[0].type))
    assert sum("case (address)" in f.read_text() for f in design.rglob("*.v")) == len(PAIRS)
    simulate(design, "icarus")


def test_qonnx_gathers_over_the_table_bit_exact():
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qfx.onnx import ROUNDING_MODES, to_onnx
    pairs = [(q, o) for q in ROUNDING_MODES for o in (Overflow.SAT, Overflow.SAT_SYM)]
    model = EveryMode(pairs).eval()
    x = every_code(IN_TYPE)
    graph = qfx.export(model, x[:1])
    onnx_model = to_onnx(graph, batch_size=len(x))
    assert sum(n.op_type == "Gather" for n in onnx_model.graph.node) == len(pairs)
    got = execute_onnx(ModelWrapper(onnx_model), {graph.inputs[0].name: x.numpy()})[graph.outputs[0]]
    with torch.no_grad():
        np.testing.assert_array_equal(got.astype(np.float64), model(x).double().numpy())


def test_qonnx_refuses_a_table_input_cast_quant_cannot_express():
    from qfx.onnx import ONNXExportError, to_onnx
    model = EveryMode([(Rounding.RND, Overflow.SAT)]).eval()
    graph = qfx.export(model, every_code(IN_TYPE)[:1])
    with pytest.raises(ONNXExportError, match="table input.*AP_RND"):
        to_onnx(graph)
