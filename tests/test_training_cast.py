"""The training-mode cast saturating_cast_codes gives cast_codes's values and range mask, and the same gradients.

(The fused nearest-even cast has its own tests, in test_fused.py.)"""

from __future__ import annotations

import pytest
import torch

from qfx.autograd import fixed_cast, learned_int_bits_cast
from qfx.format import FixedType, Rounding
from qfx.functional import cast_codes, in_range_grad, saturating_cast_codes


def _values(t: FixedType, dtype: torch.dtype) -> torch.Tensor:
    """Values in and far beyond the range, every half-LSB tie near the ends, huge and tiny magnitudes."""
    g = torch.Generator().manual_seed(0)
    lsb = 2.0 ** -t.frac_bits
    ends = torch.arange(-6, 7, dtype=dtype) * 0.5 * lsb
    return torch.cat([
        torch.randn(4000, generator=g, dtype=dtype) * 2.0 ** (t.int_bits + 1),
        t.min + ends, t.max + ends, ends,
        torch.tensor([1e30, -1e30, 3e38, -3e38, 1e-30, -1e-30, 0.0, -0.0], dtype=dtype),
    ])


@pytest.mark.parametrize("rounding", [r.value for r in Rounding])
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("width,int_bits", [(8, 3), (1, 0), (12, -2), (23, 4), (6, 9)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_codes_and_mask_equal_cast_codes(rounding: str, signed: bool, width: int, int_bits: int,
                                         dtype: torch.dtype) -> None:
    t = FixedType(width, int_bits, signed=signed, rounding=rounding, overflow="SAT")
    x = _values(t, dtype)
    for frac_bits in (None, torch.tensor(float(width - int_bits + 2)), torch.tensor([float(width - int_bits)])):
        fast = saturating_cast_codes(x, t, frac_bits)
        if fast is None:  # the one fall-back these formats can hit: TRN with a negative binary point
            assert rounding == "TRN" and int(t.width - int_bits if frac_bits is None else frac_bits.min()) < 0
            continue
        codes, rounded = fast
        expected, inside = cast_codes(x, t, frac_bits, need_mask=True)
        assert torch.equal(codes, expected)
        in_range = in_range_grad(torch.ones_like(x), rounded, t) == 1
        assert torch.equal(in_range, torch.ones_like(in_range) if inside is None else inside)


def test_falls_back_where_the_shortcuts_do_not_hold() -> None:
    x = torch.randn(10)
    assert saturating_cast_codes(x, FixedType(8, 3, overflow="WRAP")) is None
    assert saturating_cast_codes(x, FixedType(24, 3, overflow="SAT")) is None  # as wide as float32's mantissa
    assert saturating_cast_codes(x, FixedType(8, 10, rounding="TRN", overflow="SAT")) is None  # F < 0 with TRN
    assert saturating_cast_codes(x.double(), FixedType(24, 3, overflow="SAT")) is not None
    assert saturating_cast_codes(x, FixedType(8, 10, rounding="RND", overflow="SAT")) is not None


@pytest.mark.parametrize("rounding", ["RND_CONV", "RND"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_training_gradients_match_the_exact_path(per_channel: bool, rounding: str) -> None:
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(8, 4, 5, 5, generator=g) * 3).requires_grad_()
    int_bits = (torch.tensor([1.2, 2.0, 0.4, 3.0]) if per_channel else torch.tensor(1.3)).requires_grad_()
    view = (1, 4, 1, 1) if per_channel else None
    t = FixedType(6, 1, rounding=rounding, overflow="SAT")
    upstream = torch.randn(8, 4, 5, 5, generator=g)
    results = []
    for training in (False, True):
        x.grad = int_bits.grad = None
        y = learned_int_bits_cast(x, int_bits, t, view, training=training)
        (y * upstream).sum().backward()
        results.append((y.detach(), x.grad.clone(), int_bits.grad.clone()))
    (y0, gx0, gi0), (y1, gx1, gi1) = results
    assert torch.equal(y0, y1) and torch.equal(gx0, gx1)
    assert torch.allclose(gi0, gi1, rtol=1e-5, atol=1e-3)  # summation order differs

    x.grad = None
    fixed_cast(x, t, training=True).mul(upstream).sum().backward()
    inside = cast_codes(x.detach(), t, need_mask=True)[1]
    assert torch.equal(x.grad, upstream * inside)
