"""A whole graph as Verilog: the layer modules, the top with its pipeline, the manifest, tests and README.

``render(graph, ...)`` returns every generated file as ``{relative path:
text}``; ``generate(graph, directory, ...)`` writes them atomically.  The
files:

=========================  ====================================================================
``rtl/<top>.v``            the top: input register, layers, pipeline registers, output register
``rtl/<top>_<layer>.v``    one combinational module per layer
``rtl/qfx_add.v``          the two-operand shift-add every constant product is built from
``manifest.json``          top, latency, port formats, layers and sources (read by the tests)
``tb/vectors.json``        input codes and the IR interpreter's output codes for them
``tb/test_<top>.py``       the cocotb test: drives every vector back to back, checks every bit
``tb/runner.py``           pytest entry: builds and runs it on Icarus and on Verilator
``README.md``              ports, latency, how to simulate and synthesise
=========================  ====================================================================

Output is deterministic: the same graph and options give the same bytes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Optional

import numpy as np

from ..ir import Graph, IRError, run_codes
from ..ir.graph import c_identifier
from ..render import environment, write_project
from ..render.escape import VERILOG_KEYWORDS, verilog_ident
from .layers import LayerModule, RTLError, check_supported, lower_node

__all__ = ["Design", "plan_design", "render", "generate", "random_input_codes"]

DEFAULT_VECTORS = 256
#: What simulating a design adds to its folder (``--force`` may replace these with the design).
SIMULATION_OUTPUTS = ("sim_build", "tb/__pycache__", ".pytest_cache")


@dataclasses.dataclass(frozen=True)
class Bus:
    """A packed tensor in the top: ``wire [width-1:0] name``."""

    name: str
    width: int


@dataclasses.dataclass(frozen=True)
class Register:
    """``reg [width-1:0] name``, loaded from ``source`` on every rising edge."""

    name: str
    width: int
    source: str


@dataclasses.dataclass(frozen=True)
class Stage:
    """One register stage: its valid flag (cleared by reset) and the tensors it holds."""

    comment: str
    valid: str
    valid_source: str
    registers: list[Register]


@dataclasses.dataclass(frozen=True)
class Instance:
    """A layer module instantiated in the top, with the signals on its ports."""

    module: str
    name: str
    inputs: list[str]
    output: str


@dataclasses.dataclass
class Design:
    """The top module and its layers, as the templates render them."""

    top: str
    graph: str
    pipeline: int
    latency: int  #: clock edges from in_valid/in_data to out_valid/out_data
    layers: list[LayerModule]
    instances: list[Instance]
    buses: list[Bus]
    stages: list[Stage]
    out_valid: str
    out_data: str
    input_type: str
    input_count: int
    input_bits: int
    input_width: int
    output_type: str
    output_count: int
    output_bits: int
    output_width: int

    def manifest(self) -> dict:
        """What a test bench needs to know, as JSON data."""
        return {
            "generator": "qfx rtl", "top": self.top, "graph": self.graph, "pipeline": self.pipeline, "latency": self.latency,
            "input": {"type": self.input_type, "count": self.input_count, "bits": self.input_bits,
                      "signed": not self.input_type.startswith("ap_ufixed")},
            "output": {"type": self.output_type, "count": self.output_count, "bits": self.output_bits,
                       "signed": not self.output_type.startswith("ap_ufixed")},
            "layers": [{"module": layer.name, "node": layer.node, "op": layer.op, "adders": len(layer.adders),
                        "file": f"rtl/{layer.name}.v"} for layer in self.layers],
            "sources": ["rtl/qfx_add.v"] + [f"rtl/{layer.name}.v" for layer in self.layers] + [f"rtl/{self.top}.v"],
        }


#: A fully unrolled design carries every bit of every tensor on its own wire; beyond this many it is refused
#: before anything is generated (a ReLU on a 64x224x224 image would write about a gigabyte of Verilog).
MAX_DESIGN_BITS = 1 << 22


def _check_graph(graph: Graph) -> None:
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise RTLError(f"graph '{graph.name}' has {len(graph.inputs)} inputs and {len(graph.outputs)} outputs; the "
                       "Verilog top takes exactly one input tensor and one output tensor")
    if graph.outputs[0] == graph.inputs[0].name:
        raise RTLError(f"graph '{graph.name}': its output is its input; there is no logic to generate")
    for node in graph.nodes:  # every node before any is lowered: a refusal comes at once, not after the rest
        check_supported(node)
    bits = sum(v.size * v.type.width for v in graph.values().values())
    if bits > MAX_DESIGN_BITS:
        raise RTLError(f"graph '{graph.name}': its tensors hold {bits} bits per sample, more than the fully "
                       f"unrolled Verilog back end's limit of {MAX_DESIGN_BITS} (every bit is a wire of the design); "
                       "use the HLS back end for this network")


def _boundaries(layers: int, pipeline: int, graph: str) -> list[int]:
    """The layer indices after which a pipeline register stage sits, spread evenly over the layers."""
    if pipeline < 0:
        raise RTLError(f"--pipeline must be 0 or more, got {pipeline}")
    if pipeline > layers - 1:
        raise RTLError(f"graph '{graph}': --pipeline {pipeline} asks for more register stages than the "
                       f"{layers - 1} boundaries between its {layers} layers; use at most {layers - 1}")
    return [(j + 1) * layers // (pipeline + 1) - 1 for j in range(pipeline)]


def plan_design(graph: Graph, pipeline: int = 0, top: Optional[str] = None) -> Design:
    """Lower every node of ``graph`` and plan the top module with ``pipeline`` register stages between layers.

    Raises :class:`~qfx.rtl.layers.RTLError` naming the node for an op or
    a size the Verilog back end does not support.
    """
    graph.check()
    _check_graph(graph)
    names = graph.c_names()
    if top is not None:
        try:
            verilog_ident(top)
        except ValueError as error:
            raise RTLError(f"--top {top!r:.80}: the top module's name must be a Verilog identifier (letters, "
                           "digits and _, not starting with a digit, at most 80 characters, not a keyword)") \
                from error
        if top == "qfx_add":
            raise RTLError("--top qfx_add: the name is taken by qfx's adder module; choose another")
    top = top or c_identifier(graph.name or "qfx_top", set(names.values()) | VERILOG_KEYWORDS)
    values = graph.values()
    layers = [lower_node(node, [values[i] for i in node.inputs], f"{top}_{names[node.name]}") for node in graph.nodes]
    cuts = set(_boundaries(len(layers), pipeline, graph.name))
    last_use = {}
    for k, node in enumerate(graph.nodes):
        last_use.update((name, k) for name in node.inputs)
    x, y = graph.inputs[0], graph.output_values[0]
    width_of = {v.name: v.size * v.type.width for v in values.values()}
    current = {x.name: "in_reg"}  # the signal carrying each tensor at this point of the pipeline
    stages = [Stage("input register", "in_valid_reg", "in_valid", [Register("in_reg", width_of[x.name], "in_data")])]
    buses, instances = [], []
    for k, (node, layer) in enumerate(zip(graph.nodes, layers)):
        bus = f"t_{names[node.name]}"
        buses.append(Bus(bus, width_of[node.name]))
        instances.append(Instance(layer.name, f"u_{names[node.name]}", [current[i] for i in node.inputs], bus))
        current[node.name] = bus
        if k in cuts:
            live = [name for name in current if last_use.get(name, -1) > k or name == y.name]
            registers = [Register(f"{names[name]}_s{len(stages)}", width_of[name], current[name]) for name in live]
            current.update((name, r.name) for name, r in zip(live, registers))
            stages.append(Stage(f"pipeline stage {len(stages)}: after {node.describe()}", f"valid_s{len(stages)}",
                                stages[-1].valid, registers))
    stages.append(Stage("output register", "out_valid_reg", stages[-1].valid,
                        [Register("out_reg", width_of[y.name], current[y.name])]))
    return Design(
        top=top, graph=graph.name, pipeline=pipeline, latency=len(stages), layers=layers, instances=instances,
        buses=buses, stages=stages, out_valid="out_valid_reg", out_data="out_reg",
        input_type=str(x.type), input_count=x.size, input_bits=x.type.width, input_width=width_of[x.name],
        output_type=str(y.type), output_count=y.size, output_bits=y.type.width, output_width=width_of[y.name])


def random_input_codes(graph: Graph, count: int = DEFAULT_VECTORS, seed: int = 0) -> np.ndarray:
    """``count`` input vectors of uniformly random codes over the whole input format (batch first)."""
    x = graph.inputs[0]
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise RTLError(f"the number of test vectors (--vectors) must be at least 1, got {count!r}")
    if x.type.width > 63:
        raise RTLError(f"graph '{graph.name}': input '{x.name}' is {x.type.width} bits wide; random test vectors "
                       "are drawn for inputs of at most 63 bits: pass --inputs")
    rng = np.random.default_rng(seed)
    return rng.integers(x.type.code_min, x.type.code_max, size=(count,) + tuple(x.shape), endpoint=True)


def render(graph: Graph, pipeline: int = 0, inputs: Optional[np.ndarray] = None, top: Optional[str] = None) -> dict[str, str]:
    """Every file of the design of ``graph``, ``{relative path: text}``.

    ``inputs`` are input codes (batch first, the input's shape per sample)
    for the test vectors, e.g. ``qfx.ir.input_codes(x, graph.inputs[0].type)``
    of real data; by default :data:`DEFAULT_VECTORS` random vectors.
    """
    design = plan_design(graph, pipeline, top)
    if inputs is None:
        inputs = random_input_codes(graph)
    inputs = np.asarray(inputs)
    try:
        outputs = run_codes(graph, [inputs])[graph.outputs[0]]
    except (IRError, ValueError) as error:
        raise RTLError(f"graph '{graph.name}': cannot compute the test vectors' outputs: {error}") from error
    vectors = {"inputs": inputs.reshape(len(inputs), -1).tolist(), "outputs": outputs.reshape(len(outputs), -1).tolist()}
    env = environment()
    files = {f"rtl/{layer.name}.v": env.get_template("rtl/layer.v.j2").render(layer=layer) for layer in design.layers}
    files["rtl/qfx_add.v"] = env.get_template("rtl/qfx_add.v.j2").render()
    files[f"rtl/{design.top}.v"] = env.get_template("rtl/top.v.j2").render(design=design)
    files["manifest.json"] = json.dumps(design.manifest(), indent=2, sort_keys=True) + "\n"
    files["tb/vectors.json"] = json.dumps(vectors, separators=(",", ":")) + "\n"
    files[f"tb/test_{design.top}.py"] = env.get_template("rtl/cocotb_test.py.j2").render(design=design)
    files["tb/runner.py"] = env.get_template("rtl/runner.py.j2").render(design=design)
    files["README.md"] = env.get_template("rtl/README.md.j2").render(design=design)
    return files


def generate(graph: Graph, directory: "os.PathLike | str", pipeline: int = 0, inputs: Optional[np.ndarray] = None,
             top: Optional[str] = None, force: bool = False) -> pathlib.Path:
    """Write the design of ``graph`` into ``directory`` (see :func:`render`); returns the folder."""
    return write_project(render(graph, pipeline, inputs, top), directory, force=force, outputs=SIMULATION_OUTPUTS)
