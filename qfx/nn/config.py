"""What one quantized layer needs to know about its formats: :class:`LayerQConfig`.

It is the contract between the model converter (:mod:`qfx.convert`, which
resolves defaults and per-layer overrides into one of these per layer) and
the layers of :mod:`qfx.nn` (each built by ``from_float(module, cfg)`` or its
constructor with ``cfg``).  Formats are :class:`~qfx.format.FixedType`; their
``int_bits`` is the starting binary point, which calibration sets and
training may learn.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Union

from ..format import FixedType
from .quantizers import FixedQuantizer, KHotQuantizer

__all__ = ["LayerQConfig", "make_quantizer", "constant_type"]

FixedLike = Union[FixedType, str]


@dataclasses.dataclass(frozen=True)
class LayerQConfig:
    """Formats of one layer's tensors.

    Attributes:
        weight: weights of Linear/Conv (per output channel when ``weight_granularity="channel"``).
        bias: biases of Linear/Conv.
        accum: the accumulator a dot product is cast to before the output cast;
            ``None`` keeps it exact (the ``ap_fixed`` result type of the sum).
        output: the layer's output (activation) format.
        scale: BatchNorm scale (``gamma / sqrt(var + eps)``) constants.
        shift: BatchNorm shift (``beta - mean * scale``) constants.
        slope: LeakyReLU's negative slope constant; ``None`` fits a 16-bit
            format to the slope (:func:`constant_type`).
        divisor: the constant ``1/N`` of average pooling over ``N`` values;
            ``None`` fits a 16-bit format to ``1/N``.
        table: the input format of a lookup table (:class:`~qfx.nn.QTable`),
            whose ``2**W`` codes address it; ``None``: 10 bits, the output's modes.
        weight_khot: K for K-hot (multiplier-free) weights, or ``None``.
        scale_khot: K for K-hot BatchNorm scales, or ``None``.
        weight_granularity: ``"tensor"`` or ``"channel"`` binary points for weights.
        learn_int_bits: train every binary point of the layer.
        binary: make a Linear/Conv binary (:mod:`qfx.nn.binary`: weights and
            input activations ``sign`` to ``±1``, XNOR and popcount); other
            formats of the layer then do not apply.
    """

    weight: FixedType = FixedType(8, 1, rounding="RND_CONV", overflow="SAT")
    bias: FixedType = FixedType(16, 4, rounding="RND_CONV", overflow="SAT")
    accum: Optional[FixedType] = None
    output: FixedType = FixedType(8, 3, rounding="RND_CONV", overflow="SAT")
    scale: FixedType = FixedType(8, 2, rounding="RND_CONV", overflow="SAT")
    shift: FixedType = FixedType(8, 3, rounding="RND_CONV", overflow="SAT")
    slope: Optional[FixedType] = None
    divisor: Optional[FixedType] = None
    table: Optional[FixedType] = None
    weight_khot: Optional[int] = None
    scale_khot: Optional[int] = None
    weight_granularity: str = "tensor"
    learn_int_bits: bool = False
    binary: bool = False

    def __post_init__(self) -> None:
        for name in ("weight", "bias", "accum", "output", "scale", "shift", "slope", "divisor", "table"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, FixedType.coerce(value))
        if self.weight_granularity not in ("tensor", "channel"):
            raise ValueError(f"weight_granularity must be 'tensor' or 'channel', got {self.weight_granularity!r}")
        for name in ("weight_khot", "scale_khot"):
            k = getattr(self, name)
            if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
                raise ValueError(f"{name} must be None or an integer >= 1, got {k!r}")

    def replace(self, **changes) -> "LayerQConfig":
        """A copy with some fields changed, validated again."""
        return dataclasses.replace(self, **changes)


def make_quantizer(t: FixedType, learn_int_bits: bool, khot: Optional[int] = None,
                   granularity: str = "tensor", channel_dim: int = 0,
                   num_channels: Optional[int] = None) -> Union[FixedQuantizer, KHotQuantizer]:
    """A :class:`FixedQuantizer`, or a :class:`KHotQuantizer` when ``khot`` is set."""
    if khot is None:
        return FixedQuantizer(t, learn_int_bits=learn_int_bits, granularity=granularity,
                              channel_dim=channel_dim, num_channels=num_channels)
    return KHotQuantizer(t, khot, learn_int_bits=learn_int_bits, granularity=granularity,
                         channel_dim=channel_dim, num_channels=num_channels)


def constant_type(value: float, width: int = 16) -> FixedType:
    """The ``width``-bit format that holds the constant ``value`` most precisely.

    Unsigned for ``value >= 0``; the binary point is placed so the leading one
    of ``|value|`` is the word's top bit (``RND_CONV``, ``SAT``): for ``1/9``,
    ``ap_ufixed<16,-3>``.  Used for constants that are not trained, such as
    LeakyReLU's slope and average pooling's ``1/N``.
    """
    if not math.isfinite(value):
        raise ValueError(f"cannot fit a fixed-point format to the constant {value!r}")
    exponent = math.frexp(abs(value))[1] if value else 1  # |value| < 2**exponent
    signed = value < 0
    return FixedType(width, exponent + signed, signed=signed, rounding="RND_CONV", overflow="SAT")
