"""The fused training-mode cast (qfx.fused): values and range test equal the exact cast, gradients equal a
hand-composed reference, in the native kernels and in the PyTorch fallback alike."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from qfx import fused
from qfx.autograd import fused_training_cast
from qfx.format import FixedType
from qfx.functional import cast_codes
from qfx.fused import native

LN2 = math.log(2.0)


@pytest.fixture(params=["native", "torch"])
def kernels(request, monkeypatch) -> str:
    """Run a test on the native kernels (which must build here) and on the PyTorch fallback."""
    if request.param == "torch":
        monkeypatch.setattr(native, "library", lambda: None)
    else:
        assert native.library() is not None, "the fused kernels did not build (is g++ installed?)"
    return request.param


def _values(t: FixedType, frac_bits: int, dtype: torch.dtype, n: int = 3000) -> torch.Tensor:
    """Random values in and far beyond the range, every tie between neighbouring codes near and past the ends,
    the codes themselves, huge, tiny and signed-zero values."""
    g = torch.Generator().manual_seed(2)
    lsb = 2.0 ** -frac_bits
    codes = torch.randint(t.code_min - 4, t.code_max + 4, (n,), generator=g).to(dtype)
    ends = torch.arange(-6, 7, dtype=dtype) * 0.5 * lsb
    return torch.cat([
        torch.randn(n, generator=g, dtype=dtype) * 2.0 ** (t.width - frac_bits + 1),
        (codes + 0.5) * lsb, codes * lsb, t.code_min * lsb + ends, t.code_max * lsb + ends, ends,
        torch.tensor([1e30, -1e30, 3e38, -3e38, 1e-30, -1e-30, 0.0, -0.0], dtype=dtype),
    ])


def _exact(v: torch.Tensor, t: FixedType, frac_bits) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact cast's values and its in-range mask (the reference)."""
    codes, inside = cast_codes(v, t, frac_bits, need_mask=True)
    scale = 2.0 ** -frac_bits if isinstance(frac_bits, int) else torch.exp2(-frac_bits.to(v.dtype))
    return codes * scale, torch.ones_like(v, dtype=torch.bool) if inside is None else inside


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("width,int_bits", [(8, 3), (2, 0), (12, -2), (22, 4), (6, 9), (8, -100), (8, 100)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_values_and_range_test_equal_the_exact_cast(kernels: str, signed: bool, width: int, int_bits: int,
                                                    dtype: torch.dtype) -> None:
    t = FixedType(width, int_bits, signed=signed, rounding="RND_CONV", overflow="SAT")
    for frac_bits in (t.frac_bits, t.frac_bits + 3, t.frac_bits - 2):
        p = fused.nearest_even(t, frac_bits, dtype)
        assert p is not None
        x = _values(t, frac_bits, dtype)
        expected, inside = _exact(x, t, frac_bits)
        q = fused.cast_forward(x, p)
        assert torch.equal(q, expected)
        grad = torch.randn(x.shape, dtype=dtype, generator=torch.Generator().manual_seed(3))
        grad_x, point, none_scale, none_shift, finite = fused.cast_backward(grad, x, q, p, None, None,
                                                                            torch.ones(1, dtype=torch.float64))
        assert torch.equal(grad_x, grad * inside) and none_scale is None and none_shift is None
        assert finite is (True if kernels == "native" else None)  # looked at by the kernel only
        reference = (grad.double() * expected.double()).sum() - (grad.double() * inside * x.double()).sum()
        torch.testing.assert_close(point.double(), reference.reshape(1), rtol=1e-5, atol=1e-6 * float(grad.abs().sum()))


def test_nearest_even_declines_where_its_shortcut_does_not_hold() -> None:
    f32 = torch.float32
    assert fused.nearest_even(FixedType(8, 3, rounding="RND", overflow="SAT"), 5, f32) is None
    assert fused.nearest_even(FixedType(8, 3, rounding="RND_CONV", overflow="WRAP"), 5, f32) is None
    assert fused.nearest_even(FixedType(23, 3, rounding="RND_CONV", overflow="SAT"), 20, f32) is None  # > 24 - 2 bits
    assert fused.nearest_even(FixedType(1, 0, rounding="RND_CONV", overflow="SAT"), 1, f32) is None  # odd code_min
    assert fused.nearest_even(FixedType(8, 3, rounding="RND_CONV", overflow="SAT"), 130, f32) is None  # exponent range
    assert fused.nearest_even(FixedType(23, 3, rounding="RND_CONV", overflow="SAT"), 20, torch.float64) is not None
    assert fused.nearest_even(FixedType(8, 3, rounding="RND_CONV", overflow="SAT"), 5, torch.float16) is None


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("shape", [(6, 5, 7, 3), (300, 4), (5000, 3), (64, 8, 16, 16)])  # last: 2 threads
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_affine_relu_cast_and_gradients(kernels: str, relu: bool, affine: bool, shape, dtype) -> None:
    """``Q(relu(x * scale + shift))`` with a learned binary point, against the composition done by hand."""
    g = torch.Generator().manual_seed(5)
    t = FixedType(8, 2, rounding="RND_CONV", overflow="SAT")
    x = (torch.randn(shape, generator=g, dtype=dtype) * 3).requires_grad_()
    channels = shape[1]
    scale = (torch.rand(channels, generator=g, dtype=dtype) * 2 - 0.5).requires_grad_() if affine else None
    shift = torch.randn(channels, generator=g, dtype=dtype).requires_grad_() if affine else None
    int_bits = torch.tensor(2.4, requires_grad=True)
    upstream = torch.randn(shape, generator=g, dtype=dtype)

    y = fused_training_cast(x, t, int_bits, scale=scale, shift=shift, relu=relu)
    (y * upstream).sum().backward()

    # Reference: v computed in the dtype with separate roundings, the exact cast, its mask by hand.
    view = (1, channels) + (1,) * (len(shape) - 2)
    with torch.no_grad():
        v = x.detach() * scale.detach().view(view) + shift.detach().view(view) if affine else x.detach()
        r = torch.relu(v) if relu else v
        expected, inside = _exact(r, t, 6)
        kept = upstream * inside * ((v > 0) if relu else 1)
    assert torch.equal(y.detach(), expected)
    assert torch.equal(x.grad, kept * scale.detach().view(view) if affine else kept)
    dims = [0] + list(range(2, len(shape)))
    if affine:
        torch.testing.assert_close(scale.grad, (kept.double() * x.detach().double()).sum(dims).to(dtype),
                                   rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(shift.grad, kept.double().sum(dims).to(dtype), rtol=1e-4, atol=1e-3)
    point = (upstream.double() * expected.double()).sum() - (kept.double() * r.double()).sum()
    torch.testing.assert_close(int_bits.grad, (point * LN2 * 2.0 ** (1.5 * 6)).float(), rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize("channel_dim,shape", [(0, (6, 5, 3, 3)), (1, (64, 6, 12, 12)), (0, (7,))])
def test_binary_point_per_channel(channel_dim: int, shape) -> None:
    """Per-channel tables (kernels only): values, range test and each binary point's gradient."""
    assert native.library() is not None
    g = torch.Generator().manual_seed(7)
    t = FixedType(6, 1, rounding="RND_CONV", overflow="SAT")
    channels = shape[channel_dim]
    int_bits = (torch.arange(channels, dtype=torch.float32) % 4 - 1.2).requires_grad_()
    x = (torch.randn(shape, generator=g) * 4).requires_grad_()
    upstream = torch.randn(shape, generator=g)
    y = fused_training_cast(x, t, int_bits, channel_dim)
    (y * upstream).sum().backward()

    view = tuple(channels if i == channel_dim else 1 for i in range(len(shape)))
    frac = (t.width - torch.round(int_bits.detach())).view(view)
    expected, inside = _exact(x.detach(), t, frac)
    assert torch.equal(y.detach(), expected)
    assert torch.equal(x.grad, upstream * inside)
    dims = [i for i in range(len(shape)) if i != channel_dim]
    terms = upstream.double() * expected.double() - (upstream * inside).double() * x.detach().double()
    point = terms.sum(dims) if dims else terms
    factor = LN2 * torch.exp2(1.5 * frac.reshape(-1).double())
    torch.testing.assert_close(int_bits.grad, (point * factor).float(), rtol=1e-4, atol=1e-2)


def test_per_channel_falls_back_without_kernels(monkeypatch) -> None:
    monkeypatch.setattr(native, "library", lambda: None)
    t = FixedType(6, 1, rounding="RND_CONV", overflow="SAT")
    assert fused_training_cast(torch.randn(4, 3), t, torch.zeros(4), 0) is None
    assert fused_training_cast(torch.randn(4, 3), t, torch.tensor(1.0)) is not None


def test_channel_affine_rounds_like_torch(kernels: str) -> None:
    g = torch.Generator().manual_seed(9)
    for shape in [(5, 3), (4, 3, 9), (64, 3, 20, 20)]:
        x = torch.randn(shape, generator=g)
        a, b = torch.randn(3, generator=g), torch.randn(3, generator=g)
        view = (1, 3) + (1,) * (len(shape) - 2)
        assert torch.equal(fused.channel_affine(x, a, b), x * a.view(view) + b.view(view))


def test_kernels_are_deterministic_and_thread_count_keeps_values() -> None:
    assert native.library() is not None
    g = torch.Generator().manual_seed(11)
    x, grad = torch.randn(64, 16, 32, 32, generator=g) * 3, torch.randn(64, 16, 32, 32, generator=g)
    p = fused.nearest_even(FixedType(8, 3, rounding="RND_CONV", overflow="SAT"), 5, torch.float32)
    threads = torch.get_num_threads()
    try:
        runs = []
        for n in (1, 2, 2):
            torch.set_num_threads(n)
            q = fused.cast_forward(x, p)
            runs.append((q, *fused.cast_backward(grad, x, q, p, None, None, torch.ones(1, dtype=torch.float64))[:2]))
    finally:
        torch.set_num_threads(threads)
    (q1, g1, s1), (q2, g2, s2), (q3, g3, s3) = runs
    assert torch.equal(q1, q2) and torch.equal(g1, g2) and torch.equal(q2, q3) and torch.equal(g2, g3)
    assert torch.equal(s2, s3)  # same thread count: the same sum, bit for bit
    torch.testing.assert_close(s1, s2, rtol=1e-6, atol=1e-3)


def test_a_missing_compiler_warns_once_and_falls_back(tmp_path) -> None:
    """In a fresh process with no usable compiler: one warning, and training still runs on PyTorch operations."""
    code = """
import warnings, torch, qfx
from qfx.fused import native
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    q = qfx.nn.FixedQuantizer("ap_fixed<8,3,AP_RND_CONV,AP_SAT>").train()
    y = q(torch.randn(100))
    q(torch.randn(100))
assert native.library() is None
messages = [str(w.message) for w in caught if "fused training kernels" in str(w.message)]
assert len(messages) == 1, messages
print("fell back")
"""
    env = {"PATH": "/usr/bin:/bin", "CXX": "no-such-compiler-qfx", "QFX_CACHE_DIR": str(tmp_path),
           "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "fell back" in result.stdout


def test_short_runs_of_large_tensors_take_pytorch_operations() -> None:
    """BatchNorm1d's (N, C): one element per run is slow in the kernels once N*C is large."""
    assert native.long_runs(torch.empty(64, 16, 8, 8), 1) and native.long_runs(torch.empty(300, 4), 1)
    assert not native.long_runs(torch.empty(5000, 3), 1) and not native.long_runs(torch.empty(2000, 4, 3), 1)
    assert native.long_runs(torch.empty(64, 4096), -1)  # one binary point: a single run


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fold_points_equals_the_torch_ops(dtype) -> None:
    """The native fold of a learned binary point's move: torch.add(bits, move, alpha=32).clamp(lo, hi), move 0."""
    assert native.library() is not None
    g = torch.Generator().manual_seed(12)
    bits = (torch.randn(64, generator=g) * 6).to(dtype)
    move = (torch.randn(64, generator=g) * 0.3).to(dtype)
    move[::5] = 0.0
    expected = torch.add(bits, move, alpha=32.0).clamp(-8, 16)
    versions = bits._version, move._version
    assert native.fold_points(bits, move, 32.0, -8, 16) is True
    assert torch.equal(bits, expected) and not move.any()
    assert bits._version > versions[0] and move._version > versions[1]  # written in place, as add_ would say
    before = bits.clone(), bits._version
    assert native.fold_points(bits, move, 32.0, -8, 16) is True  # nothing to fold: nothing written
    assert torch.equal(bits, before[0]) and bits._version == before[1]
    move[3] = float("inf")
    assert native.fold_points(bits, move, 32.0, -8, 16) is False  # refused, nothing written
    assert torch.equal(bits, before[0]) and move[3] == float("inf")
    assert native.fold_points(bits.float() if dtype == torch.float64 else bits.double(), move, 32.0, -8, 16) is None


def test_point_rows_round_half_to_even() -> None:
    assert native.library() is not None
    bits = torch.tensor([0.5, 1.5, -0.5, -2.5, 2.49, 7.0])
    index = native.point_rows(bits, 8, -3, 20)
    assert torch.equal(index, (8 - torch.round(bits) + 3).int())
    assert native.point_rows(bits, 8, 2, 4) is None  # F = 8 - 7 = 1 lies before the first row
    assert native.point_rows(torch.tensor([float("nan")]), 8, -3, 20) is None


def test_per_channel_binary_points_moved_by_sgd_fold_like_torch() -> None:
    """A per-channel quantizer in training folds its move natively, in eval through torch ops: the same bits."""
    from qfx.nn.quantizers import FixedQuantizer

    x = torch.randn(4, 6, 5, 5) * 3
    quantizers = [FixedQuantizer(FixedType(8, 2), learn_int_bits=True, granularity="channel", channel_dim=1,
                                 num_channels=6) for _ in range(2)]
    for q in quantizers:
        with torch.no_grad():
            q.int_bits_move.copy_(torch.linspace(-0.2, 0.3, 6))
    quantizers[0].train()(x)
    quantizers[1].eval()(x)
    assert torch.equal(quantizers[0].int_bits, quantizers[1].int_bits)
    assert not quantizers[0].int_bits_move.any()
