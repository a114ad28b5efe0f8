"""The quantized layers in training mode, their conversion from ``torch.nn``, formats, constants and errors.

* training: gradients reach the input, the float weights and every learned
  binary point; BatchNorm's running statistics follow ``torch.nn.BatchNorm``;
  where float32 is exact, training and eval forward passes agree;
* ``from_float`` copies shapes, hyperparameters and parameters, and with
  wide formats the layer approximates its float counterpart;
* ``formats()``, ``constants()`` and ``extra_repr`` describe what is cast;
* unsupported options are refused with messages that say what to change.
"""

from __future__ import annotations

import copy
import gc
import math
import weakref

import pytest
import torch
from torch import nn

from qfx import FixedType
from qfx.nn import (FixedConstant, LayerQConfig, QAdaptiveAvgPool2d, QAdd, QAvgPool2d, QBatchNorm1d, QBatchNorm2d,
                    QConv1d, QConv2d, QFlatten, QInput, QLeakyReLU, QLinear, QMaxPool2d, QReLU, QReLU6)

import layer_reference as ref

LEARN = LayerQConfig(learn_int_bits=True, weight_granularity="channel", accum=FixedType(16, 6))
WIDE = LayerQConfig(weight=FixedType(16, 2, rounding="RND_CONV"), bias=FixedType(16, 4, rounding="RND_CONV"),
                    output=FixedType(16, 6, rounding="RND_CONV", overflow="SAT"),
                    scale=FixedType(16, 3, rounding="RND_CONV"), shift=FixedType(16, 4, rounding="RND_CONV"))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def layers_and_inputs() -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    return [
        ("input", QInput(LEARN), (16, 5)),
        ("linear", QLinear(12, 4, cfg=LEARN), (16, 12)),
        ("conv1d", QConv1d(3, 4, 3, padding=1, cfg=LEARN), (16, 3, 9)),
        ("conv2d", QConv2d(4, 6, 3, stride=2, padding=1, groups=2, cfg=LEARN), (16, 4, 7, 7)),
        ("bn1d", QBatchNorm1d(5, cfg=LEARN.replace(scale_khot=2)), (16, 5)),
        ("bn2d", QBatchNorm2d(3, cfg=LEARN), (16, 3, 4, 4)),
        ("relu", QReLU(LEARN), (16, 8)),
        ("relu6", QReLU6(LEARN), (16, 8)),
        ("leaky", QLeakyReLU(0.1, cfg=LEARN), (16, 8)),
        ("maxpool", QMaxPool2d(2, cfg=LEARN), (16, 2, 6, 6)),
        ("avgpool", QAvgPool2d(2, cfg=LEARN), (16, 2, 6, 6)),
        ("gap", QAdaptiveAvgPool2d(1, cfg=LEARN), (16, 2, 5, 5)),
    ]


@pytest.mark.parametrize("index", range(len(layers_and_inputs())),
                         ids=[name for name, _, _ in layers_and_inputs()])
def test_gradients_reach_input_weights_and_every_binary_point(index: int) -> None:
    _, layer, shape = layers_and_inputs()[index]
    g = gen(index)
    layer.train()
    x = (torch.randn(shape, generator=g) * 2).requires_grad_()
    y = layer(x)
    assert y.dtype == torch.float32
    (y * torch.randn(y.shape, generator=g)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    params = dict(layer.named_parameters())
    binary_points = [name for name in params if name.endswith("int_bits_move")]
    assert "output_quantizer.int_bits_move" in binary_points
    for name, p in params.items():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_add_gradients() -> None:
    layer = QAdd(LEARN).train()
    a, b = torch.randn(8, 3, requires_grad=True), torch.randn(8, 3, requires_grad=True)
    layer(a, b).sum().backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0
    assert layer.output_quantizer.int_bits_move.grad is not None


@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm_running_statistics_follow_torch(momentum) -> None:
    g = gen(1)
    q, f = QBatchNorm2d(4, momentum=momentum), nn.BatchNorm2d(4, momentum=momentum)
    for _ in range(3):
        x = torch.randn(8, 4, 3, 5, generator=g) * 3 + 1
        q(x), f(x)
    torch.testing.assert_close(q.running_mean, f.running_mean)
    torch.testing.assert_close(q.running_var, f.running_var)
    assert int(q.num_batches_tracked) == 3
    q.eval()
    before = q.running_mean.clone()
    q(torch.randn(8, 4, 3, 5, generator=g))
    assert torch.equal(before, q.running_mean)  # eval mode leaves them alone


@pytest.mark.parametrize("kernels", ["native", "torch"])
@pytest.mark.parametrize("shape", [(16, 3), (8, 3, 7), (8, 3, 5, 6), (64, 3, 20, 20)])
def test_batch_statistics_equal_var_mean(shape, kernels, monkeypatch) -> None:
    """Mean and biased variance, and the gradient through both and through the returned ``x``, as
    ``torch.var_mean`` and ``x`` itself give them."""
    from qfx.fused import native
    from qfx.nn.batchnorm import _BatchStatistics

    if kernels == "torch":
        monkeypatch.setattr(native, "library", lambda: None)
    else:
        assert native.library() is not None
    g = gen(4)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 3 + 2).requires_grad_()
    dims = [0] + list(range(2, len(shape)))
    up_mean, up_var = torch.randn(3, generator=g, dtype=torch.float64), torch.randn(3, generator=g, dtype=torch.float64)
    up_x = torch.randn(shape, generator=g, dtype=torch.float64)
    grads = []
    for stats in (lambda: _BatchStatistics.apply(x), lambda: (*torch.var_mean(x, dims, correction=0)[::-1], x)):
        mean, var, same_x = stats()
        loss = (mean * up_mean + var * up_var).sum() + (same_x * up_x).sum()
        grads.append((mean.detach(), var.detach(), same_x.detach(), *torch.autograd.grad(loss, x)))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_batchnorm_training_uses_batch_statistics() -> None:
    bn = QBatchNorm1d(3, cfg=WIDE).train()
    x = torch.randn(256, 3, generator=gen(2)) * 4 + 10
    y = bn(x)
    torch.testing.assert_close(y.mean(0), torch.zeros(3), atol=0.01, rtol=0)
    torch.testing.assert_close(y.std(0), torch.ones(3), atol=0.01, rtol=0)


def test_training_equals_eval_where_float32_is_exact() -> None:
    """6-bit inputs and weights, 16 products, bias on the products' grid: the fake-quantized sum is exact."""
    g = gen(3)
    cfg = LayerQConfig(weight=FixedType(6, 1), bias=FixedType(12, 3), output=FixedType(8, 3))
    tx = FixedType(6, 3)
    for layer, shape in [(QLinear(16, 5, cfg=cfg, input_width=6), (32, 16)),
                         (QConv2d(4, 3, 2, cfg=cfg, input_width=6), (8, 4, 5, 5))]:
        torch.nn.init.normal_(layer.weight, std=0.5, generator=g)
        x = ref.random_fixed(g, shape, tx)
        trained = layer.train()(x)
        assert torch.equal(trained, layer.eval()(x))


def test_formats_names_and_constants() -> None:
    cfg = LayerQConfig(weight_granularity="channel", accum=FixedType(20, 8))
    layer = QConv2d(2, 3, 3, cfg=cfg)
    formats = layer.formats()
    assert list(formats) == ["weight", "bias", "accum", "output"]
    assert len(formats["weight"]) == 3 and formats["accum"] == FixedType(20, 8)
    for name in ("weight", "bias", "accum", "output"):
        assert getattr(layer, f"{name}_quantizer") is not None
    assert "bias" not in QLinear(3, 2, bias=False).formats()
    constants = layer.constants()
    weight = constants["weight"]
    assert isinstance(weight, FixedConstant) and weight.codes.dtype == torch.int64
    frac = torch.tensor([t.frac_bits for t in weight.format], dtype=torch.float64).view(3, 1, 1, 1)
    assert torch.equal(weight.codes.double() * torch.exp2(-frac), weight.values)
    bn = QBatchNorm2d(3)
    assert list(bn.formats()) == ["scale", "shift", "output"] and len(bn.formats()["scale"]) == 3
    assert list(QLeakyReLU().formats()) == ["slope", "output"]
    assert list(QAvgPool2d(3).formats()) == ["divisor", "output"]
    assert QFlatten().formats() == {} and QMaxPool2d(2).formats() == {}


def test_extra_repr_shows_the_formats() -> None:
    layer = QLinear(4, 2, cfg=LayerQConfig(weight_granularity="channel"))
    layer.weight_quantizer.set_int_bits(torch.tensor([0.0, 2.0]))
    text = repr(layer)
    assert "weight=ap_fixed<8,0..2,AP_RND_CONV,AP_SAT> x2 channels" in text
    assert "output=ap_fixed<8,3,AP_RND_CONV,AP_SAT>" in text and "input_width=8" in text
    assert "divisor=ap_ufixed<16,-3,AP_RND_CONV,AP_SAT>" in repr(QAvgPool2d(3))


# -------------------------------------------------------------- from_float
def test_linear_and_conv_from_float() -> None:
    g = gen(4)
    cases = [
        (nn.Linear(20, 7), QLinear, (16, 20)),
        (nn.Linear(5, 3, bias=False), QLinear, (4, 5)),
        (nn.Conv1d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2), QConv1d, (4, 4, 15)),
        (nn.Conv2d(4, 8, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=4), QConv2d, (4, 4, 9, 8)),
        (nn.Conv2d(3, 5, 3, padding="same", bias=False), QConv2d, (2, 3, 6, 6)),
    ]
    for module, cls, shape in cases:
        layer = cls.from_float(module, WIDE, input_width=16).eval()
        assert torch.equal(layer.weight, module.weight)
        assert (layer.bias is None) == (module.bias is None)
        if isinstance(module, nn.Conv2d | nn.Conv1d):
            for attr in ("stride", "padding", "dilation", "groups", "kernel_size"):
                assert getattr(layer, attr) == getattr(module, attr), attr
        x = ref.random_fixed(g, shape, FixedType(16, 4))
        torch.testing.assert_close(layer(x), module(x).detach(), atol=0.01, rtol=0)


@pytest.mark.parametrize("cls, float_cls", [(QBatchNorm1d, nn.BatchNorm1d), (QBatchNorm2d, nn.BatchNorm2d)])
def test_batchnorm_from_float(cls, float_cls) -> None:
    g = gen(5)
    f = float_cls(4, eps=1e-3, momentum=0.2)
    shape = (32, 4) if float_cls is nn.BatchNorm1d else (32, 4, 3, 3)
    for _ in range(5):
        f(torch.randn(shape, generator=g) * 2 + 0.5)
    with torch.no_grad():
        f.weight.uniform_(0.5, 1.5, generator=g)
        f.bias.uniform_(-1, 1, generator=g)
    f.eval()
    q = cls.from_float(f, WIDE, input_width=16).eval()
    assert (q.eps, q.momentum, int(q.num_batches_tracked)) == (1e-3, 0.2, 5)
    x = ref.random_fixed(g, shape, FixedType(16, 4))
    torch.testing.assert_close(q(x), f(x).detach(), atol=0.01, rtol=0)
    bare = cls.from_float(float_cls(4, affine=False).eval())
    assert bare.weight is None and bare(torch.zeros(shape)).shape == shape


def test_activations_and_pooling_from_float() -> None:
    x = ref.random_fixed(gen(6), (4, 3, 6, 6), FixedType(16, 4))
    pairs = [
        (nn.ReLU(), QReLU), (nn.ReLU6(), QReLU6), (nn.LeakyReLU(0.2), QLeakyReLU),
        (nn.MaxPool2d(3, 2, 1), QMaxPool2d), (nn.AvgPool2d(2), QAvgPool2d),
        (nn.AvgPool2d(3, 1, 1), QAvgPool2d), (nn.AdaptiveAvgPool2d(1), QAdaptiveAvgPool2d),
        (nn.AdaptiveAvgPool2d((1, 1)), QAdaptiveAvgPool2d), (nn.Flatten(), QFlatten),
    ]
    for module, cls in pairs:
        layer = cls.from_float(module, WIDE).eval()
        torch.testing.assert_close(layer(x), module(x), atol=2 ** -9, rtol=0, msg=lambda m: f"{module}: {m}")
    assert QLeakyReLU.from_float(nn.LeakyReLU(0.2)).negative_slope == 0.2


# ------------------------------------------------------------------ errors
def test_unsupported_options_are_refused_with_a_fix() -> None:
    with pytest.raises(ValueError, match="padding_mode='reflect'.*pad the input explicitly"):
        QConv2d.from_float(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"))
    with pytest.raises(ValueError, match=r"output_size=1 \(global average pooling\) only.*QAvgPool2d"):
        QAdaptiveAvgPool2d(2)
    with pytest.raises(ValueError, match="output_size=1"):
        QAdaptiveAvgPool2d.from_float(nn.AdaptiveAvgPool2d((1, None)))
    with pytest.raises(ValueError, match="ceil_mode=True is not supported"):
        QAvgPool2d.from_float(nn.AvgPool2d(3, ceil_mode=True))
    with pytest.raises(ValueError, match="count_include_pad=False with padding"):
        QAvgPool2d.from_float(nn.AvgPool2d(3, padding=1, count_include_pad=False))
    with pytest.raises(ValueError, match="divisor_override"):
        QAvgPool2d.from_float(nn.AvgPool2d(3, divisor_override=8))
    with pytest.raises(ValueError, match="return_indices"):
        QMaxPool2d.from_float(nn.MaxPool2d(2, return_indices=True))
    with pytest.raises(ValueError, match="track_running_stats=False.*running statistics"):
        QBatchNorm2d.from_float(nn.BatchNorm2d(3, track_running_stats=False))
    with pytest.raises(TypeError, match=r"QConv2d.from_float expects an nn.Conv2d, got Conv1d"):
        QConv2d.from_float(nn.Conv1d(2, 2, 3))
    with pytest.raises(TypeError, match="QReLU.from_float expects an nn.ReLU"):
        QReLU.from_float(nn.ReLU6())
    with pytest.raises(ValueError, match="divisible by groups"):
        QConv2d(3, 4, 3, groups=2)


def test_batchnorm_input_errors() -> None:
    with pytest.raises(ValueError, match=r"QBatchNorm2d\(3, .*expects a 4-d input with 3 channels"):
        QBatchNorm2d(3)(torch.zeros(2, 4, 3, 3))
    with pytest.raises(ValueError, match="more than one value per channel.*larger batch or eval mode"):
        QBatchNorm1d(3).train()(torch.zeros(1, 3))
    assert QBatchNorm1d(3).eval()(torch.zeros(1, 3)).shape == (1, 3)


def test_global_pool_refits_its_divisor_per_input_size() -> None:
    layer = QAdaptiveAvgPool2d(1).eval()
    layer(torch.zeros(1, 1, 3, 3))
    assert layer.window == 9 and layer.formats()["divisor"].int_bits == -3
    layer(torch.zeros(1, 1, 8, 8))
    assert layer.window == 64 and layer.formats()["divisor"].int_bits == 1 - int(math.log2(64))
    given = QAdaptiveAvgPool2d(1, cfg=LayerQConfig(divisor=FixedType(12, 0, signed=False)))
    given(torch.zeros(1, 1, 4, 4))
    assert given.formats()["divisor"] == FixedType(12, 0, signed=False)  # an explicit format is kept


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("affine", [True, False])
def test_batchnorm_fold_node_equals_the_torch_ops(dtype, affine) -> None:
    """scale = gamma / sqrt(var + eps), shift = beta - mean * scale as one node: the values of the PyTorch ops,
    bit for bit, and their gradients to rounding."""
    from qfx.nn.batchnorm import _FoldStatistics

    g = torch.Generator().manual_seed(3)
    mean = torch.randn(16, generator=g, dtype=dtype, requires_grad=True)
    var = (torch.rand(16, generator=g, dtype=dtype) + 0.1).requires_grad_()
    gamma = torch.randn(16, generator=g, requires_grad=True) if affine else None
    beta = torch.randn(16, generator=g, requires_grad=True) if affine else None
    leaves = (mean, var) + ((gamma, beta) if affine else ())
    upstream = torch.randn(16, generator=g, dtype=dtype), torch.randn(16, generator=g, dtype=dtype)
    scale, shift = _FoldStatistics.apply(mean, var, gamma, beta, 1e-5)
    (scale * upstream[0] + shift * upstream[1]).sum().backward()
    got = [t.grad for t in leaves]
    for t in leaves:
        t.grad = None
    r = 1 / torch.sqrt(var + 1e-5)
    scale_ref = gamma.to(dtype) * r if affine else r
    shift_ref = beta.to(dtype) - mean * scale_ref if affine else -mean * scale_ref
    assert torch.equal(scale, scale_ref) and torch.equal(shift, shift_ref)
    (scale_ref * upstream[0] + shift_ref * upstream[1]).sum().backward()
    for a, t in zip(got, leaves):
        torch.testing.assert_close(a, t.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("learn, overflow, rounding, affine, dtype", [
    (True, "SAT", "RND_CONV", True, torch.float32), (False, "SAT", "RND_CONV", True, torch.float32),
    (True, "WRAP", "RND_CONV", True, torch.float32), (False, "WRAP", "RND_CONV", True, torch.float32),
    (True, "SAT_SYM", "TRN", True, torch.float64), (True, "SAT_ZERO", "RND", False, torch.float32),
    (True, "SAT", "RND_CONV", False, torch.float64)])
def test_batchnorm_fold_and_casts_as_one_node_train_like_the_separate_casts(learn: bool, overflow: str,
                                                                              rounding: str, affine: bool,
                                                                              dtype: torch.dtype) -> None:
    """The fold with the scale and shift casts in the same node gives the values and gradients of the fold
    followed by the two quantizers' own casts, bit for bit, step after step (moves folded in between)."""
    cfg = LayerQConfig(scale=FixedType(8, 3, rounding=rounding, overflow=overflow),
                       shift=FixedType(8, 2, rounding=rounding, overflow=overflow),
                       learn_int_bits=learn)
    torch.manual_seed(4)
    fast = QBatchNorm2d(6, affine=affine, cfg=cfg).train().to(dtype)
    if affine:
        with torch.no_grad():
            fast.weight.uniform_(0.5, 4.0)
            fast.bias.uniform_(-3.0, 3.0)
    slow = copy.deepcopy(fast)
    slow._fold_and_cast = lambda mean, var: None  # the separate nodes
    x = (torch.randn(4, 6, 5, 7) * 2 + (0 if affine else 1.5)).to(dtype)
    for _ in range(3):
        results = []
        for layer in (fast, slow):
            layer.zero_grad(set_to_none=True)
            out = layer(x)
            (out * torch.linspace(-2, 1, out.numel()).view_as(out)).sum().backward()
            results.append((out, {n: p.grad for n, p in layer.named_parameters()}))
            with torch.no_grad():
                for n, p in layer.named_parameters():
                    p.sub_((1e-4 if n.endswith("move") else 0.05) * p.grad)
        (out, grads), (out_ref, grads_ref) = results
        assert torch.equal(out, out_ref)
        assert grads.keys() == grads_ref.keys() and all(torch.equal(grads[n], grads_ref[n]) for n in grads)
        assert torch.equal(fast.running_mean, slow.running_mean) and torch.equal(fast.running_var, slow.running_var)
        assert fast._fold_and_cast(x.mean((0, 2, 3)), x.var((0, 2, 3))) is not None  # the one node was taken


def test_batchnorm_training_step_frees_its_graph() -> None:
    """Nothing of a step outlives it: no autograd node holds its own outputs (a cycle that is never freed)."""
    layer = QBatchNorm2d(6, cfg=LayerQConfig(learn_int_bits=True)).train()
    x = torch.randn(4, 6, 5, 7)
    assert layer._fold_and_cast(x.mean((0, 2, 3)), x.var((0, 2, 3))) is not None  # the one-node path
    out = layer(x)
    nodes, seen = [out.grad_fn], []
    while nodes:  # every node of the step's graph
        node = nodes.pop()
        if isinstance(node, torch.autograd.function.BackwardCFunction):  # a custom node: its ctx
            seen.append(weakref.ref(node))
        nodes += [n for n, _ in node.next_functions if n is not None]
    out.sum().backward()
    del out, node
    gc.collect()
    assert len(seen) >= 3 and all(alive() is None for alive in seen)


def test_batchnorm_fold_node_refuses_a_non_finite_binary_point_gradient() -> None:
    """A NaN reaching the folded scale is refused by its quantizer's check, as its own cast would refuse it."""
    from qfx.nn.quantizers import NonFiniteError

    layer = QBatchNorm2d(6, cfg=LayerQConfig(learn_int_bits=True)).train()
    x = torch.randn(4, 6, 5, 7)
    folded = layer._fold_and_cast(x.mean((0, 2, 3)), x.var((0, 2, 3)))
    assert folded is not None  # the one-node path
    scale, shift = folded
    with pytest.raises(NonFiniteError, match=r"gradient of its learned binary point"):
        (scale * float("nan") + shift).sum().backward()
