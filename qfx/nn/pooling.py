"""Pooling and reshaping: ``QMaxPool2d``, ``QAvgPool2d``, ``QAdaptiveAvgPool2d``, ``QFlatten``."""

from __future__ import annotations

import math
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from .config import LayerQConfig, constant_type, make_quantizer
from .exact import as_float, cast, cast_output, exact_dtype
from .layer import FixedConstant, QuantizedLayer, fixed_constant

__all__ = ["QMaxPool2d", "QAvgPool2d", "QAdaptiveAvgPool2d", "QFlatten"]

IntOrPair = Union[int, tuple[int, int]]


def _check_float(cls: type, module: nn.Module, float_type: type) -> None:
    if not isinstance(module, float_type):
        raise TypeError(f"{cls.__name__}.from_float expects an nn.{float_type.__name__}, got {type(module).__name__}")


class QMaxPool2d(QuantizedLayer):
    """2-D max pooling on fixed-point inputs: ``y = max(window)``, or ``Qout(max(window))`` with a ``cfg``.

    Numerics: the maximum of fixed-point values is one of them, exact in any
    dtype, so without ``cfg`` the output keeps the input's format and values
    (no cast, no quantizer); with ``cfg`` it is cast to ``cfg.output``
    (returned in the input's dtype when that holds the format, else
    float64).  Padding is with ``-inf``, as in ``torch``, so it never wins.
    Training mode computes the same; the gradient goes to each window's
    maximum.

    Args:
        kernel_size, stride, padding, dilation, ceil_mode: as :class:`torch.nn.MaxPool2d`.
        cfg: ``None`` keeps the input format; a config casts to its ``output``.
    """

    def __init__(self, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None, padding: IntOrPair = 0,
                 dilation: IntOrPair = 1, ceil_mode: bool = False, *,
                 cfg: Optional[LayerQConfig] = None) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride or kernel_size, padding
        self.dilation, self.ceil_mode = dilation, ceil_mode
        self.output_quantizer = None if cfg is None else make_quantizer(cfg.output, cfg.learn_int_bits)

    def _shape_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)
        if self.output_quantizer is None:
            return y
        return cast_output(self.output_quantizer, y, x.dtype, exact=not self.training)

    @classmethod
    def from_float(cls, module: nn.MaxPool2d, cfg: Optional[LayerQConfig] = None) -> "QMaxPool2d":
        """A ``QMaxPool2d`` with ``module``'s window; ``cfg=None`` keeps the input format."""
        _check_float(cls, module, nn.MaxPool2d)
        if module.return_indices:
            raise ValueError("QMaxPool2d.from_float: return_indices=True is not supported (the hardware "
                             "returns values only); use return_indices=False")
        return cls(module.kernel_size, module.stride, module.padding, module.dilation, module.ceil_mode, cfg=cfg)


class _QAveragePool(QuantizedLayer):
    """``Qout(sum(window) * Qdiv(1/N))`` given the window sums; shared by the two average poolings."""

    def __init__(self, cfg: Optional[LayerQConfig], input_width: Optional[int], window: int) -> None:
        super().__init__()
        cfg = cfg or LayerQConfig()
        #: Word length of the input's format; the converter sets it from the producer's output format.
        self.input_width = int(cfg.output.width if input_width is None else input_width)
        self.window = window
        self._fit_divisor = cfg.divisor is None
        self.divisor_quantizer = make_quantizer(cfg.divisor or constant_type(1 / window), learn_int_bits=False)
        self.output_quantizer = make_quantizer(cfg.output, cfg.learn_int_bits)

    def _divisor(self) -> torch.Tensor:
        """``Qdiv(1/N)`` as an exact 0-d float64 tensor (float64 ``1/N`` rounds like the exact quotient)."""
        value = torch.tensor(1 / self.window, dtype=torch.float64, device=self.divisor_quantizer.int_bits.device)
        return cast(self.divisor_quantizer, value)

    def constants(self) -> dict[str, FixedConstant]:
        """The quantized ``1/N`` as value, integer code and format."""
        return {"divisor": fixed_constant(self.divisor_quantizer, self._divisor())}

    def _average(self, sums: torch.Tensor, input_dtype: torch.dtype) -> torch.Tensor:
        """``Qout(sums * Qdiv(1/N))``; ``sums`` exact in :meth:`compute_dtype` (eval mode)."""
        product = sums * self._divisor().to(sums.dtype)
        return cast_output(self.output_quantizer, product, input_dtype, exact=not self.training)

    def _dtype(self, x: torch.Tensor) -> torch.dtype:
        return x.dtype if self.training else self.compute_dtype()

    def compute_dtype(self) -> torch.dtype:
        """The dtype eval mode sums and multiplies in (float32 or float64); ``ValueError`` beyond 53 bits."""
        terms = [("input_width", self.input_width),
                 (f"carry bits of a sum of {self.window} values", (self.window - 1).bit_length()),
                 ("divisor width", self.divisor_quantizer.base_type.width)]
        return exact_dtype(terms, self.describe(), "narrow the input format (input_width) or cfg.divisor")


class QAvgPool2d(_QAveragePool):
    """2-D average pooling as hardware does it: ``y = Qout(sum(window) * Qdiv(1/N))``, ``N`` the kernel area.

    Numerics: the window sum is exact; ``1/N`` is a fixed-point constant,
    ``cfg.divisor`` or, when that is ``None``, the 16-bit format fitted to it
    (:func:`constant_type`), not learned; the product is exact and
    ``Qout`` (``cfg.output``) is the only rounding.  Padding adds zeros that
    count in ``N`` (``count_include_pad=True`` only), and ``ceil_mode`` is not
    supported (its clipped windows would need other divisors).  Eval mode
    (bit-exact) sums and multiplies in float32 when ``input_width +
    ceil(log2 N) + divisor width <= 24``, else in float64 (an error beyond
    53 bits), and returns the input's dtype when it holds ``cfg.output``,
    else float64.  Training mode computes the same in the input's dtype, with
    gradients to ``x`` and, when ``cfg.learn_int_bits``, to the output's
    binary point.

    Args:
        kernel_size, stride, padding: as :class:`torch.nn.AvgPool2d`.
        cfg: the formats; default ``LayerQConfig()``.
        input_width: word length of the input's format; default ``cfg.output.width``.
    """

    def __init__(self, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None, padding: IntOrPair = 0, *,
                 cfg: Optional[LayerQConfig] = None, input_width: Optional[int] = None) -> None:
        pair = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        self.kernel_size, self.stride, self.padding = kernel_size, stride or kernel_size, padding
        super().__init__(cfg, input_width, window=math.prod(pair))

    def _shape_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"input_width={self.input_width}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # divisor_override=1 turns the average into the plain window sum, zeros of the padding included.
        x = as_float(x)
        sums = F.avg_pool2d(x.to(self._dtype(x)), self.kernel_size, self.stride, self.padding,
                            divisor_override=1)
        return self._average(sums, x.dtype)

    @classmethod
    def from_float(cls, module: nn.AvgPool2d, cfg: Optional[LayerQConfig] = None,
                   input_width: Optional[int] = None) -> "QAvgPool2d":
        """A ``QAvgPool2d`` with ``module``'s window (``count_include_pad=True``, no ``ceil_mode``)."""
        _check_float(cls, module, nn.AvgPool2d)
        if module.ceil_mode:
            raise ValueError("QAvgPool2d.from_float: ceil_mode=True is not supported (windows clipped at the border "
                             "would need their own divisors); use ceil_mode=False and pad the input instead")
        if not module.count_include_pad and module.padding not in (0, (0, 0)):
            raise ValueError("QAvgPool2d.from_float: count_include_pad=False with padding is not supported (border "
                             "windows would need their own divisors); use count_include_pad=True")
        if module.divisor_override is not None:
            raise ValueError("QAvgPool2d.from_float: divisor_override is not supported, the divisor is the kernel "
                             "area; use divisor_override=None")
        return cls(module.kernel_size, module.stride, module.padding, cfg=cfg, input_width=input_width)


class QAdaptiveAvgPool2d(_QAveragePool):
    """Global average pooling, ``output_size=1``: ``y = Qout(sum(x over H, W) * Qdiv(1/(H*W)))``.

    Numerics as :class:`QAvgPool2d` with ``N = H * W``.  ``N`` is known only
    from the input: the first forward pass records it in :attr:`window`
    and, when ``cfg.divisor`` is ``None``, fits the divisor's 16-bit format
    to ``1/N`` (again if a later input has another size).  Other output sizes
    are refused.

    Args:
        output_size: must be 1 (or ``(1, 1)``).
        cfg: the formats; default ``LayerQConfig()``.
        input_width: word length of the input's format; default ``cfg.output.width``.
    """

    def __init__(self, output_size: Union[int, tuple[int, int]] = 1, *, cfg: Optional[LayerQConfig] = None,
                 input_width: Optional[int] = None) -> None:
        if output_size not in (1, (1, 1), [1, 1]):
            raise ValueError(f"QAdaptiveAvgPool2d supports output_size=1 (global average pooling) only, got "
                             f"{output_size!r}; where the input size is a multiple of the output size, use "
                             "QAvgPool2d with kernel_size = stride = input size // output size")
        super().__init__(cfg, input_width, window=1)
        self.output_size = 1

    def _shape_repr(self) -> str:
        return f"output_size=1, input_width={self.input_width}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"{self.describe()} expects an (N, C, H, W) input, got shape {tuple(x.shape)}")
        window = x.shape[-1] * x.shape[-2]
        if window != self.window:
            self.window = window
            if self._fit_divisor:
                self.divisor_quantizer.set_int_bits(constant_type(1 / window).int_bits)
        x = as_float(x)
        sums = x.to(self._dtype(x)).sum(dim=(-2, -1), keepdim=True)
        return self._average(sums, x.dtype)

    @classmethod
    def from_float(cls, module: nn.AdaptiveAvgPool2d, cfg: Optional[LayerQConfig] = None,
                   input_width: Optional[int] = None) -> "QAdaptiveAvgPool2d":
        """A ``QAdaptiveAvgPool2d``; ``module.output_size`` must be 1."""
        _check_float(cls, module, nn.AdaptiveAvgPool2d)
        return cls(module.output_size, cfg=cfg, input_width=input_width)


class QFlatten(QuantizedLayer):
    """``x.flatten(start_dim, end_dim)``: a reshape, no arithmetic and no cast (the format is kept).

    Args:
        start_dim, end_dim: as :class:`torch.nn.Flatten`.
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def _shape_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(self.start_dim, self.end_dim)

    @classmethod
    def from_float(cls, module: nn.Flatten, cfg: Optional[LayerQConfig] = None) -> "QFlatten":
        """A ``QFlatten`` with ``module``'s dimensions (``cfg`` is accepted and unused: nothing is cast)."""
        _check_float(cls, module, nn.Flatten)
        return cls(module.start_dim, module.end_dim)
