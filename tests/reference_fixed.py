"""An independent reference of the Vitis HLS ``ap_fixed`` cast, on exact rationals.

``ap_fixed_code(x, W, I, signed, rounding, overflow, N)`` is the integer code
that ``ap_fixed<W,I,AP_<rounding>,AP_<overflow>,N>(x)`` (``ap_ufixed`` when
unsigned) stores, for an exact rational ``x``.  It follows the constructor
``ap_fixed_base(double d)`` of Xilinx's ``ap_fixed_base.h`` and the two
helpers it calls, ``quantization_adjust`` and ``overflow_adjust``, read as
arithmetic on the exact value rather than on the double's bit fields:

* ``v = x * 2**F`` (``F = W - I``) is the source in units of the target LSB;
* rounding gives an unbounded integer ``R`` (the header's ``Base::V`` plus
  whatever its carry and dropped high bits hold);
* the header flags overflow exactly when ``R > code_max`` and underflow
  exactly when ``R < code_min`` (the ``deleted_zeros``/``deleted_ones``
  bookkeeping says precisely that), plus ``R == code_min`` for signed
  ``AP_SAT_SYM``; its ``neg_src`` is ``R < 0`` and its ``lD`` is bit ``W`` of
  ``floor(v)``, the first bit the cast drops above the word, before rounding;
* the overflow mode then rewrites the low ``W`` bits of ``R``.

Written with Python ints and ``fractions.Fraction`` only; it shares no code
with ``qfx`` on purpose, so the two can check each other.
"""

from __future__ import annotations

import math
import struct
from fractions import Fraction
from typing import Callable, Union

__all__ = [
    "ROUNDING_MODES", "OVERFLOW_MODES", "exact", "header_reads_double", "scaled", "code_min", "code_max",
    "round_code", "dropped_lead_bit", "overflowed", "overflow_code", "ap_fixed_code",
]

Rational = Union[Fraction, int, float]

ROUNDING_MODES = ("RND", "RND_ZERO", "RND_MIN_INF", "RND_INF", "RND_CONV", "TRN", "TRN_ZERO")
OVERFLOW_MODES = ("SAT", "SAT_ZERO", "SAT_SYM", "WRAP", "WRAP_SM")

_HALF = Fraction(1, 2)


# ------------------------------------------------------------------ inputs
def exact(x: Rational) -> Fraction:
    """The exact value of an int, float or Fraction (NaN and Inf raise, as ap_fixed cannot hold them)."""
    return x if isinstance(x, Fraction) else Fraction(x)


def header_reads_double(d: float) -> Fraction:
    """The value ``ap_fixed_base(double d)`` actually reads from ``d``.

    Equal to ``d`` except for subnormal doubles: the header sets the hidden
    mantissa bit unconditionally and takes the biased exponent 0 as -1023,
    so it reads ``±(2**52 + mantissa) * 2**-1075`` instead of
    ``±mantissa * 2**-1074``.
    """
    bits = struct.unpack("<Q", struct.pack("<d", d))[0]
    biased_exponent, mantissa = (bits >> 52) & 0x7FF, bits & ((1 << 52) - 1)
    if biased_exponent != 0 or mantissa == 0:
        return exact(d)
    value = Fraction((1 << 52) + mantissa, 1 << 1075)
    return -value if bits >> 63 else value


def scaled(x: Rational, frac_bits: int) -> Fraction:
    """``x * 2**frac_bits`` exactly: the source in units of the target's LSB."""
    return exact(x) * (Fraction(2) ** frac_bits)


def code_min(width: int, signed: bool) -> int:
    """Smallest code of a ``width``-bit word."""
    return -(1 << (width - 1)) if signed else 0


def code_max(width: int, signed: bool) -> int:
    """Largest code of a ``width``-bit word."""
    return (1 << (width - 1)) - 1 if signed else (1 << width) - 1


# ---------------------------------------------------------------- rounding
# Each takes v (exact) and returns an integer.  The "nearest" modes differ
# only in where an exact tie goes; quantization_adjust's qb/r/s tests encode
# the same choices bit by bit (qb: dropped half bit, r: any lower bit, s: sign).

def _nearest(v: Fraction, tie_goes_up: bool) -> int:
    """Nearest integer to ``v``; an exact tie goes up when ``tie_goes_up``."""
    low = math.floor(v)
    frac = v - low
    if frac != _HALF:
        return low + (frac > _HALF)
    return low + tie_goes_up


def round_rnd(v: Fraction) -> int:
    """AP_RND: nearest, ties toward +infinity (quantization_adjust adds qb)."""
    return _nearest(v, tie_goes_up=True)


def round_rnd_zero(v: Fraction) -> int:
    """AP_RND_ZERO: nearest, ties toward zero (qb &= s || r)."""
    return _nearest(v, tie_goes_up=v < 0)


def round_rnd_min_inf(v: Fraction) -> int:
    """AP_RND_MIN_INF: nearest, ties toward -infinity (qb &= r)."""
    return _nearest(v, tie_goes_up=False)


def round_rnd_inf(v: Fraction) -> int:
    """AP_RND_INF: nearest, ties away from zero (qb &= !s || r)."""
    return _nearest(v, tie_goes_up=v > 0)


def round_rnd_conv(v: Fraction) -> int:
    """AP_RND_CONV: nearest, ties to the even integer (qb &= V[0] || r)."""
    return _nearest(v, tie_goes_up=math.floor(v) % 2 == 1)


def round_trn(v: Fraction) -> int:
    """AP_TRN: toward -infinity, the arithmetic shift right of the two's complement mantissa."""
    return math.floor(v)


def round_trn_zero(v: Fraction) -> int:
    """AP_TRN_ZERO: toward zero (qb = s && (qb || r): negatives with dropped bits go up one)."""
    return math.floor(v) + (v < 0 and v != math.floor(v))


_ROUNDERS: dict[str, Callable[[Fraction], int]] = {
    "RND": round_rnd, "RND_ZERO": round_rnd_zero, "RND_MIN_INF": round_rnd_min_inf, "RND_INF": round_rnd_inf,
    "RND_CONV": round_rnd_conv, "TRN": round_trn, "TRN_ZERO": round_trn_zero,
}


def round_code(v: Fraction, rounding: str) -> int:
    """The unbounded integer ``R`` that ``rounding`` makes of ``v`` (before any overflow handling)."""
    return _ROUNDERS[rounding](v)


def dropped_lead_bit(v: Fraction, width: int) -> int:
    """The header's ``lD``: bit ``width`` of ``floor(v)`` in two's complement, i.e. of the unrounded source."""
    return (math.floor(v) >> width) & 1


# ---------------------------------------------------------------- overflow
def overflowed(code: int, width: int, signed: bool, overflow: str) -> bool:
    """Whether the header flags over- or underflow for the rounded ``code`` (signed SAT_SYM also flags code_min).

    The straight-through gradient is 0 exactly here.  For AP_WRAP with N=0 the
    header skips the flags, but the code is still outside the range and wraps.
    """
    if code > code_max(width, signed) or code < code_min(width, signed):
        return True
    # ap_fixed_base(double): underflow |= neg_src && V[W-2:0] == 0 (true for W=1) under signed AP_SAT_SYM.
    return overflow == "SAT_SYM" and signed and code == code_min(width, signed)


def _word(code: int, width: int) -> int:
    """The low ``width`` bits of ``code``: what ``Base::V`` holds after rounding."""
    return code & ((1 << width) - 1)


def _from_word(word: int, width: int, signed: bool) -> int:
    """The code a ``width``-bit word reads as, two's complement when ``signed``."""
    if signed and word >> (width - 1):
        return word - (1 << width)
    return word


def _bit(word: int, index: int) -> int:
    """Bit ``index`` of ``word``."""
    return (word >> index) & 1


def _with_bit(word: int, index: int, value: int) -> int:
    """``word`` with bit ``index`` set to ``value``."""
    return (word & ~(1 << index)) | (value << index)


def _with_range(word: int, low: int, high: int, ones: bool) -> int:
    """``word`` with bits ``low..high`` (inclusive) all set to ``ones``; an empty range changes nothing."""
    if high < low:
        return word
    mask = ((1 << (high - low + 1)) - 1) << low
    return word | mask if ones else word & ~mask


def overflow_sat(code: int, negative: bool, lead: int, width: int, signed: bool, sat_bits: int) -> int:
    """AP_SAT: code_max above the range, code_min below."""
    return code_min(width, signed) if negative else code_max(width, signed)


def overflow_sat_zero(code: int, negative: bool, lead: int, width: int, signed: bool, sat_bits: int) -> int:
    """AP_SAT_ZERO: zero on either side."""
    return 0


def overflow_sat_sym(code: int, negative: bool, lead: int, width: int, signed: bool, sat_bits: int) -> int:
    """AP_SAT_SYM: code_max above; below, the word 10…0 | 1, i.e. -code_max (code_min itself when W=1; 0 unsigned)."""
    if not negative:
        return code_max(width, signed)
    if not signed:
        return 0
    # overflow_adjust: V = 1 << (W-1); V |= 1.  For W = 1 both are bit 0, so the word is 1, i.e. -1 = code_min.
    word = (1 << (width - 1)) | 1
    return _from_word(word, width, signed)


def overflow_wrap(code: int, negative: bool, lead: int, width: int, signed: bool, sat_bits: int) -> int:
    """AP_WRAP: keep the low W bits; N>0 signed: sign bit := source sign, next N-1 bits := its complement; unsigned: top N bits := 1."""
    word = _word(code, width)
    if sat_bits:
        if signed:
            word = _with_bit(word, width - 1, negative)
            word = _with_range(word, width - sat_bits, width - 2, ones=not negative)
        else:  # unsigned sets the top N bits on overflow and on underflow alike
            word = _with_range(word, width - sat_bits, width - 1, ones=True)
    return _from_word(word, width, signed)


def overflow_wrap_sm(code: int, negative: bool, lead: int, width: int, signed: bool, sat_bits: int) -> int:
    """AP_WRAP_SM (signed only): N=0 invert if lD != new sign; N=1 invert if source sign != new sign; N>1 invert if bit W-N == sign, then saturate N bits."""
    assert signed, "ap_ufixed cannot use AP_WRAP_SM (the header exits in report())"
    word = _word(code, width)
    all_ones = (1 << width) - 1
    new_sign = _bit(word, width - 1)
    if sat_bits == 0:
        if lead != new_sign:  # invert, then the sign bit is set to lD, which the inversion already made it
            word = _with_bit(word ^ all_ones, width - 1, lead)
        return _from_word(word, width, signed)
    if sat_bits == 1:
        if negative != new_sign:
            word ^= all_ones
    else:
        if _bit(word, width - sat_bits) == negative:
            word ^= all_ones
        word = _with_range(word, width - sat_bits, width - 2, ones=not negative)
    word = _with_bit(word, width - 1, negative)
    return _from_word(word, width, signed)


_OVERFLOWS = {
    "SAT": overflow_sat, "SAT_ZERO": overflow_sat_zero, "SAT_SYM": overflow_sat_sym,
    "WRAP": overflow_wrap, "WRAP_SM": overflow_wrap_sm,
}


def overflow_code(code: int, lead: int, width: int, signed: bool, overflow: str, sat_bits: int) -> int:
    """The code stored for the rounded ``code`` (``lead`` = ``dropped_lead_bit``): itself when in range, else the mode's."""
    if not overflowed(code, width, signed, overflow):
        return code
    # The header's neg_src: the rounded source is negative (a negative source that rounds up to 0 is not).
    return _OVERFLOWS[overflow](code, code < 0, lead, width, signed, sat_bits)


# ------------------------------------------------------------------- cast
def _check_format(width: int, signed: bool, rounding: str, overflow: str, sat_bits: int) -> None:
    """Refuse formats the header refuses or that make no sense, so a typo cannot pass silently."""
    if width < 1 or rounding not in _ROUNDERS or overflow not in _OVERFLOWS:
        raise ValueError(f"bad format W={width} Q={rounding} O={overflow}")
    if overflow == "WRAP_SM" and not signed:
        raise ValueError("ap_ufixed cannot use AP_WRAP_SM")
    if not 0 <= sat_bits <= width:
        raise ValueError(f"sat_bits={sat_bits} outside [0, {width}]")


def ap_fixed_code(x: Rational, width: int, int_bits: int, signed: bool = True, rounding: str = "TRN",
                  overflow: str = "WRAP", sat_bits: int = 0) -> int:
    """The integer code ``ap_[u]fixed<width, int_bits, AP_<rounding>, AP_<overflow>, sat_bits>(x)`` stores."""
    _check_format(width, signed, rounding, overflow, sat_bits)
    v = scaled(x, width - int_bits)
    code = round_code(v, rounding)
    return overflow_code(code, dropped_lead_bit(v, width), width, signed, overflow, sat_bits)


def to_float32(values) -> list[float]:
    """Python floats rounded to float32 (kept as exact Python floats); values beyond float32's range are dropped."""
    rounded = []
    for v in values:
        try:
            rounded.append(struct.unpack("<f", struct.pack("<f", v))[0])
        except OverflowError:  # rounds beyond float32's largest finite value
            pass
    return rounded
