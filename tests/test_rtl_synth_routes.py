"""The per-layer synthesis route against the whole top, its cache, its progress and its errors."""

import dataclasses
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from qfx.format import FixedType
from qfx.ir import Constant, Graph, Node, Value
from qfx.rtl import synth
from qfx.rtl.stream import generate_stream
from qfx.rtl.synth import synthesize
from qfx.rtl.yosys import Abort

#: How far the modules route's LUT count may lie from the whole top's on this small design (it loses optimisation
#: across layers: 17-26% more LUT on the digits CNN).
LUT_TOLERANCE = 0.05


def _two_stages() -> Graph:
    rng = np.random.default_rng(5)
    x = Value("x", (1, 6), FixedType(6, 2))
    attrs = {"stride": [1], "padding": [[1, 1]], "dilation": [1], "groups": 1}
    weight = Constant(rng.integers(-100, 100, size=(2, 1, 3)), (FixedType(8, 2),))
    conv = Node("conv", "conv1d", ("x",), Value("conv", (2, 6), FixedType(8, 4)), attrs, {"weight": weight})
    relu = Node("relu", "relu", ("conv",), Value("relu", (2, 6), FixedType(8, 4)))
    return Graph("two stages", [x], [conv, relu], ["relu"]).check()


@pytest.fixture(scope="module")
def routed(tmp_path_factory):
    """A two-stage streaming design synthesised by the modules route into a fresh cache, with its progress lines."""
    root = tmp_path_factory.mktemp("routes")
    design = generate_stream(_two_stages(), root / "design", parallel={"conv": 1}, vectors=2)
    lines = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("QFX_CACHE_DIR", str(root / "cache"))
        found = synthesize(design, route="modules", jobs=2, progress=lines.append)
    return design, root / "cache", found, lines


def test_the_modules_route_agrees_with_the_whole_top(routed):
    design, _, found, lines = routed
    whole = synthesize(design, per_layer=False, route="whole", cache=False)["total"]
    total = found["total"]
    assert set(found) == {"two_stages_conv", "two_stages_relu", "two_stages", "total"}
    exact = ("ff", "dsp", "bram36", "bram18", "lutram")
    assert [getattr(total, f) for f in exact] == [getattr(whole, f) for f in exact]
    assert abs(total.lut - whole.lut) <= LUT_TOLERANCE * whole.lut and whole.lut > 100
    assert abs(total.carry4 - whole.carry4) <= 2
    rows = [r for key, r in found.items() if key != "total"]
    assert total.lut == sum(r.lut for r in rows) and total.ff == sum(r.ff for r in rows)
    assert found["two_stages_conv"].lut > found["two_stages_relu"].lut > 0
    # progress: a line as each of the three runs starts and ends, the last one [3/3]
    assert sum(line.startswith("synthesising ") for line in lines) == 3
    assert [line.split()[0] for line in lines if line.startswith("[")] == ["[1/3]", "[2/3]", "[3/3]"]
    assert any(line.startswith("synthesising two_stages_conv in two_stages (") for line in lines)


def test_a_rerun_synthesises_only_the_layer_that_changed(routed, monkeypatch):
    design, cache, found, _ = routed
    monkeypatch.setenv("QFX_CACHE_DIR", str(cache))
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("Yosys ran for an unchanged design"))
    again = synthesize(design, route="modules")
    assert all(again[k].cached for k in again if k != "total")
    assert {k: dataclasses.replace(r, seconds=0, cached=False) for k, r in again.items()} == \
        {k: dataclasses.replace(r, seconds=0, cached=False) for k, r in found.items()}
    monkeypatch.undo()
    monkeypatch.setenv("QFX_CACHE_DIR", str(cache))
    with open(design / "rtl" / "two_stages_relu.v", "a") as f:
        f.write("// a change inside the layer\n")
    changed = synthesize(design, route="modules")
    assert [k for k in changed if k != "total" and not changed[k].cached] == ["two_stages_relu"]
    assert changed["total"].lut == found["total"].lut


@pytest.mark.parametrize("text", ['{"cells": {"LUT6": -5}, "seconds": 1.0}', "{", '{"cells": {}}', "[]",
                                  '{"cells": {"LUT6": 1.5}, "seconds": 1}', '{"cells": {"LUT6": 2}, "seconds": -1}'])
def test_a_damaged_cache_entry_is_not_read(tmp_path, text):
    from qfx.rtl.yosys import _load
    entry = tmp_path / "entry.json"
    entry.write_text(text)
    assert _load(entry) is None
    entry.write_text('{"cells": {"LUT6": 2, "FDRE": 1}, "seconds": 1.5, "top": "x"}')
    assert _load(entry) == ({"LUT6": 2, "FDRE": 1}, 1.5)


def test_the_failing_layer_is_named(routed, tmp_path):
    design = shutil.copytree(routed[0], tmp_path / "design")
    (design / "rtl" / "two_stages_conv.v").write_text((design / "rtl" / "two_stages_conv.v").read_text()
                                                      .replace("endmodule", "endmodul", 1))
    with pytest.raises(RuntimeError, match=r"Yosys failed on two_stages_conv in two_stages \("):
        synthesize(design, per_layer=False, route="modules", jobs=1, cache=False)


def test_a_failure_stops_the_other_yosys_processes(tmp_path):
    abort, result = Abort(), {}
    worker = threading.Thread(target=lambda: result.setdefault(
        "status", abort.run([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path, None)))
    worker.start()
    time.sleep(0.5)
    start = time.monotonic()
    abort.stop()
    worker.join(timeout=20)
    assert not worker.is_alive() and result["status"][0] != 0
    assert abort.run([sys.executable, "-c", "pass"], tmp_path, None)[0] < 0  # none starts after a stop
    assert time.monotonic() - start < 20


def test_report_synth_passes_jobs_route_and_cache(tmp_path, monkeypatch, capsys):
    from qfx import cli
    from qfx.rtl import command
    seen = {}
    monkeypatch.setattr(command, "synth_report", lambda directory, board, **options: seen.update(options) or "ok")
    assert cli.main(["report", str(tmp_path), "--synth", "-j", "3", "--route", "modules", "--no-cache"]) == 0
    assert seen == {"route": "modules", "jobs": 3, "cache": False}
    assert cli.main(["report", str(tmp_path), "--synth", "-j", "0"]) == 2
    with pytest.raises(ValueError, match="route 'flat'"):
        synth.synthesize(tmp_path, route="flat")
