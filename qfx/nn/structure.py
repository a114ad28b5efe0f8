"""Layers that shape and combine tensors: differences and products of two tensors, constants, clamps,
concatenation, zero padding, nearest upsampling and transposed convolutions.

Each casts at most once (``Qout``); the ones that only move codes (padding,
upsampling) keep their input's format and never cast.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .config import LayerQConfig, constant_type, make_quantizer
from .exact import as_float, cast, cast_output, exact_add, exact_dtype
from .layer import FixedConstant, QuantizedLayer, fixed_constant
from .linear import QConv1d, QConv2d

__all__ = ["QSub", "QMul", "QConstantAdd", "QConstantMul", "QClamp", "QConcat", "QZeroPad", "QUpsample",
           "QConvTranspose1d", "QConvTranspose2d", "zero_stuff"]


class QSub(QuantizedLayer):
    """Difference of two fixed-point tensors: ``y = Qout(a - b)``.

    Numerics as :class:`~qfx.nn.QAdd`: the difference is exact (TwoSum
    checked in eval mode, float64 where the common dtype rounds) and ``Qout``
    is the only rounding.  Training subtracts in the common dtype, with
    gradients to both inputs and, when ``cfg.learn_int_bits``, the output's
    binary point.
    """

    def __init__(self, cfg: Optional[LayerQConfig] = None) -> None:
        super().__init__()
        cfg = cfg or LayerQConfig()
        self.output_quantizer = make_quantizer(cfg.output, cfg.learn_int_bits)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = as_float(a), as_float(b)
        dtype = torch.promote_types(a.dtype, b.dtype)
        if self.training:
            total = a - b
        else:
            total = exact_add(a, -b, self.describe(), "narrow the inputs' formats or bring their binary points "
                                                      "nearer each other")
        return cast_output(self.output_quantizer, total, dtype, exact=not self.training)


class QMul(QuantizedLayer):
    """Elementwise product of two fixed-point tensors: ``y = Qout(a * b)``.

    Numerics: the product is exact (``ap_fixed``'s ``*`` keeps every bit:
    widths and fractional bits add) and ``Qout`` is the only rounding.  Eval
    mode multiplies in float32 when ``a_width + b_width <= 24``, else in
    float64 (an error beyond 53 bits).  Training multiplies in the inputs'
    dtype, gradients ``b`` and ``a`` (straight through the cast).

    Args:
        cfg: the formats; default ``LayerQConfig()``.
        a_width, b_width: word lengths of the operands' formats (the converter sets them).
    """

    def __init__(self, cfg: Optional[LayerQConfig] = None, a_width: Optional[int] = None,
                 b_width: Optional[int] = None) -> None:
        super().__init__()
        cfg = cfg or LayerQConfig()
        self.a_width = int(cfg.output.width if a_width is None else a_width)
        self.b_width = int(cfg.output.width if b_width is None else b_width)
        self.output_quantizer = make_quantizer(cfg.output, cfg.learn_int_bits)

    def _shape_repr(self) -> str:
        return f"a_width={self.a_width}, b_width={self.b_width}"

    def compute_dtype(self) -> torch.dtype:
        """The dtype eval mode multiplies in; ``ValueError`` beyond 53 bits."""
        return exact_dtype([("a width", self.a_width), ("b width", self.b_width)], self.describe(),
                           "narrow the operands' formats")

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = as_float(a), as_float(b)
        dtype = torch.promote_types(a.dtype, b.dtype)
        if not self.training:
            wide = self.compute_dtype()
            a, b = a.to(wide), b.to(wide)
        return cast_output(self.output_quantizer, a * b, dtype, exact=not self.training)


class _QConstantOp(QuantizedLayer):
    """``Qout(x op Qc(c))`` for a float constant ``c``; ``Qc``'s format is fitted to ``c`` (not trained)."""

    _role = ""

    def __init__(self, value: float, cfg: Optional[LayerQConfig] = None, input_width: Optional[int] = None) -> None:
        super().__init__()
        cfg = cfg or LayerQConfig()
        self.value = float(value)
        self.input_width = int(cfg.output.width if input_width is None else input_width)
        width = (cfg.scale if self._role == "scale" else cfg.shift).width
        khot = cfg.scale_khot if self._role == "scale" else None
        setattr(self, f"{self._role}_quantizer", make_quantizer(constant_type(self.value, width), False, khot))
        self.output_quantizer = make_quantizer(cfg.output, cfg.learn_int_bits)

    def _shape_repr(self) -> str:
        return f"{self.value!r}, input_width={self.input_width}"

    def _constant(self) -> torch.Tensor:
        q = getattr(self, f"{self._role}_quantizer")
        return cast(q, torch.tensor(self.value, dtype=torch.float64, device=q.int_bits.device))

    def constants(self) -> dict[str, FixedConstant]:
        """The quantized constant as value, integer code and format."""
        return {self._role: fixed_constant(getattr(self, f"{self._role}_quantizer"), self._constant())}


class QConstantMul(_QConstantOp):
    """A tensor times a constant: ``y = Qout(x * Qs(c))``.

    ``Qs`` is ``cfg.scale``'s width with the binary point fitted to ``c``,
    K-hot when ``cfg.scale_khot`` is set (the product is then shifts and
    adds).  The product is exact: float32 when ``input_width + scale
    width <= 24``, else float64.  Training multiplies in the input's dtype.
    """

    _role = "scale"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = as_float(x)
        dtype = x.dtype if self.training else exact_dtype(
            [("input_width", self.input_width), ("constant width", self.scale_quantizer.base_type.width)],
            self.describe(), "narrow the input format or cfg.scale")
        return cast_output(self.output_quantizer, x.to(dtype) * self._constant().to(dtype), x.dtype,
                           exact=not self.training)


class QConstantAdd(_QConstantOp):
    """A tensor plus a constant: ``y = Qout(x + Qc(c))``, ``Qc`` of ``cfg.shift``'s width fitted to ``c``.

    The sum is exact (TwoSum checked in eval mode); ``Qout`` is the only rounding.
    """

    _role = "shift"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = as_float(x)
        c = self._constant().to(x.dtype)
        total = x + c if self.training else exact_add(x, c, self.describe(), "narrow the input format")
        return cast_output(self.output_quantizer, total, x.dtype, exact=not self.training)


class QClamp(QuantizedLayer):
    """``y = Qout(min(max(x, Ql(low)), Qh(high)))``: ``hardtanh``, ``clamp``, ``ReLU6`` with any bounds.

    The bounds are constants in the 16-bit formats fitted to them
    (:func:`~qfx.nn.constant_type`; ``None`` means no bound); the clamp of
    fixed-point values is exact in any dtype and ``Qout`` is the only
    rounding.  Training: the gradient passes where the bounds do not act.
    """

    def __init__(self, low: Optional[float], high: Optional[float], cfg: Optional[LayerQConfig] = None) -> None:
        super().__init__()
        if low is None and high is None:
            raise ValueError("QClamp needs at least one bound")
        if low is not None and high is not None and low > high:
            raise ValueError(f"QClamp: low bound {low} is above high bound {high}")
        cfg = cfg or LayerQConfig()
        self.low, self.high = low, high
        self.low_quantizer = None if low is None else make_quantizer(constant_type(low), False)
        self.high_quantizer = None if high is None else make_quantizer(constant_type(high), False)
        self.output_quantizer = make_quantizer(cfg.output, cfg.learn_int_bits)

    def _shape_repr(self) -> str:
        return f"low={self.low}, high={self.high}"

    def _bound(self, which: str) -> Optional[torch.Tensor]:
        q = getattr(self, f"{which}_quantizer")
        if q is None:
            return None
        value = getattr(self, which)
        return cast(q, torch.tensor(value, dtype=torch.float64, device=q.int_bits.device))

    def constants(self) -> dict[str, FixedConstant]:
        """The quantized bounds that are set, as values, integer codes and formats."""
        return {k: fixed_constant(getattr(self, f"{k}_quantizer"), self._bound(k))
                for k in ("low", "high") if getattr(self, f"{k}_quantizer") is not None}

    def formats(self) -> dict:
        found = super().formats()
        for k in ("low", "high"):
            q = getattr(self, f"{k}_quantizer")
            if q is not None:
                found[k] = q.fixed_type
        return found

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = as_float(x)
        low, high = self._bound("low"), self._bound("high")
        dtype = x.dtype if self.training or all(
            b is None or b.to(x.dtype).double().equal(b) for b in (low, high)) else torch.float64
        y = torch.clamp(x.to(dtype), None if low is None else low.to(dtype), None if high is None else high.to(dtype))
        return cast_output(self.output_quantizer, y, x.dtype, exact=not self.training)


class QConcat(QuantizedLayer):
    """``torch.cat`` along ``dim`` (channels or features): each input cast once to ``Qout``, then joined.

    A cast of a value already in ``Qout``'s format changes nothing, so inputs
    that share the output's format pass unchanged.
    """

    def __init__(self, dim: int = 1, cfg: Optional[LayerQConfig] = None) -> None:
        super().__init__()
        cfg = cfg or LayerQConfig()
        self.dim = dim
        self.output_quantizer = make_quantizer(cfg.output, cfg.learn_int_bits)

    def _shape_repr(self) -> str:
        return f"dim={self.dim}"

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        xs = [as_float(t) for t in tensors]
        dtype = xs[0].dtype
        for t in xs[1:]:
            dtype = torch.promote_types(dtype, t.dtype)
        # One quantizer pass over the joined tensor: the same elementwise cast of every input.
        joined = torch.cat([t.to(dtype) for t in xs], self.dim)
        return cast_output(self.output_quantizer, joined, dtype, exact=not self.training)


def zero_stuff(x: torch.Tensor, insert: Sequence[int], padding: Sequence[Sequence[int]]) -> torch.Tensor:
    """``insert[d] - 1`` zeros between neighbours along each spatial dimension ``d``, then zero ``padding``.

    ``x`` is ``(N, C, *spatial)``; ``padding`` is ``[[begin, end], ...]``
    per spatial dimension.  Exact: values are moved, never computed.
    """
    spatial = x.shape[2:]
    if any(s > 1 for s in insert):
        size = [(n - 1) * s + 1 for n, s in zip(spatial, insert)]
        stuffed = x.new_zeros(x.shape[:2] + tuple(size))
        stuffed[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in insert)] = x
        x = stuffed
    flat = [p for pair in reversed([list(p) for p in padding]) for p in pair]
    return F.pad(x, flat) if any(flat) else x


class QZeroPad(QuantizedLayer):
    """Zero padding (``nn.ZeroPad1d/2d``, ``F.pad`` with zeros) and zero insertion: no arithmetic, no cast.

    Args:
        padding: ``[[begin, end], ...]`` per spatial dimension.
        insert: zero insertion factor per spatial dimension (1: none).
    """

    def __init__(self, padding: Sequence[Sequence[int]], insert: Optional[Sequence[int]] = None) -> None:
        super().__init__()
        self.padding = [[int(b), int(e)] for b, e in padding]
        self.insert = [int(s) for s in (insert or [1] * len(self.padding))]
        if any(v < 0 for p in self.padding for v in p) or any(s < 1 for s in self.insert):
            raise ValueError(f"QZeroPad: padding {self.padding} must be >= 0 and insert {self.insert} >= 1 "
                             "(cropping is not supported)")

    def _shape_repr(self) -> str:
        return f"padding={self.padding}, insert={self.insert}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != len(self.padding) + 2:
            raise ValueError(f"{self.describe()} expects {len(self.padding)} spatial dimensions, got shape "
                             f"{tuple(x.shape)}")
        return zero_stuff(x, self.insert, self.padding)


class QUpsample(QuantizedLayer):
    """Nearest-neighbour upsampling by integer factors (``nn.Upsample``, ``F.interpolate``): no cast."""

    def __init__(self, scale: Sequence[int]) -> None:
        super().__init__()
        self.scale = [int(s) for s in scale]
        if any(s < 1 for s in self.scale):
            raise ValueError(f"QUpsample: scale factors {self.scale} must be integers >= 1")

    def _shape_repr(self) -> str:
        return f"scale={self.scale}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.scale) == 1 and x.dim() > 3:  # one factor for every spatial dimension
            self.scale = self.scale * (x.dim() - 2)
        if x.dim() != len(self.scale) + 2:
            raise ValueError(f"{self.describe()} expects {len(self.scale)} spatial dimensions, got shape "
                             f"{tuple(x.shape)}")
        for d, s in enumerate(self.scale):
            x = x.repeat_interleave(s, dim=2 + d)
        return x


def _transposed_weight(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """A transposed convolution's ``(in, out/g, *k)`` weight as the equivalent convolution's ``(out, in/g, *k)``."""
    spatial = tuple(range(2, weight.dim()))
    per_group = weight.shape[0] // groups
    parts = [weight[g * per_group:(g + 1) * per_group].transpose(0, 1) for g in range(groups)]
    return torch.cat(parts, 0).flip(spatial).contiguous()


class _QConvTransposeNd:
    """A transposed convolution as the convolution it equals: zeros inserted and padded, then a stride-1 conv.

    ``ConvTranspose(x) = Conv(zero_stuff(x, stride, [d(k-1) - p, d(k-1) - p + output_padding]), W')`` with
    ``W'`` the weight with in/out channels swapped per group and its kernel flipped.  The numerics are
    those of the convolution (see :class:`~qfx.nn.QConv2d`): the inserted zeros add nothing.
    """

    _float_type: type = nn.Module

    def _setup(self, insert: Sequence[int], padding: Sequence[Sequence[int]]) -> None:
        self.insert, self.stuff_padding = [int(s) for s in insert], [[int(b), int(e)] for b, e in padding]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(zero_stuff(as_float(x), self.insert, self.stuff_padding))

    @classmethod
    def from_float(cls, module: nn.Module, cfg: Optional[LayerQConfig] = None,
                   input_width: Optional[int] = None):
        """The convolution equal to ``module`` (an ``nn.ConvTranspose1d/2d``), its weight and bias."""
        if not isinstance(module, cls._float_type):
            raise TypeError(f"{cls.__name__}.from_float expects an nn.{cls._float_type.__name__}, got "
                            f"{type(module).__name__}")
        if module.padding_mode != "zeros":
            raise ValueError(f"{cls.__name__}.from_float: padding_mode={module.padding_mode!r} is not supported")
        pads = []
        for k, d, p, op in zip(module.kernel_size, module.dilation, module.padding, module.output_padding):
            begin = d * (k - 1) - p
            if begin < 0:
                raise ValueError(f"{cls.__name__}.from_float: padding {p} is more than dilation * (kernel - 1) "
                                 f"= {d * (k - 1)}; that crops the output, which is not supported")
            pads.append([begin, begin + op])
        groups = module.groups
        layer = cls(module.out_channels, module.in_channels, module.kernel_size, 1, 0, module.dilation, groups,
                    module.bias is not None, cfg=cfg, input_width=input_width)
        layer._setup(module.stride, pads)
        layer.weight = nn.Parameter(_transposed_weight(module.weight.detach(), groups))
        if module.bias is not None:
            layer.bias = nn.Parameter(module.bias.detach().clone())
        layer.to(module.weight.device)
        return layer

    def _shape_repr(self) -> str:
        return f"{super()._shape_repr()}, insert={self.insert}, stuff_padding={self.stuff_padding}"


class QConvTranspose1d(_QConvTransposeNd, QConv1d):
    """``nn.ConvTranspose1d`` as zero insertion and padding, then a :class:`~qfx.nn.QConv1d` (exact)."""

    _float_type = nn.ConvTranspose1d

    def __init__(self, *args, **kwargs) -> None:
        QConv1d.__init__(self, *args, **kwargs)
        self._setup([1], [[0, 0]])


class QConvTranspose2d(_QConvTransposeNd, QConv2d):
    """``nn.ConvTranspose2d`` as zero insertion and padding, then a :class:`~qfx.nn.QConv2d` (exact)."""

    _float_type = nn.ConvTranspose2d

    def __init__(self, *args, **kwargs) -> None:
        QConv2d.__init__(self, *args, **kwargs)
        self._setup([1, 1], [[0, 0], [0, 0]])
