"""Quantizer modules (:mod:`qfx.nn.quantizers`): state, limits, errors and the optimizer's steps.

What must hold:

* state_dict round trips (per tensor, per channel, into a lazy quantizer, of
  a frozen one), ``set_int_bits`` and ``int_bits_range``;
* the error messages of wrong granularity, channel counts and bad ``k``;
* one optimizer step moves a binary point (and a learned word length) by the
  documented amount, with weight decay where SGD applies it;
* non-finite inputs, gradients and checkpoints are refused naming the module.

Learning itself, the int-bits gradient and forward = quantize are in
``test_quantizers.py``.
"""

from __future__ import annotations

import math

import pytest
import torch

import qfx
from qfx import FixedType
from qfx.nn import FixedQuantizer, KHotQuantizer
from qfx.nn.quantizers import STEP_SCALE

from quantizer_reference import expected_int_bits_grad

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
