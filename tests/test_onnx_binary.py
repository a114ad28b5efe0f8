"""QONNX export of the binarized ops and PReLU: bipolar tensors through ``BipolarQuant``, bit-exact under qonnx."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from binary_zoo import Conv1dNet, Conv2dNet, prepared
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx

import qfx
from qfx.format import BIPOLAR, FixedType
from qfx.ir import Constant, Graph, Node, Value
from qfx.onnx import QONNX_DOMAIN, ONNXExportError, to_onnx


@pytest.mark.filterwarnings("ignore:export")  # near-zero constants reach the binary point range's end
@pytest.mark.parametrize("net,shape,khot", [(Conv2dNet, (2, 6, 6), None), (Conv2dNet, (2, 6, 6), 1),
                                            (Conv1dNet, (3, 11), None)])
def test_every_tensor_equals_the_interpreter(net, shape, khot) -> None:
    torch.manual_seed(0)
    x = torch.rand(24, *shape) * 2 - (0.5 if net is Conv2dNet else 1)
    model = prepared(net(khot) if net is Conv2dNet else net(), x)
    graph = qfx.export(model, x[:1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every tensor exact in float32
        onnx_model = to_onnx(graph, batch_size=len(x))
    bipolar = [n for n in onnx_model.graph.node if n.op_type == "BipolarQuant"]
    assert all(n.domain == QONNX_DOMAIN for n in bipolar)
    binary = [n for n in graph.nodes if n.op.startswith("binary_")]
    assert len([n for n in bipolar if n.name.endswith("_weight_bipolar_BipolarQuant")]) == len(binary)
    tensors = execute_onnx(ModelWrapper(onnx_model), {graph.inputs[0].name: x.numpy()},
                           return_full_exec_context=True)
    codes = qfx.ir.run_codes(graph, [qfx.ir.input_codes(x.numpy(), graph.inputs[0].type)])
    for node in graph.nodes:
        expected = qfx.ir.values_of(codes[node.name], node.output.type)
        assert np.array_equal(np.asarray(tensors[node.name], dtype=np.float64), expected), node.describe()
    with torch.no_grad():
        assert np.array_equal(tensors[graph.outputs[0]].astype(np.float64), model(x).double().numpy())


def test_a_binary_sum_into_a_wrapping_format_is_refused_naming_the_node() -> None:
    x = Value("x", (67,), FixedType(8, 2, rounding="RND_CONV", overflow="SAT"))
    sign = Node("sign", "sign", ("x",), Value("sign", (67,), BIPOLAR))
    weight = Constant(np.where(np.arange(3 * 67).reshape(3, 67) % 3, 1, -1), (BIPOLAR,))
    node = Node("popcount", "binary_dense", ("sign",), Value("popcount", (3,), FixedType(4, 4, overflow="WRAP")),
                constants={"weight": weight})
    graph = Graph("g", [x], [sign, node], ["popcount"]).check()
    with pytest.raises(ONNXExportError, match="node 'popcount'.*AP_WRAP"):
        to_onnx(graph)
