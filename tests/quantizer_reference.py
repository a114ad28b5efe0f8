"""The learned binary point's documented int-bits gradient, recomputed by hand from ``FixedType`` alone.

Shared by the quantizer tests; nothing here calls the code under test.
"""

from __future__ import annotations

import math

import torch

import qfx
from qfx import FixedType

LN2 = math.log(2.0)
#: The factor ``s**-STEP_POWER`` on the int-bits gradient, as documented in qfx.autograd.
STEP_POWER = 1.5


def code_range(t: FixedType) -> tuple[int, int]:
    """Smallest and largest integer code of ``t``, from its width and signedness only."""
    if t.signed:
        return -(1 << (t.width - 1)), (1 << (t.width - 1)) - 1
    return 0, (1 << t.width) - 1


def in_range_after_rounding(x: torch.Tensor, t: FixedType, int_bits: torch.Tensor) -> torch.Tensor:
    """1 where the rounded code of ``x`` (TRN or RND) lies in ``t``'s code range: the mask ``in(x)``."""
    step = torch.exp2(int_bits.double() - t.width)
    v = x.double() / step  # exact: a power of two
    if t.rounding is qfx.Rounding.TRN:
        codes = torch.floor(v)
    elif t.rounding is qfx.Rounding.RND:
        codes = torch.floor(v + 0.5)
    else:
        raise NotImplementedError(t.rounding)
    lo, hi = code_range(t)
    return (codes >= lo) & (codes <= hi)


def expected_int_bits_grad(x: torch.Tensor, q: torch.Tensor, dl_dq: torch.Tensor, t: FixedType,
                           int_bits: torch.Tensor, reduce_dims: list[int]) -> torch.Tensor:
    """The documented gradient, by hand.

    ``dL/dI = s**-STEP_POWER * sum dL/dq * dq/dI`` with ``s = 2**(round(I) - W)`` and
    ``dq/dI = ln 2 * (q - x)`` where ``x`` is in range after rounding,
    ``ln 2 * clamp(x, min, max)`` where it is not.  ``int_bits`` is already
    rounded and shaped to broadcast against ``x``; the sum runs over
    ``reduce_dims`` (every dimension but the channel one).
    """
    x, q, dl_dq = x.double(), q.double(), dl_dq.double()
    step = torch.exp2(int_bits.double() - t.width)
    lo, hi = code_range(t)
    inside = in_range_after_rounding(x, t, int_bits)
    saturated = torch.minimum(torch.maximum(x, lo * step), hi * step)
    dq_di = LN2 * torch.where(inside, q - x, saturated)
    total = (dl_dq * dq_di).sum(dim=reduce_dims, keepdim=True)
    return total * step ** -STEP_POWER
