"""A Vitis HLS project as a plan: the graph, the board and the interface rendered into ``{path: text}``.

:func:`plan_project` renders every file in memory and returns them; nothing
touches the disk (see :mod:`qfx.render.writer`).  The same graph, board,
options and golden inputs always give byte-identical files.  Layout::

    firmware/  top.cpp, top.h, types.h, parameters.h, weights.h, qfx_layers.h, qfx_structure.h, qfx_binary.h,
               qfx_trace.h
    tb/        tb.cpp and data/<tensor>.txt (input codes, every tensor's expected codes)
    build.tcl  (static: csim, csynth, cosim, export) sourcing project.tcl (part, clock, files)
    vivado/    block_design.tcl for the board
    driver/    overlay.py (PYNQ)
    README.md, qfx.json (what was generated, for `qfx csim` and `qfx report`)
"""

from __future__ import annotations

import dataclasses
import json
from typing import Optional

import numpy as np

from ..boards import Board
from ..ir import Graph, c_identifier, run_codes
from ..ir.graph import Identifiers
from ..render import environment, template_dir
from .layers import HLSError, Layer, code_type, frame, plan_layers

__all__ = ["IO_MODES", "plan_project", "golden_codes", "safe_names", "Stream"]

IO_MODES = ("parallel", "stream")
#: Namespaces and names the generated C++ uses for itself; no tensor or top function may take them.
_RESERVED = {"tensor", "config", "weights", "stage", "qfx", "hls", "std"}
_STATIC_FILES = ("firmware/qfx_layers.h", "firmware/qfx_structure.h", "firmware/qfx_binary.h", "firmware/qfx_trace.h",
                 "firmware/qfx_axis.h", "build.tcl")


@dataclasses.dataclass(frozen=True)
class Stream:
    """A stream in the dataflow top: its C name, element type and depth (the tensor's size)."""

    name: str
    type: str
    depth: int


@dataclasses.dataclass(frozen=True)
class Fork:
    """``qfx::fork2``: one stream copied into two."""

    size: int
    type: str
    source: str
    first: str
    second: str
    kind: str = "fork"


@dataclasses.dataclass(frozen=True)
class Port:
    """``qfx::from_axis`` / ``qfx::to_axis``: a top-level AXI-Stream port and the dataflow stream behind it."""

    size: int
    type: str
    beat: str
    axis: str
    stream: str
    kind: str  #: "from_axis" or "to_axis"


@dataclasses.dataclass(frozen=True)
class Stage:
    """A layer in the dataflow top: its stage function and the streams it reads and writes."""

    layer: Layer
    reads: list[str]
    writes: str
    kind: str = "stage"


def golden_codes(graph: Graph, inputs: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Every tensor's codes for input codes ``inputs`` (one array per graph input), from :func:`qfx.ir.run_codes`."""
    return run_codes(graph, inputs)


def _codes_text(codes: np.ndarray) -> str:
    """One line per sample, codes in channels-first order separated by spaces."""
    rows = np.asarray(codes).reshape(len(codes), -1).tolist()
    return "".join(" ".join(map(str, row)) + "\n" for row in rows)


def axis_bits(width: int) -> int:
    """TDATA bits of the beat carrying a ``width``-bit element: 8, 16, 32 or 64 (a DMA-friendly word)."""
    return next(bits for bits in (8, 16, 32, 64) if width <= bits)


def _beat(value_type) -> str:
    return f"qfx::axis<{axis_bits(value_type.width)}>::beat"


def _stream_topology(graph: Graph, names: dict[str, str], layers: list[Layer]
                     ) -> tuple[list[Stream], list[object], dict[tuple[str, int], str]]:
    """Streams, steps in a valid dataflow order (ports, forks, layers), and the stream each (node, input) reads."""
    values = graph.values()
    taken = Identifiers(names.values()) | _RESERVED
    consumers: dict[str, list[tuple[str, int]]] = {name: [] for name in values}
    for node in graph.nodes:
        for position, name in enumerate(node.inputs):
            consumers[name].append((node.name, position))
    for name in graph.outputs:
        consumers[name].append(("", 0))  # the top's output argument
    streams: list[Stream] = []
    steps: list[object] = []
    reads: dict[tuple[str, int], str] = {}
    source: dict[str, str] = {}

    def new_stream(value_name: str, hint: str) -> str:
        value = values[value_name]
        stream = c_identifier(f"{names[value_name]}_{hint}", taken)
        streams.append(Stream(stream, f"tensor::{names[value_name]}", value.size))
        return stream

    def route(value_name: str) -> None:
        """Give each consumer of ``value_name`` its stream, forking when there are several."""
        users = consumers[value_name]
        if len(users) == 1:
            reads[users[0]] = source[value_name]
            return
        targets = [output_stream[value_name] if user == ("", 0) else new_stream(value_name, "to")
                   for user in users]
        for user, target in zip(users, targets):
            reads[user] = target
        current, size = source[value_name], values[value_name].size
        element = f"tensor::{names[value_name]}"
        for i in range(len(targets) - 2):
            spare = new_stream(value_name, "fork")
            steps.append(Fork(size, element, current, targets[i], spare))
            current = spare
        steps.append(Fork(size, element, current, targets[-2], targets[-1]))

    output_stream: dict[str, str] = {}
    for value in graph.inputs:
        if value.name in graph.outputs:
            raise HLSError(f"input '{value.name}' is also an output of graph '{graph.name}'; the HLS back end "
                           "needs every output computed by a node")
        source[value.name] = new_stream(value.name, "in")
        steps.append(Port(value.size, f"tensor::{names[value.name]}", _beat(value.type), names[value.name],
                          source[value.name], "from_axis"))
        route(value.name)
    ports = []
    for name in graph.outputs:
        output_stream[name] = new_stream(name, "out")
        ports.append(Port(values[name].size, f"tensor::{names[name]}", _beat(values[name].type), names[name],
                          output_stream[name], "to_axis"))
    for node, layer in zip(graph.nodes, layers):
        users = consumers[node.name]
        source[node.name] = output_stream[node.name] if users == [("", 0)] else new_stream(node.name, "s")
        steps.append(Stage(layer, [reads[(node.name, i)] for i in range(len(node.inputs))], source[node.name]))
        route(node.name)
    # Each fork right after its producer, the output ports last: producers always come before consumers.
    return streams, steps + ports, reads


def safe_names(graph: Graph) -> dict[str, str]:
    """:meth:`Graph.c_names`, with any name the generated C++ uses for itself (``tensor``, ``qfx``...) renamed.

    Inside ``namespace config``, a struct called ``qfx`` would hide the
    library's namespace, so such tensors become ``qfx_tensor`` (unique).
    """
    names = graph.c_names()
    taken = Identifiers(names.values()) | _RESERVED
    return {name: c_identifier(f"{c}_tensor", taken) if c in _RESERVED else c for name, c in names.items()}


def _tensor_info(graph: Graph, names: dict[str, str]) -> list[dict]:
    out = []
    for value in list(graph.inputs) + [n.output for n in graph.nodes]:
        c, h, w = frame(value.shape)
        out.append({"name": names[value.name], "type": str(value.type), "code_type": code_type(value.type),
                    "axis_bits": axis_bits(value.type.width),
                    "size": value.size, "channels": c, "height": h, "width": w, "shape": list(value.shape)})
    return out


def _layer_cost(graph: Graph, layer: Layer) -> dict:
    """A layer's multiplies and bit operations (multiplies x input width x constant width), for reports."""
    node, x = layer.node, graph.value(layer.node.inputs[0])
    role = {"dense": "weight", "conv1d": "weight", "conv2d": "weight", "scale_shift": "scale"}.get(node.op)
    multiplies, bitops = 0, 0
    if role is not None:
        constant = node.constants[role]
        per_output = int(np.prod(constant.codes.shape[1:])) if node.op != "scale_shift" else 1
        multiplies = node.output.size * per_output
        bitops = multiplies * x.type.width * max(t.width for t in constant.types)
    return {"name": layer.name, "op": node.op, "type": str(node.output.type), "multiplies": multiplies,
            "bitops": bitops, "khot_digits": layer.khot_digits}


def plan_project(graph: Graph, board: Board, io: str = "parallel", inputs: Optional[list[np.ndarray]] = None,
                 reuse: Optional[dict[str, int]] = None) -> dict[str, str]:
    """Every file of the HLS project for ``graph`` on ``board``, by relative path.

    ``io`` is ``"parallel"`` (partitioned arrays, AXI-Lite + m_axi) or
    ``"stream"`` (``hls::stream``, AXI-Stream, dataflow).  ``inputs`` are
    input codes (one batch-first array per graph input) for the testbench's
    golden vectors; ``reuse`` maps node names (or ``"*"``) to the initiation
    interval of that layer's pipelined loop (1: fully parallel).
    """
    if io not in IO_MODES:
        raise HLSError(f"io must be one of {', '.join(IO_MODES)}, got {io!r}")
    graph.check()
    if inputs is None or len(inputs) != len(graph.inputs):
        raise HLSError(f"graph '{graph.name}' takes {len(graph.inputs)} input(s); pass one array of codes for each")
    names = safe_names(graph)
    top = c_identifier(graph.name or "qfx_top", set(names.values()) | _RESERVED)
    layers = plan_layers(graph, names, reuse)
    golden = golden_codes(graph, inputs)
    streams, steps, _ = _stream_topology(graph, names, layers) if io == "stream" else ([], [], {})
    tensors = _tensor_info(graph, names)
    by_name = {t["name"]: t for t in tensors}
    var = {name: name for name in by_name}  # the array holding each tensor in the parallel top
    taken = Identifiers(names.values()) | _RESERVED | {top}
    for name in [names[v.name] for v in graph.inputs] + [names[o] for o in graph.outputs]:
        var[name] = c_identifier(f"{name}_local", taken)
    context = {
        "top": top, "io": io, "board": board, "layers": layers, "tensors": tensors,
        "inputs": [by_name[names[v.name]] for v in graph.inputs],
        "outputs": [by_name[names[o]] for o in graph.outputs],
        "traced": tensors[len(graph.inputs):], "streams": streams, "steps": steps, "var": var,
        "by_name": by_name, "formats": {names[v.name]: v.type for v in graph.values().values()}, "traced_ids": {layer.name: layer.trace_id for layer in layers},
        "samples": len(inputs[0]), "firmware_files": ["firmware/top.cpp"], "tb_files": ["tb/tb.cpp"],
    }
    env = environment()
    files = {path: (template_dir() / path).read_text() for path in _STATIC_FILES}
    rendered = {
        "firmware/types.h": "firmware/types.h.j2", "firmware/parameters.h": "firmware/parameters.h.j2",
        "firmware/weights.h": "firmware/weights.h.j2", "firmware/top.h": "firmware/top.h.j2",
        "firmware/top.cpp": "firmware/top.cpp.j2", "tb/tb.cpp": "tb/tb.cpp.j2", "project.tcl": "project.tcl.j2",
        "vivado/block_design.tcl": "vivado/block_design.tcl.j2", "driver/overlay.py": "driver/overlay.py.j2",
        "README.md": "README.md.j2",
    }
    for path, template in rendered.items():
        files[path] = env.get_template(template).render(context)
    for value in list(graph.inputs) + [n.output for n in graph.nodes]:
        files[f"tb/data/{names[value.name]}.txt"] = _codes_text(golden[value.name])
    manifest = {"format": "qfx-hls", "version": 1, "top": top, "io": io, "board": board.name,
                "samples": len(inputs[0]), "tensors": tensors, "layers": [_layer_cost(graph, layer) for layer in layers],
                "inputs": [names[v.name] for v in graph.inputs], "outputs": [names[o] for o in graph.outputs]}
    files["qfx.json"] = json.dumps(manifest, indent=1) + "\n"
    return dict(sorted(files.items()))
