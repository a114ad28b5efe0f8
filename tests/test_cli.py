"""The ``qfx`` command: help, hls + csim end to end, refusals, report, build without Vitis, the rtl hook."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import types

import numpy as np
import pytest

import qfx.ir
from qfx import cli
from qfx.format import FixedType
from qfx.ir import Constant, Graph, Node, Value

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QFX_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "qfx_cli_cache"))


@pytest.fixture
def graph_file(tmp_path: pathlib.Path) -> pathlib.Path:
    """A saved two-layer perceptron."""
    t = FixedType(8, 3, rounding="RND_CONV", overflow="SAT")
    rng = np.random.default_rng(0)
    w1 = Constant(rng.integers(-128, 128, size=(6, 5)), (FixedType(8, 1),))
    w2 = Constant(rng.integers(-128, 128, size=(3, 6)), (FixedType(8, 1),))
    bias = Constant(rng.integers(-2000, 2000, size=(3,)), (FixedType(16, 6),))
    graph = Graph("mlp", [Value("x", (5,), t)], [
        Node("fc1", "dense", ("x",), Value("fc1", (6,), t), constants={"weight": w1}),
        Node("act", "relu", ("fc1",), Value("act", (6,), t.replace(signed=False))),
        Node("fc2", "dense", ("act",), Value("fc2", (3,), t), constants={"weight": w2, "bias": bias}),
    ], ["fc2"])
    return qfx.ir.save(graph, tmp_path / "mlp.json")


def test_help_explains_every_command_and_option() -> None:
    result = subprocess.run([sys.executable, "-m", "qfx.cli", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0
    for command in ("hls", "csim", "build", "report", "rtl"):
        assert command in result.stdout
    hls = subprocess.run([sys.executable, "-m", "qfx.cli", "hls", "--help"], capture_output=True, text=True,
                         cwd=ROOT)
    for option in ("--board", "--io", "--force", "--inputs", "--samples", "--seed", "--reuse", "ultra96v2"):
        assert option in hls.stdout


def test_hls_then_csim_end_to_end(graph_file: pathlib.Path, tmp_path: pathlib.Path,
                                  capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "mlp_hls"
    assert cli.main(["hls", str(graph_file), "--board", "ultra96v2", "-o", str(out), "--samples", "300"]) == 0
    assert "set qfx_part xczu3eg-sbva484-1-i" in (out / "project.tcl").read_text()
    assert cli.main(["csim", str(out)]) == 0
    captured = capsys.readouterr()
    assert "bit-exact: 300 samples" in captured.out
    assert "[1/1]" in captured.err  # progress

    # An existing directory needs --force; a wrong golden code fails csim and names the layer.
    assert cli.main(["hls", str(graph_file), "-o", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert cli.main(["hls", str(graph_file), "-o", str(out), "--force", "--samples", "40"]) == 0
    golden = out / "tb" / "data" / "act.txt"
    rows = golden.read_text().splitlines()
    codes = rows[0].split()
    rows[0] = " ".join([str((int(codes[0]) + 1) % 256)] + codes[1:])  # another valid ap_ufixed<8,3> code
    golden.write_text("\n".join(rows) + "\n")
    capsys.readouterr()
    assert cli.main(["csim", str(out)]) == 1
    captured = capsys.readouterr().out
    assert "first differing layer 'act'" in captured and "MISMATCH" in captured


def test_hls_takes_float_inputs_and_stream_io(graph_file: pathlib.Path, tmp_path: pathlib.Path) -> None:
    x = np.random.default_rng(1).normal(size=(7, 5)) * 4
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "p"
    assert cli.main(["hls", str(graph_file), "-o", str(out), "--io", "stream", "--inputs",
                     str(tmp_path / "x.npy"), "--reuse", "2", "--reuse-layer", "fc1=4"]) == 0
    assert len((out / "tb" / "data" / "x.txt").read_text().splitlines()) == 7
    parameters = (out / "firmware" / "parameters.h").read_text()
    assert "static const int reuse = 4;" in parameters and "static const int reuse = 2;" in parameters
    assert "hls::stream" in (out / "firmware" / "top.cpp").read_text()


def test_hls_refuses_unsafe_output(graph_file: pathlib.Path, tmp_path: pathlib.Path,
                                   monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["hls", str(graph_file), "-o", ".", "--force"]) == 2
    assert "current directory" in capsys.readouterr().err
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep")
    assert cli.main(["hls", str(graph_file), "-o", "notes", "--force"]) == 2
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep"
    assert cli.main(["hls", str(tmp_path / "missing.json"), "-o", "x"]) == 2


def test_report_formats_and_synthesis(graph_file: pathlib.Path, tmp_path: pathlib.Path,
                                      capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "p"
    assert cli.main(["hls", str(graph_file), "-o", str(out), "--samples", "4"]) == 0
    capsys.readouterr()
    assert cli.main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ap_fixed<8,3,AP_RND_CONV,AP_SAT>" in text and "fc2" in text
    assert f"total bit operations: {(6 * 5 + 3 * 6) * 8 * 8:,}" in text
    assert "no synthesis results" in text
    report_dir = out / "mlp_prj" / "solution1" / "syn" / "report"
    report_dir.mkdir(parents=True)
    (report_dir / "csynth.xml").write_text(
        "<profile><PerformanceEstimates><SummaryOfTimingAnalysis><EstimatedClockPeriod>7.3"
        "</EstimatedClockPeriod></SummaryOfTimingAnalysis><SummaryOfOverallLatency><Worst-caseLatency>12"
        "</Worst-caseLatency><Interval-max>13</Interval-max></SummaryOfOverallLatency></PerformanceEstimates>"
        "<AreaEstimates><Resources><BRAM_18K>0</BRAM_18K><DSP>0</DSP><FF>1234</FF><LUT>7056</LUT>"
        "</Resources></AreaEstimates></profile>")
    assert cli.main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    assert "10.0% of 70,560" in text and "7.3" in text


def test_build_says_what_is_missing_and_runs_vitis_when_present(graph_file: pathlib.Path, tmp_path: pathlib.Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "p"
    assert cli.main(["hls", str(graph_file), "-o", str(out), "--samples", "4"]) == 0
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("XILINX_HLS", raising=False)
    capsys.readouterr()
    assert cli.main(["build", str(out)]) == 2
    assert "neither vitis-run" in capsys.readouterr().err
    fake = bin_dir / "vitis_hls"
    fake.write_text(f"#!/bin/sh\necho \"$@ | $QFX_BUILD_OPTIONS\" > {tmp_path / 'called'}\n")
    fake.chmod(0o755)
    assert cli.main(["build", str(out), "--cosim"]) == 0
    assert (tmp_path / "called").read_text().strip() == "-f build.tcl | csim=1 synth=1 cosim=1 export=0"


def test_rtl_without_the_back_end_says_so(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(cli, "_rtl_module", lambda: None)
    assert cli.main(["rtl", "net.json"]) == 2
    assert "RTL back end" in capsys.readouterr().err
    assert cli.main(["report", "somewhere", "--synth"]) == 2


def test_rtl_delegates_to_its_command_module(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path,
                                             capsys: pytest.CaptureFixture) -> None:
    seen = {}
    command = types.ModuleType("qfx.rtl.command")
    command.add_arguments = lambda parser: parser.add_argument("--depth", type=int)
    command.main = lambda args: seen.setdefault("depth", args.depth) and 0
    command.synth_report = lambda directory, board, **options: f"synth of {directory.name} on {board.part}"
    monkeypatch.setitem(sys.modules, "qfx.rtl", types.ModuleType("qfx.rtl"))
    monkeypatch.setitem(sys.modules, "qfx.rtl.command", command)
    assert cli.main(["rtl", "--depth", "3"]) == 0
    assert seen == {"depth": 3}
    assert cli.main(["report", str(tmp_path), "--synth", "--board", "pynq_z2"]) == 0
    assert f"synth of {tmp_path.name} on xc7z020clg400-1" in capsys.readouterr().out


# ------------------------------------------------------------ bad inputs
def _wide_graph(tmp_path: pathlib.Path) -> pathlib.Path:
    t = FixedType(200, 100)
    graph = Graph("wide", [Value("x", (2,), t)], [Node("r", "relu", ("x",), Value("r", (2,), t))], ["r"])
    return qfx.ir.save(graph, tmp_path / "wide.json")


def _wrapping_graph(tmp_path: pathlib.Path) -> pathlib.Path:
    """Shape (2**31, 2**31, 4): 2**64 elements, 0 in int64."""
    t = FixedType(8, 3, rounding="RND_CONV", overflow="SAT")
    shape = (2 ** 31, 2 ** 31, 4)
    import json
    graph = Graph("wrap", [Value("x", (2,), t)], [Node("r", "relu", ("x",), Value("r", (2,), t))], ["r"])
    path = qfx.ir.save(graph, tmp_path / "wrap.json")
    doc = json.loads(path.read_text())
    doc["inputs"][0]["shape"] = doc["nodes"][0]["output"]["shape"] = list(shape)
    path.write_text(json.dumps(doc))
    return path


def _bad_project(tmp_path: pathlib.Path, name: str, text: str) -> pathlib.Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "qfx.json").write_text(text)
    return folder


def _bad_invocations(tmp_path: pathlib.Path, graph_file: pathlib.Path) -> list[tuple[list[str], str]]:
    """(argv, what the one line must say) for every command."""
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    npy = tmp_path / "x.npy"
    npy.write_bytes(b"not an array")
    wide, wrap, out = str(_wide_graph(tmp_path)), str(_wrapping_graph(tmp_path)), str(tmp_path / "out")
    no_board = _bad_project(tmp_path, "no_board", '{"format": "qfx-hls", "top": "net"}')
    bad_top = _bad_project(tmp_path, "bad_top", '{"format": "qfx-hls", "top": "../../x", "board": "ultra96v2", '
                           '"io": "stream", "samples": 1, "tensors": [], "layers": []}')
    empty = _bad_project(tmp_path, "empty", "")
    g = str(graph_file)
    return [
        (["hls", ".", "-o", out], "is a folder"),
        (["hls", "/dev/zero", "-o", out], "not a regular file"),
        (["hls", str(tmp_path / "missing.json"), "-o", out], "no such file"),
        (["hls", str(garbage), "-o", out], "garbage.json"),
        (["hls", wide, "-o", out], "63 bits"),
        (["hls", g, "-o", out, "--samples", "0"], "at least 1"),
        (["hls", g, "-o", out, "--samples", "-5"], "at least 1"),
        (["hls", g, "-o", out, "--samples", "many"], "whole number"),
        (["hls", g, "-o", out, "--reuse", "0"], "at least 1"),
        (["hls", g, "-o", out, "--inputs", str(npy)], "x.npy"),
        (["hls", g, "-o", str(garbage / "sub")], "garbage.json"),
        (["hls", wrap, "-o", out], "wrap.json"),
        (["csim", str(tmp_path / "nowhere")], "nowhere"),
        (["csim", str(garbage)], "garbage.json"),
        (["build", str(no_board)], "board"),
        (["report", str(no_board)], "'board'"),
        (["report", str(empty)], "not valid JSON"),
        (["report", str(bad_top)], "not a C identifier"),
        (["report", str(no_board), "--synth"], "board"),
        (["report", str(tmp_path / "nowhere"), "--synth"], "nowhere"),
        (["rtl", ".", "-o", out], "is a folder"),
        (["rtl", wide, "-o", out], "63 bits"),
        (["rtl", wrap, "-o", out], "wrap.json"),
        (["rtl", g, "-o", out, "--vectors", "0"], "at least 1"),
        (["rtl", g, "-o", out, "--pipeline", "-1"], "--pipeline"),
        (["rtl", g, "-o", out, "--inputs", str(npy)], "x.npy"),
        (["hls", g, "--board", "nosuchboard", "-o", out], "nosuchboard"),
    ]


def test_every_command_answers_bad_input_with_one_line_and_status_2(graph_file: pathlib.Path, tmp_path: pathlib.Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    for argv, expected in _bad_invocations(tmp_path, graph_file):
        try:
            status = cli.main(argv)
        except SystemExit as stop:  # argparse's usage errors
            status = stop.code
        lines = [line for line in capsys.readouterr().err.splitlines() if line and not line.startswith("[")]
        err = "\n".join(lines)  # all but the progress lines ([1/3] loading ...)
        assert status == 2, (argv, err)
        assert len(lines) == 1 and "Traceback" not in err and err.startswith(f"qfx {argv[0]}: error: "), (argv, err)
        assert expected in err, (argv, err)
    assert not (tmp_path / "out").exists()


def test_a_full_disk_is_one_line(graph_file: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    from qfx.render import writer

    def full(destination: pathlib.Path, text: str) -> str:
        raise OSError(errno.ENOSPC, "No space left on device", str(destination))

    monkeypatch.setattr(writer, "_write_file", full)
    assert cli.main(["hls", str(graph_file), "-o", str(tmp_path / "out"), "--samples", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("qfx hls: error: '") and err[-1].endswith("No space left on device")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_qfx_debug_raises_the_error_itself(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QFX_DEBUG", "1")
    with pytest.raises(FileNotFoundError, match="qfx.json"):
        cli.main(["report", str(tmp_path)])
