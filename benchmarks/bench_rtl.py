"""Constant matrix-vector products on the Ultra96-V2 fabric: `*`, qfx shift-add, qfx K-hot, and da4ml.

For random signed 8-bit constant matrices (8x8, 16x16, 32x32) and signed
8-bit inputs, five combinational designs of ``y = M x`` are synthesised
with the same Yosys command (``synth_xilinx -family xcup -flatten
-noiopad``):

(a) plain Verilog with ``*`` on the constants (Yosys maps them to DSPs);
(b) qfx: the dense layer's module from ``qfx.rtl`` (CSD digits, shared
    subexpressions, row sums by ``qfx_add3`` ternary adders of LUT6_2 and
    CARRY8 cells, the generator's default);
(c) qfx with the matrix projected to 2-hot codes (at most two CSD digits);
(d) da4ml (peer tool, PyPI ``da4ml``): the product traced through its
    fixed-point front end (``FixedVariableArrayInput``, ``@``,
    ``comb_trace``) into one combinational ``CombLogic``, written by its
    Verilog generator ``comb_logic_gen``.
(e) qfx with two-term adders only (``qfx_add``, ``ternary=False``);

Before a design's synthesis numbers count, it is simulated with Icarus
Verilog (qfx's ternary adders as the UltraScale+ cells synthesis builds,
``QFX_SIMULATE_PRIMITIVES``) on random input vectors and its outputs compared with numpy's exact
``M x``.  A design that disagrees, or drives x/z bits, is reported as
INVALID with the reason, is not synthesised, and is not used as the LUT
reference (its ratio column then reads n/a).

Prints LUT (LUT6_2 counted as one), CARRY4/CARRY8, FF, DSP48E2, the
synthesis wall seconds and Yosys's CPU seconds (user + system of the child
process, which other load on the machine disturbs far less than wall time;
never taken from qfx's Yosys cache) per design, and the LUT and CPU-time
ratios of each to da4ml.  Usage::

    python benchmarks/bench_rtl.py [--sizes 8 16 32] [--timeout 1800] [--vectors 200] [--keep DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import re
import resource
import shutil
import subprocess
import sys
import tempfile

import numpy as np

from qfx.format import FixedType
from qfx.ir import Constant, Graph, Node, Value
from qfx.rtl import csd_digits, generate
from qfx.rtl.synth import SYNTH_COMMAND, Resources, synthesize_verilog
from qfx.rtl.verilog import signed_width

INPUT_BITS = 8


@dataclasses.dataclass(frozen=True)
class OutputField:
    """One output element in a design's packed output port: ``value = scale * word``."""

    width: int
    signed: bool
    scale: float = 1.0


@dataclasses.dataclass(frozen=True)
class Design:
    """A generated top module and what it computes.

    Every top has one packed input port then one packed output port, in that
    order; input element ``i`` occupies bits ``[8 i + 7 : 8 i]`` (signed codes),
    and the output elements are packed from the low bits up as ``outputs`` lists.
    """

    sources: list[str]
    top: str
    matrix: np.ndarray
    outputs: list[OutputField]


def random_matrix(n: int, seed: int) -> np.ndarray:
    """A reproducible ``n`` x ``n`` matrix of signed 8-bit codes."""
    return np.random.default_rng(seed).integers(-128, 128, size=(n, n))


def khot(matrix: np.ndarray, k: int) -> np.ndarray:
    """Each code replaced by the nearest 8-bit code with at most ``k`` nonzero CSD digits (ties: smaller)."""
    allowed = np.array([c for c in range(-128, 128) if len(csd_digits(c)) <= k])
    nearest = np.abs(matrix[..., None] - allowed).argmin(axis=-1)
    return allowed[nearest]


def output_width(matrix: np.ndarray) -> int:
    """Bits of the widest signed output of ``matrix @ x`` over all signed ``INPUT_BITS``-bit inputs."""
    low, high = -(1 << (INPUT_BITS - 1)), (1 << (INPUT_BITS - 1)) - 1
    lows = np.minimum(matrix * low, matrix * high).sum(axis=1)
    highs = np.maximum(matrix * low, matrix * high).sum(axis=1)
    return max(signed_width(int(a), int(b)) for a, b in zip(lows, highs))


def multiplier_design(matrix: np.ndarray, folder: pathlib.Path) -> Design:
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
    return Design(["mult.v"], "mult_top", matrix, [OutputField(w, True)] * n_out)


def qfx_design(matrix: np.ndarray, folder: pathlib.Path, name: str, ternary: bool = True) -> Design:
    """(b)/(c)/(e): a one-layer graph (integer formats, exact output) through qfx.rtl; the layer module alone.

    Its output format ``FixedType(w, w)`` has no fractional bits, so each
    ``w``-bit signed code is the output value itself.
    """
    n_out, n_in = matrix.shape
    w = output_width(matrix)
    x = Value("x", (n_in,), FixedType(INPUT_BITS, INPUT_BITS))
    dense = Node("y", "dense", ("x",), Value("y", (n_out,), FixedType(w, w)),
                 constants={"weight": Constant(matrix, (FixedType(8, 8),))})
    graph = Graph(name, [x], [dense], ["y"]).check()
    generate(graph, folder / name, inputs=np.zeros((1, n_in), dtype=np.int64), force=True, ternary=ternary)
    return Design([f"{name}/rtl/qfx_add.v", f"{name}/rtl/{name}_y.v"], f"{name}_y", matrix,
                  [OutputField(w, True)] * n_out)


def da4ml_design(matrix: np.ndarray, folder: pathlib.Path) -> Design:
    """(d): ``y = M x`` traced through da4ml into one combinational block and written as Verilog.

    The traced expression has numpy's meaning, so ``M x`` is written
    ``x @ M.T``.  Tracing rather than calling ``cmvm.solve`` directly gives
    one ``CombLogic`` whose output signs and shifts are part of it, instead of
    a multi-stage ``Pipeline`` whose stages would have to be joined by hand.
    The generated module packs each output as an integer code of its output
    interval's step, so ``value = step * code``.
    """
    from da4ml.codegen.rtl.verilog import comb_logic_gen
    from da4ml.trace import FixedVariableArrayInput, comb_trace
    from da4ml.types import minimal_kif

    n_out, n_in = matrix.shape
    x = FixedVariableArrayInput(n_in)
    # keep_dead_inputs: an all-zero column must still occupy its 8 bits of the shared input layout.
    y = x.quantize(k=1, i=INPUT_BITS - 1, f=0) @ matrix.T.astype(np.float64)
    logic = comb_trace(x, y, keep_dead_inputs=True)
    if [sum(minimal_kif(q)) for q in logic.inp_qint] != [INPUT_BITS] * n_in:
        raise ValueError("da4ml's input layout is not one signed 8-bit code per input")
    text = comb_logic_gen(logic, "da4ml_top")
    (folder / "da4ml_top.v").write_text(text)
    sources = ["da4ml_top.v"]
    static = pathlib.Path(comb_logic_gen.__code__.co_filename).parent / "source"
    for path in sorted(static.glob("*.v")):  # the helper modules the generated code instantiates
        if re.search(rf"\b{path.stem}\b", text):
            shutil.copy(path, folder / path.name)
            sources.append(path.name)
    outputs = [OutputField(sum(minimal_kif(q)), bool(minimal_kif(q)[0]), float(q.step)) for q in logic.out_qint]
    return Design(sources, "da4ml_top", matrix, outputs)


def check_design(design: Design, folder: pathlib.Path, vectors: int, seed: int = 0) -> str | None:
    """Simulate ``design`` with Icarus Verilog on random inputs; ``None`` if it computes ``M x`` exactly, else why not.

    The testbench reads packed input words from a file, applies each for one
    time step, and prints the packed output in hex, so x/z bits show up as
    ``x``/``z`` digits instead of silently reading as numbers.
    """
    n_out, n_in = design.matrix.shape
    in_width = n_in * INPUT_BITS
    out_width = sum(field.width for field in design.outputs)
    inputs = np.random.default_rng(seed).integers(-(1 << (INPUT_BITS - 1)), 1 << (INPUT_BITS - 1),
                                                    size=(vectors, n_in))
    words = [sum((int(v) & ((1 << INPUT_BITS) - 1)) << (INPUT_BITS * i) for i, v in enumerate(row)) for row in inputs]
    name = f"tb_{design.top}"
    (folder / f"{name}.hex").write_text("".join(f"{word:x}\n" for word in words))
    (folder / f"{name}.v").write_text(f"""module {name};
    reg [{in_width - 1}:0] stimulus [0:{vectors - 1}];
    reg [{in_width - 1}:0] x;
    wire [{out_width - 1}:0] y;
    integer k;
    {design.top} dut (x, y);  // by position: every top is (packed input, packed output)
    initial begin
        $readmemh("{name}.hex", stimulus);
        for (k = 0; k < {vectors}; k = k + 1) begin
            x = stimulus[k];
            #1 $display("%h", y);
        end
    end
endmodule
""")
    # QFX_SIMULATE_PRIMITIVES: qfx's ternary adders as the LUT6_2 and CARRY8 cells synthesis builds, not arithmetic
    build = subprocess.run(["iverilog", "-g2012", "-DQFX_SIMULATE_PRIMITIVES", "-o", f"{name}.vvp", f"{name}.v",
                            *design.sources],
                           cwd=folder, capture_output=True, text=True)
    if build.returncode != 0:
        return "iverilog: " + (build.stderr.strip().splitlines() or ["failed"])[0]
    sim = subprocess.run(["vvp", "-n", f"{name}.vvp"], cwd=folder, capture_output=True, text=True)
    lines = [line.strip() for line in sim.stdout.splitlines() if line.strip()]
    if len(lines) != vectors:
        return f"simulation printed {len(lines)} of {vectors} outputs"
    expected = inputs @ design.matrix.T
    undefined, wrong = set(), set()
    for row, line in enumerate(lines):
        # One character per bit, bit 0 last; an x/z hex digit stands for four x/z bits.
        bits = "".join(c * 4 if c in "xXzZ" else f"{int(c, 16):04b}" for c in line)[-out_width:]
        low = 0
        for o, field in enumerate(design.outputs):
            field_bits = bits[len(bits) - low - field.width:len(bits) - low]
            low += field.width
            if re.search(r"[xXzZ]", field_bits):
                undefined.add(o)
                continue
            code = int(field_bits, 2)
            if field.signed and code >> (field.width - 1):
                code -= 1 << field.width
            if code * field.scale != expected[row, o]:
                wrong.add(o)
    if undefined:
        return f"x/z bits in {len(undefined)} of {n_out} outputs"
    if wrong:
        return f"wrong values in {len(wrong)} of {n_out} outputs"
    return None


def run(sizes: list[int], timeout: float, vectors: int, keep: pathlib.Path | None) -> None:
    """Generate, check and synthesise the five designs per size; print one table row per design."""
    root = keep or pathlib.Path(tempfile.mkdtemp(prefix="bench_rtl_"))
    print(f"Yosys: read_verilog ...; {SYNTH_COMMAND} -top TOP; stat   (work folder {root})")
    print(f"Each design is first simulated (iverilog) on {vectors} random inputs against numpy's M x.")
    header = f"{'size':>5} {'design':<22} {'LUT':>7} {'CARRY4':>7} {'CARRY8':>7} {'FF':>4} {'DSP':>4} " \
             f"{'wall s':>7} {'CPU s':>7} {'LUT / da4ml':>11} {'CPU / da4ml':>11}"
    print(header)
    print("-" * len(header))
    for n in sizes:
        folder = root / f"n{n}"
        folder.mkdir(parents=True, exist_ok=True)
        matrix = random_matrix(n, seed=n)
        designs = {"(a) * on constants": multiplier_design(matrix, folder),
                   "(b) qfx shift-add": qfx_design(matrix, folder, f"qfx_{n}"),
                   "(c) qfx 2-hot": qfx_design(khot(matrix, 2), folder, f"qfx_khot_{n}"),
                   "(d) da4ml": da4ml_design(matrix, folder),
                   "(e) qfx 2-term adders": qfx_design(matrix, folder, f"qfx_two_{n}", ternary=False)}
        # A string result says why there are no numbers: the design failed its check, or Yosys timed out.
        results: dict[str, Resources | str] = {}
        cpu: dict[str, float] = {}
        for label in ["(d) da4ml", "(a) * on constants", "(b) qfx shift-add", "(c) qfx 2-hot",
                      "(e) qfx 2-term adders"]:
            design = designs[label]
            failure = check_design(design, folder, vectors, seed=n)
            if failure:
                results[label] = f"INVALID: {failure}"
                continue
            try:
                before = _child_cpu_seconds()
                results[label] = synthesize_verilog(design.sources, design.top, folder, timeout=timeout, cache=False)
                cpu[label] = _child_cpu_seconds() - before
            except TimeoutError as error:
                results[label] = f"not finished: {error}"
        reference = results["(d) da4ml"]
        for label, r in sorted(results.items()):
            if isinstance(r, str):
                print(f"{n:>5} {label:<22} {r}")
                continue
            valid = isinstance(reference, Resources)
            ratio = f"{r.lut / reference.lut:.2f}" if valid and reference.lut else "n/a"
            cpu_ratio = f"{cpu[label] / cpu['(d) da4ml']:.2f}" if valid and cpu["(d) da4ml"] else "n/a"
            print(f"{n:>5} {label:<22} {r.lut:>7} {r.carry4:>7} {r.carry8:>7} {r.ff:>4} {r.dsp:>4} "
                  f"{r.seconds:>7.1f} {cpu[label]:>7.1f} {ratio:>11} {cpu_ratio:>11}")
        sys.stdout.flush()


def _child_cpu_seconds() -> float:
    """User + system CPU seconds of this process's finished children (Yosys runs as one)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per synthesis (default 1800)")
    parser.add_argument("--vectors", type=int, default=200,
                        help="random input vectors each design is simulated on before synthesis (default 200)")
    parser.add_argument("--keep", type=pathlib.Path, default=None, help="work folder to keep the Verilog in")
    args = parser.parse_args()
    run(args.sizes, args.timeout, args.vectors, args.keep)


if __name__ == "__main__":
    main()
