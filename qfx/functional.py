"""The exact ``ap_fixed`` cast on tensors.

``quantize(x, t)`` returns what ``t(x)`` gives in C++ for every element of
``x``: the value is scaled to units of the LSB (``v = x * 2**F``, exact: a
power-of-two scale), rounded to an integer code by one small function per
rounding mode, then brought into range by one function per overflow mode.
Everything stays in the tensor's floating dtype, which holds every code of
``t`` exactly as long as ``t.width`` fits its mantissa (24 bits for float32,
53 for float64); wider formats are refused rather than computed wrongly.

The overflow modes that work on bit patterns (``WRAP`` with saturation bits
and ``WRAP_SM``) run in int64 on the overflowing elements only.  Bounds of
the whole tensor (one ``aminmax`` pass, which also finds NaN and Inf) tell
when no element can overflow, so the common case skips that work entirely.
With one binary point the native cast (:mod:`qfx.cast_native`) gives the same
codes in one pass; these PyTorch ops are its fallback.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Union

import torch

from . import cast_native
from .format import FixedType, Overflow, Rounding

__all__ = ["to_codes", "from_codes", "cast_codes", "cast_values", "saturating_cast_codes",
           "in_range_grad", "mantissa_bits"]

FixedLike = Union[FixedType, str]
FracBits = Union[int, torch.Tensor]


def mantissa_bits(dtype: torch.dtype) -> int:
    """Integer bits a floating dtype holds exactly (24 for float32, 53 for float64)."""
    return {torch.float32: 24, torch.float64: 53}[dtype]


# Largest and smallest binary exponents whose powers are normal numbers.
_EXPONENT_RANGE = {torch.float32: (-126, 127), torch.float64: (-1022, 1023)}


# ------------------------------------------------------------- rounding modes
# Each takes v = x * 2**F and returns its integer code under the mode; they
# may work in place.  v + 0.5 is not always exact (0.5 - 2**-54 + 0.5 rounds
# to 1), so the half-up and half-down modes round 2v to an integer m first:
# floor(v + 0.5) == floor((floor(2v) + 1) / 2), every step exact.  |v| - 0.5
# is exact for |v| >= 0.5 and harmless below.  All are exact while
# |v| < 2**(mantissa-1); _round_codes keeps larger v, integers already, as is.

def _rnd(v: torch.Tensor) -> torch.Tensor:
    return v.mul_(2.0).floor_().add_(1.0).mul_(0.5).floor_()


def _rnd_zero(v: torch.Tensor) -> torch.Tensor:
    return v.abs().sub_(0.5).ceil_().copysign_(v)


def _rnd_min_inf(v: torch.Tensor) -> torch.Tensor:
    return v.mul_(2.0).ceil_().sub_(1.0).mul_(0.5).ceil_()


def _rnd_inf(v: torch.Tensor) -> torch.Tensor:
    return v.abs().mul_(2.0).floor_().add_(1.0).mul_(0.5).floor_().copysign_(v)


def _rnd_conv(v: torch.Tensor) -> torch.Tensor:
    return v.round_()  # IEEE round-half-even


def _trn(v: torch.Tensor) -> torch.Tensor:
    return v.floor_()


def _trn_zero(v: torch.Tensor) -> torch.Tensor:
    return v.trunc_()


_ROUNDERS: dict[Rounding, Callable[[torch.Tensor], torch.Tensor]] = {
    Rounding.RND: _rnd,
    Rounding.RND_ZERO: _rnd_zero,
    Rounding.RND_MIN_INF: _rnd_min_inf,
    Rounding.RND_INF: _rnd_inf,
    Rounding.RND_CONV: _rnd_conv,
    Rounding.TRN: _trn,
    Rounding.TRN_ZERO: _trn_zero,
}
_HALF_ROUNDERS = {Rounding.RND, Rounding.RND_ZERO, Rounding.RND_MIN_INF, Rounding.RND_INF}


def _round_codes(v: torch.Tensor, rounding: Rounding, big: bool) -> torch.Tensor:
    """Integer codes of ``v`` under ``rounding``; ``big`` says some |v| may reach 2**(mantissa-1)."""
    if big and rounding in _HALF_ROUNDERS:
        limit = 2.0 ** (mantissa_bits(v.dtype) - 1)
        return torch.where(v.abs() >= limit, v, _ROUNDERS[rounding](v.clone()))
    return _ROUNDERS[rounding](v)


# ------------------------------------------------------------- overflow modes
# Each takes the rounded codes n (possibly some out of range) and returns the
# codes ap_fixed stores.  The context gives, when asked, the mask of codes
# outside the range and the scaled source for the bits it dropped.

class _Overflowing:
    """Codes that may lie outside the range of ``t``, with what the overflow modes may ask of them."""

    def __init__(self, n: torch.Tensor, t: FixedType, scaled_source: Callable[[], torch.Tensor],
                 big: bool) -> None:
        self.n, self.t, self.big = n, t, big
        self._scaled_source = scaled_source
        self._inside: Optional[torch.Tensor] = None

    @property
    def inside(self) -> torch.Tensor:
        """Where the rounded code is representable (SAT_SYM: and not the most negative code)."""
        if self._inside is None:
            t, n = self.t, self.n
            self._inside = (n >= t.code_min) & (n <= t.code_max)
            if t.overflow is Overflow.SAT_SYM and t.signed:
                self._inside &= n != t.code_min
        return self._inside

    def scaled_source(self) -> torch.Tensor:
        """``x * 2**F`` before rounding."""
        return self._scaled_source()


def _sat(o: _Overflowing) -> torch.Tensor:
    return o.n.clamp_(o.t.code_min, o.t.code_max)


def _sat_zero(o: _Overflowing) -> torch.Tensor:
    return o.n.masked_fill_(~o.inside, 0.0)


def _sat_sym(o: _Overflowing) -> torch.Tensor:
    # ap_fixed stores min | 1 on underflow: -max, except a 1-bit word, where that is min itself.
    low = (o.t.code_min | 1) if o.t.signed else 0
    return o.n.clamp_(low, o.t.code_max)


def _wrap(o: _Overflowing) -> torch.Tensor:
    t, n = o.t, o.n
    if t.sat_bits:
        return _replace_outside(o, _wrap_sat_bits)
    modulus = 2.0 ** t.width
    if not t.signed:
        return n.remainder_(modulus)
    half = modulus / 2
    if o.big:  # n + half would not be exact: reduce first, then move the top half down
        n = n.remainder_(modulus)
        return torch.where(n >= half, n - modulus, n)
    return n.add_(half).remainder_(modulus).sub_(half)


def _wrap_sm(o: _Overflowing) -> torch.Tensor:
    return _replace_outside(o, _wrap_sm_bits)


def _wrap_sat_bits(w: torch.Tensor, neg: torch.Tensor, lead: torch.Tensor, t: FixedType) -> torch.Tensor:
    """``AP_WRAP`` with N saturation bits: the top N bits of the wrapped word saturate."""
    width, n_bits = t.width, t.sat_bits
    top = ((1 << n_bits) - 1) << (width - n_bits)
    if not t.signed:  # ap_ufixed sets the top N bits whichever way it overflowed
        return w | top
    return _saturate_top_bits(w, neg, t)


def _wrap_sm_bits(w: torch.Tensor, neg: torch.Tensor, lead: torch.Tensor, t: FixedType) -> torch.Tensor:
    """``AP_WRAP_SM``: sign-magnitude wrap, inverting the word where its sign came out wrong."""
    width, n_bits = t.width, t.sat_bits
    mask = (1 << width) - 1
    msb = (w >> (width - 1)) & 1
    if n_bits == 0:
        # ap_fixed compares the first dropped bit of the unrounded source with the new sign.
        return torch.where(lead != msb, ~w & mask, w)
    if n_bits == 1:
        return torch.where(neg.long() != msb, ~w & mask, w)
    lowest_saturated = (w >> (width - n_bits)) & 1
    w = torch.where(lowest_saturated == neg.long(), ~w & mask, w)
    return _saturate_top_bits(w, neg, t)


def _saturate_top_bits(w: torch.Tensor, neg: torch.Tensor, t: FixedType) -> torch.Tensor:
    """Signed words: positive overflow gets sign 0 and the next N-1 bits 1; negative, sign 1 and 0s."""
    top = ((1 << t.sat_bits) - 1) << (t.width - t.sat_bits)
    sign = 1 << (t.width - 1)
    return torch.where(neg, (w & ~top) | sign, (w & ~top) | (top & ~sign))


def _replace_outside(o: _Overflowing, rule: Callable[..., torch.Tensor]) -> torch.Tensor:
    """Apply a bit-pattern overflow rule, in int64, to the codes outside the range."""
    t, n = o.t, o.n
    outside = ~o.inside
    if not bool(outside.any()):
        return n
    code = n[outside]
    bits = _low_bits(code, t.width + 1)
    lead = torch.zeros_like(bits)
    if rule is _wrap_sm_bits and t.sat_bits == 0:
        lead = _low_bits(torch.floor(o.scaled_source()[outside]), t.width + 1) >> t.width
    w = rule(bits & ((1 << t.width) - 1), code < 0, lead, t)
    if t.signed:
        w = w - ((w >> (t.width - 1)) & 1) * (1 << t.width)
    n[outside] = w.to(n.dtype)
    return n


def _low_bits(integers: torch.Tensor, count: int) -> torch.Tensor:
    """Bits ``0..count-1`` of the two's complement of integer-valued floats, as int64.

    ``fmod`` keeps the sign and never leaves the float's precision (a
    ``remainder`` into ``[0, 2**count)`` could need more bits than float32
    has); int64 then supplies the two's complement.
    """
    reduced = torch.fmod(integers, 2.0 ** count).to(torch.int64)
    return reduced & ((1 << count) - 1)


_OVERFLOWS: dict[Overflow, Callable[[_Overflowing], torch.Tensor]] = {
    Overflow.SAT: _sat,
    Overflow.SAT_ZERO: _sat_zero,
    Overflow.SAT_SYM: _sat_sym,
    Overflow.WRAP: _wrap,
    Overflow.WRAP_SM: _wrap_sm,
}


# ------------------------------------------------------------------ checks
def _check_dtype(x: torch.Tensor, t: FixedType, frac_lo: int, frac_hi: int) -> None:
    if x.dtype not in _EXPONENT_RANGE:
        raise TypeError(f"qfx casts float32 or float64 tensors, got {x.dtype}; convert with x.double() "
                        "(exact for widths up to 53 bits) or x.float() (up to 24 bits)")
    bits = mantissa_bits(x.dtype)
    if t.width > bits:
        hint = ("pass x.double(), exact for widths up to 53 bits" if x.dtype == torch.float32
                else "widths above 53 bits have no exact floating-point form; use a narrower type")
        raise ValueError(f"{t} has {t.width} bits but {x.dtype} holds only {bits}-bit integers exactly; {hint}")
    e_min, e_max = _EXPONENT_RANGE[x.dtype]
    if -frac_hi < e_min or t.width - frac_lo > e_max + 1:
        raise ValueError(f"{t} (frac_bits {frac_lo}..{frac_hi}) lies outside the exponent range of {x.dtype}; "
                         "use float64 or a binary point nearer the word")


def _bounds(x: torch.Tensor) -> tuple[float, float]:
    """Smallest and largest element, refusing NaN and Inf with a count of each."""
    if x.numel() == 0:
        return 0.0, 0.0
    lo, hi = torch.aminmax(x)
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(torch.isinf(x).sum())
        raise ValueError(f"cannot cast a tensor of shape {tuple(x.shape)} to fixed point: it holds {n_nan} NaN "
                         f"and {n_inf} infinite values, which ap_fixed cannot encode; clean it first "
                         "(e.g. torch.nan_to_num)")
    return lo, hi


def _frac_range(frac_bits: FracBits) -> tuple[int, int]:
    if isinstance(frac_bits, torch.Tensor):
        return int(frac_bits.min()), int(frac_bits.max())
    return int(frac_bits), int(frac_bits)


def _pow2(frac_bits: FracBits, like: torch.Tensor) -> Union[float, torch.Tensor]:
    if isinstance(frac_bits, torch.Tensor):
        return torch.exp2(frac_bits.to(like.dtype))
    return math.ldexp(1.0, frac_bits)


# ---------------------------------------------------------------- the cast
def cast_codes(x: torch.Tensor, t: FixedType, frac_bits: Optional[FracBits] = None,
               need_mask: bool = False) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Integer codes of ``t(x)`` (as floats of ``x.dtype``) and, if asked, where ``x`` was in range.

    ``frac_bits`` overrides ``t.frac_bits``; a tensor broadcasts against ``x``
    (one binary point per channel).  The mask is ``None`` when no element can
    be out of range.  This is the engine under :func:`quantize` and the
    quantizer modules; most callers want those.  With one binary point the
    native cast (:mod:`qfx.cast_native`) does it in one pass; these PyTorch
    ops where it does not apply.
    """
    return _cast(x, t, frac_bits, need_mask, values=False)


def cast_values(x: torch.Tensor, t: FixedType, frac_bits: Optional[FracBits] = None,
                need_mask: bool = False) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """:func:`cast_codes` with the codes scaled back to values (``codes * 2**-F``): what ``t(x)`` holds.

    The native cast scales in its one pass; the PyTorch ops multiply the codes in place.
    """
    return _cast(x, t, frac_bits, need_mask, values=True)


def _cast(x: torch.Tensor, t: FixedType, frac_bits: Optional[FracBits], need_mask: bool,
          values: bool) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    frac_bits = t.frac_bits if frac_bits is None else frac_bits
    if isinstance(frac_bits, torch.Tensor) and frac_bits.numel() == 1 and frac_bits.dim() <= x.dim():
        frac_bits = int(frac_bits)  # one binary point (broadcasting changes no shape): a Python scale
    frac_lo, frac_hi = _frac_range(frac_bits)
    _check_dtype(x, t, frac_lo, frac_hi)
    if isinstance(frac_bits, int):
        native = cast_native.cast_codes(x, t, frac_bits, need_mask, values)
        if native is not None:
            return native
    lo, hi = _bounds(x)
    if isinstance(frac_bits, torch.Tensor):
        frac_bits = frac_bits.to(device=x.device)

    # Bounds of v = x * 2**F over every binary point in use.
    scales = (math.ldexp(1.0, frac_lo), math.ldexp(1.0, frac_hi))
    v_lo = min(lo * s for s in scales)
    v_hi = max(hi * s for s in scales)
    bits = mantissa_bits(x.dtype)
    if not math.isfinite(v_lo) or not math.isfinite(v_hi) or max(-v_lo, v_hi) >= 2.0 ** (bits + t.width + 2):
        x = _fold_huge(x, t, frac_lo)
        lo, hi = _bounds(x)
        v_lo, v_hi = min(lo * s for s in scales), max(hi * s for s in scales)
    big = max(-v_lo, v_hi) >= 2.0 ** (bits - 1)

    v = _scale(x, t, frac_bits, frac_lo, frac_hi)
    n = _round_codes(v, t.rounding, big)

    # The codes of the extreme elements bound every code: scaling and rounding are monotone.
    edges = torch.tensor([lo, hi], dtype=x.dtype)
    bound_codes = torch.cat([_round_codes(_scale(edges, t, f, f, f), t.rounding, big) for f in {frac_lo, frac_hi}])
    n_lo, n_hi = float(bound_codes.min()), float(bound_codes.max())
    sym = t.overflow is Overflow.SAT_SYM and t.signed
    may_overflow = n_hi > t.code_max or n_lo < t.code_min or (sym and n_lo <= t.code_min)
    inside = None
    if may_overflow:
        overflowing = _Overflowing(n, t, lambda: _scale(x, t, frac_bits, frac_lo, frac_hi), big)
        inside = overflowing.inside if need_mask else None  # taken before the overflow mode rewrites n
        n = _OVERFLOWS[t.overflow](overflowing)
    if values:
        n = n.mul_(_pow2(-frac_bits, n))
    return n, inside


def saturating_cast_codes(x: torch.Tensor, t: FixedType,
                          frac_bits: Optional[FracBits] = None) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """Training-mode :func:`cast_codes` for ``AP_SAT`` formats: ``(codes, rounded)`` in three passes, or ``None``.

    Scale, round, clamp: no bounds pass, no NaN/Inf check, no overflow
    bookkeeping and no boolean mask (boolean tensors are slow to write and
    read on the CPU).  ``rounded`` holds the codes before the clamp: an
    element was in range exactly where ``code_min <= rounded <= code_max``,
    which is what the straight-through gradient needs (see
    :func:`in_range_grad`).  For finite ``x`` the codes equal
    :func:`cast_codes`'s, because the shortcuts cannot change a code under
    these conditions; where one fails, ``None`` is returned and the caller
    uses :func:`cast_codes`:

    * ``AP_SAT`` is a clamp of the rounded code, whatever the rounding mode;
    * ``t.width`` is below the dtype's mantissa, so a scaled value too large
      for the half-rounding modes to round exactly (``|v| >= 2**(m-1)``)
      still rounds to beyond the range, on its own side, and is clamped
      to the same end code; an ``x * 2**F`` that overflows to infinity
      saturates the same way;
    * no binary point needs :func:`cast_codes`'s scaling fix-ups (``TRN``
      with ``F < 0``, float64 subnormals at ``F >= 1022``).

    Unlike :func:`cast_codes`, NaN is not refused: it comes out as NaN,
    which a training loss makes visible anyway, and infinities saturate.
    """
    frac_bits = t.frac_bits if frac_bits is None else frac_bits
    if isinstance(frac_bits, torch.Tensor) and frac_bits.dim() == 0:
        frac_bits = int(frac_bits)  # a Python scale: no tensor broadcast in the hot multiply
    frac_lo, frac_hi = _frac_range(frac_bits)
    if (t.overflow is not Overflow.SAT or x.dtype not in _EXPONENT_RANGE or t.width >= mantissa_bits(x.dtype)
            or (frac_lo < 0 and t.rounding is Rounding.TRN) or frac_hi >= 1022):
        return None
    _check_dtype(x, t, frac_lo, frac_hi)
    if isinstance(frac_bits, torch.Tensor):
        frac_bits = frac_bits.to(device=x.device)
    rounded = _ROUNDERS[t.rounding](torch.mul(x, _pow2(frac_bits, x)))
    return torch.clamp(rounded, t.code_min, t.code_max), rounded


def in_range_grad(grad: torch.Tensor, rounded: torch.Tensor, t: FixedType) -> torch.Tensor:
    """``grad`` where ``rounded`` (integer codes before the overflow step) lies in ``t``'s code range, else 0.

    One fused pass: ``hardtanh_backward`` keeps ``grad`` strictly between
    the bounds, and half a code beyond each end separates the integers in
    range from those outside.  Also keeps any other tensor shaped like
    ``grad`` (e.g. ``x``) where the code was in range.
    """
    return torch.ops.aten.hardtanh_backward(grad, rounded, t.code_min - 0.5, t.code_max + 0.5)


def _scale(x: torch.Tensor, t: FixedType, frac_bits: FracBits, frac_lo: int, frac_hi: int) -> torch.Tensor:
    """``v = x * 2**F`` in units of the LSB, as ``ap_fixed_base(double)`` reads ``x``."""
    v = torch.mul(x, _pow2(frac_bits, x), out=cast_native.empty_like(x))
    if frac_lo < 0 and t.rounding is Rounding.TRN:
        # x * 2**F can underflow to -0.0 for tiny negative x when F < 0, losing the floor to -1.
        v = torch.where((x < 0) & (v == 0), torch.full_like(v, -0.5), v)
    if x.dtype == torch.float64 and frac_hi >= 1022:
        v = _as_header_reads_subnormals(x, v, frac_bits)
    return v




def _as_header_reads_subnormals(x: torch.Tensor, v: torch.Tensor, frac_bits: FracBits) -> torch.Tensor:
    """Scale subnormal doubles as ``ap_fixed_base(double)`` reads them: with the hidden bit set.

    The header takes mantissa ``m`` of a subnormal as ``(2**52 + m) * 2**-1075``,
    i.e. ``2**-1023 + x/2``, instead of ``m * 2**-1074``.  Only binary points
    at ``F >= 1022`` can tell the difference.
    """
    subnormal = (x != 0) & (x.abs() < 2.0 ** -1022)
    if not bool(subnormal.any()):
        return v
    read = (x.abs() * _pow2(frac_bits - 1, x)).add_(_pow2(frac_bits - 1023, x)).copysign_(x)
    return torch.where(subnormal, read, v)


def _fold_huge(x: torch.Tensor, t: FixedType, frac_lo: int) -> torch.Tensor:
    """Replace values far beyond the range by smaller ones that every mode treats the same.

    ``sign * (2**(I+2) + fmod(|x|, 2**(I+1)))`` keeps the sign, stays out of
    range and keeps the low ``W+1`` bits of the code (the ones any overflow
    mode reads), while ``x * 2**F`` stays finite.
    """
    int_bits = t.width - frac_lo  # the widest binary point: its period is a multiple of every other's
    period = math.ldexp(1.0, int_bits + 1)
    magnitude = x.abs()
    far = magnitude >= 2 * period
    # Past 2**mantissa periods a value is a multiple of the period; fmod there may overflow to NaN.
    multiple = magnitude >= period * 2.0 ** mantissa_bits(x.dtype)
    remainder = torch.where(multiple, 0.0, torch.fmod(magnitude, period))
    folded = remainder.add_(2 * period).copysign_(x)
    return torch.where(far, folded, x)


def tensor_argument(x: Any, caller: str) -> torch.Tensor:
    """``x`` if it is a tensor with data; else a ``TypeError``/``ValueError`` that says what to pass instead."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{caller}: argument 'x' must be a torch.Tensor, got {type(x).__name__}; wrap it with "
                        "torch.as_tensor(x, dtype=torch.float64)")
    if x.device.type == "meta":
        raise ValueError(f"{caller}: argument 'x' is a meta tensor (a shape without data); there are no values "
                         "to cast")
    return x


def to_codes(x: torch.Tensor, t: FixedLike) -> torch.Tensor:
    """The integer codes (int64) that ``t(x)`` stores: ``quantize(x, t) == codes * 2**-F``."""
    t = FixedType.coerce(t)
    codes, _ = cast_codes(tensor_argument(x, "to_codes").detach(), t)
    return codes.to(torch.int64)


def from_codes(codes: torch.Tensor, t: FixedLike, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Values ``codes * 2**-F`` of integer codes of ``t``, in ``dtype``; codes outside ``t``'s range are refused."""
    t = FixedType.coerce(t)
    if codes.dtype.is_floating_point or codes.dtype == torch.bool:
        raise TypeError(f"from_codes expects an integer tensor of codes, got {codes.dtype}")
    _check_dtype(torch.empty(0, dtype=dtype), t, t.frac_bits, t.frac_bits)
    if codes.numel():
        lo, hi = (int(c) for c in torch.aminmax(codes))
        if lo < t.code_min or hi > t.code_max:
            raise ValueError(f"codes span [{lo}, {hi}] but {t} holds [{t.code_min}, {t.code_max}]")
    return codes.to(dtype).mul_(t.lsb)
