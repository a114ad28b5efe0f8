"""From a quantized PyTorch model to the IR: :func:`export`.

The model (the result of :func:`qfx.quantize_model`, or any module built
from :mod:`qfx.nn` layers that ``torch.fx`` can trace) is traced, run once on
``example_input`` in eval mode to record shapes, and each layer becomes one
node with its current formats and its quantized constants as integer codes.
The graph describes eval mode: running statistics, learned binary points
rounded as eval rounds them.  A binary point at an end of its quantizer's
``int_bits_range`` is exported with a warning naming the quantizer.

A binary layer's per-channel scale is folded into the BatchNorm that must
follow it (:func:`_fold_scale`): the binary node keeps the integer sum and
the BatchNorm's scale becomes the product of the two constants' codes,
exact in the sum of their widths, so every value the graph computes is the
model's.
"""

from __future__ import annotations

import warnings
from typing import Any, Union

from torch import fx, nn

from ..convert import record_shapes, trace
from ..nn import (QAdaptiveAvgPool2d, QAdd, QAvgPool2d, QConv1d, QConv2d, QFlatten, QInput, QLeakyReLU, QLinear,
                  QMaxPool2d, QReLU, QReLU6, QuantizedLayer)
from ..nn.batchnorm import _QBatchNorm
from ..nn.prelu import QPReLU, QRPReLU
from ..format import FixedType
from ..nn.binary import QBinaryConv1d, QBinaryConv2d, QBinaryLinear, QSign, QThermometer, _QBinaryDot, sum_type
from ..nn.layer import FixedConstant
from ..nn.lut import QTable
from ..nn.softmax import QSoftmax
from .graph import Constant, Graph, IRError, Node, Value
from .lower import lower_layer

__all__ = ["export"]

_ALIASES = (nn.Identity, nn.Dropout)
_SIMPLE_OPS = {QLinear: "dense", QReLU: "relu", QReLU6: "relu6", QLeakyReLU: "leaky_relu", QAdd: "add",
               QAdaptiveAvgPool2d: "global_avgpool2d", QFlatten: "flatten", QSign: "sign",
               QThermometer: "thermometer", QBinaryLinear: "binary_dense", QBinaryConv1d: "binary_conv1d",
               QBinaryConv2d: "binary_conv2d", QPReLU: "prelu", QRPReLU: "prelu", QTable: "table",
               QSoftmax: "softmax"}


def _pair(value: Union[int, tuple[int, ...], list[int]]) -> list[int]:
    return [int(value), int(value)] if isinstance(value, int) else [int(v) for v in value]


def _constant(c: FixedConstant) -> Constant:
    types = tuple(c.format) if isinstance(c.format, list) else (c.format,)
    return Constant(c.codes.cpu().numpy(), types)


def _fold_scale(bn_scale: Constant, alpha: FixedConstant) -> Constant:
    """``Qbn(scale[c]) * Qs(alpha[c])``: codes multiplied, widths and integer bits added (no rounding)."""
    a = alpha.format
    codes = bn_scale.codes * alpha.codes.cpu().numpy().reshape(bn_scale.codes.shape)
    types = tuple(FixedType(t.width + a.width, t.int_bits + a.int_bits, signed=t.signed or a.signed,
                            rounding=t.rounding, overflow=t.overflow) for t in bn_scale.types)
    return Constant(codes, types)


def _scaled_sum(layer: _QBinaryDot, fx_node: fx.Node, modules: dict[str, nn.Module]) -> FixedType:
    """The integer format of a scaled binary layer's sum; refuses unless one BatchNorm alone reads it."""
    users = list(fx_node.users)
    if len(users) != 1 or users[0].op != "call_module" or not isinstance(modules[users[0].target], _QBatchNorm):
        readers = ", ".join(f"'{u.name}'" for u in users) or "nothing"
        raise IRError(f"export: layer '{fx_node.target}' has a per-channel scale, which export folds into a "
                      f"BatchNorm reading it alone, but {readers} reads it; put a BatchNorm right after it or build "
                      "it with scale=False")
    return sum_type(layer.fan_in)


def _conv_padding(layer: Union[QConv1d, QConv2d]) -> list[list[int]]:
    """Explicit ``[begin, end]`` zero padding per spatial dimension (``'same'`` pads the extra one at the end)."""
    dims = len(layer.kernel_size)
    if layer.padding == "valid":
        return [[0, 0]] * dims
    if layer.padding == "same":
        pads = []
        for k, d in zip(layer.kernel_size, layer.dilation):
            total = d * (k - 1)
            pads.append([total // 2, total - total // 2])
        return pads
    return [[p, p] for p in layer.padding]


def _attrs(layer: nn.Module) -> dict[str, Any]:
    if isinstance(layer, (QBinaryConv1d, QBinaryConv2d)):
        return {"stride": list(layer.stride), "padding": [[p, p] for p in layer.padding],
                "dilation": list(layer.dilation), "groups": layer.groups, "pad_value": layer.pad_value}
    if isinstance(layer, (QConv1d, QConv2d)):
        return {"stride": list(layer.stride), "padding": _conv_padding(layer), "dilation": list(layer.dilation),
                "groups": layer.groups}
    if isinstance(layer, QMaxPool2d):
        return {"kernel": _pair(layer.kernel_size), "stride": _pair(layer.stride), "padding": _pair(layer.padding),
                "dilation": _pair(layer.dilation), "ceil_mode": bool(layer.ceil_mode)}
    if isinstance(layer, QAvgPool2d):
        return {"kernel": _pair(layer.kernel_size), "stride": _pair(layer.stride), "padding": _pair(layer.padding)}
    if isinstance(layer, QTable):
        return {"function": layer.name}
    if isinstance(layer, QSoftmax):
        return {"log": layer.log}
    return {}


def _op(layer: nn.Module) -> str:
    if isinstance(layer, (QConv1d, QConv2d)):
        return "conv1d" if isinstance(layer, QConv1d) else "conv2d"
    if isinstance(layer, _QBatchNorm):
        return "scale_shift"
    if isinstance(layer, QMaxPool2d):
        return "maxpool2d"
    if isinstance(layer, QAvgPool2d):
        return "avgpool2d"
    for cls, op in _SIMPLE_OPS.items():
        if type(layer) is cls:
            return op
    raise IRError(f"export: layer {type(layer).__name__} has no IR op; supported layers: QInput, QLinear, "
                  "QConv1d, QConv2d, QBatchNorm1d/2d, QReLU, QReLU6, QLeakyReLU, QAdd, QMaxPool2d, QAvgPool2d, "
                  "QAdaptiveAvgPool2d, QFlatten, QPReLU, QRPReLU, QSign, QThermometer, QBinaryLinear, QBinaryConv1d, "
                  "QBinaryConv2d, QTable, QSoftmax, Dropout, Identity")


def _shape(node: fx.Node) -> tuple[int, ...]:
    meta = node.meta.get("tensor_meta")
    if meta is None or not hasattr(meta, "shape"):
        raise IRError(f"export: node '{node.name}' produced no single tensor, so it has no shape")
    return tuple(int(s) for s in meta.shape[1:])


def _warn_pinned(model: nn.Module) -> None:
    """Warn about every binary point at an end of its quantizer's ``int_bits_range``: the clamp, not the
    data or the loss, chose it (a runaway learned binary point, or a tensor of zeros or huge values)."""
    for path, module in model.named_modules():
        bounds = getattr(module, "int_bits_range", None)
        if bounds is None:
            continue
        try:
            bits = module.effective_int_bits()
        except RuntimeError:
            continue
        pinned = sorted({int(b) for b in bits.flatten().tolist() if b in bounds})
        if pinned:
            warnings.warn(f"export: the quantizer '{path}' ({module.base_type}) has {pinned} integer bits, at the "
                          f"end of its int_bits_range {bounds}: the range, not the data, placed that binary point",
                          stacklevel=3)


def export(model: nn.Module, example_input: Any, name: str = "") -> Graph:
    """The IR graph of a quantized model's eval-mode computation.

    Args:
        model: a model from :func:`qfx.quantize_model`, or a traceable module
            built from :mod:`qfx.nn` layers; every graph input must go
            straight into a :class:`~qfx.nn.QInput`.
        example_input: a batch (tensor, or tuple of tensors) that fixes the
            shapes per sample.
        name: the graph's name; default the model's class name.

    Raises :class:`~qfx.ir.IRError` naming any layer or operation that has no
    IR op, and if the result fails :meth:`Graph.check`.
    """
    gm = model if isinstance(model, fx.GraphModule) else trace(model)
    record_shapes(gm, example_input)
    _warn_pinned(gm)
    modules = dict(gm.named_modules())
    inputs: list[Value] = []
    nodes: list[Node] = []
    values: dict[fx.Node, Value] = {}
    outputs: list[str] = []
    scales: dict[fx.Node, FixedConstant] = {}  # a scaled binary layer's scale, until its BatchNorm takes it
    for fx_node in gm.graph.nodes:
        if fx_node.op == "placeholder":
            users = list(fx_node.users)
            if not users or any(u.op != "call_module" or not isinstance(modules[u.target], QInput) for u in users):
                raise IRError(f"export: graph input '{fx_node.name}' must feed QInput layers only, so that it "
                              "enters the model as fixed-point codes; convert the model with qfx.quantize_model")
            continue
        if fx_node.op == "output":
            results = fx_node.args[0] if isinstance(fx_node.args[0], (tuple, list)) else (fx_node.args[0],)
            for r in results:
                if not isinstance(r, fx.Node) or r not in values:
                    raise IRError(f"export: the model returns {r!r}, which is not the output of an exported layer")
                outputs.append(values[r].name)
            continue
        if fx_node.op != "call_module":
            raise IRError(f"export: node '{fx_node.name}' ({fx_node.op} {fx_node.target}) is not a qfx layer; "
                          "convert the model with qfx.quantize_model first")
        layer = modules[fx_node.target]
        args = [a for a in fx_node.args if isinstance(a, fx.Node)]
        if isinstance(layer, _ALIASES):
            values[fx_node] = values[args[0]]  # the identity in eval mode
            continue
        if isinstance(layer, QInput):
            value = Value(fx_node.name, _shape(fx_node), layer.output_quantizer.fixed_type)
            inputs.append(value)
            values[fx_node] = value
            continue
        if not isinstance(layer, QuantizedLayer):
            raise IRError(f"export: module '{fx_node.target}' ({type(layer).__name__}) is not a qfx layer")
        missing = [a.name for a in args if a not in values]
        if missing:
            raise IRError(f"export: layer '{fx_node.target}' reads '{missing[0]}', which is not fixed-point")
        lowered = lower_layer(layer, fx_node.name, str(fx_node.target), [values[a] for a in args], _shape(fx_node))
        if lowered is not None:
            nodes.extend(lowered)
            values[fx_node] = lowered[-1].output
            continue
        op = _op(layer)
        if isinstance(layer, QSoftmax) and layer.dim != 1 and not (layer.dim == -1 and len(_shape(fx_node)) == 1):
            raise IRError(f"export: layer '{fx_node.target}' takes the softmax over dimension {layer.dim}; the IR "
                          "takes it over dimension 1 (features or channels)")
        formats = layer.formats()
        out_type = formats["output"] if "output" in formats else values[args[0]].type
        constants = {k: _constant(c) for k, c in layer.constants().items()}
        alpha = layer.scale_constant() if isinstance(layer, _QBinaryDot) else None
        if alpha is not None:
            out_type = _scaled_sum(layer, fx_node, modules)
        if isinstance(layer, _QBatchNorm) and args[0] in scales:
            constants["scale"] = _fold_scale(constants["scale"], scales.pop(args[0]))
        node = Node(name=fx_node.name, op=op, inputs=tuple(values[a].name for a in args),
                    output=Value(fx_node.name, _shape(fx_node), out_type), attrs=_attrs(layer),
                    constants=constants, formats={k: formats[k] for k in ("accum", "table") if k in formats},
                    label=str(fx_node.target))
        nodes.append(node)
        values[fx_node] = node.output
        if alpha is not None:
            scales[fx_node] = alpha
    graph = Graph(name or type(model).__name__, inputs, nodes, outputs)
    return graph.check()

