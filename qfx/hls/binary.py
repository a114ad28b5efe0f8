"""HLS planners of the binarized ops and PReLU: the configuration each call into ``firmware/qfx_binary.h`` reads.

A binary tensor (codes ``-1``/``+1``) travels between layers as ``ap_fixed<2,2>``
values; ``binary_dense`` and ``binary_conv*`` pack it into ``ap_uint`` words of
at most :data:`WORD_BITS` bits (bit ``1`` for ``+1``, channel ``j`` of a word
at bit ``j``) and form each dot product of ``N`` terms as
``N - 2 * popcount(x ^ w)``: XNOR and a popcount, no multiplier.  Bits past
the last channel of a word are ``0`` in both operands and never count.
Imported by :mod:`.layers`.
"""

from __future__ import annotations

import numpy as np

from ..ir import Value
from ..ir.integer import packed_words
from .layer import (KHOT_MAX_DIGITS, ArrayConstant, Layer, bits_signed, c_array, csd_digits, exact_result, frame,
                    int_type, magnitude)

__all__ = ["PLANNERS", "WORD_BITS"]

#: The widest word a binary layer packs (a row longer than this takes several words).
WORD_BITS = 64


def _hex(values: np.ndarray) -> str:
    """A nested C initialiser of unsigned words (``{{0x5ULL, 0x0ULL}, ...}``)."""
    if values.ndim == 1:
        return "{" + ", ".join(f"{int(v):#x}ULL" for v in values) + "}"
    return "{" + ",\n    ".join(_hex(v) for v in values) + "}"


def _words(layer: Layer, bits: int, terms: int) -> int:
    """``word_t`` (``word`` bits) and ``words`` per row of ``bits`` channels; ``count_t`` holds 0..``terms``."""
    word = min(WORD_BITS, bits)
    words = -(-bits // word)
    layer.ints += [("word", word), ("words", words), ("k", terms)]
    layer.types += [("word_t", f"ap_uint<{word}>"), ("count_t", f"ap_uint<{max(terms.bit_length(), 1)}>")]
    exact_result(layer, bits_signed(terms), 0)  # the sum N - 2 * count is an integer
    return word


def _sign(layer: Layer, x: Value) -> None:
    layer.ints.append(("n", x.size))


def _thermometer(layer: Layer, x: Value) -> None:
    thresholds = layer.node.constants["thresholds"]
    ft = int(thresholds.frac_bits()[0])
    common = max(x.type.frac_bits, ft)
    aligned = thresholds.codes.astype(object) << (common - ft)
    bound = max(magnitude(x.type) << (common - x.type.frac_bits), max(abs(int(v)) for v in aligned))
    layer.ints += [("channels", x.shape[0]), ("spatial", x.size // x.shape[0]), ("levels", aligned.size),
                   ("up", common - x.type.frac_bits)]
    layer.types += [("compare_t", f"ap_int<{bits_signed(bound)}>"), ("threshold_code_t", int_type(aligned))]
    layer.arrays.append(ArrayConstant("threshold_code_t", f"{layer.name}_thresholds", aligned.shape,
                                      c_array(aligned)))


def _binary_dense(layer: Layer, x: Value) -> None:
    w = layer.node.constants["weight"].codes
    layer.ints += [("n_in", x.shape[0]), ("n_out", w.shape[0])]
    word = _words(layer, x.shape[0], x.shape[0])
    packed = packed_words(w, word)
    layer.arrays.append(ArrayConstant("word_t", f"{layer.name}_weight", packed.shape, _hex(packed)))


def _binary_conv(layer: Layer, x: Value) -> None:
    """Weights as ``[out_c][kh * kw][words]``: each tap's channels of the output's group, packed."""
    node = layer.node
    w = node.constants["weight"].codes
    two_d = w.ndim == 4
    if not two_d:
        w = w[:, :, None, :]
    in_c, in_h, in_w = frame(x.shape)
    _, out_h, out_w = frame(node.output.shape)
    a = node.attrs
    pad = a["padding"] if two_d else [[0, 0]] + a["padding"]
    stride = a["stride"] if two_d else [1] + a["stride"]
    dilation = a["dilation"] if two_d else [1] + a["dilation"]
    out_c, group_in, kh, kw = w.shape
    layer.function, layer.streams_natively = "binary_conv2d", True
    layer.ints += [("in_c", in_c), ("in_h", in_h), ("in_w", in_w), ("out_c", out_c), ("out_h", out_h),
                   ("out_w", out_w), ("kh", kh), ("kw", kw), ("taps", kh * kw), ("groups", a["groups"]),
                   ("group_in", group_in), ("stride_h", stride[0]), ("stride_w", stride[1]),
                   ("dil_h", dilation[0]), ("dil_w", dilation[1]), ("pad_top", pad[0][0]),
                   ("pad_bottom", pad[0][1]), ("pad_left", pad[1][0]), ("pad_right", pad[1][1]),
                   ("span_h", dilation[0] * (kh - 1) + 1), ("pad_one", int(a["pad_value"] > 0))]
    word = _words(layer, group_in, group_in * kh * kw)
    packed = packed_words(np.moveaxis(w, 1, -1).reshape(out_c, kh * kw, group_in), word)
    layer.arrays.append(ArrayConstant("word_t", f"{layer.name}_weight", packed.shape, _hex(packed)))


def _prelu(layer: Layer, x: Value) -> None:
    """``t = x + bias``, ``t >= 0 ? t : t * slope``, ``+ shift``, every term on one binary point per layer.

    With ``T`` the largest binary point of ``x`` and the biases and ``S`` the
    slopes' largest, ``t`` is a code at ``T`` and ``t * slope`` one at
    ``T + S``; both are shifted to the common ``F >= T, T + S`` (and the
    shifts' binary points), where the shifts are added.  Every value is the
    interpreter's exactly, so the one cast gives the same code.  Slopes whose
    aligned codes have at most :data:`KHOT_MAX_DIGITS` nonzero digits become
    digit tables (shifts and adds).
    """
    node, channels = layer.node, x.shape[0]
    slope, bias, shift = (node.constants.get(role) for role in ("slope", "bias", "shift"))

    def fracs(c) -> np.ndarray:
        return np.broadcast_to(c.frac_bits(), (channels,)).astype(np.int64)

    def per_channel(c) -> np.ndarray:
        return np.broadcast_to(c.codes.astype(object).reshape(-1), (channels,))

    top = max([x.type.frac_bits] + ([int(fracs(bias).max())] if bias is not None else []))
    s_frac = int(fracs(slope).max())
    common = max(top, top + s_frac, int(fracs(shift).max()) if shift is not None else top)
    b = (per_channel(bias) * (np.ones(channels, dtype=object) << (top - fracs(bias))) if bias is not None
         else np.zeros(channels, dtype=object))
    s = per_channel(slope) * (np.ones(channels, dtype=object) << (s_frac - fracs(slope)))
    z = (per_channel(shift) * (np.ones(channels, dtype=object) << (common - fracs(shift))) if shift is not None
         else np.zeros(channels, dtype=object))
    t_bound = max((magnitude(x.type) << (top - x.type.frac_bits)) + abs(int(v)) for v in b)
    layer.ints += [("n", x.size), ("channels", channels), ("spatial", x.size // channels),
                   ("in_shift", top - x.type.frac_bits), ("positive_shift", common - top),
                   ("negative_shift", common - top - s_frac)]
    layer.types += [("t_code_t", f"ap_int<{bits_signed(t_bound)}>"), ("bias_code_t", int_type(b)),
                    ("shift_code_t", int_type(z))]
    digits = [csd_digits(v) for v in s.tolist()]
    k = max((len(d) for d in digits), default=0)
    if 0 < k <= KHOT_MAX_DIGITS:
        layer.khot_digits = k
        cells = ["{{" + ", ".join(str(sg) for sg, _ in d + [(0, 0)] * (k - len(d))) + "}, {"
                 + ", ".join(str(p) for _, p in d + [(0, 0)] * (k - len(d))) + "}}" for d in digits]
        slope_array = ArrayConstant(f"qfx::csd<{k}>", f"{layer.name}_slope", (channels,), "{" + ", ".join(cells) + "}")
        size = np.array([sum(1 << p for _, p in d) for d in digits], dtype=object)
    else:
        layer.types.append(("slope_code_t", int_type(s)))
        slope_array = ArrayConstant("slope_code_t", f"{layer.name}_slope", (channels,), c_array(s))
        size = np.abs(s)
    bound = max(max(t_bound << (common - top), (t_bound * int(size[c])) << (common - top - s_frac)) + abs(int(z[c]))
                for c in range(channels))
    layer.arrays += [slope_array, ArrayConstant("bias_code_t", f"{layer.name}_bias", b.shape, c_array(b)),
                     ArrayConstant("shift_code_t", f"{layer.name}_shift", z.shape, c_array(z))]
    exact_result(layer, bits_signed(bound), common)


PLANNERS = {"sign": _sign, "thermometer": _thermometer, "binary_dense": _binary_dense,
            "binary_conv1d": _binary_conv, "binary_conv2d": _binary_conv, "prelu": _prelu}
