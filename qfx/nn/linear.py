"""Dot-product layers: ``QLinear``, ``QConv1d``, ``QConv2d``.

They share one computation (:class:`_QDotProduct`); each subclass supplies
the product itself (``F.linear`` or ``F.conv*d``) and its shape parameters.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from .config import LayerQConfig, make_quantizer
from .exact import as_float, cast, cast_output, compact, exact_add, exact_dtype, exact_kernels
from .layer import FixedConstant, QuantizedLayer, fixed_constant

__all__ = ["QLinear", "QConv1d", "QConv2d"]

_NUMERICS = """
    Numerics (eval mode, bit-exact with ``ap_fixed``)::

        acc = sum_i x[i] * Qw(w)[i] + Qb(b)      # exact: the ap_fixed result types of * and +
        acc = Qacc(acc)                          # only when cfg.accum is set
        y   = Qout(acc)

    ``x`` must already be fixed-point (the output of :class:`~qfx.nn.QInput`
    or of the previous layer) with one binary point and at most
    ``input_width`` bits; the layer never casts its input.  ``Qw`` is
    ``cfg.weight`` (K-hot when ``cfg.weight_khot``, one binary point per
    output channel when ``cfg.weight_granularity == "channel"``), ``Qb`` is
    ``cfg.bias``, ``Qacc`` ``cfg.accum``, ``Qout`` ``cfg.output``.  Casting the
    exact sum once equals HLS code that accumulates in the exact result type
    (``accum_type``), or in a plain ``AP_WRAP`` accumulator (no saturation
    bits) whose fractional bits cover the products' and the bias's
    (wrap-around is modular, so the order of additions does not matter); a
    saturating or rounding accumulator cast per addition is a different
    computation.

    Dtype path: the dot product runs in float32 when ``input_width +
    weight width + ceil(log2(fan_in)) <= 24`` and float32 kernels are IEEE on
    the device (CPU without reduced-precision flags), else in float64 (up to
    53 bits; beyond, an error says what to narrow).  On CUDA it is always
    float64, with cuDNN off (its TF32, Winograd and FFT kernels round).  The bias is then added
    in the same dtype if that is exact (checked with TwoSum, since the
    layer does not know the input's binary point), else in float64.  The
    output is returned in the input's dtype when it holds ``cfg.output``
    exactly, else in float64.

    Training mode: fake quantization in the input's dtype (float32
    typically), fast and differentiable but not exact once the sum exceeds
    24 bits.  Gradients reach the input and the float weights and bias
    (straight-through casts) and, when ``cfg.learn_int_bits``, every binary
    point.
"""


class _QDotProduct(QuantizedLayer):
    """Weights, bias, their quantizers and the exact accumulation shared by Linear and Conv."""

    _float_type: type = nn.Module

    def __init__(self, weight_shape: tuple[int, ...], bias: bool, cfg: Optional[LayerQConfig],
                 input_width: Optional[int]) -> None:
        super().__init__()
        cfg = cfg or LayerQConfig()
        out_channels = weight_shape[0]
        self.weight = nn.Parameter(torch.empty(weight_shape))
        self.register_parameter("bias", nn.Parameter(torch.empty(out_channels)) if bias else None)
        #: Word length of the input's format; the converter sets it from the producer's output format.
        self.input_width = int(cfg.output.width if input_width is None else input_width)
        self.weight_quantizer = make_quantizer(cfg.weight, cfg.learn_int_bits, cfg.weight_khot,
                                               cfg.weight_granularity, channel_dim=0, num_channels=out_channels)
        self.bias_quantizer = make_quantizer(cfg.bias, cfg.learn_int_bits) if bias else None
        self.accum_quantizer = make_quantizer(cfg.accum, cfg.learn_int_bits) if cfg.accum is not None else None
        self.output_quantizer = make_quantizer(cfg.output, cfg.learn_int_bits)
        self.reset_parameters()

    # ------------------------------------------------------------ shape
    @property
    def fan_in(self) -> int:
        """Products summed per output: input channels per group times the kernel size."""
        return self.weight[0].numel()

    def reset_parameters(self) -> None:
        """Initialise weight and bias as ``torch.nn`` does for Linear and Conv."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    def _product(self, x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def _bias_view(self, b: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # ----------------------------------------------------------- numerics
    def compute_dtype(self, device: Union[torch.device, str] = "cpu") -> torch.dtype:
        """The dtype eval mode computes the dot product in on ``device`` (float32 or float64).

        Raises ``ValueError`` when no dtype holds the exact sum (over 53 bits).
        """
        terms = [("input_width", self.input_width), ("weight width", self.weight_quantizer.base_type.width),
                 (f"carry bits of a sum of {self.fan_in} products", (self.fan_in - 1).bit_length())]
        fix = ("narrow the input format (input_width, i.e. the producer's output format) or cfg.weight, "
               "or reduce the fan-in")
        return exact_dtype(terms, self.describe(), fix, torch.device(device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = as_float(x)
        if self.training:  # fake quantization in x's dtype
            w = cast(self.weight_quantizer, self.weight).to(x.dtype)
            b = None if self.bias is None else cast(self.bias_quantizer, self.bias).to(x.dtype)
            acc = self._product(x, w, b)
        else:
            acc = self._exact_accumulation(x)
        if self.accum_quantizer is not None:
            acc = cast(self.accum_quantizer, acc)
        if self.training and acc.dtype == x.dtype:
            paired = self._cast_output_with_statistics(acc)
            if paired is not None:
                return paired
        return cast_output(self.output_quantizer, acc, x.dtype, exact=not self.training)

    def _exact_accumulation(self, x: torch.Tensor) -> torch.Tensor:
        """``sum(x * Qw(w)) + Qb(b)`` exactly (see the class docstring for the dtype path)."""
        dtype = self.compute_dtype(x.device)
        w = cast(self.weight_quantizer, self.weight)
        with exact_kernels(x.device):
            acc = self._product(x.to(dtype), w.to(dtype), None)
        if self.bias is None:
            return acc
        b = compact(cast(self.bias_quantizer, self.bias))
        return exact_add(acc, self._bias_view(b), f"{self.describe()} adding the bias",
                         "narrow cfg.bias or bring its binary point nearer the products'")

    def constants(self) -> dict[str, FixedConstant]:
        """The quantized weight (and bias) as values, integer codes and formats."""
        found = {"weight": fixed_constant(self.weight_quantizer, self.weight)}
        if self.bias is not None:
            found["bias"] = fixed_constant(self.bias_quantizer, self.bias)
        return found

    # ------------------------------------------------------- conversion
    @classmethod
    def _check_float(cls, module: nn.Module) -> None:
        if not isinstance(module, cls._float_type):
            raise TypeError(f"{cls.__name__}.from_float expects an nn.{cls._float_type.__name__}, "
                            f"got {type(module).__name__}")

    def _copy_from(self, module: nn.Module) -> None:
        """Take over the float module's weight and bias (values, dtype and device)."""
        self.weight = nn.Parameter(module.weight.detach().clone())
        if module.bias is not None:
            self.bias = nn.Parameter(module.bias.detach().clone())
        self.to(module.weight.device)


class QLinear(_QDotProduct):
    __doc__ = """Fully connected layer ``y = Qout(Qacc(x @ Qw(W).T + Qb(b)))`` on fixed-point inputs.

    Args:
        in_features, out_features, bias: as :class:`torch.nn.Linear`.
        cfg: the formats (:class:`~qfx.nn.LayerQConfig`); default ``LayerQConfig()``.
        input_width: word length of the input's format; default ``cfg.output.width``.
    """ + _NUMERICS

    _float_type = nn.Linear

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 cfg: Optional[LayerQConfig] = None, input_width: Optional[int] = None) -> None:
        self.in_features, self.out_features = in_features, out_features
        super().__init__((out_features, in_features), bias, cfg, input_width)

    def _product(self, x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor]) -> torch.Tensor:
        return F.linear(x, w, b)

    def _bias_view(self, b: torch.Tensor) -> torch.Tensor:
        return b

    def _shape_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, input_width={self.input_width}")

    @classmethod
    def from_float(cls, module: nn.Linear, cfg: Optional[LayerQConfig] = None,
                   input_width: Optional[int] = None) -> "QLinear":
        """A ``QLinear`` with ``module``'s shape, weight and bias."""
        cls._check_float(module)
        layer = cls(module.in_features, module.out_features, module.bias is not None, cfg=cfg,
                    input_width=input_width)
        layer._copy_from(module)
        return layer


def _tuple(value: Union[int, tuple[int, ...]], n: int, name: str) -> tuple[int, ...]:
    """``value`` as an ``n``-tuple of ints (an int repeats)."""
    values = (value,) * n if isinstance(value, int) else tuple(value)
    if len(values) != n or not all(isinstance(v, int) for v in values):
        raise ValueError(f"{name} must be an int or {n} ints, got {value!r}")
    return values


class _QConvNd(_QDotProduct):
    """Convolution over ``_dims`` spatial dimensions with zero padding."""

    _dims = 0
    _conv: Callable[..., torch.Tensor] = staticmethod(F.conv2d)

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Union[int, tuple[int, ...]],
                 stride: Union[int, tuple[int, ...]] = 1, padding: Union[int, tuple[int, ...], str] = 0,
                 dilation: Union[int, tuple[int, ...]] = 1, groups: int = 1, bias: bool = True, *,
                 cfg: Optional[LayerQConfig] = None, input_width: Optional[int] = None) -> None:
        n = self._dims
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{type(self).__name__}: in_channels={in_channels} and out_channels={out_channels} "
                             f"must both be divisible by groups={groups}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = _tuple(kernel_size, n, "kernel_size")
        self.stride = _tuple(stride, n, "stride")
        self.dilation = _tuple(dilation, n, "dilation")
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"padding must be 'same', 'valid' or ints, got {padding!r}")
            self.padding: Union[str, tuple[int, ...]] = padding
        else:
            self.padding = _tuple(padding, n, "padding")
        super().__init__((out_channels, in_channels // groups) + self.kernel_size, bias, cfg, input_width)

    def _product(self, x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor]) -> torch.Tensor:
        return self._conv(x, w, b, self.stride, self.padding, self.dilation, self.groups)

    def _bias_view(self, b: torch.Tensor) -> torch.Tensor:
        return b.view((-1,) + (1,) * self._dims)

    def _shape_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0,) * self._dims:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * self._dims:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s + f", input_width={self.input_width}"

    @classmethod
    def from_float(cls, module: nn.Module, cfg: Optional[LayerQConfig] = None,
                   input_width: Optional[int] = None) -> "_QConvNd":
        """A quantized convolution with ``module``'s shape, stride, padding, dilation, groups, weight and bias."""
        cls._check_float(module)
        if module.padding_mode != "zeros":
            raise ValueError(f"{cls.__name__}.from_float: padding_mode={module.padding_mode!r} is not supported, "
                             "only 'zeros' (what the HLS convolution pads with); pad the input explicitly "
                             "before the layer instead")
        layer = cls(module.in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
                    module.dilation, module.groups, module.bias is not None, cfg=cfg, input_width=input_width)
        layer._copy_from(module)
        return layer


def _conv_doc(dims: int, shape: str) -> str:
    return f"""{dims}-D convolution (zero padding) on fixed-point inputs of shape ``{shape}``.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation,
        groups, bias: as :class:`torch.nn.Conv{dims}d`.
        cfg: the formats; default ``LayerQConfig()``.
        input_width: word length of the input's format; default ``cfg.output.width``.
    """ + _NUMERICS


class QConv1d(_QConvNd):
    __doc__ = _conv_doc(1, "(N, C, L)")
    _dims = 1
    _conv = staticmethod(F.conv1d)
    _float_type = nn.Conv1d


class QConv2d(_QConvNd):
    __doc__ = _conv_doc(2, "(N, C, H, W)")
    _dims = 2
    _conv = staticmethod(F.conv2d)
    _float_type = nn.Conv2d
