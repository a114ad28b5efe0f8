"""Conversion rules for the structural layers: which float modules, functions and methods become which
:mod:`qfx.nn.structure` / :mod:`qfx.nn.reduce` layer, used by :func:`qfx.quantize_model`.

A module rule builds the qfx layer from the float module; a function rule
reads an ``fx`` node (its arguments must be tensors from converted layers,
or plain numbers where a constant is allowed) and returns the layer and the
tensors it reads, or ``None`` when the node is not one it knows.
"""

from __future__ import annotations

import operator
from typing import Any, Callable, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import fx, nn

from .nn import LayerQConfig, QReLU6
from .nn.reduce import QAdaptiveAvgPool, QAvgPool1d, QMaxPool1d, QMean
from .nn.structure import (QClamp, QConcat, QConstantAdd, QConstantMul, QConvTranspose1d, QConvTranspose2d, QMul,
                           QSub, QUpsample, QZeroPad)

__all__ = ["module_type", "convert_module", "FunctionRule", "function_rule", "STRUCTURE_MODULES"]


def _pad_pairs(flat: list[int], dims: int) -> list[list[int]]:
    """``F.pad``'s flat list (last dimension first) as ``[[begin, end], ...]`` per spatial dimension."""
    flat = list(flat) + [0] * (2 * dims - len(flat))
    pairs = [[flat[2 * i], flat[2 * i + 1]] for i in range(dims)]
    return list(reversed(pairs))


def _hardtanh(module: nn.Hardtanh, cfg: LayerQConfig, width: int) -> nn.Module:
    return QClamp(module.min_val, module.max_val, cfg)


def _zero_pad(module: nn.Module, cfg: LayerQConfig, width: int) -> nn.Module:
    if float(getattr(module, "value", 0.0)) != 0.0:
        raise ValueError(f"padding with {module.value} is not supported, only zeros")
    dims = 1 if isinstance(module, (nn.ConstantPad1d, nn.ZeroPad1d)) else 2
    return QZeroPad(_pad_pairs(list(module.padding), dims))


def _upsample(module: nn.Upsample, cfg: LayerQConfig, width: int) -> nn.Module:
    return _upsample_layer(module.mode, module.scale_factor, module.size)


def _upsample_layer(mode: str, scale: Any, size: Any) -> nn.Module:
    if mode != "nearest":
        raise ValueError(f"mode={mode!r} is not supported, only 'nearest'")
    if size is not None or scale is None:
        raise ValueError("give scale_factor (integers), not size")
    factors = list(scale) if isinstance(scale, (tuple, list)) else [scale]
    if not all(float(f) == int(f) and f >= 1 for f in factors):
        raise ValueError(f"scale_factor {scale!r} must be integers >= 1")
    return QUpsample([int(f) for f in factors])


def _adaptive(module: nn.Module, cfg: LayerQConfig, width: int) -> nn.Module:
    return QAdaptiveAvgPool.from_float(module, cfg, input_width=width)


#: float module type -> builder(module, cfg, input width) of its qfx layer.
STRUCTURE_MODULES: dict[type, Callable[[nn.Module, LayerQConfig, int], nn.Module]] = {
    nn.MaxPool1d: lambda m, cfg, w: QMaxPool1d.from_float(m, None),  # the maximum keeps the format: no cast
    nn.AvgPool1d: lambda m, cfg, w: QAvgPool1d.from_float(m, cfg, input_width=w),
    nn.AdaptiveAvgPool1d: _adaptive,
    nn.ConvTranspose1d: lambda m, cfg, w: QConvTranspose1d.from_float(m, cfg, input_width=w),
    nn.ConvTranspose2d: lambda m, cfg, w: QConvTranspose2d.from_float(m, cfg, input_width=w),
    nn.Hardtanh: _hardtanh,
    nn.ZeroPad1d: _zero_pad, nn.ZeroPad2d: _zero_pad, nn.ConstantPad1d: _zero_pad, nn.ConstantPad2d: _zero_pad,
    nn.Upsample: _upsample,
}

_QTYPES = {nn.MaxPool1d: QMaxPool1d, nn.AvgPool1d: QAvgPool1d, nn.AdaptiveAvgPool1d: QAdaptiveAvgPool,
           nn.ConvTranspose1d: QConvTranspose1d, nn.ConvTranspose2d: QConvTranspose2d, nn.Hardtanh: QClamp,
           nn.ZeroPad1d: QZeroPad, nn.ZeroPad2d: QZeroPad, nn.ConstantPad1d: QZeroPad, nn.ConstantPad2d: QZeroPad,
           nn.Upsample: QUpsample}


def _adaptive_not_global(module: nn.Module) -> bool:
    return type(module) is nn.AdaptiveAvgPool2d and module.output_size not in (1, (1, 1), [1, 1])


def module_type(module: nn.Module) -> Optional[type]:
    """The qfx layer class a float module of a structural kind becomes, or ``None``."""
    if _adaptive_not_global(module):
        return QAdaptiveAvgPool
    if type(module) is nn.Hardtanh and (module.min_val, module.max_val) == (0.0, 6.0):
        return QReLU6
    return _QTYPES.get(type(module))


def convert_module(module: nn.Module, cfg: LayerQConfig, input_width: int) -> Optional[nn.Module]:
    """The qfx layer of a structural float module, or ``None`` when it is not one."""
    if _adaptive_not_global(module):
        return _adaptive(module, cfg, input_width)
    if type(module) is nn.Hardtanh and (module.min_val, module.max_val) == (0.0, 6.0):
        return QReLU6(cfg)
    build = STRUCTURE_MODULES.get(type(module))
    return None if build is None else build(module, cfg, input_width)


# ------------------------------------------------------------ functions
class FunctionRule(NamedTuple):
    """What a function node becomes: the layer's class (for configuration), a builder, and its tensor inputs."""

    qtype: type
    float_type: Optional[type]  #: the float module a config override by type may name
    build: Callable[[LayerQConfig, list[int]], nn.Module]  #: (cfg, widths of the inputs) -> layer
    inputs: tuple


def _arg(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    return node.args[index] if len(node.args) > index else node.kwargs.get(name, default)


def _is_tensor(arg: Any) -> bool:
    return isinstance(arg, fx.Node)


def _is_number(arg: Any) -> bool:
    return isinstance(arg, (int, float)) and not isinstance(arg, bool)


def _binary(node: fx.Node, tensor_layer: type, add_sign: Optional[int]) -> Optional[FunctionRule]:
    """``a op b``: two tensors, or a tensor and a number (``add_sign``: +1 add, -1 subtract, None multiply)."""
    if len(node.args) != 2 or set(node.kwargs) - {"alpha"} or node.kwargs.get("alpha", 1) != 1:
        return None
    a, b = node.args
    if _is_tensor(a) and _is_tensor(b):
        if tensor_layer is QMul:
            return FunctionRule(QMul, None, lambda cfg, w: QMul(cfg, w[0], w[1]), (a, b))
        return FunctionRule(tensor_layer, None, lambda cfg, w: tensor_layer(cfg), (a, b))
    if _is_tensor(b) and _is_number(a) and add_sign != -1:
        a, b = b, a  # c + x, c * x
    if not (_is_tensor(a) and _is_number(b)):
        return None
    if add_sign is None:
        return FunctionRule(QConstantMul, None, lambda cfg, w: QConstantMul(float(b), cfg, w[0]), (a,))
    return FunctionRule(QConstantAdd, None, lambda cfg, w: QConstantAdd(add_sign * float(b), cfg, w[0]), (a,))


def _divide(node: fx.Node) -> Optional[FunctionRule]:
    if len(node.args) != 2 or node.kwargs or not (_is_tensor(node.args[0]) and _is_number(node.args[1])) \
            or node.args[1] == 0:
        return None
    x, c = node.args
    return FunctionRule(QConstantMul, None, lambda cfg, w: QConstantMul(1.0 / float(c), cfg, w[0]), (x,))


def _concat(node: fx.Node) -> Optional[FunctionRule]:
    tensors, dim = _arg(node, 0, "tensors"), _arg(node, 1, "dim", 0)
    if not (isinstance(tensors, (list, tuple)) and len(tensors) >= 1 and all(_is_tensor(t) for t in tensors)):
        return None
    if not isinstance(dim, int) or dim == 0:
        raise ValueError(f"torch.cat along dim={dim!r}: only a dimension after the batch (channels or features, "
                         "given as an integer) is supported")
    return FunctionRule(QConcat, None, lambda cfg, w: QConcat(dim, cfg), tuple(tensors))


def _clamp(node: fx.Node, low_name: str, high_name: str, defaults: tuple) -> Optional[FunctionRule]:
    x = node.args[0] if node.args else node.kwargs.get("input")
    low, high = _arg(node, 1, low_name, defaults[0]), _arg(node, 2, high_name, defaults[1])
    if not _is_tensor(x) or not all(v is None or _is_number(v) for v in (low, high)):
        return None
    if (low, high) == (0, 6) or (low, high) == (0.0, 6.0):
        return FunctionRule(QReLU6, nn.ReLU6, lambda cfg, w: QReLU6(cfg), (x,))
    low = None if low is None else float(low)
    high = None if high is None else float(high)
    return FunctionRule(QClamp, nn.Hardtanh, lambda cfg, w: QClamp(low, high, cfg), (x,))


def _mean(node: fx.Node) -> Optional[FunctionRule]:
    x, dims = node.args[0], _arg(node, 1, "dim")
    keepdim = _arg(node, 2, "keepdim", False)
    if not _is_tensor(x) or dims is None:
        raise ValueError(".mean() over every dimension is not supported; give the spatial dimensions")
    dims = [dims] if isinstance(dims, int) else list(dims)
    return FunctionRule(QMean, None, lambda cfg, w: QMean(dims, bool(keepdim), cfg=cfg, input_width=w[0]), (x,))


def _pad(node: fx.Node) -> Optional[FunctionRule]:
    x, pad = node.args[0], _arg(node, 1, "pad")
    mode, value = _arg(node, 2, "mode", "constant"), _arg(node, 3, "value", None)
    if not _is_tensor(x) or mode != "constant" or value not in (None, 0, 0.0):
        raise ValueError(f"F.pad with mode={mode!r}, value={value!r}: only zero padding is supported")
    pad = list(pad)
    dims = max(1, (len(pad) + 1) // 2)
    return FunctionRule(QZeroPad, None, lambda cfg, w: QZeroPad(_pad_pairs(pad, dims)), (x,))


def _interpolate(node: fx.Node) -> Optional[FunctionRule]:
    x = node.args[0]
    size, scale = _arg(node, 1, "size"), _arg(node, 2, "scale_factor")
    mode = _arg(node, 3, "mode", "nearest")
    layer = _upsample_layer(mode, scale, size)
    return FunctionRule(QUpsample, nn.Upsample, lambda cfg, w: layer, (x,))


def _relu6(node: fx.Node) -> Optional[FunctionRule]:
    x = node.args[0] if node.args else node.kwargs.get("input")
    return FunctionRule(QReLU6, nn.ReLU6, lambda cfg, w: QReLU6(cfg), (x,)) if _is_tensor(x) else None


_FUNCTIONS: dict[Any, Callable[[fx.Node], Optional[FunctionRule]]] = {
    operator.sub: lambda n: _binary(n, QSub, -1), torch.sub: lambda n: _binary(n, QSub, -1),
    operator.mul: lambda n: _binary(n, QMul, None), torch.mul: lambda n: _binary(n, QMul, None),
    operator.add: lambda n: _binary(n, type(None), +1) if not all(_is_tensor(a) for a in n.args) else None,
    torch.add: lambda n: _binary(n, type(None), +1) if not all(_is_tensor(a) for a in n.args) else None,
    operator.truediv: _divide, torch.div: _divide,
    torch.cat: _concat, torch.concat: _concat, torch.concatenate: _concat,
    torch.clamp: lambda n: _clamp(n, "min", "max", (None, None)),
    torch.clip: lambda n: _clamp(n, "min", "max", (None, None)),
    F.hardtanh: lambda n: _clamp(n, "min_val", "max_val", (-1.0, 1.0)),
    F.relu6: _relu6,
    torch.mean: _mean, F.pad: _pad, F.interpolate: _interpolate,
}
_METHODS: dict[str, Callable[[fx.Node], Optional[FunctionRule]]] = {
    "sub": lambda n: _binary(n, QSub, -1), "mul": lambda n: _binary(n, QMul, None),
    "clamp": lambda n: _clamp(n, "min", "max", (None, None)), "clip": lambda n: _clamp(n, "min", "max", (None, None)),
    "mean": _mean,
}


def function_rule(node: fx.Node) -> Optional[FunctionRule]:
    """The rule converting a structural function or method node, or ``None`` when there is none.

    ``ValueError`` says why a known function's arguments are not supported.
    """
    if node.op == "call_function":
        try:
            rule = _FUNCTIONS.get(node.target)
        except TypeError:  # an unhashable target
            return None
    elif node.op == "call_method":
        rule = _METHODS.get(node.target)
    else:
        return None
    return None if rule is None else rule(node)
