"""qfx.onnx: the QONNX model passes onnx.checker, and qonnx's executor reproduces qfx.ir.run bit for bit."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
import torch
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from torch import nn

import qfx
from qfx import FixedType
from qfx.ir import Constant, Graph, Node, Value
from qfx.onnx import QONNX_DOMAIN, ONNXExportError, export_onnx, to_onnx


# ------------------------------------------------------------- models
class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.bn1, self.act1 = nn.Linear(6, 12), nn.BatchNorm1d(12), nn.ReLU()
        self.fc2, self.act2 = nn.Linear(12, 8), nn.LeakyReLU(0.1)
        self.fc3, self.act3 = nn.Linear(8, 3), nn.ReLU6()

    def forward(self, x):
        x = self.act1(self.bn1(self.fc1(x)))
        return self.act3(self.fc3(self.act2(self.fc2(x))))


class ResidualCNN(nn.Module):
    """Conv, BatchNorm, a residual add, max pooling (ceil mode), 3x3 and 2x2 average pooling, global pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.pool1 = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.conv3, self.bn3 = nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.act3 = nn.LeakyReLU(0.1)
        self.pool2 = nn.AvgPool2d(3, stride=1, padding=1)  # divisor 1/9 rounded: window sum times a constant
        self.pool3 = nn.AvgPool2d(2)  # divisor exactly 1/4: AveragePool
        self.pool4 = nn.AdaptiveAvgPool2d(1)  # over 3x3: sum times a constant
        self.fc = nn.Linear(6, 5)

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        h = torch.relu(self.bn2(self.conv2(h)) + h)
        h = self.act3(self.bn3(self.conv3(self.pool1(h))))
        h = self.pool4(self.pool3(self.pool2(h)))
        return self.fc(torch.flatten(h, 1))


class StridedCNN(nn.Module):
    """Dilation, stride, groups, ReLU6 and a global pooling whose divisor is exactly 1/16."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, dilation=2, padding=2)
        self.conv2 = nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=2)
        self.act, self.pool, self.fc = nn.ReLU6(), nn.AdaptiveAvgPool2d(1), nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.act(self.conv2(self.conv1(x)))), 1))


class CNN1d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.act = nn.Conv1d(3, 4, 3, padding=1), nn.BatchNorm1d(4), nn.LeakyReLU(0.2)
        self.fc = nn.Linear(4 * 6, 2)

    def forward(self, x):
        return self.fc(torch.flatten(self.act(self.bn(self.conv(x))), 1))


def quantized_graph(model: nn.Module, x: torch.Tensor, config: qfx.QConfig) -> Graph:
    """The IR graph of ``model`` quantized with ``config``, BatchNorm statistics warmed and calibrated on ``x``."""
    torch.manual_seed(0)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x)
    qm = qfx.quantize_model(model.eval(), config, example_input=x)
    qfx.calibrate(qm, [x])
    qm.eval()
    return qfx.export(qm, x)


def sample_inputs(graph: Graph, batch: int, seed: int = 0) -> np.ndarray:
    """float32 inputs: random values, exact ties between two codes, and values beyond the input format's range."""
    value = graph.inputs[0]
    rng = np.random.default_rng(seed)
    t = value.type
    x = rng.normal(0.0, t.max / 2, (batch,) + value.shape)
    ties = (rng.integers(2 * t.code_min, 2 * t.code_max, x.shape) + 0.5).round() * 0.5 * t.lsb
    x = np.where(rng.random(x.shape) < 0.3, ties, x)
    x.flat[:4] = [t.max * 3, t.min * 3, t.max + t.lsb / 2, t.min - t.lsb / 2]
    return x.astype(np.float32)


def assert_bit_exact(graph: Graph, x: np.ndarray) -> onnx.ModelProto:
    """Export with no float32 warning, check the model, and compare every IR tensor with qonnx's execution."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = to_onnx(graph, batch_size=len(x))
    onnx.checker.check_model(model)
    tensors = execute_onnx(ModelWrapper(model), {graph.inputs[0].name: x}, return_full_exec_context=True)
    codes = qfx.ir.run_codes(graph, [qfx.ir.input_codes(x, graph.inputs[0].type)])
    for node in graph.nodes:
        expected = qfx.ir.values_of(codes[node.name], node.output.type)
        got = np.asarray(tensors[node.name], dtype=np.float64)
        mismatches = int((got != expected).sum())
        assert mismatches == 0, f"{node.describe()}: {mismatches} of {expected.size} values differ"
    output = execute_onnx(ModelWrapper(model), {graph.inputs[0].name: x})[graph.outputs[0]]
    assert np.array_equal(output.astype(np.float64), qfx.ir.run(graph, x))
    return model


def quant_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == "Quant" and n.domain == QONNX_DOMAIN]


# ------------------------------------------------------- bit exactness
@pytest.mark.parametrize("config", [
    qfx.QConfig(bias=12),
    qfx.QConfig(bias=12, weight_granularity="channel", rounding="TRN", overflow="SAT_SYM"),
    qfx.QConfig(bias=12, rounding="RND_INF"),
    qfx.QConfig(bias=12, rounding="RND_ZERO", multiplier_free="khot:2"),
    qfx.QConfig(bias=12, rounding="TRN_ZERO", activation=6, weight=5),
], ids=["default", "per-channel-trn-satsym", "rnd-inf", "rnd-zero-khot", "trn-zero-narrow"])
def test_mlp_is_bit_exact(config):
    x = torch.randn(64, 6) * 2
    graph = quantized_graph(MLP(), x, config)
    model = assert_bit_exact(graph, sample_inputs(graph, 64))
    # one Quant per cast: the input, each constant, each node output; LeakyRelu holds its slope as alpha
    constants = sum(len(n.constants) for n in graph.nodes if n.op != "leaky_relu")
    assert len(quant_nodes(model)) == 1 + constants + len(graph.nodes)
    slope = next(n for n in graph.nodes if n.op == "leaky_relu").constants["slope"]
    alpha = next(a for n in model.graph.node if n.op_type == "LeakyRelu" for a in n.attribute)
    assert alpha.f == slope.codes * 2.0 ** -slope.types[0].frac_bits


# 8-bit divisors of 1/9, so that window sums times divisors stay within float32's 24 bits.
NARROW_DIVISORS = {"pool2": {"divisor": "ap_ufixed<8,-3>"}, "pool4": {"divisor": "ap_ufixed<8,-3>"}}


@pytest.mark.parametrize("config", [
    qfx.QConfig(bias=12, weight_granularity="channel", overrides=NARROW_DIVISORS),
    qfx.QConfig(bias=12, multiplier_free="khot:2", accum=20, overrides=NARROW_DIVISORS),
], ids=["per-channel", "khot-accum"])
def test_residual_cnn_is_bit_exact(config):
    x = torch.randn(8, 2, 10, 10) * 2
    graph = quantized_graph(ResidualCNN(), x, config)
    ops = [n.op for n in graph.nodes]
    assert {"conv2d", "scale_shift", "add", "maxpool2d", "avgpool2d", "global_avgpool2d", "leaky_relu"} <= set(ops)
    model = assert_bit_exact(graph, sample_inputs(graph, 8))
    onnx_ops = {n.op_type for n in model.graph.node}
    assert {"Conv", "Mul", "Add", "MaxPool", "AveragePool", "ReduceSum", "LeakyRelu", "Gemm", "Flatten"} <= onnx_ops
    if config.accum is not None:  # the output Quant of each convolution reads the accumulator's Quant
        producers = {n.output[0]: n for n in model.graph.node}
        for node in graph.nodes:
            if "accum" in node.formats:
                accum_quant = producers[producers[node.name].input[0]]
                assert accum_quant.op_type == "Quant" and onnx.numpy_helper.to_array(
                    next(i for i in model.graph.initializer if i.name == accum_quant.input[3])) == 20


def test_strided_grouped_cnn_is_bit_exact():
    x = torch.randn(8, 2, 8, 8) * 2
    graph = quantized_graph(StridedCNN(), x, qfx.QConfig(bias=12))
    model = assert_bit_exact(graph, sample_inputs(graph, 8))
    assert {"GlobalAveragePool", "Clip"} <= {n.op_type for n in model.graph.node}


def test_conv1d_is_bit_exact():
    x = torch.randn(16, 3, 6) * 2
    graph = quantized_graph(CNN1d(), x, qfx.QConfig(bias=12, weight_granularity="channel"))
    assert_bit_exact(graph, sample_inputs(graph, 16))


def test_per_channel_constants_get_per_channel_scales():
    x = torch.randn(16, 6)
    graph = quantized_graph(MLP(), x, qfx.QConfig(bias=12, weight_granularity="channel"))
    model = to_onnx(graph)
    weight = graph.nodes[0].constants["weight"]
    assert weight.per_channel
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    quant = next(n for n in quant_nodes(model) if n.input[0] == f"{graph.nodes[0].name}_weight")
    scale = inits[quant.input[1]]
    assert scale.shape == (weight.codes.shape[0], 1)
    assert np.array_equal(scale[:, 0], 2.0 ** -weight.frac_bits())
    assert np.array_equal(inits[quant.input[0]] / scale, weight.codes)


@pytest.mark.filterwarnings("ignore:The GemmToMatMul transformation")
def test_hls4ml_reads_the_formats():
    import hls4ml
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.util.cleanup import cleanup_model

    x = torch.randn(64, 6) * 2
    mlp = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 8), nn.LeakyReLU(0.1), nn.Linear(8, 3))
    graph = quantized_graph(mlp, x, qfx.QConfig(bias=12))
    model = cleanup_model(cleanup_model(ModelWrapper(to_onnx(graph))).transform(GemmToMatMul()))
    config = hls4ml.utils.config_from_onnx_model(model, granularity="name", backend="Vitis")
    hls_model = hls4ml.converters.convert_from_onnx_model(model, hls_config=config, backend="Vitis")
    layers = [layer for layer in hls_model.get_layers() if layer.class_name != "Input"][1:]  # after the input cast
    read = [str(layer.get_output_variable().type.precision) for layer in layers]
    expected = [f"fixed<{n.output.type.width},{n.output.type.int_bits},RND_CONV,SAT,0>" for n in graph.nodes]
    assert read == expected


# ------------------------------------------------ hand-built graphs
def fmt(width: int, int_bits: int, signed: bool = True, rounding: str = "RND_CONV", overflow: str = "SAT",
        sat_bits: int = 0) -> FixedType:
    """A format with QConfig's default modes unless told (FixedType's own defaults are AP_TRN, AP_WRAP)."""
    return FixedType(width, int_bits, signed=signed, rounding=rounding, overflow=overflow, sat_bits=sat_bits)


def relu_graph(input_type: FixedType, output_type: FixedType) -> Graph:
    x = Value("x", (4,), input_type)
    return Graph("g", [x], [Node("act", "relu", ("x",), Value("act", (4,), output_type))], ["act"]).check()


def add_graph(output_type: FixedType) -> Graph:
    t = fmt(8, 3)
    a = Value("a", (3,), t)
    nodes = [Node("twice", "relu", ("a",), Value("twice", (3,), t)),
             Node("sum", "add", ("a", "twice"), Value("sum", (3,), output_type))]
    return Graph("g", [a], nodes, ["sum"]).check()


def test_wrap_and_unmapped_rounding_pass_where_they_cannot_act():
    # Same binary point (nothing dropped) and a range that holds relu's output (no overflow).
    graph = relu_graph(fmt(8, 3), fmt(8, 3, rounding="RND", overflow="WRAP"))
    model = assert_bit_exact(graph, sample_inputs(graph, 32))
    quant = [n for n in quant_nodes(model) if n.output[0] == "act"][0]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in quant.attribute}
    assert attrs == {"signed": 1, "narrow": 0, "rounding_mode": b"ROUND"}


def test_wrap_that_can_overflow_is_refused_naming_the_tensor():
    with pytest.raises(ONNXExportError, match=r"node 'sum' \(add\).*AP_WRAP.*AP_SAT"):
        to_onnx(add_graph(fmt(8, 3, overflow="WRAP")))
    with pytest.raises(ONNXExportError, match=r"node 'sum'.*AP_WRAP_SM"):
        to_onnx(add_graph(fmt(8, 3, overflow="WRAP_SM")))
    with pytest.raises(ONNXExportError, match=r"node 'sum'.*AP_SAT_ZERO"):
        to_onnx(add_graph(fmt(8, 3, overflow="SAT_ZERO")))
    with pytest.raises(ONNXExportError, match=r"node 'sum'.*saturation bits"):
        to_onnx(add_graph(fmt(8, 3, overflow="WRAP", sat_bits=2)))
    # Wide enough for every sum: exported, and exact.
    assert_bit_exact(add_graph(fmt(10, 5, overflow="WRAP")), np.linspace(-20, 20, 12, dtype=np.float32)
                     .reshape(4, 3))


def test_rounding_without_equivalent_is_refused_where_bits_drop():
    for mode in ("RND", "RND_MIN_INF"):
        with pytest.raises(ONNXExportError, match=rf"node 'act' \(relu\).*AP_{mode}\b.*AP_RND_CONV"):
            to_onnx(relu_graph(fmt(8, 3), fmt(6, 3, rounding=mode)))


def test_input_needs_modes_quant_expresses():
    with pytest.raises(ONNXExportError, match=r"input 'x'.*AP_WRAP"):
        to_onnx(relu_graph(fmt(8, 3, overflow="WRAP"), fmt(8, 3)))
    with pytest.raises(ONNXExportError, match=r"input 'x'.*AP_RND\b"):
        to_onnx(relu_graph(fmt(8, 3, rounding="RND"), fmt(8, 3)))


def test_accumulator_that_can_wrap_is_refused():
    x = Value("x", (4,), fmt(8, 3))
    dense = Node("fc", "dense", ("x",), Value("fc", (2,), fmt(8, 3)),
                 constants={"weight": Constant(np.full((2, 4), 100), (fmt(8, 1),))},
                 formats={"accum": fmt(10, 3, overflow="WRAP")})  # sums reach 12.5
    with pytest.raises(ONNXExportError, match=r"node 'fc' \(dense\): accumulator.*AP_WRAP"):
        to_onnx(Graph("g", [x], [dense], ["fc"]).check())


def test_per_channel_formats_of_different_widths_are_declared_with_the_widest():
    x = Value("x", (3,), fmt(8, 3))
    types = (fmt(4, 1), fmt(8, 2), fmt(6, 2, signed=False))
    weight = Constant(np.array([[7, -8, 1], [127, -128, 3], [63, 0, 5]]), types)
    dense = Node("fc", "dense", ("x",), Value("fc", (3,), fmt(10, 5)), constants={"weight": weight})
    graph = Graph("g", [x], [dense], ["fc"]).check()
    model = assert_bit_exact(graph, sample_inputs(graph, 16))
    quant = next(n for n in quant_nodes(model) if n.input[0] == "fc_weight")
    bitwidth = next(i for i in model.graph.initializer if i.name == quant.input[3])
    assert onnx.numpy_helper.to_array(bitwidth) == 8


def test_slope_float32_cannot_hold_is_multiplied_as_a_quantized_constant():
    x = Value("x", (4,), fmt(8, 3))
    slope = Constant(np.array((1 << 25) + 1), (fmt(27, 1, signed=False),))  # 26 significant bits
    leaky = Node("act", "leaky_relu", ("x",), Value("act", (4,), fmt(8, 3)), constants={"slope": slope})
    with pytest.warns(UserWarning, match=r"float32.*node 'act'"):
        model = to_onnx(Graph("g", [x], [leaky], ["act"]).check())
    ops = [n.op_type for n in model.graph.node]
    assert "Where" in ops and "LeakyRelu" not in ops
    assert any(n.input[0] == "act_slope" for n in quant_nodes(model))


def test_one_bit_signed_is_refused():
    with pytest.raises(ONNXExportError, match=r"node 'act'.*bipolar"):
        to_onnx(relu_graph(fmt(8, 3), fmt(1, 1)))


def test_reshape_flatten_and_unsigned_sat_sym():
    t = fmt(8, 3)
    x = Value("x", (4, 2, 2), t)
    nodes = [Node("flat", "flatten", ("x",), Value("flat", (4, 4), t)),
             Node("act", "relu", ("flat",), Value("act", (4, 4), fmt(6, 2, signed=False, overflow="SAT_SYM")))]
    graph = Graph("g", [x], nodes, ["act"]).check()
    model = assert_bit_exact(graph, sample_inputs(graph, 8))  # saturates at 2**6 - 1: narrow=0 when unsigned
    assert "Reshape" in {n.op_type for n in model.graph.node}


def test_formats_too_wide_for_float32_warn():
    graph = relu_graph(fmt(8, 3), fmt(25, 10))
    with pytest.warns(UserWarning, match=r"float32.*node 'act'"):
        to_onnx(graph)


# ------------------------------------------------------------ the file
def test_export_onnx_writes_atomically_and_refuses_to_overwrite(tmp_path):
    graph = relu_graph(fmt(8, 3), fmt(8, 3))
    path = export_onnx(graph, tmp_path / "sub" / "model.onnx", batch_size=2)
    model = onnx.load(path)
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["x"] and [o.name for o in model.graph.output] == ["act"]
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="model.onnx.*force=True"):
        export_onnx(graph, path)
    assert path.read_bytes() == before
    export_onnx(relu_graph(fmt(8, 3), fmt(6, 3)), path, force=True)
    assert path.read_bytes() != before
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx"]
    with pytest.raises(ValueError, match=r"\.onnx"):
        export_onnx(graph, tmp_path / "model.json")
