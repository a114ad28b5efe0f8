"""1-D pooling, adaptive average pooling whose output divides its input, and ``.mean()`` over spatial dims.

Each is the 2-D layer of :mod:`qfx.nn.pooling` on a tensor seen with one
more dimension, or the same window sum times a fixed-point ``1/N``, so the
numerics (and their docstrings) are those of :class:`~qfx.nn.QMaxPool2d`
and :class:`~qfx.nn.QAvgPool2d`.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .config import LayerQConfig, constant_type
from .exact import as_float
from .pooling import QAvgPool2d, QMaxPool2d, _QAveragePool

__all__ = ["QMaxPool1d", "QAvgPool1d", "QAdaptiveAvgPool", "QMean"]


def _one(value: Union[int, Sequence[int]]) -> int:
    return int(value if isinstance(value, int) else value[0])


class QMaxPool1d(QMaxPool2d):
    """``nn.MaxPool1d``: :class:`~qfx.nn.QMaxPool2d` with a ``1 x k`` window on ``(N, C, 1, L)`` (no cast)."""

    def __init__(self, kernel_size: int, stride: Optional[int] = None, padding: int = 0, dilation: int = 1,
                 ceil_mode: bool = False, *, cfg: Optional[LayerQConfig] = None) -> None:
        k = _one(kernel_size)
        s = k if stride is None else _one(stride)
        super().__init__((1, k), (1, s), (0, _one(padding)), (1, _one(dilation)), ceil_mode, cfg=cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.unsqueeze(2)).squeeze(2)

    @classmethod
    def from_float(cls, module: nn.MaxPool1d, cfg: Optional[LayerQConfig] = None) -> "QMaxPool1d":
        if not isinstance(module, nn.MaxPool1d) or module.return_indices:
            raise ValueError("QMaxPool1d.from_float takes an nn.MaxPool1d with return_indices=False")
        return cls(module.kernel_size, module.stride, module.padding, module.dilation, module.ceil_mode, cfg=cfg)


class QAvgPool1d(QAvgPool2d):
    """``nn.AvgPool1d``: :class:`~qfx.nn.QAvgPool2d` with a ``1 x k`` window on ``(N, C, 1, L)``."""

    def __init__(self, kernel_size: int, stride: Optional[int] = None, padding: int = 0, *,
                 cfg: Optional[LayerQConfig] = None, input_width: Optional[int] = None) -> None:
        k = _one(kernel_size)
        s = k if stride is None else _one(stride)
        super().__init__((1, k), (1, s), (0, _one(padding)), cfg=cfg, input_width=input_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.unsqueeze(2)).squeeze(2)

    @classmethod
    def from_float(cls, module: nn.AvgPool1d, cfg: Optional[LayerQConfig] = None,
                   input_width: Optional[int] = None) -> "QAvgPool1d":
        if not isinstance(module, nn.AvgPool1d):
            raise TypeError(f"QAvgPool1d.from_float expects an nn.AvgPool1d, got {type(module).__name__}")
        if module.ceil_mode or (not module.count_include_pad and _one(module.padding)):
            raise ValueError("QAvgPool1d.from_float: ceil_mode=True and count_include_pad=False with padding are "
                             "not supported (border windows would need their own divisors)")
        return cls(module.kernel_size, module.stride, module.padding, cfg=cfg, input_width=input_width)


class _QWindowSum(_QAveragePool):
    """``Qout(sum(window) * Qdiv(1/N))`` with the window known only from the input's size."""

    def _fit_window(self, window: int) -> None:
        if window != self.window:
            self.window = window
            if self._fit_divisor:
                self.divisor_quantizer.set_int_bits(constant_type(1 / window).int_bits)


class QAdaptiveAvgPool(_QWindowSum):
    """``nn.AdaptiveAvgPool1d/2d`` where each output size divides the input's: windows of ``in // out``.

    The window is the same everywhere, so this is :class:`~qfx.nn.QAvgPool2d`
    with ``kernel = stride = in // out``, recorded (in :attr:`kernel`) at the
    first forward pass; an output size that does not divide the input is
    refused (its windows would overlap unevenly).

    Args:
        output_size: as the float module (one size per spatial dimension).
        dims: 1 or 2 spatial dimensions.
    """

    def __init__(self, output_size: Union[int, Sequence[int]], dims: int, *, cfg: Optional[LayerQConfig] = None,
                 input_width: Optional[int] = None) -> None:
        super().__init__(cfg, input_width, window=1)
        sizes = [output_size] * dims if isinstance(output_size, int) else list(output_size)
        if len(sizes) != dims or not all(isinstance(s, int) and s >= 1 for s in sizes):
            raise ValueError(f"QAdaptiveAvgPool: output_size must be {dims} integers >= 1, got {output_size!r}")
        self.output_size, self.dims = sizes, dims
        self.kernel: list[int] = [1] * dims

    def _shape_repr(self) -> str:
        return f"output_size={self.output_size}, kernel={self.kernel}, input_width={self.input_width}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = list(x.shape[2:])
        if len(spatial) != self.dims or any(n % o for n, o in zip(spatial, self.output_size)):
            raise ValueError(f"{self.describe()}: input of shape {tuple(x.shape)}: each output size must divide "
                             "the input size (other adaptive windows overlap unevenly)")
        self.kernel = [n // o for n, o in zip(spatial, self.output_size)]
        self._fit_window(math.prod(self.kernel))
        x = as_float(x)
        x4 = x.unsqueeze(2) if self.dims == 1 else x
        kernel = [1] + self.kernel if self.dims == 1 else self.kernel
        sums = F.avg_pool2d(x4.to(self._dtype(x)), kernel, kernel, divisor_override=1)
        y = self._average(sums, x.dtype)
        return y.squeeze(2) if self.dims == 1 else y

    @classmethod
    def from_float(cls, module: nn.Module, cfg: Optional[LayerQConfig] = None,
                   input_width: Optional[int] = None) -> "QAdaptiveAvgPool":
        dims = 1 if isinstance(module, nn.AdaptiveAvgPool1d) else 2
        size = module.output_size
        if isinstance(size, (tuple, list)) and any(s is None for s in size):
            raise ValueError("QAdaptiveAvgPool.from_float: output sizes of None are not supported")
        return cls(size, dims, cfg=cfg, input_width=input_width)


class QMean(_QWindowSum):
    """``x.mean(dims)`` over all spatial dimensions: ``Qout(sum * Qdiv(1/N))``, ``N`` their product.

    Args:
        dims: the dimensions averaged, as given to ``mean`` (checked at each call to be every spatial one).
        keepdim: as :meth:`torch.Tensor.mean`.
    """

    def __init__(self, dims: Sequence[int] = (-1,), keepdim: bool = False, *, cfg: Optional[LayerQConfig] = None,
                 input_width: Optional[int] = None) -> None:
        super().__init__(cfg, input_width, window=1)
        self.dims, self.keepdim = [int(d) for d in dims], bool(keepdim)

    def _shape_repr(self) -> str:
        return f"dims={self.dims}, keepdim={self.keepdim}, input_width={self.input_width}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() not in (3, 4):
            raise ValueError(f"{self.describe()} expects (N, C, L) or (N, C, H, W), got {tuple(x.shape)}")
        dims = tuple(range(2, x.dim()))
        if sorted(d % x.dim() for d in self.dims) != list(dims):
            raise ValueError(f"{self.describe()}: input of shape {tuple(x.shape)}: only the mean over every spatial "
                             "dimension is supported")
        self._fit_window(math.prod(x.shape[2:]))
        x = as_float(x)
        sums = x.to(self._dtype(x)).sum(dim=dims, keepdim=self.keepdim)
        return self._average(sums, x.dtype)
