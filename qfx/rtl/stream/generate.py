"""A whole graph as a streaming Verilog design: stages, the top with its AXI-Stream ports, manifest, tests, README.

``render(graph, ...)`` returns ``{relative path: text}``; ``generate``
writes it through :func:`qfx.render.write_project`.  The files are those of
the unrolled design (:mod:`qfx.rtl.generate`) so that
:mod:`qfx.rtl.design`, :mod:`qfx.rtl.simulate` and :mod:`qfx.rtl.synth`
read both: ``rtl/<top>.v``, one ``rtl/<top>_<node>.v`` per stage (the stage
module with the modules only it uses), ``rtl/qfx_add.v``, ``manifest.json``,
``tb/vectors.json``, ``tb/test_<top>.py``, ``tb/runner.py``, ``README.md``.

Between stages, a tensor read by several stages is forked: each reader
sees ``valid`` only while every other reader is ready, and the producer
sees ``ready`` when all are.  Readiness never depends on ``valid`` in any
stage, so forks close no combinational loop.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
from typing import Optional, Sequence

import numpy as np

from ...ir import Graph, IRError, run_codes
from ...ir.graph import c_identifier
from ...render import environment, write_project
from ...render.escape import VERILOG_KEYWORDS, verilog_ident
from ..generate import SIMULATION_OUTPUTS, random_codes
from ..layers import RTLError
from .plan import DSP_BUDGET, LUT_BUDGET, Layout, Parallel, Schedule, plan_schedule
from .stages import COUNTER, StageModule, build_stage

__all__ = ["StreamDesign", "Port", "plan_stream_design", "render_stream", "generate_stream", "STREAM_VECTORS"]

#: Random test vectors of a streaming design when none are given: every vector takes a whole frame of cycles.
STREAM_VECTORS = 24


@dataclasses.dataclass(frozen=True)
class Link:
    """One reader of a stream: the valid it sees and the ready it gives."""

    valid: str
    ready: str


@dataclasses.dataclass(frozen=True)
class Stream:
    """A tensor between stages: its wires and its readers."""

    name: str
    width: int
    links: list[Link]


@dataclasses.dataclass(frozen=True)
class Instance:
    module: str
    name: str
    inputs: list[tuple[str, str, str]]  #: per port: (valid, ready, data)
    output: str  #: the stream it drives


@dataclasses.dataclass(frozen=True)
class Port:
    """One AXI-Stream port of the top: its signals' prefix, its tensor, the stream it drives or reads."""

    prefix: str  #: ``s_axis``/``m_axis`` for a graph's only input/output, else ``s<k>_axis``/``m<k>_axis``
    tensor: str
    stream: str
    type: str
    layout: Layout
    bits: int
    link: Optional[Link] = None  #: an output's reader of its stream

    @property
    def width(self) -> int:
        return self.layout.channels * self.bits

    @property
    def pixel_bits(self) -> int:
        return max(self.layout.pixels.bit_length(), 1)

    def manifest(self) -> dict:
        return {"port": self.prefix, "tensor": self.tensor, "type": self.type, "bits": self.bits,
                "signed": not self.type.startswith("ap_ufixed"), "pixels": self.layout.pixels,
                "channels": self.layout.channels}


@dataclasses.dataclass
class StreamDesign:
    """The stages, their instances and streams, the top's ports, and the figures the README states."""

    top: str
    graph: str
    schedule: Schedule
    stages: list[StageModule]
    streams: list[Stream]
    instances: list[Instance]
    inputs: list[Port]
    outputs: list[Port]
    counter_bits: int = COUNTER

    def manifest(self) -> dict:
        """What the test bench and the report need, as JSON data."""
        return {
            "generator": "qfx rtl", "arch": "stream", "top": self.top, "graph": self.graph,
            "cycles_per_sample": self.schedule.cycles, "latency": self.schedule.latency,
            "inputs": [port.manifest() for port in self.inputs],
            "outputs": [port.manifest() for port in self.outputs],
            "layers": [{"module": s.name, "node": s.node, "op": s.op, "kind": s.kind, "parallel": s.plan.parallel,
                        "fold": s.plan.fold, "groups": s.plan.groups, "cycles": s.plan.cycles, "latency": s.plan.latency,
                        "multipliers": s.multipliers, "file": f"rtl/{s.name}.v"} for s in self.stages],
            "sources": ["rtl/qfx_add.v"] + [f"rtl/{s.name}.v" for s in self.stages] + [f"rtl/{self.top}.v"],
        }


def _top_name(graph: Graph, top: Optional[str], names: dict[str, str]) -> str:
    if top is not None:
        try:
            verilog_ident(top)
        except ValueError as error:
            raise RTLError(f"--top {top!r:.80}: the top module's name must be a Verilog identifier") from error
        if top == "qfx_add":
            raise RTLError("--top qfx_add: the name is taken by qfx's adder module; choose another")
        return top
    return c_identifier(graph.name or "qfx_top", set(names.values()) | VERILOG_KEYWORDS)


def _ancestors(graph: Graph) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {v.name: set() for v in graph.inputs}
    for node in graph.nodes:
        found[node.name] = {node.name}.union(*(found[i] for i in node.inputs))
    return found


def _fifo_depths(graph: Graph, operands, ancestors: dict[str, set[str]], capacity: dict[str, int],
                 schedule: Schedule) -> list[int]:
    """Each operand's FIFO depth (a power of two): what the stages only other operands pass through can hold.

    While a pixel of operand ``k`` waits for another operand, the stages
    on that operand's branch alone hold pixels the fork gave both; along a
    path from the fork, at most their capacities, each in pixels of its
    own input.  Scaled to operand ``k``'s pixels per sample, the largest
    sum along a path bounds how far operand ``k`` runs ahead (parallel
    paths hold copies of the same pixels; where they join again, the
    inner join's FIFOs are on the path), so the FIFO never fills while
    another branch still needs the fork's input to catch up.
    """
    def held(k: str, other: str) -> float:
        own = ancestors[other] - ancestors[k]
        longest: dict[str, float] = {}
        for node in graph.nodes:
            if node.name in own:
                scale = schedule.layouts[k].pixels / schedule.stage(node.name).input.pixels
                longest[node.name] = capacity[node.name] * scale + max(
                    [longest[i] for i in node.inputs if i in longest], default=0)
        return longest.get(other, 0)
    return [1 << max(math.ceil(max([held(k, j) for j in operands if j != k], default=0)) + 2, 2).bit_length()
            for k in operands]


def plan_stream_design(graph: Graph, parallel: Optional[Parallel] = None, top: Optional[str] = None,
                       dsp_budget: int = DSP_BUDGET, lut_budget: int = LUT_BUDGET) -> StreamDesign:
    """Schedule and build every stage of ``graph``; :class:`RTLError` names the node of anything unsupported."""
    graph.check()
    schedule = plan_schedule(graph, parallel, dsp_budget, lut_budget)
    names = graph.c_names()
    top = _top_name(graph, top, names)
    values = graph.values()
    ancestors = _ancestors(graph)
    stages, capacity = [], {}
    stream_of = {x.name: f"s_{names[x.name]}" for x in graph.inputs}
    readers: dict[str, list[Link]] = {stream_of[x.name]: [] for x in graph.inputs}
    widths = {stream_of[x.name]: schedule.layouts[x.name].channels * x.type.width for x in graph.inputs}
    instances = []
    for node in graph.nodes:
        plan = schedule.stage(node.name)
        if plan.kind == "flatten":
            stream_of[node.name] = stream_of[node.inputs[0]]
            capacity[node.name] = 0
            continue
        stage = build_stage(node, [values[i] for i in node.inputs], plan, f"{top}_{names[node.name]}")
        if plan.kind == "join":
            depths = _fifo_depths(graph, node.inputs, ancestors, capacity, schedule)
            stage.params = dict(depths=depths, depth_bits=[d.bit_length() - 1 for d in depths])
            stage.capacity = max(depths) + 1
        if plan.kind in ("dense", "gap"):
            stage.params["pixel_bits"] = max(plan.input.pixels.bit_length(), 1)
        capacity[node.name] = stage.capacity
        stages.append(stage)
        ports = []
        for k, i in enumerate(node.inputs):
            stream = stream_of[i]
            link = Link(f"{stream}_to_{names[node.name]}_{k}", f"{stage.name}_in{k}_ready")
            readers[stream].append(link)
            ports.append((link.valid, link.ready, stream))
        out = f"s_{names[node.name]}"
        stream_of[node.name] = out
        readers[out] = []
        widths[out] = stage.output_width
        instances.append(Instance(stage.name, f"u_{names[node.name]}", ports, out))
    def prefix(side: str, k: int, count: int) -> str:
        return f"{side}_axis" if count == 1 else f"{side}{k}_axis"
    inputs = [Port(prefix("s", k, len(graph.inputs)), x.name, stream_of[x.name], str(x.type),
                   schedule.layouts[x.name], x.type.width) for k, x in enumerate(graph.inputs)]
    outputs = []
    for k, y in enumerate(graph.output_values):
        name = prefix("m", k, len(graph.outputs))
        link = Link(f"{stream_of[y.name]}_to_{name}", f"{name}_tready")
        readers[stream_of[y.name]].append(link)
        outputs.append(Port(name, y.name, stream_of[y.name], str(y.type), schedule.layouts[y.name], y.type.width,
                            link))
    streams = [Stream(name, widths[name], links) for name, links in readers.items()]
    return StreamDesign(top=top, graph=graph.name, schedule=schedule, stages=stages, streams=streams,
                        instances=instances, inputs=inputs, outputs=outputs)


_TEMPLATES = {"map": "map", "join": "add", "resample": "resample", "window": "window", "dense": "dense", "gap": "gap"}


def render_stream(graph: Graph, parallel: Optional[Parallel] = None,
                  inputs: "Optional[np.ndarray | Sequence[np.ndarray]]" = None, top: Optional[str] = None,
                  vectors: int = STREAM_VECTORS, seed: int = 0, dsp_budget: int = DSP_BUDGET,
                  lut_budget: int = LUT_BUDGET) -> dict[str, str]:
    """Every file of the streaming design of ``graph``, ``{relative path: text}``.

    ``inputs``: the test vectors' input codes, one batch-first array per
    graph input (a single array for a graph with one input); by default
    ``vectors`` random ones.
    """
    design = plan_stream_design(graph, parallel, top, dsp_budget, lut_budget)
    arrays = random_codes(graph, vectors, seed) if inputs is None else \
        [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
    arrays = [np.asarray(a) for a in arrays]
    if len(arrays) != len(graph.inputs) or len({len(a) for a in arrays}) != 1:
        raise RTLError(f"graph '{graph.name}' takes {len(graph.inputs)} input(s); the test vectors give "
                       f"{len(arrays)} array(s) of {sorted({len(a) for a in arrays})} vectors (one array per input, "
                       "all with the same number of vectors)")
    try:
        codes = run_codes(graph, arrays)
    except (IRError, ValueError) as error:
        raise RTLError(f"graph '{graph.name}': cannot compute the test vectors' outputs: {error}") from error
    env = environment()
    files = {}
    layer_template = env.get_template("rtl/layer.v.j2")
    lanes_template = env.get_template("rtl/stream/lanes.v.j2")
    for stage in design.stages:
        parts = []
        if stage.layer is not None:
            parts.append(layer_template.render(layer=stage.layer))
        if stage.lanes is not None:
            parts.append(lanes_template.render(lanes=stage.lanes))
        parts.append(env.get_template(f"rtl/stream/{_TEMPLATES[stage.kind]}.v.j2").render(stage=stage,
                                                                                          counter=COUNTER))
        files[f"rtl/{stage.name}.v"] = "\n".join(parts)
    files["rtl/qfx_add.v"] = env.get_template("rtl/qfx_add.v.j2").render()
    files[f"rtl/{design.top}.v"] = env.get_template("rtl/stream/top.v.j2").render(design=design)
    files["manifest.json"] = json.dumps(design.manifest(), indent=2, sort_keys=True) + "\n"
    def rows(a: np.ndarray) -> list:
        return a.reshape(len(a), -1).tolist()
    vectors_data = {"inputs": {port.prefix: rows(a) for port, a in zip(design.inputs, arrays)},
                    "outputs": {port.prefix: rows(codes[port.tensor]) for port in design.outputs}}
    files["tb/vectors.json"] = json.dumps(vectors_data, separators=(",", ":")) + "\n"
    files[f"tb/test_{design.top}.py"] = env.get_template("rtl/stream/cocotb_test.py.j2").render(design=design)
    files["tb/runner.py"] = env.get_template("rtl/runner.py.j2").render(design=design)
    files["README.md"] = env.get_template("rtl/stream/README.md.j2").render(design=design)
    return files


def generate_stream(graph: Graph, directory: "os.PathLike | str", parallel: Optional[Parallel] = None,
                    inputs: "Optional[np.ndarray | Sequence[np.ndarray]]" = None, top: Optional[str] = None,
                    force: bool = False, vectors: int = STREAM_VECTORS, dsp_budget: int = DSP_BUDGET,
                    lut_budget: int = LUT_BUDGET) -> pathlib.Path:
    """Write the streaming design of ``graph`` into ``directory`` (see :func:`render_stream`); returns the folder."""
    return write_project(render_stream(graph, parallel, inputs, top, vectors, dsp_budget=dsp_budget,
                                       lut_budget=lut_budget), directory,
                         force=force, outputs=SIMULATION_OUTPUTS)
