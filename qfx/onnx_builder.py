"""What the QONNX export builds on: exact bounds of every node's result (to decide where a ``Quant`` is exact
in float32), the ``Quant`` attributes of a format, and :class:`Builder`, which collects ONNX nodes and
initializers.  :mod:`qfx.onnx` translates the IR's ops with it; :mod:`qfx.onnx_binary` and
:mod:`qfx.onnx_tables` the binarized ops and the lookup tables.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from typing import Optional, Sequence, Union

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .format import FixedType, Overflow, Rounding
from .ir.graph import Constant, Graph, Node, Value

QONNX_DOMAIN = "qonnx.custom_op.general"  #: the domain of QONNX's ``Quant``
OPSET = 13  #: the standard ONNX opset the model imports

#: ap_fixed rounding modes with an exact QONNX ``rounding_mode``.
ROUNDING_MODES = {Rounding.RND_CONV: "ROUND", Rounding.TRN: "FLOOR", Rounding.TRN_ZERO: "DOWN",
                  Rounding.RND_INF: "HALF_UP", Rounding.RND_ZERO: "HALF_DOWN"}
FLOAT32_BITS = 24


class ONNXExportError(ValueError):
    """A graph QONNX cannot express; the message names the tensor, its format and what to change."""


# --------------------------------------------------------- exact bounds
@dataclasses.dataclass(frozen=True)
class Exact:
    """The exact value a cast reads: bounds on it, the grid ``2**-frac`` it lies on, and the float bits it needs.

    ``bits`` is the most significant bits any float result computing it
    needs (partial sums included), on its own grid.
    """

    lo: Fraction
    hi: Fraction
    frac: int
    bits: int


def pow2(e: int) -> Fraction:
    return Fraction(2) ** e


def bits_for(magnitude: Fraction, frac: int) -> int:
    """Significant bits of the largest multiple of ``2**-frac`` up to ``magnitude``."""
    return math.floor(abs(magnitude) * pow2(frac)).bit_length()


def grid(value: Fraction) -> int:
    """The fewest fractional bits that hold ``value`` (negative for an even integer): a product's grid."""
    if value == 0:
        return 0
    top, bottom = value.numerator, value.denominator  # bottom is a power of two
    return bottom.bit_length() - 1 - ((top & -top).bit_length() - 1)


def type_range(t: FixedType) -> tuple[Fraction, Fraction]:
    return t.code_min * pow2(-t.frac_bits), t.code_max * pow2(-t.frac_bits)


def stored(t: FixedType) -> Exact:
    """A tensor already in format ``t``."""
    lo, hi = type_range(t)
    return Exact(lo, hi, t.frac_bits, t.width)


def constant_value(c: Constant, channel: int = 0) -> Fraction:
    """The one value of a scalar constant, or channel ``channel`` of a per-channel one of shape ``(C,)``."""
    return int(c.codes.reshape(-1)[channel]) * pow2(-c.type_of(channel).frac_bits)


def dot_bounds(node: Node, x: FixedType) -> Exact:
    """Bounds of ``sum x * w + b`` over the output channels; any term may be zero (padding)."""
    w, bias = node.constants["weight"], node.constants.get("bias")
    lo_x, hi_x = type_range(x)
    low, high, top = min(lo_x, 0), max(hi_x, 0), max(-lo_x, hi_x)
    los, his, fracs, bits = [], [], [], 0
    for o in range(w.codes.shape[0]):
        codes = (w.codes[o]).astype(object).reshape(-1)
        fw = w.type_of(o).frac_bits
        pos, neg = sum(c for c in codes if c > 0), sum(c for c in codes if c < 0)
        lo = (pos * low + neg * high) * pow2(-fw)
        hi = (pos * high + neg * low) * pow2(-fw)
        magnitude = (pos - neg) * top * pow2(-fw)
        frac = x.frac_bits + fw
        if bias is not None:
            b = constant_value(bias, o)
            lo, hi, magnitude = lo + b, hi + b, magnitude + abs(b)
            frac = max(frac, bias.types[0].frac_bits)
        los.append(lo), his.append(hi), fracs.append(frac)
        bits = max(bits, bits_for(magnitude, frac))
    return Exact(min(los), max(his), max(fracs), bits)


def scale_shift_bounds(node: Node, x: FixedType) -> Exact:
    scale, shift = node.constants["scale"], node.constants["shift"]
    lo_x, hi_x = type_range(x)
    los, his, fracs, bits = [], [], [], 0
    for c in range(scale.codes.shape[0]):
        s, t = constant_value(scale, c), constant_value(shift, c)
        products = (lo_x * s, hi_x * s)
        fp = x.frac_bits + grid(s)
        frac = max(fp, grid(t))
        los.append(min(products) + t), his.append(max(products) + t), fracs.append(frac)
        top = max(abs(p) for p in products)
        bits = max(bits, bits_for(top, fp), bits_for(top + abs(t), frac))
    return Exact(min(los), max(his), max(fracs), bits)


def scaled_bounds(node: Node, lo: Fraction, hi: Fraction, frac: int, sum_bits: int) -> Exact:
    """Bounds of ``[lo, hi] * divisor`` (pooling)."""
    d = constant_value(node.constants["divisor"])
    fd = grid(d)
    products = (lo * d, hi * d)
    return Exact(min(products), max(products), frac + fd,
                  max(sum_bits, bits_for(max(abs(p) for p in products), frac + fd)))


def structure_source_bounds(node: Node, inputs: list[Value]) -> Optional[Exact]:
    """The exact value ``sub``, ``mul`` or ``clamp`` casts; ``None`` for other ops."""
    if node.op not in ("sub", "mul", "clamp"):
        return None
    x = inputs[0].type
    lo, hi = type_range(x)
    if node.op == "sub":
        y = inputs[1].type
        lo_y, hi_y = type_range(y)
        frac = max(x.frac_bits, y.frac_bits)
        return Exact(lo - hi_y, hi - lo_y, frac, bits_for(max(hi_y - lo, hi - lo_y), frac))
    if node.op == "mul":
        y = inputs[1].type
        ends = [a * c for a in (lo, hi) for c in type_range(y)]
        return Exact(min(ends), max(ends), x.frac_bits + y.frac_bits, x.width + y.width)
    bounds = {k: constant_value(node.constants[k]) for k in ("low", "high") if k in node.constants}
    frac = max([x.frac_bits] + [grid(v) for v in bounds.values()])
    clip = [min(max(v, bounds.get("low", v)), bounds.get("high", v)) for v in (lo, hi)]
    return Exact(clip[0], clip[1], frac, bits_for(max(abs(clip[0]), abs(clip[1])), frac))


def source_bounds(node: Node, inputs: list[Value]) -> Exact:
    """The exact value ``node`` casts to its output format (before the accumulator cast, if any)."""
    structural = structure_source_bounds(node, inputs)
    if structural is not None:
        return structural
    x = inputs[0].type
    lo, hi = type_range(x)
    if node.op in ("dense", "conv1d", "conv2d"):
        return dot_bounds(node, x)
    if node.op == "scale_shift":
        return scale_shift_bounds(node, x)
    if node.op == "relu":
        return Exact(max(lo, 0), max(hi, 0), x.frac_bits, x.width)
    if node.op == "relu6":
        lo, hi = min(max(lo, 0), 6), min(max(hi, 0), 6)
        return Exact(lo, hi, max(x.frac_bits, 0), bits_for(hi, max(x.frac_bits, 0)))
    if node.op == "leaky_relu":
        slope = node.constants["slope"]
        s = constant_value(slope)
        fs = grid(s)
        ends = [max(lo, 0), max(hi, 0), min(lo, 0) * s, min(hi, 0) * s]
        return Exact(min(ends), max(ends), x.frac_bits + max(fs, 0),
                      max(x.width, bits_for(max(-lo, hi) * s, x.frac_bits + fs)))
    if node.op == "add":
        y = inputs[1].type
        lo_y, hi_y = type_range(y)
        frac = max(x.frac_bits, y.frac_bits)
        return Exact(lo + lo_y, hi + hi_y, frac, bits_for(max(-lo - lo_y, hi + hi_y), frac))
    if node.op == "maxpool2d":
        return stored(x)
    if node.op == "avgpool2d":
        n = math.prod(node.attrs["kernel"])
        lo_s, hi_s = n * min(lo, 0), n * max(hi, 0)  # zero padding may stand for any term
        return scaled_bounds(node, lo_s, hi_s, x.frac_bits, bits_for(max(-lo_s, hi_s), x.frac_bits))
    if node.op == "global_avgpool2d":
        n = math.prod(inputs[0].shape[1:])
        return scaled_bounds(node, n * lo, n * hi, x.frac_bits, bits_for(n * max(-lo, hi), x.frac_bits))
    raise ONNXExportError(f"{node.describe()}: op '{node.op}' has no ONNX mapping")


# ------------------------------------------------------- Quant attributes
def may_overflow(source: Exact, t: FixedType) -> bool:
    """Whether the cast of a value in ``[source.lo, source.hi]`` to ``t`` can leave ``t``'s codes, however it rounds."""
    scale = pow2(t.frac_bits)
    return math.floor(source.lo * scale) < t.code_min or math.ceil(source.hi * scale) > t.code_max


def quant_attrs(t: FixedType, source: Optional[Exact], what: str) -> dict:
    """``signed``, ``narrow``, ``rounding_mode`` of the ``Quant`` casting ``source`` (``None``: any float) to ``t``."""
    if t.width == 1 and t.signed:
        raise ONNXExportError(f"{what}: format {t} has one signed bit (codes -1 and 0), which QONNX reads as "
                              "bipolar (-1 and +1); use at least 2 bits or an unsigned format")
    mode = ROUNDING_MODES.get(t.rounding)
    if mode is None:
        if source is None or source.frac > t.frac_bits:
            raise ONNXExportError(
                f"{what}: format {t} rounds with {t.rounding.cpp}, which QONNX's Quant cannot express, and this "
                f"cast can drop fractional bits; use one of {', '.join(m.cpp for m in ROUNDING_MODES)} "
                "(for example QConfig(rounding='RND_CONV'))")
        mode = "ROUND"  # no bits are dropped, so every mode gives the same codes
    if t.overflow not in (Overflow.SAT, Overflow.SAT_SYM) and (source is None or may_overflow(source, t)):
        saturation = f" and {t.sat_bits} saturation bits" if t.sat_bits else ""
        raise ONNXExportError(
            f"{what}: format {t} overflows with {t.overflow.cpp}{saturation}, "
            "which QONNX's Quant (it saturates) cannot express, and this cast can overflow; use AP_SAT or "
            "AP_SAT_SYM (for example QConfig(overflow='SAT')), or a format wide enough for the values")
    narrow = int(t.overflow is Overflow.SAT_SYM and t.signed)  # else the clamp never acts, or is AP_SAT's
    return {"signed": int(t.signed), "narrow": narrow, "rounding_mode": mode}


def float32_exact(t: FixedType, source: Optional[Exact], source_bits: int = FLOAT32_BITS) -> bool:
    """Whether float32 holds the result of this cast, a float of ``source_bits`` significant bits (float32's 24,
    float64's 53) holds its source, and ``Quant``'s rounding stays exact."""
    half = ROUNDING_MODES.get(t.rounding, "").startswith("HALF")
    limit = FLOAT32_BITS - (half and not t.signed)  # |x| + 0.5 must stay exact
    fits = t.width <= limit and -126 <= -t.frac_bits and t.width - t.frac_bits <= 127
    return fits and (source is None or (source.bits <= source_bits - (half and source_bits > FLOAT32_BITS)
                                        and source.frac <= 126))


def declared(types: Sequence[FixedType]) -> FixedType:
    """One format holding every channel's codes (the widest; signed if any channel is)."""
    signed = any(t.signed for t in types)
    width = max(t.width + (signed and not t.signed) for t in types)
    return FixedType(width, width, signed=signed, rounding=types[0].rounding)


# --------------------------------------------------------------- builder
class Builder:
    """Collects ONNX nodes, initializers and tensor shapes while the IR's nodes are translated in order."""

    def __init__(self, graph: Graph, batch_size: int) -> None:
        self.graph, self.batch_size = graph, batch_size
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.infos: dict[str, tuple[tuple[int, ...], int]] = {}  # computed tensor -> (shape, element type)
        self.taken = set(graph.values())
        self.scalars: dict[tuple, str] = {}
        self.inexact: list[str] = []
        self.env: dict[str, str] = {}  # IR tensor -> ONNX tensor holding its value

    def fresh(self, base: str) -> str:
        name, n = base, 1
        while name in self.taken:
            n += 1
            name = f"{base}_{n}"
        self.taken.add(name)
        return name

    def initializer(self, base: str, array: np.ndarray) -> str:
        name = self.fresh(base)
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def scalar(self, value: Union[float, int], dtype: type = np.float32) -> str:
        """A shared scalar initializer."""
        key = (dtype, value)
        if key not in self.scalars:
            self.scalars[key] = self.initializer(f"qfx_{np.dtype(dtype).name}_{value}", np.array(value, dtype))
        return self.scalars[key]

    def op(self, op_type: str, inputs: list[str], shape: tuple[int, ...], base: str, output: Optional[str] = None,
           dtype: int = TensorProto.FLOAT, domain: str = "", batched: bool = True, **attrs) -> str:
        """Append one node computing a tensor of ``shape`` (per sample when ``batched``); returns its name."""
        out = output or self.fresh(base)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=self.fresh(f"{out}_{op_type}"),
                                           domain=domain, **attrs))
        self.infos[out] = ((self.batch_size,) * batched + tuple(shape), dtype)
        return out

    def quant(self, x: str, t: FixedType, source: Optional[Exact], shape: tuple[int, ...], what: str,
              output: Optional[str] = None, source_bits: int = FLOAT32_BITS) -> str:
        """Cast ``x`` (exact value ``source``; float64 when ``source_bits`` is 53) to ``t`` with a ``Quant``."""
        attrs = quant_attrs(t, source, what)
        if not float32_exact(t, source, source_bits):
            self.inexact.append(what)
        inputs = [x, self.scalar(2.0 ** -t.frac_bits), self.scalar(0.0), self.scalar(float(t.width))]
        return self.op("Quant", inputs, shape, f"{x}_quant", output, domain=QONNX_DOMAIN, **attrs)

    def constant(self, node: Node, role: str, shape: Optional[tuple[int, ...]] = None) -> str:
        """A constant of ``node`` as float values (reshaped to ``shape``) through a ``Quant`` declaring its format."""
        c = node.constants[role]
        shape = tuple(c.codes.shape) if shape is None else shape
        values = np.ldexp(c.codes.astype(np.float64), -c.frac_bits_along(c.codes.ndim)).reshape(shape)
        scale = np.ldexp(1.0, -c.frac_bits()).astype(np.float32)
        scale = scale.reshape((-1,) + (1,) * (len(shape) - 1)) if c.per_channel else scale.reshape(())
        t = declared(c.types)
        what = f"{node.describe()}: constant '{role}'"
        attrs = quant_attrs(t, stored(t), what)
        if not all(float32_exact(ct, None) for ct in c.types) or t.width > FLOAT32_BITS:
            self.inexact.append(what)
        base = f"{node.name}_{role}"
        inputs = [self.initializer(base, values.astype(np.float32)), self.initializer(f"{base}_scale", scale),
                  self.scalar(0.0), self.scalar(float(t.width))]
        return self.op("Quant", inputs, shape, f"{base}_quant", domain=QONNX_DOMAIN, batched=False, **attrs)
