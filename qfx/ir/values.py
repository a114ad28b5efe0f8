"""The export IR's elements: :class:`Value`, :class:`Constant`, :class:`Node`, and :class:`IRError`.

A node computes one tensor (a :class:`Value`: name, shape per sample,
:class:`~qfx.format.FixedType`) from the tensors it names, with integer
:class:`Constant` codes by role.  The op table (:mod:`qfx.ir.ops`) checks
nodes and :mod:`qfx.ir.graph` orders them; both build on this module.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import numpy as np

from ..format import FixedType

__all__ = ["IRError", "Value", "Constant", "Node"]


class IRError(ValueError):
    """A graph (built, loaded or exported) that breaks the IR's rules; the message names the node."""


@dataclasses.dataclass(frozen=True)
class Value:
    """A tensor flowing between nodes: its name, shape per sample and fixed-point format."""

    name: str
    shape: tuple[int, ...]
    type: FixedType

    @property
    def size(self) -> int:
        """Elements per sample."""
        return math.prod(self.shape)


@dataclasses.dataclass(frozen=True, eq=False)
class Constant:
    """Integer codes of a constant (weights, bias, BatchNorm scale...) and their format(s).

    ``types`` holds one :class:`~qfx.format.FixedType` for the whole tensor,
    or one per index of dimension 0 (per output channel).  The value of
    ``codes[c, ...]`` is ``codes[c, ...] * 2**-types[c].frac_bits``.
    """

    codes: np.ndarray  #: int64
    types: tuple[FixedType, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "codes", np.asarray(self.codes, dtype=np.int64))
        object.__setattr__(self, "types", tuple(self.types))

    @property
    def per_channel(self) -> bool:
        """Whether each index of dimension 0 has its own format."""
        return len(self.types) > 1

    def type_of(self, channel: int) -> FixedType:
        """The format of channel ``channel`` (the one format when per tensor)."""
        return self.types[channel if self.per_channel else 0]

    def frac_bits(self) -> np.ndarray:
        """Fractional bits per channel (length ``codes.shape[0]``, or 1 when per tensor), as int64."""
        return np.array([t.frac_bits for t in self.types], dtype=np.int64)

    def frac_bits_along(self, ndim: int, axis: int = 0) -> np.ndarray:
        """:meth:`frac_bits` shaped to broadcast against an ``ndim``-d array whose ``axis`` is the channel."""
        shape = [1] * ndim
        if self.per_channel:
            shape[axis] = len(self.types)
        return self.frac_bits().reshape(shape)

    def __repr__(self) -> str:
        types = str(self.types[0]) if not self.per_channel else f"{len(self.types)} per-channel formats"
        return f"Constant(shape={tuple(self.codes.shape)}, {types})"


@dataclasses.dataclass(eq=False)
class Node:
    """One operation: ``op`` applied to the tensors named in ``inputs`` gives ``output``.

    ``attrs`` holds shape parameters (JSON values), ``constants`` the integer
    constants by role (``weight``, ``bias``, ``scale``...), ``formats`` the
    intermediate formats by role (``accum``).  ``label`` is the name the
    user's model gave the layer (a module path such as ``layer1.0.conv1``),
    kept for display.
    """

    name: str
    op: str
    inputs: tuple[str, ...]
    output: Value
    attrs: dict[str, Any] = dataclasses.field(default_factory=dict)
    constants: dict[str, Constant] = dataclasses.field(default_factory=dict)
    formats: dict[str, FixedType] = dataclasses.field(default_factory=dict)
    label: Optional[str] = None

    def describe(self) -> str:
        """``node 'conv1' (conv2d, layer 'features.0')`` for messages."""
        label = f", layer '{self.label}'" if self.label and self.label != self.name else ""
        return f"node '{self.name}' ({self.op}{label})"
