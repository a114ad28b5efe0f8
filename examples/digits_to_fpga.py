"""From PyTorch to an Ultra96-V2 HLS project, checked bit for bit: the digits CNN end to end.

    python examples/digits_to_fpga.py [--out out/digits_fpga] [--io parallel|stream] [--epochs 15]
                                      [--qat-epochs 3] [--seed 0] [--force]

1. trains a small float CNN on scikit-learn's 8x8 digits (a minute on two cores);
2. quantizes it (8-bit weights and activations), calibrates, fine-tunes a
   few QAT epochs with learned binary points;
3. exports the IR graph and saves it (``digits.json`` + ``digits.npz``);
4. generates the Vitis HLS project for the Ultra96-V2 (``hls/``) with the
   test images as the testbench's golden inputs;
5. C-simulates it with g++ against the ap_types headers and checks every
   layer's codes against qfx.ir, and the outputs against PyTorch;
6. prints a summary.  Exit status 1 if any code differs.
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import sys
import time

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import qfx  # noqa: E402
import qfx.hls  # noqa: E402
from digits import DigitsCNN, accuracy, load_data, qconfig, train  # noqa: E402
from qfx.boards import load_board  # noqa: E402


def step(message: str) -> float:
    print(f"== {message}", file=sys.stderr, flush=True)
    return time.perf_counter()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("out/digits_fpga"),
                        help="output directory: the graph and the HLS project (default: out/digits_fpga)")
    parser.add_argument("--io", choices=("parallel", "stream"), default="stream",
                        help="HLS interface (default: stream)")
    parser.add_argument("--epochs", type=int, default=15, help="float training epochs (default: 15)")
    parser.add_argument("--qat-epochs", type=int, default=3, help="QAT fine-tuning epochs (default: 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, weights and batches")
    parser.add_argument("--force", action="store_true", help="replace the output of an earlier run")
    args = parser.parse_args(argv)
    out: pathlib.Path = args.out
    if out.exists() and any(out.iterdir()) and not args.force:
        print(f"error: {out} exists and is not empty; pass --force to replace it", file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    x_train, y_train, x_test, y_test = load_data(args.seed)

    start = step(f"training the float CNN ({args.epochs} epochs)")
    model = DigitsCNN(c1=8, c2=16)
    train(model, x_train, y_train, epochs=args.epochs, lr=1e-2, seed=args.seed, batch_size=64, desc="float",
          quiet=True)
    float_accuracy = accuracy(model, x_test, y_test)
    train_seconds = time.perf_counter() - start

    start = step(f"quantizing (8-bit), calibrating, QAT ({args.qat_epochs} epochs)")
    qm = qfx.quantize_model(model, qconfig(8, 8, None, learn=True), example_input=x_train[:2])
    qfx.calibrate(qm, [x_train])
    train(qm, x_train, y_train, epochs=args.qat_epochs, lr=5e-4, seed=args.seed, batch_size=64,
          desc="QAT", quiet=True)
    qm.eval()
    quant_accuracy = accuracy(qm, x_test, y_test)
    qat_seconds = time.perf_counter() - start

    start = step("exporting the IR graph")
    graph = qfx.export(qm, x_test[:2], name="digits_cnn")
    if out.exists():
        shutil.rmtree(out)  # only reached with --force
    graph_path = qfx.ir.save(graph, out / "digits.json")

    start = step("generating the Ultra96-V2 HLS project")
    board = load_board("ultra96v2")
    inputs = qfx.hls.float_inputs(graph, x_test.numpy())
    project = qfx.hls.write_project(qfx.hls.generate(graph, board, args.io, inputs), out / "hls")
    generate_seconds = time.perf_counter() - start

    step("C simulation (g++ + ap_types) against qfx.ir, layer by layer")
    report = qfx.hls.run_csim(project)

    with torch.no_grad():
        expected = qm(x_test).double().numpy()
    output = graph.output_values[0]
    golden_path = project / "tb" / "data" / f"{qfx.hls.project.safe_names(graph)[output.name]}.txt"
    golden = np.loadtxt(golden_path, dtype=np.int64, ndmin=2) * 2.0 ** -output.type.frac_bits
    pytorch_agrees = bool(np.array_equal(golden, expected))
    hls_accuracy = float((golden.argmax(1) == y_test.numpy()).mean())

    print()
    print(f"digits CNN -> Ultra96-V2 ({board.part}, {board.board_part}), io_{args.io}")
    print(f"  float accuracy           {float_accuracy:.4f}   ({train_seconds:.0f} s)")
    print(f"  8-bit QAT accuracy       {quant_accuracy:.4f}   ({qat_seconds:.0f} s)")
    print(f"  HLS csim accuracy        {hls_accuracy:.4f}   ({len(x_test)} test images)")
    print(f"  graph                    {graph_path}")
    print(f"  HLS project              {project} (generated in {generate_seconds:.1f} s)")
    print(f"  csim                     {report.summary()}")
    print(f"                           compile {report.compile_seconds:.1f} s, run {report.run_seconds:.2f} s"
          f"{' (cached binary)' if report.cached else ''}")
    print(f"  csim outputs == PyTorch  {'yes, every code' if pytorch_agrees and report.ok else 'NO'}")
    print(f"  next                     cd {project} && vitis-run --mode hls --tcl build.tcl")
    return 0 if report.ok and pytorch_agrees else 1


if __name__ == "__main__":
    sys.exit(main())
