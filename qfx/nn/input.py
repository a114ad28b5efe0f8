"""``QInput``: where float data enters the fixed-point model."""

from __future__ import annotations

import math
from typing import Optional

import torch

from .config import LayerQConfig, make_quantizer
from .exact import as_float, cast_output
from .layer import QuantizedLayer
from .quantizers import NonFiniteError

__all__ = ["QInput"]


class QInput(QuantizedLayer):
    """Cast the model's input to its fixed-point format: ``y = Qout(x)``.

    This is the conversion the host (or the FPGA's input interface) does
    before the first layer; every other layer assumes its inputs are already
    fixed-point values and never casts them again.

    Numerics: ``Qout`` is ``cfg.output`` (binary point learned when
    ``cfg.learn_int_bits``), applied to the exact input value: float32 and
    float64 inputs are cast as they are, narrower floats go through float32
    and integers through float64 (both exact).  The output keeps that dtype
    when it holds the format (float32: up to 24 bits), else it is float64.
    Training mode computes the same cast, with a straight-through gradient
    to ``x`` and, when learned, a gradient to the binary point; a NaN or
    infinity in ``x`` raises :class:`~qfx.nn.quantizers.NonFiniteError`
    naming the layer (one reduction over the input: inside the network
    every value is a saturated cast, so non-finite values can only enter
    here or from the loss's gradient, which learned binary points check).
    """

    def __init__(self, cfg: Optional[LayerQConfig] = None) -> None:
        super().__init__()
        cfg = cfg or LayerQConfig()
        self.output_quantizer = make_quantizer(cfg.output, cfg.learn_int_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = as_float(x)
        if self.training and x.numel() and not math.isfinite(float(x.detach().sum())) \
                and not bool(torch.isfinite(x).all()):  # a huge finite sum is checked value by value
            where = self.output_quantizer.path.rpartition(".")[0] or type(self).__name__
            raise NonFiniteError(f"QInput '{where}': the input holds NaN or Inf; catch qfx.NonFiniteError "
                                 "to skip the batch")
        return cast_output(self.output_quantizer, x, x.dtype, exact=not self.training)
