"""The fused training cast beyond AP_RND_CONV/AP_SAT: every pair of RND_CONV/TRN/RND rounding and
SAT/SAT_ZERO/SAT_SYM/WRAP overflow (WRAP also with saturation bits), signed and unsigned, float32 and float64.

Values against the independent rational reference (tests/reference_fixed.py); the input gradient against
the range mask that reference gives; the binary point's gradient against the exact learned cast
(``learned_int_bits_cast`` outside training mode, which composes ``cast_codes`` and its mask)."""

from __future__ import annotations

import itertools

import pytest
import torch

import qfx
from qfx import fused
from qfx.autograd import fused_training_cast, learned_int_bits_cast
from qfx.format import FixedType
from qfx.fused import native

import reference_fixed as ref

ROUNDINGS = ("RND_CONV", "TRN", "RND")
OVERFLOWS = (("SAT", 0), ("SAT_ZERO", 0), ("SAT_SYM", 0), ("WRAP", 0), ("WRAP", 2))


def _inputs(t: FixedType, frac_bits: int, dtype: torch.dtype) -> torch.Tensor:
    """Random values in and beyond the range, every tie and code near the ends, zeros of both signs."""
    g = torch.Generator().manual_seed(t.width + 10 * t.int_bits)
    lsb = 2.0 ** -frac_bits
    ends = torch.arange(-5, 6, dtype=dtype) * 0.5 * lsb
    random = torch.randn(160, generator=g, dtype=dtype) * 2.0 ** (t.width - frac_bits)
    return torch.cat([random, t.code_min * lsb + ends, t.code_max * lsb + ends, ends,
                      torch.tensor([0.3 * lsb, -0.3 * lsb, 1e4, -1e4, 1e-30, 0.0, -0.0], dtype=dtype)])


def _reference(r: torch.Tensor, t: FixedType, frac_bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference values of ``t`` at ``frac_bits`` and where each code lay in range."""
    int_bits = t.width - frac_bits
    values, inside = [], []
    for value in r.tolist():
        v = ref.scaled(value, frac_bits)
        code = ref.round_code(v, t.rounding.value)
        inside.append(not ref.overflowed(code, t.width, t.signed, t.overflow.value))
        values.append(ref.ap_fixed_code(value, t.width, int_bits, t.signed, t.rounding.value, t.overflow.value,
                                        t.sat_bits) * 2.0 ** -frac_bits)
    return torch.tensor(values, dtype=r.dtype), torch.tensor(inside)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("rounding,overflow", list(itertools.product(ROUNDINGS, OVERFLOWS)))
def test_every_mode_pair_equals_the_reference(rounding: str, overflow: tuple[str, int], signed: bool,
                                              dtype: torch.dtype) -> None:
    assert native.library() is not None, "the fused kernels did not build (is g++ installed?)"
    mode, sat_bits = overflow
    t = FixedType(7, 3, signed=signed, rounding=rounding, overflow=mode, sat_bits=sat_bits)
    x = _inputs(t, t.frac_bits, dtype).reshape(-1, 4, 1)  # 4 channels along dimension 1, runs of 1
    g = torch.Generator().manual_seed(3)
    scale = (torch.rand(4, generator=g, dtype=dtype) * 1.5 + 0.25)
    shift = torch.randn(4, generator=g, dtype=dtype) * 2.0 ** (t.int_bits - 2)
    upstream = torch.randn(x.shape, generator=g, dtype=dtype)
    view = (1, 4, 1)
    for relu, affine in [(False, False), (True, False), (False, True), (True, True)]:
        xs = x.clone().requires_grad_()
        bits = torch.tensor(t.int_bits + 0.3, requires_grad=True)
        s, sh = (scale.clone().requires_grad_(), shift.clone().requires_grad_()) if affine else (None, None)
        y = fused_training_cast(xs, t, bits, scale=s, shift=sh, relu=relu)
        assert y is not None and type(y.grad_fn).__name__ == "_FusedCastBackward"
        (y * upstream).sum().backward()

        v = x * scale.view(view) + shift.view(view) if affine else x
        r = torch.relu(v) if relu else v
        expected, inside = _reference(r.flatten(), t, t.frac_bits)
        assert torch.equal(y.detach().flatten(), expected), (relu, affine)
        kept = upstream * inside.view(x.shape) * ((v > 0) if relu else 1)
        assert torch.equal(xs.grad, kept * scale.view(view) if affine else kept), (relu, affine)
        if affine:
            torch.testing.assert_close(s.grad, (kept.double() * x.double()).sum((0, 2)).to(dtype), rtol=1e-5,
                                       atol=1e-4)
            torch.testing.assert_close(sh.grad, kept.double().sum((0, 2)).to(dtype), rtol=1e-5, atol=1e-4)

        # The binary point's gradient: the exact learned cast of r, outside training mode.
        exact_bits = bits.detach().clone().requires_grad_()
        (learned_int_bits_cast(r, exact_bits, t) * upstream).sum().backward()
        torch.testing.assert_close(bits.grad, exact_bits.grad, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("rounding,overflow", [("TRN", "WRAP"), ("RND", "SAT_SYM"), ("RND_CONV", "SAT_ZERO")])
def test_binary_point_per_channel(rounding: str, overflow: str) -> None:
    """One row per channel: values and each channel's binary-point gradient as the exact learned cast."""
    assert native.library() is not None
    g = torch.Generator().manual_seed(7)
    t = FixedType(6, 1, rounding=rounding, overflow=overflow)
    int_bits = (torch.arange(5, dtype=torch.float32) % 4 - 1.2).requires_grad_()
    x = (torch.randn(3, 5, 8, generator=g) * 4).requires_grad_()
    upstream = torch.randn(x.shape, generator=g)
    y = fused_training_cast(x, t, int_bits, 1)
    assert type(y.grad_fn).__name__ == "_FusedCastBackward"
    (y * upstream).sum().backward()

    exact_x, exact_bits = x.detach().clone().requires_grad_(), int_bits.detach().clone().requires_grad_()
    expected = learned_int_bits_cast(exact_x, exact_bits, t, (1, 5, 1))
    (expected * upstream).sum().backward()
    assert torch.equal(y.detach(), expected.detach())
    assert torch.equal(x.grad, exact_x.grad)
    torch.testing.assert_close(int_bits.grad, exact_bits.grad, rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize("overflow", ["WRAP", "SAT_ZERO"])
def test_values_left_to_the_exact_cast(overflow: str) -> None:
    """Outside SAT, NaN, infinities and values the exact cast folds first are left to it: the quantizer still
    gives its values (or its error)."""
    t = FixedType(8, 3, rounding="TRN", overflow=overflow)
    p = fused.fixed_table(t, 5, torch.float32)
    assert fused.cast_forward(torch.tensor([1.0, 3e38]), p) is None
    assert fused.cast_forward(torch.tensor([1.0, float("nan")]), p) is None
    assert fused.cast_forward(torch.tensor([1.0, 2.0]), p) is not None
    q = qfx.nn.FixedQuantizer(t, learn_int_bits=True).train()
    x = torch.tensor([1.0, 3e38, -1e20, 2.5])
    assert torch.equal(q(x), qfx.quantize(x, t))
    with pytest.raises(ValueError, match="NaN"):
        q(torch.tensor([1.0, float("nan")]))


def test_tables_decline_what_the_kernels_do_not_take() -> None:
    f32 = torch.float32
    assert fused.fixed_table(FixedType(8, 3, rounding="RND_ZERO", overflow="SAT"), 5, f32) is None
    assert fused.fixed_table(FixedType(8, 3, rounding="TRN", overflow="WRAP_SM"), 5, f32) is None
    assert fused.fixed_table(FixedType(8, 10, rounding="TRN", overflow="WRAP"), -2, f32) is None  # F < 0 with TRN
    assert fused.fixed_table(FixedType(24, 3, rounding="RND", overflow="WRAP"), 21, f32) is None  # the mantissa
    assert fused.fixed_table(FixedType(24, 3, rounding="RND", overflow="WRAP"), 21, torch.float64) is not None
    assert fused.fixed_table(FixedType(8, 10, rounding="RND", overflow="WRAP"), -2, f32) is not None


@pytest.mark.parametrize("rounding,overflow", [("TRN", "WRAP"), ("RND", "SAT_SYM")])
def test_quantized_layers_take_the_fused_cast(rounding: str, overflow: str) -> None:
    """A learned quantizer of these modes trains through the fused cast, with the exact cast's values."""
    t = FixedType(8, 2, rounding=rounding, overflow=overflow)
    q = qfx.nn.FixedQuantizer(t, learn_int_bits=True).train()
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 3
    y = q(x)
    assert type(y.grad_fn).__name__ == "_FusedCastBackward"
    assert torch.equal(y.detach(), qfx.quantize(x, t))
