"""qfx.export: warnings about formats the int_bits_range clamp decided."""

import warnings

import pytest
import torch
from torch import nn

import qfx


def test_export_warns_about_a_binary_point_pinned_at_its_range():
    model = nn.Sequential(nn.Linear(4, 3))
    q = qfx.quantize_model(model, qfx.QConfig(learn_int_bits=True))
    x = torch.randn(5, 4)
    qfx.calibrate(q, [x])
    q.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        qfx.export(q, x)  # calibrated: nothing at the edges
    q.get_submodule("0").output_quantizer.set_int_bits(10 ** 6)  # clamped to the range's top, 2W
    with pytest.warns(UserWarning, match=r"'0\.output_quantizer'.*\[16\] integer bits.*int_bits_range \(-8, 16\)"):
        qfx.export(q, x)


def test_learned_word_lengths_export_as_the_formats_trained_and_stay_exact():
    """Widths learned under a bit-cost penalty export as ordinary FixedTypes; the interpreter equals eval mode."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.BatchNorm1d(4), nn.ReLU(), nn.Flatten(), nn.Linear(24, 3))
    x, y = torch.randn(32, 2, 6), torch.randint(0, 3, (32,))
    cfg = qfx.QConfig(weight=8, activation=8, learn_int_bits=True, learn_widths=True, weight_granularity="channel",
                      pre_batchnorm=12, unsigned_relu=True)
    q = qfx.quantize_model(model, cfg, example_input=x)
    qfx.calibrate(q, [x])
    start = float(qfx.bit_cost(q).detach())
    opt = torch.optim.Adam(q.parameters(), lr=3e-2)
    for _ in range(8):
        loss = nn.functional.cross_entropy(q(x), y) + qfx.bit_cost(q) / start
        opt.zero_grad()
        loss.backward()
        opt.step()
    q(x)  # folds the last moves
    q.eval()
    widths = {name: m.effective_width() for name, m in q.named_modules() if getattr(m, "learns_width", False)}
    assert any(w < m.base_type.width for name, w in widths.items() for m in [q.get_submodule(name)])
    graph = qfx.export(q, x)
    with torch.no_grad():
        ours = q(x).double().numpy()
    assert (qfx.ir.run(graph, x.numpy()) == ours).all()
    assert (qfx.emulate(graph, x.numpy()) == ours).all()  # the C++ emulator, as every back end, reads the IR
    conv = q.get_submodule("0")
    node = next(n for n in graph.nodes if n.op == "conv1d")
    assert list(node.constants["weight"].types) == conv.weight_quantizer.fixed_type
    assert node.output.type == conv.output_quantizer.fixed_type
