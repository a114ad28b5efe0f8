"""What the emulator's code generator builds on: the translation unit's pieces, C++ spellings of formats and
constants, and the accumulator chosen per node.

:class:`Unit` collects formats, constants, calls and scratch space node by
node; :mod:`qfx.emulator.codegen` (the layers) and
:mod:`qfx.emulator.structure_emit` (the structural ops) emit into it.
"""

from __future__ import annotations

from typing import Iterable, Optional

import numpy as np

from ..format import FixedType
from ..ir.graph import Constant, Graph, Node

__all__ = ["EmulatorError", "MAX_ACCUMULATOR_BITS", "Unit", "accumulator", "aligned_pair", "carry_bits",
           "check_width", "code_bits", "constant_bits", "csd_digits", "format_type", "int_list", "int_type",
           "operand_type", "signed_bits"]

#: The widest exact intermediate the kernels hold (``__int128``, one bit for the sign).
MAX_ACCUMULATOR_BITS = 127

_ACCUMULATORS = ((31, "std::int32_t"), (63, "std::int64_t"), (127, "qfx::i128"))
_ROW = 24  # constants per source line


class EmulatorError(ValueError):
    """A graph the emulator cannot run (a format or an intermediate too wide); the message names the node."""


# ----------------------------------------------------------- small helpers
def signed_bits(t: FixedType) -> int:
    """Width of a code of ``t`` read as a signed integer."""
    return t.width + (0 if t.signed else 1)


def constant_bits(c: Constant) -> int:
    return max(signed_bits(t) for t in c.types)


def carry_bits(count: int) -> int:
    """``ceil(log2(count))``: the carry bits of a sum of ``count`` terms."""
    return (count - 1).bit_length()


def format_type(t: FixedType) -> str:
    return (f"qfx::Format<{t.width}, {t.frac_bits}, {'true' if t.signed else 'false'}, "
            f"qfx::Rounding::{t.rounding.value}, qfx::Overflow::{t.overflow.value}, {t.sat_bits}>")


def int_list(values: Iterable[int]) -> str:
    items = [str(int(v)) for v in values]
    rows = [", ".join(items[i:i + _ROW]) for i in range(0, len(items), _ROW)]
    return "{" + ",\n    ".join(rows) + "}"


def int_type(codes: np.ndarray, at_least: int = 8) -> str:
    """The narrowest C integer type of ``at_least`` bits or more holding ``codes``."""
    lo, hi = (int(codes.min()), int(codes.max())) if codes.size else (0, 0)
    for bits in (8, 16, 32):
        if bits >= at_least and -(1 << (bits - 1)) <= lo and hi < (1 << (bits - 1)):
            return f"std::int{bits}_t"
    return "std::int64_t"


def code_bits(t: FixedType) -> int:
    """Bits of ``qfx::code_t``, the integer a tensor of format ``t`` is stored in."""
    return next(bits for bits in (8, 16, 32, 64) if signed_bits(t) <= bits)


def operand_type(x: FixedType, weights: np.ndarray) -> str:
    """One type for the weights and the gathered inputs of a convolution: int16 at least, so that the
    dot products are int16 multiply-adds for 8-bit formats."""
    return int_type(weights, at_least=max(16, code_bits(x)))


def csd_digits(code: int) -> list[tuple[int, int]]:
    """The canonical signed-digit form of ``code``: ``[(position, +1 or -1), ...]``."""
    digits, position = [], 0
    while code:
        if code & 1:
            digit = 2 - (code & 3)  # +1 when the next bit is 0, -1 when it is 1: no two adjacent digits
            digits.append((position, digit))
            code -= digit
        code >>= 1
        position += 1
    return digits


def check_width(node_or_input: str, t: FixedType) -> None:
    if t.width > (64 if t.signed else 63):
        raise EmulatorError(f"{node_or_input}: format {t} is wider than the emulator's 64-bit codes (63 bits "
                            "unsigned); narrow it with a QConfig override")


def accumulator(node: Node, bits: int) -> str:
    for limit, name in _ACCUMULATORS:
        if bits <= limit:
            return name
    raise EmulatorError(f"{node.describe()}: its exact intermediate needs {bits} bits, more than the "
                        f"{MAX_ACCUMULATOR_BITS} an __int128 accumulator holds; narrow its input, weight or "
                        "bias formats (a narrower 'accum' format does not help: the sum is formed exactly first)")


# ------------------------------------------------------------- the emitter
class Unit:
    """The pieces of the translation unit, filled node by node."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.names = graph.c_names()
        self.values = graph.values()
        self.formats: list[str] = []
        self.constants: list[str] = []
        self.calls: list[str] = []
        self.scratch: list[str] = []  # workspace members besides the tensors
        self.widths: dict[str, int] = {}

    def fmt(self, tensor: str) -> str:
        return f"formats::{self.names[tensor]}"

    def ws(self, tensor: str) -> str:
        return f"ws.{self.names[tensor]}"

    def constant(self, node: Node, role: str, codes: np.ndarray, c_type: Optional[str] = None) -> str:
        """Declare ``codes`` (flattened) as a constexpr array (of ``c_type``, default the narrowest); its C++ name."""
        name = f"{self.names[node.name]}__{role}"
        flat = np.asarray(codes, dtype=np.int64).ravel()
        self.constants.append(f"constexpr {c_type or int_type(flat)} {name}[{max(flat.size, 1)}] = "
                              f"{int_list(flat if flat.size else [0])};")
        return f"constants::{name}"

    def scalar_frac(self, node: Node, role: str) -> tuple[int, int]:
        c = node.constants[role]
        return int(c.codes), c.types[0].frac_bits


def aligned_pair(unit: Unit, node: Node, function: str) -> str:
    """``qfx::add``/``qfx::sub`` of two tensors: both aligned to the finer binary point, one bit of carry."""
    a, b = (unit.values[name] for name in node.inputs)
    common = max(a.type.frac_bits, b.type.frac_bits)
    up_a, up_b = common - a.type.frac_bits, common - b.type.frac_bits
    bits = max(signed_bits(a.type) + up_a, signed_bits(b.type) + up_b) + 1
    acc = accumulator(node, bits)
    unit.widths[node.name] = bits
    return (f"qfx::{function}<{unit.fmt(node.name)}, {acc}, {a.size}, {up_a}, {up_b}, "
            f"{common - node.output.type.frac_bits}>({unit.ws(a.name)}, {unit.ws(b.name)}, {unit.ws(node.name)});")
