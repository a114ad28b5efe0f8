"""HLS C simulation of the digits CNN: qfx beside hls4ml 1.x, time and agreement with PyTorch.

For the same float architecture (examples/digits.py's ``DigitsCNN``, 8 and
16 channels), trained briefly on the 8x8 digits:

* **qfx**: quantize (8-bit weights and activations), calibrate, export,
  ``qfx.hls.generate`` (io_parallel, Ultra96-V2), write, compile the
  firmware and testbench with g++ (empty compile cache), run the testbench
  on every image; the testbench compares every layer with qfx.ir, and the
  outputs are compared with the quantized PyTorch model ``qm(x)``.
* **hls4ml**: ``config_from_pytorch_model`` at ``ap_fixed<16,6>`` for every
  tensor, ``convert_from_pytorch_model`` (Vitis backend, io_parallel),
  ``compile()`` (its g++ build of the C++ model), ``predict()`` on every
  image; outputs compared with the float PyTorch model it was converted
  from (hls4ml has no notion of a quantized PyTorch twin).

qfx's "generate" includes computing every tensor's golden codes with
qfx.ir and writing the project; hls4ml writes its project inside
``compile()``.  qfx's csim reads and compares every layer's codes (the
per-layer trace), hls4ml's predict only returns outputs.

"agrees exactly" counts output values equal to PyTorch's bit for bit;
"max |error|" is the largest difference, "argmax" the share of images whose
class agrees.  Times are wall-clock seconds on this machine, one run each;
progress goes to stderr, the table to stdout.  Nothing asserts on time.

    python benchmarks/bench_hls.py [--epochs 10] [--out out/bench_hls]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import sys
import tempfile
import time
import warnings

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))

import qfx  # noqa: E402
import qfx.hls  # noqa: E402
from digits import DigitsCNN, load_data, qconfig, train  # noqa: E402
from qfx.boards import load_board  # noqa: E402


def log(message: str) -> None:
    print(f"== {message}", file=sys.stderr, flush=True)


def agreement(got: np.ndarray, want: np.ndarray) -> dict[str, float]:
    """Exact-equality share, largest error and argmax agreement of ``got`` against ``want``."""
    got, want = np.asarray(got, np.float64).reshape(want.shape), np.asarray(want, np.float64)
    return {"exact": float((got == want).mean()), "max_error": float(np.abs(got - want).max()),
            "argmax": float((got.argmax(1) == want.argmax(1)).mean())}


def bench_qfx(model: torch.nn.Module, x_train: torch.Tensor, x: torch.Tensor, out: pathlib.Path) -> dict:
    qm = qfx.quantize_model(model, qconfig(8, 8, None, learn=False), example_input=x_train[:2])
    qfx.calibrate(qm, [x_train])
    qm.eval()
    graph = qfx.export(qm, x[:2], name="digits_cnn")
    start = time.perf_counter()
    files = qfx.hls.generate(graph, load_board("ultra96v2"), "parallel", qfx.hls.float_inputs(graph, x.numpy()))
    project = qfx.hls.write_project(files, out / "qfx", force=True)
    generate_seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as cache:
        os.environ["QFX_CACHE_DIR"] = cache
        report = qfx.hls.run_csim(project)
    names = qfx.hls.project.safe_names(graph)
    output = graph.output_values[0]
    golden = np.loadtxt(project / "tb" / "data" / f"{names[output.name]}.txt", dtype=np.int64, ndmin=2)
    with torch.no_grad():
        want = qm(x).double().numpy()
    # The testbench compared the C++ outputs with these codes: equal to PyTorch means the C++ is too.
    result = agreement(golden * 2.0 ** -output.type.frac_bits if report.ok else np.full_like(want, np.nan), want)
    return {"generate": generate_seconds, "compile": report.compile_seconds, "run": report.run_seconds,
            "samples": report.samples, "mismatches": report.mismatches, **result}


def bench_hls4ml(model: torch.nn.Module, x: torch.Tensor, out: pathlib.Path) -> dict:
    import hls4ml
    start = time.perf_counter()
    config = hls4ml.utils.config_from_pytorch_model(model, (1, 8, 8), granularity="model",
                                                    default_precision="ap_fixed<16,6>", backend="Vitis")
    hls_model = hls4ml.converters.convert_from_pytorch_model(model, hls_config=config, backend="Vitis",
                                                             io_type="io_parallel", output_dir=str(out / "hls4ml"))
    convert_seconds = time.perf_counter() - start
    start = time.perf_counter()
    hls_model.compile()
    compile_seconds = time.perf_counter() - start
    # hls4ml converts PyTorch models to channels-last internally and takes channels-last inputs.
    data = np.ascontiguousarray(x.numpy().transpose(0, 2, 3, 1))
    start = time.perf_counter()
    got = hls_model.predict(data)
    run_seconds = time.perf_counter() - start
    with torch.no_grad():
        want = model(x).double().numpy()
    return {"generate": convert_seconds, "compile": compile_seconds, "run": run_seconds, "samples": len(x),
            "mismatches": None, **agreement(got, want)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10, help="float training epochs (default: 10)")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "out" / "bench_hls",
                        help="working directory for both projects (replaced)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    x_train, y_train, x_test, y_test = load_data(0)
    x = torch.cat([x_train, x_test])  # all 1,797 images
    log(f"training the float DigitsCNN(8, 16) for {args.epochs} epochs")
    model = DigitsCNN(c1=8, c2=16)
    train(model, x_train, y_train, epochs=args.epochs, lr=1e-2, seed=0, batch_size=64, desc="float", quiet=True)
    model.eval()
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    log("qfx: generate, compile, csim")
    ours = bench_qfx(model, x_train, x, args.out)
    log("hls4ml: convert, compile, predict")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = bench_hls4ml(model, x, args.out)

    rows = [("generate / convert (s)", "generate", "{:.2f}"), ("compile (s)", "compile", "{:.1f}"),
            ("csim / predict (s)", "run", "{:.2f}"), ("samples", "samples", "{}")]
    print(f"\nDigits CNN (conv 8 - BN - ReLU - maxpool - conv 16 - BN - ReLU - avgpool - linear 10), "
          f"{len(x)} images, io_parallel, g++\n")
    print(f"| {'':32} | {'qfx (8-bit, calibrated)':>24} | {'hls4ml 1.x ap_fixed<16,6>':>26} | {'qfx / hls4ml':>12} |")
    print(f"|{'-' * 34}|{'-' * 26}:|{'-' * 28}:|{'-' * 14}:|")
    for label, key, fmt in rows:
        ratio = f"{ours[key] / theirs[key]:.2f}x" if key != "samples" and theirs[key] else ""
        print(f"| {label:32} | {fmt.format(ours[key]):>24} | {fmt.format(theirs[key]):>26} | {ratio:>12} |")
    total_ours = ours["generate"] + ours["compile"] + ours["run"]
    total_theirs = theirs["generate"] + theirs["compile"] + theirs["run"]
    print(f"| {'total (s)':32} | {total_ours:>24.1f} | {total_theirs:>26.1f} | "
          f"{total_ours / total_theirs:>11.2f}x |")
    speed_ours, speed_theirs = ours["samples"] / ours["run"], theirs["samples"] / theirs["run"]
    print(f"| {'csim samples/s':32} | {speed_ours:>24,.0f} | {speed_theirs:>26,.0f} | "
          f"{speed_ours / speed_theirs:>11.2f}x |")
    print(f"| {'outputs equal to PyTorch':32} | {ours['exact']:>24.2%} | {theirs['exact']:>26.2%} | {'':>12} |")
    print(f"| {'max |error| vs PyTorch':32} | {ours['max_error']:>24.3g} | {theirs['max_error']:>26.3g} | "
          f"{'':>12} |")
    print(f"| {'argmax agrees with PyTorch':32} | {ours['argmax']:>24.2%} | {theirs['argmax']:>26.2%} | "
          f"{'':>12} |")
    print(f"\nqfx compares against its quantized PyTorch model qm(x) (the model that runs on the FPGA); "
          f"hls4ml against the float model it converts.\nqfx testbench: {ours['mismatches']} mismatching codes "
          f"over every layer of {ours['samples']} images.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
