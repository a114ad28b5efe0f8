"""The streaming Verilog back end on PyTorch models of the layers real CNNs use, cocotb-exact on Icarus.

Each model is quantized and exported; the IR interpreter must equal
PyTorch on the test inputs (so the vectors' expected codes are PyTorch's),
and the generated design must match every output code under random input
gaps and output backpressure, at the schedule's cycles per sample.
"""

import json

import numpy as np
import pytest
import torch

import qfx
import structure_zoo
from ir_zoo import inputs, quantized
from qfx.rtl import simulate
from qfx.rtl.stream import generate_stream
from binary_zoo import Conv1dNet, prepared
from stream_models import Binary2d, Branches, Pool1d, Pool2d, TwoStreams

VECTORS = 6


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


def test_two_inputs_and_two_outputs_bit_exact_on_icarus(tmp_path):
    """One AXI-Stream port per graph input and output (``s0_axis``, ``s1_axis``, ``m0_axis``, ``m1_axis``), each
    driven or drained on its own with random gaps and backpressure; the vectors are PyTorch's outputs."""
    torch.manual_seed(0)
    x, s = torch.randn(64, 2, 4, 4) * 2, torch.randn(64, 1, 4, 4) * 2
    qm = qfx.quantize_model(TwoStreams(), qfx.QConfig(), example_input=(x, s))
    qfx.calibrate(qm, [(x, s)], input_fn=tuple)
    qm.eval()
    graph = qfx.export(qm, (x[:2], s[:2]), name="two streams")
    x, s = x[:VECTORS], s[:VECTORS]
    codes = [qfx.ir.input_codes(t.numpy(), v.type) for t, v in zip((x, s), graph.inputs)]
    folder = generate_stream(graph, tmp_path / "design", inputs=codes)
    vectors = json.loads((folder / "tb" / "vectors.json").read_text())
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [p["port"] for p in manifest["inputs"] + manifest["outputs"]] == ["s0_axis", "s1_axis", "m0_axis",
                                                                             "m1_axis"]
    for port, value, want in zip(manifest["outputs"], graph.output_values, qm(x, s)):
        got = np.array(vectors["outputs"][port["port"]]) * 2.0 ** -value.type.frac_bits
        assert np.array_equal(got, want.detach().double().numpy().reshape(len(got), -1)), port["port"]
    simulate(folder, "icarus")
