"""A whole graph as Verilog: the layer modules, the top with its pipeline, the manifest, tests and README.

``render(graph, ...)`` returns every generated file as ``{relative path:
text}``; ``generate(graph, directory, ...)`` writes them atomically.  The
files:

=========================  ====================================================================
``rtl/<top>.v``            the top: input registers, layers, pipeline registers, output registers
``rtl/<top>_<layer>.v``    one combinational module per layer
``rtl/qfx_add.v``          the shift-adds every constant product is built from: ``qfx_add`` (two
                           operands) and, unless ``ternary=False``, ``qfx_add3`` (three, of UltraScale+
                           LUT6_2 and CARRY8 cells; arithmetic in simulation, or the cells' models
                           where ``QFX_SIMULATE_PRIMITIVES`` is defined)
``manifest.json``          top, latency, port formats, layers and sources (read by the tests)
``tb/vectors.json``        input codes and the IR interpreter's output codes for them, by port
``tb/test_<top>.py``       the cocotb test: drives every vector back to back, checks every bit
``tb/runner.py``           pytest entry: builds and runs it on Icarus and on Verilator
``README.md``              ports, latency, how to simulate and synthesise
=========================  ====================================================================

The top has one data port per graph input (``in_<tensor>``) and one per graph
output (``out_<tensor>``), named from the tensors' checked identifiers
(:meth:`~qfx.ir.Graph.c_names`), with one ``in_valid`` and one ``out_valid``:
every tensor goes through the same register stages, so all outputs of a vector
appear together, after the same latency.

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
from ..ir.graph import Identifiers, c_identifier
from ..render import environment, write_project
from ..render.escape import VERILOG_KEYWORDS, verilog_ident
from .layers import LayerModule, RTLError, check_supported, lower_node

__all__ = ["Design", "Port", "plan_design", "render", "generate", "random_codes"]

DEFAULT_VECTORS = 256
#: Modules of ``rtl/qfx_add.v`` (the two primitives' models for simulation only): no top may take their names.
ADDER_MODULES = frozenset({"qfx_add", "qfx_add3", "LUT6_2", "CARRY8"})
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
class Port:
    """A data port of the top: one graph input or output, its codes packed with element 0 in the low bits.

    ``name`` is a Verilog identifier derived from the tensor's checked C
    name; ``tensor`` is the graph's own name for it (for comments and the
    manifest, through their escaping filters).  ``source`` is the register an
    output port is driven by ("" for an input).
    """

    name: str
    tensor: str
    type: str
    count: int
    bits: int
    source: str = ""

    @property
    def width(self) -> int:
        return self.count * self.bits

    @property
    def signed(self) -> bool:
        return not self.type.startswith("ap_ufixed")

    def manifest(self) -> dict:
        return {"port": self.name, "tensor": self.tensor, "type": self.type, "count": self.count, "bits": self.bits,
                "signed": self.signed}


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
    latency: int  #: clock edges from in_valid and the input ports to out_valid and the output ports
    layers: list[LayerModule]
    instances: list[Instance]
    buses: list[Bus]
    stages: list[Stage]
    out_valid: str
    inputs: list[Port]
    outputs: list[Port]

    def manifest(self) -> dict:
        """What a test bench needs to know, as JSON data."""
        return {
            "generator": "qfx rtl", "top": self.top, "graph": self.graph, "pipeline": self.pipeline, "latency": self.latency,
            "inputs": [port.manifest() for port in self.inputs],
            "outputs": [port.manifest() for port in self.outputs],
            "layers": [{"module": layer.name, "node": layer.node, "op": layer.op, "adders": len(layer.adders),
                        "file": f"rtl/{layer.name}.v"} for layer in self.layers],
            "sources": ["rtl/qfx_add.v"] + [f"rtl/{layer.name}.v" for layer in self.layers] + [f"rtl/{self.top}.v"],
        }


#: A fully unrolled design carries every bit of every tensor on its own wire; beyond this many it is refused
#: before anything is generated (a ReLU on a 64x224x224 image would write about a gigabyte of Verilog).
MAX_DESIGN_BITS = 1 << 22


#: Names of the top's own signals; data ports are named around them.
_FIXED_SIGNALS = ("clk", "rst", "in_valid", "out_valid", "in_valid_reg", "out_valid_reg")


def _check_graph(graph: Graph) -> None:
    inputs = {x.name for x in graph.inputs}
    if not graph.nodes or all(name in inputs for name in graph.outputs):
        raise RTLError(f"graph '{graph.name}': its outputs are its inputs; there is no logic to generate")
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


def plan_design(graph: Graph, pipeline: int = 0, top: Optional[str] = None, ternary: bool = True) -> Design:
    """Lower every node of ``graph`` and plan the top module with ``pipeline`` register stages between layers.

    ``ternary`` sums constant products with ``qfx_add3`` ternary adders
    (UltraScale+ LUT6_2 and CARRY8 instances: three terms for the LUTs of
    one two-term adder); ``False`` keeps to ``qfx_add``, plain Verilog
    for any fabric.

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
        if top in ADDER_MODULES:
            raise RTLError(f"--top {top}: the name is taken by qfx's adder modules; choose another")
    top = top or c_identifier(graph.name or "qfx_top", set(names.values()) | VERILOG_KEYWORDS | ADDER_MODULES)
    values = graph.values()
    layers = [lower_node(node, [values[i] for i in node.inputs], f"{top}_{names[node.name]}", ternary)
              for node in graph.nodes]
    cuts = set(_boundaries(len(layers), pipeline, graph.name))
    last_use = {}
    for k, node in enumerate(graph.nodes):
        last_use.update((name, k) for name in node.inputs)
    width_of = {v.name: v.size * v.type.width for v in values.values()}
    outputs = list(dict.fromkeys(graph.outputs))  # each tensor once, though the graph may list it twice
    taken = Identifiers(_FIXED_SIGNALS)  # the other signals are t_*, u_*, s<k>_* and valid_s<k>: never in_* or out_*
    in_ports = [Port(c_identifier(f"in_{names[x.name]}", taken), x.name, str(x.type), x.size, x.type.width)
                for x in graph.inputs]
    current = {x.name: f"s0_{names[x.name]}" for x in graph.inputs}  # the signal carrying each tensor at this point
    stages = [Stage("input registers", "in_valid_reg", "in_valid",
                    [Register(current[x.name], width_of[x.name], port.name) for x, port in zip(graph.inputs, in_ports)])]
    buses, instances = [], []
    for k, (node, layer) in enumerate(zip(graph.nodes, layers)):
        bus = f"t_{names[node.name]}"
        buses.append(Bus(bus, width_of[node.name]))
        instances.append(Instance(layer.name, f"u_{names[node.name]}", [current[i] for i in node.inputs], bus))
        current[node.name] = bus
        if k in cuts:  # every tensor still needed, an input of a later node or an output, is registered
            live = [name for name in current if last_use.get(name, -1) > k or name in outputs]
            registers = [Register(f"s{len(stages)}_{names[name]}", width_of[name], current[name]) for name in live]
            current.update((name, r.name) for name, r in zip(live, registers))
            stages.append(Stage(f"pipeline stage {len(stages)}: after {node.describe()}", f"valid_s{len(stages)}",
                                stages[-1].valid, registers))
    last = len(stages)
    stages.append(Stage("output registers", "out_valid_reg", stages[-1].valid,
                        [Register(f"s{last}_{names[name]}", width_of[name], current[name]) for name in outputs]))
    out_ports = [Port(c_identifier(f"out_{names[y.name]}", taken), y.name, str(y.type), y.size, y.type.width,
                      f"s{last}_{names[y.name]}") for y in graph.output_values]
    return Design(top=top, graph=graph.name, pipeline=pipeline, latency=len(stages), layers=layers,
                  instances=instances, buses=buses, stages=stages, out_valid="out_valid_reg", inputs=in_ports,
                  outputs=out_ports)


def random_codes(graph: Graph, count: int = DEFAULT_VECTORS, seed: int = 0) -> list[np.ndarray]:
    """``count`` vectors of uniformly random codes over each input's whole format: one batch-first array per input."""
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise RTLError(f"the number of test vectors (--vectors) must be at least 1, got {count!r}")
    for x in graph.inputs:
        if x.type.width > 63:
            raise RTLError(f"graph '{graph.name}': input '{x.name}' is {x.type.width} bits wide; random test vectors "
                           "are drawn for inputs of at most 63 bits: pass --inputs")
    rng = np.random.default_rng(seed)
    return [rng.integers(x.type.code_min, x.type.code_max, size=(count,) + tuple(x.shape), endpoint=True)
            for x in graph.inputs]


def _rows(codes: np.ndarray) -> list[list[int]]:
    """A batch-first array as one flat list of codes per vector (element 0 first, as the port packs them)."""
    return codes.reshape(len(codes), -1).tolist()


def render(graph: Graph, pipeline: int = 0, inputs: "Optional[np.ndarray | list[np.ndarray]]" = None,
           top: Optional[str] = None, ternary: bool = True) -> dict[str, str]:
    """Every file of the design of ``graph``, ``{relative path: text}``.

    ``inputs`` are input codes for the test vectors: one batch-first array
    per graph input (a single array for a graph with one input), e.g.
    ``qfx.ir.input_codes(x, graph.inputs[0].type)`` of real data; by
    default :data:`DEFAULT_VECTORS` random vectors.  ``ternary``: see
    :func:`plan_design`.
    """
    design = plan_design(graph, pipeline, top, ternary)
    arrays = random_codes(graph) if inputs is None else [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
    arrays = [np.asarray(a) for a in arrays]
    if len(arrays) != len(graph.inputs) or len({len(a) for a in arrays}) > 1:
        raise RTLError(f"graph '{graph.name}' takes {len(graph.inputs)} input(s); the test vectors give "
                       f"{len(arrays)} array(s) of {sorted({len(a) for a in arrays})} vectors (one array per input, "
                       "all with the same number of vectors)")
    try:
        codes = run_codes(graph, arrays)
    except (IRError, ValueError) as error:
        raise RTLError(f"graph '{graph.name}': cannot compute the test vectors' outputs: {error}") from error
    vectors = {"inputs": {port.name: _rows(a) for port, a in zip(design.inputs, arrays)},
               "outputs": {port.name: _rows(codes[port.tensor]) for port in design.outputs}}
    env = environment()
    files = {f"rtl/{layer.name}.v": env.get_template("rtl/layer.v.j2").render(layer=layer) for layer in design.layers}
    files["rtl/qfx_add.v"] = env.get_template("rtl/qfx_add.v.j2").render(ternary=ternary)
    files[f"rtl/{design.top}.v"] = env.get_template("rtl/top.v.j2").render(design=design)
    files["manifest.json"] = json.dumps(design.manifest(), indent=2, sort_keys=True) + "\n"
    files["tb/vectors.json"] = json.dumps(vectors, separators=(",", ":")) + "\n"
    files[f"tb/test_{design.top}.py"] = env.get_template("rtl/cocotb_test.py.j2").render(design=design)
    files["tb/runner.py"] = env.get_template("rtl/runner.py.j2").render(design=design)
    files["README.md"] = env.get_template("rtl/README.md.j2").render(design=design, ternary=ternary)
    return files


def generate(graph: Graph, directory: "os.PathLike | str", pipeline: int = 0, inputs: Optional[np.ndarray] = None,
             top: Optional[str] = None, force: bool = False, ternary: bool = True) -> pathlib.Path:
    """Write the design of ``graph`` into ``directory`` (see :func:`render`); returns the folder."""
    return write_project(render(graph, pipeline, inputs, top, ternary), directory, force=force,
                         outputs=SIMULATION_OUTPUTS)
