"""HLS planners of the structural ops (``sub``, ``mul``, ``clamp``, ``concat``, ``zero_pad``, ``upsample``): the
configuration each call into ``firmware/qfx_structure.h`` reads.  Imported by :mod:`.layers`."""

from __future__ import annotations

import math

from ..ir import Value
from .layer import HLSError, Layer, exact_result, bits_signed, code_type, frame, magnitude

__all__ = ["PLANNERS"]


def _operands(layer: Layer, a: Value, b: Value) -> None:
    layer.ints.append(("n", a.size))
    layer.types += [("a_t", f"tensor::{layer.inputs[0]}"), ("a_code_t", code_type(a.type)),
                    ("b_t", f"tensor::{layer.inputs[1]}"), ("b_code_t", code_type(b.type))]


def _sub(layer: Layer, a: Value, b: Value) -> None:
    common = max(a.type.frac_bits, b.type.frac_bits)
    sa, sb = common - a.type.frac_bits, common - b.type.frac_bits
    _operands(layer, a, b)
    layer.ints += [("a_shift", sa), ("b_shift", sb)]
    exact_result(layer, bits_signed((magnitude(a.type) << sa) + (magnitude(b.type) << sb)), common)


def _mul(layer: Layer, a: Value, b: Value) -> None:
    _operands(layer, a, b)
    exact_result(layer, bits_signed(magnitude(a.type) * magnitude(b.type)), a.type.frac_bits + b.type.frac_bits)


def _clamp(layer: Layer, x: Value) -> None:
    bounds = {k: layer.node.constants[k] for k in ("low", "high") if k in layer.node.constants}
    common = max([x.type.frac_bits] + [c.types[0].frac_bits for c in bounds.values()])
    aligned = {k: int(c.codes) << (common - c.types[0].frac_bits) for k, c in bounds.items()}
    shift = common - x.type.frac_bits
    layer.ints += [("n", x.size), ("shift", shift), ("has_low", int("low" in aligned)),
                   ("has_high", int("high" in aligned))]
    layer.codes += [("low", aligned.get("low", 0)), ("high", aligned.get("high", 0))]
    exact_result(layer, bits_signed(max([magnitude(x.type) << shift] + [abs(v) for v in aligned.values()])), common)


def _concat(layer: Layer, *inputs: Value) -> None:
    if not 2 <= len(inputs) <= 4:
        raise HLSError(f"{layer.node.describe()}: the HLS join takes 2 to 4 inputs, got {len(inputs)}; join in "
                       "several steps")
    axis = layer.node.attrs["axis"]
    out = layer.node.output
    common = max(v.type.frac_bits for v in inputs)
    layer.ints += [("outer", math.prod(out.shape[:axis])), ("stride", math.prod(out.shape[axis:]))]
    offset, bound = 0, 0
    for k, v in enumerate(inputs):
        inner = math.prod(v.shape[axis:])
        shift = common - v.type.frac_bits
        layer.ints += [(f"inner{k}", inner), (f"offset{k}", offset), (f"shift{k}", shift)]
        layer.types.append((f"in{k}_code_t", code_type(v.type)))
        offset += inner
        bound = max(bound, magnitude(v.type) << shift)
    exact_result(layer, bits_signed(bound), common)


def _moves(layer: Layer, x: Value) -> None:
    in_c, in_h, in_w = frame(x.shape)
    _, out_h, out_w = frame(layer.node.output.shape)
    layer.ints += [("in_c", in_c), ("in_h", in_h), ("in_w", in_w), ("out_h", out_h), ("out_w", out_w)]
    one_d = len(x.shape) == 2
    if layer.node.op == "upsample":
        scale = layer.node.attrs["scale"]
        sh, sw = (1, scale[0]) if one_d else scale
        layer.ints += [("scale_h", sh), ("scale_w", sw)]
    else:
        insert, padding = layer.node.attrs["insert"], layer.node.attrs["padding"]
        sh, sw = (1, insert[0]) if one_d else insert
        top, left = (0, padding[0][0]) if one_d else (padding[0][0], padding[1][0])
        layer.ints += [("insert_h", sh), ("insert_w", sw), ("pad_top", top), ("pad_left", left)]


PLANNERS = {"sub": _sub, "mul": _mul, "clamp": _clamp, "concat": _concat, "zero_pad": _moves, "upsample": _moves}
