"""Elementwise layers: the activations ``QReLU``, ``QReLU6``, ``QLeakyReLU`` and the residual ``QAdd``.

Each is one exact operation on fixed-point inputs followed by one cast to
the output format; eval and training modes compute the same formula (eval
in a dtype that makes it exact, training in the input's dtype).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .config import LayerQConfig, constant_type, make_quantizer
from .exact import as_float, cast, cast_output, exact_add, exact_dtype
from .layer import FixedConstant, QuantizedLayer, fixed_constant

__all__ = ["QReLU", "QReLU6", "QLeakyReLU", "QAdd"]


class _QActivation(QuantizedLayer):
    """An exact elementwise function of one input, then ``Qout``."""

    _float_type: type = nn.Module

    def __init__(self, cfg: Optional[LayerQConfig] = None) -> None:
        super().__init__()
        cfg = cfg or LayerQConfig()
        self.output_quantizer = make_quantizer(cfg.output, cfg.learn_int_bits)

    def _function(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = as_float(x)
        return cast_output(self.output_quantizer, self._function(x), x.dtype, exact=not self.training)

    @classmethod
    def _check_float(cls, module: nn.Module) -> None:
        if not isinstance(module, cls._float_type):
            raise TypeError(f"{cls.__name__}.from_float expects an nn.{cls._float_type.__name__}, "
                            f"got {type(module).__name__}")

    @classmethod
    def from_float(cls, module: nn.Module, cfg: Optional[LayerQConfig] = None) -> "_QActivation":
        """The quantized counterpart of ``module``, casting to ``cfg.output``."""
        cls._check_float(module)
        return cls(cfg=cfg)


class QReLU(_QActivation):
    """``y = Qout(max(x, 0))``.

    Numerics: the maximum of a fixed-point value and 0 is exact in any dtype;
    ``Qout`` (``cfg.output``) is the only rounding.  Eval mode returns the
    input's dtype when it holds ``cfg.output``, else float64.  Training mode
    computes the same, with a straight-through gradient (zero for ``x < 0``)
    and, when ``cfg.learn_int_bits``, a gradient to the output's binary point.
    """

    _float_type = nn.ReLU

    def _function(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:  # computed already, with x, by the layer paired with this one (pair_with_relu)?
            handed = getattr(x, "_qfx_relu_output", None)
            if handed is not None and handed[0] == id(self) and handed[1] == x._version:
                return handed[2]
        x = as_float(x)  # the quantizer applies the ReLU: training fuses it into the cast
        return cast_output(self.output_quantizer, x, x.dtype, exact=not self.training, relu=True)


class QReLU6(_QActivation):
    """``y = Qout(min(max(x, 0), 6))``.

    Numerics: the clamp is exact in any dtype (6 compared in the input's
    format: an input format whose maximum lies below 6 never reaches it);
    ``Qout`` (``cfg.output``) is the only rounding.  Eval mode returns the
    input's dtype when it holds ``cfg.output``, else float64.  Training mode
    computes the same, with a straight-through gradient (zero outside
    ``[0, 6]``) and, when ``cfg.learn_int_bits``, a gradient to the output's
    binary point.
    """

    _float_type = nn.ReLU6

    def _function(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x, 0.0, 6.0)


class QLeakyReLU(_QActivation):
    """``y = Qout(x >= 0 ? x : x * Qslope(negative_slope))``.

    Numerics: the slope is a fixed-point constant, ``cfg.slope`` or, when
    that is ``None``, the 16-bit format fitted to it (:func:`constant_type`);
    its binary point is not learned.  Eval mode (bit-exact): the product
    runs in float32 when ``input_width + slope width <= 24``, else in float64
    (an error beyond 53 bits); ``Qout`` (``cfg.output``) is the only rounding;
    the output is returned in the input's dtype when it holds ``cfg.output``,
    else in float64.  Training mode computes the same formula in the input's
    dtype (fake quantization), with gradients to ``x`` and, when
    ``cfg.learn_int_bits``, to the output's binary point.

    Args:
        negative_slope: as :class:`torch.nn.LeakyReLU`.
        cfg: the formats; default ``LayerQConfig()``.
        input_width: word length of the input's format; default ``cfg.output.width``.
    """

    _float_type = nn.LeakyReLU

    def __init__(self, negative_slope: float = 0.01, *, cfg: Optional[LayerQConfig] = None,
                 input_width: Optional[int] = None) -> None:
        cfg = cfg or LayerQConfig()
        super().__init__(cfg)
        self.negative_slope = float(negative_slope)
        self.input_width = int(cfg.output.width if input_width is None else input_width)
        slope_type = cfg.slope if cfg.slope is not None else constant_type(self.negative_slope)
        self.slope_quantizer = make_quantizer(slope_type, learn_int_bits=False)

    def _shape_repr(self) -> str:
        return f"negative_slope={self.negative_slope}, input_width={self.input_width}"

    def _slope(self) -> torch.Tensor:
        """The quantized slope, exact, as a 0-d float64 tensor."""
        slope = torch.tensor(self.negative_slope, dtype=torch.float64,
                             device=self.slope_quantizer.int_bits.device)
        return cast(self.slope_quantizer, slope)

    def compute_dtype(self) -> torch.dtype:
        """The dtype eval mode multiplies in (float32 or float64); ``ValueError`` beyond 53 bits."""
        terms = [("input_width", self.input_width), ("slope width", self.slope_quantizer.base_type.width)]
        return exact_dtype(terms, self.describe(), "narrow the input format (input_width) or cfg.slope")

    def _function(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(x.dtype if self.training else self.compute_dtype())
        return torch.where(x >= 0, x, x * self._slope().to(x.dtype))

    def constants(self) -> dict[str, FixedConstant]:
        """The quantized slope as value, integer code and format."""
        return {"slope": fixed_constant(self.slope_quantizer, self._slope())}

    @classmethod
    def from_float(cls, module: nn.LeakyReLU, cfg: Optional[LayerQConfig] = None,
                   input_width: Optional[int] = None) -> "QLeakyReLU":
        """A ``QLeakyReLU`` with ``module``'s negative slope."""
        cls._check_float(module)
        return cls(module.negative_slope, cfg=cfg, input_width=input_width)


class QAdd(QuantizedLayer):
    """Residual addition of two fixed-point tensors: ``y = Qout(a + b)``.

    Numerics: the sum is exact, as ``ap_fixed``'s ``+`` is (its result type
    has room for both operands' bits and a carry), and ``Qout``
    (``cfg.output``) is the only rounding.  The operands' formats may differ
    and need not be known: eval mode adds in their common dtype and checks
    the sum with TwoSum, moving to float64 if it rounded (an error if even
    float64 rounds, i.e. the binary points lie over 53 bits apart); the
    output is returned in the common dtype when it holds ``cfg.output``, else
    in float64.  Training mode adds in the common dtype (fake quantization),
    with gradients to both inputs and, when ``cfg.learn_int_bits``, to the
    output's binary point.
    """

    def __init__(self, cfg: Optional[LayerQConfig] = None) -> None:
        super().__init__()
        cfg = cfg or LayerQConfig()
        self.output_quantizer = make_quantizer(cfg.output, cfg.learn_int_bits)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = as_float(a), as_float(b)
        dtype = torch.promote_types(a.dtype, b.dtype)
        if self.training:
            total = a + b
            paired = self._cast_output_then_relu(total)
            if paired is not None:
                return paired
        else:
            total = exact_add(a, b, self.describe(), "narrow the inputs' formats or bring their binary points "
                                                     "nearer each other")
        return cast_output(self.output_quantizer, total, dtype, exact=not self.training)
