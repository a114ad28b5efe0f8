"""From an IR graph to one C++ translation unit that runs it on integer codes.

The unit includes the header-only library (``include/qfx/emulator.h``),
declares one ``qfx::Format`` per tensor, the constants as ``constexpr``
integer arrays, a ``Workspace`` holding every tensor of one sample, and
``forward``, which calls one kernel per node.  The numerics are those of
:mod:`qfx.ir.interpreter`: every alignment shift and binary point is worked
out here, in Python integers, so the kernels only shift, multiply, add and
cast.

Each node's exact intermediate width (the ``ap_fixed`` result types: input
width + weight width + ``ceil(log2(fan-in))``, plus the alignment of a bias
or shift) picks its accumulator: ``int32`` up to 31 bits, ``int64`` up to
63, ``__int128`` up to 127; a wider node is refused by name.
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

import numpy as np

from ..format import FixedType
from ..ir.graph import Constant, Graph, Node
from ..render.escape import cpp_comment

__all__ = ["EmulatorError", "generate", "accumulator_bits", "MAX_ACCUMULATOR_BITS"]

#: The widest exact intermediate the kernels hold (``__int128``, one bit for the sign).
MAX_ACCUMULATOR_BITS = 127

_ACCUMULATORS = ((31, "std::int32_t"), (63, "std::int64_t"), (127, "qfx::i128"))
_ROW = 24  # constants per source line


class EmulatorError(ValueError):
    """A graph the emulator cannot run (a format or an intermediate too wide); the message names the node."""


# ----------------------------------------------------------- small helpers
def _bits(t: FixedType) -> int:
    """Width of a code of ``t`` read as a signed integer."""
    return t.width + (0 if t.signed else 1)


def _constant_bits(c: Constant) -> int:
    return max(_bits(t) for t in c.types)


def _carry(count: int) -> int:
    """``ceil(log2(count))``: the carry bits of a sum of ``count`` terms."""
    return (count - 1).bit_length()


def _format(t: FixedType) -> str:
    return (f"qfx::Format<{t.width}, {t.frac_bits}, {'true' if t.signed else 'false'}, "
            f"qfx::Rounding::{t.rounding.value}, qfx::Overflow::{t.overflow.value}, {t.sat_bits}>")


def _ints(values: Iterable[int]) -> str:
    items = [str(int(v)) for v in values]
    rows = [", ".join(items[i:i + _ROW]) for i in range(0, len(items), _ROW)]
    return "{" + ",\n    ".join(rows) + "}"


def _int_type(codes: np.ndarray, at_least: int = 8) -> str:
    """The narrowest C integer type of ``at_least`` bits or more holding ``codes``."""
    lo, hi = (int(codes.min()), int(codes.max())) if codes.size else (0, 0)
    for bits in (8, 16, 32):
        if bits >= at_least and -(1 << (bits - 1)) <= lo and hi < (1 << (bits - 1)):
            return f"std::int{bits}_t"
    return "std::int64_t"


def _code_bits(t: FixedType) -> int:
    """Bits of ``qfx::code_t``, the integer a tensor of format ``t`` is stored in."""
    return next(bits for bits in (8, 16, 32, 64) if _bits(t) <= bits)


def _operand_type(x: FixedType, weights: np.ndarray) -> str:
    """One type for the weights and the gathered inputs of a convolution: int16 at least, so that the
    dot products are int16 multiply-adds for 8-bit formats."""
    return _int_type(weights, at_least=max(16, _code_bits(x)))


def _csd(code: int) -> list[tuple[int, int]]:
    """The canonical signed-digit form of ``code``: ``[(position, +1 or -1), ...]``."""
    digits, position = [], 0
    while code:
        if code & 1:
            digit = 2 - (code & 3)  # +1 when the next bit is 0, -1 when it is 1: no two adjacent digits
            digits.append((position, digit))
            code -= digit
        code >>= 1
        position += 1
    return digits


def _check_width(node_or_input: str, t: FixedType) -> None:
    if t.width > (64 if t.signed else 63):
        raise EmulatorError(f"{node_or_input}: format {t} is wider than the emulator's 64-bit codes (63 bits "
                            "unsigned); narrow it with a QConfig override")


def _accumulator(node: Node, bits: int) -> str:
    for limit, name in _ACCUMULATORS:
        if bits <= limit:
            return name
    raise EmulatorError(f"{node.describe()}: its exact intermediate needs {bits} bits, more than the "
                        f"{MAX_ACCUMULATOR_BITS} an __int128 accumulator holds; narrow its input, weight or "
                        "bias formats (a narrower 'accum' format does not help: the sum is formed exactly first)")


# ------------------------------------------------------------- the emitter
class _Unit:
    """The pieces of the translation unit, filled node by node."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.names = graph.c_names()
        self.values = graph.values()
        self.formats: list[str] = []
        self.constants: list[str] = []
        self.calls: list[str] = []
        self.scratch: list[str] = []  # workspace members besides the tensors
        self.widths: dict[str, int] = {}

    def fmt(self, tensor: str) -> str:
        return f"formats::{self.names[tensor]}"

    def ws(self, tensor: str) -> str:
        return f"ws.{self.names[tensor]}"

    def constant(self, node: Node, role: str, codes: np.ndarray, c_type: Optional[str] = None) -> str:
        """Declare ``codes`` (flattened) as a constexpr array (of ``c_type``, default the narrowest); its C++ name."""
        name = f"{self.names[node.name]}__{role}"
        flat = np.asarray(codes, dtype=np.int64).ravel()
        self.constants.append(f"constexpr {c_type or _int_type(flat)} {name}[{max(flat.size, 1)}] = "
                              f"{_ints(flat if flat.size else [0])};")
        return f"constants::{name}"

    def scalar_frac(self, node: Node, role: str) -> tuple[int, int]:
        c = node.constants[role]
        return int(c.codes), c.types[0].frac_bits


# ------------------------------------------------------------- node emitters
def _dot(unit: _Unit, node: Node, fan_in: int) -> tuple[str, str]:
    """Accumulator and epilogue name of a dense or convolution node."""
    x = unit.values[node.inputs[0]]
    weight, bias = node.constants["weight"], node.constants.get("bias")
    channels = weight.codes.shape[0]
    frac = [x.type.frac_bits + weight.type_of(o).frac_bits for o in range(channels)]
    dot_bits = _bits(x.type) + _constant_bits(weight) + _carry(fan_in)
    if bias is not None:
        fb = bias.types[0].frac_bits
        common = [max(f, fb) for f in frac]
        sum_shift = [c - f for c, f in zip(common, frac)]
        bias_shift = [c - fb for c in common]
        bits = max(max(dot_bits + s, _bits(bias.types[0]) + b) for s, b in zip(sum_shift, bias_shift)) + 1
        bias_codes = bias.codes.tolist()
    else:
        common, sum_shift, bias_shift, bits, bias_codes = frac, [0] * channels, [0] * channels, dot_bits, \
            [0] * channels
    accum = node.formats.get("accum")
    if accum is not None:
        _check_width(node.describe() + " accumulator", accum)
    target = accum or node.output.type
    drop = [c - target.frac_bits for c in common]
    acc = _accumulator(node, bits)
    unit.widths[node.name] = bits
    name = f"{unit.names[node.name]}__epilogue"
    accum_type = "qfx::NoAccum"
    if accum is not None:
        accum_type = f"{unit.fmt(node.name)}__accum"
        unit.formats.append(f"using {unit.names[node.name]}__accum = {_format(accum)};")
    unit.constants.append(
        f"constexpr qfx::DotEpilogue<{unit.fmt(node.name)}, {accum_type}, {acc}, {channels}> {name} = {{"
        f"{'true' if bias is not None else 'false'}, {_ints(bias_codes)}, {_ints(sum_shift)}, "
        f"{_ints(bias_shift)}, {_ints(drop)}}};")
    return acc, f"constants::{name}"


def _dense(unit: _Unit, node: Node) -> str:
    weight = node.constants["weight"]
    outs, ins = weight.codes.shape
    acc, epilogue = _dot(unit, node, ins)
    w = unit.constant(node, "weight", weight.codes)
    return f"qfx::dense<{ins}, {outs}, {acc}>({unit.ws(node.inputs[0])}, {w}, {epilogue}, {unit.ws(node.name)});"


def _conv(unit: _Unit, node: Node) -> str:
    weight = node.constants["weight"]
    x = unit.values[node.inputs[0]]
    a = node.attrs
    if node.op == "conv1d":  # a 1-D convolution is a 2-D one of height 1
        (c, length), (o, _, k) = x.shape, weight.codes.shape
        size, kernel, out = [1, length], [1, k], [1, node.output.shape[1]]
        stride, dilation, before = [1, a["stride"][0]], [1, a["dilation"][0]], [0, a["padding"][0][0]]
    else:
        (c, h, w), (o, _, kh, kw) = x.shape, weight.codes.shape
        size, kernel, out = [h, w], [kh, kw], list(node.output.shape[1:])
        stride, dilation, before = list(a["stride"]), list(a["dilation"]), [p[0] for p in a["padding"]]
    # Zeros after the input: as far as the last window reaches (never fewer than none).
    after = [max(0, (out[d] - 1) * stride[d] + dilation[d] * (kernel[d] - 1) + 1 - size[d] - before[d])
             for d in range(2)]
    shape = [c, *size, o, *kernel, *stride, before[0], after[0], before[1], after[1], *dilation, a["groups"], *out]
    fan_in = int(np.prod(weight.codes.shape[1:]))
    acc, epilogue = _dot(unit, node, fan_in)
    operand = _operand_type(x.type, weight.codes)
    wname = unit.constant(node, "weight", weight.codes, operand)
    padded = any(before) or any(after)
    name = unit.names[node.name]
    unit.scratch.append(f"  qfx::code_t<formats::{unit.names[x.name]}> {name}__padded["
                        f"{c * (size[0] + before[0] + after[0]) * (size[1] + before[1] + after[1]) if padded else 1}];")
    unit.scratch.append(f"  {operand} {name}__patches[{out[0] * out[1] * fan_in}];")
    return (f"qfx::conv2d<qfx::Conv2dShape<{', '.join(map(str, shape))}>, {acc}>({unit.ws(node.inputs[0])}, "
            f"{wname}, {epilogue}, ws.{name}__padded, ws.{name}__patches, {unit.ws(node.name)});")


def _scale_shift(unit: _Unit, node: Node) -> str:
    x = unit.values[node.inputs[0]]
    scale, shift = node.constants["scale"], node.constants["shift"]
    channels = x.shape[0]
    size = x.size // channels
    fp = [x.type.frac_bits + scale.type_of(c).frac_bits for c in range(channels)]
    fs = [shift.type_of(c).frac_bits for c in range(channels)]
    common = [max(a, b) for a, b in zip(fp, fs)]
    product_shift = [c - a for c, a in zip(common, fp)]
    shift_shift = [c - b for c, b in zip(common, fs)]
    digits = [_csd(int(code)) for code in scale.codes]
    # Scales of at most two signed digits (K-hot) become shifts and adds, as in the hardware.
    terms = max(len(d) for d in digits) if max(len(d) for d in digits) <= 2 else 0
    product_bits = _bits(x.type) + _constant_bits(scale) + (1 if terms else 0)
    bits = max(max(product_bits + p, _bits(shift.type_of(c)) + s)
               for c, (p, s) in enumerate(zip(product_shift, shift_shift))) + 1
    acc = _accumulator(node, bits)
    unit.widths[node.name] = bits
    padded = [d + [(0, 0)] * (max(terms, 1) - len(d)) for d in digits] if terms else [[(0, 0)]] * channels
    name = f"{unit.names[node.name]}__params"
    unit.constants.append(
        f"constexpr qfx::ScaleShiftParams<{unit.fmt(node.name)}, {acc}, {channels}, {terms}> {name} = {{"
        f"{_ints(scale.codes.tolist())}, {_ints(p for d in padded for p, _ in d)}, "
        f"{_ints(s for d in padded for _, s in d)}, {_ints(product_shift)}, {_ints(shift.codes.tolist())}, "
        f"{_ints(shift_shift)}, {_ints(c - node.output.type.frac_bits for c in common)}}};")
    return (f"qfx::scale_shift<{unit.fmt(node.name)}, {acc}, {channels}, {size}, {terms}>("
            f"{unit.ws(node.inputs[0])}, constants::{name}, {unit.ws(node.name)});")


def _relu(unit: _Unit, node: Node) -> str:
    x = unit.values[node.inputs[0]]
    drop = x.type.frac_bits - node.output.type.frac_bits
    return f"qfx::relu<{unit.fmt(node.name)}, {x.size}, {drop}>({unit.ws(x.name)}, {unit.ws(node.name)});"


def _relu6(unit: _Unit, node: Node) -> str:
    x = unit.values[node.inputs[0]]
    fx = x.type.frac_bits
    common = max(fx, 0)  # 6 is an integer: exact once there are no negative fractional bits
    bits = max(_bits(x.type) + common - fx, 4 + common) + 1
    acc = _accumulator(node, bits)
    unit.widths[node.name] = bits
    return (f"qfx::relu6<{unit.fmt(node.name)}, {acc}, {x.size}, {common - fx}, {common}, "
            f"{common - node.output.type.frac_bits}>({unit.ws(x.name)}, {unit.ws(node.name)});")


def _leaky_relu(unit: _Unit, node: Node) -> str:
    x = unit.values[node.inputs[0]]
    slope, fs = unit.scalar_frac(node, "slope")
    fx = x.type.frac_bits
    common = fx + max(fs, 0)
    up_pos, up_neg = common - fx, common - fx - fs
    bits = max(_bits(x.type) + up_pos, _bits(x.type) + _constant_bits(node.constants["slope"]) + up_neg) + 1
    acc = _accumulator(node, bits)
    unit.widths[node.name] = bits
    return (f"qfx::leaky_relu<{unit.fmt(node.name)}, {acc}, {x.size}, {slope}LL, {up_pos}, {up_neg}, "
            f"{common - node.output.type.frac_bits}>({unit.ws(x.name)}, {unit.ws(node.name)});")


def _aligned(unit: _Unit, node: Node, function: str) -> str:
    """``qfx::add``/``qfx::sub`` of two tensors: both aligned to the finer binary point, one bit of carry."""
    a, b = (unit.values[name] for name in node.inputs)
    common = max(a.type.frac_bits, b.type.frac_bits)
    up_a, up_b = common - a.type.frac_bits, common - b.type.frac_bits
    bits = max(_bits(a.type) + up_a, _bits(b.type) + up_b) + 1
    acc = _accumulator(node, bits)
    unit.widths[node.name] = bits
    return (f"qfx::{function}<{unit.fmt(node.name)}, {acc}, {a.size}, {up_a}, {up_b}, "
            f"{common - node.output.type.frac_bits}>({unit.ws(a.name)}, {unit.ws(b.name)}, {unit.ws(node.name)});")


def _add(unit: _Unit, node: Node) -> str:
    return _aligned(unit, node, "add")


def _pool_shape(x_shape: Sequence[int], node: Node, dilation: Sequence[int]) -> str:
    a = node.attrs
    dims = [*x_shape, *a["kernel"], *a["stride"], *a["padding"], *dilation, *node.output.shape[1:]]
    return f"qfx::PoolShape<{', '.join(map(str, dims))}>"


def _maxpool(unit: _Unit, node: Node) -> str:
    x = unit.values[node.inputs[0]]
    shape = _pool_shape(x.shape, node, node.attrs["dilation"])
    drop = x.type.frac_bits - node.output.type.frac_bits
    return f"qfx::maxpool2d<{unit.fmt(node.name)}, {shape}, {drop}>({unit.ws(x.name)}, {unit.ws(node.name)});"


def _divided(unit: _Unit, node: Node, count: int) -> tuple[str, int, int]:
    """Accumulator, divisor code and drop of an average: ``sum of count codes * divisor``."""
    x = unit.values[node.inputs[0]]
    divisor, fd = unit.scalar_frac(node, "divisor")
    bits = _bits(x.type) + _carry(count) + _constant_bits(node.constants["divisor"])
    unit.widths[node.name] = bits
    return _accumulator(node, bits), divisor, x.type.frac_bits + fd - node.output.type.frac_bits


def _avgpool(unit: _Unit, node: Node) -> str:
    x = unit.values[node.inputs[0]]
    kh, kw = node.attrs["kernel"]
    acc, divisor, drop = _divided(unit, node, kh * kw)
    shape = _pool_shape(x.shape, node, [1, 1])
    return (f"qfx::avgpool2d<{unit.fmt(node.name)}, {acc}, {shape}, {divisor}LL, {drop}>({unit.ws(x.name)}, "
            f"{unit.ws(node.name)});")


def _global_avgpool(unit: _Unit, node: Node) -> str:
    x = unit.values[node.inputs[0]]
    size = x.shape[1] * x.shape[2]
    acc, divisor, drop = _divided(unit, node, size)
    return (f"qfx::global_avgpool2d<{unit.fmt(node.name)}, {acc}, {x.shape[0]}, {size}, {divisor}LL, {drop}>("
            f"{unit.ws(x.name)}, {unit.ws(node.name)});")


def _flatten(unit: _Unit, node: Node) -> str:
    return f"qfx::copy<{node.output.size}>({unit.ws(node.inputs[0])}, {unit.ws(node.name)});"


def _prelu(unit: _Unit, node: Node) -> str:
    x = unit.values[node.inputs[0]]
    channels, fx, bx = x.shape[0], x.type.frac_bits, _bits(x.type)
    slope, bias, shift = (node.constants.get(r) for r in ("slope", "bias", "shift"))

    def at(c: Optional[Constant], ch: int) -> tuple[int, int, int]:
        """Code, fractional bits and width of channel ``ch`` of ``c`` (0 at any point when absent)."""
        if c is None:
            return 0, -10 ** 6, 1
        k = ch if c.codes.shape[0] > 1 else 0
        return int(c.codes[k]), c.type_of(k).frac_bits, _bits(c.type_of(k))

    rows, bits = {k: [] for k in ("bias", "x_up", "b_up", "slope", "pos_up", "neg_up", "shift", "y_up", "z_up",
                                  "drop")}, 0
    for ch in range(channels):
        b, fb, wb = at(bias, ch)
        ft = max(fx, fb)
        a, fs, ws = at(slope, ch)
        common = max(ft, ft + fs)
        z, fz, wz = at(shift, ch)
        fy = max(common, fz)
        t_bits = max(bx + ft - fx, wb + ft - fb if bias is not None else 0) + 1
        p_bits = max(t_bits + common - ft, t_bits + ws + common - ft - fs)
        bits = max(bits, max(p_bits + fy - common, wz + fy - fz if shift is not None else 0) + 1)
        for key, value in zip(rows, (b, ft - fx, ft - fb if bias is not None else 0, a, common - ft,
                                     common - ft - fs, z, fy - common, fy - fz if shift is not None else 0,
                                     fy - node.output.type.frac_bits)):
            rows[key].append(value)
    acc = _accumulator(node, bits)
    unit.widths[node.name] = bits
    name = f"{unit.names[node.name]}__params"
    unit.constants.append(f"constexpr qfx::PReLUParams<{channels}> {name} = {{"
                          + ", ".join(_ints(v) for v in rows.values()) + "};")
    return (f"qfx::prelu<{unit.fmt(node.name)}, {acc}, {channels}, {x.size // channels}>({unit.ws(x.name)}, "
            f"constants::{name}, {unit.ws(node.name)});")


# ------------------------------------------------------------- binary ops
def _packed(codes: np.ndarray) -> np.ndarray:
    """Rows of ``codes`` (``-1``/``+1``, last axis the bits) packed into 64-bit words, bit 1 for ``+1``.

    Returned as int64 (the same bit patterns) for the constant table; bits past the row's end are 0."""
    rows = codes.reshape(-1, codes.shape[-1]) > 0
    words = -(-rows.shape[1] // 64)
    out = np.zeros((rows.shape[0], words), dtype=np.uint64)
    for bit in range(rows.shape[1]):
        out[:, bit // 64] |= rows[:, bit].astype(np.uint64) << np.uint64(bit % 64)
    return out.view(np.int64).reshape(codes.shape[:-1] + (words,))


def _words_constant(unit: _Unit, node: Node, words: np.ndarray) -> str:
    name = f"{unit.names[node.name]}__words"
    flat = [f"{int(v) & (2 ** 64 - 1)}ULL" for v in words.ravel()] or ["0ULL"]
    rows = [", ".join(flat[i:i + 8]) for i in range(0, len(flat), 8)]
    unit.constants.append(f"constexpr std::uint64_t {name}[{len(flat)}] = {{" + ",\n    ".join(rows) + "};")
    return f"constants::{name}"


def _sign(unit: _Unit, node: Node) -> str:
    x = unit.values[node.inputs[0]]
    return f"qfx::sign<{x.size}>({unit.ws(x.name)}, {unit.ws(node.name)});"


def _thermometer(unit: _Unit, node: Node) -> str:
    x = unit.values[node.inputs[0]]
    thresholds = node.constants["thresholds"]
    ft = thresholds.types[0].frac_bits
    common = max(x.type.frac_bits, ft)
    if max(_bits(x.type) + common - x.type.frac_bits, _constant_bits(thresholds) + common - ft) > 63:
        raise EmulatorError(f"{node.describe()}: the input and the thresholds lie too far apart to compare in "
                            "64 bits; narrow the input or the threshold format")
    aligned = [int(c) << (common - ft) for c in thresholds.codes]
    name = unit.constant(node, "thresholds", np.array(aligned, dtype=np.int64), "std::int64_t")
    size = x.size // x.shape[0]
    return (f"qfx::thermometer<{x.shape[0]}, {size}, {len(aligned)}, {common - x.type.frac_bits}>("
            f"{unit.ws(x.name)}, {name}, {unit.ws(node.name)});")


def _binary_dense(unit: _Unit, node: Node) -> str:
    weight = node.constants["weight"].codes
    outs, ins = weight.shape
    words = _packed(weight)
    name = unit.names[node.name]
    unit.scratch.append(f"  std::uint64_t {name}__packed[{words.shape[1]}];")
    return (f"qfx::binary_dense<{unit.fmt(node.name)}, {ins}, {outs}, {words.shape[1]}>({unit.ws(node.inputs[0])}, "
            f"{_words_constant(unit, node, words)}, ws.{name}__packed, {unit.ws(node.name)});")


def _binary_conv(unit: _Unit, node: Node) -> str:
    weight = node.constants["weight"].codes
    x = unit.values[node.inputs[0]]
    a = node.attrs
    if node.op == "binary_conv1d":  # a 1-D convolution is a 2-D one of height 1
        weight = weight[:, :, None, :]
        (c, length) = x.shape
        size, out = [1, length], [1, node.output.shape[1]]
        stride, dilation, before, after = [1, a["stride"][0]], [1, a["dilation"][0]], [0, a["padding"][0][0]], \
            [0, a["padding"][0][1]]
    else:
        c, size, out = x.shape[0], list(x.shape[1:]), list(node.output.shape[1:])
        stride, dilation = list(a["stride"]), list(a["dilation"])
        before, after = [p[0] for p in a["padding"]], [p[1] for p in a["padding"]]
    o, _, kh, kw = weight.shape
    shape = [c, *size, o, kh, kw, *stride, before[0], after[0], before[1], after[1], *dilation, a["groups"], *out]
    words = _packed(np.moveaxis(weight, 1, -1))  # [o][kh][kw][words]
    per_pixel = words.shape[-1]
    name = unit.names[node.name]
    pixels = a["groups"] * (size[0] + before[0] + after[0]) * (size[1] + before[1] + after[1])
    unit.scratch.append(f"  std::uint64_t {name}__packed[{pixels * per_pixel}];")
    return (f"qfx::binary_conv2d<{unit.fmt(node.name)}, qfx::Conv2dShape<{', '.join(map(str, shape))}>, "
            f"{per_pixel}, {a['pad_value']}>({unit.ws(x.name)}, {_words_constant(unit, node, words)}, "
            f"ws.{name}__packed, {unit.ws(node.name)});")
def _table(unit: _Unit, node: Node) -> str:
    x = unit.values[node.inputs[0]]
    t = node.formats["table"]
    index = f"{unit.names[node.name]}__index"
    unit.formats.append(f"using {index} = {_format(t)};")
    rom = unit.constant(node, "table", node.constants["table"].codes)
    return (f"qfx::lookup<formats::{index}, {x.size}, {x.type.frac_bits - t.frac_bits}>({unit.ws(x.name)}, {rom}, "
            f"{unit.ws(node.name)});")


def _softmax(unit: _Unit, node: Node) -> str:
    x = unit.values[node.inputs[0]]
    log = node.attrs["log"]
    t, st = node.formats["table"], node.formats["accum"]
    second = node.constants["log" if log else "reciprocal"]
    fx, fe, fr = x.type.frac_bits, node.constants["exp"].types[0].frac_bits, second.types[0].frac_bits
    common = max(fx, fr)
    name = unit.names[node.name]
    unit.formats += [f"using {name}__table = {_format(t)};", f"using {name}__sum = {_format(st)};"]
    exp = unit.constant(node, "exp", node.constants["exp"].codes)
    rom = unit.constant(node, "second", second.codes)
    drop_y = (common if log else fe + fr) - node.output.type.frac_bits
    params = [f"formats::{name}__table", f"formats::{name}__sum", unit.fmt(node.name), x.shape[0],
              x.size // x.shape[0], fx - t.frac_bits, fe - st.frac_bits, "true" if log else "false", common - fx,
              common - fr, drop_y]
    return f"qfx::softmax<{', '.join(map(str, params))}>({unit.ws(x.name)}, {exp}, {rom}, {unit.ws(node.name)});"


_EMITTERS = {"dense": _dense, "conv1d": _conv, "conv2d": _conv, "scale_shift": _scale_shift, "relu": _relu,
             "relu6": _relu6, "leaky_relu": _leaky_relu, "add": _add, "maxpool2d": _maxpool,
             "avgpool2d": _avgpool, "global_avgpool2d": _global_avgpool, "flatten": _flatten,
             "prelu": _prelu, "sign": _sign, "thermometer": _thermometer, "binary_dense": _binary_dense, "binary_conv1d": _binary_conv,
             "binary_conv2d": _binary_conv, "table": _table, "softmax": _softmax}


# -------------------------------------------------------------- the unit
def accumulator_bits(graph: Graph) -> dict[str, int]:
    """The exact intermediate width of every node that forms one (dense, conv, adds, averages...), by name."""
    unit = _Unit(graph)
    for node in graph.nodes:
        _EMITTERS[node.op](unit, node)
    return unit.widths


def generate(graph: Graph) -> str:
    """The C++17 translation unit that emulates ``graph``; raises :class:`EmulatorError` naming a node it cannot run."""
    unit = _Unit(graph)
    tensors = list(graph.inputs) + [n.output for n in graph.nodes]
    for value in graph.inputs:
        _check_width(f"graph input '{value.name}'", value.type)
    for node in graph.nodes:
        _check_width(node.describe(), node.output.type)
        if node.op not in _EMITTERS:
            raise EmulatorError(f"{node.describe()}: the emulator has no kernel for op '{node.op}'")
    for value in tensors:
        unit.formats.append(f"using {unit.names[value.name]} = {_format(value.type)};")
    for node in graph.nodes:
        unit.calls.append(_EMITTERS[node.op](unit, node))
    index = {v.name: k for k, v in enumerate(tensors)}
    members = [f"  qfx::code_t<formats::{unit.names[v.name]}> {unit.names[v.name]}[{max(v.size, 1)}];"
               for v in tensors] + unit.scratch
    binds = [f"  refs[{k}] = {{ws.{unit.names[v.name]}, int(sizeof(ws.{unit.names[v.name]}[0])), {v.size}}};"
             for k, v in enumerate(tensors)]
    labels = "\n".join(f"//   {unit.names[v.name]}: '{cpp_comment(v.name)}' {v.type} {list(v.shape)}" for v in tensors)
    return _TEMPLATE.format(
        name=f"'{cpp_comment(graph.name)}'", labels=labels,
        formats="\n".join(unit.formats), constants="\n".join(unit.constants), members="\n".join(members),
        calls="\n".join("  " + c for c in unit.calls), binds="\n".join(binds),
        sizes=_ints(v.size for v in tensors), n_inputs=len(graph.inputs), n_tensors=len(tensors),
        outputs=_ints(index[name] for name in graph.outputs), n_outputs=len(graph.outputs),
        c_name=_c_string(graph.name))


def _c_string(text: str) -> str:
    """``text`` as a C string literal holding only printable ASCII (anything else escaped in octal)."""
    out = []
    for ch in text.encode("utf-8"):
        out.append(chr(ch) if 32 <= ch < 127 and chr(ch) not in '"\\?' else f"\\{ch:03o}")
    return '"' + "".join(out) + '"'


_TEMPLATE = """\
// qfx emulator program for graph {name}.
// Tensors (C name: IR name, format, shape per sample):
{labels}
#include <qfx/emulator.h>

namespace {{

namespace formats {{
{formats}
}}  // namespace formats

namespace constants {{
{constants}
}}  // namespace constants

struct Workspace {{
{members}
}};

void forward(Workspace& ws) {{
{calls}
}}

void bind(Workspace& ws, qfx::TensorRef* refs) {{
{binds}
}}

constexpr long long kSizes[] = {sizes};
constexpr int kOutputs[] = {outputs};
constexpr qfx::Program kProgram = {{{c_name}, {n_inputs}, {n_tensors}, kSizes, {n_outputs}, kOutputs}};

}}  // namespace

int main(int argc, char** argv) {{ return qfx::main<Workspace>(argc, argv, kProgram, forward, bind); }}
"""


from .structure_emit import EMITTERS as _STRUCTURE_EMITTERS  # noqa: E402 (it uses the helpers above)

_EMITTERS.update(_STRUCTURE_EMITTERS)
