"""Quantizer modules (:mod:`qfx.nn.quantizers`): the learned binary point and the module state.

What must hold:

* training: an 8-bit quantizer minimising ``mean((q(x) - x)**2)`` with Adam
  moves its binary point to the balance of rounding noise and clipping
  (5 integer bits for data in [-10, 10], 1 for data in [-1, 1]), per tensor
  and per channel, on fixed data and on data resampled every step;
* the gradient to the integer bits is the documented formula of
  :class:`qfx.autograd._LearnedIntBitsCast`, recomputed here by hand;
* forward passes equal :func:`qfx.quantize` / :func:`qfx.quantize_khot` with
  :attr:`fixed_type` exactly;
* ``freeze``, ``set_int_bits``, ``int_bits_range``, state_dict round trips and
  the error messages.

Training runs are few and short (400 steps on 1024 values) so the file stays quick.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import pytest
import torch

import qfx
from qfx import FixedType
from qfx.nn import FixedQuantizer, KHotQuantizer
from qfx.nn.quantizers import STEP_SCALE

LN2 = math.log(2.0)
#: The factor ``s**-STEP_POWER`` on the int-bits gradient, as documented in qfx.autograd.
STEP_POWER = 1.5
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


# ----------------------------------------------------------- state_dict

def save_and_load(state: dict, path) -> dict:
    """Round trip through ``torch.save`` / ``torch.load(weights_only=True)``."""
    torch.save(state, path)
    return torch.load(path, weights_only=True)


def test_state_dict_round_trip_per_tensor(tmp_path):
    q = FixedQuantizer(FixedType(8, 1), learn_int_bits=True)
    q.set_int_bits(4.3)
    loaded = save_and_load(q.state_dict(), tmp_path / "q.pt")
    fresh = FixedQuantizer(FixedType(8, 1), learn_int_bits=True)
    fresh.load_state_dict(loaded)
    assert fresh.int_bits.item() == pytest.approx(4.3)
    assert fresh.fixed_type == FixedType(8, 4)
    assert isinstance(fresh.int_bits_move, torch.nn.Parameter) and "int_bits" in dict(fresh.named_buffers())
    x = torch.linspace(-20, 20, 77)
    assert torch.equal(fresh(x), q(x))


def test_state_dict_round_trip_per_channel(tmp_path):
    q = FixedQuantizer(FixedType(8, 3), learn_int_bits=True, granularity="channel", channel_dim=1, num_channels=2)
    q.set_int_bits([5, 1])
    loaded = save_and_load(q.state_dict(), tmp_path / "q.pt")
    fresh = FixedQuantizer(FixedType(8, 3), learn_int_bits=True, granularity="channel", channel_dim=1, num_channels=2)
    fresh.load_state_dict(loaded)
    assert fresh.fixed_type == [FixedType(8, 5), FixedType(8, 1)]


def test_state_dict_round_trip_into_a_lazy_quantizer(tmp_path):
    """A quantizer built like the one saved (channel count from the first input) loads its state."""
    q = FixedQuantizer(FixedType(8, 3), learn_int_bits=True, granularity="channel", channel_dim=1)
    q(torch.zeros(4, 2))
    q.set_int_bits([5, 1])
    loaded = save_and_load(q.state_dict(), tmp_path / "q.pt")
    fresh = FixedQuantizer(FixedType(8, 3), learn_int_bits=True, granularity="channel", channel_dim=1)
    fresh.load_state_dict(loaded)
    assert fresh.fixed_type == [FixedType(8, 5), FixedType(8, 1)]


def test_state_dict_of_a_frozen_quantizer(tmp_path):
    """A frozen quantizer keeps the key ``int_bits``; its state loads into a fixed (buffer) quantizer."""
    q = FixedQuantizer(FixedType(8, 1), learn_int_bits=True)
    q.set_int_bits(5.2)
    q.freeze()
    loaded = save_and_load(q.state_dict(), tmp_path / "q.pt")
    assert list(loaded) == ["int_bits"]
    fixed = FixedQuantizer(FixedType(8, 1))
    fixed.load_state_dict(loaded)
    assert fixed.fixed_type == FixedType(8, 5)
    learned = FixedQuantizer(FixedType(8, 1), learn_int_bits=True)
    learned.load_state_dict(loaded)
    assert learned.fixed_type == FixedType(8, 5)


# ------------------------------------------------- set_int_bits and range

def test_set_int_bits():
    q = FixedQuantizer(FixedType(8, 3))
    q.set_int_bits(4)
    assert q.fixed_type == FixedType(8, 4)
    q.set_int_bits(torch.tensor(2.6))
    assert q.fixed_type == FixedType(8, 3)  # rounded
    assert q.effective_int_bits().item() == 3.0

    learned = FixedQuantizer(FixedType(8, 3), learn_int_bits=True)
    learned.set_int_bits(-1)
    assert isinstance(learned.int_bits_move, torch.nn.Parameter) and learned.fixed_type == FixedType(8, -1)

    qc = FixedQuantizer(FixedType(8, 3), granularity="channel", num_channels=3)
    qc.set_int_bits([2, 5, -1])
    assert qc.fixed_type == [FixedType(8, 2), FixedType(8, 5), FixedType(8, -1)]
    qc.set_int_bits(6)  # one number for every channel
    assert qc.fixed_type == [FixedType(8, 6)] * 3

    lazy = KHotQuantizer(FixedType(8, 3), 2, learn_int_bits=True, granularity="channel", channel_dim=1)
    lazy.set_int_bits([2, 5])  # sizes the channels
    assert lazy.fixed_type == [FixedType(8, 2), FixedType(8, 5)]
    assert lazy(torch.zeros(3, 2)).shape == (3, 2)


def test_int_bits_range_clips():
    q = FixedQuantizer(FixedType(8, 3), int_bits_range=(0, 6))
    q.set_int_bits(100)
    assert q.fixed_type == FixedType(8, 6)
    q.set_int_bits(-50)
    assert q.fixed_type == FixedType(8, 0)
    default = FixedQuantizer(FixedType(8, 3))  # default range (-W, 2W)
    default.set_int_bits(100)
    assert default.fixed_type == FixedType(8, 16)
    default.set_int_bits(-100)
    assert default.fixed_type == FixedType(8, -8)
    qc = FixedQuantizer(FixedType(8, 3), granularity="channel", num_channels=3, int_bits_range=(-2, 4))
    qc.set_int_bits([-9, 3, 9])
    assert qc.fixed_type == [FixedType(8, -2), FixedType(8, 3), FixedType(8, 4)]
    with pytest.raises(ValueError, match="int_bits_range"):
        FixedQuantizer(FixedType(8, 7), int_bits_range=(0, 6))


def test_learned_int_bits_stay_in_range():
    """Data far beyond the range pushes the binary point out; the range stops it."""
    q = FixedQuantizer(FixedType(8, 1), learn_int_bits=True, int_bits_range=(-1, 3))
    train_binary_point(q, data_source(lambda g, n: uniform(g, n, -1000, 1000), 8, False), steps=60)
    assert q.fixed_type == FixedType(8, 3)
    assert q.int_bits.item() <= 3 + 2 * LR  # clamped before each forward, then one Adam step (about lr)
    assert q.effective_int_bits().item() == 3.0


# ----------------------------------------------------------------- errors

def test_wrong_granularity():
    with pytest.raises(ValueError, match="granularity"):
        FixedQuantizer(FixedType(8, 3), granularity="layer")
    with pytest.raises(ValueError, match="granularity"):
        KHotQuantizer(FixedType(8, 3), 2, granularity="row")


def test_channel_count_mismatch():
    q = FixedQuantizer(FixedType(8, 3), granularity="channel", channel_dim=1, num_channels=3)
    with pytest.raises(ValueError, match="channels"):
        q(torch.zeros(4, 2))
    lazy = FixedQuantizer(FixedType(8, 3), learn_int_bits=True, granularity="channel", channel_dim=1)
    lazy(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="channels"):
        lazy(torch.zeros(4, 5))


@pytest.mark.parametrize("cls,args", [(FixedQuantizer, ()), (KHotQuantizer, (2,))], ids=["fixed", "khot"])
@pytest.mark.parametrize("learn", [False, True], ids=["buffer", "learned"])
def test_fixed_type_before_a_lazy_quantizer_has_seen_data(cls, args, learn):
    q = cls(FixedType(8, 3), *args, learn_int_bits=learn, granularity="channel")
    with pytest.raises(RuntimeError, match="first input"):
        q.fixed_type
    with pytest.raises(RuntimeError, match="first input"):
        q.effective_int_bits()


def test_khot_quantizer_refuses_bad_k():
    with pytest.raises(ValueError, match="k >= 1"):
        KHotQuantizer(FixedType(8, 3), 0)


# ------------------------------------- one optimizer: step sizes and weight decay

def _one_step(q: FixedQuantizer, opt: torch.optim.Optimizer, x: torch.Tensor) -> float:
    """One training step of ``mean((q(x) - x)**2)``; the binary point it leaves (after the next forward folds it)."""
    opt.zero_grad()
    ((q(x) - x) ** 2).mean().backward()
    opt.step()
    return float(q.int_bits.detach() + STEP_SCALE * q.int_bits_move.detach())


@pytest.mark.parametrize("make", [lambda p, lr: torch.optim.Adam(p, lr=lr),
                                  lambda p, lr: torch.optim.Adam(p, lr=lr, weight_decay=0.5),
                                  lambda p, lr: torch.optim.AdamW(p, lr=lr, weight_decay=0.5)],
                         ids=["adam", "adam-l2", "adamw"])
def test_adam_moves_a_binary_point_step_scale_times_lr(make):
    """Adam's first step is ``lr * sign(g)`` on the move: ``STEP_SCALE * lr`` bits; weight decay plays no part."""
    x = torch.linspace(-10, 10, 101)  # needs 5 integer bits: the gradient pushes I = 3 up
    q = FixedQuantizer(FixedType(8, 3), learn_int_bits=True)
    lr = 1e-3
    opt = make(q.parameters(), lr)
    assert _one_step(q, opt, x) == pytest.approx(3 + STEP_SCALE * lr, abs=1e-6)
    second = _one_step(q, opt, x)  # the first move was folded in; decay had a parameter at 0 to act on
    assert second == pytest.approx(3 + 2 * STEP_SCALE * lr, abs=1e-5)
    assert float(q.int_bits_move) == 0.0 or q.training  # the move is folded into int_bits at each forward


@pytest.mark.parametrize("weight_decay", [0.0, 0.5])
def test_sgd_moves_a_binary_point_lr_times_its_gradient(weight_decay):
    """SGD's step is ``-lr * dL/dI`` bits, ``dL/dI`` the documented gradient, whatever STEP_SCALE and decay."""
    t = FixedType(8, 3, rounding="TRN", overflow="SAT")
    x = torch.linspace(-10, 10, 101)
    q = FixedQuantizer(t, learn_int_bits=True)
    lr = 1e-4
    opt = torch.optim.SGD(q.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    out = q(x)
    grad = expected_int_bits_grad(x, out.detach(), 2 * (out.detach() - x) / x.numel(), t, torch.tensor(3.0), [0])
    opt.zero_grad()
    ((out - x) ** 2).mean().backward()
    opt.step()
    moved = float(q.int_bits + STEP_SCALE * q.int_bits_move.detach())
    assert moved == pytest.approx(3 - lr * float(grad), rel=1e-5)
    assert 0 < moved - 3 < 1  # a fraction of a bit, upwards (10 needs more integer bits)


# ------------------------------------------------------------ training faults

@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input_or_gradient_names_the_module(bad):
    from qfx.nn.quantizers import NonFiniteError

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    q = qfx.quantize_model(model, qfx.QConfig(learn_int_bits=True))
    x = torch.randn(8, 4)
    clean = x.clone()
    x[3, 1] = bad
    with pytest.raises(NonFiniteError, match=r"'input_1_quant'"):
        q(x)
    loss = (q(clean) * bad).sum()  # a loss whose gradient is non-finite
    with pytest.raises(NonFiniteError, match=r"'2\.output_quantizer'.*gradient"):
        loss.backward()
    q.eval()
    with pytest.raises(ValueError, match="NaN"):  # eval mode: the exact cast refuses it
        q(x)


def test_load_state_dict_refuses_non_finite_binary_points():
    q = qfx.quantize_model(torch.nn.Sequential(torch.nn.Linear(4, 3)), qfx.QConfig(learn_int_bits=True))
    state = q.state_dict()
    state["0.weight_quantizer.int_bits"] = torch.tensor(float("nan"))
    with pytest.raises(ValueError, match=r"'0\.weight_quantizer\.int_bits'.*non-finite"):
        q.load_state_dict(state)
    state = q.state_dict()
    state["0.output_quantizer.int_bits_move"] = torch.tensor(float("inf"))
    with pytest.raises(ValueError, match=r"'0\.output_quantizer\.int_bits_move'"):
        q.load_state_dict(state)


def test_a_huge_learning_rate_leaves_binary_points_in_range():
    q = FixedQuantizer(FixedType(8, 3), learn_int_bits=True)
    opt = torch.optim.SGD(q.parameters(), lr=1e12)
    x = torch.linspace(-10, 10, 101)
    for _ in range(3):
        _one_step(q, opt, x)
    q(x)
    assert q.int_bits_range[0] <= float(q.int_bits) <= q.int_bits_range[1]


def test_a_checkpoint_of_fixed_binary_points_loads_into_learned_ones():
    fixed = FixedQuantizer(FixedType(8, 3))
    fixed.set_int_bits(5)
    learned = FixedQuantizer(FixedType(8, 3), learn_int_bits=True)
    learned.load_state_dict(fixed.state_dict())
    assert learned.fixed_type == FixedType(8, 5) and float(learned.int_bits_move) == 0.0


# ------------------------------------------------------------ learned word lengths

def _width_quantizer(t: FixedType = FixedType(8, 2, rounding="RND_CONV", overflow="SAT"), **kwargs) -> FixedQuantizer:
    return FixedQuantizer(t, learn_int_bits=True, **kwargs).learn_width()


def _width_in_use(q: FixedQuantizer) -> float:
    return float(q.width.detach() + STEP_SCALE * q.width_move.detach())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_width_gradient_is_the_step_gradient_of_the_rounded_elements(dtype):
    """``dL/dW = -ln 2 * sum dL/dq * (q - x)`` over the elements that rounded, 0 over the saturated ones,
    computed here from the reference cast and returned to the move divided by STEP_SCALE."""
    t = FixedType(8, 2, rounding="RND_CONV", overflow="SAT")
    gen = torch.Generator().manual_seed(3)
    x = (torch.randn(200, generator=gen, dtype=torch.float64) * 1.5).to(dtype)  # some beyond +-2: saturated
    c = torch.randn(200, generator=gen, dtype=torch.float64).to(dtype)
    q = _width_quantizer(t)
    (q(x) * c).sum().backward()
    ref = qfx.quantize(x.double(), t)
    error = ref - x.double()
    rounded = (x.double() >= -2) & (x.double() <= 2 - 2.0 ** -6)
    assert 0 < int((~rounded).sum()) < 200
    expected = -math.log(2) * float((c.double() * error)[rounded].sum())
    assert float(q.width_move.grad) * STEP_SCALE == pytest.approx(expected, rel=1e-5)


def test_width_gradient_per_channel_sums_over_every_channel():
    t = FixedType(6, 1, rounding="RND_CONV", overflow="SAT")
    x = torch.randn(4, 3, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    q = _width_quantizer(t, granularity="channel", channel_dim=1, num_channels=3)
    q.set_int_bits(torch.tensor([1.0, 2.0, 3.0]))
    ((q(x) - x) ** 2).sum().backward()
    total = 0.0
    for ch, i_bits in enumerate((1, 2, 3)):
        xc = x[:, ch]
        ref = qfx.quantize(xc, FixedType(6, i_bits, rounding="RND_CONV", overflow="SAT"))
        inside = (xc >= -2.0 ** (i_bits - 1)) & (xc <= 2.0 ** (i_bits - 1) - 2.0 ** (i_bits - 6))
        total += float((2 * (ref - xc) * (ref - xc))[inside].sum())
    assert float(q.width_move.grad) * STEP_SCALE == pytest.approx(-math.log(2) * total, rel=1e-6)
    assert float(q.width_move.grad) < 0  # less rounding noise with more bits: the width wants to grow


@pytest.mark.parametrize("make", [lambda p, lr: torch.optim.Adam(p, lr=lr),
                                  lambda p, lr: torch.optim.AdamW(p, lr=lr, weight_decay=0.5)], ids=["adam", "adamw"])
def test_adam_moves_a_word_length_step_scale_times_lr(make):
    """A penalty pulling the width down: Adam's first step moves it ``STEP_SCALE * lr`` bits, decay none."""
    x = torch.linspace(-1, 1, 101)
    q = _width_quantizer()
    lr = 1e-3
    opt = make(q.parameters(), lr)
    for step in (1, 2):
        opt.zero_grad()
        (((q(x) - x) ** 2).mean() + 1.0 * q.word_length()).backward()
        opt.step()
        q(x)  # folds the move into the buffer
        assert _width_in_use(q) == pytest.approx(8 - step * STEP_SCALE * lr, abs=1e-5)
    assert q.effective_width() == 8 and q.fixed_type == FixedType(8, 2, rounding="RND_CONV", overflow="SAT")


def test_sgd_moves_a_word_length_lr_times_its_gradient():
    x = torch.linspace(-1, 1, 101, dtype=torch.float64)
    q = _width_quantizer()
    lr, lam = 1e-2, 1e-3
    opt = torch.optim.SGD(q.parameters(), lr=lr, weight_decay=0.5)
    out = q(x)
    ref = qfx.quantize(x, FixedType(8, 2, rounding="RND_CONV", overflow="SAT"))
    grad_w = -math.log(2) * float((2 * (ref - x) / x.numel() * (ref - x)).sum()) + lam
    opt.zero_grad()
    (((out - x) ** 2).mean() + lam * q.word_length()).backward()
    opt.step()
    assert float(q.width) == 8 and STEP_SCALE * float(q.width_move) == pytest.approx(-lr * grad_w, rel=1e-5)


def test_learned_width_narrows_the_format_and_freezes_into_it():
    t = FixedType(8, 2, rounding="RND_CONV", overflow="SAT")
    x = torch.randn(64, generator=torch.Generator().manual_seed(1))
    q = _width_quantizer(t)
    with torch.no_grad():
        q.width.fill_(5.4)
    assert q.effective_width() == 5 and q.fixed_type == t.replace(width=5)
    assert torch.equal(q(x), qfx.quantize(x, t.replace(width=5)))
    assert float(q.frac_bits()) == 3
    q.eval()
    assert torch.equal(q(x), qfx.quantize(x, t.replace(width=5)))
    with torch.no_grad():
        q.width.fill_(0.0)
    assert q.effective_width() == 2  # the range's lower end
    with torch.no_grad():
        q.width.fill_(4.0)
    q.freeze()
    assert q.base_type == t.replace(width=4) and not hasattr(q, "width_move") and not q.learns_width
    assert torch.equal(q(x), qfx.quantize(x, t.replace(width=4)))


def test_learn_width_refusals():
    with pytest.raises(ValueError, match="K-hot"):
        KHotQuantizer(FixedType(8, 1), 2, learn_int_bits=True).learn_width()
    with pytest.raises(ValueError, match="width_range"):
        FixedQuantizer(FixedType(8, 1), learn_int_bits=True).learn_width((2, 9))


def test_a_checkpoint_without_word_lengths_loads_into_learned_ones():
    fixed = FixedQuantizer(FixedType(8, 2), learn_int_bits=True)
    fixed.set_int_bits(4)
    q = _width_quantizer(FixedType(8, 2))
    with torch.no_grad():
        q.width.fill_(5.0)
    q.load_state_dict(fixed.state_dict())
    assert q.effective_width() == 8 and float(q.effective_int_bits()) == 4
