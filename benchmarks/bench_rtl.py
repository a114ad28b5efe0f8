"""Constant matrix-vector products on the Ultra96-V2 fabric: `*`, qfx shift-add, qfx K-hot, and da4ml.

For random signed 8-bit constant matrices (8x8, 16x16, 32x32) and signed
8-bit inputs, four combinational designs of ``y = M x`` are synthesised
with the same Yosys command (``synth_xilinx -family xcup -flatten
-noiopad``):

(a) plain Verilog with ``*`` on the constants (Yosys maps them to DSPs);
(b) qfx: the dense layer's module from ``qfx.rtl`` (CSD digits, shared
    subexpressions, one ``qfx_add`` per adder);
(c) qfx with the matrix projected to 2-hot codes (at most two CSD digits);
(d) da4ml (peer tool, PyPI ``da4ml``): its ``solve`` and Verilog code
    generator, its stages chained combinationally.

Prints LUT, CARRY4/CARRY8, FF, DSP48E2 and synthesis seconds per design,
and the LUT ratio of each to da4ml.  Usage::

    python benchmarks/bench_rtl.py [--sizes 8 16 32] [--timeout 1800] [--keep DIR]
"""

from __future__ import annotations

import argparse
import pathlib
import re
import sys
import tempfile

import numpy as np

from qfx.format import FixedType
from qfx.ir import Constant, Graph, Node, Value
from qfx.rtl import csd_digits, generate
from qfx.rtl.synth import SYNTH_COMMAND, Resources, synthesize_verilog
from qfx.rtl.verilog import signed_width

INPUT_BITS = 8


def random_matrix(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-128, 128, size=(n, n))


def khot(matrix: np.ndarray, k: int) -> np.ndarray:
    """Each code replaced by the nearest 8-bit code with at most ``k`` nonzero CSD digits (ties: smaller)."""
    allowed = np.array([c for c in range(-128, 128) if len(csd_digits(c)) <= k])
    nearest = np.abs(matrix[..., None] - allowed).argmin(axis=-1)
    return allowed[nearest]


def output_width(matrix: np.ndarray) -> int:
    low, high = -(1 << (INPUT_BITS - 1)), (1 << (INPUT_BITS - 1)) - 1
    lows = np.minimum(matrix * low, matrix * high).sum(axis=1)
    highs = np.maximum(matrix * low, matrix * high).sum(axis=1)
    return max(signed_width(int(a), int(b)) for a, b in zip(lows, highs))


def multiplier_design(matrix: np.ndarray, folder: pathlib.Path) -> tuple[list[str], str]:
    """(a): one sum of constant products per output, written with `*`."""
    n_out, n_in = matrix.shape
    w = output_width(matrix)
    lines = [f"module mult_top (input wire [{n_in * INPUT_BITS - 1}:0] x, output wire [{n_out * w - 1}:0] y);"]
    for i in range(n_in):
        lines.append(f"    wire signed [{INPUT_BITS - 1}:0] x{i} = x[{i * INPUT_BITS + INPUT_BITS - 1}:{i * INPUT_BITS}];")
    for o in range(n_out):
        terms = " + ".join(f"x{i} * {'-' if c < 0 else ''}{INPUT_BITS + 1}'sd{abs(int(c))}"
                           for i, c in enumerate(matrix[o]) if c)
        lines.append(f"    wire signed [{w - 1}:0] y{o} = {terms or '0'};")
        lines.append(f"    assign y[{o * w + w - 1}:{o * w}] = y{o};")
    lines.append("endmodule")
    (folder / "mult.v").write_text("\n".join(lines) + "\n")
    return ["mult.v"], "mult_top"


def qfx_design(matrix: np.ndarray, folder: pathlib.Path, name: str) -> tuple[list[str], str]:
    """(b)/(c): a one-layer graph (integer formats, exact output) through qfx.rtl; the layer module alone."""
    n_out, n_in = matrix.shape
    w = output_width(matrix)
    x = Value("x", (n_in,), FixedType(INPUT_BITS, INPUT_BITS))
    dense = Node("y", "dense", ("x",), Value("y", (n_out,), FixedType(w, w)),
                 constants={"weight": Constant(matrix, (FixedType(8, 8),))})
    graph = Graph(name, [x], [dense], ["y"]).check()
    generate(graph, folder / name, inputs=np.zeros((1, n_in), dtype=np.int64), force=True)
    return [f"{name}/rtl/qfx_add.v", f"{name}/rtl/{name}_y.v"], f"{name}_y"


def da4ml_design(matrix: np.ndarray, folder: pathlib.Path) -> tuple[list[str], str]:
    """(d): da4ml's solution of the same product, its pipeline stages chained without registers."""
    from da4ml.cmvm import solve
    from da4ml.codegen.rtl import verilog as da4ml_verilog
    from da4ml.codegen.rtl.verilog.comb import comb_logic_gen

    n_out, n_in = matrix.shape
    low, high = float(-(1 << (INPUT_BITS - 1))), float((1 << (INPUT_BITS - 1)) - 1)
    pipeline = solve(matrix.T.astype(np.float32), qintervals=[(low, high, 1.0)] * n_in)
    sources, widths = [], []
    for k, stage in enumerate(pipeline.solutions):
        text = comb_logic_gen(stage, f"da4ml_stage{k}")
        (folder / f"da4ml_stage{k}.v").write_text(text)
        sources.append(f"da4ml_stage{k}.v")
        widths.append((int(re.search(r"input \[(\d+):0\] model_inp", text)[1]) + 1,
                       int(re.search(r"output \[(\d+):0\] model_out", text)[1]) + 1))
    for (_, out_width), (in_width, _) in zip(widths, widths[1:]):
        assert out_width == in_width, "da4ml stages do not chain"
    lines = [f"module da4ml_top (input wire [{widths[0][0] - 1}:0] x, output wire [{widths[-1][1] - 1}:0] y);"]
    signal = "x"
    for k, (_, out_width) in enumerate(widths):
        lines.append(f"    wire [{out_width - 1}:0] s{k};")
        lines.append(f"    da4ml_stage{k} u{k} (.model_inp({signal}), .model_out(s{k}));")
        signal = f"s{k}"
    lines += [f"    assign y = {signal};", "endmodule"]
    (folder / "da4ml_top.v").write_text("\n".join(lines) + "\n")
    static = pathlib.Path(da4ml_verilog.__file__).parent / "source"
    used = "".join((folder / source).read_text() for source in sources)
    for path in sorted(static.glob("*.v")):  # the helper modules the stages instantiate
        if re.search(rf"\b{path.stem}\b", used):
            (folder / path.name).write_text(path.read_text())
            sources.append(path.name)
    return sources + ["da4ml_top.v"], "da4ml_top"


def run(sizes: list[int], timeout: float, keep: pathlib.Path | None) -> None:
    root = keep or pathlib.Path(tempfile.mkdtemp(prefix="bench_rtl_"))
    print(f"Yosys: read_verilog ...; {SYNTH_COMMAND} -top TOP; stat   (work folder {root})")
    header = f"{'size':>5} {'design':<22} {'LUT':>7} {'CARRY4':>7} {'CARRY8':>7} {'FF':>4} {'DSP':>4} " \
             f"{'synth s':>8} {'LUT / da4ml':>11}"
    print(header)
    print("-" * len(header))
    for n in sizes:
        folder = root / f"n{n}"
        folder.mkdir(parents=True, exist_ok=True)
        matrix = random_matrix(n, seed=n)
        designs = {"(a) * on constants": multiplier_design(matrix, folder),
                   "(b) qfx shift-add": qfx_design(matrix, folder, f"qfx_{n}"),
                   "(c) qfx 2-hot": qfx_design(khot(matrix, 2), folder, f"qfx_khot_{n}"),
                   "(d) da4ml": da4ml_design(matrix, folder)}
        results: dict[str, Resources | str] = {}
        for label in ["(d) da4ml", "(a) * on constants", "(b) qfx shift-add", "(c) qfx 2-hot"]:
            sources, top = designs[label]
            try:
                results[label] = synthesize_verilog(sources, top, folder, timeout=timeout)
            except TimeoutError as error:
                results[label] = str(error)
        reference = results["(d) da4ml"]
        for label, r in sorted(results.items()):
            if isinstance(r, str):
                print(f"{n:>5} {label:<22} {'not finished: ' + r}")
                continue
            ratio = f"{r.lut / reference.lut:.2f}" if isinstance(reference, Resources) and reference.lut else "-"
            print(f"{n:>5} {label:<22} {r.lut:>7} {r.carry4:>7} {r.carry8:>7} {r.ff:>4} {r.dsp:>4} "
                  f"{r.seconds:>8.1f} {ratio:>11}")
        sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per synthesis (default 1800)")
    parser.add_argument("--keep", type=pathlib.Path, default=None, help="work folder to keep the Verilog in")
    args = parser.parse_args()
    run(args.sizes, args.timeout, args.keep)


if __name__ == "__main__":
    main()
