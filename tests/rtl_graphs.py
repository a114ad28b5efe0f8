"""Small graphs for the RTL tests: a hand-built one that exercises every rounding and overflow mode."""

from __future__ import annotations

import numpy as np

from qfx.format import FixedType
from qfx.ir import Constant, Graph, Node, Value

#: Output formats of the branches of :func:`every_mode_graph`: each rounding mode, each overflow mode,
#: saturation bits, unsigned formats, and binary points outside the word.
BRANCH_TYPES = [
    FixedType(7, 3, rounding=q, overflow="SAT") for q in ("RND", "RND_ZERO", "RND_MIN_INF", "RND_INF", "RND_CONV",
                                                          "TRN", "TRN_ZERO")
] + [
    FixedType(5, 1, rounding="RND", overflow="SAT_ZERO"),
    FixedType(5, 2, rounding="TRN", overflow="SAT_SYM"),
    FixedType(1, 1, rounding="TRN", overflow="SAT_SYM"),
    FixedType(5, 2, signed=False, rounding="RND", overflow="SAT_SYM"),
    FixedType(5, 1, rounding="RND_CONV", overflow="WRAP"),
    FixedType(6, 1, rounding="TRN", overflow="WRAP", sat_bits=2),
    FixedType(5, 1, signed=False, rounding="RND", overflow="WRAP", sat_bits=2),
    FixedType(5, 1, rounding="TRN", overflow="WRAP_SM"),
    FixedType(5, 1, rounding="RND", overflow="WRAP_SM", sat_bits=1),
    FixedType(6, 1, rounding="TRN_ZERO", overflow="WRAP_SM", sat_bits=3),
    FixedType(4, 6, rounding="RND_INF", overflow="SAT"),  # binary point right of the word
    FixedType(4, -1, rounding="RND_MIN_INF", overflow="WRAP"),  # binary point left of the word
    FixedType(5, 3, signed=False, rounding="RND_ZERO", overflow="SAT"),
]


def every_mode_graph(channels: int = 4) -> Graph:
    """``x -> scale_shift`` once per format of :data:`BRANCH_TYPES`, the branches summed by exact adds.

    Each branch multiplies by per-channel constants (some negative) and
    adds a shift, so its cast drops bits and overflows on part of the
    inputs; the adds are wide enough to be exact, so any wrong bit in a
    branch changes the output.
    """
    x = Value("x", (channels,), FixedType(7, 3))
    rng = np.random.default_rng(7)
    scale_type, shift_type = FixedType(4, 1), FixedType(6, 2)
    nodes, branches = [], []
    for k, t in enumerate(BRANCH_TYPES):
        scale = rng.integers(scale_type.code_min, scale_type.code_max, channels, endpoint=True)
        shift = rng.integers(shift_type.code_min, shift_type.code_max, channels, endpoint=True)
        node = Node(f"branch {k}", "scale_shift", ("x",), Value(f"branch {k}", (channels,), t),
                    constants={"scale": Constant(scale, (scale_type,)), "shift": Constant(shift, (shift_type,))})
        nodes.append(node)
        branches.append(node.output)
    total = branches[0]
    for k, branch in enumerate(branches[1:]):
        t = total.type.add_type(branch.type)
        node = Node(f"sum.{k}", "add", (total.name, branch.name), Value(f"sum.{k}", (channels,), t))
        nodes.append(node)
        total = node.output
    return Graph("every mode", [x], nodes, [total.name]).check()
