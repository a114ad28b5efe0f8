"""qfx.QConfig and qfx.quantize_model: conversion of MLPs, CNNs and residual blocks, overrides, refusals."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

import qfx
from qfx import FixedType, QConfig, quantize_model
from qfx.khot import csd_digits
from qfx.nn import (LayerQConfig, QAdd, QAvgPool2d, QBatchNorm2d, QConv2d, QFlatten, QInput, QLinear, QMaxPool2d,
                    QReLU)


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.act1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.act2 = nn.LeakyReLU(0.1)
        self.pool2 = nn.AvgPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(6 * 2 * 2, 5)

    def forward(self, x):
        x = self.pool1(self.act1(self.bn1(self.conv1(x))))
        x = self.pool2(self.act2(self.bn2(self.conv2(x))))
        return self.fc(self.flatten(x))


class ResBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 3, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 3, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(3)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(3, 4)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        y = torch.relu(y + x)
        z = torch.add(y, F.relu(y))
        z = self.pool(z)
        return self.fc(torch.flatten(z, 1))


def _warm_bn(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """A few training passes so the BatchNorm statistics are not the defaults."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x)
    return model.eval()


def _is_exact(y: torch.Tensor, t: FixedType) -> bool:
    return torch.equal(qfx.quantize(y, t), y)


def test_mlp_converts_copies_weights_and_is_exact():
    model = mlp().eval()
    x = torch.randn(8, 6)
    q = quantize_model(model, QConfig(), example_input=x)
    assert isinstance(q, fx.GraphModule)
    kinds = [type(m) for m in q.children()]
    assert QInput in kinds and kinds.count(QLinear) == 2 and QReLU in kinds and nn.Dropout in kinds
    assert torch.equal(q.get_submodule("0").weight, model[0].weight)
    assert torch.equal(q.get_submodule("3").bias, model[3].bias)
    assert q.get_submodule("0").weight is not model[0].weight  # a copy, the float model is untouched
    assert isinstance(model[0], nn.Linear)
    qfx.calibrate(q, [x])
    q.eval()
    y = q(x)
    assert _is_exact(y, q.get_submodule("3").output_quantizer.fixed_type)
    assert (y - model(x)).abs().max() < 0.2


def test_dropout_active_in_training_identity_in_eval():
    q = quantize_model(mlp(), QConfig())
    x = torch.randn(64, 6)
    q.eval()
    assert torch.equal(q(x), q(x))
    q.train()
    drop = q.get_submodule("2")
    assert drop.training
    h = torch.ones(1000)
    assert (drop(h) == 0).any()


def test_cnn_with_batchnorm_and_pooling():
    x = torch.randn(4, 2, 8, 8)
    model = _warm_bn(SmallCNN(), x)
    cfg = QConfig(overrides={"conv1": {"activation": 6}})
    q = quantize_model(model, cfg, example_input=x)
    assert isinstance(q.conv1, QConv2d) and isinstance(q.bn1, QBatchNorm2d)
    assert isinstance(q.pool1, QMaxPool2d) and q.pool1.output_quantizer is None
    assert isinstance(q.pool2, QAvgPool2d) and isinstance(q.flatten, QFlatten)
    # input widths follow the producers' output formats
    assert q.conv1.output_quantizer.base_type.width == 6
    assert q.bn1.input_width == 6 and q.conv1.input_width == 8 and q.conv2.input_width == 8
    assert torch.equal(q.bn1.running_var, model.bn1.running_var)
    assert torch.equal(q.conv2.weight, model.conv2.weight) and q.conv2.bias is None
    qfx.calibrate(q, [x])
    q.eval()
    y = q(x)
    assert _is_exact(y, q.fc.output_quantizer.fixed_type)


def test_resnet_block_with_residual_add_and_functional_relu():
    x = torch.randn(4, 3, 6, 6)
    model = _warm_bn(ResBlock(), x)
    q = quantize_model(model, QConfig(), example_input=x)
    adds = [m for m in q.modules() if isinstance(m, QAdd)]
    relus = [m for m in q.modules() if isinstance(m, QReLU)]
    assert len(adds) == 2 and len(relus) == 3
    assert any(isinstance(m, QFlatten) for m in q.modules())
    targets = [n.target for n in q.graph.nodes if n.op == "call_function"]
    assert targets == []  # every function became a module
    qfx.calibrate(q, [x])
    q.eval()
    y = q(x)
    assert _is_exact(y, q.fc.output_quantizer.fixed_type)
    assert (y - model(x)).abs().max() < 0.3


def test_view_and_reshape_flattens():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.fc = nn.Linear(8, 2)

        def forward(self, x):
            y = self.conv(x)
            y = y.view(y.size(0), -1)
            z = self.conv(x).reshape(x.shape[0], -1)
            return self.fc(y + z)

    q = quantize_model(Net(), example_input=torch.randn(2, 1, 4, 4))
    assert sum(isinstance(m, QFlatten) for m in q.modules()) == 2
    q.eval()
    assert q(torch.randn(2, 1, 4, 4)).shape == (2, 2)


def test_overrides_by_name_type_and_layer_fields():
    x = torch.randn(4, 2, 8, 8)
    cfg = QConfig(weight=8, activation=8, overrides={
        nn.Conv2d: {"weight": 6},
        "conv2": {"weight": 4, "weight_granularity": "channel"},
        QAdd: {"activation": 10},
        nn.Linear: {"output": "ap_fixed<12,5>", "bias": FixedType(10, 3)},
        "bn2": LayerQConfig(scale=FixedType(5, 1), output=FixedType(7, 2)),
    })
    q = quantize_model(_warm_bn(SmallCNN(), x), cfg, example_input=x)
    assert q.conv1.weight_quantizer.base_type.width == 6
    assert q.conv2.weight_quantizer.base_type.width == 4
    assert q.conv2.weight_quantizer.granularity == "channel"
    assert q.fc.output_quantizer.base_type == FixedType(12, 5)
    assert q.fc.bias_quantizer.base_type == FixedType(10, 3)
    assert q.fc.weight_quantizer.base_type.width == 8
    assert q.bn2.scale_quantizer.base_type == FixedType(5, 1)
    assert q.act2.input_width == 7
    assert q.bn1.output_quantizer.base_type.width == 8

    r = quantize_model(ResBlock(), QConfig(overrides={QAdd: {"activation": 10}, "add_1": {"activation": 9}}))
    assert q is not r
    assert r.add.output_quantizer.base_type.width == 10
    assert r.add_1.output_quantizer.base_type.width == 9


def test_prefix_override_and_input_format():
    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            return self.head(self.block(x))

    q = quantize_model(Outer(), QConfig(input="ap_fixed<10,2>", overrides={"block": {"activation": 5}}))
    assert q.x_quant.output_quantizer.base_type == FixedType(10, 2)
    assert q.get_submodule("block.0").input_width == 10
    assert q.get_submodule("block.0").output_quantizer.base_type.width == 5
    assert q.get_submodule("block.1").output_quantizer.base_type.width == 5
    assert q.head.output_quantizer.base_type.width == 8 and q.head.input_width == 5


def test_multiplier_free_khot():
    x = torch.randn(4, 2, 8, 8)
    model = _warm_bn(SmallCNN(), x)
    q = quantize_model(model, QConfig(multiplier_free="khot:2"), example_input=x)
    qfx.calibrate(q, [x])
    for layer in (q.conv1, q.conv2, q.fc):
        assert isinstance(layer.weight_quantizer, qfx.nn.KHotQuantizer)
        codes = layer.constants()["weight"].codes
        assert max(csd_digits(c) for c in codes.flatten().tolist()) <= 2
    scale_codes = q.bn1.constants()["scale"].codes
    assert max(csd_digits(c) for c in scale_codes.tolist()) <= 2

    only_bn = quantize_model(model, QConfig(multiplier_free={"batchnorm": "khot:1"}))
    assert isinstance(only_bn.bn1.scale_quantizer, qfx.nn.KHotQuantizer) and only_bn.bn1.scale_quantizer.k == 1
    assert isinstance(only_bn.conv1.weight_quantizer, qfx.nn.FixedQuantizer)
    with pytest.raises(ValueError, match="khot:K"):
        QConfig(multiplier_free="khot:0")
    with pytest.raises(ValueError, match="unknown keys"):
        QConfig(multiplier_free={"weight": "khot:2"})


def test_fold_batchnorm():
    x = torch.randn(4, 2, 8, 8)
    model = _warm_bn(SmallCNN(), x)
    q = quantize_model(model, QConfig(), example_input=x, fold_batchnorm=True)
    assert not any(isinstance(m, QBatchNorm2d) for m in q.modules())
    assert not hasattr(q, "bn1")
    assert not torch.equal(q.conv1.weight, model.conv1.weight)  # the scale is folded in
    assert q.conv2.bias is not None  # the shift became a bias
    assert isinstance(model.bn1, nn.BatchNorm2d)  # the float model is untouched
    qfx.calibrate(q, [x])
    q.eval()
    assert (q(x) - model(x)).abs().max() < 0.3


def test_unsupported_function_names_op_and_node():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return torch.sin(self.fc(x))

    with pytest.raises(qfx.UnsupportedOperationError) as info:
        quantize_model(Net())
    message = str(info.value)
    assert "torch.sin" in message and "node 'sin'" in message and "docs/ops.md" in message


def test_unsupported_module_names_module_path():
    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.LayerNorm(4)))
    with pytest.raises(qfx.UnsupportedOperationError) as info:
        quantize_model(model)
    message = str(info.value)
    assert "LayerNorm" in message and "module path '1.0'" in message and "docs/ops.md" in message


class _FFT(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return torch.fft.fft(self.fc(x)).real


class _Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(8, 8)

    def forward(self, x):
        return self.rnn(x)[0]


@pytest.mark.parametrize("model, op, where", [
    (_FFT, "function 'torch.fft.fft'", "node 'fft_fft'"),
    (_Recurrent, "module nn.LSTM", "node 'rnn', module path 'rnn'"),
])
def test_an_unsupported_op_is_refused_in_one_short_line(model, op, where):
    """The op as the user wrote it, its node and the op table; not the list of everything supported."""
    with pytest.raises(qfx.UnsupportedOperationError) as info:
        quantize_model(model())
    message = str(info.value)
    assert f"unsupported {op} at {where};" in message and "docs/ops.md" in message
    assert "\n" not in message and len(message) < 240
    assert not any(name in message for name in ("Conv2d", "BatchNorm", "Softmax", "MaxPool"))


def test_unsupported_variants_are_refused_not_skipped():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return torch.add(self.fc(x), self.fc(x), alpha=2)

    with pytest.raises(qfx.UnsupportedOperationError, match="node 'add'"):
        quantize_model(Scaled())

    class Reshape(nn.Module):
        def forward(self, x):
            return x.view(-1, 2, 2)

    with pytest.raises(qfx.UnsupportedOperationError, match="view"):
        quantize_model(Reshape())

    with pytest.raises(qfx.UnsupportedOperationError, match="None"):
        quantize_model(nn.Sequential(nn.AdaptiveAvgPool2d((None, 2))))


def test_qconfig_validation():
    with pytest.raises(ValueError, match="unknown fields"):
        QConfig(overrides={"fc": {"wieght": 4}})
    with pytest.raises(TypeError):
        QConfig(weight=8.5)
    cfg = QConfig(weight=6, rounding="TRN", overflow="WRAP").layer_config()
    assert cfg.weight == FixedType(6, 1)
    assert QConfig(accum=20).layer_config().accum.width == 20


def test_functional_leaky_relu_becomes_qleakyrelu():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return F.leaky_relu(self.fc(x), 0.25) + F.leaky_relu(x[:, :3], negative_slope=0.5)

    x = torch.randn(16, 4)
    with pytest.raises(qfx.UnsupportedOperationError, match="getitem"):
        quantize_model(Net(), QConfig(), example_input=x)

    class Plain(nn.Module):
        def forward(self, x):
            return F.leaky_relu(x, 0.25) + F.leaky_relu(x, negative_slope=0.5)

    q = quantize_model(Plain(), QConfig(), example_input=x).eval()
    slopes = sorted(m.negative_slope for m in q.modules() if isinstance(m, qfx.nn.QLeakyReLU))
    assert slopes == [0.25, 0.5]
    xq = qfx.quantize(x, q.x_quant.output_quantizer.fixed_type)
    expected = qfx.quantize(torch.where(xq >= 0, xq, xq * 0.25), q.leaky_relu.output_quantizer.fixed_type)
    assert torch.equal(q.leaky_relu(xq), expected)


def test_a_format_too_wide_for_float64_is_the_error_itself_at_example_input():
    """The layer's own ValueError, not torch's ShapeProp RuntimeError wrapping it."""
    model = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(ValueError, match="66 bits, more than the 53") as caught:
        qfx.quantize_model(model, qfx.QConfig(weight=32, activation=32, input=32), example_input=torch.randn(2, 4))
    assert type(caught.value) is ValueError and "ShapeProp" not in str(caught.value)


def test_the_supported_function_list_names_relu6_and_leaky_relu():
    from qfx.convert import SUPPORTED_FUNCTIONS
    assert {"F.relu6", "F.leaky_relu"} <= set(SUPPORTED_FUNCTIONS)

    class Net(nn.Module):
        def forward(self, x):
            return F.relu6(x) + F.leaky_relu(x, 0.25)

    qm = qfx.quantize_model(Net(), qfx.QConfig())
    kinds = {type(m).__name__ for m in qm.modules()}
    assert {"QReLU6", "QLeakyReLU"} <= kinds


def test_a_dense_layer_on_each_position_of_a_sequence_is_refused_naming_it():
    """nn.Linear on (N, L, C) would convert, calibrate and run, then fail at export: refused up front."""

    class Mixer(nn.Module):
        def __init__(self):
            super().__init__()
            self.token = nn.Linear(6, 6)
            self.head = nn.Linear(24, 3)

        def forward(self, x):
            return self.head(torch.flatten(self.token(x), 1))

    with pytest.raises(qfx.convert.UnsupportedOperationError,
                       match=r"nn.Linear on an input of shape \(2, 4, 6\) at node 'token', module path 'token'"):
        qfx.quantize_model(Mixer(), qfx.QConfig(), example_input=torch.randn(2, 4, 6))
    qfx.quantize_model(Mixer(), qfx.QConfig())  # without shapes the check waits for export


def test_formats_follow_the_graph_with_pre_batchnorm_and_unsigned_relu():
    """A sum that only BatchNorm reads gets ``pre_batchnorm``; a ReLU's output is unsigned and what only a ReLU
    reads has one bit more; other layers keep ``activation``; a LayerQConfig override still wins."""
    x = torch.randn(4, 3, 6, 6)
    model = _warm_bn(ResBlock(), x)
    cfg = QConfig(activation=4, pre_batchnorm=12, unsigned_relu=True, overrides={"conv2": {"output": "ap_fixed<6,2>"}})
    q = quantize_model(model, cfg, example_input=x)
    fmt = {name: m.output_quantizer.base_type for name, m in q.named_modules() if hasattr(m, "output_quantizer")}
    assert fmt["conv1"] == FixedType(12, 3, rounding="RND_CONV", overflow="SAT") and q.bn1.input_width == 12
    assert fmt["conv2"] == FixedType(6, 2) and q.bn2.input_width == 6
    assert fmt["bn1"].width == 5 and fmt["bn1"].signed       # read only by F.relu
    assert fmt["bn2"].width == 4 and fmt["bn2"].signed       # read by the add
    assert fmt["add"].width == 5 and fmt["add"].signed       # read only by torch.relu
    relus = [n for n in fmt if n.startswith("relu")]
    assert len(relus) == 3 and all(fmt[n] == FixedType(4, 3, signed=False, rounding="RND_CONV", overflow="SAT")
                                   for n in relus)
    assert fmt["add_1"].width == 4 and fmt["x_quant"].width == 4 and fmt["fc"].width == 4
    # the defaults change nothing
    plain = quantize_model(model, QConfig(activation=4), example_input=x)
    assert {m.output_quantizer.base_type.width for m in plain.modules() if hasattr(m, "output_quantizer")
            and not isinstance(m, qfx.nn.QAdaptiveAvgPool2d)} == {4}
    qfx.calibrate(q, [x])
    q.eval()
    graph = qfx.export(q, x)
    assert (qfx.ir.run(graph, x.numpy()) == q(x).detach().double().numpy()).all()


def test_a_role_looks_through_max_pooling_and_dropout():
    model = nn.Sequential(nn.Conv1d(1, 4, 3), nn.Dropout(0.1), nn.BatchNorm1d(4), nn.MaxPool1d(2), nn.ReLU(),
                          nn.Flatten(), nn.Linear(12, 2)).eval()
    q = quantize_model(model, QConfig(activation=6, pre_batchnorm=10, unsigned_relu=True),
                       example_input=torch.randn(2, 1, 8))
    assert q.get_submodule("0").output_quantizer.base_type.width == 10
    assert q.get_submodule("2").output_quantizer.base_type.width == 7
    relu = q.get_submodule("4").output_quantizer.base_type
    assert relu.width == 6 and not relu.signed
