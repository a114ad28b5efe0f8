"""The structural ops as Verilog layer modules: ``sub``, ``clamp`` and ``concat`` (exact, then one cast per
element), ``zero_pad`` and ``upsample`` (wiring only: input fields and zeros, no logic), and pooling
(``maxpool2d`` a chain of comparisons per window, ``avgpool2d`` and ``global_avgpool2d`` the window sum times the
divisor's code as one adder graph).  ``mul`` of two
tensors would need a multiplier, which this back end never writes: it is refused.  Used by :mod:`.layers`."""

from __future__ import annotations

import math

from ..ir import Node, Value
from .builder import Builder, RTLError, shift_left
from .verilog import literal, signed_width

__all__ = ["LOWER", "MOVES"]


def _sub(b: Builder, node: Node, inputs: list[Value]) -> list[str]:
    a, c = inputs
    common = max(a.type.frac_bits, c.type.frac_bits)
    sa, sc = common - a.type.frac_bits, common - c.type.frac_bits
    sources = []
    for e, ((na, la, ha), (nc, lc, hc)) in enumerate(zip(b.unpack(0, a), b.unpack(1, c))):
        expr = f"{shift_left(na, sa)} - {shift_left(nc, sc)}"
        sources.append((b.wire(f"s{e}", (la << sa) - (hc << sc), (ha << sa) - (lc << sc), expr), common))
    return b.cast(sources, node.output.type, "y")


def _clamp(b: Builder, node: Node, inputs: list[Value]) -> list[str]:
    x = inputs[0]
    bounds = {k: node.constants[k] for k in ("low", "high") if k in node.constants}
    common = max([x.type.frac_bits] + [c.types[0].frac_bits for c in bounds.values()])
    low = int(bounds["low"].codes) << (common - bounds["low"].types[0].frac_bits) if "low" in bounds else None
    high = int(bounds["high"].codes) << (common - bounds["high"].types[0].frac_bits) if "high" in bounds else None
    sources = []
    for e, element in enumerate(b.unpack(0, x)):
        name, lo, hi = b.align_add(f"u{e}", element, common - x.type.frac_bits, 0)
        expr, new_lo, new_hi = name, lo, hi
        if high is not None:
            top = literal(high, signed_width(high, high))
            expr = f"({name} > {top} ? {top} : {expr})"
            new_lo, new_hi = min(new_lo, high), min(new_hi, high)
        if low is not None:
            bottom = literal(low, signed_width(low, low))
            expr = f"({name} < {bottom} ? {bottom} : {expr})"
            new_lo, new_hi = max(new_lo, low), max(new_hi, low)
        sources.append((b.wire(f"r{e}", new_lo, new_hi, expr), common))
    return b.cast(sources, node.output.type, "y")


def _concat(b: Builder, node: Node, inputs: list[Value]) -> list[str]:
    axis = node.attrs["axis"]
    outer = math.prod(node.output.shape[:axis])
    parts = [(b.unpack(k, v), math.prod(v.shape[axis:]), v.type.frac_bits) for k, v in enumerate(inputs)]
    sources = [(elements[o * inner + i], frac) for o in range(outer) for elements, inner, frac in parts
               for i in range(inner)]
    return b.cast(sources, node.output.type, "y")


def _wiring(b: Builder, node: Node, inputs: list[Value], source_of) -> None:
    """``out_data`` as input 0's fields (``source_of(e)`` the input element of output ``e``, ``None``: zero)."""
    x = inputs[0]
    w = x.type.width
    b.module.input_widths.append(x.size * w)
    parts = []
    for e in range(node.output.size):
        k = source_of(e)
        parts.append(f"{w}'d0" if k is None else f"in0_data[{k * w + w - 1}:{k * w}]")
    b.module.output_width = node.output.size * w
    b.module.output = "{" + ", ".join(reversed(parts)) + "}" if len(parts) > 1 else parts[0]


def _frame(shape: tuple[int, ...]) -> tuple[int, int, int]:
    return (shape[0], 1, shape[1]) if len(shape) == 2 else tuple(shape)


def _zero_pad(b: Builder, node: Node, inputs: list[Value]) -> None:
    x = inputs[0]
    _, h, w = _frame(x.shape)
    _, oh, ow = _frame(node.output.shape)
    one_d = len(x.shape) == 2
    insert, padding = node.attrs["insert"], node.attrs["padding"]
    sh, sw = (1, insert[0]) if one_d else insert
    top, left = (0, padding[0][0]) if one_d else (padding[0][0], padding[1][0])

    def source_of(e: int):
        c, r, col = e // (oh * ow), (e // ow) % oh, e % ow
        r, col = r - top, col - left
        if r < 0 or col < 0 or r % sh or col % sw or r // sh >= h or col // sw >= w:
            return None
        return (c * h + r // sh) * w + col // sw
    _wiring(b, node, inputs, source_of)


def _upsample(b: Builder, node: Node, inputs: list[Value]) -> None:
    x = inputs[0]
    _, h, w = _frame(x.shape)
    _, oh, ow = _frame(node.output.shape)
    scale = node.attrs["scale"]
    sh, sw = (1, scale[0]) if len(x.shape) == 2 else scale
    _wiring(b, node, inputs, lambda e: (e // (oh * ow) * h + (e // ow) % oh // sh) * w + e % ow // sw)


def _mul(b: Builder, node: Node, inputs: list[Value]) -> list[str]:
    raise RTLError(f"{node.describe()}: op 'mul' multiplies two tensors, which needs a multiplier; the Verilog "
                   "back end builds only shift-and-add constant products (use the HLS back end for this network, "
                   "or multiply by a constant)")


# ---------------------------------------------------------------- pooling
def _windows(node: Node, x: Value, kernel, stride, padding, dilation) -> list[list[int]]:
    """For each output element, the input elements its window reads (padding and positions past the edge left out)."""
    c_in, h, w = x.shape
    _, oh, ow = node.output.shape
    windows = []
    for c in range(c_in):
        for r in range(oh):
            for q in range(ow):
                cells = []
                for i in range(kernel[0]):
                    for j in range(kernel[1]):
                        hh, ww = r * stride[0] + i * dilation[0] - padding[0], q * stride[1] + j * dilation[1] - padding[1]
                        if 0 <= hh < h and 0 <= ww < w:
                            cells.append((c * h + hh) * w + ww)
                windows.append(cells)
    return windows


def _maxpool(b: Builder, node: Node, inputs: list[Value]) -> list[str]:
    x = inputs[0]
    a = node.attrs
    elements = b.unpack(0, x)
    sources = []
    for o, cells in enumerate(_windows(node, x, a["kernel"], a["stride"], a["padding"], a["dilation"])):
        best = elements[cells[0]]
        for k, cell in enumerate(cells[1:]):
            name, low, high = elements[cell]
            best = b.wire(f"m{o}_{k}", max(low, best[1]), max(high, best[2]),
                          f"({name} > {best[0]} ? {name} : {best[0]})")
        sources.append((best, x.type.frac_bits))
    return b.cast(sources, node.output.type, "y")


def _average(b: Builder, node: Node, x: Value, windows: list[list[int]]) -> list[str]:
    """``sum(window) * divisor`` as one adder graph (every term's coefficient is the divisor's code)."""
    divisor = node.constants["divisor"]
    code, frac = int(divisor.codes), x.type.frac_bits + divisor.types[0].frac_bits
    sums = b.products([{cell: code for cell in cells} if code else {} for cells in windows], b.unpack(0, x))
    return b.cast([(s, frac) for s in sums], node.output.type, "y")


def _avgpool(b: Builder, node: Node, inputs: list[Value]) -> list[str]:
    a = node.attrs
    return _average(b, node, inputs[0], _windows(node, inputs[0], a["kernel"], a["stride"], a["padding"], [1, 1]))


def _global_avgpool(b: Builder, node: Node, inputs: list[Value]) -> list[str]:
    x = inputs[0]
    per_channel = x.size // x.shape[0]
    return _average(b, node, x, [list(range(c * per_channel, (c + 1) * per_channel)) for c in range(x.shape[0])])


LOWER = {"sub": _sub, "clamp": _clamp, "concat": _concat, "mul": _mul, "maxpool2d": _maxpool, "avgpool2d": _avgpool,
         "global_avgpool2d": _global_avgpool}
MOVES = {"zero_pad": _zero_pad, "upsample": _upsample}
