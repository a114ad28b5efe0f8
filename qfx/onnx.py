"""QONNX export: :func:`to_onnx` and :func:`export_onnx`.

Each IR op becomes standard ONNX ops on float values, and every place the
IR casts becomes a QONNX ``Quant`` node (domain ``qonnx.custom_op.general``;
inputs ``x``, ``scale = 2**-F``, ``zero_point = 0``, ``bitwidth = W``;
attributes ``signed``, ``narrow``, ``rounding_mode``): the graph input, each
constant (weights, biases, BatchNorm scales and shifts, slopes, divisors;
a per-channel constant gets one scale per channel), the accumulator cast if
the node has one, and each node's output.  QONNX, FINN and hls4ml read such
a model; the ``qonnx`` package's executor runs it.

============================  ===============================================================
IR op                         ONNX ops (then ``Quant`` to the output format)
============================  ===============================================================
``dense``                     ``Gemm(x, Quant(W), Quant(b), transB=1)``
``conv1d``, ``conv2d``        ``Conv`` with explicit ``pads``, ``strides``, ``dilations``, ``group``
``scale_shift``               ``Add(Mul(x, Quant(scale)), Quant(shift))``, constants shaped ``(C, 1, ...)``
``relu``                      ``Relu``
``relu6``                     ``Clip(x, 0, 6)``
``leaky_relu``                ``LeakyRelu`` with ``alpha`` the fixed-point slope (exact in float32);
                              ``Where(x >= 0, x, Mul(x, Quant(slope)))`` for a slope float32 cannot hold
``add``                       ``Add``
``maxpool2d``                 ``MaxPool`` (its padding never wins, as in the IR)
``avgpool2d``                 ``AveragePool`` (``count_include_pad``) when the divisor is exactly
                              1 / window; otherwise the window sum as a depthwise ``Conv`` of ones,
                              then ``Mul(sum, Quant(divisor))``
``global_avgpool2d``          ``GlobalAveragePool`` when the divisor is exactly 1 / (H W);
                              otherwise ``Mul(ReduceSum(x, [2, 3]), Quant(divisor))``
``flatten``                   ``Flatten`` (to one dimension per sample) or ``Reshape``; no cast
``table``, ``softmax``        lookup tables as ``Gather`` (:mod:`qfx.onnx_tables`)
``sign``, ``thermometer``,    QONNX's bipolar convention (``BipolarQuant``), see :mod:`qfx.onnx_binary`
``binary_*``, ``prelu``
============================  ===============================================================

How a format's modes become ``Quant`` attributes.  QONNX's ``Quant`` clamps
to the integer range and then rounds; for the modes below that equals the
``ap_fixed`` cast, which rounds and then handles overflow:

=============================  ==============================  ================================
``ap_fixed`` mode              ``Quant``                       note
=============================  ==============================  ================================
``AP_RND_CONV``                ``rounding_mode="ROUND"``       ties to even (``np.round``)
``AP_TRN``                     ``rounding_mode="FLOOR"``
``AP_TRN_ZERO``                ``rounding_mode="DOWN"``        toward zero (``np.fix``)
``AP_RND_INF``                 ``rounding_mode="HALF_UP"``     ties away from zero
``AP_RND_ZERO``                ``rounding_mode="HALF_DOWN"``   ties toward zero
``AP_RND``                     none                            ties toward +infinity
``AP_RND_MIN_INF``             none                            ties toward -infinity
``AP_SAT``                     ``narrow=0``
``AP_SAT_SYM``                 ``narrow=1`` (signed),          never the most negative code
                               ``narrow=0`` (unsigned)
``AP_WRAP``, ``AP_WRAP_SM``    none                            ``Quant`` saturates
``AP_SAT_ZERO``                none
=============================  ==============================  ================================

A mode without an equivalent is refused only where it can act: a cast
that drops no fractional bits rounds nothing (it is written with
``ROUND``), and a cast whose source, by interval arithmetic on the
formats and constants, cannot leave the target's range never overflows
(it is written ``narrow=0``).  So the exact accumulator type, or a ReLU
into a format that holds its input, export whatever their modes; a WRAP
tensor that can overflow, or an ``AP_RND`` cast that drops bits, raises
:class:`ONNXExportError` naming the tensor and its format.  The graph input
rounds and overflows from any float, so its modes always need an
equivalent.  Constants are stored codes, never cast at run time: their
``Quant`` only declares their format (``narrow=0``; per-channel formats of
different widths are declared with the widest).  QONNX reads a 1-bit
signed ``Quant`` as bipolar (+-1), which ``ap_fixed<1, ...>`` (codes -1
and 0) is not, so 1-bit signed formats are refused.

Float exactness: the executor computes in float32 (``Quant`` returns
float32), so a tensor is exact when its format has at most 24 bits (23 for
an unsigned format rounding with ``HALF_UP``/``HALF_DOWN``) and every
intermediate sum and product fits 24 significant bits.  Wider graphs still
export (the model describes the same arithmetic), with a warning naming the
tensors whose float32 execution may round.

The batch dimension is fixed (``batch_size``, default 1), as the QONNX
executor and FINN expect shapes to be fully known.
"""

from __future__ import annotations

import math
import os
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Union

import numpy as np
import onnx
from onnx import TensorProto, helper

from .files import write_atomically
from .ir.graph import Graph, Node
from .render.escape import printable
from . import onnx_binary as _binary
from . import onnx_tables as _tables
from .onnx_builder import (OPSET, QONNX_DOMAIN, ROUNDING_MODES, Builder, Exact, ONNXExportError, constant_value,
                           source_bounds, stored)

__all__ = ["to_onnx", "export_onnx", "ONNXExportError", "QONNX_DOMAIN", "OPSET", "ROUNDING_MODES"]

# ------------------------------------------------------------ translation
def _pool_attrs(node: Node) -> dict:
    pad = node.attrs["padding"]
    return {"kernel_shape": node.attrs["kernel"], "strides": node.attrs["stride"], "pads": pad + pad}


def _compute(b: Builder, node: Node, x: list[str], source: Exact) -> str:
    """ONNX nodes computing ``node``'s exact result (before its casts); returns the result's name."""
    shape, base = node.output.shape, f"{node.name}_exact"
    if node.op in ("sub", "mul", "clamp"):
        return _structure_compute(b, node, x)
    if node.op == "dense":
        args = [x[0], b.constant(node, "weight")] + ([b.constant(node, "bias")] if "bias" in node.constants else [])
        return b.op("Gemm", args, shape, base, transB=1)
    if node.op in ("conv1d", "conv2d"):
        args = [x[0], b.constant(node, "weight")] + ([b.constant(node, "bias")] if "bias" in node.constants else [])
        pads = node.attrs["padding"]
        return b.op("Conv", args, shape, base, kernel_shape=list(node.constants["weight"].codes.shape[2:]),
                    pads=[p[0] for p in pads] + [p[1] for p in pads], strides=node.attrs["stride"],
                    dilations=node.attrs["dilation"], group=node.attrs["groups"])
    if node.op == "scale_shift":
        view = (shape[0],) + (1,) * (len(shape) - 1)  # per channel, broadcast over the rest
        product = b.op("Mul", [x[0], b.constant(node, "scale", view)], shape, f"{node.name}_product")
        return b.op("Add", [product, b.constant(node, "shift", view)], shape, base)
    if node.op == "relu":
        return b.op("Relu", x, shape, base)
    if node.op == "relu6":
        return b.op("Clip", [x[0], b.scalar(0.0), b.scalar(6.0)], shape, base)
    if node.op == "leaky_relu":
        slope = constant_value(node.constants["slope"])
        if Fraction(float(np.float32(slope))) == slope:  # the float attribute holds the fixed-point slope exactly
            return b.op("LeakyRelu", x, shape, base, alpha=float(slope))
        positive = b.op("GreaterOrEqual", [x[0], b.scalar(0.0)], shape, f"{node.name}_positive",
                        dtype=TensorProto.BOOL)
        product = b.op("Mul", [x[0], b.constant(node, "slope")], shape, f"{node.name}_product")
        return b.op("Where", [positive, x[0], product], shape, base)
    if node.op == "add":
        return b.op("Add", x, shape, base)
    if node.op == "maxpool2d":
        return b.op("MaxPool", x, shape, base, dilations=node.attrs["dilation"],
                    ceil_mode=int(node.attrs["ceil_mode"]), **_pool_attrs(node))
    if node.op in ("avgpool2d", "global_avgpool2d"):
        return _average(b, node, x[0])
    raise ONNXExportError(f"{node.describe()}: op '{node.op}' has no ONNX mapping")


def _average(b: Builder, node: Node, x: str) -> str:
    """``sum(window) * divisor``: ONNX's average pooling when the divisor is exactly 1 / count, else sum then Mul."""
    shape, base = node.output.shape, f"{node.name}_exact"
    channels, *spatial = b.graph.value(node.inputs[0]).shape
    count = math.prod(node.attrs["kernel"]) if node.op == "avgpool2d" else math.prod(spatial)
    exact_mean = constant_value(node.constants["divisor"]) == Fraction(1, count)  # then float sum / count is exact too
    if node.op == "global_avgpool2d":
        if exact_mean:
            return b.op("GlobalAveragePool", [x], shape, base)
        window_sum = b.op("ReduceSum", [x, b.initializer(f"{node.name}_axes", np.array([2, 3], np.int64))],
                          shape, f"{node.name}_sum", keepdims=1)
    elif exact_mean:
        return b.op("AveragePool", [x], shape, base, count_include_pad=1, **_pool_attrs(node))
    else:  # a depthwise convolution with ones sums each window exactly
        ones = b.initializer(f"{node.name}_ones", np.ones((channels, 1) + tuple(node.attrs["kernel"]), np.float32))
        window_sum = b.op("Conv", [x, ones], shape, f"{node.name}_sum", group=channels, **_pool_attrs(node))
    return b.op("Mul", [window_sum, b.constant(node, "divisor")], shape, base)


# ------------------------------------------------------- structural ops
def _structure_compute(b: Builder, node: Node, x: list[str]) -> str:
    shape, base = node.output.shape, f"{node.name}_exact"
    if node.op == "sub":
        return b.op("Sub", x, shape, base)
    if node.op == "mul":
        return b.op("Mul", x, shape, base)
    bounds = [b.constant(node, k) if k in node.constants else "" for k in ("low", "high")]
    return b.op("Clip", [x[0]] + bounds, shape, base)


def _interleaved(b: Builder, node: Node, x: str, factors: list[int], expand: bool) -> str:
    """Each spatial element followed by ``factor - 1`` zeros (``expand=False``) or copies of itself (``True``)."""
    channels, *spatial = b.graph.value(node.inputs[0]).shape
    split = [channels] + [v for n in spatial for v in (n, 1)]
    wide = [channels] + [v for n, f in zip(spatial, factors) for v in (n, f)]
    name = f"{node.name}_split"
    y = b.op("Reshape", [x, b.initializer(f"{name}_shape", np.array([-1] + split, np.int64))], tuple(split), name)
    if expand:
        y = b.op("Expand", [y, b.initializer(f"{node.name}_wide", np.array([b.batch_size] + wide, np.int64))],
                 tuple(wide), f"{node.name}_wide")
    else:
        ends = [0] * (len(split) + 1) + [0, 0] + [v for f in factors for v in (0, f - 1)]
        y = b.op("Pad", [y, b.initializer(f"{node.name}_gaps", np.array(ends, np.int64))], tuple(wide),
                 f"{node.name}_gaps")
    joined = tuple([channels] + [n * f for n, f in zip(spatial, factors)])
    return b.op("Reshape", [y, b.initializer(f"{node.name}_joined", np.array((-1,) + joined, np.int64))], joined,
                f"{node.name}_joined")


def _structure_moves(b: Builder, node: Node, x: list[str]) -> bool:
    """``concat`` (each input cast, then joined), ``zero_pad`` and ``upsample`` (codes moved, no cast)."""
    shape = node.output.shape
    if node.op == "concat":
        parts = [b.quant(name, node.output.type, stored(b.graph.value(v).type), b.graph.value(v).shape,
                         f"{node.describe()}: input '{v}'") for name, v in zip(x, node.inputs)]
        b.env[node.name] = b.op("Concat", parts, shape, node.name, output=node.name, axis=1 + node.attrs["axis"])
        return True
    if node.op == "upsample":
        b.env[node.name] = b.op("Identity", [_interleaved(b, node, x[0], node.attrs["scale"], True)], shape,
                                node.name, output=node.name)
        return True
    if node.op == "zero_pad":
        insert, padding = node.attrs["insert"], node.attrs["padding"]
        y = x[0]
        if any(s > 1 for s in insert):
            y = _interleaved(b, node, y, insert, False)
            channels, *spatial = b.graph.value(node.inputs[0]).shape
            keep = [(n - 1) * s + 1 for n, s in zip(spatial, insert)]
            axes = list(range(2, 2 + len(keep)))
            y = b.op("Slice", [y, b.initializer(f"{node.name}_starts", np.zeros(len(keep), np.int64)),
                               b.initializer(f"{node.name}_ends", np.array(keep, np.int64)),
                               b.initializer(f"{node.name}_axes", np.array(axes, np.int64))],
                     tuple([channels] + keep), f"{node.name}_stuffed")
        pads = [0, 0] + [p[0] for p in padding] + [0, 0] + [p[1] for p in padding]
        b.env[node.name] = b.op("Pad", [y, b.initializer(f"{node.name}_pads", np.array(pads, np.int64))], shape,
                                node.name, output=node.name)
        return True
    return False


def _translate(b: Builder, node: Node) -> None:
    x = [b.env[name] for name in node.inputs]
    if _structure_moves(b, node, x) or _binary.translate(b, node, x) or _tables.translate(b, node, x):
        return
    if node.op == "flatten":  # a reshape of the same codes: no cast
        shape = node.output.shape
        if len(shape) == 1:
            b.env[node.name] = b.op("Flatten", x, shape, node.name, output=node.name, axis=1)
        else:
            target = b.initializer(f"{node.name}_shape", np.array((-1,) + tuple(shape), np.int64))
            b.env[node.name] = b.op("Reshape", [x[0], target], shape, node.name, output=node.name)
        return
    inputs = [b.graph.value(name) for name in node.inputs]
    source = source_bounds(node, inputs)
    y = _compute(b, node, x, source)
    if "accum" in node.formats:
        accum = node.formats["accum"]
        y = b.quant(y, accum, source, node.output.shape, f"{node.describe()}: accumulator")
        source = stored(accum)
    b.env[node.name] = b.quant(y, node.output.type, source, node.output.shape, node.describe(), output=node.name)


def to_onnx(graph: Graph, *, batch_size: int = 1) -> onnx.ModelProto:
    """The QONNX model of ``graph``: standard ONNX ops on float32 values, a ``Quant`` at every cast.

    The graph's inputs and outputs keep their IR names; the model takes
    float32 inputs of shape ``(batch_size, *shape)``.  Raises
    :class:`ONNXExportError` naming the tensor whose format QONNX cannot
    express (see the module docstring); warns, naming the tensors, where
    float32 execution may round.
    """
    graph.check()
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"to_onnx: batch_size must be an integer >= 1, got {batch_size!r}")
    b = Builder(graph, batch_size)
    for value in graph.inputs:
        b.env[value.name] = b.quant(value.name, value.type, None, value.shape, f"input '{value.name}'",
                                    output=b.fresh(f"{value.name}_quant"))
    for node in graph.nodes:
        _translate(b, node)

    def info(name: str, shape: tuple[int, ...], dtype: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, dtype, list(shape))

    inputs = [info(v.name, (batch_size,) + v.shape) for v in graph.inputs]
    outputs = []
    for value in graph.output_values:
        name = b.env[value.name]
        if name != value.name:  # a graph input returned as is: its name holds the float, so name its cast anew
            name = b.op("Identity", [name], value.shape, value.name, output=b.fresh(value.name))
        outputs.append(info(name, (batch_size,) + value.shape))
    output_names = {o.name for o in outputs}
    value_infos = [info(name, shape, dtype) for name, (shape, dtype) in b.infos.items() if name not in output_names]
    onnx_graph = helper.make_graph(b.nodes, printable(graph.name) or "qfx", inputs, outputs, b.initializers,
                                   value_info=value_infos)
    model = helper.make_model(onnx_graph, producer_name="qfx",
                              opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(QONNX_DOMAIN, 1)])
    model.ir_version = 8  # what onnxruntime and the QONNX tools read
    onnx.checker.check_model(model)
    if b.inexact:
        warnings.warn(f"ONNX model of graph '{graph.name}': float32 execution (as QONNX's executor runs it) may "
                      f"round at {len(b.inexact)} cast(s), first {b.inexact[0]}; the model still describes the "
                      "exact arithmetic, but only formats and intermediate results of at most 24 bits run "
                      "bit-exact in float32", stacklevel=2)
    return model


def export_onnx(graph: Graph, path: Union[str, os.PathLike], *, force: bool = False,
                batch_size: int = 1) -> Path:
    """Write :func:`to_onnx` of ``graph`` to ``path`` (``.onnx``), atomically; refuse to overwrite unless ``force``.

    Returns the path written.
    """
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"export_onnx: the model file must end in .onnx, got '{path}'")
    if path.exists() and not force:
        raise FileExistsError(f"export_onnx: '{path}' exists; pass force=True (or --force) to overwrite it")
    data = to_onnx(graph, batch_size=batch_size).SerializeToString()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda f: f.write(data))
    return path


