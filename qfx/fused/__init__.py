"""The fused training-mode cast: ``Q(relu?(x * scale + shift))`` for ``AP_RND_CONV`` + ``AP_SAT``, one pass each way.

Training casts most tensors to ``AP_RND_CONV``/``AP_SAT`` formats.  For
those, the float addition itself rounds (see :func:`nearest_even`), so the
forward pass is ``clamp((v + M) - M, lo, hi)`` and the backward pass keeps
the gradient where ``below < v < above``.  Here ``v`` may be an affine map
of the input with one scale and shift per channel (dimension 1), as
BatchNorm computes it, and a ReLU before the cast is a lower bound of 0
(:meth:`NearestEven.after_relu`).  The constants come as one row for the
tensor (:class:`NearestEven`) or one row per channel (:class:`ChannelTable`,
for binary points per channel).

:func:`cast_forward` and :func:`cast_backward` run a native kernel
(``kernels.cpp``, built on first use by :mod:`qfx.fused.native`) for
contiguous float32/float64 CPU tensors (with runs of one channel long enough,
:func:`qfx.fused.native.long_runs`): one read of ``x`` and one write of
``q`` forward; one read of ``x`` and the gradient and one write backward,
which also sums what the binary point, scale and shift need.  Elsewhere, or
with ``QFX_FUSED_KERNELS=0``, PyTorch operations compute the same values and
the same input gradient (per-channel tables need the kernels: their callers
fall back to the exact cast); the sums then differ by summation order only
(the kernel adds in float64 per thread).  :func:`batch_moments` and
:func:`channel_affine` are BatchNorm's batch statistics and their backward
pass, on the same terms.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Optional, Union

import torch

from ..format import FixedType, Overflow, Rounding
from ..functional import _EXPONENT_RANGE, mantissa_bits
from . import native

__all__ = ["NearestEven", "ChannelTable", "nearest_even", "channel_table", "cast_forward", "cast_backward",
           "batch_moments", "channel_affine"]


@dataclasses.dataclass(frozen=True)
class NearestEven:
    """Constants of the training-mode cast to one format in one dtype.

    ``q = clamp((v + magic) - magic, lo, hi)``; the gradient passes where
    ``below < v < above``.
    """

    magic: float  #: ``1.5 * 2**(m - 1 - F)``: adding it rounds to the LSB, ties to even
    lo: float  #: the smallest value, ``code_min * 2**-F``
    hi: float  #: the largest value, ``code_max * 2**-F``
    below: float  #: the float just below the tie under ``code_min`` (it rounds into range)
    above: float  #: the tie above ``code_max`` (it rounds out of range, to the even ``code_max + 1``)
    dtype: torch.dtype  #: the dtype the constants are exact in

    def after_relu(self) -> "NearestEven":
        """The same cast of ``max(v, 0)``: nothing below 0, and no gradient where ``v <= 0``."""
        return _after_relu(self)

    @functools.cached_property
    def table(self) -> torch.Tensor:
        """The constants as the kernels read them: one row ``(magic, lo, hi, below, above)``."""
        return torch.tensor([[self.magic, self.lo, self.hi, self.below, self.above]], dtype=self.dtype)


@functools.lru_cache(maxsize=None)
def _after_relu(p: NearestEven) -> NearestEven:
    return dataclasses.replace(p, lo=max(p.lo, 0.0), below=max(p.below, 0.0))


@dataclasses.dataclass(frozen=True, eq=False)
class ChannelTable:
    """The constants of one cast per channel along ``dim`` (kernels only): ``table`` has one row per channel."""

    table: torch.Tensor
    dim: int


@functools.lru_cache(maxsize=None)
def nearest_even(t: FixedType, frac_bits: int, dtype: torch.dtype) -> Optional[NearestEven]:
    """The constants for ``t`` with ``frac_bits`` fractional bits in ``dtype``, or ``None`` where the shortcut fails.

    While ``|v| < 2**(m - 2 - F)`` (``m`` the mantissa bits), ``v + M`` lies
    in one binade whose spacing is the LSB ``2**-F``, so the addition rounds
    ``v`` to the nearest multiple of the LSB, ties to even (``M``'s
    significand is even), and the subtraction is exact.  Larger ``|v|`` lie
    beyond the range and stay there, on their own side, and are clamped to
    the end the exact cast saturates to; infinities saturate and NaN stays
    NaN.  The values equal :func:`qfx.functional.cast_codes`'s codes times
    the LSB (a zero may come out as ``+0.0`` where the exact cast gives
    ``-0.0``).  ``None`` for another mode, a format wider than ``m - 2``
    bits, a 1-bit signed format (odd ``code_min``), a binary point near the
    ends of the exponent range or a dtype other than float32/float64.
    """
    if (t.rounding is not Rounding.RND_CONV or t.overflow is not Overflow.SAT or dtype not in _EXPONENT_RANGE):
        return None
    bits = mantissa_bits(dtype)
    e_min, e_max = _EXPONENT_RANGE[dtype]
    if (t.width > bits - 2 or t.code_min % 2 or not t.code_max % 2
            or not e_min < -frac_bits - 1 or bits - 1 - frac_bits > e_max or t.width - frac_bits > e_max):
        return None
    tie_below = torch.tensor(math.ldexp(t.code_min - 0.5, -frac_bits), dtype=dtype)
    below = float(torch.nextafter(tie_below, torch.tensor(-math.inf, dtype=dtype)))
    return NearestEven(magic=math.ldexp(1.5, bits - 1 - frac_bits), lo=math.ldexp(t.code_min, -frac_bits),
                       hi=math.ldexp(t.code_max, -frac_bits), below=below,
                       above=math.ldexp(t.code_max + 0.5, -frac_bits), dtype=dtype)


@functools.lru_cache(maxsize=4096)
def channel_table(t: FixedType, frac_bits: tuple[int, ...], dtype: torch.dtype, dim: int,
                  relu: bool = False) -> Optional[ChannelTable]:
    """One :func:`nearest_even` row per channel along ``dim``, for the kernels; ``None`` where any row fails
    or the kernels are not built."""
    rows = [nearest_even(t, f, dtype) for f in frac_bits]
    if native.library() is None or any(r is None for r in rows):
        return None
    rows = [_after_relu(r) if relu else r for r in rows]
    return ChannelTable(torch.cat([r.table for r in rows]), dim)


def _channel_view(x: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    return values.view((1, -1) + (1,) * (x.dim() - 2))


def _affine(x: torch.Tensor, scale: Optional[torch.Tensor], shift: Optional[torch.Tensor]) -> torch.Tensor:
    """``x * scale + shift`` per channel, two roundings (as the kernel computes it); ``x`` without a scale."""
    if scale is None:
        return x
    return (x * _channel_view(x, scale)).add_(_channel_view(x, shift))


def _kernels_take(x: torch.Tensor, scale: Optional[torch.Tensor], shift: Optional[torch.Tensor]) -> bool:
    """Whether the kernels cast ``x`` (with its per-channel ``scale`` and ``shift``, if any)."""
    return native.applies(x, scale, shift) and (scale is None or native.long_runs(x, 1))


def cast_forward(x: torch.Tensor, p: Union[NearestEven, ChannelTable], scale: Optional[torch.Tensor] = None,
                 shift: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``clamp((v + M) - M, lo, hi)`` with ``v = x * scale + shift`` (per channel of dimension 1) or ``v = x``.

    ``scale`` and ``shift`` come together or not at all, in ``x``'s dtype
    (not with a :class:`ChannelTable`, which needs the kernels: the caller
    checked :func:`qfx.fused.native.applies`).  Not differentiable itself:
    :mod:`qfx.autograd` wraps it.
    """
    if isinstance(p, ChannelTable):
        return native.cast_forward(x, p.table, p.dim, None, None)
    if _kernels_take(x, scale, shift):
        return native.cast_forward(x, p.table, -1 if scale is None else 1, scale, shift)
    v = _affine(x, scale, shift)
    q = torch.add(v, p.magic) if v is x else v.add_(p.magic)
    return q.sub_(p.magic).clamp_(p.lo, p.hi)


def cast_backward(grad: torch.Tensor, x: torch.Tensor, q: torch.Tensor, p: Union[NearestEven, ChannelTable],
                  scale: Optional[torch.Tensor], shift: Optional[torch.Tensor], weight: torch.Tensor,
                  ) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """``(dL/dx, point, dL/dscale, dL/dshift)`` for the cast of :func:`cast_forward`, which returned ``q``.

    With ``g = dL/dq`` and ``g' = g`` where ``below < v < above``, else 0:
    ``dL/dx = g' * scale`` (``g'`` without a scale); ``point = weight * (sum
    g*q - sum g'*v)``, one float32 entry per row of the constants, summed in
    float64 and scaled by the caller's float64 ``weight`` (one per row) before
    rounding: what a binary point's gradient is made of; ``dL/dscale = sum
    g'*x`` and ``dL/dshift = sum g'`` per channel (``None`` without a scale).
    """
    if isinstance(p, ChannelTable):
        return native.cast_backward(grad, x, p.table, p.dim, None, None, weight)
    if _kernels_take(x, scale, shift) and grad.dtype == x.dtype and grad.device == x.device:
        return native.cast_backward(grad, x, p.table, -1 if scale is None else 1, scale, shift, weight)
    v = _affine(x, scale, shift)
    kept = torch.ops.aten.hardtanh_backward(grad, v, p.below, p.above)
    point = torch.dot(grad.reshape(-1), q.reshape(-1)) - torch.dot(kept.reshape(-1), v.reshape(-1))
    point = (point.double() * weight.to(point.device)).float()
    if scale is None:
        return kept, point, None, None
    dims = [0] + list(range(2, x.dim()))
    return kept * _channel_view(x, scale), point, (kept * x).sum(dims), kept.sum(dims)


def batch_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (dimension 1) mean and biased variance of ``x`` (``N, C, ...``), in ``x``'s dtype."""
    if native.applies(x) and native.long_runs(x, 1):
        return native.channel_moments(x)
    dims = [0] + list(range(2, x.dim()))
    mean = x.mean(dims, keepdim=True)
    return mean.flatten(), (x - mean).square_().mean(dims)


def channel_affine(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, z: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``(x * a + b) + z`` with one ``a`` and ``b`` per channel of dimension 1 (``z``, shaped like ``x``, optional),
    rounding after each operation."""
    if (native.applies(x, a, b) and native.long_runs(x, 1)
            and (z is None or (z.is_contiguous() and z.dtype == x.dtype and z.device == x.device))):
        return native.channel_affine(x, a, b, z)
    y = _affine(x, a, b)
    return y if z is None else y.add_(z)
