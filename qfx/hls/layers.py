"""Each IR node as a call into the C++ layer library: its configuration struct and its constant arrays.

A layer computes the exact code of its result in an ``ap_int`` and casts it
once (see ``hls_templates/firmware/qfx_layers.h``).  This module decides,
from the node's formats and its actual constant codes, everything that makes
that exact: the binary point of the exact result, every constant's code
aligned to it, and a width that holds every partial sum for any input codes.
Per-channel formats are aligned here, so the C++ sees one binary point per
layer.  Weights whose codes all have at most :data:`KHOT_MAX_DIGITS` nonzero
canonical-signed-digit digits become digit tables (shift-and-add, no DSP).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..format import FixedType
from ..ir import Graph, Value
from .binary import PLANNERS as _BINARY_PLANNERS
from .layer import (KHOT_MAX_DIGITS, MAX_TENSOR_WIDTH, ArrayConstant, HLSError, Layer, bits_signed, c_array,
                    cast_source, code_type, csd_digits, exact_result, frame, int_type, magnitude)
from .structure import PLANNERS as _STRUCTURE_PLANNERS

__all__ = ["Layer", "ArrayConstant", "plan_layers", "frame", "csd_digits", "KHOT_MAX_DIGITS", "HLSError"]


def _aligned(codes: np.ndarray, fracs: np.ndarray, target: int) -> np.ndarray:
    """Codes (dimension 0 the channel) shifted left so that every channel has ``target`` fractional bits."""
    shifts = (target - fracs).astype(object).reshape((-1,) + (1,) * (codes.ndim - 1))
    return codes.astype(object) * (np.ones_like(shifts) << shifts)


# ---------------------------------------------------------------- ops
def _dot(layer: Layer, x: FixedType, weights: np.ndarray, weight_fracs: np.ndarray, count_shape: tuple) -> None:
    """Dense and convolution: aligned weight codes (or digit tables), aligned bias, the exact width."""
    node = layer.node
    bias = node.constants.get("bias")
    frac = max(x.frac_bits + int(weight_fracs.max()), bias.types[0].frac_bits if bias is not None else -10**9)
    w = _aligned(weights, weight_fracs, frac - x.frac_bits).reshape(count_shape)
    b = (_aligned(bias.codes, bias.frac_bits(), frac) if bias is not None
         else np.zeros(count_shape[0], dtype=object))
    digits = [[csd_digits(v) for v in row] for row in w.tolist()]
    k = max((len(d) for row in digits for d in row), default=0)
    if 0 < k <= KHOT_MAX_DIGITS:
        layer.khot_digits = k
        size = np.array([[sum(1 << p for _, p in d) for d in row] for row in digits], dtype=object)
        cells = ["{{" + ", ".join(str(s) for s, _ in d + [(0, 0)] * (k - len(d))) + "}, {"
                 + ", ".join(str(p) for _, p in d + [(0, 0)] * (k - len(d))) + "}}" for row in digits for d in row]
        rows = [cells[i * w.shape[1]:(i + 1) * w.shape[1]] for i in range(w.shape[0])]
        init = "{" + ",\n    ".join("{" + ", ".join(r) + "}" for r in rows) + "}"
        layer.arrays.append(ArrayConstant(f"qfx::csd<{k}>", f"{layer.name}_weight", w.shape, init))
    else:
        size = np.abs(w)
        layer.types.append(("weight_code_t", int_type(w)))
        layer.arrays.append(ArrayConstant("weight_code_t", f"{layer.name}_weight", w.shape, c_array(w)))
    bound = max(abs(int(b[o])) + int(size[o].sum()) * magnitude(x) for o in range(w.shape[0]))
    layer.types.append(("bias_code_t", int_type(b)))
    layer.arrays.append(ArrayConstant("bias_code_t", f"{layer.name}_bias", b.shape, c_array(b)))
    exact_result(layer, bits_signed(bound), frac)


def _dense(layer: Layer, x: Value) -> None:
    w = layer.node.constants["weight"]
    layer.ints += [("n_in", x.shape[0]), ("n_out", w.codes.shape[0])]
    _dot(layer, x.type, w.codes, w.frac_bits() if w.per_channel else np.full(w.codes.shape[0], w.types[0].frac_bits),
         w.codes.shape)


def _conv(layer: Layer, x: Value) -> None:
    node, w = layer.node, layer.node.constants["weight"]
    two_d = w.codes.ndim == 4
    kernel = w.codes.shape[2:] if two_d else (1,) + w.codes.shape[2:]
    in_c, in_h, in_w = frame(x.shape)
    _, out_h, out_w = frame(node.output.shape)
    pad = node.attrs["padding"] if two_d else [[0, 0]] + node.attrs["padding"]
    stride = node.attrs["stride"] if two_d else [1] + node.attrs["stride"]
    dilation = node.attrs["dilation"] if two_d else [1] + node.attrs["dilation"]
    out_c, k = w.codes.shape[0], int(np.prod(w.codes.shape[1:]))
    layer.ints += [("in_c", in_c), ("in_h", in_h), ("in_w", in_w), ("out_c", out_c), ("out_h", out_h),
                   ("out_w", out_w), ("kh", kernel[0]), ("kw", kernel[1]), ("k", k), ("groups", node.attrs["groups"]),
                   ("stride_h", stride[0]), ("stride_w", stride[1]), ("dil_h", dilation[0]), ("dil_w", dilation[1]),
                   ("pad_top", pad[0][0]), ("pad_bottom", pad[0][1]), ("pad_left", pad[1][0]),
                   ("pad_right", pad[1][1]), ("span_h", dilation[0] * (kernel[0] - 1) + 1)]
    layer.function, layer.streams_natively = "conv2d", True
    fracs = w.frac_bits() if w.per_channel else np.full(out_c, w.types[0].frac_bits)
    _dot(layer, x.type, w.codes, fracs, (out_c, k))


def _scale_shift(layer: Layer, x: Value) -> None:
    scale, shift = layer.node.constants["scale"], layer.node.constants["shift"]
    channels = x.shape[0]
    scale_fracs = scale.frac_bits() * np.ones(channels, dtype=np.int64)
    shift_fracs = shift.frac_bits() * np.ones(channels, dtype=np.int64)
    frac = max(x.type.frac_bits + int(scale_fracs.max()), int(shift_fracs.max()))
    s = _aligned(scale.codes, scale_fracs, frac - x.type.frac_bits)
    b = _aligned(shift.codes, shift_fracs, frac)
    bound = max(abs(int(s[c])) * magnitude(x.type) + abs(int(b[c])) for c in range(channels))
    layer.ints += [("n", x.size), ("channels", channels), ("spatial", x.size // channels)]
    layer.types += [("scale_code_t", int_type(s)), ("shift_code_t", int_type(b))]
    layer.arrays += [ArrayConstant("scale_code_t", f"{layer.name}_scale", s.shape, c_array(s)),
                     ArrayConstant("shift_code_t", f"{layer.name}_shift", b.shape, c_array(b))]
    exact_result(layer, bits_signed(bound), frac)


def _relu(layer: Layer, x: Value) -> None:
    layer.ints.append(("n", x.size))
    exact_result(layer, bits_signed(magnitude(x.type)), x.type.frac_bits)


def _relu6(layer: Layer, x: Value) -> None:
    common = max(x.type.frac_bits, 0)  # 6 is a code once no fractional bits are negative
    shift = common - x.type.frac_bits
    layer.ints += [("n", x.size), ("shift", shift)]
    layer.codes.append(("six", 6 << common))
    exact_result(layer, bits_signed(max(magnitude(x.type) << shift, 6 << common)), common)


def _leaky_relu(layer: Layer, x: Value) -> None:
    slope = layer.node.constants["slope"]
    fs, code = int(slope.frac_bits()[0]), int(slope.codes)
    common = x.type.frac_bits + max(fs, 0)
    positive, negative = common - x.type.frac_bits, common - x.type.frac_bits - fs
    layer.ints += [("n", x.size), ("positive_shift", positive), ("negative_shift", negative)]
    layer.codes.append(("slope", code))
    m = magnitude(x.type)
    exact_result(layer, bits_signed(max(m << positive, (m * abs(code)) << negative, m * abs(code))), common)


def _add(layer: Layer, a: Value, b: Value) -> None:
    common = max(a.type.frac_bits, b.type.frac_bits)
    sa, sb = common - a.type.frac_bits, common - b.type.frac_bits
    layer.ints += [("n", a.size), ("a_shift", sa), ("b_shift", sb)]
    layer.types += [("a_t", f"tensor::{layer.inputs[0]}"), ("a_code_t", code_type(a.type)),
                    ("b_t", f"tensor::{layer.inputs[1]}"), ("b_code_t", code_type(b.type))]
    exact_result(layer, bits_signed((magnitude(a.type) << sa) + (magnitude(b.type) << sb)), common)


def _pool_sizes(layer: Layer, x: Value, kernel, stride, padding) -> None:
    in_c, in_h, in_w = frame(x.shape)
    _, out_h, out_w = frame(layer.node.output.shape)
    layer.ints += [("in_c", in_c), ("in_h", in_h), ("in_w", in_w), ("out_h", out_h), ("out_w", out_w),
                   ("kh", kernel[0]), ("kw", kernel[1]), ("stride_h", stride[0]), ("stride_w", stride[1]),
                   ("pad_h", padding[0]), ("pad_w", padding[1])]


def _maxpool(layer: Layer, x: Value) -> None:
    a = layer.node.attrs
    _pool_sizes(layer, x, a["kernel"], a["stride"], a["padding"])
    layer.ints += [("dil_h", a["dilation"][0]), ("dil_w", a["dilation"][1])]
    layer.codes.append(("lowest", x.type.code_min - 1))  # below every code: a window's first element wins
    exact_result(layer, bits_signed(magnitude(x.type) + 1), x.type.frac_bits)


def _avgpool(layer: Layer, x: Value, kernel, stride, padding) -> None:
    divisor = layer.node.constants["divisor"]
    code = int(divisor.codes)
    total = kernel[0] * kernel[1] * magnitude(x.type)
    _pool_sizes(layer, x, kernel, stride, padding)
    layer.function = "avgpool2d"
    layer.types += [("sum_code_t", f"ap_int<{bits_signed(total)}>"),
                    ("divisor_code_t", f"ap_int<{bits_signed(abs(code))}>")]
    layer.codes.append(("divisor", code))
    exact_result(layer, bits_signed(total * abs(code)), x.type.frac_bits + int(divisor.frac_bits()[0]))


def _window_avgpool(layer: Layer, x: Value) -> None:
    a = layer.node.attrs
    _avgpool(layer, x, a["kernel"], a["stride"], a["padding"])


def _global_avgpool(layer: Layer, x: Value) -> None:
    _, h, w = frame(x.shape)
    _avgpool(layer, x, [h, w], [1, 1], [0, 0])


def _flatten(layer: Layer, x: Value) -> None:
    layer.function = "copy"
    layer.ints.append(("n", x.size))


def _table(layer: Layer, x: Value) -> None:
    """A ROM of output codes addressed by ``x`` cast to the table's input format."""
    t, table = layer.node.formats["table"], layer.node.constants["table"]
    exact = cast_source(x.type.width, x.type.frac_bits, x.type.signed, t)
    layer.function = "lookup"
    layer.ints += [("n", x.size), ("entries", table.codes.size), ("exact_shift", exact.frac_bits - x.type.frac_bits)]
    layer.codes.append(("lowest", t.code_min))
    layer.types += [("exact_bits_t", code_type(exact)), ("exact_t", str(exact)), ("index_t", str(t)),
                    ("index_code_t", code_type(t)), ("address_t", f"ap_uint<{t.width}>")]
    layer.arrays.append(ArrayConstant("out_code_t", f"{layer.name}_table", table.codes.shape, c_array(table.codes)))


def _softmax(layer: Layer, x: Value) -> None:
    """Both tables as ROMs; every intermediate an exact ``ap_int`` cast by one ``ap_fixed`` assignment."""
    node = layer.node
    log = node.attrs["log"]
    t, st = node.formats["table"], node.formats["accum"]
    exp, second = node.constants["exp"], node.constants["log" if log else "reciprocal"]
    et, rt = exp.types[0], second.types[0]
    fx, fe, fr = x.type.frac_bits, et.frac_bits, rt.frac_bits
    channels = x.shape[0]
    diff_width = x.type.width + 2  # the difference of two codes, signed
    total_width = et.width + 1 + (channels - 1).bit_length()
    common = max(fx, fr) if log else fe + fr
    result_width = (max(diff_width + common - fx, rt.width + 1 + common - fr) + 1 if log
                    else et.width + rt.width + 2)
    diff = cast_source(diff_width, fx, True, t)
    total = cast_source(total_width, fe, True, st)
    result = cast_source(result_width, common, True, node.output.type)
    layer.function = "softmax"
    layer.ints += [("n", x.size), ("channels", channels), ("positions", x.size // channels), ("log", int(log)),
                   ("exp_entries", exp.codes.size), ("second_entries", second.codes.size),
                   ("diff_shift", diff.frac_bits - fx), ("total_shift", total.frac_bits - fe),
                   ("result_shift", result.frac_bits - common), ("up_d", common - fx if log else 0),
                   ("up_r", common - fr if log else 0)]
    layer.codes += [("table_lowest", t.code_min), ("sum_lowest", st.code_min)]
    layer.types += [("diff_code_t", f"ap_int<{diff_width}>"), ("diff_bits_t", code_type(diff)), ("diff_t", str(diff)),
                    ("table_t", str(t)), ("table_code_t", code_type(t)), ("table_address_t", f"ap_uint<{t.width}>"),
                    ("exp_code_t", code_type(et)), ("total_code_t", f"ap_int<{total_width}>"),
                    ("total_bits_t", code_type(total)), ("total_t", str(total)), ("sum_t", str(st)),
                    ("sum_code_t", code_type(st)), ("sum_address_t", f"ap_uint<{st.width}>"),
                    ("second_code_t", code_type(rt)), ("result_code_t", f"ap_int<{result_width}>"),
                    ("result_bits_t", code_type(result)), ("result_t", str(result))]
    layer.arrays += [ArrayConstant("exp_code_t", f"{layer.name}_exp", exp.codes.shape, c_array(exp.codes)),
                     ArrayConstant("second_code_t", f"{layer.name}_second", second.codes.shape,
                                   c_array(second.codes))]


#: Each IR op's planner: it fills the layer's function, types and constants from the node and its inputs.
_PLANNERS = {
    "dense": _dense, "conv1d": _conv, "conv2d": _conv, "scale_shift": _scale_shift, "relu": _relu,
    "relu6": _relu6, "leaky_relu": _leaky_relu, "add": _add, "maxpool2d": _maxpool,
    "avgpool2d": _window_avgpool, "global_avgpool2d": _global_avgpool, "flatten": _flatten,
    "table": _table, "softmax": _softmax, **_STRUCTURE_PLANNERS, **_BINARY_PLANNERS,
}


def _plan_node(layer: Layer, inputs: list[Value]) -> None:
    planner = _PLANNERS.get(layer.node.op)
    if planner is None:
        raise HLSError(f"{layer.node.describe()}: op '{layer.node.op}' has no HLS layer")
    planner(layer, *inputs)


def plan_layers(graph: Graph, names: dict[str, str], reuse: Optional[dict[str, int]] = None) -> list[Layer]:
    """One :class:`Layer` per node of ``graph``; ``names`` gives C identifiers, ``reuse`` an II per node name."""
    reuse = dict(reuse or {})
    unknown = sorted(set(reuse) - {n.name for n in graph.nodes} - {"*"})
    if unknown:
        raise HLSError(f"reuse factor given for '{unknown[0]}', which is not a node of graph '{graph.name}'")
    values = graph.values()
    for value in values.values():
        if value.type.width > MAX_TENSOR_WIDTH:
            raise HLSError(f"tensor '{value.name}' has format {value.type}, wider than {MAX_TENSOR_WIDTH} bits; "
                           "narrow its quantizer")
        frame(value.shape)
    layers = []
    for index, node in enumerate(graph.nodes):
        inputs = [values[i] for i in node.inputs]
        name = names[node.name]
        layer = Layer(node, name, node.op, [names[i] for i in node.inputs], index)
        factor = reuse.get(node.name, reuse.get("*", 1))
        if not isinstance(factor, int) or factor < 1:
            raise HLSError(f"{node.describe()}: reuse factor must be an integer >= 1, got {factor!r}")
        layer.ints.append(("reuse", factor))
        layer.ints.append(("trace_id", index))
        layer.types += [("in_t", f"tensor::{layer.inputs[0]}"), ("in_code_t", code_type(inputs[0].type)),
                        ("out_t", f"tensor::{name}"), ("out_code_t", code_type(node.output.type))]
        _plan_node(layer, inputs)
        layers.append(layer)
    return layers
