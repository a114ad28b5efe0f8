"""The schedule of a streaming design: per node its stream shape, parallelism, initiation interval and latency.

A tensor travels between stages as a stream of *pixels*, one per
handshake, each pixel carrying every channel of one position side by side.
A tensor ``(C, H, W)`` is ``H*W`` pixels of ``C`` codes in raster order,
``(C, L)`` is ``L`` pixels of ``C`` codes, ``(N,)`` one pixel of ``N``
codes.  ``flatten`` moves no data: its output is its input's stream, so a
stream is described by its *layout* ``(pixels, channels)``, element ``c`` of
pixel ``j`` being element ``c * pixels + j`` of the tensor in C order.

A convolution or dense layer computes ``P`` of its ``C_out`` output
channels per step, ``F = C_out / P`` channel groups (its *fold*); a
convolution also splits its window's ``KH*KW`` taps into ``G`` groups of
consecutive taps in raster order (its *tap groups*: ``KH`` groups are its
rows, ``KH*KW`` its single taps), one group a step, accumulating, so it
takes ``F * G`` steps per output pixel (its initiation interval) with
``P`` lanes of ``KH*KW*C_in / G`` products each.  Its cycles per sample are
``max(input pixels, output pixels * F * G)`` for a convolution and ``input
pixels * F`` for a dense layer (which accumulates over its input pixels);
every other stage takes or gives one pixel per cycle, ``max(input pixels,
output pixels)`` (zero insertion and upsampling give more than they take).
The pipeline's cycles per sample are the largest stage's.  The default
folds each layer as far as it can without becoming slower than the
slowest stage unfolded, so no layer is the bottleneck, preferring tap
groups to channel groups at equal steps (fewer line-buffer read ports, a
narrower output register); a user's ``parallel={node: P}`` or
``{node: (P, G)}`` overrides it (``P`` must divide ``C_out``, ``G`` the
window's taps; ``G`` is 1 when not given).  Layers whose weights need
multipliers (more than :data:`~qfx.rtl.stream.lanes.SHIFT_ADD_DIGITS` CSD
digits) use ``P`` times their taps per step in DSP48E2; while the default
folds ask for more than ``dsp_budget`` (the Ultra96-V2's 360), the layer
using the most is folded further, trading cycles for multipliers.
Shift-add (K-hot) layers are fitted the same way to ``lut_budget``, from
an estimate of their LUTs (:func:`shift_add_luts`): a digit whose shift
comes from a ROM costs a shifter and an adder, several times a digit of a
constant weight.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Mapping, Optional

import numpy as np

from ...ir import Graph, Node, Value
from ..adder_graph import csd_digits
from ..layers import RTLError
from .lanes import SHIFT_ADD_DIGITS

__all__ = ["Layout", "StagePlan", "Schedule", "plan_schedule", "natural_layout", "MAP_OPS", "STREAM_OPS",
           "CONV_OPS", "check_stream_graph", "shift_add_luts", "tap_groups", "LUT_BUDGET", "Parallel"]

#: A user's parallelism per node name: ``P`` output channels per step, or ``(P, G)`` with ``G`` tap groups.
Parallel = Mapping[str, "int | tuple[int, int]"]
#: Ops applied to each pixel on its own (a per-pixel combinational layer and one register).
MAP_OPS = ("relu", "relu6", "leaky_relu", "scale_shift", "prelu", "table", "clamp", "sign", "thermometer")
#: Elementwise ops whose constants are one scalar: they accept a stream in any layout.
_LAYOUT_FREE = ("relu", "relu6", "leaky_relu", "table", "sign")
#: Ops joining streams pixel by pixel (a FIFO on each operand): elementwise on two, channels side by side.
JOIN_OPS = ("add", "sub", "mul", "concat")
#: Ops moving pixels to new positions: zeros inserted and around (a transposed convolution), nearest upsampling.
RESAMPLE_OPS = ("zero_pad", "upsample")
#: Convolutions and dense layers, computed by a lanes unit (binarized ones as dot products of codes +-1).
CONV_OPS = ("conv1d", "conv2d", "binary_conv1d", "binary_conv2d")
DENSE_OPS = ("dense", "binary_dense")
STREAM_OPS = MAP_OPS + JOIN_OPS + RESAMPLE_OPS + CONV_OPS + DENSE_OPS + ("flatten", "maxpool2d", "avgpool2d",
                                                                         "global_avgpool2d")


@dataclasses.dataclass(frozen=True)
class Layout:
    """A tensor as a stream: ``pixels`` handshakes per sample of ``channels`` codes each."""

    pixels: int
    channels: int


def natural_layout(shape: tuple[int, ...]) -> Layout:
    """The layout of a tensor produced by a spatial stage: positions as pixels, the first axis as channels."""
    if len(shape) == 1:
        return Layout(1, shape[0])
    return Layout(math.prod(shape[1:]), shape[0])


@dataclasses.dataclass(frozen=True)
class StagePlan:
    """The schedule of one node."""

    node: str
    op: str
    kind: str  #: map, join, resample, window (conv, pool), dense, gap, flatten
    input: Layout
    output: Layout
    geometry: tuple[int, int]  #: (H, W) of the input for window stages, (1, pixels) otherwise
    parallel: int  #: P, output channels computed per step
    fold: int  #: F = C_out / P, channel groups (dense: steps per input pixel)
    cycles: int  #: cycles per sample at full rate
    latency: int  #: cycles from a sample's first pixel in to its first pixel out, at full rate
    groups: int = 1  #: G, tap groups of a convolution's window, one a step

    @property
    def steps(self) -> int:
        """Steps (cycles) per output pixel of a window stage, per input pixel of a dense one: ``F * G``."""
        return self.fold * self.groups


@dataclasses.dataclass
class Schedule:
    """Every node's stage and the pipeline's figures."""

    stages: list[StagePlan]
    layouts: dict[str, Layout]
    cycles: int  #: cycles per sample of the whole pipeline (the slowest stage's)
    latency: int  #: cycles from a sample's first input pixels to its last output's first pixel (longest path)

    def stage(self, name: str) -> StagePlan:
        return next(s for s in self.stages if s.node == name)


def _kind(op: str) -> str:
    if op in MAP_OPS:
        return "map"
    if op in JOIN_OPS:
        return "join"
    if op in RESAMPLE_OPS:
        return "resample"
    if op in CONV_OPS:
        return "window"
    if op in DENSE_OPS:
        return "dense"
    return {"maxpool2d": "window", "avgpool2d": "window", "global_avgpool2d": "gap", "flatten": "flatten"}[op]


def check_stream_graph(graph: Graph) -> None:
    """Refuse, before any work, a graph the streaming back end cannot build, naming the node and its op."""
    names = {x.name for x in graph.inputs}
    for output in graph.outputs:
        if output in names:
            raise RTLError(f"graph '{graph.name}': its output '{output}' is an input; there is no logic to generate")
    for node in graph.nodes:
        if node.op not in STREAM_OPS:
            raise RTLError(f"{node.describe()}: op '{node.op}' has no streaming Verilog stage; `qfx rtl --arch "
                           f"stream` supports {', '.join(STREAM_OPS)} (try --arch unrolled or the HLS back end)")
        if node.op == "concat" and node.attrs["axis"] != 0:
            raise RTLError(f"{node.describe()}: the streaming concat joins channels (axis 0), not axis "
                           f"{node.attrs['axis']}: a stream cannot be joined along its positions")


def _window_geometry(node: Node, x: Value) -> tuple[int, int]:
    return (1, x.shape[1]) if len(x.shape) == 2 else (x.shape[1], x.shape[2])


def _conv_latency(node: Node, x: Value) -> int:
    """Input pixels a window stage needs before its first output (its first window's last pixel, plus one)."""
    h, w = _window_geometry(node, x)
    a = node.attrs
    if node.op in CONV_OPS:
        k = node.constants["weight"].codes.shape[2:]
        kernel = (1, k[0]) if len(k) == 1 else tuple(k)
        dil = [1] + a["dilation"] if len(k) == 1 else a["dilation"]
        pad = [0] + [a["padding"][0][0]] if len(k) == 1 else [p[0] for p in a["padding"]]
    else:
        kernel, dil, pad = a["kernel"], a.get("dilation", [1, 1]), a["padding"]
    row = min(h - 1, (kernel[0] - 1) * dil[0] - pad[0])
    col = min(w - 1, (kernel[1] - 1) * dil[1] - pad[1])
    return max(row, 0) * w + max(col, 0) + 1


def _cycles(kind: str, inp: Layout, out: Layout, fold: int, groups: int = 1) -> int:
    if kind == "window":
        return max(inp.pixels, out.pixels * fold * groups)
    if kind == "dense":
        return inp.pixels * fold
    return max(inp.pixels, out.pixels)


#: DSP48E2 of the Ultra96-V2 (ZU3EG): what the default parallelism keeps the multipliers within.
DSP_BUDGET = 360


def multipliers_per_lane(node: Node, channels: int) -> int:
    """Multipliers one output channel lane of ``node`` needs per step: 0 for shift-add weights, else its taps."""
    if node.op not in CONV_OPS + DENSE_OPS:
        return 0
    codes = node.constants["weight"].codes
    if max(len(csd_digits(int(v))) for v in set(codes.reshape(-1).tolist()) | {0}) <= SHIFT_ADD_DIGITS:
        return 0
    if node.op in DENSE_OPS:
        return channels
    return math.prod(codes.shape[1:])


#: LUTs of the Ultra96-V2 (70,560) the default parallelism keeps the shift-add products' estimate within, leaving the
#: rest to line buffers, per-pixel stages and control.
LUT_BUDGET = 45000
#: Estimated LUTs of one CSD digit of a shift-add product: ``"rom"``, its shift read from a ROM (a shifter and an
#: adder; Yosys on the whole 2-hot ResNet-8 of ``benchmarks/bench_rtl_stream.py``, 16x16: 29,487 LUT with 338 digit
#: slots, 35,628 with 440, 60 a slot more, 9,000 for the rest); ``"fixed"``, a digit of a constant weight (a layer
#: whose ROM is one word: a fixed shift and an adder).
LUTS_PER_DIGIT = {"rom": 64, "fixed": 12}


@functools.lru_cache(maxsize=None)
def _digit_counts(codes: bytes, dtype: str) -> tuple[int, int]:
    """(nonzero CSD digits of all weights, most digits of one weight) of a weight tensor's codes."""
    values = np.frombuffer(codes, dtype=dtype)
    unique, count = np.unique(values, return_counts=True)
    digits = [len(csd_digits(int(v))) for v in unique]
    return int(np.dot(digits, count)), max(digits + [0])


def shift_add_luts(node: Node, inp: Layout, out: Layout, fold: int, groups: int = 1) -> int:
    """Estimated LUTs of the products of a shift-add conv or dense ``node`` at ``fold`` channel groups and ``groups``
    tap groups (0 for any other node).

    A unit with one ROM word (a convolution at fold 1, one tap group) has
    constant weights: every nonzero digit is a fixed shift and an adder.
    Otherwise each of its ``P`` lanes has, per tap of a group, as many
    shifters and adders as the most digits of a weight, whatever the
    weights.
    """
    if node.op not in ("conv1d", "conv2d", "dense"):
        return 0
    codes = np.ascontiguousarray(node.constants["weight"].codes, dtype=np.int64)
    total, most = _digit_counts(codes.tobytes(), str(codes.dtype))
    if most > SHIFT_ADD_DIGITS:
        return 0
    addresses = fold * groups * (inp.pixels if node.op == "dense" else 1)
    if addresses == 1:
        return total * LUTS_PER_DIGIT["fixed"]
    taps = inp.channels if node.op == "dense" else math.prod(codes.shape[1:])
    return out.channels // fold * (taps // groups) * most * LUTS_PER_DIGIT["rom"]


def tap_groups(node: Node) -> list[int]:
    """The tap group counts a convolution's window splits into: the divisors of its ``KH*KW`` taps (1 otherwise)."""
    if node.op not in CONV_OPS:
        return [1]
    k = math.prod(node.constants["weight"].codes.shape[2:])
    return [g for g in range(1, k + 1) if k % g == 0]


def _options(c_out: int, groups: list[int]) -> list[tuple[int, int]]:
    """Every (fold, tap groups) of a layer, fewest steps first, then most tap groups."""
    return sorted(((f, g) for f in range(1, c_out + 1) if c_out % f == 0 for g in groups),
                  key=lambda o: (o[0] * o[1], -o[1]))


def plan_schedule(graph: Graph, parallel: Optional[Parallel] = None,
                  dsp_budget: int = DSP_BUDGET, lut_budget: int = LUT_BUDGET) -> Schedule:
    """The streaming schedule of ``graph`` (checked), with ``parallel`` the user's P or (P, G) per node name."""
    check_stream_graph(graph)
    parallel = dict(parallel or {})
    names = {node.name for node in graph.nodes}
    for name, p in parallel.items():
        if name not in names:
            raise RTLError(f"--parallel {name}={p}: graph '{graph.name}' has no node '{name}'")
    values = graph.values()
    layouts = {x.name: natural_layout(x.shape) for x in graph.inputs}
    fed = [layouts[x.name].pixels for x in graph.inputs]
    drafts = []
    for node in graph.nodes:
        inputs = [values[i] for i in node.inputs]
        kind = _kind(node.op)
        inp = layouts[node.inputs[0]]
        if kind == "flatten":
            out = inp
        else:
            out = natural_layout(node.output.shape)
            standard = all(layouts[v.name] == natural_layout(v.shape) for v in inputs)
            if not standard and not (kind == "dense" or node.op in _LAYOUT_FREE):
                raise RTLError(f"{node.describe()}: its input arrives as {inp.pixels} pixels of {inp.channels} "
                               f"codes (a flattened tensor), but op '{node.op}' needs its input {inputs[0].shape} "
                               "as positions of channels; the streaming back end cannot reorder a stream")
            if kind == "map" and not standard:
                out = inp
            operands = [layouts[i] for i in node.inputs]
            if kind == "join" and (any(o.pixels != inp.pixels for o in operands)
                                   or (node.op != "concat" and any(o != inp for o in operands))):
                raise RTLError(f"{node.describe()}: its operands arrive in different stream layouts "
                               f"({', '.join(f'{o.pixels} pixels of {o.channels}' for o in operands)})")
        layouts[node.name] = out
        drafts.append((node, kind, inp, out, inputs[0]))
    unfolded = max(fed + [_cycles(k, i, o, 1) for _, k, i, o, _ in drafts])
    folds, options = {}, {}
    for node, kind, inp, out, x_value in drafts:
        fold = (1, 1)
        if kind in ("window", "dense") and node.op not in ("maxpool2d", "avgpool2d"):
            c_out = out.channels
            if node.name in parallel:
                fold = _user_fold(node, c_out, parallel[node.name])
            else:
                options[node.name] = _options(c_out, tap_groups(node))
                fold = max((o for o in options[node.name] if _cycles(kind, inp, out, *o) <= unfolded),
                           key=lambda o: (o[0] * o[1], o[1]))
        elif node.name in parallel and parallel[node.name] != out.channels:
            raise RTLError(f"{node.describe()}: op '{node.op}' computes all {out.channels} channels of a pixel at "
                           f"once; its parallelism is {out.channels}, not {parallel[node.name]}")
        folds[node.name] = fold
    per_lane = {node.name: multipliers_per_lane(node, inp.channels) for node, _, inp, _, _ in drafts}
    channels = {node.name: out.channels for node, _, _, out, _ in drafts}
    shapes = {node.name: (kind, inp, out) for node, kind, inp, out, _ in drafts}
    rest = max(fed + [_cycles(*shapes[name], *folds[name]) for name in folds if name not in options])

    def cycles(name: Optional[str], *fold: int) -> int:
        return rest if name is None else _cycles(*shapes[name], *fold)
    _fit(folds, options, lambda name, f, g: per_lane[name] * channels[name] // f // g, cycles, dsp_budget)
    luts = {node.name: functools.partial(shift_add_luts, node, inp, out) for node, _, inp, out, _ in drafts}
    _fit(folds, options, lambda name, f, g: luts[name](f, g), cycles, lut_budget)
    stages = []
    for node, kind, inp, out, x_value in drafts:
        fold, groups = folds[node.name]
        cycles = _cycles(kind, inp, out, fold, groups)
        if kind == "window":
            latency = _conv_latency(node, x_value) + fold * groups
        elif kind in ("dense", "gap"):
            latency = inp.pixels * fold + 1
        else:
            latency = 0 if kind == "flatten" else 1
        stages.append(StagePlan(node.name, node.op, kind, inp, out, _geometry(kind, node, x_value, inp),
                                out.channels // fold, fold, cycles, latency, groups))
    ready = {x.name: 0 for x in graph.inputs}
    for node, stage in zip(graph.nodes, stages):
        ready[node.name] = max(ready[i] for i in node.inputs) + stage.latency
    return Schedule(stages, layouts, max(fed + [s.cycles for s in stages]), max(ready[y] for y in graph.outputs))


def _user_fold(node: Node, c_out: int, choice) -> tuple[int, int]:
    """(fold, tap groups) of a user's ``P`` or ``(P, G)`` for a convolution or dense ``node``; :class:`RTLError` if
    ``P`` does not divide its output channels or ``G`` its window's taps."""
    p, g = choice if isinstance(choice, tuple) and len(choice) == 2 else (choice, 1)
    if isinstance(p, bool) or not isinstance(p, int) or p < 1 or c_out % p:
        raise RTLError(f"{node.describe()}: parallelism {p!r} must be a divisor of its {c_out} output channels")
    if isinstance(g, bool) or not isinstance(g, int) or g not in tap_groups(node):
        if node.op not in CONV_OPS:
            raise RTLError(f"{node.describe()}: tap groups {g!r} apply to convolutions only")
        raise RTLError(f"{node.describe()}: tap groups {g!r} must be a divisor of its window's "
                       f"{max(tap_groups(node))} taps")
    return c_out // p, g


def _fit(folds: dict[str, tuple[int, int]], options: Mapping[str, list[tuple[int, int]]], cost, cycles,
         budget: int) -> None:
    """While ``cost(name, fold, groups)`` summed over the layers exceeds ``budget``, move one default-planned layer to
    its next option (fewest steps first) that costs less: the move leaving the pipeline fastest (``cycles(name, fold,
    groups)`` a stage's, ``cycles(None)`` the rest's), of those the one saving the most.  None left: the budget cannot
    be met, the plan stays as it is."""
    def cheaper(name: str) -> Optional[tuple[int, int]]:
        now = cost(name, *folds[name])
        later = options[name][options[name].index(folds[name]) + 1:]
        return next((o for o in later if cost(name, *o) < now), None)
    while sum(cost(name, *fold) for name, fold in folds.items()) > budget:
        moves = {name: move for name in options if (move := cheaper(name)) is not None}
        if not moves:
            return
        slowest = max([cycles(None)] + [cycles(name, *folds[name]) for name in options])
        name = min(moves, key=lambda n: (max(slowest, cycles(n, *moves[n])),
                                          cost(n, *moves[n]) - cost(n, *folds[n])))
        folds[name] = moves[name]


def _geometry(kind: str, node: Node, x: Value, inp: Layout) -> tuple[int, int]:
    return _window_geometry(node, x) if kind == "window" else (1, inp.pixels)
