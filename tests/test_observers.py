"""Range observers, fit_int_bits and qfx.calibrate (post-training quantization)."""

from __future__ import annotations

import functools

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
    formats = qfx.calibrate(q, iter(batches))  # an iterator is stored and reused across passes
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
    qfx.calibrate(q, [(x, None)])  # (inputs, targets) batches
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
    calibrate_constants(q)
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
    qfx.calibrate(walked, batches)
    walked_bits = {n: m.effective_int_bits().clone() for n, m in walked.named_modules()
                   if isinstance(m, FixedQuantizer)}
    # Observing again with the walk's formats moves nothing.
    again = _observe_and_fit(walked, batches)
    assert all(torch.equal(bits, walked_bits[name]) for name, bits in again.items())

    # Plain passes from the initial formats converge, after several passes, to the same formats.
    iterated = quantize_model(model, cfg, example_input=batches[0][:1])
    calibrate_constants(iterated)
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
