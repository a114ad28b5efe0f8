"""The streaming Verilog back end on PyTorch models of the layers real CNNs use, cocotb-exact on Icarus.

Each model is quantized and exported; the IR interpreter must equal
PyTorch on the test inputs (so the vectors' expected codes are PyTorch's),
and the generated design must match every output code under random input
gaps and output backpressure, at the schedule's cycles per sample.
"""

import pytest
import torch

import qfx
from qfx.rtl import simulate
from qfx.rtl.stream import generate_stream
from ir_zoo import inputs, quantized
from stream_models import Branches, Pool1d, Pool2d

VECTORS = 10


def _graph(make, shape, seed=0):
    x = inputs(shape, batch=64, seed=seed + 1)
    qm = quantized(make, x, seed=seed)
    graph = qfx.export(qm, x[:2], name=make.__name__.lower())
    x = x[:VECTORS]
    golden = qm(x).detach().double().numpy()
    assert (qfx.ir.run(graph, x.numpy()) == golden).all()
    return graph, qfx.ir.input_codes(x.numpy(), graph.inputs[0].type)


MODELS = {"pool1d": (Pool1d, (2, 12)), "pool2d": (Pool2d, (2, 7, 7)), "branches": (Branches, (2, 4, 4))}


@pytest.mark.parametrize("name", list(MODELS))
def test_bit_exact_under_backpressure_on_icarus(tmp_path, name):
    graph, codes = _graph(*MODELS[name])
    simulate(generate_stream(graph, tmp_path / "design", inputs=codes), "icarus")

