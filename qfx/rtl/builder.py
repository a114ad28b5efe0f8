"""What every Verilog layer module is built from: element wires, adder instances, ROMs, and the builder.

:class:`Builder` collects one layer module's wires (each element a signed
wire exactly as wide as the range of values it can take), its ``qfx_add``
instances and ROMs, and finishes it with one cast per output element.
:mod:`qfx.rtl.layers` (arithmetic layers) and :mod:`qfx.rtl.structure`
(structural ops and pooling) lower IR nodes with it.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Optional, Sequence

from ..format import FixedType
from ..ir import Value
from .adder_graph import build_adder_graph
from .casts import Cast, plan_cast
from .verilog import literal, signed_width

__all__ = ["RTLError", "Wire", "AdderInstance", "Rom", "LayerModule", "Element", "Builder", "shift_left"]


class RTLError(ValueError):
    """A graph the Verilog back end cannot generate; the message names the node and says what to change."""


@dataclasses.dataclass(frozen=True)
class Wire:
    """``wire [signed] [width-1:0] name;`` and, unless an instance drives it, ``assign name = expr;``."""

    name: str
    width: int
    expr: Optional[str] = None
    signed: bool = True


@dataclasses.dataclass(frozen=True)
class AdderInstance:
    """``y = (a <<< a_shift) +/- (b <<< b_shift)`` as one ``qfx_add`` instance; with an operand ``c``,
    ``y = ±(a <<< a_shift) ± (b <<< b_shift) ± (c <<< c_shift)`` as one ``qfx_add3`` (``negate``: bit 0 for a,
    1 for b, 2 for c; its carry chain starts at bit ``low``)."""

    name: str
    a: str
    b: str
    y: str
    a_width: int
    b_width: int
    a_shift: int
    b_shift: int
    subtract: bool
    y_width: int
    c: str = ""
    c_width: int = 0
    c_shift: int = 0
    negate: int = 0
    low: int = 0


@dataclasses.dataclass(frozen=True)
class Rom:
    """A case ROM as a Verilog function ``name(address)``: ``words`` are (address, word) literals."""

    name: str
    address_width: int
    width: int
    words: list[tuple[str, str]]


@dataclasses.dataclass
class LayerModule:
    """One layer's Verilog module, as the template ``layer.v.j2`` renders it."""

    name: str
    node: str  #: ``node 'fc1' (dense)``, for comments and messages
    op: str
    input_widths: list[int]  #: bits of in0_data, in1_data...
    output_width: int
    casts: list[Cast] = dataclasses.field(default_factory=list)
    wires: list[Wire] = dataclasses.field(default_factory=list)
    adders: list[AdderInstance] = dataclasses.field(default_factory=list)
    roms: list[Rom] = dataclasses.field(default_factory=list)
    output: str = ""  #: the expression assigned to out_data


Element = tuple[str, int, int]  # wire name, lowest and highest code


class Builder:
    """Collects a module's wires, adders and casts; every wire's width comes from its exact range."""

    def __init__(self, module: LayerModule, ternary: bool = False):
        self.module = module
        self.ternary = ternary  #: sum rows with ``qfx_add3`` ternary adders (UltraScale+ LUT6_2 and CARRY8)

    def wire(self, name: str, low: int, high: int, expr: Optional[str]) -> Element:
        self.module.wires.append(Wire(name, signed_width(low, high), expr))
        return name, low, high

    def unpack(self, port: int, value: Value) -> list[Element]:
        """The elements of input ``port`` as signed wires (unsigned codes get a zero sign bit)."""
        t, w = value.type, value.type.width
        self.module.input_widths.append(value.size * w)
        elements = []
        for e in range(value.size):
            field = f"in{port}_data[{e * w + w - 1}:{e * w}]"
            expr = f"$signed({field})" if t.signed else f"$signed({{1'b0, {field}}})"
            elements.append(self.wire(f"x{port}_{e}", t.code_min, t.code_max, expr))
        return elements

    def products(self, rows: Sequence[dict[int, int]], inputs: Sequence[Element]) -> list[Element]:
        """``sum_i rows[o][i] * inputs[i]`` for every row, as a shared adder graph."""
        graph = build_adder_graph(rows, len(inputs), input_ranges=[(low, high) for _, low, high in inputs],
                                  ternary=self.ternary)
        ranges = graph.ranges([(low, high) for _, low, high in inputs])
        names = [name for name, _, _ in inputs]
        for k, adder in enumerate(graph.adders):
            node = len(inputs) + k
            name = f"a{k}"
            low, high = ranges[node]
            self.wire(name, low, high, None)
            names.append(name)
            left, right, third = adder.left, adder.right, adder.third
            extra = {} if third is None else dict(
                c=names[third.node], c_width=signed_width(*ranges[third.node]), c_shift=third.shift,
                negate=sum(t.negative << j for j, t in enumerate(adder.terms)), low=adder.low)
            self.module.adders.append(AdderInstance(
                f"u_a{k}", names[left.node], names[right.node], name, signed_width(*ranges[left.node]),
                signed_width(*ranges[right.node]), left.shift, right.shift, right.negative, signed_width(low, high),
                **extra))
        sums = []
        for o, term in enumerate(graph.outputs):
            if term is None:
                sums.append(self.wire(f"p{o}", 0, 0, "1'sd0"))
                continue
            low, high = (r << term.shift for r in ranges[term.node])
            if term.negative:
                low, high = -high, -low
            sums.append(self.wire(f"p{o}", low, high, ("-" if term.negative else "") + shift_left(names[term.node],
                                                                                              term.shift)))
        return sums

    def align_add(self, name: str, element: Element, shift: int, constant: int) -> Element:
        """``(element <<< shift) + constant``."""
        source, low, high = element
        low, high = (low << shift) + constant, (high << shift) + constant
        expr = shift_left(source, shift)
        if constant:
            expr = f"{expr} + {literal(constant, signed_width(constant, constant))}"
        return self.wire(name, low, high, expr)

    def cast(self, sources: Sequence[tuple[Element, int]], t: FixedType, prefix: str) -> list[str]:
        """Each source (an element and its fractional bits) cast to ``t``: the W-bit words, as wire names.

        Sources sharing a binary point share one cast function, planned for
        the union of their ranges.
        """
        by_frac: dict[int, list[int]] = defaultdict(list)
        for k, (_, frac) in enumerate(sources):
            by_frac[frac].append(k)
        function_of = {}
        for frac in sorted(by_frac):
            members = by_frac[frac]
            low = min(sources[k][0][1] for k in members)
            high = max(sources[k][0][2] for k in members)
            cast = plan_cast(f"cast_{prefix}{len(self.module.casts)}", low, high, frac, t)
            self.module.casts.append(cast)
            function_of.update((k, cast.name) for k in members)
        words = []
        for k, ((source, _, _), _) in enumerate(sources):
            name = f"{prefix}{k}"
            self.module.wires.append(Wire(name, t.width, f"{function_of[k]}({source})", signed=False))
            words.append(name)
        return words

    def read(self, words: Sequence[str], t: FixedType, prefix: str) -> list[Element]:
        """Words of format ``t`` read back as signed elements."""
        return [self.wire(f"{prefix}{k}", t.code_min, t.code_max,
                          f"$signed({word})" if t.signed else f"$signed({{1'b0, {word}}})")
                for k, word in enumerate(words)]

    def finish(self, words: Sequence[str], t: FixedType, count: int) -> None:
        self.module.output_width = count * t.width
        self.module.output = "{" + ", ".join(reversed(list(words))) + "}" if len(words) > 1 else words[0]


def shift_left(name: str, shift: int) -> str:
    return f"({name} <<< {shift})" if shift else name


# -------------------------------------------------------------------- ops
