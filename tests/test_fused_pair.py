"""Two training casts in a row with a ReLU between them (qfx.autograd.fused_pair_cast), a cast with the batch
statistics of its output (qfx.autograd.fused_cast_moments), and the pairing of layers that quantize_model does
for them: the values equal the exact cast's and torch's statistics, the input gradients equal the separate
fused steps', the binary points' gradients up to summation order."""

from __future__ import annotations

import copy
import gc
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import qfx
from qfx import fused
from qfx.autograd import fused_cast_moments, fused_pair_cast, fused_training_cast
from qfx.format import FixedType
from qfx.functional import cast_codes
from qfx.fused import native

MODES = [("RND_CONV", "SAT"), ("TRN", "WRAP"), ("RND", "SAT_SYM"), ("RND_CONV", "SAT_ZERO"), ("TRN", "SAT")]


@pytest.fixture(autouse=True)
def _kernels() -> None:
    assert native.library() is not None, "the fused kernels did not build (is g++ installed?)"


def _exact(v: torch.Tensor, t: FixedType, int_bits: int) -> torch.Tensor:
    codes, _ = cast_codes(v, t, t.width - int_bits)
    return codes * 2.0 ** (int_bits - t.width)


def _operands(modes, dtype):
    """The two casts' (format, binary point, gradient target, factor, check), each binary point learned."""
    first_t = FixedType(8, 2, rounding=modes[0], overflow=modes[1])
    second_t = FixedType(6, 1, signed=False, rounding=modes[0], overflow=modes[1])
    first = torch.tensor(2.0, requires_grad=True)
    second = torch.tensor(1.0, requires_grad=True)
    return (first_t, first, first, 1.0, None), (second_t, second, second, 1.0, None)


@pytest.mark.parametrize("modes", MODES)
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reads", ["second", "both", "first"])
def test_pair_equals_the_two_casts(modes, affine: bool, dtype: torch.dtype, reads: str) -> None:
    g = torch.Generator().manual_seed(3)
    x0 = (torch.randn(4, 6, 40, 30, generator=g, dtype=dtype) * 3).round(decimals=2)  # ties too
    scale = (torch.rand(6, generator=g, dtype=dtype) + 0.5) if affine else None
    shift = torch.randn(6, generator=g, dtype=dtype) if affine else None
    weights = torch.randn(2, *x0.shape, generator=g, dtype=dtype)
    grads = []
    for paired in (True, False):
        x = x0.clone().requires_grad_(True)
        s = None if scale is None else scale.clone().requires_grad_(True)
        sh = None if shift is None else shift.clone().requires_grad_(True)
        first, second = _operands(modes, dtype)
        if paired:
            q1, q2 = fused_pair_cast(x, first, second, s, sh)
        else:
            q1 = fused_training_cast(x, first[0], first[1], scale=s, shift=sh)
            q2 = fused_training_cast(q1, second[0], second[1], relu=True)
        v = x0 if scale is None else x0 * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)
        assert torch.equal(q1, _exact(v, first[0], 2))
        assert torch.equal(q2, _exact(torch.relu(q1), second[0], 1))
        loss = {"second": (q2 * weights[1]).sum(), "first": (q1 * weights[0]).sum(),
                "both": (q1 * weights[0]).sum() + (q2 * weights[1]).sum()}[reads]
        loss.backward()
        grads.append([x.grad, None if s is None else s.grad, None if sh is None else sh.grad, first[1].grad,
                      second[1].grad])
    paired, separate = grads
    assert torch.equal(paired[0], separate[0])
    for a, b in zip(paired[1:3], separate[1:3]):  # per-channel sums: the same runs, the same order
        assert (a is None and b is None) or torch.equal(a, b)
    # A binary point's gradient is a difference of two sums of float partial sums (per run in the tensor's
    # dtype): another order of the runs moves it by the cancelled terms' rounding.
    tolerance = 1e-3 if dtype == torch.float32 else 1e-9
    for a, b in zip(paired[3:], separate[3:]):
        assert (a is None) == (b is None)
        if b is not None:
            torch.testing.assert_close(a, b, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("modes", MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reads", ["both", "values", "statistics"])
def test_cast_with_statistics_equals_the_cast_then_the_statistics(modes, dtype: torch.dtype, reads: str) -> None:
    g = torch.Generator().manual_seed(4)
    x0 = (torch.randn(4, 6, 40, 30, generator=g, dtype=dtype) * 3).round(decimals=2)
    weights = torch.randn(x0.shape, generator=g, dtype=dtype), torch.randn(2, 6, generator=g, dtype=dtype)
    grads = []
    for together in (True, False):
        x = x0.clone().requires_grad_(True)
        cast, _ = _operands(modes, dtype)
        if together:
            q, mean, var = fused_cast_moments(x, cast)
        else:
            from qfx.nn.batchnorm import _BatchStatistics
            q = fused_training_cast(x, cast[0], cast[1])
            mean, var, q = _BatchStatistics.apply(q)
        expected = _exact(x0, cast[0], 2)
        assert torch.equal(q, expected)
        assert torch.equal(torch.stack([mean, var]), torch.stack(fused.batch_moments(expected)))
        torch.testing.assert_close(var, expected.var((0, 2, 3), unbiased=False), rtol=1e-5, atol=1e-6)
        loss = {"values": (q * weights[0]).sum(), "statistics": (torch.stack([mean, var]) * weights[1]).sum(),
                "both": (q * weights[0]).sum() + (torch.stack([mean, var]) * weights[1]).sum()}[reads]
        loss.backward()
        grads.append((x.grad, cast[1].grad))
    (grad_x, point), (grad_x_ref, point_ref) = grads
    assert torch.equal(grad_x, grad_x_ref)
    tolerance = 1e-3 if dtype == torch.float32 else 1e-9
    torch.testing.assert_close(point, point_ref, rtol=tolerance, atol=tolerance)


def test_pair_declines_what_the_kernels_leave_to_the_exact_cast() -> None:
    first, second = _operands(("TRN", "WRAP"), torch.float32)
    x = torch.tensor([1.0, float("nan")] * 3000)
    assert fused_pair_cast(x, first, second) is None
    assert fused_pair_cast(x.view(2, 3000).t(), first, second) is None  # not contiguous


@pytest.mark.parametrize("node", ["cast", "pair", "statistics"])
def test_a_binary_point_gradient_reaches_its_check_only_where_it_is_not_finite(node: str) -> None:
    """The kernels report a non-finite sum; only then is the quantizer's check called (and raises)."""
    seen = []

    def check(point: torch.Tensor) -> None:
        seen.append(point.clone())
        raise FloatingPointError("refused")

    for bad in (1.0, float("nan"), float("inf")):
        x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(6), requires_grad=True)
        first, second = _operands(("RND_CONV", "SAT"), torch.float32)
        first, second = first[:4] + (check,), second[:4] + (check,)
        if node == "cast":
            outputs = (fused_training_cast(x, first[0], first[1], check=check),)
        elif node == "pair":
            outputs = fused_pair_cast(x, first, second)
        else:
            outputs = fused_cast_moments(x, first)[:1]
        loss = sum((out * bad).sum() for out in outputs)
        if bad == 1.0:
            loss.backward()
            assert seen == [] and torch.isfinite(first[1].grad).all()
        else:
            with pytest.raises(FloatingPointError, match="refused"):
                loss.backward()
            assert not torch.isfinite(seen[-1]).all()


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.bn3 = nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.conv(x)))
        shortcut = out
        out = F.relu(self.bn2(self.conv2(out)) + shortcut)
        return self.bn3(out) + out  # neither bn3 nor this sum feeds a ReLU: no pair


def _model() -> nn.Module:
    torch.manual_seed(0)
    x = torch.randn(4, 3, 16, 16)
    model = qfx.quantize_model(_Block(), qfx.QConfig(weight=8, activation=8, learn_int_bits=True), example_input=x)
    qfx.calibrate(model, [x])
    return model.train()


def _step(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
    model.zero_grad(set_to_none=True)
    out = model(x)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return out, {name: p.grad for name, p in model.named_parameters()}


def test_quantize_model_pairs_layers_and_trains_alike() -> None:
    model = _model()
    paired = {name for name, m in model.named_modules() if getattr(m, "then_relu", None) is not None}
    assert paired == {"bn", "add"}
    assert model.bn.then_relu is model.relu and "then_relu" not in dict(model.named_modules())
    with_statistics = {name for name, m in model.named_modules() if getattr(m, "then_batchnorm", None) is not None}
    assert with_statistics == {"conv", "conv2"} and model.conv2.then_batchnorm is model.bn2
    assert set(model.state_dict()) == set(copy.deepcopy(model).state_dict())
    separate = copy.deepcopy(model)
    for name in paired:
        separate.get_submodule(name).pair_with_relu(None)
    for name in with_statistics:
        separate.get_submodule(name).pair_with_batchnorm(None)
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    for _ in range(2):  # the second step folds the moves the optimizer left
        out, grads = _step(model, x)
        out_ref, grads_ref = _step(separate, x)
        assert torch.equal(out, out_ref)
        for name, grad in grads_ref.items():
            if name.endswith("int_bits_move"):  # sums of float partial sums, in another order
                torch.testing.assert_close(grads[name], grad, rtol=1e-3, atol=1e-5)
            else:
                assert torch.equal(grads[name], grad), name
        for m in (model, separate):
            with torch.no_grad():
                for p in m.parameters():
                    p.sub_(0.01 * p.grad)


def test_hooks_on_the_relu_and_its_quantizer_see_their_calls() -> None:
    model = _model()
    seen, cast = [], []
    model.relu.register_forward_hook(lambda module, args, out: seen.append((args[0], out)))
    x = torch.randn(4, 3, 16, 16)
    model(x)
    (bn_out, relu_out), = seen  # the ReLU handed its output by the BatchNorm
    q = model.relu.output_quantizer
    assert torch.equal(relu_out, _exact(torch.relu(bn_out.detach()), q.base_type, int(q.int_bits)))
    q.register_forward_pre_hook(lambda module, args: cast.append(args[0]))  # as calibration's observers do
    model(x)
    assert len(cast) == 1 and torch.equal(cast[0], seen[-1][0])  # then the two cast one after the other


def test_a_training_step_frees_its_graph() -> None:
    model = _model()
    out = model(torch.randn(4, 3, 16, 16))
    nodes, seen, kinds = [out.grad_fn], [], set()
    while nodes:
        node = nodes.pop()
        if isinstance(node, torch.autograd.function.BackwardCFunction):  # a custom node: its ctx
            seen.append(weakref.ref(node))
            kinds.add(type(node).__name__)
        nodes += [n for n, _ in node.next_functions if n is not None]
    assert {"_FusedPairBackward", "_FoldStatisticsBackward", "_CastMomentsBackward"} <= kinds
    out.sum().backward()
    del out, node
    gc.collect()
    assert all(alive() is None for alive in seen)
