"""Hostile graph files: every limit of qfx.ir.limits is checked before the work it bounds, and each refusal is an
IRError naming the file (and the node); the allocating cases run in a subprocess under an address-space cap."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

import qfx
from qfx.format import FixedType
from qfx.ir import Constant, Graph, IRError, Node, Value, c_identifier, limits
from qfx.ir.graph import Identifiers


def _small_graph() -> Graph:
    """A dense layer, a ReLU and a max pooling: small enough to emulate in a second."""
    t = FixedType(8, 3, rounding="RND", overflow="SAT")
    w = Constant(np.arange(-24, 24).reshape(16, 3) % 7 - 3, (FixedType(4, 1),))
    fc = Node("fc", "dense", ("x",), Value("fc", (16,), t), constants={"weight": w})
    flat = Node("image", "flatten", ("fc",), Value("image", (1, 4, 4), t))
    pool = Node("pool", "maxpool2d", ("image",), Value("pool", (1, 2, 2), t),
                attrs={"kernel": [2, 2], "stride": [2, 2], "padding": [0, 0], "dilation": [1, 1], "ceil_mode": False})
    return Graph("small", [Value("x", (3,), t)], [fc, flat, pool], ["pool"]).check()


def _saved(tmp_path, change=None):
    """The small graph saved, its document changed by ``change(doc)`` and written back; the JSON's path."""
    path = qfx.ir.save(_small_graph(), tmp_path / "g.json")
    if change is not None:
        doc = json.loads(path.read_text())
        change(doc)
        path.write_text(json.dumps(doc))
    return path


def _refused(path, *fragments):
    with pytest.raises(IRError) as error:
        qfx.ir.load(path)
    message = str(error.value)
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def _run_capped(code: str, megabytes: int = 1500, seconds: float = 60) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter whose address space is capped: an allocation beyond it fails there."""
    prelude = textwrap.dedent(f"""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, ({megabytes << 20}, {megabytes << 20}))
    """)
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=seconds)


# ------------------------------------------------------------------ the JSON
def test_deep_json_is_refused_by_its_nesting(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    _refused(path, "nests deeper", str(limits.MAX_JSON_DEPTH))


def test_a_number_with_thousands_of_digits_names_the_file(tmp_path):
    path = _saved(tmp_path)
    path.write_text(path.read_text().replace('"version": 1', '"version": ' + "9" * 5000))
    _refused(path, "characters, more than the limit")


def test_nan_and_infinity_are_not_json_numbers_for_qfx(tmp_path):
    path = _saved(tmp_path)
    path.write_text(path.read_text().replace('"version": 1', '"version": NaN'))
    _refused(path, "NaN is not a number")


def test_a_bool_is_not_an_integer(tmp_path):
    t = FixedType(8, 3)
    node = Node("c", "conv2d", ("x",), Value("c", (1, 4, 4), t), constants={"weight": Constant(np.ones((1, 1, 1, 1)), (t,))},
                attrs={"stride": [1, 1], "padding": [[0, 0], [0, 0]], "dilation": [1, 1], "groups": 1})
    path = qfx.ir.save(Graph("conv", [Value("x", (1, 4, 4), t)], [node], ["c"]).check(), tmp_path / "c.json")
    doc = json.loads(path.read_text())
    doc["nodes"][0]["attrs"]["padding"] = [[True, True], [False, False]]
    doc["nodes"][0]["output"]["shape"] = [1, 6, 4]
    path.write_text(json.dumps(doc))
    _refused(path, "node 'c'", "'padding' must be")


def test_lone_surrogates_are_refused(tmp_path):
    path = _saved(tmp_path)
    path.write_text(path.read_text().replace('"name": "small"', '"name": "bad\\udc80name"'))
    _refused(path, "lone surrogate")
    with pytest.raises(IRError, match="printable"):
        Graph("g", [Value("x\udc80", (1,), FixedType(8, 3))], [], ["x\udc80"]).check()


@pytest.mark.parametrize("spelling, fragment", [("ap_fixed<8,100000000000>", "integer bits within"),
                                                ("ap_fixed<20000000000,3>", "width up to"),
                                                ("ap_fixed<" + "9" * 5000 + ",3>", "cannot parse")])
def test_formats_beyond_the_limits_are_refused(tmp_path, spelling, fragment):
    path = _saved(tmp_path, lambda d: d["nodes"][1]["output"].update(type=spelling) or
                  d["nodes"][2]["output"].update(type=spelling))
    _refused(path, "node 'image'" if "cannot" not in fragment else "", fragment)


def test_wide_formats_have_a_float_range():
    t = FixedType(10000, 5)
    assert (t.max, t.min) == (16.0, -16.0)
    assert FixedType(2000, 2000).max == math.inf and FixedType(2000, 2000).min == -math.inf


# --------------------------------------------------------------- the arrays
def test_uint64_codes_beyond_int64_are_refused(tmp_path):
    path = _saved(tmp_path)
    weight = np.full((16, 3), 2**64 - 1, dtype=np.uint64)
    np.savez(tmp_path / "g.npz", n0_weight=weight)
    _refused(path, "beyond 2**63 - 1")


def test_unreferenced_members_are_never_read(tmp_path):
    path = _saved(tmp_path)
    weight = np.load(tmp_path / "g.npz")["n0_weight"]
    with zipfile.ZipFile(tmp_path / "g.npz", "w", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open("n0_weight.npy", "w") as f:
            np.lib.format.write_array(f, weight)
        with z.open("huge.npy", "w") as f:  # declares 1 GiB; reading it would allocate that much
            np.lib.format.write_array_header_1_0(f, {"descr": "<i8", "fortran_order": False, "shape": (1 << 27,)})
            f.write(bytes(1 << 20))
    result = _run_capped(f"""
        import qfx, numpy as np
        graph = qfx.ir.load({str(path)!r})
        print(graph.nodes[0].constants["weight"].codes.sum())
    """, megabytes=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout) == int(weight.sum())


def test_a_header_claiming_a_trillion_elements_is_refused_before_reading(tmp_path):
    path = _saved(tmp_path)
    with zipfile.ZipFile(tmp_path / "g.npz", "w") as z:
        with z.open("n0_weight.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<i8", "fortran_order": False, "shape": (10**6, 10**6)})
            f.write(bytes(64))
    result = _run_capped(f"""
        import qfx
        try:
            qfx.ir.load({str(path)!r})
        except qfx.ir.IRError as error:
            print("refused:", error)
    """, megabytes=900)
    assert "refused:" in result.stdout and "more than the limit" in result.stdout, result.stderr[-2000:]
    assert "n0_weight" in result.stdout and str(path) in result.stdout


def test_too_many_members_are_refused(tmp_path, monkeypatch):
    path = _saved(tmp_path)
    monkeypatch.setattr(limits, "MAX_ARRAY_MEMBERS", 3)
    weight = np.load(tmp_path / "g.npz")["n0_weight"]
    np.savez(tmp_path / "g.npz", n0_weight=weight, a=weight, b=weight, c=weight)
    _refused(path, "4 members")


# -------------------------------------------------------- files that are not
def test_devices_directories_and_huge_files_are_refused_before_reading(tmp_path, monkeypatch):
    for target, fragment in (("/dev/zero", "not a regular file"), (str(tmp_path), "is a directory")):
        with pytest.raises(IRError, match=fragment):
            qfx.ir.load(target)
    path = _saved(tmp_path)
    monkeypatch.setattr(limits, "MAX_FILE_BYTES", 100)
    _refused(path, "more than the limit of 100")


def test_qfx_hls_of_dev_zero_is_refused_at_once(tmp_path):
    result = _run_capped(f"""
        import sys
        from qfx.cli import main
        sys.argv = ["qfx", "hls", "/dev/zero", "-o", {str(tmp_path / "out")!r}]
        try:
            main()
        except SystemExit as stop:
            print("exit", stop.code)
        except Exception as error:
            print("error", type(error).__name__, error)
    """, megabytes=1500, seconds=120)
    assert "not a regular file" in result.stdout + result.stderr, (result.stdout, result.stderr[-2000:])


# ------------------------------------------------------------- op limits
def _pool_graph(kernel: int, padding: int) -> Graph:
    t = FixedType(8, 3)
    out = (8 + 2 * padding - kernel) + 1
    pool = Node("pool", "maxpool2d", ("x",), Value("pool", (1, out, out), t),
                attrs={"kernel": [kernel, kernel], "stride": [1, 1], "padding": [padding, padding],
                       "dilation": [1, 1], "ceil_mode": False})
    return Graph("pool", [Value("x", (1, 8, 8), t)], [pool], ["pool"])


def test_a_billion_wide_pooling_window_is_refused_by_every_implementation():
    graph = _pool_graph(10**9, 5 * 10**8)
    with pytest.raises(IRError, match=r"node 'pool' \(maxpool2d\).*limit"):
        graph.check()
    with pytest.raises(IRError, match="limit"):
        qfx.emulator.compile_graph(graph)
    with pytest.raises(IRError, match="limit"):
        qfx.ir.run_codes(graph, [np.zeros((1, 1, 8, 8), dtype=np.int64)])


def test_work_per_sample_is_bounded():
    t = FixedType(8, 3)
    x = Value("x", (4096,), t)
    w = Constant(np.zeros((4096, 4096), dtype=np.int64), (FixedType(4, 1),))
    graph = Graph("big", [x], [Node("fc", "dense", ("x",), Value("fc", (4096,), t), constants={"weight": w})], ["fc"])
    graph.check()  # 2**24 multiply-adds: fine
    graph.nodes[0].output = Value("fc", (4096,), t)
    old = limits.MAX_WORK
    try:
        limits.MAX_WORK = 1 << 20
        with pytest.raises(IRError, match=r"node 'fc' \(dense\).*16777216 operations"):
            graph.check()
    finally:
        limits.MAX_WORK = old


def test_tensor_elements_are_bounded_without_wrapping():
    t = FixedType(8, 3)
    graph = Graph("wrap", [Value("x", (2**32, 2**32, 16), t)], [], ["x"])
    with pytest.raises(IRError, match="more than the limit"):
        graph.check()


# ---------------------------------------------------------------- naming
def test_naming_sixteen_thousand_nodes_is_linear():
    t = FixedType(8, 3)
    nodes, previous = [], "x"
    for i in range(16000):
        nodes.append(Node(f"layer {i % 7}.{i}", "relu", (previous,), Value(f"layer {i % 7}.{i}", (4,), t)))
        previous = nodes[-1].name
    graph = Graph("g", [Value("x", (4,), t)], nodes, [previous]).check()
    names = graph.c_names()
    assert len(set(names.values())) == len({n.lower() for n in names.values()}) == 16001
    # The same names as one at a time against a plain set (the definition: first free suffix in order).
    taken, expected = set(), {}
    for name in list(names)[:300]:
        expected[name] = c_identifier(name, taken)
    assert {k: names[k] for k in expected} == expected
    same = Identifiers()
    assert [c_identifier(n, same) for n in ("A", "a", "a_2", "a")] == ["A", "a_2", "a_2_2", "a_3"]
