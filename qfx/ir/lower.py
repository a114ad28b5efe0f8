"""The structural layers as IR nodes: each becomes one node of its own op, or a few nodes of existing ops.

``x - y``, ``x * y``, ``clamp``, ``cat``, zero padding and nearest
upsampling have ops of their own (``sub``, ``mul``, ``clamp``, ``concat``,
``zero_pad``, ``upsample``).  The rest reuse what every back end already
runs: a tensor plus or times a constant is a ``scale_shift`` with the same
constant on every channel; a transposed convolution is ``zero_pad`` (zeros
inserted and padded) then ``conv1d``/``conv2d``; 1-D pooling is 2-D pooling
of height 1 between two ``flatten`` reshapes; adaptive pooling whose output
divides its input is ``avgpool2d``; ``mean`` is ``global_avgpool2d``.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from ..format import FixedType
from ..nn.layer import FixedConstant
from ..nn.reduce import QAdaptiveAvgPool, QAvgPool1d, QMaxPool1d, QMean
from ..nn.structure import (QClamp, QConcat, QConstantAdd, QConstantMul, QConvTranspose1d, QConvTranspose2d, QMul,
                            QSub, QUpsample, QZeroPad)
from .graph import Constant, Node, Value

__all__ = ["lower_layer"]

_ONE = FixedType(2, 2, signed=False)  # holds the code 1 (the value 1) and the code 0


def _constant(c: FixedConstant) -> Constant:
    types = tuple(c.format) if isinstance(c.format, list) else (c.format,)
    return Constant(c.codes.cpu().numpy(), types)


def _out(layer, x: Value) -> FixedType:
    q = getattr(layer, "output_quantizer", None)
    return x.type if q is None else q.fixed_type


def _reshape(name: str, x: Value, shape: tuple[int, ...], label: str) -> Node:
    return Node(name=name, op="flatten", inputs=(x.name,), output=Value(name, tuple(shape), x.type), label=label)


def _single(op: str, attrs: Callable[[object], dict] = lambda layer: {}):
    def lower(layer, name: str, label: str, inputs: list[Value], shape: tuple[int, ...]) -> list[Node]:
        constants = {k: _constant(c) for k, c in layer.constants().items()}
        return [Node(name=name, op=op, inputs=tuple(v.name for v in inputs),
                     output=Value(name, shape, _out(layer, inputs[0])), attrs=attrs(layer), constants=constants,
                     label=label)]
    return lower


def _constant_op(layer, name: str, label: str, inputs: list[Value], shape: tuple[int, ...]) -> list[Node]:
    (x,) = inputs
    channels = x.shape[0]
    c = _constant(next(iter(layer.constants().values())))
    spread = Constant(np.full(channels, int(c.codes)), c.types)
    neutral = Constant(np.full(channels, 1 if isinstance(layer, QConstantAdd) else 0), (_ONE,))
    scale, shift = (neutral, spread) if isinstance(layer, QConstantAdd) else (spread, neutral)
    return [Node(name=name, op="scale_shift", inputs=(x.name,), output=Value(name, shape, _out(layer, x)),
                 constants={"scale": scale, "shift": shift}, label=label)]


def _conv_transpose(layer, name: str, label: str, inputs: list[Value], shape: tuple[int, ...]) -> list[Node]:
    (x,) = inputs
    stuffed = tuple((n - 1) * s + 1 + b + e for n, s, (b, e) in zip(x.shape[1:], layer.insert, layer.stuff_padding))
    pad = Node(name=f"{name}__stuffed", op="zero_pad", inputs=(x.name,),
               output=Value(f"{name}__stuffed", (x.shape[0],) + stuffed, x.type),
               attrs={"insert": list(layer.insert), "padding": [list(p) for p in layer.stuff_padding]}, label=label)
    formats = layer.formats()
    dims = len(layer.kernel_size)
    conv = Node(name=name, op=f"conv{dims}d", inputs=(pad.name,), output=Value(name, shape, formats["output"]),
                attrs={"stride": [1] * dims, "padding": [[0, 0]] * dims, "dilation": list(layer.dilation),
                       "groups": layer.groups},
                constants={k: _constant(c) for k, c in layer.constants().items()},
                formats={"accum": formats["accum"]} if "accum" in formats else {}, label=label)
    return [pad, conv]


def _as_2d(make_pool: Callable[[Value, tuple[int, ...]], Node], name: str, label: str, x: Value,
           shape: tuple[int, ...]) -> list[Node]:
    """A pooling of ``(C, L)`` as one of ``(C, 1, L)`` between two reshapes."""
    if len(x.shape) == 3:
        return [make_pool(x, shape)]
    wide = _reshape(f"{name}__2d", x, (x.shape[0], 1, x.shape[1]), label)
    pool = make_pool(wide.output, (shape[0], 1) + tuple(shape[1:]))
    pool = Node(name=f"{name}__pool", op=pool.op, inputs=pool.inputs,
                output=Value(f"{name}__pool", pool.output.shape, pool.output.type), attrs=pool.attrs,
                constants=pool.constants, label=label)
    return [wide, pool, _reshape(name, pool.output, shape, label)]


def _pool(layer, name: str, label: str, inputs: list[Value], shape: tuple[int, ...]) -> list[Node]:
    (x,) = inputs
    if isinstance(layer, QMaxPool1d):
        op = "maxpool2d"
        attrs = {"kernel": list(layer.kernel_size), "stride": list(layer.stride), "padding": list(layer.padding),
                 "dilation": list(layer.dilation), "ceil_mode": bool(layer.ceil_mode)}
    elif isinstance(layer, QAvgPool1d):
        op = "avgpool2d"
        attrs = {"kernel": list(layer.kernel_size), "stride": list(layer.stride), "padding": list(layer.padding)}
    else:  # QAdaptiveAvgPool
        op = "avgpool2d"
        kernel = [1] + layer.kernel if layer.dims == 1 else list(layer.kernel)
        attrs = {"kernel": kernel, "stride": kernel, "padding": [0, 0]}
    constants = {k: _constant(c) for k, c in layer.constants().items()}

    def make(v: Value, out: tuple[int, ...]) -> Node:
        return Node(name=name, op=op, inputs=(v.name,), output=Value(name, out, _out(layer, x)), attrs=attrs,
                    constants=constants, label=label)
    return _as_2d(make, name, label, x, shape)


def _mean(layer, name: str, label: str, inputs: list[Value], shape: tuple[int, ...]) -> list[Node]:
    (x,) = inputs
    channels = x.shape[0]
    constants = {k: _constant(c) for k, c in layer.constants().items()}
    nodes = []
    if len(x.shape) == 2:
        nodes.append(_reshape(f"{name}__2d", x, (channels, 1, x.shape[1]), label))
        x = nodes[-1].output
    pooled_name = name if tuple(shape) == (channels, 1, 1) else f"{name}__pool"
    nodes.append(Node(name=pooled_name, op="global_avgpool2d", inputs=(x.name,),
                      output=Value(pooled_name, (channels, 1, 1), _out(layer, x)), constants=constants, label=label))
    if pooled_name != name:
        nodes.append(_reshape(name, nodes[-1].output, shape, label))
    return nodes


_LOWERINGS: dict[type, Callable] = {
    QSub: _single("sub"), QMul: _single("mul"), QClamp: _single("clamp"),
    QConcat: _single("concat", lambda layer: {"axis": layer.dim - 1}),
    QZeroPad: _single("zero_pad", lambda layer: {"insert": list(layer.insert),
                                                 "padding": [list(p) for p in layer.padding]}),
    QUpsample: _single("upsample", lambda layer: {"scale": list(layer.scale)}),
    QConstantAdd: _constant_op, QConstantMul: _constant_op,
    QConvTranspose1d: _conv_transpose, QConvTranspose2d: _conv_transpose,
    QMaxPool1d: _pool, QAvgPool1d: _pool, QAdaptiveAvgPool: _pool, QMean: _mean,
}


def lower_layer(layer, name: str, label: str, inputs: list[Value], shape: tuple[int, ...]) -> Optional[list[Node]]:
    """The IR nodes of a structural layer (the last one named ``name``), or ``None`` for any other layer."""
    lower = _LOWERINGS.get(type(layer))
    return None if lower is None else lower(layer, name, label, inputs, tuple(shape))
