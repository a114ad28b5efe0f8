"""The folded compute unit of a streaming convolution or dense layer: ``P`` dot products per cycle, weights from a ROM.

A stage steps through ROM addresses, one a step: a convolution through
``F * G`` per window (channel group ``step``, then each of its ``G`` tap
groups, ``x`` being that group's taps), a dense layer through ``F`` per
input pixel (``x`` the pixel).  At each, lane ``p`` computes for output
channel ``step * P + p``: ``sum = acc + sum_i w[address][p][i] * x[i]``,
``acc`` being the stage's sum of the earlier tap groups or pixels (zero at
the first), and ``y = cast(sum + bias[step][p])`` (through the ``accum``
format when the node has one), taken at the last.  Weights differ per output channel in binary point; every
weight is shifted to the largest one (and the bias to the common point),
so all lanes add at one binary point, which changes no value and hence no
cast.

The weight and bias ROMs are memories read on the clock (a registered
read, which Yosys maps to block RAM where they are deep and to LUTRAM or
flip-flops where they are shallow, and which cuts the ROM's decoding off
the arithmetic): the stage hands the unit the *next* cycle's address, so
the word of the current step is already registered when its input
arrives and the unit keeps one step per cycle.  A ROM of one word is a
constant.

Products: when every weight has at most :data:`SHIFT_ADD_DIGITS` nonzero
CSD digits (K-hot weights), the ROM holds each digit's enable, sign and
shift and a product is a sum of shifted inputs (no multiplier, no DSP);
otherwise it holds the codes and the product is a ``*`` (a DSP48E2).
A negative digit ``-(x << s)`` is formed as ``~(x << s) + 1``: the unit
XORs the shifted input with the digit's sign (no negation per digit) and
the ROM word carries, per lane, the count of its negative digits, added
once.  A digit's shifter, sign and enable are only as wide as ``x`` plus
the largest shift (what the shifted input needs), and the digit enters
the sum sign-extended, which is the same value.
All sums are formed modulo ``2**WS`` where ``WS`` holds the exact range of
every channel's sum (with and without its bias), so the narrow
two's-complement arithmetic is exact (a partial sum may wrap; the whole sum
is exact modulo ``2**WS`` and fits).  No ``*`` appears in shift-add mode,
not even in an index: every bit offset is computed here.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from ...format import FixedType
from ..adder_graph import csd_digits
from ..casts import Cast, plan_cast
from ..verilog import signed_width

__all__ = ["Lanes", "plan_lanes", "SHIFT_ADD_DIGITS", "ROM_BLOCK_WORDS"]

#: Weights with at most this many nonzero CSD digits are built from shifts and adds instead of multipliers.
SHIFT_ADD_DIGITS = 3
#: A ROM of more words is marked ``rom_style = "block"``: Yosys 0.23 otherwise builds a deep ROM from logic (a
#: 144-word ROM of 85 bits: 250 LUTs, or 3 RAMB18E2 when marked).
ROM_BLOCK_WORDS = 32


@dataclasses.dataclass
class Lanes:
    """One lanes module as ``stream/lanes.v.j2`` renders it."""

    name: str
    node: str
    mode: str  #: "shift-add" or "multiply"
    lanes: int  #: P
    address_bits: int
    step_bits: int
    x_width: int  #: bits of the x port
    term_width: int  #: bits of each input as a signed operand (shift-add: of a digit's shifted input)
    sum_width: int  #: WS
    y_width: int  #: bits of one output code
    rom_width: int
    rom: list[str]  #: the word of every address (Verilog hex literals)
    bias_width: int  #: bits of the bias word (P fields), 0 when there is no bias
    bias_rom: list[str]  #: the bias word of every step
    xs: list[tuple[str, str]]  #: (name, expression)
    terms: list[tuple[str, str]]
    sums: list[str]  #: lane p's expression of sum (acc + terms)
    totals: list[str]  #: lane p's expression of sum + bias
    casts: list[Cast]
    outputs: list[str]  #: lane p's expression of y

    @property
    def block_words(self) -> int:
        """ROMs deeper than this are marked for block RAM."""
        return ROM_BLOCK_WORDS

    @property
    def multipliers(self) -> int:
        return len(self.terms) if self.mode == "multiply" else 0


def _field(word: str, low: int, width: int) -> str:
    return f"{word}[{low}]" if width == 1 else f"{word}[{low + width - 1}:{low}]"


def plan_lanes(name: str, node_text: str, steps: int, weights: np.ndarray, bias: Optional[np.ndarray],
               x_type: FixedType, accum: Optional[FixedType], out: FixedType, frac: int,
               channel_ranges: list[tuple[int, int]]) -> Lanes:
    """The lanes module of ``weights[address][lane][tap]`` (aligned codes at binary point ``frac``), ``steps`` steps.

    ``bias[step][lane]`` (aligned to ``frac``) or ``None``; ``channel_ranges``
    the exact range of every output channel's whole sum without bias
    (dense: over all its input pixels), from which ``WS`` follows.
    """
    addresses, lanes, taps = weights.shape
    lows, highs = [], []
    for k, (lo, hi) in enumerate(channel_ranges):
        b = 0 if bias is None else int(bias.reshape(-1)[k])
        lows += [lo, lo + b]
        highs += [hi, hi + b]
    low, high = min(lows + [0]), max(highs + [0])
    ws = signed_width(low, high)
    live = [(p, i) for p in range(lanes) for i in range(taps) if weights[:, p, i].any()]
    digits = {int(v): csd_digits(int(v)) for v in np.unique(weights)}
    most = max([len(d) for d in digits.values()] + [0])
    shift_add = most <= SHIFT_ADD_DIGITS
    if shift_add:
        top_shift = max([s for d in digits.values() for s, _ in d] + [0])
        sb = max(top_shift.bit_length(), 1)
        per_tap = most * (2 + sb)
    else:
        wb = signed_width(int(weights.min()), int(weights.max()))
        per_tap = wb
    negatives = shift_add and any(negative for d in digits.values() for _, negative in d)
    corrections = per_tap * len(live)  # the lanes' counts of negative digits sit above the taps
    cb = (taps * most).bit_length()  # bits of one count
    rom_width = max(corrections + (lanes * cb if negatives else 0), 1)
    rom = []
    for a in range(addresses):
        word = 0
        correction = [0] * lanes
        for k, (p, i) in enumerate(live):
            v = int(weights[a, p, i])
            base = k * per_tap
            if shift_add:
                for d, (shift, negative) in enumerate(csd_digits(v)):
                    field = (1 | (int(negative) << 1) | (shift << 2)) << (base + d * (2 + sb))
                    word |= field
                    correction[p] += int(negative)
            else:
                word |= (v & ((1 << wb) - 1)) << base
        if negatives:
            for p in range(lanes):
                word |= correction[p] << (corrections + p * cb)
        rom.append(f"{rom_width}'h{word:x}")
    xb = x_type.width
    # a digit's shifted input fits x's signed width plus the largest shift: formed that narrow, then sign-extended
    xw = min(xb + (0 if x_type.signed else 1) + top_shift, ws) if shift_add else ws
    xs = []
    for i in range(taps):
        field = _field("x", i * xb, xb)
        xs.append((f"x{i}", f"$signed({field})" if x_type.signed else f"$signed({{1'b0, {field}}})"))
    terms, by_lane = [], [[] for _ in range(lanes)]
    for k, (p, i) in enumerate(live):
        base = k * per_tap
        if shift_add:
            parts = []
            for d in range(most):
                at = base + d * (2 + sb)
                shift = _field("w", at + 2, sb)
                # enable as a mask, not a multiplexer: no shifter is then a candidate for Yosys's `share`
                parts.append(f"$signed(((x{i} <<< {shift}) ^ {{{xw}{{w[{at + 1}]}}}}) & {{{xw}{{w[{at}]}}}})")
            expr = " + ".join(parts)
        else:
            expr = f"x{i} * $signed({_field('w', base, wb)})"
        terms.append((f"t{p}_{i}", expr))
        by_lane[p].append(f"t{p}_{i}")
    # the count is unsigned: it widens with zeros, and the sum wraps modulo 2**WS either way
    head = [[_field("acc", p * ws, ws)] + ([_field("w", corrections + p * cb, cb)] if negatives else [])
            for p in range(lanes)]
    sums = [" + ".join(head[p] + by_lane[p]) for p in range(lanes)]
    bias_width, bias_rom, totals = 0, [], [f"sum{p}" for p in range(lanes)]
    if bias is not None:
        bb = signed_width(int(bias.min()), int(bias.max()))
        bias_width = bb * lanes
        for s in range(steps):
            word = 0
            for p in range(lanes):
                word |= (int(bias[s, p]) & ((1 << bb) - 1)) << (p * bb)
            bias_rom.append(f"{bias_width}'h{word:x}")
        totals = [f"sum{p} + $signed({_field('b', p * bb, bb)})" for p in range(lanes)]
    casts = []
    if accum is not None:
        first = plan_cast("cast_accum", low, high, frac, accum)
        second = plan_cast("cast_out", accum.code_min, accum.code_max, accum.frac_bits, out)
        casts = [first, second]
        read = "$signed({})" if accum.signed else "$signed({{1'b0, {}}})"
        outputs = [f"cast_out({read.format(f'cast_accum(total{p})')})" for p in range(lanes)]  # via accum
    else:
        casts = [plan_cast("cast_out", low, high, frac, out)]
        outputs = [f"cast_out(total{p})" for p in range(lanes)]
    return Lanes(name=name, node=node_text, mode="shift-add" if shift_add else "multiply", lanes=lanes,
                 address_bits=max((addresses - 1).bit_length(), 1), step_bits=max((steps - 1).bit_length(), 1),
                 x_width=taps * xb, term_width=xw, sum_width=ws, y_width=out.width, rom_width=rom_width, rom=rom,
                 bias_width=bias_width, bias_rom=bias_rom, xs=xs, terms=terms, sums=sums, totals=totals,
                 casts=casts, outputs=outputs)
