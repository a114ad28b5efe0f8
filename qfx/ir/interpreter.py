"""The reference interpreter: each op's numerics, on integer codes only.

``run(graph, x)`` is the readable definition of what every back end must
compute.  A tensor is an array of codes (NumPy int64, or Python ints where
a width needs more than 62 bits) with its format's fractional bits ``F``:
its value is ``codes * 2**-F``.  Each op forms its exact result with the
``ap_fixed`` rules (products add fractional bits, sums align binary points)
and casts it once with :func:`qfx.ir.integer.cast`.  No floating point is
used, except to read float inputs (:func:`input_codes`) and to return
values.
"""

from __future__ import annotations

from typing import Callable, Union

import numpy as np

from ..format import FixedType
from .graph import Graph, IRError, Node
from .integer import as_codes, cast, shift_left

__all__ = ["run", "run_codes", "input_codes", "values_of"]

Codes = np.ndarray


# ------------------------------------------------------------ boundaries
def input_codes(x: np.ndarray, t: FixedType) -> Codes:
    """The codes of ``t`` for float inputs ``x``: the host's (or ``QInput``'s) cast, exactly.

    Each float is split into an integer mantissa and a power of two
    (``np.frexp``, exact), then cast like any fixed-point value.  NaN and
    infinity are refused.
    """
    x = np.asarray(x, dtype=np.float64)
    if not np.isfinite(x).all():
        raise ValueError(f"input holds {int((~np.isfinite(x)).sum())} NaN or infinite values; a fixed-point "
                         f"format ({t}) cannot represent them")
    mantissa, exponent = np.frexp(x)
    codes = (mantissa * 2.0 ** 53).astype(np.int64)  # exact: |mantissa| < 1 has 53 significant bits
    return cast(codes, 53 - exponent.astype(np.int64), t)


def values_of(codes: Codes, t: FixedType) -> np.ndarray:
    """``codes * 2**-F`` as float64 (exact for formats up to 53 bits)."""
    return np.ldexp(np.asarray(codes, dtype=np.float64), -t.frac_bits)


# ------------------------------------------------------------------ ops
def _accumulate(node: Node, sums: Codes, frac: np.ndarray, axis: int) -> tuple[Codes, np.ndarray]:
    """Add the bias to dot products ``sums`` (fractional bits ``frac`` per channel along ``axis``), exactly."""
    bias = node.constants.get("bias")
    if bias is None:
        return sums, frac
    fb = bias.frac_bits()[0]
    common = np.maximum(frac, fb)
    shape = [1] * sums.ndim
    shape[axis] = -1
    b = bias.codes.reshape(shape)
    return shift_left(sums, common - frac) + shift_left(as_codes(b), common - fb), common


def _finish_dot(node: Node, sums: Codes, frac: np.ndarray, axis: int) -> Codes:
    acc, frac = _accumulate(node, sums, frac, axis)
    if "accum" in node.formats:
        acc, frac = cast(acc, frac, node.formats["accum"]), node.formats["accum"].frac_bits
    return cast(acc, frac, node.output.type)


def _matmul(a: Codes, b: Codes, bits: int) -> Codes:
    """``a @ b`` exactly: int64 when ``bits`` (an upper bound on the result's width) allows, else Python ints."""
    if bits <= 62 and a.dtype != object and b.dtype != object:
        return a @ b
    return np.matmul(a.astype(object), b.astype(object))


def _dense(node: Node, x: Codes, fx: int) -> Codes:
    w = node.constants["weight"]
    bits = _width(x) + _width(w.codes) + (w.codes.shape[1] - 1).bit_length()
    sums = _matmul(x, w.codes.T, bits)
    return _finish_dot(node, sums, fx + w.frac_bits_along(2, axis=1), axis=1)


def _width(codes: Codes) -> int:
    """Bits a code of ``codes`` needs, sign included (an upper bound)."""
    if codes.size == 0:
        return 1
    return max(abs(int(codes.max())), abs(int(codes.min()))).bit_length() + 1


def _windows(x: Codes, kernel: list[int], stride: list[int], dilation: list[int], out: tuple[int, int]) -> Codes:
    """``(N, C, KH, KW, OH, OW)``: every window of the (already padded) ``(N, C, H, W)`` input."""
    rows = []
    for i in range(kernel[0]):
        cols = []
        for j in range(kernel[1]):
            top, left = i * dilation[0], j * dilation[1]
            cols.append(x[:, :, top:top + stride[0] * (out[0] - 1) + 1:stride[0],
                          left:left + stride[1] * (out[1] - 1) + 1:stride[1]])
        rows.append(np.stack(cols, axis=2))
    return np.stack(rows, axis=2)


def _conv(node: Node, x: Codes, fx: int) -> Codes:
    w = node.constants["weight"]
    dims = w.codes.ndim - 2
    wc = w.codes if dims == 2 else w.codes[:, :, None, :]
    xs = x if dims == 2 else x[:, :, None, :]
    pad = node.attrs["padding"] if dims == 2 else [[0, 0]] + node.attrs["padding"]
    stride = node.attrs["stride"] if dims == 2 else [1] + node.attrs["stride"]
    dilation = node.attrs["dilation"] if dims == 2 else [1] + node.attrs["dilation"]
    groups = node.attrs["groups"]
    out_shape = node.output.shape if dims == 2 else (node.output.shape[0], 1, node.output.shape[1])
    xp = np.pad(xs, [(0, 0), (0, 0), tuple(pad[0]), tuple(pad[1])])
    win = _windows(xp, list(wc.shape[2:]), stride, dilation, out_shape[1:])  # N, C, KH, KW, OH, OW
    n, c = win.shape[:2]
    oc = wc.shape[0]
    k = (c // groups) * wc.shape[2] * wc.shape[3]
    cols = win.reshape(n, groups, k, -1)  # N, G, K, P
    weights = wc.reshape(groups, oc // groups, k)  # G, O/G, K
    bits = _width(x) + _width(w.codes) + (k - 1).bit_length()
    sums = _matmul(weights[None], cols, bits).reshape((n, oc) + tuple(out_shape[1:]))
    if dims == 1:
        sums = sums[:, :, 0, :]
    return _finish_dot(node, sums, fx + w.frac_bits_along(sums.ndim, axis=1), axis=1)


def _scale_shift(node: Node, x: Codes, fx: int) -> Codes:
    scale, shift = node.constants["scale"], node.constants["shift"]
    view = (1, -1) + (1,) * (x.ndim - 2)
    bits = _width(x) + _width(scale.codes)
    product = as_codes(x, bits) * scale.codes.reshape(view) if bits <= 62 else \
        x.astype(object) * scale.codes.reshape(view).astype(object)
    fp = fx + scale.frac_bits_along(x.ndim, axis=1)
    fs = shift.frac_bits_along(x.ndim, axis=1)
    common = np.maximum(fp, fs)
    total = shift_left(product, common - fp) + shift_left(as_codes(shift.codes.reshape(view)), common - fs)
    return cast(total, common, node.output.type)


def _relu(node: Node, x: Codes, fx: int) -> Codes:
    return cast(np.maximum(x, 0), fx, node.output.type)


def _relu6(node: Node, x: Codes, fx: int) -> Codes:
    common = max(fx, 0)  # 6 is an integer: representable once there are no negative fractional bits
    clamped = np.minimum(np.maximum(shift_left(x, common - fx), 0), 6 << common)
    return cast(clamped, common, node.output.type)


def _leaky_relu(node: Node, x: Codes, fx: int) -> Codes:
    slope = node.constants["slope"]
    fs = int(slope.frac_bits()[0])
    product = as_codes(x, _width(slope.codes)) * int(slope.codes)
    common = fx + max(fs, 0)
    y = np.where(x >= 0, shift_left(x, common - fx), shift_left(product, common - fx - fs))
    return cast(y, common, node.output.type)


def _add(node: Node, a: Codes, fa: int, b: Codes, fb: int) -> Codes:
    common = max(fa, fb)
    return cast(shift_left(a, common - fa) + shift_left(b, common - fb), common, node.output.type)


def _maxpool(node: Node, x: Codes, t: FixedType) -> Codes:
    kernel, stride, pad, dilation = (node.attrs[k] for k in ("kernel", "stride", "padding", "dilation"))
    out = node.output.shape[1:]
    # Padding (and, with ceil_mode, windows running past the edge) must never win: fill below every code.
    extra = [max(0, (out[d] - 1) * stride[d] + dilation[d] * (kernel[d] - 1) + 1 - x.shape[2 + d] - 2 * pad[d])
             for d in range(2)]
    xp = np.pad(x, [(0, 0), (0, 0), (pad[0], pad[0] + extra[0]), (pad[1], pad[1] + extra[1])],
                constant_values=t.code_min - 1)
    return cast(_windows(xp, kernel, stride, dilation, out).max(axis=(2, 3)), t.frac_bits, node.output.type)


def _avgpool(node: Node, x: Codes, fx: int) -> Codes:
    kernel, stride, pad = (node.attrs[k] for k in ("kernel", "stride", "padding"))
    xp = np.pad(x, [(0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])])
    sums = _windows(xp, kernel, stride, [1, 1], node.output.shape[1:]).sum(axis=(2, 3))
    return _divide(node, sums, fx)


def _global_avgpool(node: Node, x: Codes, fx: int) -> Codes:
    return _divide(node, x.sum(axis=(2, 3), keepdims=True), fx)


def _divide(node: Node, sums: Codes, fx: int) -> Codes:
    divisor = node.constants["divisor"]
    product = as_codes(sums, _width(divisor.codes)) * int(divisor.codes)
    return cast(product, fx + int(divisor.frac_bits()[0]), node.output.type)


def _flatten(node: Node, x: Codes, fx: int) -> Codes:
    return x.reshape((x.shape[0],) + tuple(node.output.shape))


def _prelu(node: Node, x: Codes, fx: int) -> Codes:
    view = (1, -1) + (1,) * (x.ndim - 2)

    def aligned_sum(a: Codes, fa, role: str) -> tuple[Codes, np.ndarray]:
        c = node.constants.get(role)
        if c is None:
            return a, fa
        fc = c.frac_bits_along(x.ndim, axis=1)
        common = np.maximum(fa, fc)
        return shift_left(a, common - fa) + shift_left(as_codes(c.codes.reshape(view)), common - fc), common

    t, ft = aligned_sum(x, np.asarray(fx), "bias")
    slope = node.constants["slope"]
    fs = slope.frac_bits_along(x.ndim, axis=1)
    bits = _width(t) + _width(slope.codes)
    product = as_codes(t, bits) * slope.codes.reshape(view) if bits <= 62 else \
        t.astype(object) * slope.codes.reshape(view).astype(object)
    common = np.maximum(ft, ft + fs)
    y = np.where(t >= 0, shift_left(t, common - ft), shift_left(product, common - ft - fs))
    y, fy = aligned_sum(y, common, "shift")
    return cast(y, fy, node.output.type)


# ------------------------------------------------------------- binary ops
# A binary tensor holds the codes -1 and +1; read as bits, 1 stands for +1.
def _sign(node: Node, x: Codes, fx: int) -> Codes:
    return np.where(x >= 0, 1, -1).astype(np.int64)


def _thermometer(node: Node, x: Codes, fx: int) -> Codes:
    thresholds = node.constants["thresholds"]
    ft = int(thresholds.frac_bits()[0])
    common = max(fx, ft)
    t = shift_left(as_codes(thresholds.codes), common - ft).reshape((1, 1, -1) + (1,) * (x.ndim - 2))
    above = shift_left(x, common - fx)[:, :, None] >= t
    return np.where(above, 1, -1).astype(np.int64).reshape((x.shape[0],) + tuple(node.output.shape))


def _xnor_sums(x: Codes, w: Codes) -> Codes:
    """``2 * popcount(xnor(x, w)) - N`` along the last axis of ``x`` (..., N) and ``w`` (..., O, N)."""
    xb, wb = (x > 0).astype(np.int64), (w > 0).astype(np.int64)
    agree = np.matmul(xb, np.swapaxes(wb, -1, -2)) + np.matmul(1 - xb, np.swapaxes(1 - wb, -1, -2))
    return 2 * agree - x.shape[-1]


def _binary_dense(node: Node, x: Codes, fx: int) -> Codes:
    return cast(_xnor_sums(x, node.constants["weight"].codes), 0, node.output.type)


def _binary_conv(node: Node, x: Codes, fx: int) -> Codes:
    w = node.constants["weight"].codes
    if w.ndim == 3:  # a 1-D convolution is a 2-D one of height 1
        w, x = w[:, :, None, :], x[:, :, None, :]
        pad, stride, dilation = [[0, 0]] + node.attrs["padding"], [1] + node.attrs["stride"], \
            [1] + node.attrs["dilation"]
        out = (1, node.output.shape[1])
    else:
        pad, stride, dilation, out = node.attrs["padding"], node.attrs["stride"], node.attrs["dilation"], \
            tuple(node.output.shape[1:])
    xp = np.pad(x, [(0, 0), (0, 0), tuple(pad[0]), tuple(pad[1])], constant_values=node.attrs["pad_value"])
    win = _windows(xp, list(w.shape[2:]), stride, dilation, out)  # N, C, KH, KW, OH, OW
    n, c, groups, oc = x.shape[0], x.shape[1], node.attrs["groups"], w.shape[0]
    k = (c // groups) * w.shape[2] * w.shape[3]
    cols = np.swapaxes(win.reshape(n, groups, k, -1), 2, 3)  # N, G, P, K
    sums = _xnor_sums(cols, w.reshape(groups, oc // groups, k)[None])  # N, G, P, O/G
    sums = np.swapaxes(sums, 2, 3).reshape((n, oc) + out)
    return cast(sums[:, :, 0, :] if node.op == "binary_conv1d" else sums, 0, node.output.type)
def _table(node: Node, x: Codes, fx: int) -> Codes:
    t = node.formats["table"]
    address = np.asarray(cast(x, fx, t)).astype(np.int64) - t.code_min
    return node.constants["table"].codes[address]


def _softmax(node: Node, x: Codes, fx: int) -> Codes:
    t, st = node.formats["table"], node.formats["accum"]
    exp, second = node.constants["exp"], node.constants["log" if node.attrs["log"] else "reciprocal"]
    fe, fr = exp.types[0].frac_bits, second.types[0].frac_bits
    d = as_codes(x, 1) - as_codes(x, 1).max(axis=1, keepdims=True)
    e = exp.codes[np.asarray(cast(d, fx, t)).astype(np.int64) - t.code_min]
    s = np.asarray(cast(e.sum(axis=1, keepdims=True), fe, st)).astype(np.int64) - st.code_min
    r = second.codes[s]
    if not node.attrs["log"]:
        return cast(e * r, fe + fr, node.output.type)
    common = max(fx, fr)
    return cast(shift_left(d, common - fx) - shift_left(r, common - fr), common, node.output.type)


_UNARY: dict[str, Callable[[Node, Codes, int], Codes]] = {
    "dense": _dense, "conv1d": _conv, "conv2d": _conv, "scale_shift": _scale_shift, "relu": _relu,
    "relu6": _relu6, "leaky_relu": _leaky_relu, "avgpool2d": _avgpool, "global_avgpool2d": _global_avgpool,
    "flatten": _flatten, "prelu": _prelu, "sign": _sign, "thermometer": _thermometer, "binary_dense": _binary_dense,
    "binary_conv1d": _binary_conv, "binary_conv2d": _binary_conv,
    "table": _table, "softmax": _softmax,
}


# ------------------------------------------------------- structural ops
def _sub(node: Node, a: Codes, fa: int, b: Codes, fb: int) -> Codes:
    common = max(fa, fb)
    return cast(shift_left(a, common - fa) - shift_left(b, common - fb), common, node.output.type)


def _mul(node: Node, a: Codes, fa: int, b: Codes, fb: int) -> Codes:
    bits = _width(a) + _width(b)
    product = as_codes(a, bits) * as_codes(b, bits) if bits <= 62 else a.astype(object) * b.astype(object)
    return cast(product, fa + fb, node.output.type)


def _clamp(node: Node, x: Codes, fx: int) -> Codes:
    bounds = {k: node.constants[k] for k in ("low", "high") if k in node.constants}
    common = max([fx] + [int(c.frac_bits()[0]) for c in bounds.values()])
    y = shift_left(x, common - fx)
    for role, c in bounds.items():
        bound = shift_left(as_codes(c.codes.reshape(())), common - int(c.frac_bits()[0]))
        y = np.maximum(y, bound) if role == "low" else np.minimum(y, bound)
    return cast(y, common, node.output.type)


def _concat(node: Node, args: list[tuple[Codes, FixedType]]) -> Codes:
    parts = [cast(codes, t.frac_bits, node.output.type) for codes, t in args]
    return np.concatenate(parts, axis=1 + node.attrs["axis"])


def _zero_pad(node: Node, x: Codes, fx: int) -> Codes:
    insert, padding = node.attrs["insert"], node.attrs["padding"]
    out = np.zeros((x.shape[0],) + tuple(node.output.shape), dtype=x.dtype)
    index = (slice(None), slice(None)) + tuple(slice(b, b + (n - 1) * s + 1, s)
                                               for n, s, (b, _) in zip(x.shape[2:], insert, padding))
    out[index] = x
    return out


def _upsample(node: Node, x: Codes, fx: int) -> Codes:
    for d, s in enumerate(node.attrs["scale"]):
        x = np.repeat(x, s, axis=2 + d)
    return x


_STRUCTURE_BINARY = {"sub": _sub, "mul": _mul}
_STRUCTURE_UNARY = {"clamp": _clamp, "zero_pad": _zero_pad, "upsample": _upsample}


def _execute(node: Node, args: list[tuple[Codes, FixedType]]) -> Codes:
    if node.op == "concat":
        return _concat(node, args)
    if node.op in _STRUCTURE_BINARY:
        (a, ta), (b, tb) = args
        return _STRUCTURE_BINARY[node.op](node, a, ta.frac_bits, b, tb.frac_bits)
    if node.op in _STRUCTURE_UNARY:
        (x, t), = args
        return _STRUCTURE_UNARY[node.op](node, x, t.frac_bits)
    if node.op == "add":
        (a, ta), (b, tb) = args
        return _add(node, a, ta.frac_bits, b, tb.frac_bits)
    (x, t), = args
    if node.op == "maxpool2d":
        return _maxpool(node, x, t)
    return _UNARY[node.op](node, x, t.frac_bits)


# ----------------------------------------------------------------- run
def run_codes(graph: Graph, inputs: Union[Codes, list[Codes]]) -> dict[str, Codes]:
    """Every tensor's codes, by name, for input codes (one batch-first array per graph input)."""
    graph.check()  # the op rules and limits every back end shares, before any work
    arrays = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
    if len(arrays) != len(graph.inputs):
        raise ValueError(f"graph '{graph.name}' takes {len(graph.inputs)} input(s), got {len(arrays)}")
    env: dict[str, tuple[Codes, FixedType]] = {}
    for value, codes in zip(graph.inputs, arrays):
        codes = as_codes(codes)
        if tuple(codes.shape[1:]) != value.shape:
            raise ValueError(f"input '{value.name}' takes shape (N, {', '.join(map(str, value.shape))}), got "
                             f"{tuple(codes.shape)}")
        if codes.size and (int(codes.min()) < value.type.code_min or int(codes.max()) > value.type.code_max):
            raise ValueError(f"input '{value.name}' holds codes outside its format {value.type}")
        env[value.name] = (codes, value.type)
    batch = arrays[0].shape[0] if arrays else 0
    for node in graph.nodes:
        if batch == 0:  # an empty batch gives empty tensors (ops that reshape by -1 cannot run on it)
            env[node.name] = (np.zeros((0,) + tuple(node.output.shape), dtype=np.int64), node.output.type)
            continue
        try:
            result = _execute(node, [env[name] for name in node.inputs])
        except (KeyError, IndexError, ValueError) as error:
            raise IRError(f"{node.describe()}: cannot run it: {error}") from error
        env[node.name] = (result, node.output.type)
    return {name: codes for name, (codes, _) in env.items()}


def run(graph: Graph, *inputs: np.ndarray, codes: bool = False) -> Union[np.ndarray, tuple[np.ndarray, ...]]:
    """Run ``graph`` on a batch: float inputs (cast to the input formats), or codes when ``codes=True``.

    Returns the output values as float64 (exact up to 53-bit formats), or
    the output codes when ``codes=True``; one array, or a tuple for several
    outputs.
    """
    arrays = [np.asarray(x) for x in inputs]
    if not codes:
        arrays = [input_codes(x, v.type) for x, v in zip(arrays, graph.inputs)]
    env = run_codes(graph, arrays)
    outs = [env[name] if codes else values_of(env[name], v.type)
            for name, v in zip(graph.outputs, graph.output_values)]
    return outs[0] if len(outs) == 1 else tuple(outs)
