"""Each node of a streaming design as the data of one stage module (``hls_templates/rtl/stream/<kind>.v.j2``).

Kinds (see :mod:`.plan`):

* ``map``: a per-pixel combinational layer (the unrolled back end's
  :func:`qfx.rtl.layers.lower_node` on one pixel, ``(C,)``) and one output
  register; one pixel per cycle.
* ``window``: a line buffer of ``NR`` rows (a power of two above the
  window's height) feeding a window of ``KH x KW`` pixels (zeros in the
  padding) to either a lanes unit (:mod:`.lanes`, convolutions, ``F``
  steps per output pixel) or a per-window layer (pooling: the unrolled
  ``maxpool2d``/``avgpool2d`` on one window).  Input is taken while it
  overwrites no row a pending window still reads.
* ``dense``: a lanes unit over each input pixel, accumulating every output
  channel across the sample's pixels, the bias and cast at the last one.
* ``gap``: one accumulator per channel over the stream, then the
  unrolled ``global_avgpool2d`` of the sums (never a window).
* ``resample`` (``zero_pad``, ``upsample``): one output pixel per cycle,
  the input's head, a row buffer's copy or zeros, by position counters.
* ``join`` (``add``, ``sub``, ``mul``, ``concat`` of channels): a FIFO on each
  operand, sized from the other branches' capacity, and the unrolled
  layer on one pixel of each.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from ...format import FixedType
from ...ir import Node, Value
from ..builder import Builder
from ..layers import LayerModule, RTLError, lower_node
from .lanes import Lanes, plan_lanes
from .plan import CONV_OPS, StagePlan

__all__ = ["StageModule", "build_stage", "COUNTER"]

#: Bits of every position counter (signed): images up to 32767 pixels a side.
COUNTER = 17


@dataclasses.dataclass
class StageModule:
    """One stage: its module name, kind, ports' widths and what its template needs."""

    name: str
    node: str
    op: str
    kind: str
    plan: StagePlan
    input_widths: list[int]
    output_width: int
    layer: Optional[LayerModule] = None
    lanes: Optional[Lanes] = None
    params: dict = dataclasses.field(default_factory=dict)
    capacity: int = 1  #: pixels of its input it can hold before it must emit
    products: int = 0  #: multipliers outside a lanes unit (``mul`` of two streams)

    @property
    def multipliers(self) -> int:
        return self.lanes.multipliers if self.lanes else self.products


def _pixel(value: Value, channels: int, name: str, t: Optional[FixedType] = None) -> Value:
    return Value(name, (channels,), t or value.type)


def _map(node: Node, inputs: list[Value], plan: StagePlan, name: str) -> StageModule:
    """The node on one pixel: its input's channels (a join's operands arrive as positions of channels)."""
    channels = [plan.input.channels] if len(inputs) == 1 else [v.shape[0] for v in inputs]
    pixel_inputs = [_pixel(v, c, f"{v.name}") for v, c in zip(inputs, channels)]
    consts = {k: v for k, v in node.constants.items()}
    c_out = plan.output.channels
    pixel_node = Node(node.name, node.op, node.inputs, _pixel(node.output, c_out, node.name), dict(node.attrs),
                      consts, dict(node.formats), node.label)
    make = _product if node.op == "mul" else lower_node
    stage = StageModule(name, node.describe(), node.op, plan.kind, plan,
                        [c * v.type.width for v, c in zip(inputs, channels)], c_out * node.output.type.width,
                        layer=make(pixel_node, pixel_inputs, f"{name}_pixel"))
    if node.op == "mul":
        stage.products = c_out
    return stage


def _product(node: Node, inputs: list[Value], module_name: str) -> LayerModule:
    """``mul`` on one pixel: each exact product ``a * b`` (a ``*``, a DSP48E2), at the sum of the binary points,
    then the output cast.  (The unrolled back end writes no multiplier and refuses ``mul``.)"""
    module = LayerModule(module_name, node.describe(), node.op, [], 0)
    b = Builder(module)
    x, y = inputs
    sources = []
    for e, ((na, la, ha), (nb, lb, hb)) in enumerate(zip(b.unpack(0, x), b.unpack(1, y))):
        corners = (la * lb, la * hb, ha * lb, ha * hb)
        sources.append((b.wire(f"m{e}", min(corners), max(corners), f"{na} * {nb}"),
                        x.type.frac_bits + y.type.frac_bits))
    b.finish(b.cast(sources, node.output.type, "y"), node.output.type, len(sources))
    return module


def _window_attrs(node: Node, x: Value):
    a = node.attrs
    if node.op in CONV_OPS:
        k = node.constants["weight"].codes.shape[2:]
        if len(k) == 1:
            return (1, k[0]), (1, a["stride"][0]), (1, a["dilation"][0]), (0, a["padding"][0][0])
        return tuple(k), tuple(a["stride"]), tuple(a["dilation"]), (a["padding"][0][0], a["padding"][1][0])
    return tuple(a["kernel"]), tuple(a["stride"]), tuple(a.get("dilation", [1, 1])), tuple(a["padding"])


def _aligned(node: Node, x: Value):
    """Weights (out, in, ...) shifted to one binary point, the bias too; and that point."""
    weight, bias = node.constants["weight"], node.constants.get("bias")
    out_ch = weight.codes.shape[0]
    fw = [weight.type_of(o).frac_bits for o in range(out_ch)]
    frac = x.type.frac_bits + max(fw)
    if bias is not None:
        frac = max(frac, int(bias.frac_bits()[0]))
    codes = weight.codes.astype(object)
    shifted = np.array([[int(v) << (frac - x.type.frac_bits - fw[o]) for v in codes[o].reshape(-1)]
                        for o in range(out_ch)], dtype=object).reshape(codes.shape)
    b = None
    if bias is not None:
        fb = int(bias.frac_bits()[0])
        b = np.array([int(v) << (frac - fb) for v in bias.codes], dtype=object)
    return shifted, b, frac


def _ranges(rows: np.ndarray, t: FixedType) -> list[tuple[int, int]]:
    """Exact range of each row's dot product with inputs in ``t``'s code range."""
    found = []
    for row in rows:
        low = sum(min(int(w) * t.code_min, int(w) * t.code_max) for w in row)
        high = sum(max(int(w) * t.code_min, int(w) * t.code_max) for w in row)
        found.append((low, high))
    return found


def _lanes(name: str, node: Node, x: Value, plan: StagePlan, weights: np.ndarray, rows: np.ndarray,
           bias) -> Lanes:
    """The lanes unit of ``weights[address][lane][tap]`` (``rows``: every output channel's whole weight row)."""
    b = None if bias is None else np.asarray(bias, dtype=object).reshape(plan.fold, plan.parallel)
    _, _, frac = _aligned(node, x)
    return plan_lanes(f"{name}_lanes", node.describe(), plan.fold, weights, b, x.type, node.formats.get("accum"),
                      node.output.type, frac, _ranges(rows, x.type))


def _table(index: str, bits: int, values: list[int], width: int) -> str:
    """A Verilog expression of ``values[index]`` (signed, ``width`` bits): a constant where they all agree."""
    if len(set(values)) == 1:
        return f"{width}'sd{values[0]}"
    expr = f"{width}'sd{values[-1]}"
    for g in reversed(range(len(values) - 1)):
        if values[g] != values[-1]:
            expr = f"{index} == {bits}'d{g} ? {width}'sd{values[g]} : ({expr})"
    return expr


def _window(node: Node, inputs: list[Value], plan: StagePlan, name: str) -> StageModule:
    x = inputs[0]
    h, w = plan.geometry
    c = plan.input.channels
    kernel, stride, dilation, pad = _window_attrs(node, x)
    out_shape = node.output.shape
    oh, ow = (1, out_shape[1]) if len(out_shape) == 2 else out_shape[1:]
    span = (kernel[0] - 1) * dilation[0] + 1
    nr = 1 << _rows_held(h, oh, span, stride[0], pad[0], plan).bit_length()  # a power of two above them
    col_bits = max((w - 1).bit_length(), 1)
    if max(h, w) + max(pad) + span >= 1 << (COUNTER - 2):
        raise RTLError(f"{node.describe()}: an image of {h}x{w} is beyond the streaming stage's position counters")
    stage = StageModule(name, node.describe(), node.op, "window", plan, [c * x.type.width],
                        plan.output.channels * node.output.type.width, capacity=nr * w + 2)
    k = kernel[0] * kernel[1]
    f, p, groups = plan.fold, plan.parallel, plan.groups
    per_step = k // groups  # taps a step reads: group g is taps g*per_step .. (raster order over kh, kw)
    if node.op in CONV_OPS:
        weights, bias, _ = _aligned(node, x)
        w4 = weights if weights.ndim == 4 else weights[:, :, None, :]
        cin_g = w4.shape[1]
        per_group = w4.shape[0] // node.attrs["groups"]
        rows = np.zeros((w4.shape[0], k * c), dtype=object)
        for o in range(w4.shape[0]):
            g = o // per_group
            for i in range(cin_g):
                for kh in range(kernel[0]):
                    for kw in range(kernel[1]):
                        rows[o, (kh * kernel[1] + kw) * c + g * cin_g + i] = w4[o, i, kh, kw]
        # address s*G + g: lanes p of output channels s*P + p, taps of group g
        per_address = rows.reshape(f, p, groups, per_step * c).transpose(0, 2, 1, 3).reshape(f * groups, p, -1)
        stage.lanes = _lanes(name, node, x, plan, per_address, rows, bias)
    else:
        window = Value(f"{node.name} window", (c, kernel[0], kernel[1]), x.type)
        attrs = dict(node.attrs, kernel=list(kernel), stride=[1, 1], padding=[0, 0])
        if node.op == "maxpool2d":
            attrs.update(dilation=[1, 1], ceil_mode=False)
        pool = Node(node.name, node.op, (window.name,), Value(node.name, (c, 1, 1), node.output.type), attrs,
                    dict(node.constants), dict(node.formats), node.label)
        stage.layer = lower_node(pool, [window], f"{name}_window")
    xb = x.type.width
    fill, fill_text = _fill(node, x, c)
    # the window bus holds pixel kh*KW + kw at [k*C*XB +: C*XB]; a pooling layer wants channel-major (C, KH, KW)
    order = [f"p{j}[{ch * xb + xb - 1}:{ch * xb}]" for ch in range(c) for j in range(k)]
    group_bits = max((groups - 1).bit_length(), 1)

    def offset(j: int, axis: int) -> str:
        taps = [divmod(g * per_step + j, kernel[1])[axis] * dilation[axis] for g in range(groups)]
        return _table("group", group_bits, taps, COUNTER)
    stage.params = dict(
        H=h, W=w, C=c, KH=kernel[0], KW=kernel[1], SH=stride[0], SW=stride[1], PT=pad[0], PL=pad[1], OH=oh, OW=ow,
        NR=nr, SB=max((nr - 1).bit_length(), 1), CB=col_bits, DEPTH=nr << col_bits, H_MOD=h % nr,
        PIXEL=c * xb, SPAN_R=(kernel[0] - 1) * dilation[0], SPAN_C=(kernel[1] - 1) * dilation[1],
        G=groups, GB=group_bits, TAPS=per_step, offsets=[(j, offset(j, 0), offset(j, 1)) for j in range(per_step)],
        pool_order=", ".join(reversed(order)), FILL=fill, FILL_TEXT=fill_text)
    return stage


def _rows_held(h: int, oh: int, span: int, stride: int, top: int, plan: StagePlan) -> int:
    """Rows the line buffer must hold: the window's span and a stride of rows to come.

    A stage slower than its input (``F * G`` steps per output pixel) must also
    take in the next sample's first window while it computes its last
    row, or it would wait for those rows at every sample's start and miss
    the schedule's cycles per sample: the rows from the last window's top
    to the next sample's first window's bottom, and one stride more.
    """
    rows = span + stride - 1
    if h > 1 and plan.output.pixels * plan.steps > plan.input.pixels:
        last_top = (oh - 1) * stride - top
        rows = max(rows, h + min(h - 1, span - 1 - top) - last_top + 1 + stride)
    return rows


def _fill(node: Node, x: Value, channels: int) -> tuple[str, str]:
    """The pixel a window reads outside the image, as a Verilog literal, and in words.

    Zeros for a convolution and an average (zero padding counts), the
    ``pad_value`` (+-1) for a binarized convolution; for a maximum every
    channel's smallest code, which never wins against a
    pixel of the image (every window holds one), so padding and the
    positions a ``ceil_mode`` window reaches past the edge change nothing.
    """
    width = channels * x.type.width
    if node.op.startswith("binary_conv"):
        code, text = node.attrs["pad_value"], f"the code {node.attrs['pad_value']}"
    elif node.op == "maxpool2d":
        code, text = x.type.code_min, f"the smallest code {x.type.code_min}"
    else:
        return f"{width}'d0", "zeros"
    code &= (1 << x.type.width) - 1
    word = sum(code << (k * x.type.width) for k in range(channels))
    return f"{width}'h{word:x}", text


def _dense(node: Node, inputs: list[Value], plan: StagePlan, name: str) -> StageModule:
    x = inputs[0]
    weights, bias, _ = _aligned(node, x)
    npix, c = plan.input.pixels, plan.input.channels
    # input pixel j, channel c is element c * npix + j of the flat input
    per_pixel = np.stack([weights[:, [ch * npix + j for ch in range(c)]] for j in range(npix)])
    stage = StageModule(name, node.describe(), node.op, "dense", plan, [c * x.type.width],
                        plan.output.channels * node.output.type.width, capacity=npix)
    # address j*F + s: input pixel j, lanes p of output channels s*P + p
    stage.lanes = _lanes(name, node, x, plan, per_pixel.reshape(npix * plan.fold, plan.parallel, c), weights, bias)
    stage.params = dict(NPIX=npix, A_LAST=npix * plan.fold - 1)
    return stage


def _gap(node: Node, inputs: list[Value], plan: StagePlan, name: str) -> StageModule:
    x = inputs[0]
    c, npix = plan.input.channels, plan.input.pixels
    extra = max((npix - 1).bit_length(), 0)
    t = x.type
    wide = FixedType(t.width + extra, t.int_bits + extra, signed=t.signed)
    sums = Value(f"{node.name} sums", (c, 1, 1), wide)
    pooled = Node(node.name, node.op, (sums.name,), Value(node.name, (c, 1, 1), node.output.type), {},
                  dict(node.constants), {}, node.label)
    stage = StageModule(name, node.describe(), node.op, "gap", plan, [c * t.width], c * node.output.type.width,
                        layer=lower_node(pooled, [sums], f"{name}_pixel"), capacity=npix)
    xb, wb = t.width, wide.width
    def term(ch: int) -> str:
        high, low = ch * xb + xb - 1, ch * xb
        field = f"in0_data[{high}:{low}]"
        if not extra:
            return field
        return f"{{{{{extra}{{in0_data[{high}]}}}}, {field}}}" if t.signed else f"{{{extra}'d0, {field}}}"
    stage.params = dict(NPIX=npix, SUM_WIDTH=wb, C=c, sums=[
        (f"s{ch}", f"(first ? {wb}'d0 : acc[{ch * wb + wb - 1}:{ch * wb}]) + {term(ch)}")
        for ch in range(c)])
    return stage


def _axis(pos: str, phase: str, begin: int, end: int, period: int, rep: int, size: int, cw: int) -> tuple[str, str]:
    """One axis of a resample: the expression of "this position is live" and of "the next phase restarts at 0"."""
    live = ([f"{pos} >= {cw}'d{begin}"] if begin else []) + ([f"{pos} < {cw}'d{end}"] if end < size else []) \
        + ([f"{phase} < {cw}'d{rep}"] if rep < period else [])
    restart = ([f"{pos} < {cw}'d{begin}"] if begin else []) + [f"{phase} == {cw}'d{period - 1}"]
    return " && ".join(live) or "1'b1", " || ".join(restart)


def _resample(node: Node, inputs: list[Value], plan: StagePlan, name: str) -> StageModule:
    """``zero_pad`` (zeros between neighbours and around: a transposed convolution's input) or nearest ``upsample``.

    Per axis, output positions ``BEGIN .. END - 1`` whose phase (modulo
    ``PERIOD``, from ``BEGIN``) is below ``REP`` show an input pixel: input
    ``j`` spans positions ``BEGIN + j * PERIOD`` and the ``REP - 1`` after.
    zero_pad: ``PERIOD`` is the insertion step, ``REP`` 1; upsample: both the
    scale.  Each input pixel is taken at its first position; a column
    repeated is a held copy, a row repeated (2-d upsampling) the row
    buffer's.
    """
    x = inputs[0]
    _, h, w = (x.shape[0], 1, x.shape[1]) if len(x.shape) == 2 else x.shape
    out = node.output.shape
    oh, ow = (1, out[1]) if len(out) == 2 else out[1:]
    if node.op == "zero_pad":
        (sh, sw), pads = ([1] + node.attrs["insert"], [[0, 0]] + node.attrs["padding"]) if len(x.shape) == 2 \
            else (node.attrs["insert"], node.attrs["padding"])
        rows = (pads[0][0], pads[0][0] + (h - 1) * sh + 1, sh, 1)
        cols = (pads[1][0], pads[1][0] + (w - 1) * sw + 1, sw, 1)
        text = f"zero insertion (steps {sh}x{sw}) and zero padding"
    else:
        sh, sw = [1] + node.attrs["scale"] if len(x.shape) == 2 else node.attrs["scale"]
        rows, cols = (0, oh, sh, sh), (0, ow, sw, sw)
        text = f"nearest upsampling by {sh}x{sw}"
    cw = max(oh, ow, w, 2).bit_length()
    live_r, restart_r = _axis("o_r", "ph_r", *rows, oh, cw)
    live_c, restart_c = _axis("o_c", "ph_c", *cols, ow, cw)
    pixel = plan.input.channels * x.type.width
    buffer = rows[3] > 1
    stage = StageModule(name, node.describe(), node.op, "resample", plan, [pixel], pixel,
                        capacity=1 + (cols[3] > 1) + (w if buffer else 0))
    stage.params = dict(TEXT=text, H=h, W=w, OH=oh, OW=ow, CW=cw, SRC=max((w - 1).bit_length(), 1), PIXEL=pixel,
                        BUFFER=buffer, HOLD=cols[3] > 1, rows=rows, cols=cols,
                        live_r=live_r, live_c=live_c, restart_r=restart_r, restart_c=restart_c,
                        last_rep=f"ph_c == {cw}'d{cols[3] - 1}")
    return stage


_BUILD = {"map": _map, "resample": _resample, "window": _window, "dense": _dense, "gap": _gap, "join": _map}


def build_stage(node: Node, inputs: list[Value], plan: StagePlan, name: str) -> StageModule:
    """The stage module of ``node`` (its input tensors ``inputs``) under ``plan``, named ``name``."""
    return _BUILD[plan.kind](node, inputs, plan, name)
