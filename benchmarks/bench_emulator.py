"""Speed of ``qfx.emulate`` beside PyTorch eval mode and a program built on Xilinx's ``ap_fixed.h``.

Two networks with random weights, quantized to 8 bits (``QConfig()``
defaults) and calibrated on random data: the digits CNN of
``examples/digits.py`` (1x8x8 input) and ResNet-20 of
``examples/resnet20_cifar10.py`` (3x32x32).  For each:

* **compile**: seconds to generate and compile the emulator program from
  a cold cache (``QFX_CACHE_DIR`` pointed at a fresh directory), and the same
  for the ``ap_fixed`` program.
* **samples/s** of three implementations on the same batch:

  - **torch**: the quantized model, ``model.eval()(x)`` under ``no_grad`` (and,
    for reference, on as many threads as the machine has);
  - **emulator**: ``qfx.emulator.emulate(graph, codes, codes=True)``, one thread
    (and, for reference, as many threads as the machine has);
  - **ap_fixed**: a straightforward C++ program of the same layers written
    with ``ap_fixed`` types, as HLS C simulation compiles them (plain loops,
    an exact ``ap_fixed`` accumulator, one cast per layer), ``g++ -O2``
    against the headers ``qfx csim`` uses (``$XILINX_HLS/include``, else hls4ml's).  Its outputs
    are checked equal to the emulator's: the two are the same computation.

Everything runs on one thread (``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``)
unless said otherwise; timings are medians of ``--repeats`` interleaved
rounds (torch, emulator, ap_fixed, in turn), each round a full process run
for the C++ programs (reading and writing their files included).  Nothing
here asserts on time.

Run::

    python benchmarks/bench_emulator.py                 # 5 repeats
    python benchmarks/bench_emulator.py --repeats 3 --resnet-batch 16
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable, Optional  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "examples")]

import qfx  # noqa: E402
from qfx.emulator import compile_graph, emulate  # noqa: E402
from qfx.format import FixedType  # noqa: E402
from qfx.hls.toolchain import ap_types_include  # noqa: E402
from qfx.ir import Graph, Node  # noqa: E402

torch.set_num_threads(1)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------- the ap_fixed program
_AP_KERNELS = r"""
#include <ap_fixed.h>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

// Plain loops over ap_fixed values: an exact accumulator, one cast per layer output.
template <class Acc, int C, int H, int W, int O, int KH, int KW, int SH, int SW, int PT, int PL, int DH, int DW, int G,
          int OH, int OW, class X, class Wt, class B, class Y>
void conv2d(const X* x, const Wt* w, const B* bias, Y* y) {
  const int cg = C / G, og = O / G;
  for (int o = 0; o < O; ++o)
    for (int oy = 0; oy < OH; ++oy)
      for (int ox = 0; ox < OW; ++ox) {
        Acc acc = 0;
        for (int c = 0; c < cg; ++c)
          for (int ky = 0; ky < KH; ++ky)
            for (int kx = 0; kx < KW; ++kx) {
              const int iy = oy * SH + ky * DH - PT, ix = ox * SW + kx * DW - PL;
              if (iy >= 0 && iy < H && ix >= 0 && ix < W)
                acc += x[((o / og * cg + c) * H + iy) * W + ix] * w[((o * cg + c) * KH + ky) * KW + kx];
            }
        if (bias) y[(o * OH + oy) * OW + ox] = acc + bias[o]; else y[(o * OH + oy) * OW + ox] = acc;
      }
}

template <class Acc, int I, int O, class X, class Wt, class B, class Y>
void dense(const X* x, const Wt* w, const B* bias, Y* y) {
  for (int o = 0; o < O; ++o) {
    Acc acc = 0;
    for (int i = 0; i < I; ++i) acc += x[i] * w[o * I + i];
    if (bias) y[o] = acc + bias[o]; else y[o] = acc;
  }
}

template <int C, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW, int DH, int DW, int OH, int OW, class X,
          class Y>
void maxpool2d(const X* x, Y* y) {
  for (int c = 0; c < C; ++c)
    for (int oy = 0; oy < OH; ++oy)
      for (int ox = 0; ox < OW; ++ox) {
        bool found = false;
        X best = 0;
        for (int ky = 0; ky < KH; ++ky)
          for (int kx = 0; kx < KW; ++kx) {
            const int iy = oy * SH + ky * DH - PH, ix = ox * SW + kx * DW - PW;
            if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
            const X v = x[(c * H + iy) * W + ix];
            if (!found || v > best) best = v;
            found = true;
          }
        y[(c * OH + oy) * OW + ox] = best;
      }
}

template <class Sum, int C, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW, int OH, int OW, class X,
          class D, class Y>
void avgpool2d(const X* x, const D& divisor, Y* y) {
  for (int c = 0; c < C; ++c)
    for (int oy = 0; oy < OH; ++oy)
      for (int ox = 0; ox < OW; ++ox) {
        Sum sum = 0;
        for (int ky = 0; ky < KH; ++ky)
          for (int kx = 0; kx < KW; ++kx) {
            const int iy = oy * SH + ky - PH, ix = ox * SW + kx - PW;
            if (iy >= 0 && iy < H && ix >= 0 && ix < W) sum += x[(c * H + iy) * W + ix];
          }
        y[(c * OH + oy) * OW + ox] = sum * divisor;
      }
}

template <class T> void fill(T* out, const long long* codes, int n, int frac) {
  for (int i = 0; i < n; ++i) out[i] = std::ldexp(static_cast<double>(codes[i]), -frac);
}
"""


def _hex(value: float) -> str:
    return float(value).hex()


class _ApFixedProgram:
    """The ap_fixed C++ program of one graph: per-tensor types, arrays, one loop nest per node."""

    def __init__(self, graph: Graph) -> None:
        self.graph, self.names = graph, graph.c_names()
        self.values = graph.values()
        self.globals: list[str] = []
        self.init: list[str] = []
        self.body: list[str] = []

    def array(self, name: str, codes: np.ndarray, t: FixedType) -> str:
        flat = np.asarray(codes, dtype=np.int64).ravel()
        self.globals.append(f"static const long long {name}_codes[] = {{{', '.join(map(str, flat.tolist()))}}};")
        self.globals.append(f"static {t} {name}[{flat.size}];")
        self.init.append(f"  fill({name}, {name}_codes, {flat.size}, {t.frac_bits});")
        return name

    def node(self, node: Node) -> None:
        n, a = self.names, node.attrs
        x = self.values[node.inputs[0]]
        src, dst = n[x.name], n[node.name]
        if node.op in ("dense", "conv1d", "conv2d"):
            w = node.constants["weight"]
            if w.per_channel:
                raise NotImplementedError(f"{node.describe()}: per-channel weight formats are not generated here")
            fan_in = int(np.prod(w.codes.shape[1:]))
            acc = x.type.accum_type(w.types[0], fan_in)
            wname = self.array(f"{dst}_w", w.codes, w.types[0])
            bias = node.constants.get("bias")
            bname = self.array(f"{dst}_b", bias.codes, bias.types[0]) if bias is not None else f"({acc}*)nullptr"
            if "accum" in node.formats:
                raise NotImplementedError(f"{node.describe()}: accum formats are not generated here")
            if node.op == "dense":
                self.body.append(f"  dense<{acc}, {w.codes.shape[1]}, {w.codes.shape[0]}>({src}, {wname}, {bname}, "
                                 f"{dst});")
                return
            (c, h, wd), (o, _, kh, kw) = x.shape, w.codes.shape
            dims = [c, h, wd, o, kh, kw, *a["stride"], a["padding"][0][0], a["padding"][1][0], *a["dilation"],
                    a["groups"], *node.output.shape[1:]]
            self.body.append(f"  conv2d<{acc}, {', '.join(map(str, dims))}>({src}, {wname}, {bname}, {dst});")
        elif node.op == "scale_shift":
            scale, shift = node.constants["scale"], node.constants["shift"]
            size = x.size // x.shape[0]
            for c in range(x.shape[0]):
                st, ht = scale.type_of(c), shift.type_of(c)
                s = _hex(int(scale.codes[c]) * 2.0 ** -st.frac_bits)
                h = _hex(int(shift.codes[c]) * 2.0 ** -ht.frac_bits)
                self.body.append(f"  {{ const {st} s = {s}; const {ht} h = {h}; for (int i = {c * size}; "
                                 f"i < {(c + 1) * size}; ++i) {dst}[i] = {src}[i] * s + h; }}")
        elif node.op == "relu":
            self.body.append(f"  for (int i = 0; i < {x.size}; ++i) {{ if ({src}[i] > 0) {dst}[i] = {src}[i]; "
                             f"else {dst}[i] = 0; }}")
        elif node.op == "add":
            b = n[node.inputs[1]]
            self.body.append(f"  for (int i = 0; i < {x.size}; ++i) {dst}[i] = {src}[i] + {b}[i];")
        elif node.op == "maxpool2d":
            dims = [*x.shape, *a["kernel"], *a["stride"], *a["padding"], *a["dilation"], *node.output.shape[1:]]
            self.body.append(f"  maxpool2d<{', '.join(map(str, dims))}>({src}, {dst});")
        elif node.op in ("avgpool2d", "global_avgpool2d"):
            d = node.constants["divisor"]
            dt = d.types[0]
            kernel = a["kernel"] if node.op == "avgpool2d" else list(x.shape[1:])
            stride, pad = (a["stride"], a["padding"]) if node.op == "avgpool2d" else ([1, 1], [0, 0])
            sum_t = x.type.sum_type(kernel[0] * kernel[1])
            self.globals.append(f"static const {dt} {dst}_div = {_hex(int(d.codes) * 2.0 ** -dt.frac_bits)};")
            dims = [*x.shape, *kernel, *stride, *pad, *node.output.shape[1:]]
            self.body.append(f"  avgpool2d<{sum_t}, {', '.join(map(str, dims))}>({src}, {dst}_div, {dst});")
        elif node.op == "flatten":
            self.body.append(f"  for (int i = 0; i < {x.size}; ++i) {dst}[i] = {src}[i];")
        else:
            raise NotImplementedError(f"{node.describe()}: op '{node.op}' is not generated here")

    def source(self) -> str:
        graph, n = self.graph, self.names
        (inp,), out = graph.inputs, graph.output_values[0]
        for value in [inp] + [node.output for node in graph.nodes]:
            self.globals.append(f"static {value.type} {n[value.name]}[{value.size}];")
        for node in graph.nodes:
            self.node(node)
        return "\n".join([
            _AP_KERNELS, *self.globals, "", "static void init() {", *self.init, "}", "",
            "static void forward() {", *self.body, "}", "",
            "int main(int argc, char** argv) {",
            "  const long long batch = std::atoll(argv[3]);",
            "  init();",
            f"  std::vector<long long> in(batch * {inp.size}), out(batch * {out.size});",
            "  std::FILE* f = std::fopen(argv[1], \"rb\");",
            "  if (!f || std::fread(in.data(), 8, in.size(), f) != in.size()) return 2;",
            "  std::fclose(f);",
            "  for (long long s = 0; s < batch; ++s) {",
            f"    fill({n[inp.name]}, in.data() + s * {inp.size}, {inp.size}, {inp.type.frac_bits});",
            "    forward();",
            f"    for (int i = 0; i < {out.size}; ++i) out[s * {out.size} + i] = "
            f"std::llround(std::ldexp({n[out.name]}[i].to_double(), {out.type.frac_bits}));",
            "  }",
            "  std::FILE* g = std::fopen(argv[2], \"wb\");",
            "  if (!g || std::fwrite(out.data(), 8, out.size(), g) != out.size()) return 3;",
            "  std::fclose(g);",
            "  return 0;",
            "}",
        ]) + "\n"


def build_ap_fixed(graph: Graph, directory: Path) -> tuple[Path, float]:
    """Compile the ap_fixed program of ``graph`` with ``g++ -O2``; return it and the seconds spent."""
    src = directory / f"{graph.name}_ap_fixed.cpp"
    src.write_text(_ApFixedProgram(graph).source())
    binary = directory / f"{graph.name}_ap_fixed"
    start = time.perf_counter()
    subprocess.run(["g++", "-std=c++17", "-O2", f"-I{ap_types_include()}", str(src), "-o", str(binary)], check=True)
    return binary, time.perf_counter() - start


# ------------------------------------------------------------------ models
def digits_model() -> tuple[torch.nn.Module, tuple[int, ...]]:
    from digits import DigitsCNN
    return DigitsCNN(), (1, 8, 8)


def resnet20_model() -> tuple[torch.nn.Module, tuple[int, ...]]:
    from resnet20_cifar10 import ResNet20
    return ResNet20(), (3, 32, 32)


def quantized_graph(make: Callable, seed: int) -> tuple[torch.nn.Module, Graph, tuple[int, ...]]:
    """The model with random weights and warmed BatchNorm statistics, 8-bit quantized, calibrated, exported."""
    torch.manual_seed(seed)
    model, shape = make()
    x = torch.randn((64,) + shape)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x)
    model.eval()
    qm = qfx.quantize_model(model, qfx.QConfig(), example_input=x)
    qfx.calibrate(qm, [x])
    qm.eval()
    return qm, qfx.export(qm, x[:1]), shape


# ------------------------------------------------------------------ timing
def run_file_program(binary: Path, codes: np.ndarray, directory: Path) -> tuple[np.ndarray, float]:
    """Run a C++ program on int64 codes through files; return its output codes and the wall time."""
    (directory / "in.bin").write_bytes(np.ascontiguousarray(codes, dtype=np.int64).tobytes())
    start = time.perf_counter()
    subprocess.run([str(binary), str(directory / "in.bin"), str(directory / "out.bin"), str(len(codes))], check=True)
    elapsed = time.perf_counter() - start
    return np.fromfile(directory / "out.bin", dtype=np.int64), elapsed


def bench_model(name: str, make: Callable, batch: int, repeats: int, seed: int) -> dict:
    log(f"{name}: building the quantized model and graph")
    qm, graph, shape = quantized_graph(make, seed)
    x = torch.randn((batch,) + shape, generator=torch.Generator().manual_seed(seed + 1))
    codes = qfx.ir.input_codes(x.numpy(), graph.inputs[0].type)
    result: dict = {"name": name, "batch": batch, "nodes": len(graph.nodes)}
    with tempfile.TemporaryDirectory(prefix="qfx-bench-emulator-") as tmp:
        directory = Path(tmp)
        os.environ["QFX_CACHE_DIR"] = str(directory / "cache")  # a cold cache: the first build is timed
        start = time.perf_counter()
        compile_graph(graph)
        result["compile_emulator"] = time.perf_counter() - start
        log(f"{name}: emulator compiled in {result['compile_emulator']:.1f} s; compiling the ap_fixed program")
        ap_binary, result["compile_ap_fixed"] = build_ap_fixed(graph, directory)
        reference = emulate(graph, codes, codes=True, threads=1)
        ap_out, _ = run_file_program(ap_binary, codes, directory)
        result["ap_fixed_mismatches"] = int((ap_out.reshape(reference.shape) != reference).sum())
        torch_out = qm(x).detach().double().numpy()
        result["torch_mismatches"] = int((qfx.ir.values_of(reference, graph.output_values[0].type) != torch_out).sum())
        times: dict[str, list[float]] = {"torch": [], "torch_mt": [], "emulator": [], "emulator_mt": [],
                                         "ap_fixed": []}
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        for r in range(repeats):
            log(f"{name}: round {r + 1}/{repeats}")
            start = time.perf_counter()
            with torch.no_grad():
                qm(x)
            times["torch"].append(time.perf_counter() - start)
            torch.set_num_threads(cores)
            start = time.perf_counter()
            with torch.no_grad():
                qm(x)
            times["torch_mt"].append(time.perf_counter() - start)
            torch.set_num_threads(1)
            start = time.perf_counter()
            emulate(graph, codes, codes=True, threads=1)
            times["emulator"].append(time.perf_counter() - start)
            start = time.perf_counter()
            emulate(graph, codes, codes=True, threads=cores)
            times["emulator_mt"].append(time.perf_counter() - start)
            times["ap_fixed"].append(run_file_program(ap_binary, codes, directory)[1])
        os.environ.pop("QFX_CACHE_DIR")
    result["samples_per_s"] = {k: batch / statistics.median(v) for k, v in times.items()}
    result["cores"] = cores
    return result


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds; medians are reported")
    p.add_argument("--digits-batch", type=int, default=2000, help="samples per run for the digits CNN")
    p.add_argument("--resnet-batch", type=int, default=32, help="samples per run for ResNet-20")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    rows = [bench_model("digits CNN", digits_model, args.digits_batch, args.repeats, args.seed),
            bench_model("ResNet-20", resnet20_model, args.resnet_batch, args.repeats, args.seed)]
    print(f"qfx.emulate vs PyTorch eval vs an ap_fixed.h program; one thread each unless noted; medians of "
          f"{args.repeats} interleaved rounds; {os.cpu_count()} CPUs")
    head = (f"{'model':<12}{'batch':>6}{'compile s':>11}{'ap compile s':>14}{'torch/s':>10}{'emu/s':>10}"
            f"{'emu/s (mt)':>12}{'torch/s (mt)':>14}{'ap_fixed/s':>12}{'emu/ap':>8}{'emu/torch':>11}"
            f"{'(mt)':>7}{'diffs':>7}")
    print(head)
    print("-" * len(head))
    for r in rows:
        s = r["samples_per_s"]
        print(f"{r['name']:<12}{r['batch']:>6}{r['compile_emulator']:>11.2f}{r['compile_ap_fixed']:>14.2f}"
              f"{s['torch']:>10.0f}{s['emulator']:>10.0f}{s['emulator_mt']:>12.0f}{s['torch_mt']:>14.0f}"
              f"{s['ap_fixed']:>12.1f}"
              f"{s['emulator'] / s['ap_fixed']:>8.1f}{s['emulator'] / s['torch']:>11.2f}"
              f"{s['emulator_mt'] / s['torch_mt']:>7.2f}"
              f"{r['ap_fixed_mismatches'] + r['torch_mismatches']:>7}")
    print()
    print("compile s: generate + g++ -O3 -march=native of the emulator from a cold cache; ap compile s: the "
          "ap_fixed program")
    print(f"(mt): on {rows[0]['cores']} threads (emulator and torch); emu/ap and emu/torch: one thread each; "
          f"1-minute load average {os.getloadavg()[0]:.2f}")
    print("diffs: output codes where the ap_fixed program or PyTorch differ from the emulator (must be 0)")


if __name__ == "__main__":
    main()
