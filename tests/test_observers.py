"""Range observers, fit_int_bits and qfx.calibrate (post-training quantization)."""

from __future__ import annotations

import functools
import warnings
import zlib

import pytest
import torch
from torch import nn

import qfx
from qfx import FixedType, QConfig, quantize_model
from qfx.nn import FixedQuantizer, KHotQuantizer
from qfx.observers import MinMaxObserver, PercentileObserver, calibrate_constants, fit_int_bits


def test_minmax_observer_per_tensor_and_per_channel():
    obs = MinMaxObserver()
    obs.observe(torch.tensor([1.0, -2.0]))
    obs.observe(torch.tensor([0.5, 3.0]))
    low, high = obs.bounds()
    assert float(low) == -2.0 and float(high) == 3.0
    per = MinMaxObserver(channel_dim=1)
    per.observe(torch.tensor([[1.0, -5.0], [2.0, 0.0]]))
    low, high = per.bounds()
    assert low.tolist() == [1.0, -5.0] and high.tolist() == [2.0, 0.0]
    with pytest.raises(RuntimeError):
        MinMaxObserver().bounds()


def test_percentile_observer_ignores_outliers():
    x = torch.cat([torch.linspace(-1, 1, 10001), torch.tensor([100.0])])
    obs = PercentileObserver(99.9)
    obs.observe(x)
    low, high = obs.bounds()
    assert -1.01 < float(low) < -0.9 and 0.9 < float(high) < 1.01
    with pytest.raises(ValueError):
        PercentileObserver(20)


def test_fit_int_bits():
    q = FixedQuantizer(FixedType(8, 0))  # range [-2**(I-1), 2**(I-1) - 2**(I-8)]
    assert int(fit_int_bits(q, -1.0, 3.0)) == 3
    assert int(fit_int_bits(q, -4.0, 3.0)) == 3
    assert int(fit_int_bits(q, -4.0, 4.0)) == 4
    assert int(fit_int_bits(q, -0.3, 0.2)) == 0
    assert fit_int_bits(q, torch.tensor([-0.1, -3.0]), torch.tensor([0.1, 1.0])).tolist() == [-2.0, 3.0]
    u = FixedQuantizer(FixedType(8, 0, signed=False))
    assert int(fit_int_bits(u, 0.0, 3.9)) == 2
    # K-hot with k=1: the largest allowed code of 8 bits is 64, not 127
    k = KHotQuantizer(FixedType(8, 0), 1)
    assert int(fit_int_bits(k, 0.0, 1.5)) == 3  # at I=2 the largest value is 64 * 2**-6 = 1 < 1.5
    assert int(fit_int_bits(q, 0.0, 1.5)) == 2  # while 127 * 2**-6 holds it


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))


def _data(n: int = 512):
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 10, generator=g) * 2
    labels = torch.randint(0, 4, (n,), generator=g)
    x = centers[labels] + 0.7 * torch.randn(n, 10, generator=g)
    return x, labels


@functools.lru_cache(maxsize=1)
def _trained() -> nn.Module:
    """Trained once per session; quantize_model copies it, so tests cannot change it."""
    torch.manual_seed(0)
    model = _mlp()
    x, y = _data()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: thread start-up dominates otherwise
    try:
        for _ in range(60):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def test_calibrate_no_activation_saturates():
    model = _trained()
    x, _ = _data()
    batches = list(x.split(128))
    q = quantize_model(model, QConfig(activation=8), example_input=x[:2])
    formats = qfx.calibrate(q, iter(batches), observer=MinMaxObserver)  # an iterator is stored and reused
    assert set(formats) == {"input_1_quant.output", "0.output", "1.output", "2.output", "3.output", "4.output"}
    q.eval()
    seen = []

    def hook(module, args):
        t = module.fixed_type
        seen.append(bool(((args[0] >= t.min) & (args[0] <= t.max)).all()))

    handles = [m.output_quantizer.register_forward_pre_hook(hook) for m in q.modules()
               if getattr(m, "output_quantizer", None) is not None]
    with torch.no_grad():
        for b in batches:
            q(b)
    for h in handles:
        h.remove()
    assert seen and all(seen)


def test_calibrate_restores_training_mode_and_fits_constants():
    model = _trained()
    x, _ = _data(64)
    q = quantize_model(model, QConfig(weight_granularity="channel"))
    q.train()
    qfx.calibrate(q, [(x, None)], constant_observer=MinMaxObserver)  # (inputs, targets) batches
    assert q.training and all(m.training for m in q.modules())
    wq = q.get_submodule("0").weight_quantizer
    w = q.get_submodule("0").weight
    expected = fit_int_bits(wq, w.amin(dim=1), w.amax(dim=1))
    assert torch.equal(wq.effective_int_bits(), expected)
    assert wq.effective_int_bits().unique().numel() > 1  # per channel


def test_ptq_accuracy_close_to_float():
    model = _trained()
    x, y = _data()
    float_acc = (model(x).argmax(1) == y).float().mean().item()
    q = quantize_model(model, QConfig(weight=8, activation=8))
    qfx.calibrate(q, x[:256].split(64))
    q.eval()
    with torch.no_grad():
        out = q(x)
    q_acc = (out.argmax(1) == y).float().mean().item()
    assert float_acc > 0.8
    assert q_acc >= float_acc - 0.03
    t = q.get_submodule("4").output_quantizer.fixed_type
    assert torch.equal(qfx.quantize(out, t), out)


def test_calibrate_with_percentile_and_batchnorm_constants():
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU())
    model.train()
    x = torch.randn(8, 1, 6, 6)
    with torch.no_grad():
        model(x * 3)
    model.eval()
    q = quantize_model(model, QConfig())
    calibrate_constants(q, MinMaxObserver)
    scale, shift = q.get_submodule("1").folded()
    sq = q.get_submodule("1").scale_quantizer
    assert torch.equal(sq.effective_int_bits(), fit_int_bits(sq, scale, scale))
    qfx.calibrate(q, [x], observer=lambda: PercentileObserver(99.0), progress=True)
    q.eval()
    assert q(x).shape == (8, 3, 4, 4)


class _Residual(nn.Module):
    """conv-BN-ReLU twice with a residual add, then a linear layer: formats depend on every upstream format."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)) + y)
        return self.fc(torch.flatten(y, 1))


def _observe_and_fit(q: nn.Module, batches: list) -> dict[str, torch.Tensor]:
    """One plain pass, independent of qfx.calibrate: observe every activation quantizer, fit, set."""
    quantizers = {name: m for name, m in q.named_modules()
                  if isinstance(m, (FixedQuantizer, KHotQuantizer)) and name.endswith(("output_quantizer",
                                                                                        "accum_quantizer"))}
    observers = {name: MinMaxObserver() for name in quantizers}
    handles = [m.register_forward_pre_hook(lambda mod, args, o=observers[name]: o.observe(args[0]))
               for name, m in quantizers.items()]
    q.eval()
    with torch.no_grad():
        for b in batches:
            q(b)
    for h in handles:
        h.remove()
    for name, m in quantizers.items():
        m.set_int_bits(fit_int_bits(m, *observers[name].bounds()))
    return {name: m.effective_int_bits().clone() for name, m in quantizers.items()}


def test_calibrate_one_walk_is_the_fixed_point_of_repeated_passes():
    torch.manual_seed(0)
    model = _Residual()
    batches = [torch.randn(4, 3, 6, 6) * s for s in (1.0, 3.0, 0.5)]
    model.train()
    with torch.no_grad():  # BatchNorm statistics away from the identity
        for b in batches:
            model(b * 2 + 1)
    model.eval()
    cfg = QConfig(weight=6, activation=6, accum=12)

    walked = quantize_model(model, cfg, example_input=batches[0][:1])
    qfx.calibrate(walked, batches, observer=MinMaxObserver, constant_observer=MinMaxObserver)
    walked_bits = {n: m.effective_int_bits().clone() for n, m in walked.named_modules()
                   if isinstance(m, FixedQuantizer)}
    # Observing again with the walk's formats moves nothing.
    again = _observe_and_fit(walked, batches)
    assert all(torch.equal(bits, walked_bits[name]) for name, bits in again.items())

    # Plain passes from the initial formats converge, after several passes, to the same formats.
    iterated = quantize_model(model, cfg, example_input=batches[0][:1])
    calibrate_constants(iterated, MinMaxObserver)
    previous, passes = None, 0
    while True:
        current = _observe_and_fit(iterated, batches)
        passes += 1
        if previous is not None and all(torch.equal(current[n], previous[n]) for n in current):
            break
        previous = current
        assert passes < 30
    assert passes > 2  # the formats really do depend on each other
    assert all(torch.equal(bits, walked_bits[name]) for name, bits in current.items())


# ------------------------------------------------------------------ MSE observer


def _brute_force_int_bits(values: list[float], t: FixedType, int_bits_range: tuple[int, int]) -> int:
    """The integer bits of least exact squared cast error over ``values``, every ``I`` tried; ties to larger ``I``."""
    from fractions import Fraction

    from reference_fixed import ap_fixed_code

    best, best_error = None, None
    for bits in range(int_bits_range[1], int_bits_range[0] - 1, -1):  # larger I first: it keeps ties
        lsb = Fraction(2) ** (bits - t.width)
        error = sum((ap_fixed_code(Fraction(v), t.width, bits, t.signed, t.rounding.name, t.overflow.name) * lsb
                     - Fraction(v)) ** 2 for v in values)
        if best_error is None or error < best_error:
            best, best_error = bits, error
    return best


@pytest.mark.parametrize("kind", ["gauss", "outlier", "uniform", "laplace", "relu"])
@pytest.mark.parametrize("spec", ["ap_fixed<4,2,AP_RND_CONV,AP_SAT>", "ap_fixed<6,2,AP_TRN,AP_SAT>",
                                  "ap_ufixed<4,2,AP_RND,AP_SAT>"])
def test_mse_observer_matches_brute_force_search(kind, spec):
    t = FixedType.coerce(spec)
    g = torch.Generator().manual_seed(zlib.crc32(f"{kind}{spec}".encode()))
    x = torch.randn(3, 40, generator=g) * torch.tensor([[0.3], [2.0], [7.0]])
    if kind == "outlier":
        x[:, 0] = x[:, 0].sign() * 4 * x.abs().amax(dim=1)
    elif kind == "uniform":
        x = torch.rand(3, 40, generator=g) * torch.tensor([[0.3], [2.0], [7.0]]) - 0.1
    elif kind == "laplace":
        x = torch.empty(3, 40).exponential_(generator=g) * torch.randn(3, 40, generator=g).sign() * torch.tensor([[0.3], [2.0], [7.0]])
    elif kind == "relu":
        x = x.relu()
    q = FixedQuantizer(t, granularity="channel", channel_dim=0, num_channels=3)
    obs = qfx.MSEObserver(channel_dim=0)
    for part in x.split(20, dim=1):  # two batches
        obs.observe(part)
    chosen = obs.int_bits(q)
    for row in range(3):
        values = [float(v) for v in x[row] if t.signed or v >= 0]
        assert int(chosen[row]) == _brute_force_int_bits(values, t, q.int_bits_range), (row, chosen)
        # One binary point for the whole row gives the same choice.
        single = FixedQuantizer(t)
        one = qfx.MSEObserver()
        one.observe(x[row])
        assert int(one.int_bits(single)) == int(chosen[row])


def test_mse_calibration_clips_an_outlier_that_min_max_keeps():
    x = torch.cat([torch.randn(2000), torch.tensor([40.0])])
    t = FixedType(4, 0, rounding="RND_CONV", overflow="SAT")
    minmax, mse = MinMaxObserver(), qfx.MSEObserver()
    minmax.observe(x)
    mse.observe(x)
    q = FixedQuantizer(t)
    assert int(minmax.int_bits(q)) == 7  # 40 < 2**6 needs 7 signed integer bits
    assert int(mse.int_bits(q)) < 7
    errors = {}
    for observer in (minmax, mse):
        q.set_int_bits(observer.int_bits(q))
        errors[type(observer).__name__] = float((q.eval()(x) - x).square().sum())
    assert errors["MSEObserver"] < errors["MinMaxObserver"]


@pytest.mark.filterwarnings("ignore:calibrate")
def test_calibrate_unsigned_format_fits_the_non_negative_part():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5))
    x = torch.randn(256, 6)
    for observer in (MinMaxObserver, qfx.MSEObserver):
        for overflow in ("AP_SAT", "AP_WRAP"):
            cfg = QConfig(overrides={"0": {"output": f"ap_ufixed<8,3,AP_RND_CONV,{overflow}>"}})
            q = quantize_model(model, cfg)
            formats = qfx.calibrate(q, [x], observer=observer)
            positive = model(x).detach().clamp(min=0)
            t = formats["0.output"]
            assert t.int_bits <= 4 and float(positive.max()) <= t.max, t  # fits what it can hold, no more
            q.eval()
            y = q(x).detach()
            assert bool((y[positive > 2 * t.lsb] > 0).all())  # the positive outputs survive


def test_calibrate_warns_when_an_unsigned_format_sees_mostly_negative_values():
    model = nn.Sequential(nn.Linear(4, 3))
    with torch.no_grad():
        model[0].bias.fill_(-10.0)
    q = quantize_model(model, QConfig(overrides={"0": {"output": "ap_ufixed<8,3,AP_RND_CONV,AP_SAT>"}}))
    with pytest.warns(UserWarning, match=r"'0\.output'.*unsigned.*negative"):
        formats = qfx.calibrate(q, [torch.randn(64, 4)])
    assert formats["0.output"].int_bits < 16  # not pushed to its limit by values it cannot hold


def test_calibrate_sees_what_a_relu_casts():
    # QReLU's quantizer applies the ReLU itself: the observer must see max(x, 0), not x.
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    with torch.no_grad():
        model[0].bias.fill_(-1.0)
    q = quantize_model(model, QConfig(overrides={"1": {"output": "ap_ufixed<8,3,AP_RND_CONV,AP_SAT>"}}))
    x = torch.randn(256, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing negative reaches the unsigned cast
        formats = qfx.calibrate(q, [x], observer=MinMaxObserver)
    assert formats["1.output"] == qfx.FixedType(8, fit_int_bits(FixedQuantizer("ap_ufixed<8,3>"), 0.0,
                                                                  model(x).max()).int().item(), signed=False,
                                                rounding="RND_CONV", overflow="SAT")


def _untrained_conv_bn(tracked: bool) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 4 * 4, 3))
    with torch.no_grad():
        model[0].bias.copy_(torch.linspace(-3, 3, 6))  # batch means far from the initial running mean 0
    x = torch.randn(16, 3, 6, 6)
    if tracked:
        model.train()
        with torch.no_grad():
            model(x)
    model.eval()
    return model, x


def _representable(quantizer, values: torch.Tensor) -> torch.Tensor:
    """Per channel (dim 0), whether ap_fixed<W, I> holds every value without saturating."""
    width = quantizer.base_type.width
    bits = quantizer.effective_int_bits().double()
    high = 2.0 ** (bits - 1) - 2.0 ** (bits - width)
    low = -(2.0 ** (bits - 1))
    return ((values >= low[:, None]) & (values <= high[:, None])).all(dim=1)


@pytest.mark.parametrize("route", ["graph walk", "passes"])
def test_calibrate_fits_an_untracked_batchnorm_to_the_statistics_training_uses(route):
    model, x = _untrained_conv_bn(tracked=False)
    q = quantize_model(model, QConfig(activation=8, learn_int_bits=True))
    target = q if route == "graph walk" else nn.Sequential(q)  # not a GraphModule: whole-model passes
    qfx.calibrate(target, [x[:8], x[8:]], constant_observer=MinMaxObserver)
    bn = q.get_submodule("1")
    seen = []
    bn.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().double()))
    q.train()
    loss = q(x[:8]).square().sum() + q(x[8:]).square().sum()
    loss.backward()
    shifts = []
    for t in seen:  # the folds training uses, from torch's own reductions
        mean, var = t.mean((0, 2, 3)), t.var((0, 2, 3), unbiased=False)
        scale = bn.weight.detach().double() / torch.sqrt(var + bn.eps)
        shifts.append(bn.bias.detach().double() - mean * scale)
    assert bool(_representable(bn.shift_quantizer, torch.stack(shifts, dim=1)).all())
    assert bool((bn.bias.grad != 0).all())  # a saturated shift would leave beta without a gradient


def test_calibrate_keeps_a_tracked_batchnorm_on_its_running_statistics():
    model, x = _untrained_conv_bn(tracked=True)
    q = quantize_model(model, QConfig(activation=8))
    qfx.calibrate(q, [x], constant_observer=MinMaxObserver)
    bn = q.get_submodule("1")
    scale, shift = bn.folded()
    for quantizer, value in ((bn.scale_quantizer, scale), (bn.shift_quantizer, shift)):
        assert torch.equal(quantizer.effective_int_bits(), fit_int_bits(quantizer, value, value))
