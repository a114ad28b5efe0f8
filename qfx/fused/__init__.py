"""The fused training-mode cast: ``Q(relu?(x * scale + shift))``, one pass each way.

``Q`` is the ``ap_fixed`` cast to a format with rounding ``AP_RND_CONV``,
``AP_TRN`` or ``AP_RND`` and overflow ``AP_SAT``, ``AP_SAT_ZERO``,
``AP_SAT_SYM`` or ``AP_WRAP`` (with or without saturation bits).  ``v`` may
be an affine map of the input with one scale and shift per channel
(dimension 1), as BatchNorm computes it, and a ReLU before the cast is a
lower bound of 0.  With ``n = round(r * 2**F)`` (``r`` the value cast, the
rounding formulas of :mod:`qfx.functional`):

* forward: ``q = overflow(n) * 2**-F``, equal to
  :func:`qfx.functional.cast_codes`'s values;
* backward: ``dL/dv = dL/dq * in(n)`` (``in``: ``n`` in the code range; for
  signed ``AP_SAT_SYM`` also not the most negative code; after a ReLU also
  ``v > 0``), and in the same sweep what the binary point needs, ``sum
  dL/dq * d - sum dL/dv * r`` with ``d = q`` where ``in(n)`` and ``d =
  clamp(r, min, max)`` elsewhere (the gradient of
  :class:`qfx.autograd._LearnedIntBitsCast`), and the per-channel scale and
  shift's ``sum dL/dv * x`` and ``sum dL/dv``.

:func:`cast_forward` and :func:`cast_backward` run a native kernel
(``kernels.cpp``, built on first use by :mod:`qfx.fused.native`) for
contiguous float32/float64 CPU tensors (with runs of one channel long enough,
:func:`qfx.fused.native.long_runs`): one read of ``x`` and one write of
``q`` forward; one read of ``x`` and the gradient and one write backward.
The kernels read a :class:`Table`: the modes, and one row of constants for
the tensor, or every row the format takes and each channel's row index
(binary points per channel).  For
``AP_RND_CONV``/``AP_SAT`` with one binary point, PyTorch operations compute
the same values and the same input gradient elsewhere, or with
``QFX_FUSED_KERNELS=0``: the float addition itself rounds
(:func:`nearest_even`), ``q = clamp((v + M) - M, lo, hi)``, and the
gradient passes where ``below < v < above``; the sums then differ by
summation order only (the kernel adds in float64 per thread).  Other formats
and per-channel tables need the kernels: their callers fall back to the
exact cast, as they do where the kernel meets a value it leaves to that cast
(outside ``AP_SAT``: a NaN, an infinity, or ``|r * 2**F|`` so large that
the exact cast folds it first; :func:`cast_forward` returns ``None``).
:func:`pair_forward` and :func:`pair_backward` are two such casts in a row
with a ReLU between them, ``q2 = Q2(max(Q1(v), 0))`` (a BatchNorm's or a
sum's output cast, then a ReLU's), in one pass each way; kernels only.
:func:`batch_moments` and :func:`channel_affine` are BatchNorm's batch
statistics and their backward pass, on the same terms; :func:`cast_moments`
and :func:`cast_moments_backward` a cast with the batch statistics of its
output (a convolution's output and the BatchNorm that reads it), kernels only;
:func:`fold_forward` and :func:`fold_backward` BatchNorm's fold of its
statistics into a scale and a shift per channel with both their casts, in one
call each way, kernels only.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import math
from typing import Optional, Union

import torch

from ..format import FixedType, Overflow, Rounding
from ..functional import _EXPONENT_RANGE, mantissa_bits
from . import native

__all__ = ["NearestEven", "Table", "nearest_even", "fixed_table", "channel_table", "kernels_take", "cast_forward",
           "cast_backward", "pair_forward", "pair_backward", "cast_moments", "cast_moments_backward", "batch_moments",
           "channel_affine", "fold_forward", "fold_backward"]

# The modes the kernels take, numbered as in qfx/cast_modes.h.
_ROUNDING = {Rounding.RND: 0, Rounding.RND_CONV: 4, Rounding.TRN: 5}
_OVERFLOW = {Overflow.SAT: 0, Overflow.SAT_ZERO: 1, Overflow.SAT_SYM: 2, Overflow.WRAP: 3}


@dataclasses.dataclass(frozen=True, eq=False)
class Table:
    """The constants of one cast as the kernels read them.

    ``rows`` has one row per binary point (one for the tensor, or one per
    channel along ``dim``; or every binary point the format takes, from
    ``fracs[0]`` to ``fracs[-1]``, and ``index``, int32, each channel's
    row): ``2**F``, ``2**-F``, ``code_min``, ``code_max``,
    SAT_SYM's lower code (``code_min | 1`` signed, 0 unsigned), ``code_min *
    2**-F``, ``code_max * 2**-F``, in the tensor's dtype.  ``ints`` holds
    rounding, overflow, width, saturation bits and signedness; ``reals``
    ``2**(m-1)`` (``m`` the mantissa bits: half-rounding keeps larger values),
    the ``|r * 2**F|`` the kernel leaves to the exact cast (as
    :mod:`qfx.cast_native` does) and the lower bound of ``r`` (0 after a
    ReLU, else ``-inf``).
    """

    rows: torch.Tensor
    ints: ctypes.Array
    reals: ctypes.Array
    dim: int  #: the channel dimension of the rows; -1 for one row
    index: Optional[torch.Tensor] = None  #: each channel's row, where the rows are every binary point's
    fracs: Optional[range] = None  #: the binary point of each row, with ``index``


def _kernel_takes(t: FixedType, frac_bits: int, dtype: torch.dtype) -> bool:
    """Whether the kernels cast to ``t`` with ``frac_bits`` in ``dtype`` as :func:`qfx.functional.cast_codes` does:
    the modes, a width below the mantissa, and no binary point whose scaling needs that cast's fix-ups (TRN with
    ``F < 0``, float64 with ``F >= 1022``) or leaves the exponent range."""
    if t.rounding not in _ROUNDING or t.overflow not in _OVERFLOW or dtype not in _EXPONENT_RANGE:
        return False
    e_min, e_max = _EXPONENT_RANGE[dtype]
    return (t.width < mantissa_bits(dtype) and -frac_bits >= e_min and frac_bits <= e_max
            and t.width - frac_bits <= e_max + 1 and not (frac_bits < 0 and t.rounding is Rounding.TRN)
            and frac_bits < 1022)


@dataclasses.dataclass(frozen=True, eq=False)
class _Rows:
    """Every row the kernels take for one format in one dtype: ``rows[F - first]`` for ``first <= F <= last``."""

    first: int
    last: int
    rows: torch.Tensor
    ints: ctypes.Array
    reals: ctypes.Array

    @property
    def fracs(self) -> range:
        """The binary point of each row."""
        return range(self.first, self.last + 1)


@functools.lru_cache(maxsize=None)
def _all_rows(t: FixedType, dtype: torch.dtype, relu: bool) -> Optional[_Rows]:
    """The rows of every binary point the kernels take for ``t`` (an interval: each condition bounds ``F``)."""
    taken = [f for f in range(-1100, 1100) if _kernel_takes(t, f, dtype)]
    if not taken:
        return None
    low = (t.code_min | 1) if t.signed else 0
    rows = torch.tensor([[math.ldexp(1.0, f), math.ldexp(1.0, -f), t.code_min, t.code_max, low,
                          math.ldexp(t.code_min, -f), math.ldexp(t.code_max, -f)] for f in taken], dtype=dtype)
    bits = mantissa_bits(dtype)
    ints = (ctypes.c_int64 * 5)(_ROUNDING[t.rounding], _OVERFLOW[t.overflow], t.width, t.sat_bits, int(t.signed))
    reals = (ctypes.c_double * 3)(2.0 ** (bits - 1), min(2.0 ** 62, 2.0 ** (bits + t.width + 2)),
                                  0.0 if relu else -math.inf)
    return _Rows(taken[0], taken[-1], rows, ints, reals)


@functools.lru_cache(maxsize=4096)
def _table(t: FixedType, frac_bits: int, dtype: torch.dtype, relu: bool) -> Optional[Table]:
    every = _all_rows(t, dtype, relu)
    if every is None or not every.first <= frac_bits <= every.last:
        return None
    start = frac_bits - every.first
    return Table(every.rows[start:start + 1], every.ints, every.reals, -1)


def fixed_table(t: FixedType, frac_bits: int, dtype: torch.dtype, relu: bool = False) -> Optional[Table]:
    """The kernels' table for ``t`` with one binary point ``frac_bits`` in ``dtype`` (a ReLU first if ``relu``),
    or ``None`` where the kernels do not take the format (see the module docstring) or are not built."""
    if native.library() is None:
        return None
    return _table(t, frac_bits, dtype, relu)


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
    t: FixedType  #: the format
    frac_bits: int  #: its binary point
    relu: bool = False  #: whether a ReLU comes first

    def after_relu(self) -> "NearestEven":
        """The same cast of ``max(v, 0)``: nothing below 0, and no gradient where ``v <= 0``."""
        return _after_relu(self)

    @property
    def table(self) -> Table:
        """The same cast as the kernels read it."""
        return _table(self.t, self.frac_bits, self.dtype, self.relu)


@functools.lru_cache(maxsize=None)
def _after_relu(p: NearestEven) -> NearestEven:
    return dataclasses.replace(p, lo=max(p.lo, 0.0), below=max(p.below, 0.0), relu=True)


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
                       above=math.ldexp(t.code_max + 0.5, -frac_bits), dtype=dtype, t=t, frac_bits=frac_bits)


def channel_table(t: FixedType, int_bits: torch.Tensor, dtype: torch.dtype, dim: int,
                  relu: bool = False) -> Optional[Table]:
    """The kernels' table for binary points per channel along ``dim``, ``int_bits`` (float, rounded half to even;
    a ReLU first if ``relu``): every row the format takes and each channel's row, found in one native call;
    ``None`` where the kernels do not take some channel's binary point or are not built."""
    if native.library() is None:
        return None
    every = _all_rows(t, dtype, relu)
    if every is None:
        return None
    index = native.point_rows(int_bits, t.width, every.first, len(every.fracs))
    if index is None:
        return None
    return Table(every.rows, every.ints, every.reals, dim, index, every.fracs)


def _channel_view(x: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    return values.view((1, -1) + (1,) * (x.dim() - 2))


def _affine(x: torch.Tensor, scale: Optional[torch.Tensor], shift: Optional[torch.Tensor]) -> torch.Tensor:
    """``x * scale + shift`` per channel, two roundings (as the kernel computes it); ``x`` without a scale."""
    if scale is None:
        return x
    return (x * _channel_view(x, scale)).add_(_channel_view(x, shift))


def kernels_take(x: torch.Tensor, scale: Optional[torch.Tensor] = None, shift: Optional[torch.Tensor] = None) -> bool:
    """Whether the kernels cast ``x`` (with its per-channel ``scale`` and ``shift``, if any)."""
    return native.applies(x, scale, shift) and (scale is None or native.long_runs(x, 1))


def cast_forward(x: torch.Tensor, p: Union[NearestEven, Table], scale: Optional[torch.Tensor] = None,
                 shift: Optional[torch.Tensor] = None, kernels: Optional[bool] = None) -> Optional[torch.Tensor]:
    """``q = Q(relu?(v))`` with ``v = x * scale + shift`` (per channel of dimension 1) or ``v = x``; ``None`` where
    the kernel leaves a value to the exact cast (see the module docstring).

    ``scale`` and ``shift`` come together or not at all, in ``x``'s dtype
    (not with a per-channel :class:`Table`).  A :class:`Table` needs the
    kernels: the caller checked :func:`qfx.fused.native.applies` (and
    :func:`qfx.fused.native.long_runs` with a scale).  Not differentiable
    itself: :mod:`qfx.autograd` wraps it.
    """
    if isinstance(p, Table):
        return native.cast_forward(x, p, 1 if scale is not None else p.dim, scale, shift)
    if kernels_take(x, scale, shift) if kernels is None else kernels:
        return native.cast_forward(x, p.table, -1 if scale is None else 1, scale, shift)
    v = _affine(x, scale, shift)
    q = torch.add(v, p.magic) if v is x else v.add_(p.magic)
    return q.sub_(p.magic).clamp_(p.lo, p.hi)


def _as_operand(g: Optional[torch.Tensor], x: torch.Tensor) -> Optional[torch.Tensor]:
    """``g`` in ``x``'s dtype and device, contiguous, as a kernel reads it beside ``x``."""
    if g is None:
        return None
    if g.dtype != x.dtype or g.device != x.device:
        g = g.to(x)
    return g.contiguous()


def cast_backward(grad: torch.Tensor, x: torch.Tensor, q: torch.Tensor, p: Union[NearestEven, Table],
                  scale: Optional[torch.Tensor], shift: Optional[torch.Tensor], weight: torch.Tensor,
                  kernels: Optional[bool] = None,
                  ) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor],
                             Optional[bool]]:
    """``(dL/dx, point, dL/dscale, dL/dshift, finite)`` for the cast of :func:`cast_forward`, which returned ``q``
    (``kernels`` as there).

    With ``g = dL/dq`` and ``g' = g * in(n)`` (see the module docstring):
    ``dL/dx = g' * scale`` (``g'`` without a scale); ``point = weight * (sum
    g*d - sum g'*r)``, one float32 entry per row of the constants, summed in
    float64 and scaled by the caller's float64 ``weight`` (one per row) before
    rounding: what a binary point's gradient is made of; ``dL/dscale = sum
    g'*x`` and ``dL/dshift = sum g'`` per channel (``None`` without a scale).
    ``finite`` is ``True`` where the kernel found every entry of ``point``
    finite, ``False`` where it did not, ``None`` from PyTorch operations (not
    looked at).
    """
    if isinstance(p, Table):
        return native.cast_backward(_as_operand(grad, x), x, p, 1 if scale is not None else p.dim, scale, shift,
                                    weight)
    if (kernels_take(x, scale, shift) if kernels is None else kernels) and grad.dtype == x.dtype \
            and grad.device == x.device:
        return native.cast_backward(grad.contiguous(), x, p.table, -1 if scale is None else 1, scale, shift, weight)
    v = _affine(x, scale, shift)
    kept = torch.ops.aten.hardtanh_backward(grad, v, p.below, p.above)
    point = torch.dot(grad.reshape(-1), q.reshape(-1)) - torch.dot(kept.reshape(-1), v.reshape(-1))
    point = (point.double() * weight.to(point.device)).float()
    if scale is None:
        return kept, point, None, None, None
    dims = [0] + list(range(2, x.dim()))
    return kept * _channel_view(x, scale), point, (kept * x).sum(dims), kept.sum(dims), None


def pair_forward(x: torch.Tensor, first: Table, second: Table, scale: Optional[torch.Tensor] = None,
                 shift: Optional[torch.Tensor] = None) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """``(q1, q2)`` with ``q1 = Q1(v)`` (``v`` as in :func:`cast_forward`) and ``q2 = Q2(max(q1, 0))``, one
    read of ``x`` and one write of each; ``None`` where a kernel leaves a value to the exact cast.

    ``first`` is one row (or one per channel of dimension 1, without an index), ``second`` one row built
    for a ReLU first (:func:`fixed_table` with ``relu=True``).  The values equal the two casts done one after
    the other.  The caller checked :func:`kernels_take`.
    """
    return native.pair_forward(x, first, second, scale, shift)


def pair_backward(grad1: Optional[torch.Tensor], grad2: torch.Tensor, x: torch.Tensor, first: Table,
                  second: Table, scale: Optional[torch.Tensor], shift: Optional[torch.Tensor], weight1: torch.Tensor,
                  weight2: torch.Tensor):
    """``(dL/dx, point1, point2, dL/dscale, dL/dshift, finite)`` for :func:`pair_forward` from ``grad2 = dL/dq2`` and
    ``grad1 = dL/dq1`` (``None`` where ``q1`` reaches the loss only through ``q2``).

    ``q1`` is recomputed from ``x`` run by run; ``dL/dq1 = grad1 + grad2 * in2 * (q1 > 0)`` and everything
    else as :func:`cast_backward` gives it for each cast (``point1`` one entry per row of ``first``,
    ``point2`` one), the input gradient bit for bit, the sums of the second cast in another order; ``finite``
    as :func:`cast_backward` gives it.
    """
    return native.pair_backward(_as_operand(grad1, x), _as_operand(grad2, x), x, first, second, scale, shift,
                                weight1, weight2)


def cast_moments(x: torch.Tensor, p: Table) -> Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``(q, mean, var)``: ``q = Q(x)`` with the one-row table ``p`` and :func:`batch_moments` of ``q``, equal to
    them bit for bit, in one read of ``x``; ``None`` where the kernel leaves a value to the exact cast.  The
    caller checked :func:`kernels_take` and :func:`qfx.fused.native.long_runs` along dimension 1."""
    return native.cast_moments(x, p)


def cast_moments_backward(grad: torch.Tensor, x: torch.Tensor, p: Table, grad_mean: Optional[torch.Tensor],
                          grad_var: Optional[torch.Tensor], mean: torch.Tensor,
                          weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """``(dL/dx, point, finite)`` for :func:`cast_moments`: ``dL/dq = (q * slope + offset) + grad`` per channel
    (what the statistics' gradient adds, as :func:`channel_affine` computes it), with ``slope = grad_var * (2 /
    n)`` and ``offset = grad_mean / n - slope * mean`` (``n`` the values per channel; a missing gradient is
    zero; rounded as these PyTorch operations round), then :func:`cast_backward` with it (``q`` recomputed run
    by run; ``point`` 0-d, summed in another order; ``finite`` as there), in one native call."""
    grad, grad_mean, grad_var = (_as_operand(g, x) for g in (grad, grad_mean, grad_var))
    return native.cast_moments_backward(grad, x, p, grad_mean, grad_var, mean, weight)


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


def fold_forward(mean: torch.Tensor, r: torch.Tensor, gamma: Optional[torch.Tensor], beta: Optional[torch.Tensor],
                 scale_cast: tuple, shift_cast: tuple) -> Optional[tuple]:
    """BatchNorm's ``scale = gamma * r`` and ``shift = beta - mean * scale`` per channel (``r = 1 / sqrt(var + eps)``,
    from the caller; without ``gamma`` ``scale = r``, without ``beta`` ``shift = -mean * scale``), each operation
    rounded once as PyTorch's are, and their casts, in one native call: ``((scale, shift), (qscale, qshift),
    casts)`` with ``casts`` what :func:`fold_backward` needs; ``None`` where the kernels do not take the tensors,
    a format or a value.

    ``scale_cast`` and ``shift_cast`` are each ``(t, bits)``: the format and one binary point per channel
    (rounded half to even), in ``mean``'s dtype.  The values equal the PyTorch operations followed by
    :func:`cast_forward` with each :func:`channel_table`, bit for bit.
    """
    per_channel = (r, gamma, beta, scale_cast[1], shift_cast[1])
    if not native.applies(mean, *per_channel) or any(t is not None and t.shape != mean.shape for t in per_channel):
        return None
    casts = []
    for t, bits in (scale_cast, shift_cast):
        every = _all_rows(t, mean.dtype, False)
        if every is None:
            return None
        casts.append((bits, every))
    computed = native.fold_forward(mean, r, gamma, beta, tuple(casts))
    if computed is None:
        return None
    scale, shift, qscale, qshift, index_scale, index_shift = computed
    return (scale, shift), (qscale, qshift), ((casts[0][1], index_scale), (casts[1][1], index_shift))


def fold_backward(grad_qscale: torch.Tensor, grad_qshift: torch.Tensor, saved: tuple, gamma: Optional[torch.Tensor],
                  casts: tuple, weights: tuple) -> tuple[tuple[torch.Tensor, ...], bool]:
    """The backward pass of :func:`fold_forward` in one native call: ``((grad_mean, grad_var, grad_gamma,
    grad_beta, point_scale, point_shift), finite)``.

    ``saved`` is ``(scale, shift, mean, r)``; ``casts`` as :func:`fold_forward` returned it; ``weights`` the
    float64 weight of each row of the two formats (as :func:`cast_backward` takes them).  The casts'
    backward passes give the gradients of ``scale`` and ``shift`` and the binary points' (one per channel),
    then ``g = grad_scale - grad_shift * mean``, ``grad_mean = -grad_shift * scale``, ``grad_gamma = g * r``,
    ``grad_var = g * slope * r * r * -0.5`` (``slope = gamma * r``, or ``r``) and ``grad_beta =
    grad_shift``, each operation rounded once, as PyTorch's are (``grad_gamma`` ``None`` without ``gamma``).
    ``finite`` is ``False`` where some binary point's gradient is not finite.
    """
    grads = (_as_operand(grad_qscale, saved[2]), _as_operand(grad_qshift, saved[2]))
    computed, status = native.fold_backward(*grads, saved, gamma,
                                            tuple((every, index, weight) for (every, index), weight
                                                  in zip(casts, weights)))
    grad_mean, grad_var, grad_gamma, grad_beta, point_scale, point_shift = computed
    return (grad_mean, grad_var, None if gamma is None else grad_gamma, grad_beta, point_scale, point_shift), \
        status == 0
