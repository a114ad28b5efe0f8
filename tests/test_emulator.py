"""qfx.emulator: the C++ cast equals Xilinx's ap_fixed.h, and emulate == qfx.ir.run == PyTorch on a zoo."""

from __future__ import annotations

import hashlib
import os
import random
import struct
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import qfx
from ap_fixed_oracle import cache_dir, header_dir
from ir_zoo import ZOO, inputs, quantized
from qfx.emulator import EmulatorError, accumulator_bits, compile_graph, emulate, include_dir, run_codes
from qfx.emulator.build import compile_source
from qfx.format import FixedType, Overflow, Rounding
from qfx.ir import Constant, Graph, Node, Value
from qfx.ir.integer import cast as integer_cast


# ---------------------------------------------------- the cast vs ap_fixed.h
def _random_cast_cases(rng: random.Random) -> list[tuple[tuple[int, int, bool], FixedType]]:
    """(source width, source int bits, source signed) and a destination format: every rounding with every overflow.

    Widths and binary points are random.  At most ``source width - 1`` bits
    are dropped: beyond that, the header's own debug assertions fire
    ("Attempting to read bit beyond MSB"), so it is no oracle there.
    """
    cases = []
    for k, (rounding, overflow) in enumerate((q, o) for q in Rounding for o in Overflow):
        signed = overflow is Overflow.WRAP_SM or rng.random() < 0.7
        width = rng.choice([1, 2, 64 if signed else 63]) if k % 4 == 0 else rng.randint(1, 64 if signed else 63)
        sat_bits = rng.randint(1, width) if overflow in (Overflow.WRAP, Overflow.WRAP_SM) and k % 2 else 0
        dst = FixedType(width, rng.randint(-8, width + 8), signed=signed, rounding=rounding, overflow=overflow,
                        sat_bits=sat_bits)
        src_width = rng.randint(2, 120)
        drop = rng.randint(-70, src_width - 1) if k % 3 else rng.randint(-3, min(3, src_width - 1))
        src_frac = dst.frac_bits + drop
        cases.append(((src_width, src_width - src_frac, rng.random() < 0.8), dst))
    return cases


def _source_codes(rng: random.Random, src: tuple[int, int, bool], dst: FixedType, n: int) -> list[int]:
    """Codes of the source format: extremes, small values, values near the destination's limits, random ones."""
    width, int_bits, signed = src
    lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
    drop = (width - int_bits) - dst.frac_bits
    picks = [lo, hi, 0, 1, -1, lo + 1, hi - 1]
    for limit in (dst.code_max, dst.code_min, dst.code_max + 1, dst.code_min - 1):
        scaled = limit << drop if drop >= 0 else limit >> -drop
        picks += [scaled + d for d in (-2, -1, 0, 1, 2)]
    picks += [rng.randint(-8, 8) for _ in range(6)]
    while len(picks) < n:
        bits = rng.randint(1, width)
        picks.append(rng.randint(-(1 << (bits - 1)), (1 << (bits - 1)) - 1))
    return [min(max(p, lo), hi) for p in picks[:n]]


def _cast_program(cases) -> str:
    lines = ["#include <ap_fixed.h>", "#include <qfx/cast.h>", "#include <cstdint>", "#include <cstdio>", "",
             "// Reads (hi, lo) int64 pairs: a source code as 128-bit two's complement; prints the header's",
             "// stored bits and qfx's code for the same cast, from an int128 and from an int64.",
             "template <class Src, class Dst, class Q>",
             "static void check(std::FILE* in, int count, int drop) {",
             "  for (int i = 0; i < count; ++i) {",
             "    long long pair[2];",
             "    if (std::fread(pair, sizeof pair, 1, in) != 1) return;",
             "    ap_uint<128> bits;",
             "    bits.range(127, 64) = ap_uint<64>(static_cast<unsigned long long>(pair[0]));",
             "    bits.range(63, 0) = ap_uint<64>(static_cast<unsigned long long>(pair[1]));",
             "    Src src;",
             "    src.range(Src::width - 1, 0) = bits.range(Src::width - 1, 0);",
             "    Dst dst = src;",
             "    const qfx::i128 code = static_cast<qfx::i128>((static_cast<qfx::u128>(pair[0]) << 64) |",
             "                                                 static_cast<std::uint64_t>(pair[1]));",
             "    // The int64 path too, where the code fits (the int128 result otherwise).",
             "    const bool narrow = code >= INT64_MIN && code <= INT64_MAX;",
             "    std::printf(\"%llu %lld %lld\\n\", static_cast<unsigned long long>(dst.range(Dst::width - 1, 0)"
             ".to_uint64()),",
             "                static_cast<long long>(qfx::cast<Q>(code, drop)),",
             "                static_cast<long long>(narrow ? qfx::cast<Q>(static_cast<std::int64_t>(code), drop)",
             "                                              : qfx::cast<Q>(code, drop)));",
             "  }",
             "}", "", "int main(int argc, char** argv) {",
             "  std::FILE* in = std::fopen(argv[1], \"rb\");", "  const int n = std::atoi(argv[2]);"]
    for (sw, si, ss), t in cases:
        src = f"ap_{'' if ss else 'u'}fixed<{sw},{si}>"
        kind = "ap_fixed" if t.signed else "ap_ufixed"
        dst = f"{kind}<{t.width},{t.int_bits},{t.rounding.cpp},{t.overflow.cpp},{t.sat_bits}>"
        q = (f"qfx::Format<{t.width},{t.frac_bits},{'true' if t.signed else 'false'},qfx::Rounding::"
             f"{t.rounding.value},qfx::Overflow::{t.overflow.value},{t.sat_bits}>")
        lines.append(f"  check<{src}, {dst}, {q}>(in, n, {(sw - si) - t.frac_bits});")
    lines += ["  return 0;", "}"]
    return "\n".join(lines) + "\n"


def _build(source: str, name: str) -> Path:
    """Compile a test program against ap_fixed.h and qfx's headers, cached by content like the oracle's."""
    headers = header_dir()
    digest = hashlib.sha256(source.encode())
    for path in sorted(headers.rglob("*.h")) + [include_dir() / "qfx" / "cast.h"]:  # all the program includes
        digest.update(path.read_bytes())
    binary = cache_dir() / f"{name}-{digest.hexdigest()[:32]}"
    if not binary.is_file():
        binary.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=binary.parent, prefix=".build-") as tmp:
            (Path(tmp) / "p.cpp").write_text(source)
            subprocess.run(["g++", "-std=c++17", "-O1", f"-I{headers}", f"-I{include_dir()}", "p.cpp", "-o", "p"],
                           cwd=tmp, check=True, capture_output=True)
            os.replace(Path(tmp) / "p", binary)
    return binary


def test_cast_matches_ap_fixed_header(tmp_path):
    rng = random.Random(20261126)
    cases = _random_cast_cases(rng)
    per_case = 64
    codes = [_source_codes(rng, src, dst, per_case) for src, dst in cases]
    blob = b"".join(struct.pack("=qq", c >> 64, ((c & ((1 << 64) - 1)) ^ (1 << 63)) - (1 << 63))
                    for case in codes for c in case)
    (tmp_path / "in.bin").write_bytes(blob)
    program = _build(_cast_program(cases), "emulator_cast_vs_ap_fixed")
    out = subprocess.run([str(program), str(tmp_path / "in.bin"), str(per_case)], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    bad = []
    for k, ((src, t), case) in enumerate(zip(cases, codes)):
        for i, c in enumerate(case):
            header_bits, wide, narrow = map(int, out[k * per_case + i].split())
            if header_bits != wide & ((1 << t.width) - 1) or narrow != wide:
                bad.append(f"{t} from ap_fixed<{src[0]},{src[1]}> code {c}: header {header_bits}, qfx {wide} "
                           f"(int128), {narrow} (int64)")
    assert not bad, f"{len(bad)} casts differ, e.g.\n" + "\n".join(bad[:10])


def _loop_cases(rng: random.Random) -> list[tuple[FixedType, str, int]]:
    """(destination, lane source type, drop): every rounding with every overflow, int32 and int64 sources,
    drops from appended zeros (the per-value path) through 0 to all but one of the source's bits."""
    cases = []
    for k, (rounding, overflow) in enumerate((q, o) for q in Rounding for o in Overflow):
        for source, bits in (("std::int32_t", 32), ("std::int64_t", 64)):
            signed = overflow is Overflow.WRAP_SM or rng.random() < 0.7
            top = bits if signed else bits - 1
            width = rng.choice([1, 2, top, top + 1 if top < 63 else top]) if k % 3 == 0 else rng.randint(1, top)
            sat_bits = rng.randint(1, width) if overflow in (Overflow.WRAP, Overflow.WRAP_SM) and k % 2 else 0
            t = FixedType(width, rng.randint(-8, width + 8), signed=signed, rounding=rounding, overflow=overflow,
                          sat_bits=sat_bits)
            for drop in (0, 1, rng.randint(2, bits - 1), bits - 1, -rng.randint(1, 4)):
                cases.append((t, source, drop))
    return cases


def test_cast_loop_matches_the_integer_specification(tmp_path):
    """qfx::cast_loop (the kernels' vectorised cast over a run) against qfx.ir.integer.cast, in Python integers."""
    rng = random.Random(20261206)
    cases, n = _loop_cases(rng), 67  # not a multiple of any vector width: the loop's tail runs too
    lines = ["#include <qfx/cast_loop.h>", "#include <cstdio>", "", "template <class T, class A>",
             "static void run(std::FILE* in, int n, int drop) {",
             "  long long codes[256], out[256];",
             "  if (std::fread(codes, sizeof(long long), n, in) != static_cast<std::size_t>(n)) return;",
             "  qfx::cast_loop<T, A>(n, drop, [&](int i) { return static_cast<A>(codes[i]); }, out);",
             "  for (int i = 0; i < n; ++i) std::printf(\"%lld\\n\", out[i]);", "}", "",
             "int main(int argc, char** argv) {", "  std::FILE* in = std::fopen(argv[1], \"rb\");"]
    blob, expected = [], []
    for t, source, drop in cases:
        bits = 32 if source == "std::int32_t" else 64
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        picks = [lo, hi, 0, 1, -1, lo + 1, hi - 1]
        for limit in (t.code_max, t.code_min, t.code_max + 1, t.code_min - 1):
            scaled = limit << drop if drop >= 0 else limit >> -drop
            picks += [scaled + d for d in (-2, -1, 0, 1, 2)]
        while len(picks) < n:
            width = rng.randint(1, bits)
            picks.append(rng.randint(-(1 << (width - 1)), (1 << (width - 1)) - 1))
        codes = [min(max(p, lo), hi) for p in picks[:n]]
        blob.append(np.array(codes, dtype=np.int64).tobytes())
        expected += [int(v) for v in integer_cast(np.array(codes, dtype=object), t.frac_bits + drop, t)]
        lines.append(f"  run<qfx::Format<{t.width}, {t.frac_bits}, {'true' if t.signed else 'false'}, "
                     f"qfx::Rounding::{t.rounding.value}, qfx::Overflow::{t.overflow.value}, {t.sat_bits}>, "
                     f"{source}>(in, {n}, {drop});")
    lines += ["  return 0;", "}"]
    (tmp_path / "in.bin").write_bytes(b"".join(blob))
    program = compile_source("\n".join(lines) + "\n", stem="cast_loop_check")
    got = [int(v) for v in subprocess.run([str(program), str(tmp_path / "in.bin")], capture_output=True, text=True,
                                          check=True).stdout.split()]
    assert len(got) == len(expected)
    bad = [f"{t} from {source} dropping {drop}: value {k % n} gives {g}, expected {e}"
           for k, (g, e) in enumerate(zip(got, expected)) for t, source, drop in [cases[k // n]] if g != e]
    assert not bad, f"{len(bad)} casts differ, e.g.\n" + "\n".join(bad[:10])


# ------------------------------------------------------ graphs: the three agree
def _assert_all_equal(qm: nn.Module, graph: Graph, x: torch.Tensor, threads=None) -> None:
    expected = qm(x).detach().double().numpy()
    interpreted = qfx.ir.run(graph, x.numpy())
    emulated = emulate(graph, x.numpy(), threads=threads)
    assert emulated.shape == expected.shape == interpreted.shape
    assert np.array_equal(interpreted, expected), f"{int((interpreted != expected).sum())} IR outputs differ"
    assert np.array_equal(emulated, expected), f"{int((emulated != expected).sum())} emulator outputs differ"


_ZOO_CACHE: dict = {}


def _zoo(name: str, config: qfx.QConfig = qfx.QConfig()):
    """The quantized zoo model and its graph, built once per test session."""
    key = (name, repr(config))
    if key not in _ZOO_CACHE:
        make, shape = ZOO[name]
        x = inputs(shape, batch=64)
        qm = quantized(make, x, config)
        _ZOO_CACHE[key] = (qm, qfx.export(qm, x[:1]), shape)
    return _ZOO_CACHE[key]


@pytest.mark.parametrize("name", sorted(ZOO))
@pytest.mark.parametrize("batch", [1, 256])
def test_zoo_pytorch_interpreter_and_emulator_agree(name, batch):
    qm, graph, shape = _zoo(name)
    _assert_all_equal(qm, graph, inputs(shape, batch=batch, seed=11))


def test_khot_weights_and_batchnorm_scales():
    qm, graph, shape = _zoo("cnn", qfx.QConfig(multiplier_free="khot:2"))
    source = qfx.emulator.generate(graph)
    assert "qfx::scale_shift<formats::bn1, std::int32_t, 6, 60, 2>" in source  # shift-add products
    _assert_all_equal(qm, graph, inputs(shape, batch=64, seed=12))


def test_per_channel_weight_formats():
    qm, graph, shape = _zoo("cnn", qfx.QConfig(weight_granularity="channel", bias=24))
    assert any(n.constants["weight"].per_channel for n in graph.nodes if "weight" in n.constants)
    _assert_all_equal(qm, graph, inputs(shape, batch=64, seed=15))


class Chain(nn.Module):
    """Dense layers in a row, so each output format (and so each mode) is set by one override."""

    def __init__(self, layers: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(*[nn.Linear(10, 10) for _ in range(layers)])

    def forward(self, x):
        return self.layers(x)


# One layer per rounding and per overflow mode; every saturation-bit flavour; unsigned outputs.
_MODE_LAYERS = [
    "ap_fixed<7,2,AP_RND,AP_SAT>", "ap_fixed<7,2,AP_RND_ZERO,AP_SAT_ZERO>", "ap_fixed<7,1,AP_RND_MIN_INF,AP_SAT_SYM>",
    "ap_fixed<7,2,AP_RND_INF,AP_WRAP,2>", "ap_fixed<7,2,AP_RND_CONV,AP_WRAP_SM>", "ap_fixed<7,2,AP_TRN,AP_WRAP_SM,1>",
    "ap_fixed<7,2,AP_TRN_ZERO,AP_WRAP_SM,3>", "ap_ufixed<6,1,AP_RND,AP_WRAP,1>", "ap_fixed<9,3,AP_TRN,AP_WRAP>",
    "ap_ufixed<6,2,AP_TRN_ZERO,AP_SAT_SYM>", "ap_fixed<8,1,AP_RND_CONV,AP_SAT>",
]


@pytest.mark.parametrize("batch", [1, 256])
def test_every_rounding_and_overflow_mode(batch):
    overrides = {f"layers.{k}": {"output": fmt} for k, fmt in enumerate(_MODE_LAYERS)}
    overrides["layers.0"]["accum"] = "ap_fixed<12,5,AP_RND_INF,AP_WRAP>"  # an explicit accumulator cast too
    x = inputs((10,), batch=64, seed=5)
    key = ("chain",)
    if key not in _ZOO_CACHE:
        qm = quantized(lambda: Chain(len(_MODE_LAYERS)), x, qfx.QConfig(weight=6, overrides=overrides))
        for module in qm.modules():  # calibration fits the ranges: narrow them so that values overflow
            q = getattr(module, "output_quantizer", None)
            if q is not None and not isinstance(module, qfx.nn.QInput):
                q.set_int_bits(int(q.fixed_type.int_bits) - 2)
        _ZOO_CACHE[key] = qm
    qm = _ZOO_CACHE[key]
    graph = qfx.export(qm, x[:1])
    modes = [(t.width, t.signed, t.rounding, t.overflow, t.sat_bits)
             for t in (n.output.type for n in graph.nodes)]
    assert modes == [(t.width, t.signed, t.rounding, t.overflow, t.sat_bits)
                     for t in map(FixedType.parse, _MODE_LAYERS)]
    assert "accum" in graph.nodes[0].formats
    x = inputs((10,), batch=batch, seed=6, scale=4.0)
    _assert_all_equal(qm, graph, x)
    if batch > 1:  # the narrow formats do overflow, so the overflow modes are exercised
        hidden = run_codes(graph, qfx.ir.input_codes(x.numpy(), graph.inputs[0].type), trace=True)
        t = graph.nodes[0].output.type
        assert (hidden[graph.nodes[0].name] == t.code_max).any() and (hidden[graph.nodes[0].name] == t.code_min).any()


class Pools(nn.Module):
    """Odd pooling: ceil mode, dilation, padding, non-square windows; 1x1 convolutions on a 1-pixel image."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=(2, 1), padding=(0, 2))
        self.maxpool = nn.MaxPool2d((3, 2), stride=2, padding=1, dilation=(1, 2), ceil_mode=True)
        self.avgpool = nn.AvgPool2d((2, 3), stride=(1, 2), padding=(1, 1))
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.point = nn.Conv2d(4, 5, 1)
        self.fc = nn.Linear(5, 2)

    def forward(self, x):
        y = self.avgpool(self.maxpool(torch.relu(self.conv(x))))
        return self.fc(torch.flatten(self.point(self.gap(y)), 1))


@pytest.mark.parametrize("batch", [1, 256])
def test_odd_pooling_and_shapes(batch):
    x = inputs((3, 9, 7), batch=64, seed=8)
    key = ("pools",)
    if key not in _ZOO_CACHE:
        _ZOO_CACHE[key] = quantized(Pools, x, qfx.QConfig(activation=9, rounding="RND_INF"))
    qm = _ZOO_CACHE[key]
    graph = qfx.export(qm, x[:1])
    assert {n.op for n in graph.nodes} >= {"maxpool2d", "avgpool2d", "global_avgpool2d", "conv2d", "dense"}
    _assert_all_equal(qm, graph, inputs((3, 9, 7), batch=batch, seed=9))


def test_threads_change_nothing():
    qm, graph, shape = _zoo("cnn")
    codes = qfx.ir.input_codes(inputs(shape, batch=100, seed=13).numpy(), graph.inputs[0].type)
    one = run_codes(graph, codes, threads=1)
    three = run_codes(graph, codes, threads=3)
    reference = qfx.ir.run_codes(graph, [codes])
    for name in graph.outputs:
        assert np.array_equal(one[name], three[name]) and np.array_equal(one[name], reference[name])


def test_trace_gives_every_tensor():
    qm, graph, shape = _zoo("odd")
    codes = qfx.ir.input_codes(inputs(shape, batch=20, seed=14).numpy(), graph.inputs[0].type)
    traced = run_codes(graph, codes, trace=True)
    reference = qfx.ir.run_codes(graph, [codes])
    assert list(traced) == list(reference)
    for name in reference:
        assert np.array_equal(traced[name], reference[name]), name


# ------------------------------------------------------ wide codes, refusals
def _wide_graph(input_bits: int, weight_bits: int, out: str) -> Graph:
    """A dense layer on hand-made wide formats, beyond what PyTorch's float layers take."""
    rng = np.random.default_rng(3)
    t_in = FixedType(input_bits, 9)
    t_w = FixedType(weight_bits, 3)
    w = rng.integers(t_w.code_min, t_w.code_max, size=(3, 8), endpoint=True, dtype=np.int64)
    w[0, :] = t_w.code_min  # the extreme products
    b = rng.integers(-(1 << 30), 1 << 30, size=3, dtype=np.int64)
    node = Node("fc", "dense", ("x",), Value("fc", (3,), FixedType.parse(out)),
                constants={"weight": Constant(w, (t_w,)), "bias": Constant(b, (FixedType(40, -60),))})
    return Graph("wide", [Value("x", (8,), t_in)], [node], ["fc"]).check()


@pytest.mark.parametrize("out", ["ap_fixed<64,40,AP_RND_CONV,AP_SAT>", "ap_fixed<61,30,AP_RND,AP_WRAP_SM,2>",
                                 "ap_ufixed<63,50,AP_TRN_ZERO,AP_SAT_SYM>"])
def test_int128_accumulators_and_64_bit_codes(out):
    graph = _wide_graph(60, 60, out)
    assert 63 < accumulator_bits(graph)["fc"] <= 127
    rng = np.random.default_rng(4)
    t = graph.inputs[0].type
    x = rng.integers(t.code_min, t.code_max, size=(40, 8), endpoint=True, dtype=np.int64)
    x[0] = t.code_min
    x[1] = t.code_max
    expected = qfx.ir.run_codes(graph, [x])["fc"]
    assert np.array_equal(emulate(graph, x, codes=True), expected.astype(np.int64))


def test_refuses_accumulators_beyond_127_bits():
    graph = _wide_graph(64, 64, "ap_fixed<64,40>")
    with pytest.raises(EmulatorError, match=r"node 'fc' \(dense\).*132 bits"):
        compile_graph(graph)


def test_refuses_wrong_input_shape():
    _, graph, shape = _zoo("mlp")
    with pytest.raises(ValueError, match="input 'x_quant' takes shape"):
        emulate(graph, np.zeros((2, 5)))


def test_programs_are_cached_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("QFX_CACHE_DIR", str(tmp_path))
    _, graph, _ = _zoo("mlp")
    first = compile_graph(graph)
    assert first.parent == tmp_path / "emulator" and first.is_file()
    stamp = first.stat().st_mtime_ns
    assert compile_graph(graph) == first and first.stat().st_mtime_ns == stamp
    assert not list((tmp_path / "emulator").glob(".build-*"))  # the temporary build directory is gone


def test_a_garbage_cached_program_is_rebuilt_not_run(tmp_path, monkeypatch):
    monkeypatch.setenv("QFX_CACHE_DIR", str(tmp_path))
    qm, graph, shape = _zoo("mlp")
    x = inputs(shape, batch=4).numpy()
    expected = qfx.ir.run(graph, x)
    program = compile_graph(graph)
    for damage in (b"\x7fELF\x02\x01\x01" + b"\0" * 64, program.read_bytes()[:2000]):
        program.write_bytes(damage)  # an exec format error, or a crash, if it were run
        with pytest.warns(RuntimeWarning, match="does not match its recorded SHA-256"):
            assert np.array_equal(emulate(graph, x), expected)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_an_empty_batch_gives_empty_outputs(name):
    """PyTorch, the interpreter and the emulator all map a batch of 0 samples to 0 outputs of the right shape."""
    qm, graph, shape = _zoo(name)
    x = inputs(shape, batch=0)
    expected = (0,) + graph.output_values[0].shape
    assert tuple(qm(x).shape) == expected
    assert qfx.ir.run(graph, x.numpy()).shape == expected
    assert emulate(graph, x.numpy()).shape == expected
    traced = run_codes(graph, np.zeros((0,) + shape, dtype=np.int64), trace=True)
    assert {name: a.shape for name, a in traced.items()} == {
        v.name: (0,) + v.shape for v in list(graph.inputs) + [n.output for n in graph.nodes]}
