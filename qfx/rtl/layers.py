"""IR nodes lowered to Verilog layer modules: element wires, adder graphs and casts, ready for the template.

A layer module is combinational.  Its ports are ``in0_data`` (and
``in1_data`` for ``add``), each input tensor's codes packed with element 0
in the least significant bits, and ``out_data``, the output codes packed
the same way.  Inside, every element is a signed wire exactly as wide as
the range of values it can take (known from the formats and constants), so
no bit is wasted and none can overflow; constant products are adder graphs
(:mod:`qfx.rtl.adder_graph`) of ``qfx_add`` instances, and every output
goes through one cast function (:mod:`qfx.rtl.casts`).  No ``*`` is ever
written.
"""

from __future__ import annotations

from typing import Iterator, Optional, Sequence

from ..ir import Node, Value
from .builder import AdderInstance, Builder, Element, LayerModule, RTLError, Rom, Wire, shift_left
from .structure import LOWER as _STRUCTURE_LOWER, MOVES as _MOVES
from .verilog import literal, signed_width

__all__ = ["RTLError", "Wire", "AdderInstance", "LayerModule", "check_supported", "lower_node", "MAX_UNROLLED_TAPS", "SUPPORTED_OPS"]

#: A convolution is unrolled only up to this many nonzero weight taps over all its outputs.
MAX_UNROLLED_TAPS = 50_000
SUPPORTED_OPS = ("dense", "conv1d", "conv2d", "relu", "relu6", "leaky_relu", "scale_shift", "add", "flatten",
                 "sub", "clamp", "concat", "zero_pad", "upsample", "maxpool2d", "avgpool2d", "global_avgpool2d",
                 "prelu", "table", "sign", "thermometer", "binary_dense", "binary_conv1d", "binary_conv2d")


def _dot(b: Builder, node: Node, rows: list[dict[int, int]], x: Value, channel_of_row: Sequence[int]) -> list[str]:
    """Dense and convolution: products, bias at the common binary point, ``accum`` cast, output cast."""
    weight, bias = node.constants["weight"], node.constants.get("bias")
    sums = b.products(rows, b.unpack(0, x))
    sources = []
    for o, element in enumerate(sums):
        c = channel_of_row[o]
        frac = x.type.frac_bits + weight.type_of(c).frac_bits
        if bias is not None:
            fb = bias.frac_bits()[0]
            common = max(frac, int(fb))
            element = b.align_add(f"b{o}", element, common - frac, int(bias.codes[c]) << int(common - fb))
            frac = common
        sources.append((element, frac))
    accum = node.formats.get("accum")
    if accum is not None:
        words = b.cast(sources, accum, "acc")
        sources = [(e, accum.frac_bits) for e in b.read(words, accum, "q")]
    return b.cast(sources, node.output.type, "y")


def _dense(b: Builder, node: Node, inputs: list[Value]) -> list[str]:
    weight = node.constants["weight"].codes
    rows = [{i: int(v) for i, v in enumerate(row) if v} for row in weight]
    return _dot(b, node, rows, inputs[0], range(len(rows)))


def _conv_taps(node: Node, x: Value) -> Iterator[tuple[int, list[tuple[Optional[int], int]]]]:
    """Each output position of a (binary) convolution, channel-major: its output channel and, per weight tap, the
    flat index of the input element it reads (``None`` where the tap falls in the padding) and the weight code."""
    weight = node.constants["weight"].codes
    two_d = weight.ndim == 4
    w4 = weight if two_d else weight[:, :, None, :]
    in_shape = x.shape if two_d else (x.shape[0], 1, x.shape[1])
    out_shape = node.output.shape if two_d else (node.output.shape[0], 1, node.output.shape[1])
    stride = node.attrs["stride"] if two_d else [1] + node.attrs["stride"]
    dilation = node.attrs["dilation"] if two_d else [1] + node.attrs["dilation"]
    padding = node.attrs["padding"] if two_d else [[0, 0]] + node.attrs["padding"]
    per_group_in, per_group_out = w4.shape[1], w4.shape[0] // node.attrs["groups"]
    for oc in range(out_shape[0]):
        g = oc // per_group_out
        for oh in range(out_shape[1]):
            for ow in range(out_shape[2]):
                taps = []
                for ic in range(per_group_in):
                    for kh in range(w4.shape[2]):
                        for kw in range(w4.shape[3]):
                            ih = oh * stride[0] + kh * dilation[0] - padding[0][0]
                            iw = ow * stride[1] + kw * dilation[1] - padding[1][0]
                            inside = 0 <= ih < in_shape[1] and 0 <= iw < in_shape[2]
                            index = ((g * per_group_in + ic) * in_shape[1] + ih) * in_shape[2] + iw
                            taps.append((index if inside else None, int(w4[oc, ic, kh, kw])))
                yield oc, taps


def _conv(b: Builder, node: Node, inputs: list[Value]) -> list[str]:
    rows, channels = [], []
    for oc, taps in _conv_taps(node, inputs[0]):
        rows.append({index: code for index, code in taps if code and index is not None})
        channels.append(oc)
    return _dot(b, node, rows, inputs[0], channels)


def _channel_of(value: Value) -> list[int]:
    per_channel = value.size // value.shape[0]
    return [e // per_channel for e in range(value.size)]


def _scale_shift(b: Builder, node: Node, inputs: list[Value]) -> list[str]:
    x = inputs[0]
    scale, shift = node.constants["scale"], node.constants["shift"]
    channel = _channel_of(x)
    elements = b.unpack(0, x)
    products = b.products([{e: int(scale.codes[c])} if scale.codes[c] else {} for e, c in enumerate(channel)],
                          elements)
    sources = []
    for e, c in enumerate(channel):
        fp = x.type.frac_bits + scale.type_of(c).frac_bits
        fs = shift.type_of(c).frac_bits
        common = max(fp, fs)
        sources.append((b.align_add(f"s{e}", products[e], common - fp, int(shift.codes[c]) << (common - fs)),
                        common))
    return b.cast(sources, node.output.type, "y")


def _relu(b: Builder, node: Node, inputs: list[Value]) -> list[str]:
    x = inputs[0]
    clamped = [b.wire(f"r{e}", max(low, 0), max(high, 0), f"{name}[{signed_width(low, high) - 1}] ? 1'sd0 : {name}")
               for e, (name, low, high) in enumerate(b.unpack(0, x))]
    return b.cast([(e, x.type.frac_bits) for e in clamped], node.output.type, "y")


def _relu6(b: Builder, node: Node, inputs: list[Value]) -> list[str]:
    x = inputs[0]
    fx = x.type.frac_bits
    common = max(fx, 0)  # 6 is an integer: exact once there are no negative fractional bits
    six = 6 << common
    sources = []
    for e, element in enumerate(b.unpack(0, x)):
        name, low, high = b.align_add(f"u{e}", element, common - fx, 0)
        top = literal(six, signed_width(six, six))
        expr = f"{name}[{signed_width(low, high) - 1}] ? 1'sd0 : ({name} > {top} ? {top} : {name})"
        sources.append((b.wire(f"r{e}", min(max(low, 0), six), min(max(high, 0), six), expr), common))
    return b.cast(sources, node.output.type, "y")


def _leaky_relu(b: Builder, node: Node, inputs: list[Value]) -> list[str]:
    x = inputs[0]
    slope = node.constants["slope"]
    code, fs, fx = int(slope.codes), int(slope.frac_bits()[0]), x.type.frac_bits
    common = fx + max(fs, 0)
    elements = b.unpack(0, x)
    products = b.products([{e: code} if code else {} for e in range(len(elements))], elements)
    sources = []
    for e, ((name, low, high), (product, _, _)) in enumerate(zip(elements, products)):
        up, down = common - fx, common - fx - fs
        ranges = []
        if high >= 0:
            ranges += [max(low, 0) << up, high << up]
        if low < 0:
            ranges += [(code * v) << down for v in (low, min(high, -1))]
        expr = f"{name}[{signed_width(low, high) - 1}] ? {shift_left(product, down)} : {shift_left(name, up)}"
        sources.append((b.wire(f"r{e}", min(ranges), max(ranges), expr), common))
    return b.cast(sources, node.output.type, "y")


def _add(b: Builder, node: Node, inputs: list[Value]) -> list[str]:
    a, c = inputs
    common = max(a.type.frac_bits, c.type.frac_bits)
    sa, sc = common - a.type.frac_bits, common - c.type.frac_bits
    sources = []
    for e, ((na, la, ha), (nc, lc, hc)) in enumerate(zip(b.unpack(0, a), b.unpack(1, c))):
        expr = f"{shift_left(na, sa)} + {shift_left(nc, sc)}"
        sources.append((b.wire(f"s{e}", (la << sa) + (lc << sc), (ha << sa) + (hc << sc), expr), common))
    return b.cast(sources, node.output.type, "y")


def _prelu(b: Builder, node: Node, inputs: list[Value]) -> list[str]:
    """``t = x + bias``; ``t >= 0 ? t : t * slope`` (an adder graph); ``+ shift``: aligned like the interpreter."""
    x = inputs[0]
    slope, bias, shift = (node.constants.get(r) for r in ("slope", "bias", "shift"))

    def at(c, ch: int) -> tuple[int, int]:
        k = ch if c.codes.shape[0] > 1 else 0
        return int(c.codes[k]), c.type_of(k).frac_bits

    channel = _channel_of(x)
    fx = x.type.frac_bits
    shifted = []
    for e, element in enumerate(b.unpack(0, x)):
        if bias is None:
            shifted.append((element, fx))
            continue
        code, fb = at(bias, channel[e])
        ft = max(fx, fb)
        shifted.append((b.align_add(f"t{e}", element, ft - fx, code << (ft - fb)), ft))
    products = b.products([{e: at(slope, c)[0]} if at(slope, c)[0] else {} for e, c in enumerate(channel)],
                          [t for t, _ in shifted])
    sources = []
    for e, (((name, low, high), ft), (product, plow, phigh)) in enumerate(zip(shifted, products)):
        fs = at(slope, channel[e])[1]
        common = max(ft, ft + fs)
        up, down = common - ft, common - ft - fs
        ranges = []
        if high >= 0:
            ranges += [max(low, 0) << up, high << up]
        if low < 0:
            ranges += [plow << down, phigh << down]  # over all of t's range: a superset
        expr = f"{name}[{signed_width(low, high) - 1}] ? {shift_left(product, down)} : {shift_left(name, up)}"
        r = b.wire(f"r{e}", min(ranges), max(ranges), expr)
        if shift is None:
            sources.append((r, common))
            continue
        code, fz = at(shift, channel[e])
        fy = max(common, fz)
        sources.append((b.align_add(f"s{e}", r, fy - common, code << (fy - fz)), fy))
    return b.cast(sources, node.output.type, "y")


def _table(b: Builder, node: Node, inputs: list[Value]) -> list[str]:
    """Each element cast to the table's input format; its word addresses one case ROM of output codes."""
    x, t, out = inputs[0], node.formats["table"], node.output.type
    addresses = b.cast([(e, x.type.frac_bits) for e in b.unpack(0, x)], t, "a")
    codes = node.constants["table"].codes
    b.module.roms.append(Rom("rom", t.width, out.width, [
        (f"{t.width}'d{code & ((1 << t.width) - 1)}", f"{out.width}'d{int(word) & ((1 << out.width) - 1)}")
        for code, word in zip(range(t.code_min, t.code_max + 1), codes)]))
    words = []
    for k, address in enumerate(addresses):
        b.module.wires.append(Wire(f"y{k}", out.width, f"rom({address})", signed=False))
        words.append(f"y{k}")
    return words


# ------------------------------------------------------------- binary ops
# A binary code is +1 (2'b01) or -1 (2'b11): its bit 1 is set for -1.  xnor(x, +1) is ~x[1] and
# xnor(x, -1) is x[1]; a dot product is 2 * popcount - N, the popcount an adder graph of 1-bit terms.
def _sign(b: Builder, node: Node, inputs: list[Value]) -> list[str]:
    sources = [(b.wire(f"r{e}", -1, 1, f"{name}[{signed_width(low, high) - 1}] ? -2'sd1 : 2'sd1"), 0)
               for e, (name, low, high) in enumerate(b.unpack(0, inputs[0]))]
    return b.cast(sources, node.output.type, "y")


def _thermometer(b: Builder, node: Node, inputs: list[Value]) -> list[str]:
    x = inputs[0]
    thresholds = node.constants["thresholds"]
    fx, ft = x.type.frac_bits, int(thresholds.frac_bits()[0])
    common = max(fx, ft)
    elements = [b.align_add(f"u{e}", element, common - fx, 0) for e, element in enumerate(b.unpack(0, x))]
    size = x.size // x.shape[0]
    levels = [int(c) << (common - ft) for c in thresholds.codes]
    sources = []
    for c in range(x.shape[0]):
        for t, level in enumerate(levels):
            for i in range(size):
                name, low, high = elements[c * size + i]
                width = max(signed_width(low, high), signed_width(level, level))
                expr = f"$signed({name}) >= {literal(level, width)} ? 2'sd1 : -2'sd1"
                sources.append((b.wire(f"r{(c * len(levels) + t) * size + i}", -1, 1, expr), 0))
    return b.cast(sources, node.output.type, "y")


def _popcount_dot(b: Builder, node: Node, x: Value, taps: list[tuple[dict[int, int], int]]) -> list[str]:
    """Each output: ``2 * popcount(xnor) - N + constant`` over its taps ``{input element: ±1}``."""
    terms: list[Element] = []
    for e, (name, _, _) in enumerate(b.unpack(0, x)):
        terms.append(b.wire(f"xp{e}", 0, 1, f"{{1'b0, ~{name}[1]}}"))  # xnor with +1
        terms.append(b.wire(f"xn{e}", 0, 1, f"{{1'b0, {name}[1]}}"))  # xnor with -1
    rows = [{2 * e + (w < 0): 1 for e, w in row.items()} for row, _ in taps]
    counts = b.products(rows, terms)
    sources = [(b.align_add(f"s{o}", count, 1, constant - len(row)), 0)
               for o, (count, (row, constant)) in enumerate(zip(counts, taps))]
    return b.cast(sources, node.output.type, "y")


def _binary_dense(b: Builder, node: Node, inputs: list[Value]) -> list[str]:
    weight = node.constants["weight"].codes
    return _popcount_dot(b, node, inputs[0], [({i: int(v) for i, v in enumerate(row)}, 0) for row in weight])


def _binary_conv(b: Builder, node: Node, inputs: list[Value]) -> list[str]:
    x = inputs[0]
    weight = node.constants["weight"].codes
    if weight.size * (node.output.size // node.output.shape[0]) > MAX_UNROLLED_TAPS:
        raise RTLError(f"{node.describe()}: fully unrolled it needs more than {MAX_UNROLLED_TAPS} XNOR taps; the "
                       "Verilog back end unrolls only small binary convolutions (use the HLS back end, or shrink it)")
    pad_value = node.attrs["pad_value"]
    taps = [({index: code for index, code in row if index is not None},  # the padded taps add pad_value * w each
             pad_value * sum(code for index, code in row if index is None))
            for _, row in _conv_taps(node, x)]
    return _popcount_dot(b, node, x, taps)


_LOWER = {"dense": _dense, "conv1d": _conv, "conv2d": _conv, "scale_shift": _scale_shift, "relu": _relu,
          "relu6": _relu6, "leaky_relu": _leaky_relu, "add": _add, "prelu": _prelu,
          "table": _table,
          "sign": _sign, "thermometer": _thermometer, "binary_dense": _binary_dense, "binary_conv1d": _binary_conv,
          "binary_conv2d": _binary_conv, **_STRUCTURE_LOWER}


def check_supported(node: Node) -> None:
    """Raise :class:`RTLError` naming ``node`` if the Verilog back end cannot lower it (cheap: nothing is built)."""
    if node.op != "flatten" and node.op not in _MOVES and node.op not in _LOWER:
        raise RTLError(f"{node.describe()}: op '{node.op}' has no Verilog implementation; the RTL back end "
                       f"supports {', '.join(SUPPORTED_OPS)} (use the HLS back end for this network)")
    if node.op in ("conv1d", "conv2d"):
        weight = node.constants["weight"].codes
        taps = int((weight != 0).sum()) * (node.output.size // node.output.shape[0])
        if taps > MAX_UNROLLED_TAPS:
            raise RTLError(f"{node.describe()}: fully unrolled it needs {taps} constant multiplications, more "
                           f"than {MAX_UNROLLED_TAPS}; the Verilog back end unrolls only pointwise or small "
                           "convolutions (use the HLS back end for this network, or shrink the layer)")


def lower_node(node: Node, inputs: list[Value], module_name: str, ternary: bool = False) -> LayerModule:
    """The Verilog module of ``node`` (whose input tensors are ``inputs``), called ``module_name``; ``ternary``
    sums constant products with ``qfx_add3`` ternary adders (UltraScale+ primitives) where three terms meet."""
    check_supported(node)
    module = LayerModule(module_name, node.describe(), node.op, [], 0)
    b = Builder(module, ternary)
    if node.op == "flatten":
        b.unpack(0, inputs[0])
        module.wires.clear()  # the codes pass through unchanged
        module.output_width, module.output = module.input_widths[0], "in0_data"
        return module
    if node.op in _MOVES:
        _MOVES[node.op](b, node, inputs)
        return module
    words = _LOWER[node.op](b, node, inputs)
    b.finish(words, node.output.type, node.output.size)
    return module
