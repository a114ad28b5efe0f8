"""qfx.compare: every tensor of PyTorch, the interpreter and the emulator side by side; the first difference found."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import qfx
from ir_zoo import ZOO, inputs, quantized
from qfx.compare import BACKENDS, compare
from qfx.ir import Constant

_CACHE: dict = {}


def _cnn():
    if "cnn" not in _CACHE:
        make, shape = ZOO["cnn"]
        x = inputs(shape, batch=24, seed=21)
        qm = quantized(make, x)
        _CACHE["cnn"] = (qm, qfx.export(qm, x[:1]), x)
    return _CACHE["cnn"]


def test_equal_implementations_agree_on_every_tensor():
    qm, graph, x = _cnn()
    report = compare(qm, graph, x)
    assert report.equal and report.first_mismatch is None
    assert [t.name for t in report.tensors] == [graph.inputs[0].name] + [n.name for n in graph.nodes]
    assert all(set(t.mismatches) == {("torch", "ir"), ("torch", "emulator"), ("ir", "emulator")}
               for t in report.tensors)
    assert report.tensors[1].elements == x.shape[0] * graph.nodes[0].output.size
    assert f"all {len(report.tensors)} tensors agree bit for bit" in str(report)


def test_reports_the_first_tensor_where_two_differ():
    qm, graph, x = _cnn()
    broken = copy.deepcopy(graph)
    node = broken.node("conv2")
    w = node.constants["weight"]
    codes = w.codes.copy()
    flat = codes.reshape(-1)
    k = int(np.argmin(np.abs(flat)))  # far from the range limits: the changed code stays valid
    flat[k] += 1
    node.constants["weight"] = Constant(codes, w.types)
    report = compare(qm, broken, x)
    first = report.first_mismatch
    assert first is not None and first.name == "conv2" and first.op == "conv2d"
    assert first.mismatches[("ir", "emulator")] == 0  # both run the changed graph
    assert first.mismatches[("torch", "ir")] == first.mismatches[("torch", "emulator")] > 0
    earlier = report.tensors[:[t.name for t in report.tensors].index("conv2")]
    assert earlier and all(t.equal for t in earlier)
    text = str(report)
    assert "first difference: tensor 'conv2' (conv2d): torch and ir differ in" in text


def test_backends_capturing_some_tensors(monkeypatch):
    qm, graph, x = _cnn()
    last = graph.outputs[0]

    def outputs_only(model, g, batch):  # a back end that sees only the outputs, one code off
        codes = BACKENDS["ir"](model, g, batch)[last].copy()
        codes[0, 0] += 1
        return {last: codes}

    monkeypatch.setitem(BACKENDS, "outputs", outputs_only)
    report = compare(None, graph, x.numpy(), backends=("ir", "emulator", "outputs"))
    assert report.first_mismatch.name == last
    assert report.first_mismatch.mismatches == {("ir", "emulator"): 0, ("ir", "outputs"): 1,
                                                ("emulator", "outputs"): 1}
    assert ("ir", "outputs") not in report.tensors[0].mismatches
    assert "index (0,)" in report.first_mismatch.example


def test_refuses_unknown_backends_and_a_missing_model():
    _, graph, x = _cnn()
    with pytest.raises(ValueError, match="two or more back ends"):
        compare(None, graph, x, backends=("ir", "csim-typo"))
    with pytest.raises(ValueError, match="needs the model"):
        compare(None, graph, x)


def test_names_the_input_and_its_shape_when_the_batch_does_not_fit():
    qm, graph, x = _cnn()
    with pytest.raises(ValueError, match=r"input '.+' takes shape \(N, 2, 10, 6\), got \(3, 120\)"):
        compare(qm, graph, x.reshape(24, -1)[:3])


def test_an_empty_batch_compares_empty_tensors():
    qm, graph, x = _cnn()
    report = compare(qm, graph, x[:0])
    assert report.equal and report.samples == 0
    assert [t.elements for t in report.tensors] == [0] * len(report.tensors)
