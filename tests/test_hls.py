"""The HLS back end: generated projects compile with g++ and agree with PyTorch on every code.

Models of a small zoo are quantized, exported, generated for both
interfaces and C-simulated against the real ap_types headers; each
project's golden output codes are checked against ``qm(x)`` from PyTorch
directly, and the testbench checks the C++ against them.  Also: the
per-layer trace pins a mismatch to its layer, names that look like code
stay out of the code, generation is deterministic, writing is atomic and
safe, and the Tcl scripts run under ``tclsh`` with the Vivado/Vitis
commands stubbed.
"""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

import qfx
import qfx.ir
from qfx.boards import load_board
from qfx.format import FixedType
from qfx.hls import CsimReport, UnsafePathError, float_inputs, generate, run_csim, write_project
from qfx.hls.layers import csd_digits
from qfx.hls.project import safe_names
from qfx.hls.toolchain import ToolchainError, ap_types_include
from qfx.ir import Constant, Graph, Node, Value

SAMPLES = 200


@pytest.fixture(autouse=True, scope="module")
def _cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A compile cache private to this module, so every test compiles what it generated."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("QFX_CACHE_DIR", str(tmp_path_factory.mktemp("qfx_cache")))
        yield


# ------------------------------------------------------------------ zoo
class Residual(nn.Module):
    """conv-BN-ReLU6, grouped 'same' conv, residual add, LeakyReLU, average pooling, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn = nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.act = nn.ReLU6()
        self.conv2 = nn.Conv2d(4, 4, 3, padding="same", groups=2)
        self.leaky, self.pool = nn.LeakyReLU(0.125), nn.AvgPool2d(2)
        self.flatten, self.fc = nn.Flatten(), nn.Linear(36, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn(self.conv1(x)))
        y = self.leaky(self.conv2(y) + y)
        return self.fc(self.flatten(self.pool(y)))


def _cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), nn.Conv2d(4, 6, 3, stride=2),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5))


def _conv1d() -> nn.Module:
    return nn.Sequential(nn.Conv1d(3, 4, 3, stride=2, padding=2, dilation=2), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6, 4))


#: name -> (float model, input shape, QConfig, interfaces to simulate)
ZOO = {
    "cnn": (_cnn, (1, 8, 8), qfx.QConfig(weight_granularity="channel", accum=14), ("parallel", "stream")),
    "residual": (Residual, (2, 6, 6), qfx.QConfig(weight=6, multiplier_free="khot:2"), ("parallel", "stream")),
    "conv1d": (_conv1d, (3, 12), qfx.QConfig(weight=5, activation=7, rounding="TRN", overflow="WRAP"),
               ("stream",)),
}


def _quantized(name: str) -> tuple[nn.Module, Graph, torch.Tensor]:
    make, shape, config, _ = ZOO[name]
    torch.manual_seed(1)
    model = make()
    calibration = torch.randn(64, *shape)
    qm = qfx.quantize_model(model, config, example_input=calibration[:2])
    qfx.calibrate(qm, [calibration])
    qm.eval()
    graph = qfx.export(qm, calibration[:2])
    x = torch.randn(SAMPLES, *shape) * 1.5
    return qm, graph, x


@pytest.fixture(scope="module")
def zoo() -> dict[str, tuple[nn.Module, Graph, torch.Tensor]]:
    return {name: _quantized(name) for name in ZOO}


def _codes_file(path: pathlib.Path) -> np.ndarray:
    return np.array([[int(v) for v in line.split()] for line in path.read_text().splitlines()], dtype=np.int64)


CASES = [(name, io) for name, spec in ZOO.items() for io in spec[3]]


@pytest.mark.parametrize("name,io", CASES)
def test_zoo_csim_is_bit_exact_with_pytorch(zoo, tmp_path: pathlib.Path, name: str, io: str) -> None:
    qm, graph, x = zoo[name]
    files = generate(graph, load_board("ultra96v2"), io, float_inputs(graph, x.numpy()))
    project = write_project(files, tmp_path / name)
    # The golden outputs the testbench holds the C++ to are PyTorch's own outputs.
    with torch.no_grad():
        expected = qm(x).double().numpy()
    out = graph.output_values[0]
    names = safe_names(graph)
    golden = _codes_file(project / "tb" / "data" / f"{names[out.name]}.txt")
    np.testing.assert_array_equal(golden.astype(np.float64) * 2.0 ** -out.type.frac_bits,
                                  expected.reshape(len(x), -1))
    report = run_csim(project)
    assert report.ok, report.summary()
    assert report.samples == SAMPLES and report.mismatches == 0
    assert [t.name for t in report.tensors] == [names[n.name] for n in graph.nodes]


def test_khot_weights_are_shift_and_add(zoo) -> None:
    _, graph, x = zoo["residual"]
    files = generate(graph, load_board("ultra96v2"), "parallel", float_inputs(graph, x[:4].numpy()))
    assert "qfx::csd<" in files["firmware/weights.h"]
    assert "shift-and-add" in files["firmware/parameters.h"]


def test_first_differing_layer_is_reported(zoo, tmp_path: pathlib.Path) -> None:
    _, graph, x = zoo["cnn"]
    project = write_project(generate(graph, load_board("ultra96v2"), "parallel",
                                     float_inputs(graph, x.numpy())), tmp_path / "cnn")
    names = safe_names(graph)
    victim = names[graph.nodes[3].name]  # the max pooling
    path = project / "tb" / "data" / f"{victim}.txt"
    rows = path.read_text().splitlines()
    codes = rows[5].split()
    codes[2] = str(int(codes[2]) + 1)
    rows[5] = " ".join(codes)
    path.write_text("\n".join(rows) + "\n")
    report: CsimReport = run_csim(project)
    assert not report.ok
    assert report.first_mismatch.name == victim
    assert report.first_mismatch.mismatches == 1
    assert "sample 5 index 2" in report.first_mismatch.first
    assert all(t.mismatches == 0 for t in report.tensors if t.name != victim)


# ---------------------------------------------------------- every format
ROUNDINGS = ("RND", "RND_ZERO", "RND_MIN_INF", "RND_INF", "RND_CONV", "TRN", "TRN_ZERO")
OVERFLOWS = ("SAT", "SAT_ZERO", "SAT_SYM", "WRAP", "WRAP_SM")


def _random_type(rng: np.random.Generator, width: int, signed: bool = True) -> FixedType:
    """A format with any binary point (inside, left or right of the word) and any modes."""
    overflow = OVERFLOWS[rng.integers(len(OVERFLOWS))]
    if not signed and overflow == "WRAP_SM":
        overflow = "WRAP"
    sat_bits = int(rng.integers(0, 3)) if overflow in ("WRAP", "WRAP_SM") else 0
    return FixedType(width, int(rng.integers(-3, width + 4)), signed=signed,
                     rounding=ROUNDINGS[rng.integers(len(ROUNDINGS))], overflow=overflow, sat_bits=sat_bits)


def _constant(rng: np.random.Generator, shape: tuple, types: tuple[FixedType, ...]) -> Constant:
    t = types[0]
    return Constant(rng.integers(t.code_min, t.code_max, size=shape, endpoint=True), types)


def _random_format_graph(seed: int) -> Graph:
    """Dense, scale-shift, ReLU, ReLU6, LeakyReLU and add layers whose every format is drawn at random."""
    rng = np.random.default_rng(seed)
    x = Value("x", (6,), _random_type(rng, 7))
    nodes, previous, values = [], "x", {"x": x}
    for i in range(14):
        op = ("dense", "relu", "scale_shift", "leaky_relu", "dense", "relu6", "add")[i % 7]
        name = f"n{i}"
        size = values[previous].shape[0]
        out = Value(name, (size,), _random_type(rng, int(rng.integers(3, 13)), signed=op not in ("relu", "relu6")
                                                or bool(rng.integers(2))))
        inputs, constants, formats = (previous,), {}, {}
        if op == "dense":
            per_channel = tuple(_random_type(rng, 6) for _ in range(size))
            _constant(rng, (size, size), per_channel[:1])  # its draws keep the graphs the test was written with
            codes = np.stack([rng.integers(t.code_min, t.code_max, size=size, endpoint=True) for t in per_channel])
            constants = {"weight": Constant(codes, per_channel), "bias": _constant(rng, (size,), (FixedType(10, 4),))}
            if i % 2:
                formats = {"accum": _random_type(rng, 14)}
        elif op == "scale_shift":
            constants = {"scale": _constant(rng, (size,), (_random_type(rng, 5),)),
                         "shift": _constant(rng, (size,), (_random_type(rng, 6),))}
        elif op == "leaky_relu":
            constants = {"slope": _constant(rng, (), (_random_type(rng, 4),))}
        elif op == "add":
            inputs = (previous, nodes[-3].name)
        nodes.append(Node(name, op, inputs, out, constants=constants, formats=formats))
        values[name] = out
        previous = name
    return Graph("formats", [x], nodes, [previous]).check()


def test_every_rounding_overflow_and_binary_point_is_bit_exact(tmp_path: pathlib.Path) -> None:
    graph = _random_format_graph(seed=11)
    used = {(v.type.rounding.value, v.type.overflow.value) for v in graph.values().values()}
    assert len(used) >= 10
    assert any(v.type.int_bits < 0 or v.type.int_bits > v.type.width for v in graph.values().values())
    report = run_csim(write_project(generate(graph, load_board("ultra96v2"), "parallel"), tmp_path / "formats"))
    assert report.ok, report.summary()
    assert report.samples == 256


# ---------------------------------------------------------- hostile names
def _hostile_graph() -> Graph:
    """Dense layers whose names are code, keywords, duplicates after sanitising, and qfx's own namespaces."""
    t = FixedType(8, 3, rounding="RND", overflow="SAT")
    rng = np.random.default_rng(3)
    x = Value('x"); system("touch /tmp/pwned"); //', (4,), t)
    names = ['"; system("rm -rf ~"); //', "tensor", "1 dense", "1_dense", "qfx", "config"]
    nodes, previous = [], x.name
    for i, name in enumerate(names):
        if i % 2:
            nodes.append(Node(name, "relu", (previous,), Value(name, (4,), t)))
        else:
            weight = Constant(rng.integers(-128, 128, size=(4, 4)), (FixedType(8, 1),))
            nodes.append(Node(name, "dense", (previous,), Value(name, (4,), t), constants={"weight": weight}))
        previous = name
    return Graph('top"; exec rm -rf /; #', [x], nodes, [previous]).check()


def test_hostile_names_become_safe_unique_identifiers(tmp_path: pathlib.Path) -> None:
    graph = _hostile_graph()
    files = generate(graph, load_board("ultra96v2"), "stream")
    text = "\n".join(files.values())
    for fragment in ("system(", "rm -rf", "exec rm", "/tmp/pwned", '"; ', '//"'):
        assert fragment not in text
    identifiers = list(safe_names(graph).values())
    assert {"tensor", "qfx", "config"}.isdisjoint(identifiers)
    assert len(set(identifiers)) == len(identifiers)
    assert all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) for name in identifiers)
    report = run_csim(write_project(files, tmp_path / "hostile"))
    assert report.ok, report.summary()


# ----------------------------------------------------------- determinism
def test_generation_is_deterministic(zoo) -> None:
    _, graph, x = zoo["residual"]
    board = load_board("ultra96v2")
    for io in ("parallel", "stream"):
        first = generate(graph, board, io)
        again = generate(qfx.ir.load(qfx.ir.save(graph, pathlib.Path(_tmp()) / "g.json")), board, io)
        assert first == again
        assert list(first) == sorted(first)
    assert generate(graph, board, "parallel") != generate(graph, board, "stream")


def _tmp() -> str:
    import tempfile
    return tempfile.mkdtemp(prefix="qfx_hls_test_")


def test_ultra96_project_carries_part_and_board(zoo) -> None:
    _, graph, _ = zoo["cnn"]
    files = generate(graph, load_board("ultra96v2"), "stream")
    assert "set qfx_part xczu3eg-sbva484-1-i\n" in files["project.tcl"]
    assert "set qfx_board_part avnet.com:ultra96v2:part0:1.2\n" in files["project.tcl"]
    assert "set qfx_clock_period 10.0\n" in files["project.tcl"]
    assert "zynq_ultra_ps_e" in files["vivado/block_design.tcl"]
    pynq = generate(graph, load_board("pynq_z2"), "stream")
    assert "set qfx_part xc7z020clg400-1\n" in pynq["project.tcl"]
    assert "processing_system7" in pynq["vivado/block_design.tcl"]
    for project in (files, pynq, generate(graph, load_board("ultra96v2"), "parallel")):
        compile(project["driver/overlay.py"], "overlay.py", "exec")  # the PYNQ driver is valid Python


def test_driver_converts_like_the_model(zoo, monkeypatch: pytest.MonkeyPatch) -> None:
    """The PYNQ driver's float -> code conversion and stream order, run without a board."""
    monkeypatch.setitem(sys.modules, "pynq", types.SimpleNamespace(Overlay=None, allocate=None))
    _, graph, x = zoo["cnn"]
    namespace: dict = {}
    exec(compile(generate(graph, load_board("ultra96v2"), "stream")["driver/overlay.py"], "overlay.py", "exec"),
         namespace)
    name, shape, width, frac, signed, rounding, overflow = namespace["INPUTS"][0]
    data = np.concatenate([x.numpy().ravel(), np.array([100.0, -100.0, 0.5 * 2.0 ** -frac, -1.5 * 2.0 ** -frac])])
    np.testing.assert_array_equal(namespace["to_codes"](data, width, frac, signed, rounding, overflow),
                                  qfx.ir.input_codes(data, graph.inputs[0].type))
    codes = np.arange(2 * 4 * 3 * 5).reshape(2, 4, 3, 5)
    stream = namespace["hwc"](codes, (4, 3, 5))
    np.testing.assert_array_equal(stream[1, :4], codes[1, :, 0, 0])  # channels innermost
    np.testing.assert_array_equal(namespace["chw"](stream, (4, 3, 5)), codes)


def test_csd_digits_reconstruct_codes_with_fewest_digits() -> None:
    for code in range(-300, 300):
        digits = csd_digits(code)
        assert sum(sign << position for sign, position in digits) == code
        positions = sorted(p for _, p in digits)
        assert all(b - a >= 2 for a, b in zip(positions, positions[1:]))  # no two adjacent nonzero digits


# ---------------------------------------------------------------- writing
def test_writer_refuses_existing_unsafe_and_foreign_targets(tmp_path: pathlib.Path) -> None:
    files = {"a.txt": "one\n", "sub/b.txt": "two\n", "qfx.json": "{}\n"}
    target = write_project(files, tmp_path / "p")
    assert (target / "sub" / "b.txt").read_text() == "two\n"
    with pytest.raises(FileExistsError, match="--force"):
        write_project(files, target)
    write_project({"qfx.json": "{}\n", "c.txt": "three\n"}, target, force=True)
    assert sorted(p.name for p in target.iterdir()) == [".qfx-record.json", "c.txt", "qfx.json"]
    for bad in ("../escape.txt", "/etc/passwd", "a/../../b", "", "a//b", "./a", "a\\b"):
        with pytest.raises(UnsafePathError):
            write_project({bad: "x"}, tmp_path / "q", force=True)
    assert not (tmp_path / "q").exists() and not (tmp_path / "escape.txt").exists()
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        write_project(files, link, force=True)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(UnsafePathError, match="qfx did not write it"):
        write_project(files, foreign, force=True)
    assert (foreign / "thesis.tex").read_text() == "precious"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind


# ------------------------------------------------------------------- Tcl
_STUBS = r"""
set ::calls {}
proc record {args} { lappend ::calls $args }
foreach command {open_project set_top open_solution set_part create_clock csim_design csynth_design
                 cosim_design export_design update_ip_catalog create_bd_design apply_bd_automation
                 connect_bd_intf_net assign_bd_address validate_bd_design save_bd_design launch_runs
                 wait_on_run set_property add_files create_project} {
    proc $command {args} "record $command {*}\$args; return {}"
}
proc exit {args} { record exit }
proc current_project {} { return project }
proc create_bd_cell {args} { record create_bd_cell {*}$args; return [lindex $args end] }
proc get_bd_intf_pins {pin} { return $pin }
proc get_bd_pins {pin} { return $pin }
proc get_files {name} { return $name }
proc make_wrapper {args} { return design_1_wrapper.v }
proc unknown {args} { error "command not stubbed: $args" }
set argv [lrange $argv 1 end]
source [lindex $::argv_script 0]
foreach call $::calls { puts $call }
"""


def _run_tcl(project: pathlib.Path, script: str, tmp_path: pathlib.Path, *args: str) -> list[list[str]]:
    stubs = tmp_path / "stubs.tcl"
    stubs.write_text(f"set ::argv_script [list {project / script}]\n" + _STUBS)
    result = subprocess.run(["tclsh", str(stubs), "-", *args], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return [line.split() for line in result.stdout.splitlines()]


@pytest.mark.parametrize("board_name,io", [("ultra96v2", "stream"), ("ultra96v2", "parallel"),
                                           ("pynq_z2", "stream")])
def test_tcl_scripts_run_with_stubbed_tools(zoo, tmp_path: pathlib.Path, board_name: str, io: str) -> None:
    if shutil.which("tclsh") is None:
        pytest.fail("tclsh is required (apt-get install tcl)")
    _, graph, _ = zoo["cnn"]
    board = load_board(board_name)
    project = write_project(generate(graph, board, io), tmp_path / "p")
    calls = _run_tcl(project, "build.tcl", tmp_path, "cosim=1", "export=1")
    commands = [c[0] for c in calls]
    assert ["set_part", board.part] in calls
    for command in ("open_project", "set_top", "csim_design", "csynth_design", "cosim_design", "export_design"):
        assert command in commands
    added = [c for c in calls if c[0] == "add_files"]
    assert added, "build.tcl adds no files"
    for call in added:
        path = pathlib.Path(call[2] if call[1] == "-tb" else call[1])
        assert path.is_file(), f"build.tcl adds '{path}', which the project does not hold"
    data = [c for c in calls if c[0] == "csim_design"][0][2]
    assert pathlib.Path(data, f"{safe_names(graph)[graph.inputs[0].name]}.txt").is_file()

    design = _run_tcl(project, "vivado/block_design.tcl", tmp_path)
    assert ["set_property", "board_part", board.board_part, "project"] in design
    created = [c for c in design if c[0] == "create_project"][0]
    assert created[created.index("-part") + 1] == board.part
    assert any(c[0] == "create_bd_cell" and f"xilinx.com:ip:{board.ps_ip}" in c for c in design)


def test_build_tcl_rejects_unknown_options(zoo, tmp_path: pathlib.Path) -> None:
    _, graph, _ = zoo["cnn"]
    project = write_project(generate(graph, load_board("ultra96v2"), "parallel"), tmp_path / "p")
    stubs = tmp_path / "stubs.tcl"
    stubs.write_text(f"set ::argv_script [list {project / 'build.tcl'}]\n" + _STUBS)
    result = subprocess.run(["tclsh", str(stubs), "-", "synthesise=1"], capture_output=True, text=True)
    assert result.returncode != 0 and "unknown option 'synthesise=1'" in result.stderr


# -------------------------------------------------------------- toolchain
def test_ap_types_prefers_xilinx_hls_then_hls4ml(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "include").mkdir()
    (tmp_path / "include" / "ap_fixed.h").write_text("")
    monkeypatch.setenv("XILINX_HLS", str(tmp_path))
    assert ap_types_include() == tmp_path / "include"
    monkeypatch.delenv("XILINX_HLS")
    assert (ap_types_include() / "ap_fixed.h").is_file()
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(ToolchainError, match="pip install hls4ml"):
        ap_types_include()


def test_a_garbage_cached_testbench_is_rebuilt_not_run(tmp_path: pathlib.Path) -> None:
    from qfx.hls import default_inputs
    from qfx.hls.csim import compile_testbench
    graph = _hostile_graph()
    files = generate(graph, load_board("ultra96v2"), "parallel", default_inputs(graph, samples=8))
    project = write_project(files, tmp_path / "small")
    binary, _, _ = compile_testbench(project)
    binary.write_bytes(b"#!/bin/sh\necho qfx-csim samples 8; echo qfx-csim outputs mismatches 0\n")
    with pytest.warns(RuntimeWarning, match="does not match its recorded SHA-256"):
        report = run_csim(project)
    assert report.ok and not report.cached and report.samples == 8
