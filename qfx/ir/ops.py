"""The IR's operations: their inputs, attributes, constants and shapes, and the checks on them.

Every op computes an exact result from fixed-point operands (the ``ap_fixed``
result types of ``*`` and ``+``: nothing is lost) and casts it once to its
output format; :mod:`qfx.ir.interpreter` is the executable definition.

============================  ==========================================================  =======================
op                            result before the output cast                               constants (attrs)
============================  ==========================================================  =======================
``dense``                     ``sum_i x[i] * w[o, i] + b[o]``, then ``accum`` if given    weight, bias?
``conv1d``, ``conv2d``        the same over each window (zero padding)                    weight, bias?
                                                                                          (stride, padding,
                                                                                          dilation, groups)
``scale_shift``               ``x[c, ...] * scale[c] + shift[c]`` (BatchNorm)             scale, shift
``relu``                      ``max(x, 0)``
``relu6``                     ``min(max(x, 0), 6)``
``leaky_relu``                ``x >= 0 ? x : x * slope``                                  slope
``add``                       ``a + b``
``maxpool2d``                 the window's maximum (padding never wins)                   (kernel, stride,
                                                                                          padding, dilation,
                                                                                          ceil_mode)
``avgpool2d``                 ``sum(window) * divisor`` (zero padding counts)             divisor (kernel,
                                                                                          stride, padding)
``global_avgpool2d``          ``sum over H, W * divisor``                                 divisor
``flatten``                   the same codes in the output's shape (no cast)
``prelu``                     ``t = x + bias[c]``; ``(t >= 0 ? t : t * slope[c])           slope, bias?, shift?
                              + shift[c]`` (PReLU; RPReLU with the shifts)
``sign``                      ``x >= 0 ? +1 : -1`` (a binary tensor)
``thermometer``               ``y[c*T + t] = x[c] >= thresholds[t] ? +1 : -1``            thresholds (T)
``binary_dense``              ``sum_i x[i] * w[o, i] = 2 * popcount(xnor) - N``           weight (codes ±1)
``binary_conv1d``,            the same over each window, padded with ``pad_value``        weight (codes ±1)
``binary_conv2d``                                                                         (stride, padding,
                                                                                          dilation, groups,
                                                                                          pad_value)
``sub``                       ``a - b``
``mul``                       ``a * b`` (widths and fractional bits add)
``clamp``                     ``min(max(x, low), high)`` on their common binary point     low?, high?
``concat``                    each input cast to the output format, joined along          (axis)
                              ``axis`` (one or more inputs)
``zero_pad``                  ``insert - 1`` zeros between neighbours, then zero          (insert, padding)
                              padding ``[[begin, end], ...]`` (no cast)
``upsample``                  each element repeated ``scale`` times per spatial           (scale)
                              dimension, nearest (no cast)
``table``                     ``table[code(Qtable(x)) - code_min]``: the output codes of  table
                              a function at every code of the format ``table``            (function)
``softmax``                   over dimension 0: ``d = x - max(x)``, ``e = exp[Qtable(d)]``, exp, reciprocal or log
                              ``s = Qaccum(sum e)``; ``e * reciprocal[s]``, or            (log)
                              ``d - log[s]`` when ``log``
============================  ==========================================================  =======================

A binary tensor has the format ``ap_fixed<2,2>`` and only the codes ``-1``
and ``+1`` (``BIPOLAR``); the ``binary_*`` ops take a binary input and
binary weights, and a back end may hold them as one bit each (``1`` for
``+1``).

Shapes are per sample, channels first (``(C, L)``, ``(C, H, W)``, ``(F,)``
for ``dense``).  Paddings are explicit: ``[[begin, end], ...]`` per spatial
dimension for convolutions, one symmetric amount per dimension for pooling.
A ``dense`` or convolution weight and a ``scale``/``shift`` may have one
format per output channel; ``bias``, ``slope`` and ``divisor`` have one.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

from ..format import FixedType
from . import limits
from .values import Constant, IRError, Node, Value

__all__ = ["OPS", "check_node", "conv_output_size", "pool_output_size"]


def _ints(node: Node, name: str, count: int, minimum: int) -> list[int]:
    value = node.attrs.get(name)
    if not (isinstance(value, (list, tuple)) and len(value) == count
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value)):
        raise IRError(f"{node.describe()}: attribute '{name}' must be a list of {count} integers >= {minimum}, "
                      f"got {value!r}")
    return list(value)


def _int(node: Node, name: str, minimum: int) -> int:
    value = node.attrs.get(name)
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= minimum):
        raise IRError(f"{node.describe()}: attribute '{name}' must be an integer >= {minimum}, got {value!r}")
    return value


def _constant(node: Node, role: str, shape: Optional[tuple[int, ...]], optional: bool = False,
              per_channel: bool = False) -> Optional[Constant]:
    """The constant ``role`` of ``node``, checked: shape, formats, codes inside their formats' ranges."""
    c = node.constants.get(role)
    if c is None:
        if optional:
            return None
        raise IRError(f"{node.describe()}: constant '{role}' is missing")
    if shape is not None and tuple(c.codes.shape) != tuple(shape):
        raise IRError(f"{node.describe()}: constant '{role}' has shape {tuple(c.codes.shape)}, expected {shape}")
    if c.per_channel and (not per_channel or c.codes.ndim == 0 or len(c.types) != c.codes.shape[0]):
        raise IRError(f"{node.describe()}: constant '{role}' has {len(c.types)} formats; it takes one"
                      + (" or one per index of dimension 0" if per_channel else ""))
    if not c.types:
        raise IRError(f"{node.describe()}: constant '{role}' has no format")
    for channel in range(len(c.types)):
        codes = c.codes[channel] if c.per_channel else c.codes
        t = c.types[channel]
        if codes.size and (int(codes.min()) < t.code_min or int(codes.max()) > t.code_max):
            where = f" channel {channel}" if c.per_channel else ""
            raise IRError(f"{node.describe()}: constant '{role}'{where} has codes outside the range "
                          f"[{t.code_min}, {t.code_max}] of its format {t}")
    return c


def _rank(node: Node, value: Value, rank: int) -> None:
    if len(value.shape) != rank:
        raise IRError(f"{node.describe()}: input '{value.name}' has shape {value.shape}, expected {rank} "
                      "dimensions per sample")


def conv_output_size(size: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    """Output length of a convolution along one dimension (``pad`` is begin + end)."""
    return (size + pad - dilation * (kernel - 1) - 1) // stride + 1


def pool_output_size(size: int, kernel: int, stride: int, pad: int, dilation: int, ceil_mode: bool) -> int:
    """Output length of pooling along one dimension, as ``torch`` computes it (``pad`` on each side)."""
    span = size + 2 * pad - dilation * (kernel - 1) - 1
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + pad:  # the last window must start inside the input or left pad
        out -= 1
    return out


# ---------------------------------------------------------------- checks
# Each returns the output shape its inputs imply.

def _dense(node: Node, inputs: list[Value]) -> tuple[int, ...]:
    (x,) = inputs
    _rank(node, x, 1)
    w = _constant(node, "weight", None, per_channel=True)
    if w.codes.ndim != 2 or w.codes.shape[1] != x.shape[0]:
        raise IRError(f"{node.describe()}: weight shape {tuple(w.codes.shape)} does not take {x.shape[0]} inputs")
    _constant(node, "bias", (w.codes.shape[0],), optional=True)
    return (w.codes.shape[0],)


def _conv(dims: int) -> Callable[[Node, list[Value]], tuple[int, ...]]:
    def check(node: Node, inputs: list[Value]) -> tuple[int, ...]:
        (x,) = inputs
        _rank(node, x, dims + 1)
        groups = _int(node, "groups", 1)
        stride, dilation = _ints(node, "stride", dims, 1), _ints(node, "dilation", dims, 1)
        padding = node.attrs.get("padding")
        if not (isinstance(padding, (list, tuple)) and len(padding) == dims
                and all(isinstance(p, (list, tuple)) and len(p) == 2 and all(type(v) is int and v >= 0
                                                                             for v in p) for p in padding)):
            raise IRError(f"{node.describe()}: attribute 'padding' must be {dims} pairs [begin, end] of integers "
                          f">= 0, got {padding!r}")
        w = _constant(node, "weight", None, per_channel=True)
        out_ch = w.codes.shape[0] if w.codes.ndim == dims + 2 else 0
        if w.codes.ndim != dims + 2 or x.shape[0] % groups or out_ch % groups or w.codes.shape[1] * groups != x.shape[0]:
            raise IRError(f"{node.describe()}: weight shape {tuple(w.codes.shape)} with groups={groups} does not "
                          f"fit an input of {x.shape[0]} channels")
        _constant(node, "bias", (out_ch,), optional=True)
        spatial = tuple(conv_output_size(x.shape[1 + d], w.codes.shape[2 + d], stride[d], sum(padding[d]),
                                         dilation[d]) for d in range(dims))
        if min(spatial) < 1:
            raise IRError(f"{node.describe()}: the kernel does not fit the input {x.shape} with this padding")
        return (out_ch,) + spatial
    return check


def _scale_shift(node: Node, inputs: list[Value]) -> tuple[int, ...]:
    (x,) = inputs
    if len(x.shape) < 1:
        raise IRError(f"{node.describe()}: input '{x.name}' needs a channel dimension")
    _constant(node, "scale", (x.shape[0],), per_channel=True)
    _constant(node, "shift", (x.shape[0],), per_channel=True)
    return x.shape


def _elementwise(node: Node, inputs: list[Value]) -> tuple[int, ...]:
    return inputs[0].shape


def _leaky_relu(node: Node, inputs: list[Value]) -> tuple[int, ...]:
    _constant(node, "slope", ())
    return inputs[0].shape


def _add(node: Node, inputs: list[Value]) -> tuple[int, ...]:
    a, b = inputs
    if a.shape != b.shape:
        raise IRError(f"{node.describe()}: operands '{a.name}' {a.shape} and '{b.name}' {b.shape} differ in shape "
                      "(no broadcasting)")
    return a.shape


def _pool(node: Node, x: Value, dilation: list[int], ceil_mode: bool) -> tuple[int, ...]:
    _rank(node, x, 3)
    kernel, stride = _ints(node, "kernel", 2, 1), _ints(node, "stride", 2, 1)
    padding = _ints(node, "padding", 2, 0)
    if any(2 * p > k for p, k in zip(padding, kernel)):
        raise IRError(f"{node.describe()}: padding {padding} must be at most half the kernel {kernel}")
    spatial = tuple(pool_output_size(x.shape[1 + d], kernel[d], stride[d], padding[d], dilation[d], ceil_mode)
                    for d in range(2))
    if min(spatial) < 1:
        raise IRError(f"{node.describe()}: the window does not fit the input {x.shape}")
    return (x.shape[0],) + spatial


def _maxpool(node: Node, inputs: list[Value]) -> tuple[int, ...]:
    ceil_mode = node.attrs.get("ceil_mode")
    if not isinstance(ceil_mode, bool):
        raise IRError(f"{node.describe()}: attribute 'ceil_mode' must be true or false, got {ceil_mode!r}")
    return _pool(node, inputs[0], _ints(node, "dilation", 2, 1), ceil_mode)


def _avgpool(node: Node, inputs: list[Value]) -> tuple[int, ...]:
    _constant(node, "divisor", ())
    return _pool(node, inputs[0], [1, 1], False)


def _global_avgpool(node: Node, inputs: list[Value]) -> tuple[int, ...]:
    (x,) = inputs
    _rank(node, x, 3)
    _constant(node, "divisor", ())
    return (x.shape[0], 1, 1)


def _flatten(node: Node, inputs: list[Value]) -> tuple[int, ...]:
    (x,) = inputs
    if node.output.type != x.type:
        raise IRError(f"{node.describe()}: flatten keeps its input's format {x.type}, but its output is "
                      f"{node.output.type}")
    if math.prod(node.output.shape) != x.size:
        raise IRError(f"{node.describe()}: output shape {node.output.shape} does not hold the {x.size} elements of "
                      f"input shape {x.shape}")
    return node.output.shape


# ------------------------------------------------------------- binary ops
def _bipolar(node: Node, what: str, t: FixedType) -> None:
    if (t.width, t.int_bits, t.signed) != (2, 2, True):
        raise IRError(f"{node.describe()}: {what} must be binary (format ap_fixed<2,2>, codes -1 and +1), "
                      f"got {t}")


def _binary_weight(node: Node) -> Constant:
    w = _constant(node, "weight", None)
    _bipolar(node, "constant 'weight'", w.types[0])
    if w.codes.size and not ((w.codes == 1) | (w.codes == -1)).all():
        raise IRError(f"{node.describe()}: constant 'weight' holds codes other than -1 and +1")
    return w


def _sign(node: Node, inputs: list[Value]) -> tuple[int, ...]:
    _bipolar(node, "the output", node.output.type)
    return inputs[0].shape


def _thermometer(node: Node, inputs: list[Value]) -> tuple[int, ...]:
    (x,) = inputs
    if len(x.shape) < 1:
        raise IRError(f"{node.describe()}: input '{x.name}' needs a channel dimension")
    thresholds = _constant(node, "thresholds", None)
    if thresholds.codes.ndim != 1 or thresholds.codes.size < 1:
        raise IRError(f"{node.describe()}: constant 'thresholds' must be a non-empty vector, got shape "
                      f"{tuple(thresholds.codes.shape)}")
    _bipolar(node, "the output", node.output.type)
    return (x.shape[0] * thresholds.codes.size,) + tuple(x.shape[1:])


def _binary_dense(node: Node, inputs: list[Value]) -> tuple[int, ...]:
    (x,) = inputs
    _bipolar(node, f"input '{x.name}'", x.type)
    _binary_weight(node)
    return _dense(node, inputs)


def _binary_conv(dims: int) -> Callable[[Node, list[Value]], tuple[int, ...]]:
    conv = _conv(dims)

    def check(node: Node, inputs: list[Value]) -> tuple[int, ...]:
        _bipolar(node, f"input '{inputs[0].name}'", inputs[0].type)
        _binary_weight(node)
        if node.attrs.get("pad_value") not in (-1, 1) or isinstance(node.attrs.get("pad_value"), bool):
            raise IRError(f"{node.describe()}: attribute 'pad_value' must be -1 or 1, got "
                          f"{node.attrs.get('pad_value')!r}")
        return conv(node, inputs)
    return check


def _prelu(node: Node, inputs: list[Value]) -> tuple[int, ...]:
    (x,) = inputs
    if len(x.shape) < 1:
        raise IRError(f"{node.describe()}: input '{x.name}' needs a channel dimension")
    slope = _constant(node, "slope", None, per_channel=True)
    if slope.codes.shape not in ((1,), (x.shape[0],)):
        raise IRError(f"{node.describe()}: constant 'slope' has shape {tuple(slope.codes.shape)}, expected (1,) "
                      f"or ({x.shape[0]},)")
    for role in ("bias", "shift"):
        _constant(node, role, tuple(slope.codes.shape), optional=True, per_channel=True)
    return x.shape


_BINARY_CONV_ATTRS = frozenset({"stride", "padding", "dilation", "groups", "pad_value"})

# ------------------------------------------------- structural ops
def _same_shapes(node: Node, inputs: list[Value]) -> tuple[int, ...]:
    a, b = inputs
    if a.shape != b.shape:
        raise IRError(f"{node.describe()}: operands '{a.name}' {a.shape} and '{b.name}' {b.shape} differ in shape "
                      "(no broadcasting)")
    return a.shape


def _clamp(node: Node, inputs: list[Value]) -> tuple[int, ...]:
    low, high = _constant(node, "low", (), optional=True), _constant(node, "high", (), optional=True)
    if low is None and high is None:
        raise IRError(f"{node.describe()}: a clamp needs a constant 'low', 'high' or both")
    return inputs[0].shape


def _keeps_format(node: Node, x: Value) -> None:
    if node.output.type != x.type:
        raise IRError(f"{node.describe()}: {node.op} moves codes and keeps its input's format {x.type}, but its "
                      f"output is {node.output.type}")


def _concat(node: Node, inputs: list[Value]) -> tuple[int, ...]:
    axis = _int(node, "axis", 0)
    first = inputs[0]
    if axis >= len(first.shape):
        raise IRError(f"{node.describe()}: axis {axis} is past the {len(first.shape)} dimensions of its inputs")
    for v in inputs[1:]:
        if len(v.shape) != len(first.shape) or any(a != b for d, (a, b) in enumerate(zip(v.shape, first.shape))
                                                   if d != axis):
            raise IRError(f"{node.describe()}: input '{v.name}' {v.shape} does not match '{first.name}' "
                          f"{first.shape} outside axis {axis}")
    shape = list(first.shape)
    shape[axis] = sum(v.shape[axis] for v in inputs)
    return tuple(shape)


def _spatial_rank(node: Node, x: Value) -> int:
    if len(x.shape) not in (2, 3):
        raise IRError(f"{node.describe()}: input '{x.name}' has shape {x.shape}; it takes (C, L) or (C, H, W)")
    return len(x.shape) - 1


def _zero_pad(node: Node, inputs: list[Value]) -> tuple[int, ...]:
    (x,) = inputs
    dims = _spatial_rank(node, x)
    insert = _ints(node, "insert", dims, 1)
    padding = node.attrs.get("padding")
    if not (isinstance(padding, (list, tuple)) and len(padding) == dims
            and all(isinstance(p, (list, tuple)) and len(p) == 2 and all(type(v) is int and v >= 0 for v in p)
                    for p in padding)):
        raise IRError(f"{node.describe()}: attribute 'padding' must be {dims} pairs [begin, end] of integers >= 0, "
                      f"got {padding!r}")
    _keeps_format(node, x)
    return (x.shape[0],) + tuple((n - 1) * s + 1 + b + e for n, s, (b, e) in zip(x.shape[1:], insert, padding))


def _upsample(node: Node, inputs: list[Value]) -> tuple[int, ...]:
    (x,) = inputs
    scale = _ints(node, "scale", _spatial_rank(node, x), 1)
    _keeps_format(node, x)
    return (x.shape[0],) + tuple(n * s for n, s in zip(x.shape[1:], scale))


#: Ops taking any number (one or more) of inputs.
VARIADIC = frozenset({"concat"})


def _table(node: Node, inputs: list[Value]) -> tuple[int, ...]:
    """A lookup table: ``formats['table']`` addresses ``2**W`` output codes (the output's format)."""
    t = node.formats.get("table")
    if t is None:
        raise IRError(f"{node.describe()}: format 'table' (the table's input format) is missing")
    if t.width > 16:
        raise IRError(f"{node.describe()}: table input format {t} has more than 16 bits")
    table = _constant(node, "table", (t.code_max - t.code_min + 1,))
    if table.types[0] != node.output.type:
        raise IRError(f"{node.describe()}: the table holds codes of {table.types[0]}, but the output is "
                      f"{node.output.type}")
    if not isinstance(node.attrs.get("function", ""), str):
        raise IRError(f"{node.describe()}: attribute 'function' must be a name, got {node.attrs['function']!r}")
    return inputs[0].shape


def _softmax(node: Node, inputs: list[Value]) -> tuple[int, ...]:
    """Softmax over dimension 0: the exp table addressed by ``formats['table']``, the second table (reciprocal,
    or log when ``attrs['log']``) by the sum's format ``formats['accum']``."""
    (x,) = inputs
    if len(x.shape) < 1:
        raise IRError(f"{node.describe()}: input '{x.name}' needs a dimension to take the softmax over")
    if not isinstance(node.attrs.get("log"), bool):
        raise IRError(f"{node.describe()}: attribute 'log' must be true or false, got {node.attrs.get('log')!r}")
    second = "log" if node.attrs["log"] else "reciprocal"
    for fmt, role in (("table", "exp"), ("accum", second)):
        t = node.formats.get(fmt)
        if t is None or t.width > 16:
            raise IRError(f"{node.describe()}: format '{fmt}' (addressing the {role} table) must be given, at most "
                          f"16 bits, got {t}")
        _constant(node, role, (t.code_max - t.code_min + 1,))
    if "log" in node.constants and "reciprocal" in node.constants:
        raise IRError(f"{node.describe()}: takes a reciprocal or a log table, not both")
    return x.shape


#: Each op: (number of inputs, the check returning the output shape, attributes it takes, formats it takes).
OPS: dict[str, tuple[int, Callable[[Node, list[Value]], tuple[int, ...]], frozenset, frozenset]] = {
    "dense": (1, _dense, frozenset(), frozenset({"accum"})),
    "conv1d": (1, _conv(1), frozenset({"stride", "padding", "dilation", "groups"}), frozenset({"accum"})),
    "conv2d": (1, _conv(2), frozenset({"stride", "padding", "dilation", "groups"}), frozenset({"accum"})),
    "scale_shift": (1, _scale_shift, frozenset(), frozenset()),
    "relu": (1, _elementwise, frozenset(), frozenset()),
    "relu6": (1, _elementwise, frozenset(), frozenset()),
    "leaky_relu": (1, _leaky_relu, frozenset(), frozenset()),
    "add": (2, _add, frozenset(), frozenset()),
    "maxpool2d": (1, _maxpool, frozenset({"kernel", "stride", "padding", "dilation", "ceil_mode"}), frozenset()),
    "avgpool2d": (1, _avgpool, frozenset({"kernel", "stride", "padding"}), frozenset()),
    "global_avgpool2d": (1, _global_avgpool, frozenset(), frozenset()),
    "flatten": (1, _flatten, frozenset(), frozenset()),
    "prelu": (1, _prelu, frozenset(), frozenset()),
    "sign": (1, _sign, frozenset(), frozenset()),
    "thermometer": (1, _thermometer, frozenset(), frozenset()),
    "binary_dense": (1, _binary_dense, frozenset(), frozenset()),
    "binary_conv1d": (1, _binary_conv(1), _BINARY_CONV_ATTRS, frozenset()),
    "binary_conv2d": (1, _binary_conv(2), _BINARY_CONV_ATTRS, frozenset()),
    "sub": (2, _same_shapes, frozenset(), frozenset()),
    "mul": (2, _same_shapes, frozenset(), frozenset()),
    "clamp": (1, _clamp, frozenset(), frozenset()),
    "concat": (0, _concat, frozenset({"axis"}), frozenset()),
    "zero_pad": (1, _zero_pad, frozenset({"insert", "padding"}), frozenset()),
    "upsample": (1, _upsample, frozenset({"scale"}), frozenset()),
    "table": (1, _table, frozenset({"function"}), frozenset({"table"})),
    "softmax": (1, _softmax, frozenset({"log"}), frozenset({"table", "accum"})),
}

_CONSTANTS = {"dense": {"weight", "bias"}, "conv1d": {"weight", "bias"}, "conv2d": {"weight", "bias"},
              "scale_shift": {"scale", "shift"}, "leaky_relu": {"slope"}, "avgpool2d": {"divisor"},
              "global_avgpool2d": {"divisor"}, "thermometer": {"thresholds"}, "binary_dense": {"weight"},
              "prelu": {"slope", "bias", "shift"},
              "binary_conv1d": {"weight"}, "binary_conv2d": {"weight"},
              "clamp": {"low", "high"}, "table": {"table"}, "softmax": {"exp", "reciprocal", "log"}}


def check_node(node: Node, inputs: list[Value]) -> None:
    """Check ``node`` against its op's rules given its input tensors; :class:`IRError` names what is wrong."""
    if node.op not in OPS:
        raise IRError(f"{node.describe()}: unknown op '{node.op}'; known ops: {', '.join(sorted(OPS))}")
    arity, check, attrs, formats = OPS[node.op]
    if (len(inputs) < 1) if node.op in VARIADIC else len(inputs) != arity:
        raise IRError(f"{node.describe()}: takes {arity} input(s), got {len(inputs)}")
    for kind, given, allowed in (("attribute", node.attrs, attrs), ("constant", node.constants,
                                                                    _CONSTANTS.get(node.op, set())),
                                 ("format", node.formats, formats)):
        extra = sorted(set(given) - set(allowed))
        if extra:
            raise IRError(f"{node.describe()}: unexpected {kind} '{extra[0]}' (it takes: "
                          f"{', '.join(sorted(allowed)) or 'none'})")
    shape = check(node, inputs)
    if tuple(shape) != tuple(node.output.shape):
        raise IRError(f"{node.describe()}: output shape is recorded as {node.output.shape}, but its inputs give "
                      f"{tuple(shape)}")
    _check_work(node, inputs)


def _flat(value) -> list:
    return [w for v in value for w in _flat(v)] if isinstance(value, (list, tuple)) else [value]


def _check_work(node: Node, inputs: list[Value]) -> None:
    """The limits every op shares, so that no back end loops or allocates beyond them: a padded input within
    ``MAX_ELEMENTS``, and at most ``MAX_WORK`` multiply-adds or compares per sample."""
    padding = [v for v in _flat(node.attrs.get("padding", [])) if type(v) is int]
    if padding and inputs:
        x, pad = inputs[0], max(padding)
        padded = x.shape[0] * math.prod(n + 2 * pad for n in x.shape[1:])
        if padded > limits.MAX_ELEMENTS:
            raise IRError(f"{node.describe()}: padding {pad} makes its input {x.shape} {padded} elements, more than "
                          f"the limit of {limits.MAX_ELEMENTS} (qfx.ir.limits.MAX_ELEMENTS)")
    window = math.prod(v for v in _flat(node.attrs.get("kernel", [])) if type(v) is int)
    weight = node.constants.get("weight")
    if weight is not None and weight.codes.ndim > 1:
        window *= math.prod(weight.codes.shape[1:])
    work = node.output.size * max(window, 1)
    if work > limits.MAX_WORK:
        raise IRError(f"{node.describe()}: it takes {work} operations per sample, more than the limit of "
                      f"{limits.MAX_WORK} (qfx.ir.limits.MAX_WORK)")

