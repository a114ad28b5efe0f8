"""K-hot quantization: values whose code has at most K nonzero signed binary digits.

A constant with K nonzero digits in canonical signed-digit (CSD) form
multiplies by K shifts and K-1 additions, so a K-hot weight needs no DSP.
The minimal number of nonzero signed digits of an integer is the weight of
its CSD (non-adjacent) form, so the codes allowed are exactly the sums of at
most K terms ``±2**i`` that lie in the type's range.

``quantize_khot(x, t, k)`` projects each value on the nearest allowed value.
Where the allowed codes are few (narrow words or ``k <= 2``) they are
enumerated once per (type, k) and cached, and each element is placed with
one ``searchsorted``.  Otherwise nothing is enumerated: the allowed
neighbours below and above each value come from the digits themselves
(:func:`khot_floor_ceil`; the largest allowed code at most ``n`` has its
top digit at ``2**p`` or ``2**(p+1)``, where ``2**p <= n < 2**(p+1)``, and
the rest is the same problem with one digit fewer), in ``k`` passes over
the distinct values, so width 40 with ``k = 6`` takes milliseconds.  Ties (a value exactly halfway
between two allowed neighbours) go to the neighbour of smaller magnitude,
that is toward zero.  The rounding and overflow modes of ``t`` play no part:
a K-hot value is always the nearest allowed one, and values beyond the range
take the nearest end.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from .format import FixedType
from .functional import FixedLike, _bounds, _check_dtype

__all__ = ["quantize_khot", "khot_codes", "khot_floor_ceil", "csd_digits", "MAX_KHOT_CANDIDATES"]

#: Largest set of allowed codes enumerated for one (type, k); beyond it the request is refused.
MAX_KHOT_CANDIDATES = 1 << 22

# Midpoints of neighbouring codes must be exact in float64: codes below 2**51.
_MAX_KHOT_WIDTH = 52


def csd_digits(code: int) -> int:
    """Number of nonzero digits in the canonical signed-digit form of an integer."""
    code = abs(int(code))
    count = 0
    while code:
        if code & 1:
            count += 1
            code -= 1 if (code & 3) == 1 else -1  # a run of ones becomes +2**j - 1
        code >>= 1
    return count


@functools.lru_cache(maxsize=64)
def _allowed_codes(code_min: int, code_max: int, width: int, k: int) -> np.ndarray:
    """Sorted int64 array of codes in ``[code_min, code_max]`` with at most ``k`` signed digits."""
    if k >= (width + 2) // 2:  # every code of `width` bits has at most this many CSD digits
        count = code_max - code_min + 1
        if count > MAX_KHOT_CANDIDATES:
            return np.empty(0, dtype=np.int64)  # marks "all codes allowed"
        return np.arange(code_min, code_max + 1, dtype=np.int64)
    terms = np.array([s << i for i in range(width + 1) for s in (1, -1)], dtype=np.int64)
    reach = 1 << (width + 1)
    codes = np.zeros(1, dtype=np.int64)
    for _ in range(k):
        grown = (codes[:, None] + terms[None, :]).ravel()
        grown = grown[np.abs(grown) <= reach]  # partial sums beyond twice the range never come back into it
        codes = np.union1d(codes, grown)
        if codes.size > 4 * MAX_KHOT_CANDIDATES:
            raise ValueError(f"K-hot with k={k} on {width} bits allows too many codes to enumerate; "
                             "use a smaller k or width")
    codes = codes[(codes >= code_min) & (codes <= code_max)]
    if codes.size > MAX_KHOT_CANDIDATES:
        raise ValueError(f"K-hot with k={k} on {width} bits allows {codes.size} codes, more than "
                         f"{MAX_KHOT_CANDIDATES}; use a smaller k or width")
    return codes


def _enumerates(width: int, k: int) -> bool:
    """Whether the allowed codes are few enough to list (and list quickly): at most about 2**17 of them."""
    return width <= 16 or (k <= 2 and width <= 40)


_UNREACHABLE = 1 << 62  # "no allowed code on this side" (only for k = 0 above zero)


def khot_floor_ceil(n: np.ndarray, k: int, ceil: bool) -> np.ndarray:
    """For each integer of ``n`` (int64, ``|n| < 2**52``): the largest sum of at most ``k`` terms ``±2**i`` that is
    ``<= n`` (or, with ``ceil``, the smallest ``>= n``).

    With ``2**p <= m < 2**(p+1)`` (``m > 0``), the extreme allowed value has its
    top CSD digit at ``2**p`` or ``2**(p+1)`` (a value whose top digit is lower
    lies below ``2**p * 2/3``, one whose top digit is higher above
    ``2**(p+1) * 4/3``); the remainder is the same question with ``k - 1``
    digits on ``m - 2**p`` (same side) or ``2**(p+1) - m`` (the other side).
    Negative ``n`` mirror: ``floor(n) = -ceil(-n)``.  The questions of one
    depth are answered together over their distinct values (at most a few per
    bit of each element), so the cost is ``k`` passes, never ``2**k``.
    """
    n = np.asarray(n, dtype=np.int64)
    negative = n < 0
    top = (np.abs(n) << 1) | (negative ^ bool(ceil))  # a question: value * 2 + (1 for the smallest >= value)
    levels = [_distinct(top)]
    for _ in range(k):  # the questions of each depth, distinct
        v, side = levels[-1] >> 1, levels[-1] & 1
        v, side, low, high = _split(v[v > 0], side[v > 0])
        levels.append(_distinct(np.concatenate([((v - low) << 1) | side, ((high - v) << 1) | (side ^ 1)])))
    v, side = levels[-1] >> 1, levels[-1] & 1
    answers = np.where((side == 1) & (v > 0), _UNREACHABLE, 0)  # no digit left: only 0 is allowed
    for depth in range(k - 1, -1, -1):  # answer each depth from the one below
        keys, below = levels[depth], levels[depth + 1]
        found = np.zeros(keys.shape, dtype=np.int64)
        live = keys > 1  # value > 0
        v, side, low, high = _split(keys[live] >> 1, keys[live] & 1)
        near = low + answers[np.searchsorted(below, ((v - low) << 1) | side)]
        far = high - answers[np.searchsorted(below, ((high - v) << 1) | (side ^ 1))]
        found[live] = np.where(side == 1, np.minimum(near, far), np.maximum(near, far))
        answers = found
    answer = answers[np.searchsorted(levels[0], top)]
    return np.where(negative, -answer, answer)


def _distinct(a: np.ndarray) -> np.ndarray:
    """The sorted distinct values of ``a`` (a sort: faster here than ``np.unique``'s hashing)."""
    a = np.sort(a, kind="stable")
    return a[np.concatenate(([True], a[1:] != a[:-1]))] if a.size else a


def _split(v: np.ndarray, side: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``v``, ``side`` and the powers of two ``2**p <= v < 2**(p+1)`` around each ``v > 0``."""
    p = np.frexp(v.astype(np.float64))[1].astype(np.int64) - 1  # exact: v < 2**53
    return v, side, np.left_shift(np.int64(1), p), np.left_shift(np.int64(1), p + 1)


def khot_codes(t: FixedLike, k: int) -> torch.Tensor:
    """All codes of ``t`` with at most ``k`` nonzero CSD digits, sorted (int64)."""
    t = FixedType.coerce(t)
    _check_k(t, k)
    codes = _allowed_codes(t.code_min, t.code_max, t.width, k)
    if codes.size == 0:
        raise ValueError(f"every code of {t} has at most {k} digits: there are too many to list")
    return torch.from_numpy(codes.copy())


def _check_k(t: FixedType, k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"K-hot needs an integer k >= 1 (nonzero digits per value), got {k!r}")
    if t.width > _MAX_KHOT_WIDTH:
        raise ValueError(f"K-hot quantization supports widths up to {_MAX_KHOT_WIDTH} bits, got {t}")


def khot_cast_codes(x: torch.Tensor, t: FixedType, k: int, frac_bits=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest K-hot codes of ``x`` (float64) and the mask of elements between the extreme allowed codes.

    ``frac_bits`` overrides ``t.frac_bits`` (a tensor broadcasts: one binary
    point per channel).  The engine under :func:`quantize_khot` and
    :class:`qfx.nn.KHotQuantizer`.
    """
    _check_k(t, k)
    frac_bits = t.frac_bits if frac_bits is None else frac_bits
    if isinstance(frac_bits, torch.Tensor):
        f_lo, f_hi = int(frac_bits.min()), int(frac_bits.max())
        scale = torch.exp2(frac_bits.to(device=x.device, dtype=torch.float64))
    else:
        f_lo = f_hi = int(frac_bits)
        scale = 2.0 ** f_lo
    _check_dtype(x, t, f_lo, f_hi)
    _bounds(x)  # refuses NaN and Inf
    v = x.to(torch.float64) * scale  # float64 holds every midpoint of codes below 2**51
    if k < (t.width + 2) // 2 and not _enumerates(t.width, k):
        return _nearest_by_digits(v, t, k)
    allowed = _allowed_codes(t.code_min, t.code_max, t.width, k)
    if allowed.size == 0:  # every code allowed: nearest, ties toward zero, saturate
        codes = v.abs().sub_(0.5).ceil_().copysign_(v).clamp_(t.code_min, t.code_max)
    else:
        table = torch.from_numpy(allowed).to(device=x.device, dtype=torch.float64)
        upper = torch.searchsorted(table, v).clamp_(1, table.numel() - 1)
        hi, lo = table[upper], table[upper - 1]
        mid = (hi + lo) * 0.5
        # Above the midpoint: upper; below: lower; at it: the one nearer zero.
        take_hi = (v > mid) | ((v == mid) & (hi.abs() < lo.abs()))
        codes = torch.where(take_hi, hi, lo)  # beyond either end, the end itself
    low, high = (t.code_min, t.code_max) if allowed.size == 0 else (float(allowed[0]), float(allowed[-1]))
    inside = (v >= low) & (v <= high)
    return codes, inside


def _nearest_by_digits(v: torch.Tensor, t: FixedType, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`khot_cast_codes` without a table: each value's allowed neighbours from :func:`khot_floor_ceil`."""
    low = int(khot_floor_ceil(np.array([t.code_min]), k, ceil=True)[0])
    high = int(khot_floor_ceil(np.array([t.code_max]), k, ceil=False)[0])
    inside = (v >= low) & (v <= high)
    w = v.detach().clamp(low, high).cpu().numpy()
    below = khot_floor_ceil(np.floor(w).astype(np.int64), k, ceil=False)
    above = khot_floor_ceil(np.ceil(w).astype(np.int64), k, ceil=True)
    mid = (below + above) * 0.5  # exact: codes below 2**51
    take_above = (w > mid) | ((w == mid) & (np.abs(above) < np.abs(below)))
    codes = torch.from_numpy(np.where(take_above, above, below).astype(np.float64)).to(v.device)
    return codes, inside


class _KHotCast(torch.autograd.Function):
    """Forward: nearest K-hot value.  Backward: straight-through inside the range, 0 outside."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, t: FixedType, k: int) -> torch.Tensor:
        codes, inside = khot_cast_codes(x.detach(), t, k)
        ctx.save_for_backward(inside)
        return codes.mul_(t.lsb).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None


def quantize_khot(x: torch.Tensor, t: FixedLike, k: int) -> torch.Tensor:
    """Nearest value of ``t`` whose code has at most ``k`` nonzero CSD digits.

    Forward:  ``q = c * 2**-F`` with ``c`` the allowed code nearest to
    ``x * 2**F`` (ties toward zero; beyond the range, the nearest end).
    Backward: ``dq/dx = 1`` inside ``[t.min, t.max]``, ``0`` outside.
    ``x``'s dtype is kept (float32 up to 24 bits, float64 up to 52).
    """
    t = FixedType.coerce(t)
    return _KHotCast.apply(x, t, k)
