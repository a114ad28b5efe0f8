"""Binarized layers: ``QSign``, ``QThermometer``, ``QBinaryLinear``, ``QBinaryConv1d``, ``QBinaryConv2d``.

A binary (bipolar) tensor holds only ``-1`` and ``+1``.  Its format is
:data:`BIPOLAR`, ``ap_fixed<2,2>`` (codes ``-1`` and ``+1``): it flows
through the IR like any fixed-point tensor, and a back end may store it as
one bit (``1`` for ``+1``, ``0`` for ``-1``).  A binary dot product of ``N``
terms is then ``sum_i x[i] * w[i] = 2 * popcount(xnor(x, w)) - N``: an
integer in ``[-N, N]``, held exactly by the output format
``ap_fixed<B, B>`` with ``B = bit_length(N) + 1``.  No rounding anywhere.

Training: ``sign`` has no useful gradient, so both the weights and the
activations use the clipped straight-through estimator of BinaryNet
(Courbariaux et al., 2016): ``d sign(x) / dx = 1`` where ``|x| <= 1``, else
``0``.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..format import BIPOLAR, FixedType
from ..autograd import quantize
from .config import LayerQConfig, constant_type, make_quantizer
from .exact import as_float, cast
from .layer import FixedConstant, Format, QuantizedLayer, fixed_constant
from .linear import _tuple

__all__ = ["BIPOLAR", "binarize", "QSign", "QThermometer", "QBinaryLinear", "QBinaryConv1d", "QBinaryConv2d",
           "sum_type"]



def sum_type(terms: int) -> FixedType:
    """The integer format holding every sum of ``terms`` products of ``±1``: ``ap_fixed<B, B>``."""
    bits = max(terms, 1).bit_length() + 1
    return FixedType(bits, bits, rounding="TRN", overflow="WRAP")


class _Binarize(torch.autograd.Function):
    """Forward ``x >= 0 ? +1 : -1``; backward the clipped straight-through gradient ``grad * (|x| <= 1)``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


def binarize(x: torch.Tensor) -> torch.Tensor:
    """``sign(x)`` to ``±1`` (``sign(0) = +1``) with the clipped straight-through gradient."""
    return _Binarize.apply(x)


class QSign(QuantizedLayer):
    """The sign activation: ``y = x >= 0 ? +1 : -1``, format :data:`BIPOLAR`.

    Numerics: a comparison with 0, exact in any dtype; eval and training
    compute the same values.  Backward: the clipped straight-through
    gradient (``|x| <= 1``).  It has no quantizer to calibrate or learn.
    """

    def formats(self) -> dict[str, Format]:
        return {"output": BIPOLAR}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return binarize(as_float(x))


class QThermometer(QuantizedLayer):
    """Thermometer encoding: ``T`` thresholds per input channel become ``T`` binary channels.

    ``y[:, c * T + t] = x[:, c] >= Qthr(thresholds[t]) ? +1 : -1`` (format
    :data:`BIPOLAR`), so a value is told by how many of its channels are
    ``+1``.  The thresholds are constants in ``threshold_type`` (default
    ``ap_ufixed<16, I>`` fitted to the largest); the comparison is exact.
    Placed right after :class:`~qfx.nn.QInput`; it passes no gradient (an
    input encoding).

    Args:
        thresholds: the ``T`` increasing thresholds; default ``T = levels``
            thresholds ``(t + 1) / (levels + 1)`` spread over ``(0, 1)``.
        levels: ``T`` when ``thresholds`` is not given.
    """

    def __init__(self, levels: int = 8, thresholds: Optional[Sequence[float]] = None,
                 threshold_type: Optional[FixedType] = None) -> None:
        super().__init__()
        if thresholds is None:
            if levels < 1:
                raise ValueError(f"QThermometer: levels must be >= 1, got {levels}")
            thresholds = [(t + 1) / (levels + 1) for t in range(levels)]
        values = [float(v) for v in thresholds]
        if not values or any(b <= a for a, b in zip(values, values[1:])):
            raise ValueError(f"QThermometer: thresholds must be a non-empty increasing list, got {values}")
        if threshold_type is None:
            threshold_type = constant_type(max(abs(v) for v in values) or 1.0)
            if min(values) < 0:
                threshold_type = FixedType(16, threshold_type.int_bits + 1, rounding="RND_CONV", overflow="SAT")
        self.threshold_type = FixedType.coerce(threshold_type)
        self.register_buffer("thresholds", quantize(torch.tensor(values, dtype=torch.float64), self.threshold_type))
        self.levels = len(values)

    def _shape_repr(self) -> str:
        return f"levels={self.levels}"

    def formats(self) -> dict[str, Format]:
        return {"output": BIPOLAR}

    def constants(self) -> dict[str, FixedConstant]:
        codes = torch.round(self.thresholds * 2.0 ** self.threshold_type.frac_bits).to(torch.int64)
        return {"thresholds": FixedConstant(self.thresholds.double(), codes, self.threshold_type)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = as_float(x).detach()
        thr = self.thresholds.to(torch.float64).view((1, 1, -1) + (1,) * (x.dim() - 2))
        above = x.double().unsqueeze(2) >= thr  # (N, C, T, ...): exact, float64 holds both formats
        y = torch.where(above, 1.0, -1.0).to(x.dtype)
        return y.flatten(1, 2)


class _QBinaryDot(QuantizedLayer):
    """Binary weights ``sign(w)`` on a binary input: the integer sum ``2 * popcount(xnor) - N``, exactly."""

    _float_type: type = nn.Module

    def __init__(self, weight_shape: tuple[int, ...], cfg: Optional[LayerQConfig] = None,
                 scale: bool = False) -> None:
        super().__init__()
        cfg = cfg or LayerQConfig()
        self.weight = nn.Parameter(torch.empty(weight_shape))
        nn.init.uniform_(self.weight, -1.0, 1.0)
        if scale:  # XNOR-Net's start: the mean |w| of each output's weights
            self.scale = nn.Parameter(self.weight.detach().abs().flatten(1).mean(1))
            self.scale_quantizer = make_quantizer(cfg.scale, cfg.learn_int_bits)
        else:
            self.scale = None

    @property
    def fan_in(self) -> int:
        """Products summed per output."""
        return self.weight[0].numel()

    @property
    def input_width(self) -> int:
        """A binary input takes one bit per value in hardware (its IR format is :data:`BIPOLAR`)."""
        return 1

    def formats(self) -> dict[str, Format]:
        """The sum's integer format, or with a scale the exact product of that and the scale's format."""
        found: dict[str, Format] = {"weight": BIPOLAR, "output": sum_type(self.fan_in)}
        if self.scale is not None:
            t, s = found["output"], self.scale_quantizer.fixed_type
            found["scale"] = s
            found["output"] = FixedType(t.width + s.width, t.int_bits + s.int_bits, rounding="TRN", overflow="WRAP")
        return found

    def scale_constant(self) -> Optional[FixedConstant]:
        """The quantized per-channel scale (one format for all channels), or ``None`` without one.

        Export folds it into the BatchNorm that must follow the layer (see
        :func:`qfx.ir.export`); the IR node itself holds only the signs.
        """
        return None if self.scale is None else fixed_constant(self.scale_quantizer, self.scale)

    def binary_weight(self) -> torch.Tensor:
        """``sign(w)`` as ``±1`` (``sign(0) = +1``), with the clipped straight-through gradient."""
        return binarize(self.weight)

    def constants(self) -> dict[str, FixedConstant]:
        with torch.no_grad():
            values = torch.where(self.weight >= 0, 1.0, -1.0).double()
        return {"weight": FixedConstant(values, values.to(torch.int64), BIPOLAR)}

    def _product(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = as_float(x)
        view = (1, -1) + (1,) * (x.dim() - 2)
        if self.training:
            y = self._product(x, self.binary_weight().to(x.dtype))
            return y if self.scale is None else y * cast(self.scale_quantizer, self.scale).to(x.dtype).view(view)
        # Integers of at most bit_length(N) + 1 bits: exact in float32 up to N < 2**23, else float64.
        dtype = torch.float32 if self.fan_in < 2 ** 23 and x.device.type == "cpu" else torch.float64
        with torch.no_grad():
            y = self._product(x.to(dtype), self.binary_weight().to(dtype))
            if self.scale is None:
                return y.to(x.dtype)
            # The exact product: its format's width of significant bits, float32 up to 24, else float64.
            y = y.double() * cast(self.scale_quantizer, self.scale).double().view(view)
            return y.to(x.dtype) if self.formats()["output"].width <= 24 else y

    @classmethod
    def _check_float(cls, module: nn.Module) -> None:
        if not isinstance(module, cls._float_type):
            raise TypeError(f"{cls.__name__}.from_float expects an nn.{cls._float_type.__name__}, "
                            f"got {type(module).__name__}")
        if getattr(module, "bias", None) is not None:
            raise ValueError(f"{cls.__name__}.from_float: the binary layer has no bias (a BatchNorm after it "
                             "takes that role); build the float layer with bias=False")


_NUMERICS = """
    Numerics (eval mode, exact)::

        y[o] = sum_i x[i] * sign(w[o, i]) = 2 * popcount(xnor(x, sign(w[o]))) - N

    ``x`` must be binary (``±1``: the output of :class:`QSign` or
    :class:`QThermometer`); ``sign(0) = +1``.  The sum is an integer in
    ``[-N, N]``, returned as is (its format ``ap_fixed<B, B>``,
    ``B = bit_length(N) + 1``, holds it: no cast, no rounding).  Eval mode
    computes it in float32 (exact for ``N < 2**23``).  There is no bias: a
    BatchNorm after the layer takes that role.  Training mode computes the
    same with the clipped straight-through gradient to the float weights
    (``|w| <= 1``), which the optimizer keeps as latent weights.

    With ``scale=True`` the sum is multiplied by a learned per-output-channel
    ``Qs(alpha[o])`` (XNOR-Net; ``alpha`` starts at the mean ``|w|`` of the
    output's weights, ``Qs`` is ``cfg.scale`` with one binary point for all
    channels): ``y[o] = Qs(alpha[o]) * sum``, exact in the product format
    ``ap_fixed<B + Ws, B + Is>``.  Export folds it into the BatchNorm that
    must follow, whose scale becomes ``Qs(alpha[o]) * Qbn(scale[o])``: the
    product of two codes, exact in the sum of their widths, so the graph
    computes the same values while the binary node keeps the integer sum.
"""


class QBinaryLinear(_QBinaryDot):
    __doc__ = """Binary fully connected layer ``y = x @ sign(W).T`` on a binary input.

    Args:
        in_features, out_features: as :class:`torch.nn.Linear` (no bias).
        cfg: ``cfg.scale`` (and ``cfg.learn_int_bits``) format the optional scale; nothing else applies.
        scale: learn a per-output scale (folded into the next BatchNorm at export).
    """ + _NUMERICS

    _float_type = nn.Linear

    def __init__(self, in_features: int, out_features: int, *, cfg: Optional[LayerQConfig] = None,
                 scale: bool = False) -> None:
        self.in_features, self.out_features = in_features, out_features
        super().__init__((out_features, in_features), cfg, scale)

    def _shape_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"

    def _product(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.linear(x, w)

    @classmethod
    def from_float(cls, module: nn.Linear, cfg: Optional[LayerQConfig] = None) -> "QBinaryLinear":
        """A ``QBinaryLinear`` with ``module``'s shape; its weights become the latent weights."""
        cls._check_float(module)
        layer = cls(module.in_features, module.out_features, cfg=cfg)
        layer.weight = nn.Parameter(module.weight.detach().clone())
        return layer


class _QBinaryConvNd(_QBinaryDot):
    """Binary convolution; padding uses ``pad_value`` (``-1`` or ``+1``), so every term stays binary."""

    _dims = 0
    _conv = staticmethod(F.conv2d)

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Union[int, tuple[int, ...]],
                 stride: Union[int, tuple[int, ...]] = 1, padding: Union[int, tuple[int, ...]] = 0,
                 dilation: Union[int, tuple[int, ...]] = 1, groups: int = 1, *, pad_value: int = -1,
                 cfg: Optional[LayerQConfig] = None, scale: bool = False) -> None:
        n = self._dims
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{type(self).__name__}: in_channels={in_channels} and out_channels={out_channels} "
                             f"must both be divisible by groups={groups}")
        if pad_value not in (-1, 1):
            raise ValueError(f"{type(self).__name__}: pad_value must be -1 or +1 (a binary value), got {pad_value!r}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = _tuple(kernel_size, n, "kernel_size")
        self.stride = _tuple(stride, n, "stride")
        self.dilation = _tuple(dilation, n, "dilation")
        if isinstance(padding, str):
            raise ValueError(f"{type(self).__name__}: padding must be ints, got {padding!r}")
        self.padding = _tuple(padding, n, "padding")
        self.pad_value = int(pad_value)
        super().__init__((out_channels, in_channels // groups) + self.kernel_size, cfg, scale)

    def _product(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if any(self.padding):
            pads = [p for p in reversed(self.padding) for _ in range(2)]
            x = F.pad(x, pads, value=float(self.pad_value))
        return self._conv(x, w, None, self.stride, 0, self.dilation, self.groups)

    def _shape_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if any(self.padding):
            s += f", padding={self.padding}, pad_value={self.pad_value}"
        if self.dilation != (1,) * self._dims:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        return s

    @classmethod
    def from_float(cls, module: nn.Module, cfg: Optional[LayerQConfig] = None,
                   pad_value: int = -1) -> "_QBinaryConvNd":
        """A binary convolution with ``module``'s shape; its weights become the latent weights."""
        cls._check_float(module)
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise ValueError(f"{cls.__name__}.from_float: padding must be ints with padding_mode='zeros' "
                             f"(got {module.padding!r}, {module.padding_mode!r}); a binary convolution pads "
                             f"with {pad_value}")
        layer = cls(module.in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
                    module.dilation, module.groups, pad_value=pad_value, cfg=cfg)
        layer.weight = nn.Parameter(module.weight.detach().clone())
        return layer


def _binary_conv_doc(dims: int, shape: str) -> str:
    return f"""Binary {dims}-D convolution on a binary input of shape ``{shape}``.

    Padding adds ``pad_value`` (``-1`` by default, or ``+1``), not zeros, so
    that every term of every window is binary.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation,
        groups: as :class:`torch.nn.Conv{dims}d` (no bias; integer padding).
        pad_value: the binary value padding adds.
        cfg, scale: an optional learned per-output scale in ``cfg.scale`` (folded into the next BatchNorm at
            export).
    """ + _NUMERICS


class QBinaryConv1d(_QBinaryConvNd):
    __doc__ = _binary_conv_doc(1, "(N, C, L)")
    _dims = 1
    _conv = staticmethod(F.conv1d)
    _float_type = nn.Conv1d


class QBinaryConv2d(_QBinaryConvNd):
    __doc__ = _binary_conv_doc(2, "(N, C, H, W)")
    _dims = 2
    _conv = staticmethod(F.conv2d)
    _float_type = nn.Conv2d
