"""Small facts about Verilog-2005 numbers: the width a signed range needs, and sized literals."""

from __future__ import annotations

__all__ = ["signed_width", "literal", "mask", "bits"]


def signed_width(low: int, high: int) -> int:
    """Bits of the narrowest two's complement word holding every integer in ``[low, high]`` (at least 1)."""
    return 1 + max(max(high, 0).bit_length(), max(-1 - low, 0).bit_length())


def literal(value: int, width: int) -> str:
    """A signed sized literal for ``value`` in ``width`` bits (``width`` must hold it): ``-8'sd5``, ``8'sd5``."""
    if not -(1 << (width - 1)) <= value <= (1 << (width - 1)) - 1:
        raise ValueError(f"{value} does not fit a signed {width}-bit literal")
    # A negative value is written as the negation of its magnitude in one more bit, so that the magnitude of
    # the most negative code is a valid positive literal too; the expression is still signed.
    return f"{width}'sd{value}" if value >= 0 else f"-{width + 1}'sd{-value}"


def mask(low: int, high: int) -> int:
    """The integer with bits ``low..high`` set (0 when ``high < low``)."""
    return 0 if high < low else ((1 << (high - low + 1)) - 1) << low


def bits(value: int, width: int) -> str:
    """An unsigned sized binary literal of the low ``width`` bits of ``value``: ``4'b1001``."""
    return f"{width}'b{value & ((1 << width) - 1):0{width}b}"
