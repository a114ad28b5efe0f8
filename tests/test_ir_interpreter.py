"""qfx.export and qfx.ir.run: the interpreter computes exactly what the PyTorch model computes in eval mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import qfx
from ir_zoo import CNN, MLP, ZOO, Odd, inputs, quantized
from qfx.format import Overflow, Rounding


def _assert_same(qm: torch.nn.Module, x: torch.Tensor) -> qfx.ir.Graph:
    graph = qfx.export(qm, x)
    expected = qm(x).detach().double().numpy()
    got = qfx.ir.run(graph, x.numpy())
    assert got.shape == expected.shape
    assert np.array_equal(got, expected), f"{int((got != expected).sum())} of {got.size} outputs differ"
    return graph


@pytest.mark.parametrize("name", sorted(ZOO))
@pytest.mark.parametrize("batch", [1, 64])
def test_zoo_matches_pytorch(name, batch):
    make, shape = ZOO[name]
    x = inputs(shape, batch=max(batch, 16))
    qm = quantized(make, x)
    _assert_same(qm, x[:batch])


def _narrow_outputs(qm: torch.nn.Module, by: int) -> None:
    """Lower every output binary point by ``by`` bits, so values overflow and the overflow mode matters."""
    for module in qm.modules():
        q = getattr(module, "output_quantizer", None)
        if q is not None and not isinstance(module, qfx.nn.QInput):
            q.set_int_bits(int(q.fixed_type.int_bits) - by)


@pytest.mark.parametrize("rounding", list(Rounding))
@pytest.mark.parametrize("overflow", list(Overflow))
def test_every_mode_matches_pytorch(rounding, overflow):
    x = inputs((12,), batch=48, seed=3)
    qm = quantized(MLP, x, qfx.QConfig(activation=6, weight=5, rounding=rounding, overflow=overflow))
    _narrow_outputs(qm, 2)
    graph = _assert_same(qm, x)
    codes = qfx.ir.run_codes(graph, [qfx.ir.input_codes(x.numpy(), graph.inputs[0].type)])
    hidden = graph.node("fc1").output.type
    if overflow in (Overflow.SAT, Overflow.SAT_SYM):  # the narrowed layer does saturate
        assert (np.abs(codes["fc1"]) >= hidden.code_max).any()


@pytest.mark.parametrize("overflow", ["WRAP", "WRAP_SM"])
@pytest.mark.parametrize("sat_bits", [1, 2, 5])
def test_saturation_bits_match_pytorch(overflow, sat_bits):
    x = inputs((12,), batch=48, seed=4)
    out = f"ap_fixed<5,1,AP_RND_INF,AP_{overflow},{sat_bits}>"
    qm = quantized(MLP, x, qfx.QConfig(activation=6, overrides={"fc1": {"output": out}, "fc2": {"output": out}}))
    _assert_same(qm, x)


def test_unsigned_and_accumulator_formats():
    x = inputs((12,), batch=48, seed=5)
    config = qfx.QConfig(accum="ap_fixed<10,4,AP_RND_ZERO,AP_WRAP>",
                         overrides={"relu": {"output": "ap_ufixed<6,2,AP_RND_MIN_INF,AP_SAT>"},
                                    "relu_1": {"output": "ap_ufixed<7,2,AP_TRN_ZERO,AP_WRAP,3>"}})
    graph = _assert_same(quantized(MLP, x, config), x)
    assert graph.node("fc1").formats["accum"] == qfx.FixedType.parse("ap_fixed<10,4,AP_RND_ZERO,AP_WRAP>")
    relus = [n for n in graph.nodes if n.op == "relu"]
    # calibration moves binary points; word length, sign and modes are the configured ones
    assert [(t.width, t.signed, t.rounding.value, t.overflow.value, t.sat_bits) for t in
            (n.output.type for n in relus)] == [(6, False, "RND_MIN_INF", "SAT", 0), (7, False, "TRN_ZERO", "WRAP", 3)]


def test_khot_and_per_channel_weights():
    x = inputs((2, 10, 6), batch=24, seed=6)
    config = qfx.QConfig(multiplier_free="khot:2", weight_granularity="channel", weight=6)
    graph = _assert_same(quantized(CNN, x, config), x)
    weight = graph.node("conv1").constants["weight"]
    assert weight.per_channel
    digits = [sum(1 for d in _csd(int(c)) if d) for c in weight.codes.ravel()]
    assert max(digits) <= 2


def _csd(n: int) -> list[int]:
    """Canonical signed digits of ``n``, least significant first (independent of qfx.khot)."""
    digits = []
    while n:
        if n & 1:
            d = 2 - (n & 3)
            n -= d
        else:
            d = 0
        digits.append(d)
        n >>= 1
    return digits


def test_learned_binary_points_export_as_eval_uses_them():
    x = inputs((4, 9), batch=32, seed=7)
    torch.manual_seed(0)
    qm = qfx.quantize_model(Odd(), qfx.QConfig(learn_int_bits=True), example_input=x)
    qfx.calibrate(qm, [x])
    optimizer = torch.optim.Adam(qm.parameters(), lr=0.05)
    qm.train()
    for _ in range(5):
        optimizer.zero_grad()
        qm(x).square().mean().backward()
        optimizer.step()
    qm.eval()
    _assert_same(qm, x)


def test_wide_accumulators_use_python_integers():
    x = inputs((12,), batch=8, seed=8)
    graph = qfx.export(quantized(MLP, x), x)
    # Widen by hand past what float64 (and so PyTorch) holds: a 60-bit activation times 24-bit weights.
    relu = [n for n in graph.nodes if n.op == "relu"][0]
    relu.output = qfx.ir.Value(relu.name, relu.output.shape, qfx.FixedType(60, 20))
    fc2 = graph.node("fc2")
    w = fc2.constants["weight"]
    fc2.constants["weight"] = qfx.ir.Constant(w.codes << 16, (qfx.FixedType(24, w.types[0].int_bits),))
    graph.check()
    codes = qfx.ir.run_codes(graph, [qfx.ir.input_codes(x.numpy(), graph.inputs[0].type)])
    assert codes["fc2"].dtype == np.int64  # the output format is narrow again
    w, b = fc2.constants["weight"], fc2.constants["bias"]
    f_in, f_w, f_b = relu.output.type.frac_bits, int(w.frac_bits()[0]), int(b.frac_bits()[0])
    exact = [[sum(int(a) * int(c) for a, c in zip(row, col)) for col in w.codes] for row in codes[relu.name]]
    assert max(abs(v) for r in exact for v in r).bit_length() > 62
    common = max(f_in + f_w, f_b)
    total = np.array([[v << (common - f_in - f_w) for v in r] for r in exact], dtype=object) \
        + b.codes.astype(object) * (1 << (common - f_b))
    assert np.array_equal(codes["fc2"], qfx.ir.cast(total, common, fc2.output.type))


def test_input_must_be_codes_of_the_input_format():
    x = inputs((12,), batch=4)
    graph = qfx.export(quantized(MLP, x), x)
    t = graph.inputs[0].type
    with pytest.raises(ValueError, match="outside its format"):
        qfx.ir.run(graph, np.full((1, 12), t.code_max + 1), codes=True)
    with pytest.raises(ValueError, match=r"shape \(N, 12\)"):
        qfx.ir.run(graph, np.zeros((1, 11)))
    with pytest.raises(ValueError, match="NaN"):
        qfx.ir.run(graph, np.full((1, 12), np.nan))
