"""Quantizer modules (:mod:`qfx.nn.quantizers`): the learned binary point.

What must hold:

* training: an 8-bit quantizer minimising ``mean((q(x) - x)**2)`` with Adam
  moves its binary point to the balance of rounding noise and clipping
  (5 integer bits for data in [-10, 10], 1 for data in [-1, 1]), per tensor
  and per channel, on fixed data and on data resampled every step;
* the gradient to the integer bits is the documented formula of
  :class:`qfx.autograd._LearnedIntBitsCast`, recomputed here by hand;
* forward passes equal :func:`qfx.quantize` / :func:`qfx.quantize_khot` with
  :attr:`fixed_type` exactly;
* ``freeze`` stops learning, and the range stops a learned binary point.

State, limits, errors and the optimizer's steps are in ``test_quantizers_state.py``.

Training runs are few and short (400 steps on 1024 values) so the file stays quick.
"""

from __future__ import annotations

import functools
from typing import Callable

import pytest
import torch

import qfx
from qfx import FixedType
from qfx.nn import FixedQuantizer, KHotQuantizer
from qfx.nn.quantizers import STEP_SCALE

from quantizer_reference import STEP_POWER, expected_int_bits_grad, in_range_after_rounding

N_SAMPLES = 1024
STEPS = 400
LR = 0.05 / STEP_SCALE  # Adam's step of about LR moves a binary point 0.05 bits


# ----------------------------------------------------------------- helpers

def uniform(gen: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    """``n`` float32 values uniform in ``[low, high]``."""
    return torch.rand(n, generator=gen) * (high - low) + low


def two_columns(gen: torch.Generator, n: int) -> torch.Tensor:
    """Shape ``(n, 2)``: column 0 uniform in [-10, 10], column 1 uniform in [-1, 1]."""
    return torch.stack([uniform(gen, n, -10, 10), uniform(gen, n, -1, 1)], dim=1)


def data_source(sample: Callable[[torch.Generator, int], torch.Tensor], seed: int,
                resample: bool) -> Callable[[], torch.Tensor]:
    """A batch provider: the same seeded batch every call, or a fresh one each call."""
    gen = torch.Generator().manual_seed(seed)
    fixed = sample(gen, N_SAMPLES)
    return (lambda: sample(gen, N_SAMPLES)) if resample else (lambda: fixed)


def train_binary_point(q: torch.nn.Module, batches: Callable[[], torch.Tensor], steps: int = STEPS,
                       optimizer: torch.optim.Optimizer | None = None) -> torch.nn.Module:
    """Minimise ``mean((q(x) - x)**2)`` over the quantizer's parameters with Adam (lr 0.05)."""
    opt = optimizer if optimizer is not None else torch.optim.Adam(q.parameters(), lr=LR)
    for _ in range(steps):
        x = batches()
        loss = ((q(x) - x) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return q


@functools.lru_cache(maxsize=None)
def min_signed_digits(n: int) -> int:
    """Minimal number of nonzero digits in {-1, 0, 1} with ``n = sum d_i 2**i`` (recurrence on the lowest digit)."""
    n = abs(n)
    if n <= 1:
        return n
    if n % 2 == 0:
        return min_signed_digits(n // 2)
    return 1 + min(min_signed_digits((n - 1) // 2), min_signed_digits((n + 1) // 2))


def codes_in(q: torch.Tensor, int_bits: int, width: int) -> list[int]:
    """Integer codes ``q * 2**(W - I)``, checking they are whole numbers."""
    scaled = torch.ldexp(q.double(), torch.tensor(width - int_bits))
    assert torch.equal(scaled, scaled.round())
    return [int(c) for c in scaled.tolist()]


def implied_step_power(grad: torch.Tensor, expected: torch.Tensor, int_bits: torch.Tensor, width: int) -> list[float]:
    """The exponent p with ``grad = expected * s**(STEP_POWER - p)``: for a readable failure message."""
    step = torch.exp2(int_bits.double() - width).flatten()
    ratio = (grad.double().flatten() / expected.flatten())
    return (STEP_POWER - torch.log2(ratio) / torch.log2(step)).tolist()


# ------------------------------------------------- learned binary point

SEEDS_AND_MODES = [(0, False), (1, True), (2, False), (3, True)]
seeds_and_modes = pytest.mark.parametrize("seed,resample", SEEDS_AND_MODES,
                                          ids=[f"seed{s}-{'resampled' if r else 'fixed'}" for s, r in SEEDS_AND_MODES])


@seeds_and_modes
def test_learned_binary_point_grows_to_fit_the_data(seed, resample):
    """From ap_fixed<8,1> on data uniform in [-10, 10] the binary point moves out to 5 integer bits."""
    q = FixedQuantizer(FixedType(8, 1), learn_int_bits=True)
    train_binary_point(q, data_source(lambda g, n: uniform(g, n, -10, 10), seed, resample))
    assert q.fixed_type == FixedType(8, 5), q.int_bits


@seeds_and_modes
def test_learned_binary_point_shrinks_to_fit_the_data(seed, resample):
    """From ap_fixed<8,7> on data uniform in [-1, 1] the binary point moves in to 1 integer bit (2 accepted)."""
    q = FixedQuantizer(FixedType(8, 7), learn_int_bits=True)
    train_binary_point(q, data_source(lambda g, n: uniform(g, n, -1, 1), seed, resample))
    assert q.fixed_type in (FixedType(8, 1), FixedType(8, 2)), q.int_bits


@pytest.mark.parametrize("seed,resample", [(0, False), (1, True)], ids=["seed0-fixed", "seed1-resampled"])
def test_learned_binary_point_per_channel(seed, resample):
    """Per channel (dim 1): column 0 in [-10, 10] learns 5 integer bits, column 1 in [-1, 1] learns 1."""
    q = FixedQuantizer(FixedType(8, 3), learn_int_bits=True, granularity="channel", channel_dim=1)
    train_binary_point(q, data_source(two_columns, seed, resample))
    assert q.fixed_type == [FixedType(8, 5), FixedType(8, 1)], q.int_bits


def test_optimizer_created_before_lazy_channels_are_sized():
    """The optimizer may hold the still uninitialised per-channel parameter; training works."""
    q = FixedQuantizer(FixedType(8, 3), learn_int_bits=True, granularity="channel", channel_dim=1)
    opt = torch.optim.Adam(q.parameters(), lr=LR)
    train_binary_point(q, data_source(two_columns, 4, True), optimizer=opt)
    assert q.int_bits.shape == (2,)
    assert q.fixed_type == [FixedType(8, 5), FixedType(8, 1)], q.int_bits


def test_khot_learned_binary_point_is_sensible():
    """KHotQuantizer (k=2) on data in [-10, 10] learns a binary point within 1 of FixedQuantizer's,
    and its outputs have at most 2 signed digits."""
    batches = data_source(lambda g, n: uniform(g, n, -10, 10), 5, False)
    plain = train_binary_point(FixedQuantizer(FixedType(8, 1), learn_int_bits=True), batches)
    khot = train_binary_point(KHotQuantizer(FixedType(8, 1), 2, learn_int_bits=True), batches)
    assert abs(khot.fixed_type.int_bits - plain.fixed_type.int_bits) <= 1, (khot.int_bits, plain.int_bits)
    x = batches()
    out = khot(x)
    t = khot.fixed_type
    assert all(min_signed_digits(c) <= 2 for c in codes_in(out, t.int_bits, t.width))
    assert torch.equal(out, qfx.quantize_khot(x, t, 2))


# ------------------------------------------------ the int-bits gradient

TENSOR_GRAD_TYPES = [FixedType(8, 2), FixedType(6, 1, rounding="RND", overflow="SAT"),
                     FixedType(8, 3, signed=False, overflow="SAT"), FixedType(7, -1, overflow="WRAP")]


@pytest.mark.parametrize("t", TENSOR_GRAD_TYPES, ids=str)
@pytest.mark.parametrize("start", [None, 0.3, -0.4])
def test_int_bits_gradient_per_tensor(t, start):
    """dL/dI (and dL/dx) of a learned per-tensor binary point match the documented formula."""
    gen = torch.Generator().manual_seed(11)
    q = FixedQuantizer(t, learn_int_bits=True)
    if start is not None:  # a non-integer parameter: the forward pass rounds it
        q.set_int_bits(t.int_bits + start)
    x = (torch.randn(300, dtype=torch.float64, generator=gen) * 2.0 ** t.int_bits).requires_grad_()
    weights = torch.randn(300, dtype=torch.float64, generator=gen)
    out = q(x)
    (out * weights).sum().backward()

    rounded = torch.round(q.int_bits.detach())
    inside = in_range_after_rounding(x.detach(), t, rounded)
    assert inside.any() and not inside.all(), "the data should exercise both branches"
    expected = expected_int_bits_grad(x.detach(), out.detach(), weights, t, rounded, reduce_dims=[0])
    torch.testing.assert_close((q.int_bits_move.grad * STEP_SCALE).double().reshape(()), expected.reshape(()), rtol=1e-6, atol=0,
                               msg=lambda m: f"{m}\nimplied step power: "
                                             f"{implied_step_power((q.int_bits_move.grad * STEP_SCALE), expected, rounded, t.width)}")
    assert torch.equal(x.grad, torch.where(inside, weights, torch.zeros_like(weights)))


@pytest.mark.parametrize("t", [FixedType(8, 2), FixedType(6, 0, rounding="RND", overflow="SAT")], ids=str)
@pytest.mark.parametrize("channel_dim", [1, -1])
def test_int_bits_gradient_per_channel(t, channel_dim):
    """Per-channel gradients: the formula summed over every element of each channel."""
    gen = torch.Generator().manual_seed(12)
    shape = (6, 3, 5) if channel_dim == 1 else (6, 5, 3)
    q = FixedQuantizer(t, learn_int_bits=True, granularity="channel", channel_dim=channel_dim, num_channels=3)
    q.set_int_bits(torch.tensor([t.int_bits - 1.2, t.int_bits + 0.2, t.int_bits + 2.4]))
    view = [1, 1, 1]
    view[channel_dim] = 3
    spread = torch.tensor([0.5, 2.0, 8.0], dtype=torch.float64).view(view) * 2.0 ** t.int_bits
    x = (torch.randn(shape, dtype=torch.float64, generator=gen) * spread).requires_grad_()
    weights = torch.randn(shape, dtype=torch.float64, generator=gen)
    out = q(x)
    (out * weights).sum().backward()

    rounded = torch.round(q.int_bits.detach()).view(view)
    reduce_dims = [d for d in range(3) if d != channel_dim % 3]
    expected = expected_int_bits_grad(x.detach(), out.detach(), weights, t, rounded, reduce_dims)
    assert (q.int_bits_move.grad * STEP_SCALE).shape == (3,)
    torch.testing.assert_close((q.int_bits_move.grad * STEP_SCALE).double(), expected.flatten(), rtol=1e-6, atol=0,
                               msg=lambda m: f"{m}\nimplied step power per channel: "
                                             f"{implied_step_power((q.int_bits_move.grad * STEP_SCALE), expected, rounded, t.width)}")
    inside = in_range_after_rounding(x.detach(), t, rounded)
    assert torch.equal(x.grad, torch.where(inside, weights, torch.zeros_like(weights)))


# ----------------------------------------------------- forward = quantize

FORWARD_TYPES = [FixedType(8, 3), FixedType(8, 3, rounding="RND_CONV", overflow="SAT"),
                 FixedType(10, 0, signed=False, rounding="RND", overflow="SAT_SYM"),
                 FixedType(6, 2, overflow="WRAP", sat_bits=2), FixedType(12, 12, overflow="WRAP_SM")]


@pytest.mark.parametrize("t", FORWARD_TYPES, ids=str)
@pytest.mark.parametrize("learn", [False, True], ids=["buffer", "learned"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_equals_quantize_per_tensor(t, learn, dtype):
    gen = torch.Generator().manual_seed(3)
    q = FixedQuantizer(t, learn_int_bits=learn)
    for int_bits in (t.int_bits, t.int_bits - 2, t.int_bits + 3):
        q.set_int_bits(int_bits)
        x = (torch.randn(4, 50, generator=gen) * 2.0 ** int_bits).to(dtype).requires_grad_()
        out = q(x)
        assert out.dtype == dtype
        assert q.fixed_type == t.replace(int_bits=int_bits)
        x_ref = x.detach().clone().requires_grad_()
        ref = qfx.quantize(x_ref, q.fixed_type)
        assert torch.equal(out, ref)
        out.sum().backward()
        ref.sum().backward()
        assert torch.equal(x.grad, x_ref.grad)


@pytest.mark.parametrize("t", FORWARD_TYPES[:3], ids=str)
@pytest.mark.parametrize("learn", [False, True], ids=["buffer", "learned"])
@pytest.mark.parametrize("channel_dim", [0, 2, -1])
def test_forward_equals_quantize_per_channel(t, learn, channel_dim):
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(3, 4, 5, generator=gen, dtype=torch.float64) * 16
    channels = x.shape[channel_dim]
    q = FixedQuantizer(t, learn_int_bits=learn, granularity="channel", channel_dim=channel_dim)
    q.set_int_bits(torch.arange(channels, dtype=torch.float32) - 1 + t.int_bits)
    out = q(x)
    types = q.fixed_type
    assert types == [t.replace(int_bits=t.int_bits - 1 + c) for c in range(channels)]
    for c in range(channels):
        assert torch.equal(out.select(channel_dim, c), qfx.quantize(x.select(channel_dim, c), types[c])), c


@pytest.mark.parametrize("learn", [False, True], ids=["buffer", "learned"])
def test_khot_forward_equals_quantize_khot(learn):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(40, 3, generator=gen, dtype=torch.float64) * 6
    q = KHotQuantizer(FixedType(8, 3, rounding="RND", overflow="SAT"), 2, learn_int_bits=learn)
    assert torch.equal(q(x), qfx.quantize_khot(x, q.fixed_type, 2))
    qc = KHotQuantizer(FixedType(8, 3), 2, learn_int_bits=learn, granularity="channel", channel_dim=1)
    qc.set_int_bits([1, 3, 5])
    out = qc(x)
    for c, t in enumerate(qc.fixed_type):
        assert torch.equal(out[:, c], qfx.quantize_khot(x[:, c], t, 2)), c
        assert all(min_signed_digits(code) <= 2 for code in codes_in(out[:, c], t.int_bits, t.width))


# --------------------------------------------------------------- freeze

def test_freeze_stops_learning_per_tensor():
    batches = data_source(lambda g, n: uniform(g, n, -10, 10), 6, True)
    q = FixedQuantizer(FixedType(8, 1), learn_int_bits=True)
    opt = torch.optim.Adam(q.parameters(), lr=LR)
    train_binary_point(q, batches, steps=60, optimizer=opt)
    before = q.fixed_type
    assert before != FixedType(8, 1), "some learning should have happened"
    q.freeze()
    assert not q.learn_int_bits
    assert list(q.parameters()) == []
    assert "int_bits" in dict(q.named_buffers())
    assert list(q.state_dict()) == ["int_bits"]
    assert not q.int_bits.requires_grad
    assert q.int_bits.item() == before.int_bits  # rounded
    for _ in range(20):  # further steps with the old optimizer: nothing may move
        x = batches().requires_grad_()
        out = q(x)
        assert torch.equal(out, qfx.quantize(x.detach(), before))
        opt.zero_grad()
        ((out - x) ** 2).mean().backward()
        opt.step()
        assert x.grad is not None  # the straight-through gradient to x remains
    assert not hasattr(q, "int_bits_move")
    assert q.fixed_type == before
    assert q.int_bits.item() == before.int_bits


def test_freeze_per_channel_keeps_each_channel():
    q = FixedQuantizer(FixedType(8, 3), learn_int_bits=True, granularity="channel", channel_dim=1)
    train_binary_point(q, data_source(two_columns, 7, False), steps=60)
    before = q.fixed_type
    q.freeze()
    assert q.fixed_type == before
    assert q.int_bits.tolist() == [float(t.int_bits) for t in before]
    assert list(q.parameters()) == [] and "int_bits" in q.state_dict()
    x = two_columns(torch.Generator().manual_seed(0), 32)
    out = q(x)
    for c in range(2):
        assert torch.equal(out[:, c], qfx.quantize(x[:, c], before[c]))


def test_freeze_khot():
    q = KHotQuantizer(FixedType(8, 2), 2, learn_int_bits=True)
    q.set_int_bits(3.4)
    q.freeze()
    assert q.fixed_type == FixedType(8, 3) and list(q.parameters()) == []
    x = torch.linspace(-9, 9, 101, dtype=torch.float64)
    assert torch.equal(q(x), qfx.quantize_khot(x, FixedType(8, 3), 2))


def test_learned_int_bits_stay_in_range():
    """Data far beyond the range pushes the binary point out; the range stops it."""
    q = FixedQuantizer(FixedType(8, 1), learn_int_bits=True, int_bits_range=(-1, 3))
    train_binary_point(q, data_source(lambda g, n: uniform(g, n, -1000, 1000), 8, False), steps=60)
    assert q.fixed_type == FixedType(8, 3)
    assert q.int_bits.item() <= 3 + 2 * LR  # clamped before each forward, then one Adam step (about lr)
    assert q.effective_int_bits().item() == 3.0
