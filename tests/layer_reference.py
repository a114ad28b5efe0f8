"""Integer reference of the quantized layers' arithmetic, for tests/test_layers*.py.

Values are integer codes with a number of fractional bits ``F`` (value =
``code * 2**-F``); products, sums, alignment, convolution and pooling are
computed here with NumPy int64 only, independently of the layers' float
paths.  The casts call :func:`qfx.to_codes` on the exact value (the cast is
tested against Xilinx's headers elsewhere), or :mod:`reference_fixed` on
Fractions when the value would not fit a float64.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Union

import numpy as np
import torch

import qfx
from qfx import FixedType

import reference_fixed

__all__ = ["codes", "values", "align_add", "cast", "conv", "window_sum", "window_max", "random_fixed"]

Frac = Union[int, np.ndarray]


def codes(x: torch.Tensor, t: FixedType) -> np.ndarray:
    """Integer codes of a tensor that already holds values of ``t`` (asserted)."""
    c = qfx.to_codes(x, t)
    assert torch.equal(qfx.from_codes(c, t), x.double()), f"tensor does not hold values of {t}"
    return c.numpy()


def values(c: np.ndarray, frac: Frac) -> np.ndarray:
    """Exact float64 values ``c * 2**-frac`` (codes below 2**53)."""
    assert np.abs(c).max(initial=0) < 2 ** 53
    return np.ldexp(c.astype(np.float64), -np.asarray(frac))


def align_add(a: np.ndarray, fa: Frac, b: np.ndarray, fb: Frac) -> tuple[np.ndarray, np.ndarray]:
    """``a * 2**-fa + b * 2**-fb`` as codes with ``max(fa, fb)`` fractional bits (broadcast)."""
    fa, fb = np.asarray(fa), np.asarray(fb)
    f = np.maximum(fa, fb)
    total = np.left_shift(a, f - fa) + np.left_shift(b, f - fb)
    assert np.abs(total).max(initial=0) < 2 ** 62
    return total, np.broadcast_to(f, total.shape)


def cast(c: np.ndarray, frac: Frac, t: FixedType) -> np.ndarray:
    """Codes of ``t`` for the exact values ``c * 2**-frac``."""
    frac = np.broadcast_to(np.asarray(frac), c.shape)
    if np.abs(c).max(initial=0) < 2 ** 53:
        return qfx.to_codes(torch.from_numpy(values(c, frac)), t).numpy()
    out = [reference_fixed.ap_fixed_code(Fraction(int(v), 2 ** int(f)) if f >= 0 else int(v) * 2 ** int(-f),
                                         t.width, t.int_bits, t.signed, t.rounding.value, t.overflow.value,
                                         t.sat_bits)
           for v, f in zip(c.ravel(), frac.ravel())]
    return np.array(out, dtype=np.int64).reshape(c.shape)


def _pad(x: np.ndarray, padding: tuple[int, ...], fill: int) -> np.ndarray:
    return np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in padding], constant_values=fill)


def _windows(x: np.ndarray, kernel: tuple[int, ...], stride: tuple[int, ...],
             dilation: tuple[int, ...]) -> tuple[list[tuple[tuple[int, ...], np.ndarray]], tuple[int, ...]]:
    """For each kernel offset, the strided slice of ``x`` (N, C, *spatial) it meets; and the output size."""
    spatial = x.shape[2:]
    out = tuple((s - d * (k - 1) - 1) // st + 1 for s, k, st, d in zip(spatial, kernel, stride, dilation))
    slices = []
    for offset in np.ndindex(*kernel):
        index = tuple(slice(o * d, o * d + st * (n - 1) + 1, st) for o, d, st, n in zip(offset, dilation, stride, out))
        slices.append((offset, x[(slice(None), slice(None)) + index]))
    return slices, out


def conv(x: np.ndarray, w: np.ndarray, stride: tuple[int, ...], padding: tuple[int, ...],
         dilation: tuple[int, ...], groups: int) -> np.ndarray:
    """Integer convolution (cross-correlation, zero padding): x (N, C, *S), w (O, C/groups, *K) -> (N, O, *S')."""
    x = _pad(x, padding, 0)
    out_channels, per_group = w.shape[0], w.shape[1]
    per_group_out = out_channels // groups
    slices, out_size = _windows(x, w.shape[2:], stride, dilation)
    y = np.zeros((x.shape[0], out_channels) + out_size, dtype=np.int64)
    for g in range(groups):
        o = slice(g * per_group_out, (g + 1) * per_group_out)
        for offset, patch in slices:
            patch = patch[:, g * per_group:(g + 1) * per_group]
            y[:, o] += np.einsum("nc...,oc->no...", patch, w[(o, slice(None)) + offset])
    return y


def window_sum(x: np.ndarray, kernel: tuple[int, ...], stride: tuple[int, ...], padding: tuple[int, ...]) -> np.ndarray:
    """Sum of each pooling window, zeros of the padding included."""
    slices, _ = _windows(_pad(x, padding, 0), kernel, stride, (1,) * len(kernel))
    return sum(patch for _, patch in slices)


def window_max(x: np.ndarray, kernel: tuple[int, ...], stride: tuple[int, ...], padding: tuple[int, ...],
               dilation: tuple[int, ...]) -> np.ndarray:
    """Maximum of each pooling window; padding never wins."""
    slices, _ = _windows(_pad(x, padding, np.iinfo(np.int64).min), kernel, stride, dilation)
    return np.maximum.reduce([patch for _, patch in slices])


def random_fixed(gen: torch.Generator, shape: tuple[int, ...], t: FixedType,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Uniformly random values of ``t`` over its whole range (every code equally likely)."""
    c = torch.randint(t.code_min, t.code_max + 1, shape, generator=gen, dtype=torch.int64)
    return qfx.from_codes(c, t, dtype=dtype)
