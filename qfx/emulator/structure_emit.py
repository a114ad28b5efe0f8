"""Emitters of the structural ops (``sub``, ``mul``, ``clamp``, ``concat``, ``zero_pad``, ``upsample``) for the
emulator's translation unit; the kernels are in ``include/qfx/structure.h``.  Used by :mod:`.codegen`."""

from __future__ import annotations

import math

from ..ir.graph import Node
from .unit import Unit, accumulator, aligned_pair, signed_bits

__all__ = ["EMITTERS"]


def _frame(shape: tuple[int, ...]) -> tuple[int, int, int]:
    return (shape[0], 1, shape[1]) if len(shape) == 2 else tuple(shape)


def _sub(unit: Unit, node: Node) -> str:
    return aligned_pair(unit, node, "sub")


def _mul(unit: Unit, node: Node) -> str:
    a, b = (unit.values[name] for name in node.inputs)
    bits = signed_bits(a.type) + signed_bits(b.type)
    acc = accumulator(node, bits)
    unit.widths[node.name] = bits
    drop = a.type.frac_bits + b.type.frac_bits - node.output.type.frac_bits
    return (f"qfx::mul<{unit.fmt(node.name)}, {acc}, {a.size}, {drop}>({unit.ws(a.name)}, {unit.ws(b.name)}, "
            f"{unit.ws(node.name)});")


def _clamp(unit: Unit, node: Node) -> str:
    x = unit.values[node.inputs[0]]
    bounds = {k: node.constants[k] for k in ("low", "high") if k in node.constants}
    common = max([x.type.frac_bits] + [c.types[0].frac_bits for c in bounds.values()])
    aligned = {k: int(c.codes) << (common - c.types[0].frac_bits) for k, c in bounds.items()}
    bits = max([signed_bits(x.type) + common - x.type.frac_bits]
               + [abs(v).bit_length() + 1 for v in aligned.values()]) + 1
    acc = accumulator(node, bits)
    unit.widths[node.name] = bits
    low, high = aligned.get("low"), aligned.get("high")
    return (f"qfx::clamp<{unit.fmt(node.name)}, {acc}, {x.size}, {common - x.type.frac_bits}, "
            f"{'true' if low is not None else 'false'}, {low or 0}LL, {'true' if high is not None else 'false'}, "
            f"{high or 0}LL, {common - node.output.type.frac_bits}>({unit.ws(x.name)}, {unit.ws(node.name)});")


def _concat(unit: Unit, node: Node) -> str:
    axis = node.attrs["axis"]
    out = node.output
    stride = math.prod(out.shape[axis:])
    calls, offset = [], 0
    for name in node.inputs:
        x = unit.values[name]
        outer, inner = math.prod(x.shape[:axis]), math.prod(x.shape[axis:])
        calls.append(f"qfx::concat_part<{unit.fmt(node.name)}, {outer}, {inner}, {stride}, {offset}, "
                     f"{x.type.frac_bits - out.type.frac_bits}>({unit.ws(name)}, {unit.ws(node.name)});")
        offset += inner
    return " ".join(calls)


def _zero_pad(unit: Unit, node: Node) -> str:
    x = unit.values[node.inputs[0]]
    c, h, w = _frame(x.shape)
    _, oh, ow = _frame(node.output.shape)
    insert, padding = node.attrs["insert"], node.attrs["padding"]
    sh, sw = (1, insert[0]) if len(x.shape) == 2 else insert
    pt, pl = (0, padding[0][0]) if len(x.shape) == 2 else (padding[0][0], padding[1][0])
    return (f"qfx::zero_pad<{c}, {h}, {w}, {sh}, {sw}, {pt}, {pl}, {oh}, {ow}>({unit.ws(x.name)}, "
            f"{unit.ws(node.name)});")


def _upsample(unit: Unit, node: Node) -> str:
    x = unit.values[node.inputs[0]]
    c, h, w = _frame(x.shape)
    scale = node.attrs["scale"]
    sh, sw = (1, scale[0]) if len(x.shape) == 2 else scale
    return f"qfx::upsample<{c}, {h}, {w}, {sh}, {sw}>({unit.ws(x.name)}, {unit.ws(node.name)});"


EMITTERS = {"sub": _sub, "mul": _mul, "clamp": _clamp, "concat": _concat, "zero_pad": _zero_pad,
            "upsample": _upsample}
