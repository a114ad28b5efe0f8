"""The streaming Verilog back end on PyTorch models of the layers real CNNs use, cocotb-exact on Icarus.

Each model is quantized and exported; the IR interpreter must equal
PyTorch on the test inputs (so the vectors' expected codes are PyTorch's),
and the generated design must match every output code under random input
gaps and output backpressure, at the schedule's cycles per sample.
"""

import pytest
import torch

import qfx
import structure_zoo
from ir_zoo import inputs, quantized
from qfx.rtl import simulate
from qfx.rtl.stream import generate_stream
from binary_zoo import Conv1dNet, prepared
from stream_models import Binary2d, Branches, Pool1d, Pool2d

VECTORS = 10


def _own(make, shape):
    x = inputs(shape, batch=64)
    return quantized(make, x), x


def _binary(make, shape):
    x = torch.rand(64, *shape) * 2 - 1
    return prepared(make(), x), x


def _zoo(name, shape):
    return structure_zoo.quantized(name, batch=64, shape=shape)


#: name -> (the quantized model and its inputs), on small inputs
MODELS = {
    "pool1d": lambda: _own(Pool1d, (2, 12)),  # padded MaxPool1d/AvgPool1d on signed values, ReLU6, global mean
    "pool2d": lambda: _own(Pool2d, (2, 7, 7)),  # MaxPool2d(3, 2, padding 1), padded AvgPool2d, ceil mode
    "branches": lambda: _own(Branches, (2, 4, 4)),  # sub and mul of two streams, a concat of three, hardtanh
    "mobile": lambda: _zoo("mobile", (2, 4, 4)),  # MobileNetV2-style: expand, depthwise, hardswish, residual
    "signal1d": lambda: _zoo("signal1d", None),  # grouped conv1d, ConvTranspose1d, adaptive pooling
    "unet": lambda: _zoo("unet", (2, 4, 4)),  # strided conv, ConvTranspose2d, nearest upsampling, concat, F.pad
    "binary1d": lambda: _binary(Conv1dNet, (3, 11)),  # sign, dilated binarized conv1d padded with -1, strided
    "binary2d": lambda: _binary(Binary2d, (2, 4, 4)),  # thermometer, binarized conv2d padded with +1, binary dense
}


@pytest.mark.parametrize("name", list(MODELS))
def test_bit_exact_under_backpressure_on_icarus(tmp_path, name):
    qm, x = MODELS[name]()
    graph = qfx.export(qm, x[:2], name=name)
    x = x[:VECTORS]
    assert (qfx.ir.run(graph, x.numpy()) == qm(x).detach().double().numpy()).all()
    codes = qfx.ir.input_codes(x.numpy(), graph.inputs[0].type)
    simulate(generate_stream(graph, tmp_path / "design", inputs=codes), "icarus")
