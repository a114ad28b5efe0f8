"""Generated Verilog simulated under cocotb on Icarus and Verilator, bit-exact against the IR and PyTorch.

Three networks: a 2-hot MLP from PyTorch (pipelined), a convolutional
network from PyTorch (BatchNorm, LeakyReLU, residual add, ReLU6, an
accumulator format), and a hand-built graph with every rounding and
overflow mode.  Each design is built once per simulator (Verilator builds
dominate the runtime).
"""

import json

import pytest

from qfx.rtl import generate, simulate
from rtl_graphs import conv_graph, every_mode_graph, khot_mlp_graph

DESIGNS = {
    "khot_mlp": lambda: (*khot_mlp_graph(), 2),
    "conv_net": lambda: (*conv_graph(), 3),
    "every_mode": lambda: (every_mode_graph(), None, 0),
}


@pytest.fixture(scope="module")
def designs(tmp_path_factory):
    built = {}
    for name, make in DESIGNS.items():
        graph, codes, pipeline = make()
        built[name] = generate(graph, tmp_path_factory.mktemp(name) / "design", pipeline=pipeline, inputs=codes)
    return built


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
@pytest.mark.parametrize("name", list(DESIGNS))
def test_bit_exact(designs, name, simulator):
    design = designs[name]
    manifest = json.loads((design / "manifest.json").read_text())
    vectors = json.loads((design / "tb" / "vectors.json").read_text())
    assert all(len(codes) >= 256 for codes in vectors["inputs"].values())
    assert manifest["latency"] == 2 + manifest["pipeline"]
    simulate(design, simulator)
    if simulator == "verilator":  # the fast build: one translation unit, no precompiled header, the top public
        build = design / "sim_build" / "verilator"
        assert (build / "Vtop__ALL.o").is_file() and not list(build.glob("*.gch"))
        command = (build / "Vtop__verFiles.dat").read_text().splitlines()[1]
        assert "--public-depth 1" in command and "--public-flat-rw" not in command


def test_a_wrong_expected_code_fails(designs, tmp_path):
    """The cocotb test is not vacuous: one changed expected code makes it fail."""
    import shutil
    design = tmp_path / "broken"
    shutil.copytree(designs["every_mode"], design, ignore=shutil.ignore_patterns("sim_build"))
    vectors_file = design / "tb" / "vectors.json"
    vectors = json.loads(vectors_file.read_text())
    (port,) = vectors["outputs"]
    vectors["outputs"][port][100][1] += 1
    vectors_file.write_text(json.dumps(vectors))
    with pytest.raises(RuntimeError, match="failed"):
        simulate(design, "icarus")
