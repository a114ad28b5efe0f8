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

from typing import Optional, Sequence

import numpy as np

from ..ir.graph import Constant, Graph, Node
from ..ir.integer import packed_words
from ..render.escape import cpp_comment
from .structure_emit import EMITTERS as _STRUCTURE_EMITTERS
from .unit import (MAX_ACCUMULATOR_BITS, EmulatorError, Unit, accumulator, aligned_pair, carry_bits,
                   check_width, constant_bits, csd_digits, format_type, int_list, operand_type, signed_bits)

__all__ = ["EmulatorError", "generate", "accumulator_bits", "MAX_ACCUMULATOR_BITS"]

# ------------------------------------------------------------- node emitters
def _dot(unit: Unit, node: Node, fan_in: int) -> tuple[str, str]:
    """Accumulator and epilogue name of a dense or convolution node."""
    x = unit.values[node.inputs[0]]
    weight, bias = node.constants["weight"], node.constants.get("bias")
    channels = weight.codes.shape[0]
    frac = [x.type.frac_bits + weight.type_of(o).frac_bits for o in range(channels)]
    dot_bits = signed_bits(x.type) + constant_bits(weight) + carry_bits(fan_in)
    if bias is not None:
        fb = bias.types[0].frac_bits
        common = [max(f, fb) for f in frac]
        sum_shift = [c - f for c, f in zip(common, frac)]
        bias_shift = [c - fb for c in common]
        bits = max(max(dot_bits + s, signed_bits(bias.types[0]) + b) for s, b in zip(sum_shift, bias_shift)) + 1
        bias_codes = bias.codes.tolist()
    else:
        common, sum_shift, bias_shift, bits, bias_codes = frac, [0] * channels, [0] * channels, dot_bits, \
            [0] * channels
    accum = node.formats.get("accum")
    if accum is not None:
        check_width(node.describe() + " accumulator", accum)
    target = accum or node.output.type
    drop = [c - target.frac_bits for c in common]
    acc = accumulator(node, bits)
    unit.widths[node.name] = bits
    name = f"{unit.names[node.name]}__epilogue"
    accum_type = "qfx::NoAccum"
    if accum is not None:
        accum_type = f"{unit.fmt(node.name)}__accum"
        unit.formats.append(f"using {unit.names[node.name]}__accum = {format_type(accum)};")
    unit.constants.append(
        f"constexpr qfx::DotEpilogue<{unit.fmt(node.name)}, {accum_type}, {acc}, {channels}> {name} = {{"
        f"{'true' if bias is not None else 'false'}, {int_list(bias_codes)}, {int_list(sum_shift)}, "
        f"{int_list(bias_shift)}, {int_list(drop)}}};")
    return acc, f"constants::{name}"


def _dense(unit: Unit, node: Node) -> str:
    weight = node.constants["weight"]
    outs, ins = weight.codes.shape
    acc, epilogue = _dot(unit, node, ins)
    w = unit.constant(node, "weight", weight.codes)
    return f"qfx::dense<{ins}, {outs}, {acc}>({unit.ws(node.inputs[0])}, {w}, {epilogue}, {unit.ws(node.name)});"


def _conv(unit: Unit, node: Node) -> str:
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
    operand = operand_type(x.type, weight.codes)
    # Stored [o][kh][kw][c]: the order of the channels-last windows the kernel gathers.
    wname = unit.constant(node, "weight", np.moveaxis(weight.codes, 1, -1), operand)
    name = unit.names[node.name]
    padded = c * (size[0] + before[0] + after[0]) * (size[1] + before[1] + after[1])
    unit.scratch.append(f"  {operand} {name}__padded[{padded}];")
    unit.scratch.append(f"  {operand} {name}__patches[{out[0] * out[1] * fan_in}];")
    unit.scratch.append(f"  {acc} {name}__sums[qfx::CONV_BLOCK * {out[0] * out[1]}];")
    return (f"qfx::conv2d<qfx::Conv2dShape<{', '.join(map(str, shape))}>, {acc}>({unit.ws(node.inputs[0])}, "
            f"{wname}, {epilogue}, ws.{name}__padded, ws.{name}__patches, ws.{name}__sums, {unit.ws(node.name)});")


def _scale_shift(unit: Unit, node: Node) -> str:
    x = unit.values[node.inputs[0]]
    scale, shift = node.constants["scale"], node.constants["shift"]
    channels = x.shape[0]
    size = x.size // channels
    fp = [x.type.frac_bits + scale.type_of(c).frac_bits for c in range(channels)]
    fs = [shift.type_of(c).frac_bits for c in range(channels)]
    common = [max(a, b) for a, b in zip(fp, fs)]
    product_shift = [c - a for c, a in zip(common, fp)]
    shift_shift = [c - b for c, b in zip(common, fs)]
    digits = [csd_digits(int(code)) for code in scale.codes]
    # Scales of at most two signed digits (K-hot) become shifts and adds, as in the hardware.
    terms = max(len(d) for d in digits) if max(len(d) for d in digits) <= 2 else 0
    product_bits = signed_bits(x.type) + constant_bits(scale) + (1 if terms else 0)
    bits = max(max(product_bits + p, signed_bits(shift.type_of(c)) + s)
               for c, (p, s) in enumerate(zip(product_shift, shift_shift))) + 1
    acc = accumulator(node, bits)
    unit.widths[node.name] = bits
    padded = [d + [(0, 0)] * (max(terms, 1) - len(d)) for d in digits] if terms else [[(0, 0)]] * channels
    name = f"{unit.names[node.name]}__params"
    unit.constants.append(
        f"constexpr qfx::ScaleShiftParams<{unit.fmt(node.name)}, {acc}, {channels}, {terms}> {name} = {{"
        f"{int_list(scale.codes.tolist())}, {int_list(p for d in padded for p, _ in d)}, "
        f"{int_list(s for d in padded for _, s in d)}, {int_list(product_shift)}, {int_list(shift.codes.tolist())}, "
        f"{int_list(shift_shift)}, {int_list(c - node.output.type.frac_bits for c in common)}}};")
    return (f"qfx::scale_shift<{unit.fmt(node.name)}, {acc}, {channels}, {size}, {terms}>("
            f"{unit.ws(node.inputs[0])}, constants::{name}, {unit.ws(node.name)});")


def _relu(unit: Unit, node: Node) -> str:
    x = unit.values[node.inputs[0]]
    drop = x.type.frac_bits - node.output.type.frac_bits
    return f"qfx::relu<{unit.fmt(node.name)}, {x.size}, {drop}>({unit.ws(x.name)}, {unit.ws(node.name)});"


def _relu6(unit: Unit, node: Node) -> str:
    x = unit.values[node.inputs[0]]
    fx = x.type.frac_bits
    common = max(fx, 0)  # 6 is an integer: exact once there are no negative fractional bits
    bits = max(signed_bits(x.type) + common - fx, 4 + common) + 1
    acc = accumulator(node, bits)
    unit.widths[node.name] = bits
    return (f"qfx::relu6<{unit.fmt(node.name)}, {acc}, {x.size}, {common - fx}, {common}, "
            f"{common - node.output.type.frac_bits}>({unit.ws(x.name)}, {unit.ws(node.name)});")


def _leaky_relu(unit: Unit, node: Node) -> str:
    x = unit.values[node.inputs[0]]
    slope, fs = unit.scalar_frac(node, "slope")
    fx = x.type.frac_bits
    common = fx + max(fs, 0)
    up_pos, up_neg = common - fx, common - fx - fs
    bits = max(signed_bits(x.type) + up_pos, signed_bits(x.type) + constant_bits(node.constants["slope"]) + up_neg) + 1
    acc = accumulator(node, bits)
    unit.widths[node.name] = bits
    return (f"qfx::leaky_relu<{unit.fmt(node.name)}, {acc}, {x.size}, {slope}LL, {up_pos}, {up_neg}, "
            f"{common - node.output.type.frac_bits}>({unit.ws(x.name)}, {unit.ws(node.name)});")


def _add(unit: Unit, node: Node) -> str:
    return aligned_pair(unit, node, "add")


def _pool_shape(x_shape: Sequence[int], node: Node, dilation: Sequence[int]) -> str:
    a = node.attrs
    dims = [*x_shape, *a["kernel"], *a["stride"], *a["padding"], *dilation, *node.output.shape[1:]]
    return f"qfx::PoolShape<{', '.join(map(str, dims))}>"


def _maxpool(unit: Unit, node: Node) -> str:
    x = unit.values[node.inputs[0]]
    shape = _pool_shape(x.shape, node, node.attrs["dilation"])
    drop = x.type.frac_bits - node.output.type.frac_bits
    return f"qfx::maxpool2d<{unit.fmt(node.name)}, {shape}, {drop}>({unit.ws(x.name)}, {unit.ws(node.name)});"


def _divided(unit: Unit, node: Node, count: int) -> tuple[str, int, int]:
    """Accumulator, divisor code and drop of an average: ``sum of count codes * divisor``."""
    x = unit.values[node.inputs[0]]
    divisor, fd = unit.scalar_frac(node, "divisor")
    bits = signed_bits(x.type) + carry_bits(count) + constant_bits(node.constants["divisor"])
    unit.widths[node.name] = bits
    return accumulator(node, bits), divisor, x.type.frac_bits + fd - node.output.type.frac_bits


def _avgpool(unit: Unit, node: Node) -> str:
    x = unit.values[node.inputs[0]]
    kh, kw = node.attrs["kernel"]
    acc, divisor, drop = _divided(unit, node, kh * kw)
    shape = _pool_shape(x.shape, node, [1, 1])
    return (f"qfx::avgpool2d<{unit.fmt(node.name)}, {acc}, {shape}, {divisor}LL, {drop}>({unit.ws(x.name)}, "
            f"{unit.ws(node.name)});")


def _global_avgpool(unit: Unit, node: Node) -> str:
    x = unit.values[node.inputs[0]]
    size = x.shape[1] * x.shape[2]
    acc, divisor, drop = _divided(unit, node, size)
    return (f"qfx::global_avgpool2d<{unit.fmt(node.name)}, {acc}, {x.shape[0]}, {size}, {divisor}LL, {drop}>("
            f"{unit.ws(x.name)}, {unit.ws(node.name)});")


def _flatten(unit: Unit, node: Node) -> str:
    return f"qfx::copy<{node.output.size}>({unit.ws(node.inputs[0])}, {unit.ws(node.name)});"


def _prelu(unit: Unit, node: Node) -> str:
    x = unit.values[node.inputs[0]]
    channels, fx, bx = x.shape[0], x.type.frac_bits, signed_bits(x.type)
    slope, bias, shift = (node.constants.get(r) for r in ("slope", "bias", "shift"))

    def at(c: Optional[Constant], ch: int) -> tuple[int, int, int]:
        """Code, fractional bits and width of channel ``ch`` of ``c`` (0 at any point when absent)."""
        if c is None:
            return 0, -10 ** 6, 1
        k = ch if c.codes.shape[0] > 1 else 0
        return int(c.codes[k]), c.type_of(k).frac_bits, signed_bits(c.type_of(k))

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
    acc = accumulator(node, bits)
    unit.widths[node.name] = bits
    name = f"{unit.names[node.name]}__params"
    unit.constants.append(f"constexpr qfx::PReLUParams<{channels}> {name} = {{"
                          + ", ".join(int_list(v) for v in rows.values()) + "};")
    return (f"qfx::prelu<{unit.fmt(node.name)}, {acc}, {channels}, {x.size // channels}>({unit.ws(x.name)}, "
            f"constants::{name}, {unit.ws(node.name)});")


# ------------------------------------------------------------- binary ops
def _words_constant(unit: Unit, node: Node, words: np.ndarray) -> str:
    name = f"{unit.names[node.name]}__words"
    flat = [f"{int(v) & (2 ** 64 - 1)}ULL" for v in words.ravel()] or ["0ULL"]
    rows = [", ".join(flat[i:i + 8]) for i in range(0, len(flat), 8)]
    unit.constants.append(f"constexpr std::uint64_t {name}[{len(flat)}] = {{" + ",\n    ".join(rows) + "};")
    return f"constants::{name}"


def _sign(unit: Unit, node: Node) -> str:
    x = unit.values[node.inputs[0]]
    return f"qfx::sign<{x.size}>({unit.ws(x.name)}, {unit.ws(node.name)});"


def _thermometer(unit: Unit, node: Node) -> str:
    x = unit.values[node.inputs[0]]
    thresholds = node.constants["thresholds"]
    ft = thresholds.types[0].frac_bits
    common = max(x.type.frac_bits, ft)
    if max(signed_bits(x.type) + common - x.type.frac_bits, constant_bits(thresholds) + common - ft) > 63:
        raise EmulatorError(f"{node.describe()}: the input and the thresholds lie too far apart to compare in "
                            "64 bits; narrow the input or the threshold format")
    aligned = [int(c) << (common - ft) for c in thresholds.codes]
    name = unit.constant(node, "thresholds", np.array(aligned, dtype=np.int64), "std::int64_t")
    size = x.size // x.shape[0]
    return (f"qfx::thermometer<{x.shape[0]}, {size}, {len(aligned)}, {common - x.type.frac_bits}>("
            f"{unit.ws(x.name)}, {name}, {unit.ws(node.name)});")


def _binary_dense(unit: Unit, node: Node) -> str:
    weight = node.constants["weight"].codes
    outs, ins = weight.shape
    words = packed_words(weight, 64)
    name = unit.names[node.name]
    unit.scratch.append(f"  std::uint64_t {name}__packed[{words.shape[1]}];")
    return (f"qfx::binary_dense<{unit.fmt(node.name)}, {ins}, {outs}, {words.shape[1]}>({unit.ws(node.inputs[0])}, "
            f"{_words_constant(unit, node, words)}, ws.{name}__packed, {unit.ws(node.name)});")


def _binary_conv(unit: Unit, node: Node) -> str:
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
    words = packed_words(np.moveaxis(weight, 1, -1), 64)  # [o][kh][kw][words]
    per_pixel = words.shape[-1]
    name = unit.names[node.name]
    pixels = a["groups"] * (size[0] + before[0] + after[0]) * (size[1] + before[1] + after[1])
    unit.scratch.append(f"  std::uint64_t {name}__packed[{pixels * per_pixel}];")
    return (f"qfx::binary_conv2d<{unit.fmt(node.name)}, qfx::Conv2dShape<{', '.join(map(str, shape))}>, "
            f"{per_pixel}, {a['pad_value']}>({unit.ws(x.name)}, {_words_constant(unit, node, words)}, "
            f"ws.{name}__packed, {unit.ws(node.name)});")
def _table(unit: Unit, node: Node) -> str:
    x = unit.values[node.inputs[0]]
    t = node.formats["table"]
    index = f"{unit.names[node.name]}__index"
    unit.formats.append(f"using {index} = {format_type(t)};")
    rom = unit.constant(node, "table", node.constants["table"].codes)
    return (f"qfx::lookup<formats::{index}, {x.size}, {x.type.frac_bits - t.frac_bits}>({unit.ws(x.name)}, {rom}, "
            f"{unit.ws(node.name)});")


def _softmax(unit: Unit, node: Node) -> str:
    x = unit.values[node.inputs[0]]
    log = node.attrs["log"]
    t, st = node.formats["table"], node.formats["accum"]
    second = node.constants["log" if log else "reciprocal"]
    fx, fe, fr = x.type.frac_bits, node.constants["exp"].types[0].frac_bits, second.types[0].frac_bits
    common = max(fx, fr)
    name = unit.names[node.name]
    unit.formats += [f"using {name}__table = {format_type(t)};", f"using {name}__sum = {format_type(st)};"]
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
             "prelu": _prelu, "sign": _sign, "thermometer": _thermometer, "binary_dense": _binary_dense,
             "binary_conv1d": _binary_conv, "binary_conv2d": _binary_conv, "table": _table, "softmax": _softmax,
             **_STRUCTURE_EMITTERS}


# -------------------------------------------------------------- the unit
def accumulator_bits(graph: Graph) -> dict[str, int]:
    """The exact intermediate width of every node that forms one (dense, conv, adds, averages...), by name."""
    unit = Unit(graph)
    for node in graph.nodes:
        _EMITTERS[node.op](unit, node)
    return unit.widths


def generate(graph: Graph) -> str:
    """The C++17 translation unit that emulates ``graph``; raises :class:`EmulatorError` naming a node it cannot run."""
    unit = Unit(graph)
    tensors = list(graph.inputs) + [n.output for n in graph.nodes]
    for value in graph.inputs:
        check_width(f"graph input '{value.name}'", value.type)
    for node in graph.nodes:
        check_width(node.describe(), node.output.type)
        if node.op not in _EMITTERS:
            raise EmulatorError(f"{node.describe()}: the emulator has no kernel for op '{node.op}'")
    for value in tensors:
        unit.formats.append(f"using {unit.names[value.name]} = {format_type(value.type)};")
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
        sizes=int_list(v.size for v in tensors), n_inputs=len(graph.inputs), n_tensors=len(tensors),
        outputs=int_list(index[name] for name in graph.outputs), n_outputs=len(graph.outputs),
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



