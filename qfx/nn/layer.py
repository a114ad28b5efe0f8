"""What every quantized layer shares: its quantizers found by name, ``formats()``, ``constants()``.

A layer holds one quantizer child per tensor it casts, under a fixed name
(``weight_quantizer``, ``bias_quantizer``, ``accum_quantizer``,
``scale_quantizer``, ``shift_quantizer``, ``slope_quantizer``,
``divisor_quantizer``, ``output_quantizer``) so that summaries, calibration
and export find them without knowing the layer.  A quantizer a layer does not
use is absent or ``None``.
"""

from __future__ import annotations

import re
from typing import NamedTuple, Optional, Union

import torch
from torch import nn

from ..autograd import fused_cast_moments, fused_pair_cast
from ..format import FixedType
from .exact import Quantizer, cast

__all__ = ["QuantizedLayer", "FixedConstant", "Format", "QUANTIZER_NAMES"]

#: The tensors a layer may cast, in the order they are computed; ``<name>_quantizer`` casts each.
QUANTIZER_NAMES = ("weight", "bias", "scale", "shift", "slope", "divisor", "table", "accum", "output")

#: A format: one for the tensor, or a list with one per channel.
Format = Union[FixedType, list[FixedType]]


class FixedConstant(NamedTuple):
    """A quantized constant ready for export: exact values, their integer codes and their format(s).

    ``values == codes * 2**-F`` exactly, with ``F`` the format's (or, for a
    per-channel format, channel ``c``'s) fractional bits along dimension 0.
    """

    values: torch.Tensor  #: float64
    codes: torch.Tensor  #: int64
    format: Format


def describe_format(f: Format) -> str:
    """C++ spelling of a format; a per-channel list as one spelling with the range of its integer bits."""
    if isinstance(f, FixedType):
        return str(f)
    bits = sorted({t.int_bits for t in f})
    spans = str(bits[0]) if len(bits) == 1 else f"{bits[0]}..{bits[-1]}"
    return re.sub(r"^(ap_u?fixed<\d+,)-?\d+", lambda m: m.group(1) + spans, str(f[0])) + f" x{len(f)} channels"


class QuantizedLayer(nn.Module):
    """Base of the layers of :mod:`qfx.nn`: quantizers by name, their formats and constants."""

    def quantizers(self) -> dict[str, Quantizer]:
        """The quantizers this layer uses, by tensor name (``"weight"``, ``"output"``, ...)."""
        found = {}
        for name in QUANTIZER_NAMES:
            q = getattr(self, f"{name}_quantizer", None)
            if q is not None:
                found[name] = q
        return found

    def formats(self) -> dict[str, Format]:
        """The current format of every tensor this layer casts: one ``FixedType``, or a list per channel."""
        return {name: q.fixed_type for name, q in self.quantizers().items()}

    def constants(self) -> dict[str, FixedConstant]:
        """The quantized constants (weights, biases, BN scale and shift, ...) as values, codes and formats."""
        return {}

    #: The ReLU layer that alone reads this layer's output, where :meth:`pair_with_relu` named one.
    then_relu: Optional["QuantizedLayer"] = None

    def pair_with_relu(self, relu: Optional["QuantizedLayer"]) -> None:
        """Let training cast this layer's output and ``relu``'s in one fused pass each way: ``relu``
        (a :class:`~qfx.nn.QReLU`) is the only reader of this layer's output (``qfx.quantize_model`` checks).
        Not a submodule: held outside ``_modules``, so ``state_dict`` and ``named_modules`` are unchanged;
        ``None`` undoes the pairing."""
        object.__setattr__(self, "then_relu", relu)

    def _cast_output_then_relu(self, x: torch.Tensor, scale: Optional[torch.Tensor] = None,
                               shift: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
        """Training: this layer's output ``Q(x * scale + shift)`` (or ``Q(x)``) with the paired ReLU's output
        computed in the same pass and handed to it (:func:`qfx.autograd.fused_pair_cast`); ``None`` where the
        two casts must run one after the other."""
        relu = self.then_relu
        if relu is None or not relu.training:
            return None
        first = self.output_quantizer.training_operand(x)
        second = None if first is None else relu.output_quantizer.training_operand(x)
        pair = None if second is None else fused_pair_cast(x, first, second, scale, shift)
        if pair is None:
            return None
        q1, q2 = pair
        q1._qfx_relu_output = (id(relu), q1._version, q2)  # taken by relu.forward; dies with q1
        return q1

    #: The BatchNorm layer that alone reads this layer's output, where :meth:`pair_with_batchnorm` named one.
    then_batchnorm: Optional["QuantizedLayer"] = None

    def pair_with_batchnorm(self, batchnorm: Optional["QuantizedLayer"]) -> None:
        """Let training cast this layer's output and take the batch statistics of ``batchnorm`` (a
        :class:`~qfx.nn.QBatchNorm2d` or ``QBatchNorm1d``, the only reader of the output) in the same pass each
        way; held as :meth:`pair_with_relu` holds its layer."""
        object.__setattr__(self, "then_batchnorm", batchnorm)

    def _cast_output_with_statistics(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        """Training: this layer's output ``Q(x)`` with the batch statistics of the paired BatchNorm computed in
        the same pass and handed to it (:func:`qfx.autograd.fused_cast_moments`); ``None`` where the cast and
        the statistics must run one after the other."""
        batchnorm = self.then_batchnorm
        if (batchnorm is None or not batchnorm.training or x.dim() < 2
                or x.shape[1] != batchnorm.num_features or x.numel() // x.shape[1] < 2):
            return None
        cast = self.output_quantizer.training_operand(x)
        computed = None if cast is None else fused_cast_moments(x, cast)
        if computed is None:
            return None
        q, mean, var = computed
        q._qfx_batch_statistics = (id(batchnorm), q._version, mean, var)  # taken by batchnorm; dies with q
        return q

    def describe(self) -> str:
        """The layer's class and shape, e.g. ``QLinear(64 -> 10)``, for error messages."""
        return f"{type(self).__name__}({self._shape_repr()})"

    def _shape_repr(self) -> str:
        return ""

    def extra_repr(self) -> str:
        parts = [self._shape_repr()] if self._shape_repr() else []
        try:
            parts += [f"{name}={describe_format(f)}" for name, f in self.formats().items()]
        except RuntimeError:  # a per-channel quantizer not yet sized by a first input
            pass
        return ", ".join(parts)


def fixed_constant(quantizer: Quantizer, value: torch.Tensor) -> FixedConstant:
    """Quantize a constant with ``quantizer`` (per channel along dimension 0) and read back its codes."""
    with torch.no_grad():
        values = cast(quantizer, value.detach()).double()
    frac = quantizer.frac_bits().double().to(values.device)
    scale = torch.exp2(frac).reshape(frac.shape + (1,) * (values.dim() - frac.dim()))
    return FixedConstant(values, (values * scale).to(torch.int64), quantizer.fixed_type)
