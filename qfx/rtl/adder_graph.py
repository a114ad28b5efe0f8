"""Constant matrix-vector products as adder graphs: CSD digits, then common-subexpression elimination.

A layer multiplies its input vector ``x`` by a constant integer matrix
``M`` (the weight codes).  Hardware needs no multiplier for that: each
product ``M[o, i] * x[i]`` is a sum of shifted copies of ``x[i]``, one per
nonzero digit of ``M[o, i]`` in canonical signed digit (CSD) form, and a
row's output is the sum of all its terms.  A K-hot weight has at most K
digits, hence costs at most K - 1 adders before any sharing.

Sharing (Hartley's common-subexpression elimination, applied to digit
pairs across all rows of the layer):

1. Every row starts as a list of terms ``±(x[i] << s)``.
2. A pair of terms in one row, normalised for shift and sign, is a
   *pattern* ``(a, b, d, subtract)``: ``x[a] + x[b] << d`` (or ``-``), up to
   a common shift and sign.  Patterns are counted over all rows.
3. The pattern that saves the most LUTs (below; ties: the smallest
   ``|d|``, then the smallest pattern tuple, so the result is
   deterministic) becomes a new node computed by one adder, and every
   non-overlapping occurrence in every row is replaced by one term of that
   node.  Counts are updated incrementally for the touched rows only.
4. Repeat while some pattern saves LUTs; then each row sums its remaining
   terms smallest magnitude first (Huffman order), which keeps most adders
   narrow.

Every adder thus adds two terms and no row ever needs more adders than
it had terms minus one, so sharing can only remove adders.

The LUT count of the fabric's adders is what the choice in step 3
minimises.  An adder costs one LUT per bit from its shifted operand's
lowest bit to the highest bit of either operand (one carry chain; the
bits below pass through, the sign bits above cost none; Yosys's LUT
counts for ``qfx_add`` and for whole layers match this to a percent).
Summed over a row's adder tree, that is nearly the total width of the
terms entering the tree, minus the output's width, plus one per adder
whose result grows by a carry bit.
So replacing two terms of widths ``wa`` and ``wb`` by one term of the
pattern's width ``wy`` saves about ``wa + wb - wy + 1`` LUTs in each row
that has it, and building the pattern costs about that much once: a
pattern found in ``count`` rows saves ``(count - 1) (wa + wb - wy + 1)``.
Counting occurrences alone treats ``x0 + x1`` (9 bits, from two 8-bit
inputs: saves 8 a row) like ``x0 + (x1 << 7)`` (16 bits: saves 1).

Every adder passes the low bits of its unshifted operand through and adds
only above them (see ``qfx_add``), so a difference ``(a << s) - b`` is
built as ``-(b - (a << s))``, its sign carried by the terms that use it;
otherwise the low ``s`` bits of ``b`` would need negating.  A row's last
adder is the exception: its sum is the output, whose negation would cost
a LUT per output bit, so it is built positive whenever one of its terms
is or can be made so (signs pushed into the row's own adders).

Ternary adders (``ternary=True``, ``qfx_add3``): on UltraScale+ one
LUT6_2 per bit (the carry-save sum and carry of three bits) and the CARRY8
chain add three terms for the LUTs of one two-term adder, so each row sums
its terms three at a time (an even count first adds its two smallest with
a two-term adder): about ``(n - 1) / 2`` adders instead of ``n - 1``.  Any
two of the three terms may be subtracted (the inversion is in the LUT,
the +1s enter as the chain's carry-in and the carry-save carry of its
first bit), except the one with the lowest shift, whose low bits pass
through: if it is negative, the adder sums the negated terms and its user
subtracts the result.  A shared pair whose only user is another two-term
adder (later patterns took its other occurrences) is merged into it, one
ternary adder for two.  Sharing keeps its pricing: measured with Yosys,
pricing a row's saving at half (a term costs about half an adder in a
ternary tree) gave more LUTs, not fewer.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections import defaultdict
from typing import Optional, Sequence

from .verilog import signed_width

__all__ = ["Term", "Adder", "AdderGraph", "csd_digits", "build_adder_graph"]


@dataclasses.dataclass(frozen=True, order=True)
class Term:
    """``±(node << shift)``: node ``i < inputs`` is input ``x[i]``, later nodes are adders."""

    node: int
    shift: int
    negative: bool = False


@dataclasses.dataclass(frozen=True)
class Adder:
    """``left + right`` (each a shifted, signed node); ``left`` is never negative.

    With a ``third`` term it is a ternary adder ``left + right + third``
    (``qfx_add3``): ``left`` has the lowest shift, at most two terms are
    negative, and ``left`` is negative only if the carry chain starts at its
    shift (:attr:`low`).
    """

    left: Term
    right: Term
    third: Optional[Term] = None

    @property
    def terms(self) -> tuple[Term, ...]:
        return (self.left, self.right) if self.third is None else (self.left, self.right, self.third)

    @property
    def low(self) -> int:
        """A ternary adder's first bit on the carry chain: the bits below it are ``left``'s alone, passed through
        (none when ``left`` is negative: its low bits would need negating)."""
        return self.left.shift if self.left.negative else min(self.right.shift, self.third.shift)


@dataclasses.dataclass
class AdderGraph:
    """Nodes ``0 .. inputs-1`` are the inputs, node ``inputs + k`` is ``adders[k]``; one output term per row."""

    inputs: int
    adders: list[Adder]
    outputs: list[Optional[Term]]  #: ``None`` for a row of zeros

    def evaluate(self, x: Sequence[int]) -> list[int]:
        """The outputs for integer inputs ``x`` (the definition the hardware implements)."""
        values = [int(v) for v in x]
        for adder in self.adders:
            values.append(sum(_term_value(t, values) for t in adder.terms))
        return [0 if t is None else _term_value(t, values) for t in self.outputs]

    def ranges(self, input_ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
        """Exact ``(min, max)`` of every node over all inputs within ``input_ranges``.

        Each node is a linear form ``sum_i c_i x[i]``; its extremes take each
        ``x[i]`` at an end of its range, so tracking the coefficients gives the
        exact range (interval arithmetic on the adders would overestimate it).
        """
        coefficients: list[dict[int, int]] = [{i: 1} for i in range(self.inputs)]
        for adder in self.adders:
            combined: dict[int, int] = defaultdict(int)
            for term in adder.terms:
                sign = -1 if term.negative else 1
                for i, c in coefficients[term.node].items():
                    combined[i] += sign * (c << term.shift)
            coefficients.append({i: c for i, c in combined.items() if c})
        found = []
        for form in coefficients:
            low = sum(min(c * input_ranges[i][0], c * input_ranges[i][1]) for i, c in form.items())
            high = sum(max(c * input_ranges[i][0], c * input_ranges[i][1]) for i, c in form.items())
            found.append((low, high))
        return found


def _term_range(term: Term, node_range: tuple[int, int]) -> tuple[int, int]:
    """The range of ``±(node << shift)`` for a node within ``node_range``."""
    low, high = node_range[0] << term.shift, node_range[1] << term.shift
    return (-high, -low) if term.negative else (low, high)


def _term_value(term: Term, values: list[int]) -> int:
    v = values[term.node] << term.shift
    return -v if term.negative else v


def csd_digits(value: int) -> list[tuple[int, bool]]:
    """The nonzero canonical-signed-digit digits of ``value``: ``(shift, negative)``, lowest first.

    CSD (the non-adjacent form) has the fewest nonzero digits of any signed
    binary representation, and no two of them adjacent.
    """
    digits, shift = [], 0
    while value:
        if value & 1:
            digit = 2 - (value & 3)  # +1 when value = 1 mod 4, -1 when value = 3 mod 4
            digits.append((shift, digit < 0))
            value -= digit
        value >>= 1
        shift += 1
    return digits


Pattern = tuple[int, int, int, bool]
SHARE_COST = {False: 1, True: 1}


def _pattern(t1: Term, t2: Term) -> tuple[Pattern, Term, Term]:
    """The shift- and sign-free pattern of two terms, with the terms in the pattern's order."""
    if (t1.node, t1.shift) > (t2.node, t2.shift):
        t1, t2 = t2, t1
    return (t1.node, t2.node, t2.shift - t1.shift, t1.negative != t2.negative), t1, t2


class _Rows:
    """The rows' terms and the pair counts of every pattern, updated as subexpressions replace pairs.

    ``ranges[node]`` bounds each node's value (the inputs', then one more per
    new node, see :meth:`add_node`): the widths that price a pattern.
    """

    def __init__(self, rows: list[list[Term]], ranges: list[tuple[int, int]], cost: int = 1):
        self.rows = rows
        self.ranges = ranges
        self.cost = cost  #: rows' savings that building the pattern costs (see :func:`build_adder_graph`)
        self.per_row: dict[Pattern, int] = {}  #: LUTs a pattern saves in each row after the first
        self.count: dict[Pattern, int] = defaultdict(int)
        self.where: dict[Pattern, set[int]] = defaultdict(set)
        self.heap: list[tuple[int, int, Pattern]] = []
        for r, terms in enumerate(rows):
            for i, t1 in enumerate(terms):
                for t2 in terms[i + 1:]:
                    self._bump(_pattern(t1, t2)[0], r, 1)

    def add_node(self, adder: Adder) -> None:
        """Record the range of a new node computed by ``adder`` (a two-term one)."""
        (l1, h1), (l2, h2) = (_term_range(t, self.ranges[t.node]) for t in (adder.left, adder.right))
        self.ranges.append((l1 + l2, h1 + h2))

    def saving(self, pattern: Pattern) -> int:
        """LUTs saved by building ``pattern`` once for all its rows (see the module's docstring); none
        unless it occurs twice (a pattern whose shift is wider than its operands saves a negative amount
        a row, which no count below two may turn positive)."""
        if self.count[pattern] <= self.cost:
            return 0
        per_row = self.per_row.get(pattern)
        if per_row is None:
            a, b, d, subtract = pattern
            first = _term_range(Term(a, max(0, -d)), self.ranges[a])
            second = _term_range(Term(b, max(0, d), subtract), self.ranges[b])
            wy = signed_width(first[0] + second[0], first[1] + second[1])
            per_row = self.per_row[pattern] = signed_width(*self.ranges[a]) + signed_width(*self.ranges[b]) - wy + 1
        return (self.count[pattern] - self.cost) * per_row

    def _bump(self, pattern: Pattern, row: int, step: int) -> None:
        self.count[pattern] += step
        if step > 0:
            self.where[pattern].add(row)
            heapq.heappush(self.heap, (-self.saving(pattern), abs(pattern[2]), pattern))

    def best(self) -> Optional[Pattern]:
        """The pattern saving the most LUTs if it saves any (the heap holds stale savings: skip them)."""
        while self.heap:
            negative_saving, _, pattern = self.heap[0]
            current = self.saving(pattern)
            if -negative_saving == current:
                return pattern if current > 0 else None
            heapq.heappop(self.heap)
            if current > 0:
                heapq.heappush(self.heap, (-current, abs(pattern[2]), pattern))
        return None

    def replace(self, pattern: Pattern, node: int, flip: bool = False) -> None:
        """Replace every non-overlapping occurrence of ``pattern`` by a term of ``node`` (``-node`` if ``flip``)."""
        a, b, d, subtract = pattern
        for r in sorted(self.where.pop(pattern, ())):
            terms = self.rows[r]
            position = {(t.node, t.shift): k for k, t in enumerate(terms)}  # (node, shift) is unique in a row
            used: set[int] = set()
            found: list[Term] = []
            for i, first in enumerate(terms):
                j = position.get((b, first.shift + d))
                if first.node != a or j is None or i in used or j in used or i == j:
                    continue
                if (terms[j].negative != first.negative) != subtract:
                    continue
                used.update((i, j))
                found.append(Term(node, min(first.shift, terms[j].shift), first.negative != flip))
            if not found:
                continue
            for i in sorted(used):
                self._remove_counts(r, i, used)
            keep = [t for k, t in enumerate(terms) if k not in used]
            for new in found:
                for other in keep:
                    self._bump(_pattern(new, other)[0], r, 1)
                keep.append(new)
            self.rows[r] = keep
        self.count[pattern] = 0

    def _remove_counts(self, r: int, me: int, used: set[int]) -> None:
        # Pairs between two removed terms are counted once: only from the lower index.
        terms = self.rows[r]
        term = terms[me]
        for k, other in enumerate(terms):
            if k == me or (k in used and k < me):
                continue
            self._bump(_pattern(term, other)[0], r, -1)


def build_adder_graph(rows: Sequence[dict[int, int]], inputs: int, share: bool = True,
                      input_ranges: Optional[Sequence[tuple[int, int]]] = None, ternary: bool = False) -> AdderGraph:
    """The adder graph computing ``y[o] = sum_i rows[o][i] * x[i]`` for ``inputs`` inputs.

    ``rows`` maps input index to integer coefficient (zeros may be left
    out).  ``share=False`` skips the common-subexpression elimination (one
    adder tree per row, for comparison).  ``input_ranges`` (``(min, max)``
    per input; signed 8-bit if not given) only prices the shared patterns:
    the graph computes the same products for any input.
    """
    terms = [[Term(i, s, n) for i in sorted(row) for s, n in csd_digits(int(row[i]))] for row in rows]
    adders: list[Adder] = []
    if share:
        state = _Rows(terms, list(input_ranges) if input_ranges is not None else [(-128, 127)] * inputs,
                      SHARE_COST[ternary])
        while (pattern := state.best()) is not None:
            a, b, d, subtract = pattern
            adder, flip = _adder(Term(a, max(0, -d)), Term(b, max(0, d), subtract))
            adders.append(adder)
            state.add_node(adder)
            state.replace(pattern, inputs + len(adders) - 1, flip)
        terms = state.rows
    size = [1] * inputs
    for adder in adders:
        size.append((size[adder.left.node] << adder.left.shift) + (size[adder.right.node] << adder.right.shift))
    outputs = [(_sum_tree3 if ternary else _sum_tree)(row, adders, inputs, size) for row in terms]
    graph = AdderGraph(inputs, adders, outputs)
    if ternary:
        graph = _fuse(graph, list(input_ranges) if input_ranges is not None else [(-128, 127)] * inputs)
    return graph


def _adder(left: Term, right: Term, negate: bool = True) -> tuple[Adder, bool]:
    """The adder for ``left + right`` (``left`` positive, one of them unshifted), and whether it computes the negation.

    ``(a << s) - b`` becomes ``-(b - (a << s))`` (unless ``negate`` is false):
    the adder then passes the low ``s`` bits of ``b`` through instead of
    negating them, and the term that uses it subtracts it.
    """
    if negate and right.negative and right.shift == 0 and left.shift > 0:
        return Adder(Term(right.node, 0), Term(left.node, left.shift, True)), True
    return Adder(left, right), False


def _combine(t1: Term, t2: Term, adders: list[Adder], inputs: int, root: bool = False) -> Term:
    """One adder for ``t1 + t2``: shifts factored out, the sign moved out when both terms are negative.

    A negative row sum would cost a negation as wide as the output, so the
    ``root`` of a row's tree is built positive whenever one term is.
    """
    if t1.negative and not t2.negative:
        t1, t2 = t2, t1
    low = min(t1.shift, t2.shift)
    flip = t1.negative  # both negative: add the magnitudes, negate the result
    adder, negated = _adder(Term(t1.node, t1.shift - low), Term(t2.node, t2.shift - low, t2.negative != flip),
                            negate=not root)
    adders.append(adder)
    return Term(inputs + len(adders) - 1, low, flip != negated)


def _negate(term: Term, adders: list[Adder], inputs: int, first: int) -> Term:
    """``term`` as a positive term of the same value, if it is negative and one of the tree's own nodes (``first``
    and later, each used once, by its parent) can be rebuilt as its negation; else ``term`` unchanged.

    ``-(a - b)`` is ``b - a``; ``-(a + b)`` is ``(-a) - b`` when ``a`` (or ``b``) can itself be negated so.
    """
    k = term.node - inputs
    if not term.negative or k < first:
        return term
    left, right = adders[k].left, adders[k].right
    if right.negative:
        adders[k] = Adder(Term(right.node, right.shift), Term(left.node, left.shift, True))
        return Term(term.node, term.shift)
    for one, other in ((left, right), (right, left)):
        negated = _negate(Term(one.node, one.shift, True), adders, inputs, first)
        if not negated.negative:
            adders[k] = Adder(negated, Term(other.node, other.shift, True))
            return Term(term.node, term.shift)
    return term


def _sum_tree(row: list[Term], adders: list[Adder], inputs: int, size: list[int]) -> Optional[Term]:
    """The row's terms summed smallest first (Huffman order), so that most adders stay narrow.

    ``size[node]`` bounds the node's magnitude (the sum of its absolute
    coefficients); it grows as adders are appended.  The last adder's
    terms are made positive where they can be (:func:`_negate`), so that the
    row's sum needs no negation.
    """
    if not row:
        return None
    heap = _by_magnitude(row, size)
    order, first = len(heap), len(adders)
    while len(heap) > 1:
        m1, _, t1 = heapq.heappop(heap)
        m2, _, t2 = heapq.heappop(heap)
        root = not heap
        if root and t1.negative and t2.negative:
            t1 = _negate(t1, adders, inputs, first)
            if t1.negative:
                t2 = _negate(t2, adders, inputs, first)
        term = _combine(t1, t2, adders, inputs, root)
        size.append((m1 + m2) >> term.shift)
        heapq.heappush(heap, (m1 + m2, order, term))
        order += 1
    return heap[0][2]


def _combine3(terms: list[Term], adders: list[Adder], inputs: int, root: bool = False) -> Term:
    """One ternary adder for the sum of three terms, shifts factored out.

    The term with the lowest shift passes its low bits through, so it must
    not be negative: if it is (or all three are), the adder sums the
    negated terms and the result is negated.  The ``root`` of a row's tree
    is built positive unless all three terms are negative: its chain then
    starts at the lowest term's shift instead.
    """
    terms = sorted(terms, key=lambda t: (t.shift, t.negative))
    low = terms[0].shift
    negatives = sum(t.negative for t in terms)
    strict = terms[0].shift < terms[1].shift
    flip = negatives == 3 or (strict and terms[0].negative and not root)
    adders.append(Adder(*(Term(t.node, t.shift - low, t.negative != flip) for t in terms)))
    return Term(inputs + len(adders) - 1, low, flip)


def _by_magnitude(row: list[Term], size: list[int]) -> list[tuple[int, int, Term]]:
    """A heap of the row's terms, smallest largest-magnitude first (ties in the terms' order)."""
    heap = [(size[t.node] << t.shift, k, t) for k, t in enumerate(sorted(row))]
    heapq.heapify(heap)
    return heap


def _sum_tree3(row: list[Term], adders: list[Adder], inputs: int, size: list[int]) -> Optional[Term]:
    """The row's terms summed by ternary adders, smallest first (Huffman order, three at a time); an even count
    first adds its two smallest terms with a two-term adder."""
    if not row:
        return None
    heap = _by_magnitude(row, size)
    order, first = len(heap), len(adders)
    while len(heap) > 1:
        group = [heapq.heappop(heap) for _ in range(2 if len(heap) % 2 == 0 else 3)]
        root = not heap
        terms = [t for _, _, t in group]
        if root and len(terms) == 3 and all(t.negative for t in terms):
            terms = _negate3(terms, adders, inputs, first)
        term = _combine(*terms, adders, inputs, root) if len(terms) == 2 else _combine3(terms, adders, inputs, root)
        magnitude = sum(m for m, _, _ in group)
        size.append(magnitude >> term.shift)
        heapq.heappush(heap, (magnitude, order, term))
        order += 1
    return heap[0][2]


def _negate3(terms: list[Term], adders: list[Adder], inputs: int, first: int) -> list[Term]:
    """Three negative terms of a row's last adder with one made positive where a ternary adder of the row's own tree
    (``first`` and later, each used once) can be rebuilt as its negation (its terms' signs flipped; at most two
    negative, its chain then starting at its lowest term's shift if that one is negative): the cheapest such."""
    best, best_cost = None, None
    for j, term in enumerate(terms):
        k = term.node - inputs
        if k < first or adders[k].third is None or not any(t.negative for t in adders[k].terms):
            continue
        flipped = Adder(*(Term(t.node, t.shift, not t.negative) for t in adders[k].terms))
        cost = adders[k].low - flipped.low  # LUTs the chain grows by at its low end
        if best_cost is None or cost < best_cost:
            best, best_cost = (j, k, flipped), cost
    if best is None:
        return terms
    j, k, flipped = best
    adders[k] = flipped
    return [Term(t.node, t.shift) if i == j else t for i, t in enumerate(terms)]


def _luts(adder: Adder, width: int) -> int:
    """The LUTs of ``adder`` with a ``width``-bit result: one per bit from where the carry chain starts."""
    if adder.third is not None:
        return width - adder.low
    shifts = sorted(t.shift for t in adder.terms)
    return width - shifts[1] if shifts[0] == 0 else width


def _fuse(graph: AdderGraph, input_ranges: list[tuple[int, int]]) -> AdderGraph:
    """Each two-term adder used only by one other two-term adder merged into it, a ternary adder, where that saves
    LUTs (a shared pattern whose occurrences later patterns took over, left with one use).

    The merged adder computes the same value, so its users are unchanged;
    it must keep to what ``qfx_add3`` takes (at most two terms negative,
    the lowest-shifted one only where the chain starts at it).
    """
    inputs, adders = graph.inputs, list(graph.adders)
    uses: dict[int, int] = defaultdict(int)
    for term in [t for a in adders for t in a.terms] + [t for t in graph.outputs if t is not None]:
        uses[term.node] += 1
    width = [signed_width(*r) for r in graph.ranges(input_ranges)]
    dead: set[int] = set()
    for q, adder in enumerate(adders):
        if adder.third is not None:
            continue
        for j, term in enumerate(adder.terms):
            p = term.node - inputs
            if p < 0 or p in dead or uses[term.node] != 1 or adders[p].third is not None:
                continue
            other = adder.terms[1 - j]
            inner = [Term(t.node, t.shift + term.shift, t.negative != term.negative) for t in adders[p].terms]
            merged = sorted([other] + inner, key=lambda t: (t.shift, t.negative))
            if sum(t.negative for t in merged) > 2:
                continue
            fused = Adder(*merged)
            if _luts(fused, width[inputs + q]) < _luts(adders[p], width[term.node]) + _luts(adder, width[inputs + q]):
                adders[q] = fused
                dead.add(p)
                break
    if not dead:
        return graph
    renumber, kept = {i: i for i in range(inputs)}, []
    for k, adder in enumerate(adders):
        if k not in dead:
            renumber[inputs + k] = inputs + len(kept)
            kept.append(adder)

    def moved(t: Term) -> Term:
        return Term(renumber[t.node], t.shift, t.negative)

    return AdderGraph(inputs, [Adder(*(moved(t) for t in a.terms)) for a in kept],
                      [None if t is None else moved(t) for t in graph.outputs])
