"""qfx.render.writer: --force never deletes what qfx did not write; races, signals and crashes lose nothing."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import stat
import subprocess
import sys
import threading

import numpy as np
import pytest

import qfx.ir
from qfx.format import FixedType
from qfx.ir import Constant, Graph, Node, Value
from qfx.render import ForeignFilesError, writer
from qfx.render.writer import RECORD, write_project

PLAN = {"rtl/top.v": "module top; endmodule\n", "manifest.json": "{}\n", "README.md": "# top\n"}


def _tree(folder: pathlib.Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def _leftovers(parent: pathlib.Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".qfx-" in p.name]


def _graph() -> Graph:
    t = FixedType(8, 3, rounding="RND_CONV", overflow="SAT")
    dense = Node("fc", "dense", ("x",), Value("fc", (2,), t),
                 constants={"weight": Constant(np.array([[1, 2], [3, 4]]), (FixedType(4, 2),))})
    return Graph("net", [Value("x", (2,), t)], [dense], ["fc"]).check()


# ------------------------------------------------- what --force may replace
def test_force_refuses_a_web_app_holding_a_manifest(tmp_path: pathlib.Path) -> None:
    from qfx.rtl import generate
    app = tmp_path / "app"
    (app / "src").mkdir(parents=True)
    for name, text in {"manifest.json": '{"name": "app"}', "index.html": "<html>", "src/app.js": "main()"}.items():
        (app / name).write_text(text)
    before = _tree(app)
    with pytest.raises(ForeignFilesError, match=r"index.html, manifest.json, src/app.js"):
        generate(_graph(), app, force=True)
    assert _tree(app) == before and not _leftovers(tmp_path)


def test_qfx_hls_force_refuses_a_folder_whose_qfx_json_is_not_qfxs(tmp_path: pathlib.Path, capsys) -> None:
    from qfx import cli
    graph = qfx.ir.save(_graph(), tmp_path / "g.json")
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "qfx.json").write_text("{}")
    (folder / "thesis.tex").write_text("precious")
    assert cli.main(["hls", str(graph), "-o", str(folder), "--force", "--samples", "2"]) == 2
    assert "thesis.tex" in capsys.readouterr().err
    assert _tree(folder) == {"qfx.json": "{}", "thesis.tex": "precious"}


def test_force_replaces_its_own_output_and_build_folders_but_not_edited_files(tmp_path: pathlib.Path) -> None:
    target = write_project(PLAN, tmp_path / "d", outputs=("sim_build",))
    record = json.loads((target / RECORD).read_text())
    assert set(record["files"]) == set(PLAN)
    (target / "sim_build" / "icarus").mkdir(parents=True)
    (target / "sim_build" / "icarus" / "sim.vvp").write_text("built")
    write_project({**PLAN, "README.md": "# new\n"}, target, force=True, outputs=("sim_build",))
    assert (target / "README.md").read_text() == "# new\n" and not (target / "sim_build").exists()
    (target / "rtl" / "top.v").write_text("module top; /* my fix */ endmodule\n")
    (target / "notes.txt").write_text("mine")
    with pytest.raises(ForeignFilesError, match=r"did not write: notes.txt; generated files edited since: rtl/top.v"):
        write_project(PLAN, target, force=True, outputs=("sim_build",))
    assert (target / "notes.txt").read_text() == "mine" and "my fix" in (target / "rtl" / "top.v").read_text()
    (target / "notes.txt").unlink()
    os.symlink("/etc", target / "sim_build_link")
    with pytest.raises(ForeignFilesError, match="sim_build_link"):
        write_project(PLAN, target, force=True)


# ----------------------------------------------------------------- races
def test_a_folder_that_appears_during_the_write_is_never_replaced(tmp_path: pathlib.Path, monkeypatch) -> None:
    target = tmp_path / "out"
    real = writer._write_file

    def appear(destination: pathlib.Path, text: str) -> str:
        if not target.exists():
            target.mkdir()
            (target / "thesis.tex").write_text("precious")
        return real(destination, text)

    monkeypatch.setattr(writer, "_write_file", appear)
    with pytest.raises(FileExistsError, match="appeared while qfx was writing"):
        write_project(PLAN, target)
    with pytest.raises(ForeignFilesError, match="thesis.tex"):
        write_project(PLAN, target, force=True)
    assert _tree(target) == {"thesis.tex": "precious"} and not _leftovers(tmp_path)


@pytest.mark.parametrize("exchange", [True, False])
def test_a_file_added_during_a_forced_replace_keeps_the_old_folder(tmp_path: pathlib.Path, monkeypatch,
                                                                   exchange: bool) -> None:
    target = write_project(PLAN, tmp_path / "out")
    real = writer._write_file
    if not exchange:  # the two-rename fallback of systems without renameat2
        monkeypatch.setattr(writer, "_renameat2", lambda source, destination, flags: False)

    def add(destination: pathlib.Path, text: str) -> str:
        (target / "late.txt").write_text("mine")
        return real(destination, text)

    monkeypatch.setattr(writer, "_write_file", add)
    with pytest.raises(ForeignFilesError, match="late.txt"):
        write_project({"other.v": "x"}, target, force=True)
    assert _tree(target) == {**PLAN, RECORD: (target / RECORD).read_text(), "late.txt": "mine"}
    assert not _leftovers(tmp_path)


def test_two_concurrent_writes_one_wins_the_other_refuses(tmp_path: pathlib.Path, monkeypatch) -> None:
    target, both_staged = tmp_path / "out", threading.Barrier(2, timeout=20)
    real, outcomes = writer._write_file, []

    def staged_together(destination: pathlib.Path, text: str) -> str:
        if destination.name == "README.md":
            both_staged.wait()
        return real(destination, text)

    def run(label: str) -> None:
        try:
            write_project({**PLAN, "README.md": label}, target)
            outcomes.append(label)
        except FileExistsError as error:
            outcomes.append(str(error))

    monkeypatch.setattr(writer, "_write_file", staged_together)
    threads = [threading.Thread(target=run, args=(label,)) for label in ("first", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [o for o in outcomes if o in ("first", "second")]
    assert len(winners) == 1 and "appeared while qfx was writing" in " ".join(outcomes)
    assert (target / "README.md").read_text() == winners[0] and not _leftovers(tmp_path)


# ------------------------------------------------------ signals, crashes
_SLOW_WRITER = """
import pathlib, signal, sys, time
from qfx.render import writer
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, even if started in the background
real = writer._write_file
def slow(destination, text):
    print("staging", flush=True)
    time.sleep(30)
    return real(destination, text)
writer._write_file = slow
writer.write_project({"a.v": "x"}, sys.argv[1])
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_the_write_removes_the_staging_folder(tmp_path: pathlib.Path, signum: int) -> None:
    child = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(tmp_path / "out")], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "staging"
    assert _leftovers(tmp_path)
    child.send_signal(signum)
    child.wait(timeout=20)
    assert child.returncode != 0 and not _leftovers(tmp_path) and not (tmp_path / "out").exists()


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_leftovers_of_a_killed_run_are_cleaned_or_put_back(tmp_path: pathlib.Path) -> None:
    project = write_project(PLAN, tmp_path / "net")
    pid = _dead_pid()
    staging = tmp_path / f".net.qfx-staging-{pid}-abc"
    write_project(PLAN, staging)  # what a run killed (SIGKILL) mid-write leaves
    write_project(PLAN, project, force=True)
    assert not staging.exists()
    # A crash between the two renames of a forced replace: the old project only in its hidden folder.
    old = tmp_path / f".net.qfx-old-{pid}-abc"
    project.rename(old)
    with pytest.warns(UserWarning, match="put it back"):
        with pytest.raises(FileExistsError, match="--force"):
            write_project(PLAN, project)
    assert _tree(project)["README.md"] == "# top\n" and not old.exists()
    kept = tmp_path / f".net.qfx-staging-{pid}-def"
    kept.mkdir()
    (kept / "mine.txt").write_text("x")
    with pytest.warns(UserWarning, match="remove it by hand"):
        write_project(PLAN, project, force=True)
    assert (kept / "mine.txt").exists()


# ------------------------------------------------------------ permissions
@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_files_follow_the_umask(tmp_path: pathlib.Path, mask: int) -> None:
    previous = os.umask(mask)
    try:
        target = write_project(PLAN, tmp_path / "d")
        graph = qfx.ir.save(_graph(), tmp_path / "g.json")
        from qfx.onnx import export_onnx
        onnx_file = export_onnx(_graph(), tmp_path / "g.onnx")
    finally:
        os.umask(previous)
    for path in (target / "README.md", graph, graph.with_suffix(".npz"), onnx_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, path
    assert stat.S_IMODE(target.stat().st_mode) == 0o777 & ~mask
