"""The ``ap_fixed`` cast on integer codes: one function per rounding mode and per overflow mode.

``cast(codes, src_frac, t)`` is what ``t x = y;`` stores when ``y`` is an
exact fixed-point value ``codes * 2**-src_frac`` (an ``ap_fixed`` of any
width).  Codes are NumPy int64 arrays when every intermediate fits in 62
bits, else object arrays of Python ints; nothing here uses floating point.

The cast, as the header's ``operator=`` does it:

* ``d = src_frac - t.frac_bits`` bits are dropped (``d > 0``) or zeros
  appended (``d <= 0``); ``floor = codes >> d`` is the truncated code;
* the rounding mode adds 0 or 1 from the dropped bits (``half`` is the first
  dropped bit, ``rest`` whether any lower one is set), giving ``R``;
* ``R`` overflows when it lies outside ``[t.code_min, t.code_max]``, and for
  signed ``AP_SAT_SYM`` also when it equals ``code_min``; the overflow mode
  then rewrites the word.  ``AP_WRAP_SM`` without saturation bits reads
  bit ``W`` of ``floor`` (the first bit the cast drops above the word,
  before rounding: the header's ``lD``).
"""

from __future__ import annotations

from typing import Callable, Union

import numpy as np

from ..format import FixedType, Overflow, Rounding

__all__ = ["cast", "codes_fit", "as_codes", "shift_left", "packed_words"]

Codes = np.ndarray
Frac = Union[int, np.ndarray]

_FAST_BITS = 62  # int64 with one bit to spare for a carry


def codes_fit(codes: Codes, extra_bits: int = 0) -> bool:
    """Whether ``codes`` shifted left by ``extra_bits`` stays within int64's fast range."""
    if codes.size == 0:
        return True
    hi = max(abs(int(codes.max())), abs(int(codes.min())))
    return hi.bit_length() + max(extra_bits, 0) <= _FAST_BITS


def as_codes(codes: Union[Codes, list, int], extra_bits: int = 0) -> Codes:
    """``codes`` as int64 when shifting them by ``extra_bits`` stays exact there, else as Python ints."""
    array = np.asarray(codes)
    if array.dtype != object and not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"integer codes expected, got dtype {array.dtype}")
    if array.dtype != object:
        array = array.astype(np.int64)
        if codes_fit(array, extra_bits):
            return array
    return array.astype(object)


def shift_left(codes: Codes, bits: Frac) -> Codes:
    """``codes * 2**bits`` for ``bits >= 0`` (an int or an array broadcasting against ``codes``), exact."""
    bits_array = np.asarray(bits)
    top = int(bits_array.max()) if bits_array.size else 0
    if top == 0:
        return codes
    codes = as_codes(codes, top)
    if codes.dtype == object:
        return codes * (np.ones_like(bits_array, dtype=object) << bits_array.astype(object))
    return codes << bits_array


# ------------------------------------------------------------- rounding
# Each returns the 0/1 increment added to floor, given the dropped bits.

def _rnd(floor: Codes, half: Codes, rest: Codes, negative: Codes) -> Codes:
    """AP_RND: nearest, ties toward +infinity."""
    return half


def _rnd_zero(floor: Codes, half: Codes, rest: Codes, negative: Codes) -> Codes:
    """AP_RND_ZERO: nearest, ties toward zero."""
    return half & (rest | negative)


def _rnd_min_inf(floor: Codes, half: Codes, rest: Codes, negative: Codes) -> Codes:
    """AP_RND_MIN_INF: nearest, ties toward -infinity."""
    return half & rest


def _rnd_inf(floor: Codes, half: Codes, rest: Codes, negative: Codes) -> Codes:
    """AP_RND_INF: nearest, ties away from zero."""
    return half & (rest | ~negative)


def _rnd_conv(floor: Codes, half: Codes, rest: Codes, negative: Codes) -> Codes:
    """AP_RND_CONV: nearest, ties to even."""
    return half & (rest | (floor & 1).astype(bool))


def _trn(floor: Codes, half: Codes, rest: Codes, negative: Codes) -> Codes:
    """AP_TRN: toward -infinity (the dropped bits are simply lost)."""
    return np.zeros_like(half)


def _trn_zero(floor: Codes, half: Codes, rest: Codes, negative: Codes) -> Codes:
    """AP_TRN_ZERO: toward zero (a negative value with dropped bits goes up one)."""
    return negative & (half | rest)


_ROUNDING: dict[Rounding, Callable[..., Codes]] = {
    Rounding.RND: _rnd, Rounding.RND_ZERO: _rnd_zero, Rounding.RND_MIN_INF: _rnd_min_inf,
    Rounding.RND_INF: _rnd_inf, Rounding.RND_CONV: _rnd_conv, Rounding.TRN: _trn, Rounding.TRN_ZERO: _trn_zero,
}


def _bit(codes: Codes, index: Frac) -> Codes:
    """Bit ``index`` of each code (two's complement), as bool."""
    return ((codes >> index) & 1).astype(bool)


def _round(codes: Codes, drop: Frac, rounding: Rounding) -> tuple[Codes, Codes]:
    """``(R, floor)``: the rounded code (unbounded) and the truncated one, dropping ``drop > 0`` bits."""
    floor = codes >> drop
    half = _bit(codes, drop - 1)
    below = (np.ones_like(codes) << (drop - 1)) - 1  # the bits under the half bit
    rest = (codes & below) != 0
    increment = _ROUNDING[rounding](floor, half, rest, codes < 0)
    return floor + increment.astype(codes.dtype if codes.dtype != object else np.int64), floor


# ------------------------------------------------------------- overflow
# Each returns the code stored for every overflowing R (``negative`` = R < 0,
# ``lead`` = bit W of floor); the caller keeps R where it did not overflow.

def _word(codes: Codes, t: FixedType) -> Codes:
    """The low W bits of each code, read back as a code of ``t`` (two's complement when signed)."""
    mask = (1 << t.width) - 1
    word = codes & mask
    if t.signed:
        word = np.where(word >> (t.width - 1) == 1, word - (1 << t.width), word)
    return word


def _set_range(word: Codes, low: int, high: int, ones: Codes) -> Codes:
    """``word`` (unsigned W-bit patterns) with bits ``low..high`` all set where ``ones``, all cleared elsewhere."""
    if high < low:
        return word
    mask = ((1 << (high - low + 1)) - 1) << low
    return np.where(ones, word | mask, word & ~mask)


def _pattern(codes: Codes, t: FixedType) -> Codes:
    return codes & ((1 << t.width) - 1)


def _sat(codes: Codes, negative: Codes, lead: Codes, t: FixedType) -> Codes:
    """AP_SAT: code_max above the range, code_min below."""
    return np.where(negative, t.code_min, t.code_max)


def _sat_zero(codes: Codes, negative: Codes, lead: Codes, t: FixedType) -> Codes:
    """AP_SAT_ZERO: zero."""
    return np.zeros_like(codes)


def _sat_sym(codes: Codes, negative: Codes, lead: Codes, t: FixedType) -> Codes:
    """AP_SAT_SYM: code_max above; below, ``-code_max`` (the word 10…01; code_min when W = 1; 0 unsigned)."""
    low = _word(np.full_like(codes, (1 << (t.width - 1)) | 1), t) if t.signed else 0
    return np.where(negative, low, t.code_max)


def _wrap(codes: Codes, negative: Codes, lead: Codes, t: FixedType) -> Codes:
    """AP_WRAP: the low W bits; with N saturation bits the top N bits follow the sign (signed) or are set."""
    word = _pattern(codes, t)
    n, w = t.sat_bits, t.width
    if n and t.signed:
        word = _set_range(word, w - 1, w - 1, negative)
        word = _set_range(word, w - n, w - 2, ~negative)
    elif n:
        word = _set_range(word, w - n, w - 1, np.ones_like(negative))
    return _word(word, t)


def _wrap_sm(codes: Codes, negative: Codes, lead: Codes, t: FixedType) -> Codes:
    """AP_WRAP_SM: sign-magnitude wrap (see the module docstring for which bit decides the inversion)."""
    word = _pattern(codes, t)
    n, w = t.sat_bits, t.width
    ones = (1 << w) - 1
    sign = _bit(word, w - 1)
    if n == 0:
        return _word(np.where(lead != sign, _set_range(word ^ ones, w - 1, w - 1, lead), word), t)
    if n == 1:
        word = np.where(negative != sign, word ^ ones, word)
    else:
        word = np.where(_bit(word, w - n) == negative, word ^ ones, word)
        word = _set_range(word, w - n, w - 2, ~negative)
    return _word(_set_range(word, w - 1, w - 1, negative), t)


_OVERFLOW: dict[Overflow, Callable[..., Codes]] = {
    Overflow.SAT: _sat, Overflow.SAT_ZERO: _sat_zero, Overflow.SAT_SYM: _sat_sym,
    Overflow.WRAP: _wrap, Overflow.WRAP_SM: _wrap_sm,
}


# ----------------------------------------------------------------- cast
def cast(codes: Union[Codes, list, int], src_frac: Frac, t: FixedType) -> Codes:
    """The codes ``t`` stores for the exact values ``codes * 2**-src_frac``.

    ``src_frac`` is an int or an int array broadcasting against ``codes``
    (one binary point per channel).  Returns int64 codes of ``t`` (object
    only if ``t`` is wider than 62 bits).
    """
    src = np.asarray(src_frac, dtype=np.int64)
    drop = src - t.frac_bits
    up = np.maximum(-drop, 0)
    down = np.maximum(drop, 0)
    shifted = shift_left(as_codes(codes), up)
    if down.max(initial=0) > 0:
        # Per-channel drops may be 0 somewhere: shift by at least 1 after doubling, so the helpers see one
        # dropped bit that is always 0 there (a value times 2 then halved rounds to itself in every mode).
        zero = down == 0
        padded = np.where(zero, shift_left(shifted, 1), shifted) if zero.any() else shifted
        rounded, floor = _round(padded, np.maximum(down, 1), t.rounding)
    else:
        rounded, floor = shifted, shifted
    out = (rounded > t.code_max) | (rounded < t.code_min)
    if t.overflow is Overflow.SAT_SYM and t.signed:
        out |= rounded == t.code_min
    if not out.any():
        return _narrow(rounded, t)
    lead = _bit(floor, t.width)
    fixed = _OVERFLOW[t.overflow](rounded, rounded < 0, lead, t)
    return _narrow(np.where(out, fixed, rounded), t)


def _narrow(codes: Codes, t: FixedType) -> Codes:
    """Codes of ``t`` as int64 where ``t`` fits it."""
    codes = np.asarray(codes)
    return codes.astype(np.int64) if t.width <= 63 else codes.astype(object)


def packed_words(codes: np.ndarray, word: int) -> np.ndarray:
    """The last axis of ``codes`` (``-1``/``+1``) packed into ``word``-bit words, bit 1 for ``+1``.

    Bit ``j`` of word ``k`` is element ``k * word + j``; bits past the row's end are 0.  The words are
    Python ints in an object array (any ``word`` up to 64), the form both back ends print as constants."""
    if not 1 <= word <= 64:
        raise ValueError(f"a packed word has 1 to 64 bits, not {word}")
    bits = codes.shape[-1]
    count = -(-bits // word)
    rows = np.zeros(codes.shape[:-1] + (count * word,), dtype=np.uint64)
    rows[..., :bits] = codes > 0
    place = np.left_shift(np.uint64(1), np.arange(word, dtype=np.uint64))
    words = (rows.reshape(codes.shape[:-1] + (count, word)) * place).sum(axis=-1, dtype=np.uint64)
    return words.astype(object)
