"""Fixed-point formats exactly as Vitis HLS declares them.

:class:`FixedType` is the value class for ``ap_fixed<W,I,Q,O,N>`` and
``ap_ufixed<W,I,Q,O,N>``: validated on construction, hashable, printed in
its C++ spelling and rebuilt by its ``repr``.  The result-type rules of
``+``, ``-`` and ``*`` are the ones ``ap_fixed_base::RType`` declares in
Xilinx's ``ap_fixed_base.h``.

This module knows nothing of tensors; the casts live in
:mod:`qfx.functional`.
"""

from __future__ import annotations

import dataclasses
import enum
import fractions
import math
import re
from typing import Union

__all__ = ["Rounding", "Overflow", "FixedType", "BIPOLAR"]


class _Mode(str, enum.Enum):
    """A mode serialised by its name (``"RND_CONV"``), never by a number."""

    @classmethod
    def coerce(cls, value: Union["_Mode", str]) -> "_Mode":
        """Accept a member, ``"RND_CONV"``, ``"AP_RND_CONV"`` or ``"rnd_conv"``."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            name = value.strip().upper()
            name = name[3:] if name.startswith("AP_") else name
            if name in cls.__members__:
                return cls[name]
        known = ", ".join(cls.__members__)
        raise ValueError(f"unknown {cls.__name__.lower()} mode {value!r}; known modes: {known}")

    @property
    def cpp(self) -> str:
        """The C++ enumerator, e.g. ``AP_RND_CONV``."""
        return "AP_" + self.value

    def __str__(self) -> str:
        return self.value


class Rounding(_Mode):
    """What happens to the bits below the least significant bit (``ap_q_mode``)."""

    RND = "RND"  #: nearest, ties toward +infinity
    RND_ZERO = "RND_ZERO"  #: nearest, ties toward zero
    RND_MIN_INF = "RND_MIN_INF"  #: nearest, ties toward -infinity
    RND_INF = "RND_INF"  #: nearest, ties away from zero
    RND_CONV = "RND_CONV"  #: nearest, ties to even
    TRN = "TRN"  #: toward -infinity (drop the bits; the HLS default)
    TRN_ZERO = "TRN_ZERO"  #: toward zero


class Overflow(_Mode):
    """What happens to a value outside the representable range (``ap_o_mode``)."""

    SAT = "SAT"  #: clamp to the nearest of min and max
    SAT_ZERO = "SAT_ZERO"  #: replace by zero
    SAT_SYM = "SAT_SYM"  #: clamp to [-max, max]; signed types never yield the most negative code
    WRAP = "WRAP"  #: keep the low bits, two's complement (the HLS default); with N>0, the top N bits saturate
    WRAP_SM = "WRAP_SM"  #: sign-magnitude wrap (signed only); with N>0, the top N bits saturate


_CPP_PATTERN = re.compile(
    r"""^\s*ap_(?P<u>u?)(?P<kind>fixed|int)\s*<\s*
        (?P<w>[+-]?\d+)\s*
        (?:,\s*(?P<i>[+-]?\d+)\s*
          (?:,\s*(?P<q>\w+)\s*
            (?:,\s*(?P<o>\w+)\s*
              (?:,\s*(?P<n>\d+)\s*)?
            )?
          )?
        )?>\s*$""",
    re.VERBOSE,
)


def _float_value(code: int, frac_bits: int) -> float:
    """``code * 2**-frac_bits`` as the nearest float, infinite where it exceeds float's range."""
    try:
        if code.bit_length() <= 1000:
            return math.ldexp(float(code), -frac_bits)
        return float(fractions.Fraction(code) / fractions.Fraction(2) ** frac_bits)
    except OverflowError:
        return math.inf if code > 0 else -math.inf


@dataclasses.dataclass(frozen=True)
class FixedType:
    """``ap_fixed<width, int_bits, rounding, overflow, sat_bits>`` (``ap_ufixed`` when unsigned).

    A value is ``code * 2**-frac_bits`` with an integer ``code`` of ``width``
    bits, two's complement when ``signed``.  ``int_bits`` may be negative or
    larger than ``width``: the binary point then lies outside the word.

    >>> t = FixedType(16, 6, rounding="RND_CONV", overflow="SAT")
    >>> str(t)
    'ap_fixed<16,6,AP_RND_CONV,AP_SAT>'
    >>> FixedType.parse(str(t)) == t
    True
    """

    width: int
    int_bits: int
    signed: bool = True
    rounding: Rounding = Rounding.TRN
    overflow: Overflow = Overflow.WRAP
    sat_bits: int = 0

    def __post_init__(self) -> None:
        for name in ("width", "int_bits", "sat_bits"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"FixedType.{name} must be an int, got {value!r}")
        if self.width < 1:
            raise ValueError(f"FixedType.width must be at least 1, got {self.width}")
        if not isinstance(self.signed, bool):
            raise TypeError(f"FixedType.signed must be a bool, got {self.signed!r}")
        object.__setattr__(self, "rounding", Rounding.coerce(self.rounding))
        object.__setattr__(self, "overflow", Overflow.coerce(self.overflow))
        if self.overflow is Overflow.WRAP_SM and not self.signed:
            raise ValueError("ap_ufixed does not support AP_WRAP_SM (sign-magnitude wrap needs a sign); "
                             "use AP_WRAP or a signed type")
        if self.sat_bits:
            if self.overflow not in (Overflow.WRAP, Overflow.WRAP_SM):
                raise ValueError(f"sat_bits={self.sat_bits} only applies to AP_WRAP and AP_WRAP_SM, "
                                 f"not AP_{self.overflow.value}; use sat_bits=0")
            if not 0 <= self.sat_bits <= self.width:
                raise ValueError(f"sat_bits must lie in [0, width={self.width}], got {self.sat_bits}")
        elif self.sat_bits < 0:
            raise ValueError(f"sat_bits must be non-negative, got {self.sat_bits}")

    # ----------------------------------------------------------- spelling
    def __str__(self) -> str:
        args = [str(self.width), str(self.int_bits)]
        if self.sat_bits:
            args += [self.rounding.cpp, self.overflow.cpp, str(self.sat_bits)]
        elif self.overflow is not Overflow.WRAP:
            args += [self.rounding.cpp, self.overflow.cpp]
        elif self.rounding is not Rounding.TRN:
            args += [self.rounding.cpp]
        return f"ap_{'' if self.signed else 'u'}fixed<{','.join(args)}>"

    def __repr__(self) -> str:
        parts = [str(self.width), str(self.int_bits)]
        if not self.signed:
            parts.append("signed=False")
        if self.rounding is not Rounding.TRN:
            parts.append(f"rounding={self.rounding.value!r}")
        if self.overflow is not Overflow.WRAP:
            parts.append(f"overflow={self.overflow.value!r}")
        if self.sat_bits:
            parts.append(f"sat_bits={self.sat_bits}")
        return f"FixedType({', '.join(parts)})"

    @classmethod
    def parse(cls, text: str) -> "FixedType":
        """Read a C++ spelling: ``ap_fixed<W,I[,Q[,O[,N]]]>``, ``ap_ufixed<…>``, ``ap_int<W>``, ``ap_uint<W>``."""
        m = _CPP_PATTERN.match(text) if isinstance(text, str) and len(text) <= 200 else None
        if m is None:
            raise ValueError(f"cannot parse {text!r} as a fixed-point type; expected e.g. 'ap_fixed<16,6>' "
                             "or 'ap_ufixed<8,0,AP_RND,AP_SAT>'")
        width = int(m["w"])
        if m["kind"] == "int":
            if m["i"] is not None:
                raise ValueError(f"ap_int takes one template argument, got {text!r}")
            return cls(width, width, signed=not m["u"])
        if m["i"] is None:
            raise ValueError(f"ap_fixed needs at least <W,I>, got {text!r}")
        return cls(width, int(m["i"]), signed=not m["u"],
                   rounding=m["q"] or Rounding.TRN, overflow=m["o"] or Overflow.WRAP,
                   sat_bits=int(m["n"] or 0))

    @classmethod
    def coerce(cls, value: Union["FixedType", str]) -> "FixedType":
        """A :class:`FixedType` as is, or one parsed from its C++ spelling."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            return cls.parse(value)
        raise TypeError(f"expected a FixedType or a C++ spelling such as 'ap_fixed<8,3>', got {value!r}")

    def replace(self, **changes) -> "FixedType":
        """A copy with some fields changed, validated again."""
        return dataclasses.replace(self, **changes)

    # ---------------------------------------------------------- the range
    @property
    def frac_bits(self) -> int:
        """Bits right of the binary point, ``width - int_bits`` (negative when the point lies left of the word)."""
        return self.width - self.int_bits

    @property
    def lsb(self) -> float:
        """Weight of the least significant bit, ``2**-frac_bits``."""
        return math.ldexp(1.0, -self.frac_bits)

    @property
    def code_min(self) -> int:
        """Smallest integer code."""
        return -(1 << (self.width - 1)) if self.signed else 0

    @property
    def code_max(self) -> int:
        """Largest integer code."""
        return (1 << (self.width - 1)) - 1 if self.signed else (1 << self.width) - 1

    @property
    def min(self) -> float:
        """Smallest representable value (a float; exact for widths up to 53; ``-inf`` beyond float's range)."""
        return _float_value(self.code_min, self.frac_bits)

    @property
    def max(self) -> float:
        """Largest representable value (a float; exact for widths up to 53; ``inf`` beyond float's range)."""
        return _float_value(self.code_max, self.frac_bits)

    # ------------------------------------------------- exact result types
    def _grown_int_bits(self, other: "FixedType") -> int:
        # An unsigned operand beside a signed one needs one more integer bit to
        # stay positive once it is read as signed (RType's plus_i/minus_i).
        return max(self.int_bits + (other.signed and not self.signed),
                   other.int_bits + (self.signed and not other.signed))

    def add_type(self, other: "FixedType") -> "FixedType":
        """Type of ``a + b`` in ``ap_fixed``: exact, one carry bit, default modes."""
        int_bits = self._grown_int_bits(other) + 1
        frac = max(self.frac_bits, other.frac_bits)
        return FixedType(int_bits + frac, int_bits, signed=self.signed or other.signed)

    def sub_type(self, other: "FixedType") -> "FixedType":
        """Type of ``a - b`` in ``ap_fixed``: as ``a + b`` but always signed."""
        return self.add_type(other).replace(signed=True)

    def mul_type(self, other: "FixedType") -> "FixedType":
        """Type of ``a * b`` in ``ap_fixed``: widths and integer bits add, default modes."""
        return FixedType(self.width + other.width, self.int_bits + other.int_bits,
                         signed=self.signed or other.signed)

    def sum_type(self, count: int) -> "FixedType":
        """Narrowest type that holds any sum of ``count`` values of this type exactly.

        Signed: ``ceil(log2(count))`` carry bits, since ``count * min`` must fit.
        Unsigned: just enough bits for ``count * max``.  Both are narrower than
        chaining ``add_type`` ``count - 1`` times, which grows a bit per addition.
        """
        if count < 1:
            raise ValueError(f"sum_type needs count >= 1, got {count}")
        if self.signed:
            carry = (count - 1).bit_length()
        else:
            carry = max(0, (count * self.code_max).bit_length() - self.width)
        return FixedType(self.width + carry, self.int_bits + carry, signed=self.signed)

    def accum_type(self, other: "FixedType", count: int) -> "FixedType":
        """Exact accumulator for a sum of ``count`` products ``self * other`` (a dot product of length ``count``)."""
        return self.mul_type(other).sum_type(count)


#: The format of a binary (bipolar) tensor: ``ap_fixed<2,2>`` holding only the codes -1 and +1; a back end
#: may store it as one bit per value (1 for +1).
BIPOLAR = FixedType(2, 2, rounding="TRN", overflow="WRAP")
