"""The export IR's graph: :class:`Graph`, its checks, and C identifiers for its tensor names.

A graph is a list of nodes in topological order.  Every node computes one
tensor, named like the node, with one :class:`~qfx.format.FixedType` and a
shape per sample (the batch dimension is implicit).  Weights and other
constants are integer codes with their format, one per tensor or one per
channel along dimension 0.  The numerics of each op are defined in
:mod:`qfx.ir.ops`; nothing here knows PyTorch.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterator

from ..format import FixedType
from . import limits
from .ops import check_node
from .values import Constant, IRError, Node, Value

__all__ = ["IRError", "Value", "Constant", "Node", "Graph", "c_identifier", "Identifiers"]


@dataclasses.dataclass(eq=False)
class Graph:
    """A typed dataflow graph: fixed-point inputs, nodes in topological order, outputs.

    Build one with :func:`qfx.export`, or load one with :func:`qfx.ir.load`;
    :meth:`check` verifies it (done by both).
    """

    name: str
    inputs: list[Value]
    nodes: list[Node]
    outputs: list[str]

    # ------------------------------------------------------------- lookup
    def values(self) -> dict[str, Value]:
        """Every tensor by name: the inputs, then each node's output."""
        found = {v.name: v for v in self.inputs}
        found.update((n.name, n.output) for n in self.nodes)
        return found

    def value(self, name: str) -> Value:
        """The tensor called ``name``."""
        try:
            return self.values()[name]
        except KeyError:
            raise KeyError(f"graph '{self.name}' has no tensor '{name}'") from None

    def node(self, name: str) -> Node:
        """The node called ``name``."""
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"graph '{self.name}' has no node '{name}'")

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    @property
    def output_values(self) -> list[Value]:
        """The output tensors, in order."""
        values = self.values()
        return [values[name] for name in self.outputs]

    def c_names(self) -> dict[str, str]:
        """A C identifier per tensor name: sanitised, unique, deterministic (see :func:`c_identifier`)."""
        taken = Identifiers()
        names = {}
        for value in list(self.inputs) + [n.output for n in self.nodes]:
            names[value.name] = c_identifier(value.name, taken)
        return names

    # --------------------------------------------------------- checking
    def check(self) -> "Graph":
        """Verify names, order, op arguments, shapes and constant codes; raise :class:`IRError` at the first problem."""
        if len(self.nodes) > limits.MAX_NODES:
            raise IRError(f"graph '{self.name}' has {len(self.nodes)} nodes, more than the limit of {limits.MAX_NODES}")
        known: dict[str, Value] = {}
        for value in self.inputs:
            _check_name(value.name, "input")
            _check_value(value, f"input '{value.name}'")
            if value.name in known:
                raise IRError(f"graph '{self.name}': input '{value.name}' is defined twice")
            known[value.name] = value
        for node in self.nodes:
            _check_name(node.name, "node")
            if node.name in known:
                raise IRError(f"{node.describe()}: its name is already used by another tensor; names must be unique")
            if node.output.name != node.name:
                raise IRError(f"{node.describe()}: its output is called '{node.output.name}', but a node's output "
                              "must carry the node's name")
            missing = [i for i in node.inputs if i not in known]
            if missing:
                raise IRError(f"{node.describe()}: input '{missing[0]}' is not an input of the graph nor the "
                              "output of an earlier node (nodes must be in topological order)")
            _check_value(node.output, node.describe())
            for role, t in node.formats.items():
                _check_type(t, f"{node.describe()}: format '{role}'")
            for role, c in node.constants.items():
                for t in c.types[:1] if len(set(c.types)) == 1 else set(c.types):
                    _check_type(t, f"{node.describe()}: constant '{role}'")
            check_node(node, [known[i] for i in node.inputs])
            known[node.name] = node.output
        if not self.outputs:
            raise IRError(f"graph '{self.name}' has no outputs")
        for name in self.outputs:
            if name not in known:
                raise IRError(f"graph '{self.name}': output '{name}' is not a tensor of the graph")
        return self

    def __repr__(self) -> str:
        ops = ", ".join(f"{n.name}:{n.op}" for n in self.nodes)
        return f"Graph({self.name!r}, inputs={[v.name for v in self.inputs]}, nodes=[{ops}], outputs={self.outputs})"


def _check_name(name: Any, kind: str) -> None:
    # printable (str.isprintable): no control, format (bidi overrides), surrogate, unassigned or separator
    # character other than the space
    if not isinstance(name, str) or not 1 <= len(name) <= 200 or not name.isprintable():
        raise IRError(f"{kind} name {name!r:.240} is not allowed: names are 1 to 200 printable characters")


def _check_type(t: FixedType, where: str) -> None:
    if t.width > limits.MAX_WIDTH or abs(t.int_bits) > limits.MAX_INT_BITS:
        raise IRError(f"{where}: format {t} is beyond the limits of the IR (width up to {limits.MAX_WIDTH} bits, "
                      f"integer bits within +-{limits.MAX_INT_BITS})")


def _check_value(value: Value, where: str) -> None:
    _check_type(value.type, where)
    if value.size > limits.MAX_ELEMENTS:
        raise IRError(f"{where}: shape {value.shape} holds {value.size} elements per sample, more than the limit "
                      f"of {limits.MAX_ELEMENTS}")


_C_KEYWORDS = frozenset("""
    alignas alignof and and_eq asm auto bitand bitor bool break case catch char char16_t char32_t char8_t class
    compl concept const consteval constexpr constinit const_cast continue co_await co_return co_yield decltype
    default delete do double dynamic_cast else enum explicit export extern false float for friend goto if inline
    int long mutable namespace new noexcept not not_eq nullptr operator or or_eq private protected public register
    reinterpret_cast requires return short signed sizeof static static_assert static_cast struct switch template
    this thread_local throw true try typedef typeid typename union unsigned using virtual void volatile wchar_t
    while xor xor_eq main input output reg wire module begin end always assign parameter localparam integer
""".split())


def c_identifier(name: str, taken: set[str]) -> str:
    """A C/C++/Verilog identifier derived from ``name``, unique among ``taken`` (which it joins).

    Characters other than ASCII letters, digits and ``_`` become ``_``, runs
    of ``_`` shrink to one, a leading digit or a keyword gets a ``t_``
    prefix, names are at most 48 characters, and a clash takes the suffix
    ``_2``, ``_3``... in order of appearance.  Nothing of ``name`` other
    than letters, digits and ``_`` can reach generated code.
    """
    base = re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_]", "_", name[:400])).strip("_")[:48] or "t"
    if base[0].isdigit() or base in _C_KEYWORDS or base.startswith("ap_") or base.startswith("hls"):
        base = "t_" + base
    if isinstance(taken, Identifiers):
        return taken.unique(base)
    candidate = Identifiers(taken).unique(base)  # one pass over `taken`: name many with one Identifiers instead
    taken.add(candidate)
    return candidate


class Identifiers(set):
    """A set of identifiers that also holds them in lower case, so :func:`c_identifier` finds a free name in
    constant time (names that differ only in case count as one: some file systems ignore case)."""

    def __init__(self, names: Any = ()) -> None:
        super().__init__(names)
        self.lower = {name.lower() for name in self}
        self.next: dict[str, int] = {}  # per lower-case base, the suffix below which every candidate is taken

    def add(self, name: str) -> None:
        super().add(name)
        self.lower.add(name.lower())

    def __or__(self, other: Any) -> "Identifiers":
        return Identifiers(set(self) | set(other))

    def unique(self, base: str) -> str:
        """``base``, else the first free of ``base_2``, ``base_3``...; it joins the set."""
        n = self.next.get(base.lower(), 1)
        candidate = base if n == 1 else f"{base}_{n}"
        while candidate.lower() in self.lower:
            n += 1
            candidate = f"{base}_{n}"
        self.next[base.lower()] = n
        self.add(candidate)
        return candidate

