"""The streaming Verilog architecture: schedule, refusals, size, and cocotb under backpressure against the IR.

Every simulated design checks each output code against ``qfx.ir.run_codes``
(its vectors) with random input gaps and output backpressure, and the
measured cycles per sample against the schedule's figure.
"""

import json
import re

import numpy as np
import pytest

import qfx.ir
from qfx.format import FixedType
from qfx.ir import Constant, Graph, Node, Value
from qfx.rtl import RTLError, simulate
from qfx.rtl.design import read_design
from qfx.rtl.stream import generate_stream, plan_schedule, render_stream
from rtl_graphs import softmax_graph, stream_cnn, stream_cnn1d, stream_depthwise, stream_residual


def _verilog(files):
    return {path: text for path, text in files.items() if path.endswith(".v")}


# ----------------------------------------------------------------- schedule
def test_default_parallelism_folds_each_layer_up_to_the_slowest_unfolded_stage():
    schedule = plan_schedule(stream_cnn())
    # 8x8 input: 64 pixels is the slowest unfolded stage.  c2 sees 4x4 = 16 output pixels of 6 channels: 3 steps
    # take 48 cycles (4 would take 64 but divide neither 6 channels nor 9 taps; 6 would take 96), and its window's 3
    # rows (tap groups) are preferred to 3 channel groups; the dense layer has one input pixel and folds all 3 outputs.
    figures = {s.node: (s.parallel, s.fold, s.groups, s.cycles) for s in schedule.stages}
    assert figures["c1"] == (4, 1, 1, 64)
    assert figures["p1"] == (4, 1, 1, 64)
    assert figures["c2"] == (6, 1, 3, 48)
    assert figures["g"] == (6, 1, 1, 16)
    assert figures["d"] == (1, 3, 1, 3)
    assert schedule.cycles == 64
    assert schedule.layouts["f"].pixels == 1 and schedule.layouts["f"].channels == 6


def test_parallel_knob_and_its_refusals():
    graph = stream_cnn()
    schedule = plan_schedule(graph, {"c2": 1, "c1": 2})
    assert (schedule.stage("c2").fold, schedule.stage("c2").cycles) == (6, 96)
    assert schedule.stage("c1").fold == 2 and schedule.cycles == 128
    with pytest.raises(RTLError, match="node 'c2'.*divisor of its 6"):
        plan_schedule(graph, {"c2": 4})
    with pytest.raises(RTLError, match="no node 'nope'"):
        plan_schedule(graph, {"nope": 1})
    with pytest.raises(RTLError, match="node 'r1'.*parallelism is 4"):
        plan_schedule(graph, {"r1": 2})
    # c2: 6 output channels, a 3x3 window; 2 channels a step in 3 tap groups (its rows) is 3 x 3 steps a pixel
    grouped = plan_schedule(graph, {"c2": (2, 3)}).stage("c2")
    assert (grouped.parallel, grouped.fold, grouped.groups, grouped.cycles) == (2, 3, 3, 16 * 9)
    with pytest.raises(RTLError, match="node 'c2'.*tap groups 2 must be a divisor of its window's 9 taps"):
        plan_schedule(graph, {"c2": (6, 2)})
    with pytest.raises(RTLError, match="node 'd'.*tap groups 3 apply to convolutions only"):
        plan_schedule(graph, {"d": (1, 3)})


def test_default_parallelism_keeps_the_multipliers_within_the_dsp_budget():
    graph = stream_residual()
    taps = {"stem": 27, "b1": 36, "b2": 36, "down": 4, "main": 36}  # weights per output channel (kernel x C_in)

    def multipliers(schedule):  # P lanes of a tap group's weights each
        return sum(schedule.stage(name).parallel * n // schedule.stage(name).groups for name, n in taps.items())
    free = plan_schedule(graph, dsp_budget=10 ** 6)
    assert multipliers(free) == 4 * 27 + 4 * 36 + 4 * 36 + 4 + 36
    for budget in (360, 200):
        fitted = plan_schedule(graph, dsp_budget=budget)
        assert multipliers(fitted) <= budget < multipliers(free)
        assert fitted.cycles > free.cycles
    khot = plan_schedule(stream_residual(khot=True), dsp_budget=0)  # shift-add weights need no multiplier
    assert khot.cycles == plan_schedule(stream_residual(khot=True)).cycles == free.cycles


def test_shift_add_lut_estimate_counts_digits():
    from qfx.rtl.stream.plan import LUTS_PER_DIGIT, Layout, shift_add_luts
    weight = Constant(np.array([[[3, 4, 0]], [[-5, 1, 2]]]), (FixedType(6, 2),))  # CSD: 4-1, 4, 0 | -4-1, 1, 2
    conv = Node("conv", "conv1d", ("x",), Value("conv", (2, 6), FixedType(8, 4)),
                {"stride": [1], "padding": [[1, 1]], "dilation": [1], "groups": 1}, {"weight": weight})
    # one ROM word: each of the 7 digits a fixed shift; two words: 1 lane x 3 taps x 2 digit slots, shifts from the ROM
    assert shift_add_luts(conv, Layout(6, 1), Layout(6, 2), 1) == 7 * LUTS_PER_DIGIT["fixed"]
    assert shift_add_luts(conv, Layout(6, 1), Layout(6, 2), 2) == 6 * LUTS_PER_DIGIT["rom"]
    # three tap groups (one tap a step): 2 lanes x 1 tap x 2 digit slots; with two channel groups, 1 lane
    assert shift_add_luts(conv, Layout(6, 1), Layout(6, 2), 1, 3) == 4 * LUTS_PER_DIGIT["rom"]
    assert shift_add_luts(conv, Layout(6, 1), Layout(6, 2), 2, 3) == 2 * LUTS_PER_DIGIT["rom"]


def test_default_parallelism_keeps_the_shift_add_estimate_within_the_lut_budget():
    from qfx.rtl.stream.plan import shift_add_luts
    graph = stream_cnn(khot=True)
    nodes = {node.name: node for node in graph.nodes}

    def luts(schedule):
        return sum(shift_add_luts(nodes[s.node], s.input, s.output, s.fold, s.groups) for s in schedule.stages)
    free = plan_schedule(graph, lut_budget=10 ** 9)
    budget = luts(free) - 1  # met by one more fold of c2 (6 lanes of shifters to 3)
    fitted = plan_schedule(graph, lut_budget=budget)
    assert luts(fitted) <= budget and fitted.cycles > free.cycles
    assert plan_schedule(stream_residual(), lut_budget=0).cycles == plan_schedule(stream_residual()).cycles


def test_unsupported_ops_are_refused_up_front_naming_node_and_op():
    with pytest.raises(RTLError, match=r"node '[^']*' \(softmax.*op 'softmax' has no streaming Verilog stage"):
        plan_schedule(softmax_graph())
    x = Value("x", (2, 3), FixedType(8, 3))
    a = Node("first", "relu", ("x",), Value("first", (2, 3), FixedType(8, 3)))
    cat = Node("joined", "concat", ("first", "x"), Value("joined", (2, 6), FixedType(9, 4)), {"axis": 1})
    with pytest.raises(RTLError, match=r"node 'joined' \(concat\).*joins channels \(axis 0\), not axis 1"):
        plan_schedule(Graph("g", [x], [a, cat], ["joined"]).check())


def test_a_flattened_stream_feeding_a_spatial_stage_is_refused():
    image = Value("x", (2, 4, 4), FixedType(8, 3))
    flat = Node("flat", "flatten", ("x",), Value("flat", (32,), image.type))
    bn = Node("bn", "scale_shift", ("flat",), Value("bn", (32,), FixedType(8, 3)),
              constants={"scale": Constant(np.arange(32) % 4, (FixedType(4, 2),)),
                         "shift": Constant(np.arange(32) % 3, (FixedType(4, 2),))})
    with pytest.raises(RTLError, match="node 'bn'.*cannot reorder"):
        plan_schedule(Graph("g", [image], [flat, bn], ["bn"]).check())


# ------------------------------------------------------------ the Verilog
def test_verilog_size_follows_the_weights_not_the_image():
    small = sum(len(t) for t in _verilog(render_stream(stream_cnn(8, 8), vectors=2)).values())
    large = sum(len(t) for t in _verilog(render_stream(stream_cnn(32, 32), vectors=2)).values())
    assert abs(large - small) < 0.02 * small, (small, large)


def test_khot_weights_need_no_multiplier():
    files = render_stream(stream_cnn(khot=True), vectors=2)
    for path, text in _verilog(files).items():
        code = re.sub(r"//[^\n]*", "", text)
        code = re.sub(r"\(\*[^*]*\*\)", "", code)
        assert "*" not in code, path
    manifest = json.loads(files["manifest.json"])
    assert all(layer["multipliers"] == 0 for layer in manifest["layers"])
    general = json.loads(render_stream(stream_cnn(), vectors=2)["manifest.json"])
    assert sum(layer["multipliers"] for layer in general["layers"]) > 0


def test_the_design_folder_reads_back(tmp_path):
    design = generate_stream(stream_cnn1d(), tmp_path / "design", vectors=2)
    folder = read_design(design)
    manifest = json.loads((design / "manifest.json").read_text())
    assert folder.top == manifest["top"] == "cnn1d"
    assert [f"rtl/{m}.v" for m in folder.layers] == [layer["file"] for layer in manifest["layers"]]
    readme = (design / "README.md").read_text()
    assert f"**{manifest['cycles_per_sample']} clock cycles per sample**" in readme


# ------------------------------------------------------------------- cocotb
DESIGNS = {"cnn": lambda: stream_cnn(), "khot_cnn": lambda: stream_cnn(khot=True), "residual": stream_residual,
           "cnn1d": stream_cnn1d, "depthwise": stream_depthwise}


@pytest.fixture(scope="module")
def designs(tmp_path_factory):
    return {name: generate_stream(make(), tmp_path_factory.mktemp(name) / "design", vectors=12)
            for name, make in DESIGNS.items()}


@pytest.mark.parametrize("name", list(DESIGNS))
def test_bit_exact_under_backpressure_on_icarus(designs, name):
    simulate(designs[name], "icarus")


@pytest.mark.parametrize("make", [stream_depthwise, lambda: stream_residual(khot=True)], ids=["depthwise", "residual"])
def test_tap_folded_convolutions_bit_exact_under_backpressure_on_icarus(tmp_path, make):
    """No budget: every convolution folds to one output channel and one tap a step (a depthwise conv dilated down the
    rows with asymmetric padding; strided, padded residual blocks), accumulating its window over 9 steps."""
    design = generate_stream(make(), tmp_path / "design", vectors=4, dsp_budget=0, lut_budget=0)
    layers = json.loads((design / "manifest.json").read_text())["layers"]
    folded = [layer for layer in layers if layer["op"] == "conv2d" and layer["groups"] == 9]
    assert folded and all(layer["parallel"] == 1 for layer in folded)
    simulate(design, "icarus")


def test_bit_exact_under_backpressure_on_verilator(designs):
    simulate(designs["cnn1d"], "verilator")


def test_a_wrong_expected_code_fails(designs, tmp_path):
    import shutil
    design = tmp_path / "broken"
    shutil.copytree(designs["cnn1d"], design, ignore=shutil.ignore_patterns("sim_build"))
    vectors_file = design / "tb" / "vectors.json"
    vectors = json.loads(vectors_file.read_text())
    vectors["outputs"]["m_axis"][-1][0] += 1
    vectors_file.write_text(json.dumps(vectors))
    with pytest.raises(RuntimeError, match="failed"):
        simulate(design, "icarus")


# ---------------------------------------------------------------- command
def test_qfx_rtl_arch_stream_with_a_parallel_knob(tmp_path):
    from qfx import cli
    graph = tmp_path / "net.json"
    qfx.ir.save(stream_cnn1d(), graph)
    out = tmp_path / "design"
    assert cli.main(["rtl", str(graph), "-o", str(out), "--arch", "stream", "--parallel", "c2=1:3",
                     "--vectors", "3"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["arch"] == "stream"
    c2 = {layer["node"]: layer for layer in manifest["layers"]}["node 'c2' (conv1d)"]
    assert (c2["fold"], c2["groups"]) == (4, 3)
    simulate(out, "icarus")
    assert len(json.loads((out / "tb" / "vectors.json").read_text())["inputs"]["s_axis"]) == 3
    for bad in (["--parallel", "c2"], ["--parallel", "c2=3"], ["--parallel", "c2=1:2"], ["--parallel", "c2=1:3:1"],
                ["--pipeline", "1"]):
        assert cli.main(["rtl", str(graph), "-o", str(tmp_path / "other"), "--arch", "stream", *bad]) == 2
    assert cli.main(["rtl", str(graph), "-o", str(tmp_path / "other"), "--parallel", "c2=1"]) == 2
