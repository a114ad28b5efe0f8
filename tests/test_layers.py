"""Eval mode of the quantized layers is bit-exact: every output element equals the integer reference.

Each test builds fixed-point inputs, runs the layer in eval mode and compares
its output codes with :mod:`layer_reference`, which redoes the arithmetic in
NumPy int64 from the integer codes of the inputs and of the quantized
constants (the casts at the end go through ``qfx.to_codes`` on exact values).
Covered: odd shapes (1x1 kernels, non-square, stride, padding, dilation,
groups), batch 1 and 64, every rounding and overflow mode at the output and
the accumulator, per-channel and K-hot weights, K-hot BN scales, both dtype
paths (float32 and float64) and the refusal beyond 53 bits.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Callable, Optional

import numpy as np
import pytest
import torch

import qfx
from qfx import FixedType
from qfx.khot import csd_digits
from qfx.nn import (LayerQConfig, QAdaptiveAvgPool2d, QAdd, QAvgPool2d, QBatchNorm1d, QBatchNorm2d, QConv1d,
                    QConv2d, QFlatten, QInput, QLeakyReLU, QLinear, QMaxPool2d, QReLU, QReLU6)

import layer_reference as ref

X8 = FixedType(8, 3)  # the usual input: ap_fixed<8,3>, 5 fractional bits
OUTPUTS = [
    FixedType(8, 3, rounding="RND_CONV", overflow="SAT"),
    FixedType(6, 2),  # TRN, WRAP
    FixedType(9, 4, rounding="RND", overflow="SAT_SYM"),
    FixedType(7, 3, signed=False, rounding="RND_ZERO", overflow="SAT_ZERO"),
    FixedType(8, 2, rounding="RND_INF", overflow="WRAP", sat_bits=2),
    FixedType(10, 3, rounding="TRN_ZERO", overflow="WRAP_SM"),
    FixedType(8, 3, rounding="RND_MIN_INF", overflow="WRAP_SM", sat_bits=1),
]
ACCUMS = [None, FixedType(12, 5), FixedType(14, 4, rounding="RND_CONV", overflow="SAT")]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def out_codes(y: torch.Tensor, layer: torch.nn.Module) -> np.ndarray:
    """The layer's output as codes of its output format (asserting it lies on that grid)."""
    return ref.codes(y.detach(), layer.formats()["output"])


def fracs(fmt, shape: tuple[int, ...]) -> np.ndarray:
    """Fractional bits of a format (or per-channel list), shaped to broadcast along a channel axis."""
    fmts = fmt if isinstance(fmt, list) else [fmt]
    return np.array([t.frac_bits for t in fmts]).reshape(shape if isinstance(fmt, list) else ())


def quantized_codes(quantizer, value: torch.Tensor, fmt) -> np.ndarray:
    """Codes of ``quantizer(value)``: per channel along dimension 0 for a per-channel format."""
    with torch.no_grad():
        q = quantizer(value)
    if not isinstance(fmt, list):
        return ref.codes(q, fmt)
    return np.stack([ref.codes(q[c], t) for c, t in enumerate(fmt)])


# ------------------------------------------------------------ dot products
def expected_dot(layer, x: torch.Tensor, tx: FixedType, product: Callable[[np.ndarray, np.ndarray], np.ndarray],
                 channel_shape: tuple[int, ...]) -> np.ndarray:
    """Reference output codes of a Linear/Conv layer: exact integer dot product, bias aligned, casts."""
    fmt = layer.formats()
    w = quantized_codes(layer.weight_quantizer, layer.weight, fmt["weight"])
    acc = product(ref.codes(x, tx), w)
    frac = tx.frac_bits + fracs(fmt["weight"], channel_shape)
    if layer.bias is not None:
        b = quantized_codes(layer.bias_quantizer, layer.bias, fmt["bias"]).reshape(channel_shape)
        acc, frac = ref.align_add(acc, frac, b, fmt["bias"].frac_bits)
    if "accum" in fmt:
        acc, frac = ref.cast(acc, frac, fmt["accum"]), fmt["accum"].frac_bits
    return ref.cast(acc, frac, fmt["output"])


def linear_product(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return np.einsum("...i,oi->...o", x, w)


def check_linear(layer: QLinear, x: torch.Tensor, tx: FixedType) -> np.ndarray:
    """Run ``layer`` in eval mode on ``x`` and assert every element equals the reference; return the codes."""
    layer.eval()
    expected = expected_dot(layer, x, tx, linear_product, (layer.out_features,))
    got = out_codes(layer(x), layer)
    np.testing.assert_array_equal(got, expected)
    return expected


@pytest.mark.parametrize("accum", ACCUMS, ids=str)
@pytest.mark.parametrize("output", OUTPUTS, ids=str)
def test_linear_every_mode(output: FixedType, accum: Optional[FixedType]) -> None:
    g = gen(1)
    cfg = LayerQConfig(output=output, accum=accum)
    layer = QLinear(37, 5, cfg=cfg, input_width=8)
    torch.nn.init.normal_(layer.weight, std=0.7, generator=g)  # some weights saturate at ap_fixed<8,1>
    torch.nn.init.normal_(layer.bias, std=2.0, generator=g)
    x = ref.random_fixed(g, (64, 37), X8)
    assert layer.compute_dtype() == torch.float32  # 8 + 8 + 6 bits
    codes = check_linear(layer, x, X8)
    assert len(np.unique(codes)) > 10


@pytest.mark.parametrize("batch, in_features, out_features, bias", [
    ((1,), 1, 1, True), ((64,), 3, 7, False), ((2, 3), 17, 4, True), ((1, 1), 256, 2, True),
])
def test_linear_shapes(batch: tuple[int, ...], in_features: int, out_features: int, bias: bool) -> None:
    g = gen(2)
    layer = QLinear(in_features, out_features, bias, input_width=8)
    x = ref.random_fixed(g, batch + (in_features,), X8)
    check_linear(layer, x, X8)


@pytest.mark.parametrize("bias_type", [FixedType(10, 3), FixedType(24, 2, rounding="RND_CONV"), FixedType(6, 6)],
                         ids=str)
def test_linear_bias_alignment(bias_type: FixedType) -> None:
    """Bias binary points coarser and finer than the products' (the finer one needs the float64 add)."""
    g = gen(3)
    cfg = LayerQConfig(bias=bias_type, output=FixedType(40, 12, rounding="RND_CONV"))  # keeps every bit
    layer = QLinear(200, 6, cfg=cfg, input_width=8)
    torch.nn.init.normal_(layer.weight, std=0.5, generator=g)  # sums up to about 2**6
    torch.nn.init.uniform_(layer.bias, -2, 2, generator=g)
    check_linear(layer, ref.random_fixed(g, (16, 200), X8), X8)


def test_linear_per_channel_and_khot_weights() -> None:
    g = gen(4)
    cfg = LayerQConfig(weight=FixedType(8, 1), weight_granularity="channel", weight_khot=2,
                       output=FixedType(10, 4, rounding="RND_CONV", overflow="SAT"))
    layer = QLinear(24, 4, cfg=cfg, input_width=8)
    layer.weight_quantizer.set_int_bits(torch.tensor([-1.0, 0.0, 1.0, 2.0]))
    torch.nn.init.normal_(layer.weight, std=0.6, generator=g)
    check_linear(layer, ref.random_fixed(g, (64, 24), X8), X8)
    weights = layer.constants()["weight"]
    assert [t.int_bits for t in weights.format] == [-1, 0, 1, 2]
    assert max(csd_digits(c) for c in weights.codes.flatten().tolist()) <= 2


def test_linear_unsigned_input() -> None:
    tx = FixedType(8, 4, signed=False)
    layer = QLinear(30, 3, cfg=LayerQConfig(output=FixedType(9, 6, overflow="SAT")), input_width=8)
    check_linear(layer, ref.random_fixed(gen(5), (64, 30), tx), tx)


def test_linear_wide_formats_use_float64() -> None:
    """20-bit inputs, 16-bit weights, 64 products: 42 bits, beyond float32."""
    g = gen(6)
    tx = FixedType(20, 6)
    cfg = LayerQConfig(weight=FixedType(16, 2, rounding="RND_CONV"), bias=FixedType(24, 8),
                       accum=FixedType(40, 16, rounding="RND", overflow="SAT"),
                       output=FixedType(30, 14, rounding="RND_CONV", overflow="SAT"))
    layer = QLinear(64, 8, cfg=cfg, input_width=20)
    torch.nn.init.normal_(layer.weight, std=0.5, generator=g)
    x = ref.random_fixed(g, (64, 64), tx)
    check_linear(layer.eval(), x, tx)
    assert layer.compute_dtype() == torch.float64
    assert layer(x).dtype == torch.float64  # 30-bit output does not fit float32


def test_too_wide_is_refused_with_a_fix() -> None:
    cfg = LayerQConfig(weight=FixedType(24, 2))
    layer = QLinear(4, 2, cfg=cfg, input_width=30).eval()
    with pytest.raises(ValueError, match=r"QLinear\(in_features=4, out_features=2.*30 \(input_width\) \+ 24 "
                                         r"\(weight width\) \+ 2 .* = 56 bits.*narrow"):
        layer(torch.zeros(1, 4))
    conv = QConv2d(64, 8, 3, cfg=LayerQConfig(weight=FixedType(20, 2)), input_width=24).eval()
    with pytest.raises(ValueError, match=r"QConv2d\(64, 8, kernel_size=\(3, 3\).*= 54 bits"):
        conv(torch.zeros(1, 64, 5, 5))


CONV2D_CASES = {
    "3x3-pad1-batch64": dict(n=64, c=3, o=4, size=(6, 6), kernel=3, stride=1, padding=1, dilation=1, groups=1),
    "1x1-nonsquare-batch1": dict(n=1, c=4, o=6, size=(5, 9), kernel=1, stride=1, padding=0, dilation=1, groups=1),
    "3x2-stride-dilation-groups": dict(n=2, c=4, o=4, size=(8, 7), kernel=(3, 2), stride=(2, 1), padding=(1, 0),
                                       dilation=(1, 2), groups=2),
    "depthwise-stride2": dict(n=3, c=4, o=4, size=(7, 7), kernel=3, stride=2, padding=1, dilation=1, groups=4),
}
CONV1D_CASES = {
    "k3-stride2-pad1-batch64": dict(n=64, c=2, o=5, size=(11,), kernel=3, stride=2, padding=1, dilation=1, groups=1),
    "k1-groups4-batch1": dict(n=1, c=4, o=4, size=(9,), kernel=1, stride=1, padding=0, dilation=1, groups=4),
    "k4-dilation2-groups3": dict(n=5, c=6, o=3, size=(10,), kernel=4, stride=1, padding=2, dilation=2, groups=3),
}
CONV_CONFIGS = {
    "rnd_conv-sat": LayerQConfig(),
    "trn-wrap-accum-per-channel": LayerQConfig(output=FixedType(6, 2), accum=FixedType(12, 5, rounding="RND"),
                                               weight_granularity="channel"),
    "khot-sat_sym": LayerQConfig(weight_khot=2, output=FixedType(9, 4, rounding="RND", overflow="SAT_SYM")),
}


def _tuple(v, n: int) -> tuple[int, ...]:
    return (v,) * n if isinstance(v, int) else tuple(v)


@pytest.mark.parametrize("config", CONV_CONFIGS, ids=str)
@pytest.mark.parametrize("dims, case", [(2, c) for c in CONV2D_CASES] + [(1, c) for c in CONV1D_CASES])
def test_conv(dims: int, case: str, config: str) -> None:
    p = (CONV2D_CASES if dims == 2 else CONV1D_CASES)[case]
    cfg = CONV_CONFIGS[config]
    g = gen(7)
    cls = QConv2d if dims == 2 else QConv1d
    layer = cls(p["c"], p["o"], p["kernel"], p["stride"], p["padding"], p["dilation"], p["groups"], cfg=cfg,
                input_width=8).eval()
    torch.nn.init.normal_(layer.weight, std=0.5, generator=g)
    torch.nn.init.normal_(layer.bias, std=1.0, generator=g)
    if cfg.weight_granularity == "channel":
        layer.weight_quantizer.set_int_bits(torch.arange(p["o"], dtype=torch.float32) % 3 - 1)
    x = ref.random_fixed(g, (p["n"], p["c"]) + p["size"], X8)

    def product(xc: np.ndarray, wc: np.ndarray) -> np.ndarray:
        return ref.conv(xc, wc, _tuple(p["stride"], dims), _tuple(p["padding"], dims), _tuple(p["dilation"], dims),
                        p["groups"])

    expected = expected_dot(layer, x, X8, product, (p["o"],) + (1,) * dims)
    y = layer(x)
    assert y.shape == expected.shape
    np.testing.assert_array_equal(out_codes(y, layer), expected)
    if cfg.weight_khot:
        assert max(csd_digits(c) for c in layer.constants()["weight"].codes.flatten().tolist()) <= cfg.weight_khot


def test_conv_wide_uses_float64() -> None:
    g = gen(8)
    tx = FixedType(16, 4)
    cfg = LayerQConfig(weight=FixedType(12, 1), output=FixedType(20, 8, rounding="RND_CONV", overflow="SAT"))
    layer = QConv2d(8, 4, 3, padding=1, cfg=cfg, input_width=16).eval()
    x = ref.random_fixed(g, (4, 8, 5, 5), tx)
    expected = expected_dot(layer, x, tx, lambda a, b: ref.conv(a, b, (1, 1), (1, 1), (1, 1), 1), (4, 1, 1))
    np.testing.assert_array_equal(out_codes(layer(x), layer), expected)
    assert layer.compute_dtype() == torch.float64  # 16 + 12 + 7 bits


# ------------------------------------------------------------- batch norm
def randomize_bn(bn, g: torch.Generator) -> None:
    c = bn.num_features
    with torch.no_grad():
        bn.weight.copy_(torch.randn(c, generator=g) * 1.5)
        bn.bias.copy_(torch.randn(c, generator=g))
        bn.running_mean.copy_(torch.randn(c, generator=g))
        bn.running_var.copy_(torch.rand(c, generator=g) * 3 + 0.2)


def expected_bn(bn, x: torch.Tensor, tx: FixedType) -> np.ndarray:
    """Reference BN: scale and shift folded in float64 here, quantized, then integer product and aligned sum."""
    fmt = bn.formats()
    gamma, beta = bn.weight.detach().double(), bn.bias.detach().double()
    scale = gamma / torch.sqrt(bn.running_var.double() + bn.eps)
    shift = beta - bn.running_mean.double() * scale
    channel = (bn.num_features,) + (1,) * (x.dim() - 2)
    s = quantized_codes(bn.scale_quantizer, scale, fmt["scale"]).reshape(channel)
    sh = quantized_codes(bn.shift_quantizer, shift, fmt["shift"]).reshape(channel)
    acc, frac = ref.align_add(ref.codes(x, tx) * s, tx.frac_bits + fracs(fmt["scale"], channel),
                              sh, fracs(fmt["shift"], channel))
    constants = bn.constants()
    np.testing.assert_array_equal(constants["scale"].codes.numpy(), s.reshape(-1))
    np.testing.assert_array_equal(constants["shift"].codes.numpy(), sh.reshape(-1))
    return ref.cast(acc, frac, fmt["output"])


@pytest.mark.parametrize("output", OUTPUTS[:4], ids=str)
@pytest.mark.parametrize("cls, shape", [(QBatchNorm2d, (64, 5, 4, 3)), (QBatchNorm1d, (64, 6)),
                                        (QBatchNorm1d, (1, 3, 7)), (QBatchNorm2d, (1, 2, 1, 1))])
def test_batchnorm(cls, shape: tuple[int, ...], output: FixedType) -> None:
    g = gen(9)
    c = shape[1]
    bn = cls(c, cfg=LayerQConfig(output=output), input_width=8).eval()
    randomize_bn(bn, g)
    bn.scale_quantizer.set_int_bits(torch.arange(c, dtype=torch.float32) % 3)  # per-channel binary points
    bn.shift_quantizer.set_int_bits(torch.arange(c, dtype=torch.float32) % 2 + 2)
    x = ref.random_fixed(g, shape, X8)
    np.testing.assert_array_equal(out_codes(bn(x), bn), expected_bn(bn, x, X8))
    assert bn.compute_dtype() == torch.float32  # 8 + 8 bits


@pytest.mark.parametrize("khot", [None, 2])
def test_batchnorm_khot_scales_and_float64(khot: Optional[int]) -> None:
    g = gen(10)
    tx = FixedType(20, 5)
    cfg = LayerQConfig(scale=FixedType(16, 3), scale_khot=khot, shift=FixedType(18, 6),
                       output=FixedType(36, 8, rounding="RND_CONV", overflow="SAT"))  # keeps every bit
    bn = QBatchNorm2d(7, cfg=cfg, input_width=20).eval()
    randomize_bn(bn, g)
    x = ref.random_fixed(g, (8, 7, 3, 3), tx)
    np.testing.assert_array_equal(out_codes(bn(x), bn), expected_bn(bn, x, tx))
    assert bn.compute_dtype() == torch.float64  # 20 + 16 bits
    scale_codes = bn.constants()["scale"].codes.tolist()
    assert max(csd_digits(code) for code in scale_codes) <= (khot or 16)
    assert len(set(scale_codes)) > 3


# ------------------------------------------------------------ elementwise
def test_input_is_the_exact_cast() -> None:
    t = FixedType(10, 3, rounding="RND_CONV", overflow="SAT")
    layer = QInput(LayerQConfig(output=t)).eval()
    x = torch.randn(64, 9, generator=gen(11)) * 3
    np.testing.assert_array_equal(out_codes(layer(x), layer), qfx.to_codes(x.double(), t).numpy())
    assert layer(x).dtype == torch.float32
    assert layer(x.half()).dtype == torch.float32
    assert layer(torch.arange(5)).dtype == torch.float64  # integers go through float64
    wide = QInput(LayerQConfig(output=FixedType(30, 10))).eval()
    assert wide(x).dtype == torch.float64


@pytest.mark.parametrize("output", OUTPUTS[:5], ids=str)
def test_relu_and_relu6(output: FixedType) -> None:
    tx = FixedType(10, 5)  # range [-16, 16): reaches past 6
    x = ref.random_fixed(gen(12), (64, 3, 5), tx)
    xc = ref.codes(x, tx)
    relu = QReLU(LayerQConfig(output=output)).eval()
    np.testing.assert_array_equal(out_codes(relu(x), relu), ref.cast(np.maximum(xc, 0), tx.frac_bits, output))
    relu6 = QReLU6.from_float(torch.nn.ReLU6(), LayerQConfig(output=output)).eval()
    clipped = np.minimum(np.maximum(xc, 0), 6 << tx.frac_bits)
    np.testing.assert_array_equal(out_codes(relu6(x), relu6), ref.cast(clipped, tx.frac_bits, output))


@pytest.mark.parametrize("slope, slope_type", [(0.1, None), (0.01, None), (-0.25, None), (1.5, None),
                                               (0.3, FixedType(4, 0, signed=False, rounding="RND_CONV"))])
@pytest.mark.parametrize("output", OUTPUTS[:3], ids=str)
def test_leaky_relu(slope: float, slope_type: Optional[FixedType], output: FixedType) -> None:
    x = ref.random_fixed(gen(13), (64, 10), X8)
    layer = QLeakyReLU(slope, cfg=LayerQConfig(output=output, slope=slope_type), input_width=8).eval()
    t_slope = layer.formats()["slope"]
    if slope_type is None:  # the 16-bit format fitted to the slope
        assert t_slope.width == 16 and 2 ** (t_slope.int_bits - 1 - t_slope.signed) <= abs(slope) < 2 ** t_slope.int_bits
    s = int(qfx.to_codes(torch.tensor(slope, dtype=torch.float64), t_slope))
    xc = ref.codes(x, X8)
    acc = np.where(xc >= 0, xc << t_slope.frac_bits, xc * s)
    expected = ref.cast(acc, X8.frac_bits + t_slope.frac_bits, output)
    np.testing.assert_array_equal(out_codes(layer(x), layer), expected)
    assert layer.constants()["slope"].codes.item() == s
    assert layer.compute_dtype() == (torch.float32 if t_slope.width <= 16 else torch.float64)


@pytest.mark.parametrize("output", OUTPUTS, ids=str)
def test_add_of_two_formats(output: FixedType) -> None:
    g = gen(14)
    ta, tb = FixedType(8, 3), FixedType(12, 2, signed=False)
    a, b = ref.random_fixed(g, (64, 4, 3), ta), ref.random_fixed(g, (64, 4, 3), tb)
    layer = QAdd(LayerQConfig(output=output)).eval()
    acc, frac = ref.align_add(ref.codes(a, ta), ta.frac_bits, ref.codes(b, tb), tb.frac_bits)
    np.testing.assert_array_equal(out_codes(layer(a, b), layer), ref.cast(acc, frac, output))


def test_nan_input_is_refused_by_the_cast() -> None:
    layer = QLinear(3, 2, input_width=8).eval()
    with pytest.raises(ValueError, match="NaN"):
        layer(torch.tensor([[0.5, float("nan"), 1.0]]))


def test_half_precision_inputs_are_widened() -> None:
    x = ref.random_fixed(gen(22), (4, 6), X8)
    layer = QLinear(6, 2, input_width=8).eval()
    y = layer(x.half())
    assert y.dtype == torch.float32 and torch.equal(y, layer(x))


def test_add_far_apart_binary_points() -> None:
    """24-bit operands whose sum spans 45 bits: float32 rounds, float64 is exact; 65 bits are refused."""
    g = gen(15)
    ta, tb = FixedType(24, 30), FixedType(24, 10)
    a, b = ref.random_fixed(g, (64,), ta), ref.random_fixed(g, (64,), tb)
    out = FixedType(40, 31, rounding="RND_CONV", overflow="SAT")
    layer = QAdd(LayerQConfig(output=out)).eval()
    acc, frac = ref.align_add(ref.codes(a, ta), ta.frac_bits, ref.codes(b, tb), tb.frac_bits)
    np.testing.assert_array_equal(out_codes(layer(a, b), layer), ref.cast(acc, frac, out))
    with pytest.raises(ValueError, match="QAdd.*53 bits.*binary points"):
        layer(a, ref.random_fixed(g, (64,), FixedType(24, -10)))


# ---------------------------------------------------------------- pooling
POOL_CASES = [
    dict(kernel=2, stride=None, padding=0, size=(6, 6)),
    dict(kernel=3, stride=1, padding=1, size=(5, 7)),
    dict(kernel=(3, 2), stride=(2, 1), padding=(1, 0), size=(7, 5)),
    dict(kernel=1, stride=1, padding=0, size=(3, 3)),
]


@pytest.mark.parametrize("p", POOL_CASES, ids=str)
@pytest.mark.parametrize("batch", [1, 64])
def test_max_pool(p: dict, batch: int) -> None:
    x = ref.random_fixed(gen(16), (batch, 3) + p["size"], X8)
    k, s, pad = _tuple(p["kernel"], 2), _tuple(p["stride"] or p["kernel"], 2), _tuple(p["padding"], 2)
    expected = ref.window_max(ref.codes(x, X8), k, s, pad, (1, 1))
    plain = QMaxPool2d(p["kernel"], p["stride"], p["padding"]).eval()
    assert plain.formats() == {}
    np.testing.assert_array_equal(ref.codes(plain(x), X8), expected)  # the input format is kept
    out = FixedType(5, 2, rounding="RND_CONV", overflow="SAT")
    cast = QMaxPool2d(p["kernel"], p["stride"], p["padding"], cfg=LayerQConfig(output=out)).eval()
    np.testing.assert_array_equal(out_codes(cast(x), cast), ref.cast(expected, X8.frac_bits, out))


def test_max_pool_dilation() -> None:
    x = ref.random_fixed(gen(17), (2, 2, 9, 8), X8)
    layer = QMaxPool2d((3, 2), (1, 2), (1, 1), dilation=(2, 1)).eval()
    expected = ref.window_max(ref.codes(x, X8), (3, 2), (1, 2), (1, 1), (2, 1))
    np.testing.assert_array_equal(ref.codes(layer(x), X8), expected)


def divisor(n: int) -> tuple[FixedType, int]:
    """The 16-bit unsigned format fitted to 1/n and the code of 1/n in it, computed with Python integers."""
    int_bits = 1 - (n - 1).bit_length()  # 1/n lies in [2**(int_bits-1), 2**int_bits)
    t = FixedType(16, int_bits, signed=False, rounding="RND_CONV", overflow="SAT")
    return t, round(Fraction(2 ** t.frac_bits, n))  # Fraction rounds half to even, as RND_CONV


@pytest.mark.parametrize("p", POOL_CASES, ids=str)
@pytest.mark.parametrize("output", OUTPUTS[:4], ids=str)
def test_avg_pool(p: dict, output: FixedType) -> None:
    x = ref.random_fixed(gen(18), (64, 3) + p["size"], X8)
    layer = QAvgPool2d(p["kernel"], p["stride"], p["padding"], cfg=LayerQConfig(output=output),
                       input_width=8).eval()
    k, s, pad = _tuple(p["kernel"], 2), _tuple(p["stride"] or p["kernel"], 2), _tuple(p["padding"], 2)
    t_div, d = divisor(k[0] * k[1])
    assert layer.formats()["divisor"] == t_div and layer.constants()["divisor"].codes.item() == d
    sums = ref.window_sum(ref.codes(x, X8), k, s, pad)
    expected = ref.cast(sums * d, X8.frac_bits + t_div.frac_bits, output)
    np.testing.assert_array_equal(out_codes(layer(x), layer), expected)


def test_avg_pool_float32_path_with_a_given_divisor() -> None:
    t_div = FixedType(8, -1, signed=False, rounding="TRN")  # 1/9 = 0.000111000111..b -> code 56 of 2**-9
    layer = QAvgPool2d(3, cfg=LayerQConfig(divisor=t_div, output=FixedType(8, 2)), input_width=8).eval()
    assert layer.compute_dtype() == torch.float32  # 8 + 4 + 8 bits
    x = ref.random_fixed(gen(19), (64, 2, 6, 6), X8)
    sums = ref.window_sum(ref.codes(x, X8), (3, 3), (3, 3), (0, 0))
    expected = ref.cast(sums * 56, X8.frac_bits + t_div.frac_bits, FixedType(8, 2))
    np.testing.assert_array_equal(out_codes(layer(x), layer), expected)


@pytest.mark.parametrize("size", [(7, 7), (4, 4), (5, 3), (1, 1)])
@pytest.mark.parametrize("batch", [1, 64])
def test_global_avg_pool(size: tuple[int, int], batch: int) -> None:
    out = FixedType(8, 3, rounding="RND_CONV", overflow="SAT")
    x = ref.random_fixed(gen(20), (batch, 5) + size, X8)
    layer = QAdaptiveAvgPool2d(1, cfg=LayerQConfig(output=out), input_width=8).eval()
    y = layer(x)
    t_div, d = divisor(size[0] * size[1])
    assert y.shape == (batch, 5, 1, 1) and layer.formats()["divisor"] == t_div
    sums = ref.codes(x, X8).sum(axis=(2, 3), keepdims=True)
    np.testing.assert_array_equal(out_codes(y, layer), ref.cast(sums * d, X8.frac_bits + t_div.frac_bits, out))


def test_flatten_and_a_small_network_end_to_end() -> None:
    """QInput -> QConv2d -> QBatchNorm2d -> QReLU -> QMaxPool2d -> QFlatten -> QLinear, layer by layer."""
    g = gen(21)
    cfg = LayerQConfig()
    net = torch.nn.Sequential(QInput(cfg), QConv2d(2, 4, 3, padding=1, cfg=cfg), QBatchNorm2d(4, cfg=cfg),
                              QReLU(cfg), QMaxPool2d(2), QFlatten(), QLinear(36, 3, cfg=cfg)).eval()
    randomize_bn(net[2], g)
    x = torch.randn(64, 2, 6, 6, generator=g) * 2
    t = cfg.output
    h0 = net[0](x)
    np.testing.assert_array_equal(ref.codes(h0, t), qfx.to_codes(x.double(), t).numpy())
    h1 = net[1](h0)
    conv = lambda a, b: ref.conv(a, b, (1, 1), (1, 1), (1, 1), 1)  # noqa: E731
    np.testing.assert_array_equal(ref.codes(h1, t), expected_dot(net[1], h0, t, conv, (4, 1, 1)))
    h2 = net[2](h1)
    np.testing.assert_array_equal(ref.codes(h2, t), expected_bn(net[2], h1, t))
    h5 = net[5](net[4](net[3](h2)))
    assert h5.shape == (64, 36)
    np.testing.assert_array_equal(ref.codes(net(x), t), expected_dot(net[6], h5, t, linear_product, (3,)))
