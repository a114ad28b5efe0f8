"""What every HLS layer plan is made of: the :class:`Layer` record, its constant arrays, and the helpers
that make a layer's result exact (integer widths, CSD digits, the exact result type and its casts).

:mod:`qfx.hls.layers` plans the arithmetic layers with them,
:mod:`qfx.hls.structure` the structural ops and :mod:`qfx.hls.binary` the
binarized ones.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..format import FixedType
from ..ir import Node

__all__ = ["KHOT_MAX_DIGITS", "MAX_EXACT_WIDTH", "MAX_TENSOR_WIDTH", "HLSError", "ArrayConstant", "Layer",
           "bits_signed", "code_type", "int_type", "magnitude", "frame", "csd_digits", "c_array", "cast_source",
           "exact_result"]

#: Weights are written as shifts and adds when every code has at most this many nonzero CSD digits.
KHOT_MAX_DIGITS = 2
#: ap_int's default upper width (AP_INT_MAX_W).
MAX_EXACT_WIDTH = 1024
#: Tensors travel as 64-bit codes through the testbench and the trace.
MAX_TENSOR_WIDTH = 62


class HLSError(ValueError):
    """A graph the HLS back end cannot generate; the message names the node or tensor and what to change."""


@dataclasses.dataclass(frozen=True)
class ArrayConstant:
    """A constant array in ``weights.h``: its element type, name, dimensions and initialiser text."""

    cpp_type: str
    name: str
    dims: tuple[int, ...]
    initializer: str


@dataclasses.dataclass
class Layer:
    """One node ready to render: ``config`` typedefs and constants, ``arrays``, and the call's arguments."""

    node: Node
    name: str  #: C identifier of the node's output tensor
    function: str  #: the library function (``dense``, ``conv2d``...)
    inputs: list[str]  #: C identifiers of the input tensors
    trace_id: int
    types: list[tuple[str, str]] = dataclasses.field(default_factory=list)  #: (typedef name, C++ type)
    ints: list[tuple[str, int]] = dataclasses.field(default_factory=list)  #: sizes and shifts
    codes: list[tuple[str, int]] = dataclasses.field(default_factory=list)  #: code constants (long long)
    arrays: list[ArrayConstant] = dataclasses.field(default_factory=list)
    khot_digits: int = 0  #: K of the shift-and-add weights, 0 when weights multiply
    streams_natively: bool = False  #: the layer has its own stream form (conv line buffer)


# ------------------------------------------------------------- helpers
def bits_signed(bound: int) -> int:
    """Bits of a signed integer holding every value in ``[-bound, bound]``."""
    return max(int(bound).bit_length() + 1, 2)


def code_type(t: FixedType) -> str:
    """The ``ap_int``/``ap_uint`` holding ``t``'s codes."""
    return f"ap_{'' if t.signed else 'u'}int<{t.width}>"


def int_type(values: np.ndarray) -> str:
    """The narrowest signed ``ap_int`` holding every integer in ``values``."""
    bound = max((abs(int(v)) for v in np.asarray(values, dtype=object).ravel()), default=0)
    return f"ap_int<{bits_signed(bound)}>"


def magnitude(t: FixedType) -> int:
    """The largest ``|code|`` of ``t``."""
    return max(abs(t.code_min), abs(t.code_max))


def frame(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """A tensor's (channels, height, width) as streams and the trace see it."""
    if len(shape) == 1:
        return shape[0], 1, 1
    if len(shape) == 2:
        return shape[0], 1, shape[1]
    if len(shape) == 3:
        return shape[0], shape[1], shape[2]
    raise HLSError(f"tensors of shape {shape} (rank {len(shape)}) are not supported by the HLS back end")


def csd_digits(code: int) -> list[tuple[int, int]]:
    """The canonical signed-digit form of ``code``: ``[(sign, position), ...]``, fewest nonzero digits."""
    digits, position, n = [], 0, int(code)
    while n:
        if n & 1:
            digit = 2 - (n & 3)  # +1 when n = 1 (mod 4), -1 when n = 3 (mod 4)
            digits.append((digit, position))
            n -= digit
        n >>= 1
        position += 1
    return digits


def c_array(values: np.ndarray) -> str:
    """A nested C initialiser for an integer array (``{{1, 2}, {3, 4}}``)."""
    if values.ndim == 1:
        return "{" + ", ".join(str(int(v)) for v in values) + "}"
    return "{" + ", ".join(c_array(v) for v in values) + "}"


def cast_source(width: int, frac: int, signed: bool, target: FixedType) -> FixedType:
    """A format holding every value of ``width`` bits at ``frac`` fractional bits, shaped for casting to ``target``.

    ``ap_fixed``'s cast reads bits of its source at positions set by the two
    binary points; C simulation asserts when one lies past the source's
    word.  The returned format (same values) keeps its binary point inside
    the word (``frac >= 0``, at least one integer bit) and reaches as high
    as ``target``'s lowest bit (``int_bits >= 1 - target.frac_bits``).
    """
    fixed_frac = max(frac, 0)
    int_bits = max(width - frac, 1, 1 - target.frac_bits)
    return FixedType(fixed_frac + int_bits, int_bits, signed=signed)


def exact_result(layer: Layer, width: int, frac: int) -> None:
    """``exact_code_t`` (``width`` bits, ``frac`` fractional) and the casts that end the layer.

    The code is read as ``exact_t`` (see :func:`cast_source`) after
    ``exact_shift`` zero bits are appended, cast to ``accum_t`` (the node's
    accumulator, else ``exact_t``), which is read as ``accum_wide_t`` (the
    same values) and cast to the output type.
    """
    accum = layer.node.formats.get("accum")
    output = layer.node.output.type
    exact = cast_source(width, frac, True, accum if accum is not None else output)
    if exact.width > MAX_EXACT_WIDTH:
        raise HLSError(f"{layer.node.describe()}: its exact result needs {exact.width} bits, more than ap_int's "
                       f"{MAX_EXACT_WIDTH}; narrow the weights or the input format")
    layer.types += [("exact_code_t", f"ap_int<{width}>"), ("exact_bits_t", f"ap_int<{exact.width}>"),
                    ("exact_t", str(exact))]
    layer.ints.append(("exact_shift", exact.frac_bits - frac))
    if accum is None:
        layer.types += [("accum_t", "exact_t"), ("accum_wide_t", "exact_t")]
    else:
        wide = cast_source(accum.width, accum.frac_bits, accum.signed, output)
        layer.types += [("accum_t", str(accum)), ("accum_wide_t", str(wide))]
