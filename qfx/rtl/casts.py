"""The ``ap_fixed`` cast as combinational logic: the parameters of one Verilog function per cast.

The logic mirrors :func:`qfx.ir.integer.cast` step by step, with every
width known at generation time:

* ``d = src_frac - F`` bits are dropped (``d > 0``: ``floor = s >>> d``) or
  zeros appended (``d <= 0``: ``floor = s <<< -d``);
* the rounding mode's increment comes from ``half`` (the first dropped
  bit), ``rest`` (any lower dropped bit set) and the source's sign, giving
  ``r = floor + inc``;
* ``r`` overflows outside ``[code_min, code_max]``, and for signed
  ``AP_SAT_SYM`` also at ``code_min``; the overflow mode rewrites the low
  ``W`` bits of ``r``.  ``AP_WRAP_SM`` without saturation bits reads bit
  ``W`` of ``floor`` (before rounding).

The source range is known exactly, so checks that can never fire (an
overflow the range cannot reach, an increment when no bit is dropped)
are left out instead of left to the synthesis tool.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..format import FixedType, Overflow
from ..ir.integer import cast
from .verilog import bits, literal, mask, signed_width

__all__ = ["Cast", "plan_cast"]


@dataclasses.dataclass(frozen=True)
class Cast:
    """Everything the template ``cast_function.v.j2`` needs for one cast function (all widths in bits)."""

    name: str
    target: str  #: the C++ spelling, for the comment
    source_width: int
    source_frac: int
    drop: int  #: bits dropped (> 0) or appended (<= 0)
    floor_width: int
    result_width: int  #: width of r
    width: int  #: W, the target's word
    rounding: str  #: a Rounding name, or "NONE" when no bit is dropped
    half_bit: int
    rest_high: int  #: rest = |s[rest_high:0]; -1 when there is no bit under the half bit
    check_high: bool
    check_low: bool
    check_min: bool  #: signed SAT_SYM: code_min itself overflows
    max_literal: str
    min_literal: str
    overflow: str  #: an Overflow name
    sat_bits: int
    lead_bit: int  #: the index of floor's bit W (its sign bit when W lies above it)
    low_bits: str  #: the Verilog expression of r's low W bits
    max_pattern: str
    min_pattern: str
    sym_pattern: str
    ones: str
    top: str  #: only bit W-1 set
    keep: str  #: the saturation bits' mask inverted
    if_negative: str  #: the saturation bits' pattern when r < 0
    if_positive: str  #: ... and when r >= 0

    @property
    def can_overflow(self) -> bool:
        """Whether any overflow check remains."""
        return self.check_high or self.check_low or self.check_min


def plan_cast(name: str, low: int, high: int, source_frac: int, t: FixedType) -> Cast:
    """The cast of codes in ``[low, high]`` with ``source_frac`` fractional bits to ``t``, as a :class:`Cast`."""
    source_width = signed_width(low, high)
    drop = source_frac - t.frac_bits
    if drop > 0:
        floor_width = max(source_width - drop, 1)
        rounding = t.rounding.value
    else:
        floor_width = source_width - drop
        rounding = "NONE"
    # Every rounding mode is monotonic, so r ranges from the rounded low end to the rounded high end; the
    # interpreter's cast into a format too wide to overflow gives them exactly.
    wide = FixedType(floor_width + 2, floor_width + 2 - t.frac_bits, rounding=t.rounding)
    result_low, result_high = (int(v) for v in cast(np.array([low, high]), source_frac, wide))
    result_width = signed_width(result_low, result_high)
    w, n = t.width, t.sat_bits
    sym = t.overflow is Overflow.SAT_SYM and t.signed
    compare_width = max(result_width, signed_width(t.code_min, t.code_max)) + 1
    if result_width >= w:
        low_bits = f"r[{w - 1}:0]"
    else:  # sign-extend r to the word
        low_bits = f"{{{{{w - result_width}{{r[{result_width - 1}]}}}}, r}}"
    if n and t.signed:
        keep, if_negative, if_positive = ~mask(w - n, w - 1), 1 << (w - 1), mask(w - n, w - 2)
    elif n:
        keep, if_negative, if_positive = ~0, mask(w - n, w - 1), mask(w - n, w - 1)
    else:
        keep, if_negative, if_positive = ~0, 0, 0
    sym_code = ((1 << (w - 1)) | 1) if t.signed else 0
    return Cast(
        name=name, target=str(t), source_width=source_width, source_frac=source_frac, drop=drop,
        floor_width=floor_width, result_width=result_width, width=w, rounding=rounding,
        half_bit=min(drop - 1, source_width - 1), rest_high=min(drop - 2, source_width - 1),
        check_high=result_high > t.code_max, check_low=result_low < t.code_min,
        check_min=sym and result_low <= t.code_min,
        max_literal=literal(t.code_max, compare_width), min_literal=literal(t.code_min, compare_width),
        overflow=t.overflow.value, sat_bits=n, lead_bit=min(w, floor_width - 1), low_bits=low_bits,
        max_pattern=bits(t.code_max, w), min_pattern=bits(t.code_min, w), sym_pattern=bits(sym_code, w),
        ones=bits(-1, w), top=bits(1 << (w - 1), w), keep=bits(keep, w), if_negative=bits(if_negative, w),
        if_positive=bits(if_positive, w))
