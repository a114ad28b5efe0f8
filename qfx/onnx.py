"""QONNX export: :func:`to_onnx` and :func:`export_onnx`.

Each IR op becomes standard ONNX ops on float values, and every place the
IR casts becomes a QONNX ``Quant`` node (domain ``qonnx.custom_op.general``;
inputs ``x``, ``scale = 2**-F``, ``zero_point = 0``, ``bitwidth = W``;
attributes ``signed``, ``narrow``, ``rounding_mode``): the graph input, each
constant (weights, biases, BatchNorm scales and shifts, slopes, divisors;
a per-channel constant gets one scale per channel), the accumulator cast if
the node has one, and each node's output.  QONNX, FINN and hls4ml read such
a model; the ``qonnx`` package's executor runs it.

============================  ===============================================================
IR op                         ONNX ops (then ``Quant`` to the output format)
============================  ===============================================================
``dense``                     ``Gemm(x, Quant(W), Quant(b), transB=1)``
``conv1d``, ``conv2d``        ``Conv`` with explicit ``pads``, ``strides``, ``dilations``, ``group``
``scale_shift``               ``Add(Mul(x, Quant(scale)), Quant(shift))``, constants shaped ``(C, 1, ...)``
``relu``                      ``Relu``
``relu6``                     ``Clip(x, 0, 6)``
``leaky_relu``                ``LeakyRelu`` with ``alpha`` the fixed-point slope (exact in float32);
                              ``Where(x >= 0, x, Mul(x, Quant(slope)))`` for a slope float32 cannot hold
``add``                       ``Add``
``maxpool2d``                 ``MaxPool`` (its padding never wins, as in the IR)
``avgpool2d``                 ``AveragePool`` (``count_include_pad``) when the divisor is exactly
                              1 / window; otherwise the window sum as a depthwise ``Conv`` of ones,
                              then ``Mul(sum, Quant(divisor))``
``global_avgpool2d``          ``GlobalAveragePool`` when the divisor is exactly 1 / (H W);
                              otherwise ``Mul(ReduceSum(x, [2, 3]), Quant(divisor))``
``flatten``                   ``Flatten`` (to one dimension per sample) or ``Reshape``; no cast
``table``, ``softmax``        lookup tables as ``Gather`` (:mod:`qfx.onnx_tables`)
``sign``, ``thermometer``,    QONNX's bipolar convention (``BipolarQuant``), see :mod:`qfx.onnx_binary`
``binary_*``, ``prelu``
============================  ===============================================================

How a format's modes become ``Quant`` attributes.  QONNX's ``Quant`` clamps
to the integer range and then rounds; for the modes below that equals the
``ap_fixed`` cast, which rounds and then handles overflow:

=============================  ==============================  ================================
``ap_fixed`` mode              ``Quant``                       note
=============================  ==============================  ================================
``AP_RND_CONV``                ``rounding_mode="ROUND"``       ties to even (``np.round``)
``AP_TRN``                     ``rounding_mode="FLOOR"``
``AP_TRN_ZERO``                ``rounding_mode="DOWN"``        toward zero (``np.fix``)
``AP_RND_INF``                 ``rounding_mode="HALF_UP"``     ties away from zero
``AP_RND_ZERO``                ``rounding_mode="HALF_DOWN"``   ties toward zero
``AP_RND``                     none                            ties toward +infinity
``AP_RND_MIN_INF``             none                            ties toward -infinity
``AP_SAT``                     ``narrow=0``
``AP_SAT_SYM``                 ``narrow=1`` (signed),          never the most negative code
                               ``narrow=0`` (unsigned)
``AP_WRAP``, ``AP_WRAP_SM``    none                            ``Quant`` saturates
``AP_SAT_ZERO``                none
=============================  ==============================  ================================

A mode without an equivalent is refused only where it can act: a cast
that drops no fractional bits rounds nothing (it is written with
``ROUND``), and a cast whose source, by interval arithmetic on the
formats and constants, cannot leave the target's range never overflows
(it is written ``narrow=0``).  So the exact accumulator type, or a ReLU
into a format that holds its input, export whatever their modes; a WRAP
tensor that can overflow, or an ``AP_RND`` cast that drops bits, raises
:class:`ONNXExportError` naming the tensor and its format.  The graph input
rounds and overflows from any float, so its modes always need an
equivalent.  Constants are stored codes, never cast at run time: their
``Quant`` only declares their format (``narrow=0``; per-channel formats of
different widths are declared with the widest).  QONNX reads a 1-bit
signed ``Quant`` as bipolar (+-1), which ``ap_fixed<1, ...>`` (codes -1
and 0) is not, so 1-bit signed formats are refused.

Float exactness: the executor computes in float32 (``Quant`` returns
float32), so a tensor is exact when its format has at most 24 bits (23 for
an unsigned format rounding with ``HALF_UP``/``HALF_DOWN``) and every
intermediate sum and product fits 24 significant bits.  Wider graphs still
export (the model describes the same arithmetic), with a warning naming the
tensors whose float32 execution may round.

The batch dimension is fixed (``batch_size``, default 1), as the QONNX
executor and FINN expect shapes to be fully known.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .files import write_atomically
from .format import FixedType, Overflow, Rounding
from .ir.graph import Constant, Graph, Node, Value
from .render.escape import printable

__all__ = ["to_onnx", "export_onnx", "ONNXExportError", "QONNX_DOMAIN", "OPSET", "ROUNDING_MODES"]

QONNX_DOMAIN = "qonnx.custom_op.general"  #: the domain of QONNX's ``Quant``
OPSET = 13  #: the standard ONNX opset the model imports

#: ap_fixed rounding modes with an exact QONNX ``rounding_mode``.
ROUNDING_MODES = {Rounding.RND_CONV: "ROUND", Rounding.TRN: "FLOOR", Rounding.TRN_ZERO: "DOWN",
                  Rounding.RND_INF: "HALF_UP", Rounding.RND_ZERO: "HALF_DOWN"}
_FLOAT32_BITS = 24


class ONNXExportError(ValueError):
    """A graph QONNX cannot express; the message names the tensor, its format and what to change."""


# --------------------------------------------------------- exact bounds
@dataclasses.dataclass(frozen=True)
class _Exact:
    """The exact value a cast reads: bounds on it, the grid ``2**-frac`` it lies on, and the float bits it needs.

    ``bits`` is the most significant bits any float result computing it
    needs (partial sums included), on its own grid.
    """

    lo: Fraction
    hi: Fraction
    frac: int
    bits: int


def _pow2(e: int) -> Fraction:
    return Fraction(2) ** e


def _bits(magnitude: Fraction, frac: int) -> int:
    """Significant bits of the largest multiple of ``2**-frac`` up to ``magnitude``."""
    return math.floor(abs(magnitude) * _pow2(frac)).bit_length()


def _grid(value: Fraction) -> int:
    """The fewest fractional bits that hold ``value`` (negative for an even integer): a product's grid."""
    if value == 0:
        return 0
    top, bottom = value.numerator, value.denominator  # bottom is a power of two
    return bottom.bit_length() - 1 - ((top & -top).bit_length() - 1)


def _range(t: FixedType) -> tuple[Fraction, Fraction]:
    return t.code_min * _pow2(-t.frac_bits), t.code_max * _pow2(-t.frac_bits)


def _stored(t: FixedType) -> _Exact:
    """A tensor already in format ``t``."""
    lo, hi = _range(t)
    return _Exact(lo, hi, t.frac_bits, t.width)


def _value(c: Constant, channel: int = 0) -> Fraction:
    """The one value of a scalar constant, or channel ``channel`` of a per-channel one of shape ``(C,)``."""
    return int(c.codes.reshape(-1)[channel]) * _pow2(-c.type_of(channel).frac_bits)


def _dot(node: Node, x: FixedType) -> _Exact:
    """Bounds of ``sum x * w + b`` over the output channels; any term may be zero (padding)."""
    w, bias = node.constants["weight"], node.constants.get("bias")
    lo_x, hi_x = _range(x)
    low, high, top = min(lo_x, 0), max(hi_x, 0), max(-lo_x, hi_x)
    los, his, fracs, bits = [], [], [], 0
    for o in range(w.codes.shape[0]):
        codes = (w.codes[o]).astype(object).reshape(-1)
        fw = w.type_of(o).frac_bits
        pos, neg = sum(c for c in codes if c > 0), sum(c for c in codes if c < 0)
        lo = (pos * low + neg * high) * _pow2(-fw)
        hi = (pos * high + neg * low) * _pow2(-fw)
        magnitude = (pos - neg) * top * _pow2(-fw)
        frac = x.frac_bits + fw
        if bias is not None:
            b = _value(bias, o)
            lo, hi, magnitude = lo + b, hi + b, magnitude + abs(b)
            frac = max(frac, bias.types[0].frac_bits)
        los.append(lo), his.append(hi), fracs.append(frac)
        bits = max(bits, _bits(magnitude, frac))
    return _Exact(min(los), max(his), max(fracs), bits)


def _scale_shift(node: Node, x: FixedType) -> _Exact:
    scale, shift = node.constants["scale"], node.constants["shift"]
    lo_x, hi_x = _range(x)
    los, his, fracs, bits = [], [], [], 0
    for c in range(scale.codes.shape[0]):
        s, t = _value(scale, c), _value(shift, c)
        products = (lo_x * s, hi_x * s)
        fp = x.frac_bits + _grid(s)
        frac = max(fp, _grid(t))
        los.append(min(products) + t), his.append(max(products) + t), fracs.append(frac)
        top = max(abs(p) for p in products)
        bits = max(bits, _bits(top, fp), _bits(top + abs(t), frac))
    return _Exact(min(los), max(his), max(fracs), bits)


def _scaled(node: Node, lo: Fraction, hi: Fraction, frac: int, sum_bits: int) -> _Exact:
    """Bounds of ``[lo, hi] * divisor`` (pooling)."""
    d = _value(node.constants["divisor"])
    fd = _grid(d)
    products = (lo * d, hi * d)
    return _Exact(min(products), max(products), frac + fd,
                  max(sum_bits, _bits(max(abs(p) for p in products), frac + fd)))


def _source(node: Node, inputs: list[Value]) -> _Exact:
    """The exact value ``node`` casts to its output format (before the accumulator cast, if any)."""
    structural = _structure_source(node, inputs)
    if structural is not None:
        return structural
    x = inputs[0].type
    lo, hi = _range(x)
    if node.op in ("dense", "conv1d", "conv2d"):
        return _dot(node, x)
    if node.op == "scale_shift":
        return _scale_shift(node, x)
    if node.op == "relu":
        return _Exact(max(lo, 0), max(hi, 0), x.frac_bits, x.width)
    if node.op == "relu6":
        lo, hi = min(max(lo, 0), 6), min(max(hi, 0), 6)
        return _Exact(lo, hi, max(x.frac_bits, 0), _bits(hi, max(x.frac_bits, 0)))
    if node.op == "leaky_relu":
        slope = node.constants["slope"]
        s = _value(slope)
        fs = _grid(s)
        ends = [max(lo, 0), max(hi, 0), min(lo, 0) * s, min(hi, 0) * s]
        return _Exact(min(ends), max(ends), x.frac_bits + max(fs, 0),
                      max(x.width, _bits(max(-lo, hi) * s, x.frac_bits + fs)))
    if node.op == "add":
        y = inputs[1].type
        lo_y, hi_y = _range(y)
        frac = max(x.frac_bits, y.frac_bits)
        return _Exact(lo + lo_y, hi + hi_y, frac, _bits(max(-lo - lo_y, hi + hi_y), frac))
    if node.op == "maxpool2d":
        return _stored(x)
    if node.op == "avgpool2d":
        n = math.prod(node.attrs["kernel"])
        lo_s, hi_s = n * min(lo, 0), n * max(hi, 0)  # zero padding may stand for any term
        return _scaled(node, lo_s, hi_s, x.frac_bits, _bits(max(-lo_s, hi_s), x.frac_bits))
    if node.op == "global_avgpool2d":
        n = math.prod(inputs[0].shape[1:])
        return _scaled(node, n * lo, n * hi, x.frac_bits, _bits(n * max(-lo, hi), x.frac_bits))
    raise ONNXExportError(f"{node.describe()}: op '{node.op}' has no ONNX mapping")


# ------------------------------------------------------- Quant attributes
def _may_overflow(source: _Exact, t: FixedType) -> bool:
    """Whether the cast of a value in ``[source.lo, source.hi]`` to ``t`` can leave ``t``'s codes, however it rounds."""
    scale = _pow2(t.frac_bits)
    return math.floor(source.lo * scale) < t.code_min or math.ceil(source.hi * scale) > t.code_max


def _quant_attrs(t: FixedType, source: Optional[_Exact], what: str) -> dict:
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
    if t.overflow not in (Overflow.SAT, Overflow.SAT_SYM) and (source is None or _may_overflow(source, t)):
        saturation = f" and {t.sat_bits} saturation bits" if t.sat_bits else ""
        raise ONNXExportError(
            f"{what}: format {t} overflows with {t.overflow.cpp}{saturation}, "
            "which QONNX's Quant (it saturates) cannot express, and this cast can overflow; use AP_SAT or "
            "AP_SAT_SYM (for example QConfig(overflow='SAT')), or a format wide enough for the values")
    narrow = int(t.overflow is Overflow.SAT_SYM and t.signed)  # else the clamp never acts, or is AP_SAT's
    return {"signed": int(t.signed), "narrow": narrow, "rounding_mode": mode}


def _float32_exact(t: FixedType, source: Optional[_Exact], source_bits: int = _FLOAT32_BITS) -> bool:
    """Whether float32 holds the result of this cast, a float of ``source_bits`` significant bits (float32's 24,
    float64's 53) holds its source, and ``Quant``'s rounding stays exact."""
    half = ROUNDING_MODES.get(t.rounding, "").startswith("HALF")
    limit = _FLOAT32_BITS - (half and not t.signed)  # |x| + 0.5 must stay exact
    fits = t.width <= limit and -126 <= -t.frac_bits and t.width - t.frac_bits <= 127
    return fits and (source is None or (source.bits <= source_bits - (half and source_bits > _FLOAT32_BITS)
                                        and source.frac <= 126))


def _declared(types: Sequence[FixedType]) -> FixedType:
    """One format holding every channel's codes (the widest; signed if any channel is)."""
    signed = any(t.signed for t in types)
    width = max(t.width + (signed and not t.signed) for t in types)
    return FixedType(width, width, signed=signed, rounding=types[0].rounding)


# --------------------------------------------------------------- builder
class _Builder:
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

    def quant(self, x: str, t: FixedType, source: Optional[_Exact], shape: tuple[int, ...], what: str,
              output: Optional[str] = None, source_bits: int = _FLOAT32_BITS) -> str:
        """Cast ``x`` (exact value ``source``; float64 when ``source_bits`` is 53) to ``t`` with a ``Quant``."""
        attrs = _quant_attrs(t, source, what)
        if not _float32_exact(t, source, source_bits):
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
        t = _declared(c.types)
        what = f"{node.describe()}: constant '{role}'"
        attrs = _quant_attrs(t, _stored(t), what)
        if not all(_float32_exact(ct, None) for ct in c.types) or t.width > _FLOAT32_BITS:
            self.inexact.append(what)
        base = f"{node.name}_{role}"
        inputs = [self.initializer(base, values.astype(np.float32)), self.initializer(f"{base}_scale", scale),
                  self.scalar(0.0), self.scalar(float(t.width))]
        return self.op("Quant", inputs, shape, f"{base}_quant", domain=QONNX_DOMAIN, batched=False, **attrs)


# ------------------------------------------------------------ translation
def _pool_attrs(node: Node) -> dict:
    pad = node.attrs["padding"]
    return {"kernel_shape": node.attrs["kernel"], "strides": node.attrs["stride"], "pads": pad + pad}


def _compute(b: _Builder, node: Node, x: list[str], source: _Exact) -> str:
    """ONNX nodes computing ``node``'s exact result (before its casts); returns the result's name."""
    shape, base = node.output.shape, f"{node.name}_exact"
    if node.op in ("sub", "mul", "clamp"):
        return _structure_compute(b, node, x)
    if node.op == "dense":
        args = [x[0], b.constant(node, "weight")] + ([b.constant(node, "bias")] if "bias" in node.constants else [])
        return b.op("Gemm", args, shape, base, transB=1)
    if node.op in ("conv1d", "conv2d"):
        args = [x[0], b.constant(node, "weight")] + ([b.constant(node, "bias")] if "bias" in node.constants else [])
        pads = node.attrs["padding"]
        return b.op("Conv", args, shape, base, kernel_shape=list(node.constants["weight"].codes.shape[2:]),
                    pads=[p[0] for p in pads] + [p[1] for p in pads], strides=node.attrs["stride"],
                    dilations=node.attrs["dilation"], group=node.attrs["groups"])
    if node.op == "scale_shift":
        view = (shape[0],) + (1,) * (len(shape) - 1)  # per channel, broadcast over the rest
        product = b.op("Mul", [x[0], b.constant(node, "scale", view)], shape, f"{node.name}_product")
        return b.op("Add", [product, b.constant(node, "shift", view)], shape, base)
    if node.op == "relu":
        return b.op("Relu", x, shape, base)
    if node.op == "relu6":
        return b.op("Clip", [x[0], b.scalar(0.0), b.scalar(6.0)], shape, base)
    if node.op == "leaky_relu":
        slope = _value(node.constants["slope"])
        if Fraction(float(np.float32(slope))) == slope:  # the float attribute holds the fixed-point slope exactly
            return b.op("LeakyRelu", x, shape, base, alpha=float(slope))
        positive = b.op("GreaterOrEqual", [x[0], b.scalar(0.0)], shape, f"{node.name}_positive",
                        dtype=TensorProto.BOOL)
        product = b.op("Mul", [x[0], b.constant(node, "slope")], shape, f"{node.name}_product")
        return b.op("Where", [positive, x[0], product], shape, base)
    if node.op == "add":
        return b.op("Add", x, shape, base)
    if node.op == "maxpool2d":
        return b.op("MaxPool", x, shape, base, dilations=node.attrs["dilation"],
                    ceil_mode=int(node.attrs["ceil_mode"]), **_pool_attrs(node))
    if node.op in ("avgpool2d", "global_avgpool2d"):
        return _average(b, node, x[0])
    raise ONNXExportError(f"{node.describe()}: op '{node.op}' has no ONNX mapping")


def _average(b: _Builder, node: Node, x: str) -> str:
    """``sum(window) * divisor``: ONNX's average pooling when the divisor is exactly 1 / count, else sum then Mul."""
    shape, base = node.output.shape, f"{node.name}_exact"
    channels, *spatial = b.graph.value(node.inputs[0]).shape
    count = math.prod(node.attrs["kernel"]) if node.op == "avgpool2d" else math.prod(spatial)
    exact_mean = _value(node.constants["divisor"]) == Fraction(1, count)  # then float sum / count is exact too
    if node.op == "global_avgpool2d":
        if exact_mean:
            return b.op("GlobalAveragePool", [x], shape, base)
        window_sum = b.op("ReduceSum", [x, b.initializer(f"{node.name}_axes", np.array([2, 3], np.int64))],
                          shape, f"{node.name}_sum", keepdims=1)
    elif exact_mean:
        return b.op("AveragePool", [x], shape, base, count_include_pad=1, **_pool_attrs(node))
    else:  # a depthwise convolution with ones sums each window exactly
        ones = b.initializer(f"{node.name}_ones", np.ones((channels, 1) + tuple(node.attrs["kernel"]), np.float32))
        window_sum = b.op("Conv", [x, ones], shape, f"{node.name}_sum", group=channels, **_pool_attrs(node))
    return b.op("Mul", [window_sum, b.constant(node, "divisor")], shape, base)


# ------------------------------------------------------- structural ops
def _structure_source(node: Node, inputs: list[Value]) -> Optional[_Exact]:
    """The exact value ``sub``, ``mul`` or ``clamp`` casts; ``None`` for other ops."""
    if node.op not in ("sub", "mul", "clamp"):
        return None
    x = inputs[0].type
    lo, hi = _range(x)
    if node.op == "sub":
        y = inputs[1].type
        lo_y, hi_y = _range(y)
        frac = max(x.frac_bits, y.frac_bits)
        return _Exact(lo - hi_y, hi - lo_y, frac, _bits(max(hi_y - lo, hi - lo_y), frac))
    if node.op == "mul":
        y = inputs[1].type
        ends = [a * c for a in (lo, hi) for c in _range(y)]
        return _Exact(min(ends), max(ends), x.frac_bits + y.frac_bits, x.width + y.width)
    bounds = {k: _value(node.constants[k]) for k in ("low", "high") if k in node.constants}
    frac = max([x.frac_bits] + [_grid(v) for v in bounds.values()])
    clip = [min(max(v, bounds.get("low", v)), bounds.get("high", v)) for v in (lo, hi)]
    return _Exact(clip[0], clip[1], frac, _bits(max(abs(clip[0]), abs(clip[1])), frac))


def _structure_compute(b: _Builder, node: Node, x: list[str]) -> str:
    shape, base = node.output.shape, f"{node.name}_exact"
    if node.op == "sub":
        return b.op("Sub", x, shape, base)
    if node.op == "mul":
        return b.op("Mul", x, shape, base)
    bounds = [b.constant(node, k) if k in node.constants else "" for k in ("low", "high")]
    return b.op("Clip", [x[0]] + bounds, shape, base)


def _interleaved(b: _Builder, node: Node, x: str, factors: list[int], expand: bool) -> str:
    """Each spatial element followed by ``factor - 1`` zeros (``expand=False``) or copies of itself (``True``)."""
    channels, *spatial = b.graph.value(node.inputs[0]).shape
    split = [channels] + [v for n in spatial for v in (n, 1)]
    wide = [channels] + [v for n, f in zip(spatial, factors) for v in (n, f)]
    name = f"{node.name}_split"
    y = b.op("Reshape", [x, b.initializer(f"{name}_shape", np.array([-1] + split, np.int64))], tuple(split), name)
    if expand:
        y = b.op("Expand", [y, b.initializer(f"{node.name}_wide", np.array([b.batch_size] + wide, np.int64))],
                 tuple(wide), f"{node.name}_wide")
    else:
        ends = [0] * (len(split) + 1) + [0, 0] + [v for f in factors for v in (0, f - 1)]
        y = b.op("Pad", [y, b.initializer(f"{node.name}_gaps", np.array(ends, np.int64))], tuple(wide),
                 f"{node.name}_gaps")
    joined = tuple([channels] + [n * f for n, f in zip(spatial, factors)])
    return b.op("Reshape", [y, b.initializer(f"{node.name}_joined", np.array((-1,) + joined, np.int64))], joined,
                f"{node.name}_joined")


def _structure_moves(b: _Builder, node: Node, x: list[str]) -> bool:
    """``concat`` (each input cast, then joined), ``zero_pad`` and ``upsample`` (codes moved, no cast)."""
    shape = node.output.shape
    if node.op == "concat":
        parts = [b.quant(name, node.output.type, _stored(b.graph.value(v).type), b.graph.value(v).shape,
                         f"{node.describe()}: input '{v}'") for name, v in zip(x, node.inputs)]
        b.env[node.name] = b.op("Concat", parts, shape, node.name, output=node.name, axis=1 + node.attrs["axis"])
        return True
    if node.op == "upsample":
        b.env[node.name] = b.op("Identity", [_interleaved(b, node, x[0], node.attrs["scale"], True)], shape,
                                node.name, output=node.name)
        return True
    if node.op == "zero_pad":
        insert, padding = node.attrs["insert"], node.attrs["padding"]
        y = x[0]
        if any(s > 1 for s in insert):
            y = _interleaved(b, node, y, insert, False)
            channels, *spatial = b.graph.value(node.inputs[0]).shape
            keep = [(n - 1) * s + 1 for n, s in zip(spatial, insert)]
            axes = list(range(2, 2 + len(keep)))
            y = b.op("Slice", [y, b.initializer(f"{node.name}_starts", np.zeros(len(keep), np.int64)),
                               b.initializer(f"{node.name}_ends", np.array(keep, np.int64)),
                               b.initializer(f"{node.name}_axes", np.array(axes, np.int64))],
                     tuple([channels] + keep), f"{node.name}_stuffed")
        pads = [0, 0] + [p[0] for p in padding] + [0, 0] + [p[1] for p in padding]
        b.env[node.name] = b.op("Pad", [y, b.initializer(f"{node.name}_pads", np.array(pads, np.int64))], shape,
                                node.name, output=node.name)
        return True
    return False


def _translate(b: _Builder, node: Node) -> None:
    x = [b.env[name] for name in node.inputs]
    if _structure_moves(b, node, x) or _binary.translate(b, node, x) or _tables.translate(b, node, x):
        return
    if node.op == "flatten":  # a reshape of the same codes: no cast
        shape = node.output.shape
        if len(shape) == 1:
            b.env[node.name] = b.op("Flatten", x, shape, node.name, output=node.name, axis=1)
        else:
            target = b.initializer(f"{node.name}_shape", np.array((-1,) + tuple(shape), np.int64))
            b.env[node.name] = b.op("Reshape", [x[0], target], shape, node.name, output=node.name)
        return
    inputs = [b.graph.value(name) for name in node.inputs]
    source = _source(node, inputs)
    y = _compute(b, node, x, source)
    if "accum" in node.formats:
        accum = node.formats["accum"]
        y = b.quant(y, accum, source, node.output.shape, f"{node.describe()}: accumulator")
        source = _stored(accum)
    b.env[node.name] = b.quant(y, node.output.type, source, node.output.shape, node.describe(), output=node.name)


def to_onnx(graph: Graph, *, batch_size: int = 1) -> onnx.ModelProto:
    """The QONNX model of ``graph``: standard ONNX ops on float32 values, a ``Quant`` at every cast.

    The graph's inputs and outputs keep their IR names; the model takes
    float32 inputs of shape ``(batch_size, *shape)``.  Raises
    :class:`ONNXExportError` naming the tensor whose format QONNX cannot
    express (see the module docstring); warns, naming the tensors, where
    float32 execution may round.
    """
    graph.check()
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"to_onnx: batch_size must be an integer >= 1, got {batch_size!r}")
    b = _Builder(graph, batch_size)
    for value in graph.inputs:
        b.env[value.name] = b.quant(value.name, value.type, None, value.shape, f"input '{value.name}'",
                                    output=b.fresh(f"{value.name}_quant"))
    for node in graph.nodes:
        _translate(b, node)

    def info(name: str, shape: tuple[int, ...], dtype: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, dtype, list(shape))

    inputs = [info(v.name, (batch_size,) + v.shape) for v in graph.inputs]
    outputs = []
    for value in graph.output_values:
        name = b.env[value.name]
        if name != value.name:  # a graph input returned as is: its name holds the float, so name its cast anew
            name = b.op("Identity", [name], value.shape, value.name, output=b.fresh(value.name))
        outputs.append(info(name, (batch_size,) + value.shape))
    output_names = {o.name for o in outputs}
    value_infos = [info(name, shape, dtype) for name, (shape, dtype) in b.infos.items() if name not in output_names]
    onnx_graph = helper.make_graph(b.nodes, printable(graph.name) or "qfx", inputs, outputs, b.initializers,
                                   value_info=value_infos)
    model = helper.make_model(onnx_graph, producer_name="qfx",
                              opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(QONNX_DOMAIN, 1)])
    model.ir_version = 8  # what onnxruntime and the QONNX tools read
    onnx.checker.check_model(model)
    if b.inexact:
        warnings.warn(f"ONNX model of graph '{graph.name}': float32 execution (as QONNX's executor runs it) may "
                      f"round at {len(b.inexact)} cast(s), first {b.inexact[0]}; the model still describes the "
                      "exact arithmetic, but only formats and intermediate results of at most 24 bits run "
                      "bit-exact in float32", stacklevel=2)
    return model


def export_onnx(graph: Graph, path: Union[str, os.PathLike], *, force: bool = False,
                batch_size: int = 1) -> Path:
    """Write :func:`to_onnx` of ``graph`` to ``path`` (``.onnx``), atomically; refuse to overwrite unless ``force``.

    Returns the path written.
    """
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"export_onnx: the model file must end in .onnx, got '{path}'")
    if path.exists() and not force:
        raise FileExistsError(f"export_onnx: '{path}' exists; pass force=True (or --force) to overwrite it")
    data = to_onnx(graph, batch_size=batch_size).SerializeToString()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda f: f.write(data))
    return path


from . import onnx_binary as _binary  # noqa: E402 (it uses the builder and bounds above)
from . import onnx_tables as _tables  # noqa: E402
