"""A graph with two inputs and two outputs as an unrolled Verilog top, simulated under cocotb.

The graph: ``sum = a + b`` (cast with saturation), ``cat = concat(a, sum)``
and ``head = dense(b)``; its outputs ``cat`` and ``head`` are computed at
different depths, so the test also checks that both arrive together.  Its
input names are hostile (a Verilog string and comment, and ``valid``, which
``in_`` would turn into the top's own ``in_valid``): the ports must still be
plain, distinct identifiers.  Expected codes come from an integer reference
written here from the op definitions, not from the interpreter.  A PyTorch
model with two inputs and a tuple output goes the user's way, through
``quantize_model`` and ``qfx.export``, with PyTorch's outputs as reference.
"""

import json
import re

import numpy as np
import pytest

import qfx.ir
from qfx.format import FixedType
from qfx.ir import Constant, Graph, Node, Value, run_codes
from qfx.rtl import generate, simulate
from qfx.rtl.design import DesignError, read_design
from qfx.rtl.generate import plan_design, render
from rtl_graphs import every_mode_graph

A, B = 'valid', 'b"); $finish; /* `x'
TA, TB = FixedType(6, 2), FixedType(5, 1, signed=False)
T_SUM, T_CAT, T_HEAD = FixedType(6, 2, rounding="TRN", overflow="SAT"), FixedType(7, 3), FixedType(9, 4)
T_W = FixedType(4, 1)
WEIGHT = np.array([[3, -2, 5], [-8, 7, 1]])


def two_by_two() -> Graph:
    a, b = Value(A, (3,), TA), Value(B, (3,), TB)
    nodes = [Node("sum", "add", (A, B), Value("sum", (3,), T_SUM)),
             Node("cat", "concat", (A, "sum"), Value("cat", (6,), T_CAT), attrs={"axis": 0}),
             Node("head", "dense", (B,), Value("head", (2,), T_HEAD), constants={"weight": Constant(WEIGHT, (T_W,))})]
    return Graph("two by two", [a, b], nodes, ["cat", "head"]).check()


def reference(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two outputs' codes by integer arithmetic: exact sums, truncation, saturation or wrap by hand."""
    def cast(codes, frac, t):  # truncate to t's fractional bits, then t's overflow mode
        codes = codes >> (frac - t.frac_bits) if frac >= t.frac_bits else codes << (t.frac_bits - frac)
        if t.overflow == "SAT":
            return np.clip(codes, t.code_min, t.code_max)
        span = 1 << t.width
        return (codes - t.code_min) % span + t.code_min
    # a has 4 fractional bits (6 wide, 2 integer), b 4 (5 wide, 1 integer): the sum needs no alignment
    total = cast(a + b, 4, T_SUM)
    cat = np.concatenate([cast(a, 4, T_CAT), cast(total, 4, T_CAT)], axis=1)
    head = cast(b @ WEIGHT.T, 4 + 3, T_HEAD)
    return cat, head


def test_the_reference_is_the_interpreter():
    rng = np.random.default_rng(1)
    a = rng.integers(TA.code_min, TA.code_max, (40, 3), endpoint=True)
    b = rng.integers(TB.code_min, TB.code_max, (40, 3), endpoint=True)
    codes = run_codes(two_by_two(), [a, b])
    cat, head = reference(a, b)
    assert np.array_equal(codes["cat"], cat) and np.array_equal(codes["head"], head)


@pytest.mark.parametrize("pipeline", [0, 1])
def test_ports_are_identifiers_and_outputs_share_one_latency(pipeline):
    design = plan_design(two_by_two(), pipeline=pipeline)
    names = [p.name for p in design.inputs + design.outputs]
    assert names == ["in_valid_2", "in_b_finish_x", "out_cat", "out_head"]
    assert design.latency == 2 + pipeline
    assert [p.source for p in design.outputs] == [f"s{design.latency - 1}_cat", f"s{design.latency - 1}_head"]
    files = render(two_by_two(), pipeline=pipeline, inputs=[np.zeros((2, 3), int)] * 2)
    top = files["rtl/two_by_two.v"]
    # qfx_add.v is the same text for every graph (its directives and strings are qfx's own); in the other files
    # the user's names reach the Verilog only inside // comments
    assert files["rtl/qfx_add.v"] == render(every_mode_graph())["rtl/qfx_add.v"]
    for path, text in files.items():
        if path.endswith(".v") and path != "rtl/qfx_add.v":
            code = re.sub(r"//[^\n]*", "", text)
            assert not set('"`') & set(code) and "/*" not in code and "$finish" not in code, path
    assert "$finish" not in files["tb/test_two_by_two.py"]
    header = top[top.index("module two_by_two ("):top.index("\n);")]
    ports = re.findall(r"(?:input|output)\s+wire\s+(?:\[\d+:0\]\s+)?(\w+)", header)
    assert ports == ["clk", "rst", "in_valid"] + names[:2] + ["out_valid"] + names[2:]
    manifest = json.loads(files["manifest.json"])
    assert [p["port"] for p in manifest["inputs"]] == names[:2] and manifest["inputs"][0]["tensor"] == A
    assert [p["port"] for p in manifest["outputs"]] == names[2:] and not manifest["inputs"][1]["signed"]
    for name in names:
        assert f"`{name}`" in files["README.md"]


def test_a_manifest_port_that_is_not_an_identifier_is_refused(tmp_path):
    design = generate(two_by_two(), tmp_path / "d", inputs=[np.zeros((1, 3), int)] * 2)
    assert read_design(design).ports == ("in_valid_2", "in_b_finish_x", "out_cat", "out_head")
    manifest = json.loads((design / "manifest.json").read_text())
    manifest["outputs"][1]["port"] = "out_head; $finish"
    (design / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DesignError, match=r"outputs\[1\]\.port"):
        read_design(design)


@pytest.fixture(scope="module")
def design(tmp_path_factory):
    rng = np.random.default_rng(5)
    a = rng.integers(TA.code_min, TA.code_max, (12, 3), endpoint=True)
    b = rng.integers(TB.code_min, TB.code_max, (12, 3), endpoint=True)
    a[0], b[0] = TA.code_max, TB.code_max  # the sum saturates
    folder = generate(two_by_two(), tmp_path_factory.mktemp("multi") / "design", pipeline=1, inputs=[a, b])
    cat, head = reference(a, b)
    vectors = json.loads((folder / "tb" / "vectors.json").read_text())
    assert vectors["outputs"] == {"out_cat": cat.tolist(), "out_head": head.tolist()}
    return folder


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_two_inputs_two_outputs_bit_exact(design, simulator):
    simulate(design, simulator)


def test_a_wrong_code_on_the_second_output_fails(design, tmp_path):
    import shutil
    broken = tmp_path / "broken"
    shutil.copytree(design, broken, ignore=shutil.ignore_patterns("sim_build"))
    vectors = json.loads((broken / "tb" / "vectors.json").read_text())
    vectors["outputs"]["out_head"][7][1] += 1
    (broken / "tb" / "vectors.json").write_text(json.dumps(vectors))
    with pytest.raises(RuntimeError, match="failed"):
        simulate(broken, "icarus")


def test_qfx_rtl_writes_random_vectors_for_every_input_and_refuses_one_inputs_array(tmp_path, capsys):
    from qfx import cli
    graph_file = qfx.ir.save(two_by_two(), tmp_path / "net.json")
    assert cli.main(["rtl", str(graph_file), "-o", str(tmp_path / "rtl"), "--vectors", "5"]) == 0
    vectors = json.loads((tmp_path / "rtl" / "tb" / "vectors.json").read_text())
    assert {port: len(codes) for port, codes in vectors["inputs"].items()} == {"in_valid_2": 5, "in_b_finish_x": 5}
    np.save(tmp_path / "x.npy", np.zeros((2, 3)))
    assert cli.main(["rtl", str(graph_file), "-o", str(tmp_path / "rtl2"), "--inputs", str(tmp_path / "x.npy")]) == 2
    assert "has 2 inputs" in capsys.readouterr().err


def test_a_pytorch_model_with_two_inputs_and_a_tuple_output_simulates_bit_exact(tmp_path):
    """From ``quantize_model`` and ``qfx.export``: the vectors are PyTorch's own outputs, and Icarus agrees."""
    import torch
    from torch import nn

    import qfx

    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, a, b):
            return torch.cat([a, a + b], 1), self.fc(b)

    torch.manual_seed(0)
    a, b = torch.randn(12, 3) * 2, torch.randn(12, 3)
    qm = qfx.quantize_model(TwoHeads(), qfx.QConfig(multiplier_free="khot:2"), example_input=(a, b))
    qfx.calibrate(qm, [(a, b)], input_fn=tuple)
    qm.eval()
    graph = qfx.export(qm, (a, b), name="two heads")
    codes = [qfx.ir.input_codes(t.numpy(), v.type) for t, v in zip((a, b), graph.inputs)]
    folder = generate(graph, tmp_path / "design", pipeline=1, inputs=codes)
    vectors = json.loads((folder / "tb" / "vectors.json").read_text())
    ports = [p["port"] for p in json.loads((folder / "manifest.json").read_text())["outputs"]]
    for port, value, want in zip(ports, graph.output_values, qm(a, b)):
        got = np.array(vectors["outputs"][port]) * 2.0 ** -value.type.frac_bits
        assert np.array_equal(got, want.detach().double().numpy().reshape(len(got), -1)), port
    simulate(folder, "icarus")
