"""QONNX export of the binarized ops and PReLU, following QONNX's bipolar convention.

A binary tensor (codes ``-1``/``+1`` of ``ap_fixed<2,2>``) is the output of
QONNX's ``BipolarQuant(x, scale=1)`` (``x >= 0 ? +1 : -1``), which is the IR's
``sign`` exactly; binary weights are stored as ``+-1`` floats read through a
``BipolarQuant``, so FINN and the ``qonnx`` tools see bipolar tensors.

============================  ===============================================================
IR op                         ONNX ops (then ``Quant`` to the output format where it casts)
============================  ===============================================================
``sign``                      ``BipolarQuant(x, 1)``
``thermometer``               ``BipolarQuant(Sub(x[:, c, None], Quant(thresholds)), 1)``, the levels
                              of a channel next to each other (``Reshape``); the sign of an IEEE
                              difference is exact (``x - t == 0`` only when ``x == t``)
``binary_dense``              ``MatMul(x, Transpose(BipolarQuant(W, 1)))``
``binary_conv1d``,            ``Conv(Pad(x, pad_value), BipolarQuant(W, 1))``: the padding is ``+1``
``binary_conv2d``             or ``-1`` as in the IR, never ONNX's implicit zero
``prelu``                     ``t = Add(x, Quant(bias))``; ``Where(t >= 0, t, Mul(t, Quant(slope)))``;
                              ``Add(., Quant(shift))``, constants shaped ``(C, 1, ...)``
============================  ===============================================================

The sums of ``N`` terms of ``+-1`` are integers, exact in float32 up to ``2**24``;
a larger ``N`` is refused naming the node.  Used by :mod:`qfx.onnx`.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from onnx import TensorProto

from .ir.graph import Constant, Node, Value
from .onnx_builder import QONNX_DOMAIN, ONNXExportError, Exact, bits_for, grid, type_range, constant_value

__all__ = ["translate"]

_BINARY = ("binary_dense", "binary_conv1d", "binary_conv2d")
_FLOAT32_INTEGERS = 2 ** 24


def _bipolar(b, x: str, shape: tuple[int, ...], base: str, batched: bool = True) -> str:
    return b.op("BipolarQuant", [x, b.scalar(1.0)], shape, base, domain=QONNX_DOMAIN, batched=batched)


def _weights(b, node: Node) -> str:
    """The ``+-1`` weights as float32 values through ``BipolarQuant``."""
    w = node.constants["weight"].codes
    values = b.initializer(f"{node.name}_weight", w.astype(np.float32))
    return _bipolar(b, values, tuple(w.shape), f"{node.name}_weight_bipolar", batched=False)


def _binary_sum(b, node: Node, x: Value, xs: str) -> str:
    """The integer ``2 * popcount(xnor) - N`` of each output, in float32."""
    w = node.constants["weight"].codes
    terms = int(np.prod(w.shape[1:]))
    if terms > _FLOAT32_INTEGERS:
        raise ONNXExportError(f"{node.describe()}: a sum of {terms} terms is not exact in float32 (QONNX's "
                              f"executor); at most {_FLOAT32_INTEGERS} are")
    shape, base = node.output.shape, f"{node.name}_exact"
    weights = _weights(b, node)
    if node.op == "binary_dense":
        transposed = b.op("Transpose", [weights], tuple(w.shape[::-1]), f"{node.name}_weight_t", batched=False,
                          perm=[1, 0])
        return b.op("MatMul", [xs, transposed], shape, base)
    a = node.attrs
    pads = a["padding"]
    padded = tuple(x.shape[:1]) + tuple(n + p[0] + p[1] for n, p in zip(x.shape[1:], pads))
    if any(p[0] or p[1] for p in pads):
        amounts = [0, 0] + [p[0] for p in pads] + [0, 0] + [p[1] for p in pads]
        xs = b.op("Pad", [xs, b.initializer(f"{node.name}_pads", np.array(amounts, np.int64)),
                          b.scalar(float(a["pad_value"]))], padded, f"{node.name}_padded", mode="constant")
    return b.op("Conv", [xs, weights], shape, base, kernel_shape=list(w.shape[2:]), strides=a["stride"],
                dilations=a["dilation"], group=a["groups"])


def _thermometer(b, node: Node, x: Value, xs: str) -> str:
    """Each channel against every level: ``(N, C, 1, ...) - (T, 1, ...)``, then levels of a channel adjacent."""
    levels = node.constants["thresholds"].codes.size
    channels, *rest = x.shape
    view = (channels, 1) + tuple(rest)
    expanded = b.op("Reshape", [xs, b.initializer(f"{node.name}_split", np.array((-1,) + view, np.int64))], view,
                    f"{node.name}_split")
    thresholds = b.constant(node, "thresholds", (levels,) + (1,) * len(rest))
    wide = (channels, levels) + tuple(rest)
    difference = b.op("Sub", [expanded, thresholds], wide, f"{node.name}_difference")
    signs = _bipolar(b, difference, wide, f"{node.name}_levels")
    return b.op("Reshape", [signs, b.initializer(f"{node.name}_joined",
                                                 np.array((-1,) + tuple(node.output.shape), np.int64))],
                node.output.shape, node.name, output=node.name)


def _prelu(b, node: Node, xs: str) -> str:
    shape = node.output.shape
    view = (int(node.constants["slope"].codes.size),) + (1,) * (len(shape) - 1)
    t = xs
    if "bias" in node.constants:
        t = b.op("Add", [t, b.constant(node, "bias", view)], shape, f"{node.name}_shifted")
    positive = b.op("GreaterOrEqual", [t, b.scalar(0.0)], shape, f"{node.name}_positive", dtype=TensorProto.BOOL)
    product = b.op("Mul", [t, b.constant(node, "slope", view)], shape, f"{node.name}_product")
    y = b.op("Where", [positive, t, product], shape, f"{node.name}_exact" if "shift" not in node.constants
             else f"{node.name}_negative")
    if "shift" in node.constants:
        y = b.op("Add", [y, b.constant(node, "shift", view)], shape, f"{node.name}_exact")
    return y


def _prelu_source(node: Node, x: Value):
    """Bounds of the exact PReLU result over every channel, its grid and the float bits it needs."""
    lo, hi = type_range(x.type)
    slope: Constant = node.constants["slope"]
    los, his, fracs, bits = [], [], [], 0
    for c in range(slope.codes.size):
        v = {role: constant_value(node.constants[role], c) if role in node.constants else Fraction(0)
             for role in ("bias", "slope", "shift")}
        ft = max(x.type.frac_bits, grid(v["bias"]) if "bias" in node.constants else x.type.frac_bits)
        t_lo, t_hi = lo + v["bias"], hi + v["bias"]
        ends = [max(t_lo, 0), max(t_hi, 0), min(t_lo, 0) * v["slope"], min(t_hi, 0) * v["slope"]]
        frac = max(ft + max(grid(v["slope"]), 0), grid(v["shift"]))
        los.append(min(ends) + v["shift"]), his.append(max(ends) + v["shift"]), fracs.append(frac)
        top = max(abs(e) for e in ends)
        bits = max(bits, bits_for(max(abs(t_lo), abs(t_hi)), ft), bits_for(top, frac), bits_for(top + abs(v["shift"]), frac))
    return Exact(min(los), max(his), max(fracs), bits)


def translate(b, node: Node, xs: list[str]) -> bool:
    """Translate ``node`` into ``b`` if it is a binarized op or ``prelu``; ``False`` for any other op."""
    if node.op not in _BINARY + ("sign", "thermometer", "prelu"):
        return False
    x = b.graph.value(node.inputs[0])
    if node.op == "sign":
        b.env[node.name] = b.op("Identity", [_bipolar(b, xs[0], x.shape, f"{node.name}_bipolar")],
                                node.output.shape, node.name, output=node.name)
    elif node.op == "thermometer":
        b.env[node.name] = _thermometer(b, node, x, xs[0])
    elif node.op == "prelu":
        y = _prelu(b, node, xs[0])
        b.env[node.name] = b.quant(y, node.output.type, _prelu_source(node, x), node.output.shape,
                                   node.describe(), output=node.name)
    else:
        terms = int(np.prod(node.constants["weight"].codes.shape[1:]))
        source = Exact(Fraction(-terms), Fraction(terms), 0, terms.bit_length())
        b.env[node.name] = b.quant(_binary_sum(b, node, x, xs[0]), node.output.type, source, node.output.shape,
                                   node.describe(), output=node.name)
    return True
