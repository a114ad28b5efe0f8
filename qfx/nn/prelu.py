"""Per-channel parametric ReLU: ``QPReLU`` and ``QRPReLU`` (with the float ``RPReLU`` they convert from).

RPReLU (ReActNet, FracBNN) is a PReLU between two learned per-channel
shifts; ``QPReLU`` is the same layer without them.  Both are one IR op,
``prelu``, computed exactly and cast once.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .config import LayerQConfig, make_quantizer
from .exact import as_float, cast, cast_output, compact, exact_add
from .layer import FixedConstant, QuantizedLayer, fixed_constant

__all__ = ["RPReLU", "QPReLU", "QRPReLU"]


class RPReLU(nn.Module):
    """Float RPReLU: ``y = prelu(x - gamma[c], slope[c]) + zeta[c]`` (ReActNet's shifted PReLU).

    Args:
        num_channels: ``C``; the learned ``gamma`` and ``zeta`` start at 0, ``slope`` at ``init``.
    """

    def __init__(self, num_channels: int, init: float = 0.25) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.gamma = nn.Parameter(torch.zeros(num_channels))
        self.slope = nn.Parameter(torch.full((num_channels,), float(init)))
        self.zeta = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        view = (1, -1) + (1,) * (x.dim() - 2)
        t = x - self.gamma.view(view)
        return torch.where(t >= 0, t, t * self.slope.view(view)) + self.zeta.view(view)


def _two_product_error(a: torch.Tensor, b: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``a * b - p`` exactly (Dekker's TwoProduct in float64): zero where the product ``p`` was exact."""
    def split(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = v * 134217729.0  # 2**27 + 1
        high = c - (c - v)
        return high, v - high
    ah, al = split(a)
    bh, bl = split(b)
    return ((ah * bh - p) + ah * bl + al * bh) + al * bl


class QPReLU(QuantizedLayer):
    """``y = Qout((t >= 0 ? t : t * Qa(slope[c])) + Qs(shift_after[c]))``, ``t = x + Qb(shift_before[c])``.

    ``QPReLU`` has no shifts (``y = Qout(x >= 0 ? x : x * Qa(slope[c]))``);
    :class:`QRPReLU` learns both.  Formats: the slopes take ``cfg.slope``
    when set, else ``cfg.scale`` (an element-wise constant like BatchNorm's
    scale), K-hot when ``cfg.scale_khot``; the shifts take ``cfg.shift``;
    each has one binary point per channel.  A single slope (``nn.PReLU()``)
    is one channel shared by all.

    Numerics (eval mode, bit-exact): the sums and the product are exact
    (float64, each checked: TwoSum for the adds, TwoProduct for the
    product; an error names the layer if float64 cannot hold one), ``Qout``
    (``cfg.output``) the only rounding.  Training mode: the same formula in
    the input's dtype (fake quantization), with gradients to ``x``, the
    slopes, the shifts and, when ``cfg.learn_int_bits``, every binary point.

    Args:
        num_parameters: ``C`` slopes, or 1 shared by all channels.
        init: the slopes' starting value.
        cfg: the formats; default ``LayerQConfig()``.
        input_width: word length of the input's format; default ``cfg.output.width``.
    """

    _shifted = False

    def __init__(self, num_parameters: int = 1, init: float = 0.25, *, cfg: Optional[LayerQConfig] = None,
                 input_width: Optional[int] = None) -> None:
        super().__init__()
        cfg = cfg or LayerQConfig()
        self.num_parameters = int(num_parameters)
        self.input_width = int(cfg.output.width if input_width is None else input_width)
        c = self.num_parameters
        granularity = "channel" if c > 1 else "tensor"
        self.weight = nn.Parameter(torch.full((c,), float(init)))
        self.slope_quantizer = make_quantizer(cfg.slope or cfg.scale, cfg.learn_int_bits, cfg.scale_khot,
                                              granularity, channel_dim=0, num_channels=c)
        if self._shifted:
            self.bias = nn.Parameter(torch.zeros(c))
            self.shift = nn.Parameter(torch.zeros(c))
            self.bias_quantizer = make_quantizer(cfg.shift, cfg.learn_int_bits, None, granularity, channel_dim=0,
                                                 num_channels=c)
            self.shift_quantizer = make_quantizer(cfg.shift, cfg.learn_int_bits, None, granularity, channel_dim=0,
                                                  num_channels=c)
        self.output_quantizer = make_quantizer(cfg.output, cfg.learn_int_bits)

    def _shape_repr(self) -> str:
        return f"num_parameters={self.num_parameters}, input_width={self.input_width}"

    def constants(self) -> dict[str, FixedConstant]:
        """The quantized slopes (and shifts) as values, codes and formats."""
        found = {"slope": fixed_constant(self.slope_quantizer, self.weight)}
        if self._shifted:
            found["bias"] = fixed_constant(self.bias_quantizer, self.bias)
            found["shift"] = fixed_constant(self.shift_quantizer, self.shift)
        return found

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = as_float(x)
        view = (1, -1) + (1,) * (x.dim() - 2)
        if x.dim() < 2 or self.num_parameters not in (1, x.shape[1]):
            raise ValueError(f"{self.describe()} expects an input with {self.num_parameters} channels in "
                             f"dimension 1, got shape {tuple(x.shape)}")
        slope = cast(self.slope_quantizer, self.weight)
        if self.training:
            t = x + cast(self.bias_quantizer, self.bias).to(x.dtype).view(view) if self._shifted else x
            y = torch.where(t >= 0, t, t * slope.to(x.dtype).view(view))
            if self._shifted:
                y = y + cast(self.shift_quantizer, self.shift).to(x.dtype).view(view)
            return cast_output(self.output_quantizer, y, x.dtype, exact=False)
        where = self.describe()
        t = x.double()
        if self._shifted:
            t = exact_add(t, compact(cast(self.bias_quantizer, self.bias)).double().view(view),
                          f"{where} adding the first shift", "narrow cfg.shift")
        a = slope.double().view(view).expand_as(t)
        product = t * a
        if bool((_two_product_error(t, a, product) != 0).any()):
            raise ValueError(f"{where}: the product with the slope does not fit float64's 53 bits; narrow the "
                             "input format or the slope's (cfg.slope / cfg.scale)")
        y = torch.where(t >= 0, t, product)
        if self._shifted:
            y = exact_add(y, compact(cast(self.shift_quantizer, self.shift)).double().view(view),
                          f"{where} adding the second shift", "narrow cfg.shift")
        return cast_output(self.output_quantizer, y, x.dtype, exact=True)

    @classmethod
    def from_float(cls, module: nn.PReLU, cfg: Optional[LayerQConfig] = None,
                   input_width: Optional[int] = None) -> "QPReLU":
        """A ``QPReLU`` with ``module``'s slopes."""
        if not isinstance(module, nn.PReLU):
            raise TypeError(f"QPReLU.from_float expects an nn.PReLU, got {type(module).__name__}")
        layer = cls(module.num_parameters, cfg=cfg, input_width=input_width)
        layer.weight = nn.Parameter(module.weight.detach().clone())
        return layer


class QRPReLU(QPReLU):
    __doc__ = QPReLU.__doc__.replace("``y = Qout((t", "RPReLU: ``y = Qout((t", 1) + """
    ``shift_before`` is the float ``-gamma`` (held in ``bias``), ``shift_after``
    the float ``zeta`` (held in ``shift``).
    """

    _shifted = True

    @classmethod
    def from_float(cls, module: RPReLU, cfg: Optional[LayerQConfig] = None,
                   input_width: Optional[int] = None) -> "QRPReLU":
        """A ``QRPReLU`` with ``module``'s shifts and slopes."""
        if not isinstance(module, RPReLU):
            raise TypeError(f"QRPReLU.from_float expects a qfx.nn.RPReLU, got {type(module).__name__}")
        layer = cls(module.num_channels, cfg=cfg, input_width=input_width)
        with torch.no_grad():
            layer.weight = nn.Parameter(module.slope.detach().clone())
            layer.bias = nn.Parameter(-module.gamma.detach().clone())
            layer.shift = nn.Parameter(module.zeta.detach().clone())
        return layer
