"""The native kernels of the fused cast: ``kernels.cpp`` compiled once with g++ and loaded with ``ctypes``.

Built on first use into ``$QFX_CACHE_DIR/fused`` (:func:`qfx.cxx.compile_native`,
about a second).  OpenMP threads: the library links ``libgomp.so.1``, the
runtime PyTorch has already loaded, so the kernels share PyTorch's thread
pool and take ``torch.get_num_threads()`` threads.  Where no compiler is
found or the build fails, a warning says so once and :mod:`qfx.fused` falls
back to PyTorch operations; ``QFX_FUSED_KERNELS=0`` chooses that fallback
without trying.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import warnings
from pathlib import Path
from typing import Optional

import torch

from ..cast_native import kernel_source
from ..cxx import compile_native

__all__ = ["library", "applies", "long_runs", "layout", "cast_forward", "cast_backward", "pair_forward",
           "pair_backward", "fold_points", "point_rows", "channel_moments", "cast_moments", "cast_moments_backward",
           "channel_affine", "fold_forward", "fold_backward"]

FLAGS = ("-std=c++17", "-O3", "-fopenmp", "-ffp-contract=off", "-fno-trapping-math", "-fPIC", "-shared")
# Built for this CPU's vector instructions where the compiler knows them (qfx.cxx.compile_native): a third
# faster.  Exactness does not depend on them (no contraction into FMA; adds, multiplies, compares and
# rint/floor round alike at any width); -fno-trapping-math lets floor and rint vectorize (nothing here reads
# the floating-point exception flags).

_P, _N, _INT, _D = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_double
_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}
_SIGNATURES = {  # name: (argument types, result type)
    "cast_forward": ([_P, _P, _N, _N, _N, _P, _P, _P, _N, _P, _P, _P, _INT], _INT),
    "cast_backward": ([_P, _P, _P, _N, _N, _N, _P, _P, _P, _N, _P, _P, _P, _P, _P, _P, _P, _INT], _INT),
    "pair_forward": ([_P, _P, _P, _N, _N, _N, _P, _P, _P, _N, _P, _P, _P, _P, _P, _INT], _INT),
    "pair_backward": ([_P, _P, _P, _P, _N, _N, _N, _P, _P, _P, _N, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _INT],
                      _INT),
    "fold_points": ([_P, _P, _N, _D, _D, _D], _INT),
    "point_rows": ([_P, _N, _N, _N, _N, _P], _INT),
    "channel_moments": ([_P, _N, _N, _N, _P, _P, _INT], None),
    "cast_moments": ([_P, _P, _N, _N, _N, _P, _P, _P, _P, _P, _INT], _INT),
    "cast_moments_backward": ([_P, _P, _P, _N, _N, _N, _P, _P, _P, _P, _P, _P, _P, _P, _INT], _INT),
    "channel_affine": ([_P, _P, _P, _N, _N, _N, _P, _P, _INT], None),
    "fold_forward": ([_P, _P, _P, _P, _N, _P, _P, _P, _P] + [_P, _P, _N, _N, _P, _P, _P] * 2, _INT),
    "fold_backward": ([_P, _P, _P, _P, _P, _P, _P, _N] + [_P, _N, _P, _P, _P, _P, _P] * 2 + [_P, _P, _P, _P], _INT),
}
# Status bits of fold_points (kernels.cpp).
_NOT_FINITE, _MOVED = 1, 2


class Kernels:
    """The library's entry points, one dict per kernel keyed by dtype."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib  # keeps the library loaded
        for name, (argtypes, restype) in _SIGNATURES.items():
            entries = {}
            for dtype, suffix in _SUFFIX.items():
                entry = getattr(lib, f"qfx_{name}_{suffix}")
                entry.argtypes, entry.restype = argtypes, restype
                entries[dtype] = entry
            setattr(self, name, entries)


@functools.lru_cache(maxsize=1)
def library() -> Optional[Kernels]:
    """The loaded kernels, or ``None`` (disabled, or no working compiler: warned once)."""
    if os.environ.get("QFX_FUSED_KERNELS", "1") == "0":
        return None
    source = kernel_source(Path(__file__).resolve().parent / "kernels.cpp")
    try:
        path = compile_native(source, "fused_cast", FLAGS, "fused")
        return Kernels(ctypes.CDLL(str(path)))
    except (RuntimeError, OSError, AttributeError) as error:
        warnings.warn(f"qfx: the fused training kernels are unavailable ({error}); training falls back to slower "
                      "PyTorch operations with the same results. Install g++ to speed it up, or set "
                      "QFX_FUSED_KERNELS=0 to silence this.", RuntimeWarning, stacklevel=3)
        return None



def applies(x: torch.Tensor, *per_channel: Optional[torch.Tensor]) -> bool:
    """Whether the kernels take ``x``: contiguous, nonempty, float32/float64 on the CPU, the library built;
    and each tensor of ``per_channel`` (or ``None``) contiguous, on the CPU, in ``x``'s dtype."""
    if not x.is_cpu or x.dtype not in _SUFFIX or not x.is_contiguous() or x.numel() == 0:
        return False
    for c in per_channel:
        if c is not None and (not c.is_cpu or c.dtype != x.dtype or not c.is_contiguous()):
            return False
    return library() is not None


# A run (elements in a row that share a channel) shorter than this costs more in the kernels, per element, than
# PyTorch's vectorized broadcasting does, once the tensor is larger than _SMALL elements.
_SHORT_RUN, _SMALL = 16, 4096


def long_runs(x: torch.Tensor, dim: int) -> bool:
    """Whether ``x``'s runs along channel dimension ``dim`` suit the kernels (e.g. not BatchNorm1d's ``(N, C)``)."""
    return layout(x, dim)[2] >= _SHORT_RUN or x.numel() <= _SMALL


def layout(x: torch.Tensor, dim: int) -> tuple[int, int, int]:
    """``(numel, channels, inner)`` of ``x`` with channels along ``dim`` (``-1``: none)."""
    n = x.numel()
    return (n, 1, n) if dim < 0 else (n, x.shape[dim], math.prod(x.shape[dim + 1:]))


def _ptr(t: Optional[torch.Tensor]) -> Optional[int]:
    return None if t is None else t.data_ptr()


def cast_forward(x: torch.Tensor, table, dim: int, scale: Optional[torch.Tensor],
                 shift: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """The cast of :func:`qfx.fused.cast_forward` with the :class:`qfx.fused.Table` ``table`` (one row, or one per
    channel along ``dim``); ``None`` where the kernel leaves a value to the exact cast."""
    q = torch.empty_like(x)
    rows = table.rows
    status = library().cast_forward[x.dtype](x.data_ptr(), q.data_ptr(), *layout(x, dim), _ptr(scale), _ptr(shift),
                                             rows.data_ptr(), rows.shape[0], _ptr(table.index), table.ints,
                                             table.reals, torch.get_num_threads())
    return None if status else q


def cast_backward(grad: torch.Tensor, x: torch.Tensor, table, dim: int, scale: Optional[torch.Tensor],
                  shift: Optional[torch.Tensor], weight: torch.Tensor,
                  ) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor], bool]:
    """``(dL/dx, point, dL/dscale, dL/dshift, finite)`` of :func:`qfx.fused.cast_backward`; ``weight`` (float64)
    has one entry per table row, ``point`` (float32) one per binary point (per row, or per channel with an
    index); ``finite`` is ``False`` where some entry of ``point`` is not finite.  ``grad`` contiguous, in ``x``'s
    dtype."""
    grad_x = torch.empty_like(x)
    n, channels, inner = layout(x, dim)
    rows = table.rows
    point = torch.empty(rows.shape[0] if table.index is None else channels, dtype=torch.float32)
    per_channel = None if scale is None else torch.empty(2, channels, dtype=x.dtype)
    base = None if per_channel is None else per_channel.data_ptr()
    status = library().cast_backward[x.dtype](grad.data_ptr(), x.data_ptr(), grad_x.data_ptr(), n, channels, inner,
                                              _ptr(scale), _ptr(shift), rows.data_ptr(), rows.shape[0],
                                              _ptr(table.index), table.ints, table.reals, weight.data_ptr(),
                                              point.data_ptr(), base,
                                              None if base is None else base + x.element_size() * channels,
                                              torch.get_num_threads())
    return (grad_x, point, *((None, None) if per_channel is None else per_channel.unbind(0)), status == 0)


def pair_forward(x: torch.Tensor, first, second, scale: Optional[torch.Tensor],
                 shift: Optional[torch.Tensor]) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """``(q1, q2)`` of :func:`qfx.fused.pair_forward`: ``first`` one row or one per channel (dimension 1, with a
    scale), ``second`` one row; ``None`` where a kernel leaves a value to the exact cast."""
    q1, q2 = torch.empty_like(x), torch.empty_like(x)
    status = library().pair_forward[x.dtype](x.data_ptr(), q1.data_ptr(), q2.data_ptr(), *_pair_layout(x, first, scale),
                                             _ptr(scale), _ptr(shift), first.rows.data_ptr(), first.rows.shape[0],
                                             first.ints, first.reals, second.rows.data_ptr(), second.ints,
                                             second.reals, torch.get_num_threads())
    return None if status else (q1, q2)


def pair_backward(grad1: Optional[torch.Tensor], grad2: torch.Tensor, x: torch.Tensor, first, second,
                  scale: Optional[torch.Tensor], shift: Optional[torch.Tensor], weight1: torch.Tensor,
                  weight2: torch.Tensor):
    """``(dL/dx, point1, point2, dL/dscale, dL/dshift, finite)`` of :func:`qfx.fused.pair_backward` (``finite``
    ``False`` where some entry of a point is not finite; the gradients contiguous, in ``x``'s dtype)."""
    grad_x = torch.empty_like(x)
    n, channels, inner = _pair_layout(x, first, scale)
    point1 = torch.empty(first.rows.shape[0], dtype=torch.float32)
    point2 = torch.empty(1, dtype=torch.float32)
    per_channel = None if scale is None else torch.empty(2, channels, dtype=x.dtype)
    base = None if per_channel is None else per_channel.data_ptr()
    status = library().pair_backward[x.dtype](_ptr(grad1), grad2.data_ptr(), x.data_ptr(), grad_x.data_ptr(), n,
                                              channels, inner, _ptr(scale), _ptr(shift), first.rows.data_ptr(),
                                              first.rows.shape[0], first.ints, first.reals, second.rows.data_ptr(),
                                              second.ints, second.reals, weight1.data_ptr(), weight2.data_ptr(),
                                              point1.data_ptr(), point2.data_ptr(), base,
                                              None if base is None else base + x.element_size() * channels,
                                              torch.get_num_threads())
    return (grad_x, point1, point2, *((None, None) if per_channel is None else per_channel.unbind(0)), status == 0)


def _pair_layout(x: torch.Tensor, first, scale: Optional[torch.Tensor]) -> tuple[int, int, int]:
    return layout(x, 1 if scale is not None else first.dim)


def _takes_points(*tensors: torch.Tensor) -> bool:
    dtype = tensors[0].dtype
    if dtype not in _SUFFIX or library() is None:
        return False
    for t in tensors:
        if t.dtype != dtype or not t.is_cpu or not t.is_contiguous():
            return False
    return True


def fold_points(bits: torch.Tensor, move: torch.Tensor, k: float, lo: int, hi: int) -> Optional[bool]:
    """``bits = clamp(bits + k * move, lo, hi)`` and ``move = 0`` in place, in one call (nothing written where
    ``move`` is all zero), rounding as ``torch.add(bits, move, alpha=k)`` does for a power of two ``k``: ``True``
    if done, ``False`` (nothing written) where some ``bits + k * move`` is not finite, ``None`` where the kernels
    do not take the tensors (contiguous CPU float32/float64 of one dtype)."""
    if not _takes_points(bits, move):
        return None
    status = library().fold_points[bits.dtype](bits.data_ptr(), move.data_ptr(), bits.numel(), k, lo, hi)
    if status & _NOT_FINITE:
        return False
    if status & _MOVED:
        torch.autograd.graph.increment_version((bits, move))  # written in place: as add_ and zero_ would say
    return True


def point_rows(bits: torch.Tensor, width: int, first: int, count: int) -> Optional[torch.Tensor]:
    """The table row of each binary point, ``width - round(bits) - first`` (int32), or ``None`` where some row
    lies outside ``count`` rows or the kernels do not take ``bits``."""
    if not _takes_points(bits):
        return None
    index = torch.empty(bits.numel(), dtype=torch.int32)
    status = library().point_rows[bits.dtype](bits.data_ptr(), bits.numel(), width, first, count, index.data_ptr())
    return None if status else index


def channel_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (dimension 1) mean and biased variance of ``x``, in ``x``'s dtype."""
    n, channels, inner = layout(x, 1)
    moments = torch.empty(2, channels, dtype=x.dtype)
    base = moments.data_ptr()
    library().channel_moments[x.dtype](x.data_ptr(), n, channels, inner, base, base + x.element_size() * channels,
                                       torch.get_num_threads())
    return moments.unbind(0)


def cast_moments(x: torch.Tensor, table) -> Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``(q, mean, var)`` of :func:`qfx.fused.cast_moments`; ``None`` where the kernel leaves a value to the exact
    cast."""
    n, channels, inner = layout(x, 1)
    q = torch.empty_like(x)
    moments = torch.empty(2, channels, dtype=x.dtype)
    base = moments.data_ptr()
    status = library().cast_moments[x.dtype](x.data_ptr(), q.data_ptr(), n, channels, inner, table.rows.data_ptr(),
                                             table.ints, table.reals, base, base + x.element_size() * channels,
                                             torch.get_num_threads())
    return None if status else (q, *moments.unbind(0))


def cast_moments_backward(grad: torch.Tensor, x: torch.Tensor, table, grad_mean: Optional[torch.Tensor],
                          grad_var: Optional[torch.Tensor], mean: torch.Tensor,
                          weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """``(dL/dx, point, finite)`` of :func:`qfx.fused.cast_moments_backward` (``point`` 0-d; the gradients contiguous,
    in ``x``'s dtype)."""
    grad_x = torch.empty_like(x)
    point = torch.empty((), dtype=torch.float32)
    status = library().cast_moments_backward[x.dtype](grad.data_ptr(), x.data_ptr(), grad_x.data_ptr(),
                                                      *layout(x, 1), _ptr(grad_mean), _ptr(grad_var),
                                                      mean.data_ptr(), table.rows.data_ptr(), table.ints,
                                                      table.reals, weight.data_ptr(), point.data_ptr(),
                                                      torch.get_num_threads())
    return grad_x, point, status == 0


def channel_affine(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, z: Optional[torch.Tensor]) -> torch.Tensor:
    """``x * a + b`` (``+ z`` where given) with one ``a`` and ``b`` per channel (dimension 1), rounding after each
    operation."""
    y = torch.empty_like(x)
    library().channel_affine[x.dtype](x.data_ptr(), _ptr(z), y.data_ptr(), *layout(x, 1), a.data_ptr(), b.data_ptr(),
                                      torch.get_num_threads())
    return y


def fold_forward(mean: torch.Tensor, r: torch.Tensor, gamma: Optional[torch.Tensor], beta: Optional[torch.Tensor],
                 casts: tuple) -> Optional[tuple[torch.Tensor, ...]]:
    """``(scale, shift, qscale, qshift, index_scale, index_shift)`` of :func:`qfx.fused.fold_forward`; ``casts`` holds
    ``(bits, rows)`` for the scale and the shift (``rows`` the format's every row, :func:`qfx.fused._all_rows`).
    ``None`` where some binary point has no row or the kernel leaves a value to the exact cast."""
    channels = mean.numel()
    out = torch.empty(4, channels, dtype=mean.dtype)
    index = torch.empty(2, channels, dtype=torch.int32).unbind(0)  # unbind: one op, not a Python iteration
    arguments = []
    for (bits, every), i in zip(casts, index):
        arguments += [bits.data_ptr(), every.rows.data_ptr(), every.first, len(every.fracs), every.ints, every.reals,
                      i.data_ptr()]
    base, step = out.data_ptr(), mean.element_size() * channels
    status = library().fold_forward[mean.dtype](mean.data_ptr(), r.data_ptr(), _ptr(gamma), _ptr(beta), channels,
                                                base, base + step, base + 2 * step, base + 3 * step, *arguments)
    return None if status else (*out.unbind(0), *index)


def fold_backward(grad_qscale: torch.Tensor, grad_qshift: torch.Tensor, saved: tuple, gamma: Optional[torch.Tensor],
                  casts: tuple) -> tuple[tuple[torch.Tensor, ...], int]:
    """``((grad_mean, grad_var, grad_gamma, grad_beta, point_scale, point_shift), status)`` of
    :func:`qfx.fused.fold_backward` (the two gradients contiguous, in ``mean``'s dtype); ``saved`` is ``(scale, shift,
    mean, r)``, ``casts`` ``(rows, index, weight)`` for the scale and the shift; ``status`` is 1 where some binary
    point's gradient is not finite."""
    scale, shift, mean, r = saved
    channels = mean.numel()
    single = mean.dtype == torch.float32  # the points (float32) in the same allocation as the gradients
    grads = torch.empty(6 if single else 4, channels, dtype=mean.dtype).unbind(0)
    points = grads[4:] if single else torch.empty(2, channels, dtype=torch.float32).unbind(0)
    arguments = []
    for (every, index, weight), point in zip(casts, points):
        arguments += [every.rows.data_ptr(), len(every.fracs), every.ints, every.reals, index.data_ptr(),
                      weight.data_ptr(), point.data_ptr()]
    status = library().fold_backward[mean.dtype](
        grad_qscale.data_ptr(), grad_qshift.data_ptr(), scale.data_ptr(), shift.data_ptr(),
        mean.data_ptr(), r.data_ptr(), _ptr(gamma), channels, *arguments, grads[0].data_ptr(), grads[1].data_ptr(),
        None if gamma is None else grads[2].data_ptr(), grads[3].data_ptr())
    return (*grads[:4], *points), status
