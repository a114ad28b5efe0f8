"""QONNX export of the lookup-table ops: ``table`` and ``softmax`` (and log-softmax), each table a ``Gather``.

A table is addressed by its input cast to the table's format: a ``Quant``
to that format, its code (``Mul`` by ``2**F``, ``Sub`` of the lowest code,
``Cast`` to int64) indexes a ``Gather`` over the table's values.

============================  ===============================================================
IR op                         ONNX ops (then ``Quant`` to the output format)
============================  ===============================================================
``table``                     ``Gather(values, index(Quant_table(x)))``
``softmax``                   in float64: ``d = Sub(x, ReduceMax(x))``;
                              ``e = Gather(exp, index(Quant_table(d)))``;
                              ``s = Quant_accum(ReduceSum(e))``; ``Mul(e, Gather(reciprocal,
                              index(s)))``, or ``Sub(d, Gather(log, index(s)))`` for log-softmax
============================  ===============================================================

The softmax runs in float64 (``Cast`` of the input, tables stored as
float64): its product of two 16-bit table entries, and the sum of the exp
entries, need more than float32's 24 bits.  Float64 holds them exactly up
to 53 bits, and QONNX's ``Quant`` casts a float64 input exactly (its
executor computes in the input's dtype and returns float32, which holds
every format of at most 24 bits).  So the softmax is bit-exact under the
``qonnx`` executor, each step the same cast as the IR's.  Used by
:mod:`qfx.onnx`.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from onnx import TensorProto

from .format import FixedType
from .ir.graph import Node
from .onnx_builder import Builder, bits_for, float32_exact, type_range, stored, Exact

__all__ = ["translate"]

_FLOAT64_BITS = 53


def _index(b: Builder, q: str, t: FixedType, shape: tuple[int, ...], base: str) -> str:
    """The int64 table address of ``q``, a tensor already in format ``t``: ``q * 2**F - code_min``."""
    code = b.op("Mul", [q, b.scalar(2.0 ** t.frac_bits)], shape, f"{base}_code")
    address = b.op("Sub", [code, b.scalar(float(t.code_min))], shape, f"{base}_address")
    return b.op("Cast", [address], shape, f"{base}_index", dtype=TensorProto.INT64, to=TensorProto.INT64)


def _values(node: Node, role: str, dtype: type) -> np.ndarray:
    """The entries of table ``role`` as values (codes times ``2**-F``) of ``dtype``."""
    c = node.constants[role]
    return np.ldexp(c.codes.astype(np.float64), -c.types[0].frac_bits).astype(dtype)


def _table(b: Builder, node: Node, x: str) -> str:
    """``Gather(table values, Cast(Quant_table(x) * 2**F - code_min))``, then a ``Quant`` of the output format."""
    value, t, out = b.graph.value(node.inputs[0]), node.formats["table"], node.output.type
    shape = value.shape
    index = b.quant(x, t, stored(value.type), shape, f"{node.describe()}: table input")
    index = _index(b, index, t, shape, node.name)
    if not float32_exact(out, None):
        b.inexact.append(f"{node.describe()}: table")
    y = b.op("Gather", [b.initializer(f"{node.name}_table", _values(node, "table", np.float32)), index], shape,
             f"{node.name}_exact", axis=0)
    return b.quant(y, out, stored(out), shape, node.describe(), output=node.name)


def _softmax(b: Builder, node: Node, x: str) -> str:
    """The IR's softmax pipeline in float64 ONNX ops, a ``Quant`` at each of its casts (see the module docstring)."""
    value, t, st, out = b.graph.value(node.inputs[0]), node.formats["table"], node.formats["accum"], node.output.type
    shape, reduced = value.shape, (1,) + tuple(value.shape[1:])
    log = node.attrs["log"]
    second = "log" if log else "reciprocal"
    exp_t, second_t = node.constants["exp"].types[0], node.constants[second].types[0]
    double = TensorProto.DOUBLE
    lo, hi = type_range(value.type)
    fx = value.type.frac_bits

    xd = b.op("Cast", [x], shape, f"{node.name}_double", dtype=double, to=double)
    top = b.op("ReduceMax", [xd], reduced, f"{node.name}_max", dtype=double, axes=[1], keepdims=1)
    d = b.op("Sub", [xd, top], shape, f"{node.name}_shifted", dtype=double)
    d_source = Exact(lo - hi, Fraction(0), fx, bits_for(hi - lo, fx))
    q = b.quant(d, t, d_source, shape, f"{node.describe()}: exp table input", source_bits=_FLOAT64_BITS)
    e = b.op("Gather", [b.initializer(f"{node.name}_exp", _values(node, "exp", np.float64)),
                        _index(b, q, t, shape, f"{node.name}_exp")], shape, f"{node.name}_exp", dtype=double,
             axis=0)

    terms = shape[0]
    e_lo, e_hi = type_range(exp_t)
    total = b.op("ReduceSum", [e, b.initializer(f"{node.name}_axes", np.array([1], np.int64))], reduced,
                 f"{node.name}_sum", dtype=double, keepdims=1)
    s_lo, s_hi = terms * min(e_lo, 0), terms * max(e_hi, 0)
    s_source = Exact(s_lo, s_hi, exp_t.frac_bits, bits_for(max(-s_lo, s_hi), exp_t.frac_bits))
    s = b.quant(total, st, s_source, reduced, f"{node.describe()}: sum", source_bits=_FLOAT64_BITS)
    r = b.op("Gather", [b.initializer(f"{node.name}_{second}", _values(node, second, np.float64)),
                        _index(b, s, st, reduced, f"{node.name}_{second}")], reduced, f"{node.name}_{second}",
             dtype=double, axis=0)

    r_lo, r_hi = type_range(second_t)
    if log:
        frac = max(fx, second_t.frac_bits)
        y_source = Exact(lo - hi - r_hi, -r_lo, frac, bits_for(max(hi - lo + r_hi, abs(r_lo)), frac))
        y = b.op("Sub", [d, r], shape, f"{node.name}_exact", dtype=double)
    else:
        frac = exp_t.frac_bits + second_t.frac_bits
        ends = [a * c for a in (e_lo, e_hi) for c in (r_lo, r_hi)]
        y_source = Exact(min(ends), max(ends), frac, exp_t.width + second_t.width)
        y = b.op("Mul", [e, r], shape, f"{node.name}_exact", dtype=double)
    return b.quant(y, out, y_source, shape, node.describe(), output=node.name, source_bits=_FLOAT64_BITS)


def translate(b: Builder, node: Node, xs: list[str]) -> bool:
    """Translate ``node`` into ``b`` if it is ``table`` or ``softmax``; ``False`` for any other op."""
    if node.op == "table":
        b.env[node.name] = _table(b, node, xs[0])
    elif node.op == "softmax":
        b.env[node.name] = _softmax(b, node, xs[0])
    else:
        return False
    return True
