"""The exact cast in one native pass: ``cast_kernels.cpp``, compiled once with g++ and loaded with ``ctypes``.

:func:`cast_codes` gives what :func:`qfx.functional.cast_codes` gives, for
every rounding and overflow mode, reading ``x`` once and writing the codes
(and, if asked, the in-range mask) once, where the PyTorch version makes a
bounds pass and one or more passes per mode.  It returns ``None`` where it
does not apply, and the caller takes the PyTorch ops:

* before the pass: not a contiguous float32/float64 CPU tensor, one binary
  point per channel, a binary point whose scaling needs fix-ups (``TRN``
  with ``F < 0``; float64 with ``F >= 1022``), or no library;
* after it (the kernel says so): a NaN or an infinity (the PyTorch path
  refuses them with a count), or a ``|x * 2**F|`` large enough that the
  PyTorch path folds it first.

Built on first use into ``$QFX_CACHE_DIR/cast`` (about two seconds), with
``-march=native`` where the compiler has it; OpenMP threads as PyTorch's
(``libgomp``, ``torch.get_num_threads()``).  Without a compiler a warning
says so once; ``QFX_CAST_KERNELS=0`` chooses the PyTorch ops without trying.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import re
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .cxx import compile_native
from .format import FixedType, Overflow, Rounding

__all__ = ["library", "cast_codes", "empty_like", "kernel_source"]

# -fno-trapping-math lets floor/ceil/trunc vectorize (no program here reads the FP exception flags); no
# flag that changes a result (no -ffast-math; -ffp-contract=off: no FMA).
FLAGS = ("-std=c++17", "-O3", "-fopenmp", "-ffp-contract=off", "-fno-trapping-math", "-fPIC", "-shared")

# The order of the enums in cast_kernels.cpp.
_ROUNDING = {r: i for i, r in enumerate([Rounding.RND, Rounding.RND_ZERO, Rounding.RND_MIN_INF, Rounding.RND_INF,
                                          Rounding.RND_CONV, Rounding.TRN, Rounding.TRN_ZERO])}
_OVERFLOW = {o: i for i, o in enumerate([Overflow.SAT, Overflow.SAT_ZERO, Overflow.SAT_SYM, Overflow.WRAP,
                                         Overflow.WRAP_SM])}
_MANTISSA = {torch.float32: 24, torch.float64: 53}
_FALLBACK, _OUTSIDE = 1, 2
_P = ctypes.c_void_p
_SIGNATURE = [_P, _P, _P, ctypes.c_int64, ctypes.c_int, ctypes.c_int, _P, _P, ctypes.c_int]


@functools.lru_cache(maxsize=1)
def library() -> Optional[dict[torch.dtype, ctypes._CFuncPtr]]:
    """The kernel per dtype, or ``None`` (disabled, or no working compiler: warned once)."""
    if os.environ.get("QFX_CAST_KERNELS", "1") == "0":
        return None
    source = kernel_source(Path(__file__).resolve().parent / "cast_kernels.cpp")
    try:
        path = compile_native(source, "cast", FLAGS, "cast")  # rounding, int64 conversions, shifts as vector ops
        lib = ctypes.CDLL(str(path))
        entries = {}
        for dtype, suffix in ((torch.float32, "f32"), (torch.float64, "f64")):
            entry = getattr(lib, f"qfx_cast_codes_{suffix}")
            entry.argtypes, entry.restype = _SIGNATURE, ctypes.c_int
            entries[dtype] = entry
        entries["lib"] = lib  # keeps the library loaded
        return entries
    except (RuntimeError, OSError, AttributeError) as error:
        warnings.warn(f"qfx: the native cast is unavailable ({error}); casts fall back to slower PyTorch operations "
                      "with the same results. Install g++ to speed them up, or set QFX_CAST_KERNELS=0 to silence "
                      "this.", RuntimeWarning, stacklevel=3)
        return None


_MODES_HEADER = Path(__file__).resolve().parent / "cast_modes.h"


def kernel_source(path: Path) -> str:
    """The text of a kernel file with its ``#include "cast_modes.h"`` (the per-element rounding and overflow rules
    it shares with the other kernels), and each ``#include "<file>"`` of a file beside it, replaced by that
    file's text: one translation unit, whose text alone keys the compile cache."""
    text = path.read_text().replace('#include "cast_modes.h"', _MODES_HEADER.read_text(), 1)
    return re.sub(r'^#include "([\w.]+)"$', lambda m: (path.parent / m.group(1)).read_text(), text, flags=re.M)


def cast_codes(x: torch.Tensor, t: FixedType, frac_bits: int, need_mask: bool,
               values: bool = False) -> Optional[tuple[torch.Tensor, Optional[torch.Tensor]]]:
    """``(codes, inside)`` as :func:`qfx.functional.cast_codes` defines them, or ``None`` where the kernel does not apply.

    ``x`` has passed :func:`qfx.functional.cast_codes`'s dtype and width
    checks; ``frac_bits`` is one binary point.  ``values=True`` writes
    ``codes * 2**-F`` instead of the codes (the same multiplication, in the
    same pass).  ``inside`` is ``None`` unless ``need_mask`` and some code
    lay outside the range.
    """
    if (x.device.type != "cpu" or x.dtype not in _MANTISSA or x.numel() == 0
            or (frac_bits < 0 and t.rounding is Rounding.TRN) or (x.dtype == torch.float64 and frac_bits >= 1022)):
        return None
    kernels = library()
    if kernels is None:
        return None
    x = x.contiguous()
    bits = _MANTISSA[x.dtype]
    low = (t.code_min | 1) if t.signed else 0
    huge = min(2.0 ** 62, 2.0 ** (bits + t.width + 2))  # beyond: the PyTorch path folds the value first
    out_scale = math.ldexp(1.0, -frac_bits) if values else 1.0
    reals = (ctypes.c_double * 7)(math.ldexp(1.0, frac_bits), t.code_min, t.code_max, low, 2.0 ** (bits - 1), huge,
                                  out_scale)
    ints = (ctypes.c_int64 * 3)(t.width, t.sat_bits, int(t.signed))
    codes = empty_like(x)
    inside = torch.empty(x.shape, dtype=torch.bool) if need_mask else None
    status = kernels[x.dtype](x.data_ptr(), codes.data_ptr(), None if inside is None else inside.data_ptr(),
                              x.numel(), _ROUNDING[t.rounding], _OVERFLOW[t.overflow], reals, ints,
                              torch.get_num_threads())
    if status & _FALLBACK:
        return None
    return codes, (inside if status & _OUTSIDE else None)


def empty_like(x: torch.Tensor) -> torch.Tensor:
    """An uninitialised tensor like ``x``; large CPU ones come from NumPy's allocator.

    NumPy asks the kernel for transparent huge pages on large arrays, which
    makes the first write to a fresh 80 MB buffer about 1.7x faster than
    through torch's allocator, and that first write is the cast's costliest pass.
    """
    if x.device.type == "cpu" and x.numel() >= 1 << 20 and x.dtype in _NUMPY_DTYPES:
        return torch.from_numpy(np.empty(tuple(x.shape), dtype=_NUMPY_DTYPES[x.dtype]))
    return torch.empty_like(x, memory_format=torch.contiguous_format)


_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}
