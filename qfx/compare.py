"""Layer-by-layer comparison of implementations of one graph: where do they first differ?

``compare(model, graph, x)`` runs each implementation (PyTorch in eval mode,
the IR interpreter, the C++ emulator) with every intermediate tensor
captured, converts each tensor to integer codes of its IR format and reports,
in the graph's topological order, how many codes differ between every pair
of implementations, and the first tensor where any two differ.

A back end is a function ``(model, graph, x) -> {tensor name: codes}``
registered in :data:`BACKENDS`; one that captures only some tensors (only
the outputs, say) is compared on those.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch
from torch import fx, nn

from .ir.graph import Graph
from .ir.interpreter import input_codes, run_codes

__all__ = ["compare", "ComparisonReport", "TensorComparison", "BACKENDS"]

Tensors = dict[str, np.ndarray]


# ------------------------------------------------------------- back ends
class _Capture(fx.Interpreter):
    """Runs a GraphModule node by node, keeping each node's output by its name (the IR's tensor names).

    An interpreter rather than forward hooks: one module called from two
    places has two fx nodes, and each keeps its own output.
    """

    def __init__(self, module: fx.GraphModule, wanted: set[str]) -> None:
        super().__init__(module)
        self.wanted = wanted
        self.captured: dict[str, torch.Tensor] = {}

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        if n.name in self.wanted and isinstance(result, torch.Tensor):
            self.captured[n.name] = result.detach()
        return result


def _codes_of_values(values: np.ndarray, frac_bits: int) -> np.ndarray:
    """``values * 2**F`` as float64: integers where the values lie on the format's grid (exact up to 53 bits)."""
    return np.ldexp(np.asarray(values, dtype=np.float64), frac_bits)


def _torch_tensors(model: nn.Module, graph: Graph, x: np.ndarray) -> Tensors:
    from .convert import trace
    module = model if isinstance(model, fx.GraphModule) else trace(model)
    values = graph.values()
    capture = _Capture(module, set(values))
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            capture.run(torch.as_tensor(x))
    finally:
        module.train(was_training)
    return {name: _codes_of_values(t.double().cpu().numpy(), values[name].type.frac_bits)
            for name, t in capture.captured.items()}


def _ir_tensors(model: nn.Module, graph: Graph, x: np.ndarray) -> Tensors:
    return run_codes(graph, [input_codes(x, graph.inputs[0].type)])


def _emulator_tensors(model: nn.Module, graph: Graph, x: np.ndarray) -> Tensors:
    from .emulator import run_codes as emulate_codes
    return emulate_codes(graph, input_codes(x, graph.inputs[0].type), trace=True)


#: The implementations ``compare`` knows, by name.
BACKENDS: dict[str, Callable[[nn.Module, Graph, np.ndarray], Tensors]] = {
    "torch": _torch_tensors, "ir": _ir_tensors, "emulator": _emulator_tensors,
}


# ---------------------------------------------------------------- report
@dataclasses.dataclass
class TensorComparison:
    """One tensor across implementations: differing codes per pair of back ends, and the first difference."""

    name: str
    op: str  #: the producing node's op, or ``input``
    format: str
    elements: int  #: codes per implementation (batch included)
    mismatches: dict[tuple[str, str], int]  #: pairs that both captured this tensor
    example: Optional[str] = None  #: where and how the first differing pair differs

    @property
    def equal(self) -> bool:
        return not any(self.mismatches.values())


@dataclasses.dataclass
class ComparisonReport:
    """Every tensor in topological order; :attr:`first_mismatch` is where the implementations part."""

    graph: str
    backends: tuple[str, ...]
    samples: int
    tensors: list[TensorComparison]

    @property
    def first_mismatch(self) -> Optional[TensorComparison]:
        """The first tensor (topological order) where any two implementations differ, or ``None``."""
        return next((t for t in self.tensors if not t.equal), None)

    @property
    def equal(self) -> bool:
        """Whether all implementations agree on every tensor they captured, bit for bit."""
        return self.first_mismatch is None

    def __str__(self) -> str:
        pairs = list(itertools.combinations(self.backends, 2))
        head = ["tensor", "op", "format", "codes"] + [f"{a}/{b}" for a, b in pairs]
        rows = [[t.name, t.op, t.format, str(t.elements)]
                + [str(t.mismatches[p]) if p in t.mismatches else "-" for p in pairs] for t in self.tensors]
        widths = [max(len(r[k]) for r in [head] + rows) for k in range(len(head))]
        lines = [f"compare: graph '{self.graph}', {self.samples} samples, {', '.join(self.backends)} "
                 "(differing codes per pair; '-': not captured by both)"]
        lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [head] + rows]
        first = self.first_mismatch
        if first is None:
            lines.append(f"all {len(self.tensors)} tensors agree bit for bit")
        else:
            lines.append(f"first difference: tensor '{first.name}' ({first.op}): {first.example}")
        return "\n".join(lines)


def _first_difference(name_a: str, a: np.ndarray, name_b: str, b: np.ndarray, frac_bits: int) -> str:
    index = tuple(int(i) for i in np.argwhere(a != b)[0])
    count = int((a != b).sum())
    value = lambda codes: float(np.ldexp(float(codes[index]), -frac_bits))  # noqa: E731
    return (f"{name_a} and {name_b} differ in {count} of {a.size} codes; the first at sample {index[0]}, "
            f"index {index[1:]}: {name_a} {value(a)!r}, {name_b} {value(b)!r}")


# ---------------------------------------------------------------- compare
def compare(model: Optional[nn.Module], graph: Graph, x: Union[np.ndarray, torch.Tensor],
            backends: Sequence[str] = ("torch", "ir", "emulator")) -> ComparisonReport:
    """Run ``backends`` on the float batch ``x`` and compare every tensor, layer by layer.

    Args:
        model: the quantized PyTorch model ``graph`` was exported from (only
            the ``torch`` back end reads it; ``None`` without it).
        graph: the IR graph; tensor names are the model's fx node names.
        x: a float batch for the graph's single input.
        backends: names in :data:`BACKENDS`, at least two.

    Returns a :class:`ComparisonReport`; ``print`` it for a table.
    """
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or len(backends) < 2:
        raise ValueError(f"compare needs two or more back ends among {', '.join(BACKENDS)}; got {list(backends)}")
    if len(graph.inputs) != 1:
        raise ValueError(f"compare takes graphs with one input; graph '{graph.name}' has {len(graph.inputs)}")
    if "torch" in backends and model is None:
        raise ValueError("the 'torch' back end needs the model; pass it, or leave 'torch' out of backends")
    array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    expected = graph.inputs[0]
    if array.ndim == 0 or tuple(array.shape[1:]) != expected.shape:
        raise ValueError(f"compare: input '{expected.name}' takes shape (N, {', '.join(map(str, expected.shape))}), "
                         f"got {tuple(array.shape)}")
    captured = {b: BACKENDS[b](model, graph, array) for b in backends}
    producers = {n.name: n.op for n in graph.nodes}
    tensors = []
    for value in list(graph.inputs) + [n.output for n in graph.nodes]:
        present = [b for b in backends if value.name in captured[b]]
        mismatches, example = {}, None
        for a, b in itertools.combinations(present, 2):
            ca, cb = np.asarray(captured[a][value.name]), np.asarray(captured[b][value.name])
            if ca.shape != cb.shape:
                mismatches[(a, b)] = max(ca.size, cb.size)
                example = example or f"{a} gives shape {ca.shape}, {b} gives {cb.shape}"
                continue
            mismatches[(a, b)] = int((ca != cb).sum())
            if mismatches[(a, b)] and example is None:
                example = _first_difference(a, ca, b, cb, value.type.frac_bits)
        size = int(np.asarray(captured[present[0]][value.name]).size) if present else 0
        tensors.append(TensorComparison(value.name, producers.get(value.name, "input"), str(value.type), size,
                                        mismatches, example))
    return ComparisonReport(graph.name, tuple(backends), int(array.shape[0]), tensors)
