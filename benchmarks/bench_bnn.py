"""Speed of the binarized network of ``examples/bnn.py`` in the emulator beside PyTorch eval mode.

The FracBNN-style network (thermometer input, binary 3x3 convolutions,
BatchNorm, RPReLU, residual shortcuts, pooling, a fixed-point classifier),
random latent weights, quantized with 8-bit element-wise layers and
calibrated on the digits.  Three implementations on the same batch, one
thread each, medians of ``--repeats`` interleaved rounds:

* **torch**: the quantized model, ``model.eval()(x)`` under ``no_grad``;
* **emulator**: ``qfx.emulator.emulate(graph, codes, codes=True)``, the
  binary convolutions on bit-packed words with the popcount instruction
  (the outputs are checked equal to PyTorch's);
* **integer path**: the same graph with every binary convolution replaced by
  an ordinary ``conv2d`` node on the same ``±1`` codes (2-bit operands,
  zero padding instead of ``-1``: the same work through the integer kernel,
  not the same numbers).

Each emulator round is a full process run (files in and out included).
Prints samples/s, the ratios, and the load average.  Nothing asserts on time.

    python benchmarks/bench_bnn.py [--batch 2048] [--repeats 5] [--channels 32]
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import pathlib  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))

import qfx  # noqa: E402
from bnn import FracBNN, qconfig  # noqa: E402
from digits import load_data  # noqa: E402
from qfx.emulator import emulate  # noqa: E402
from qfx.ir import Graph, input_codes  # noqa: E402


def integer_path(graph: Graph) -> Graph:
    """``graph`` with each binary convolution as an ordinary ``conv2d`` on the same codes (zero padding)."""
    nodes = []
    for node in graph.nodes:
        if node.op == "binary_conv2d":
            attrs = {k: v for k, v in node.attrs.items() if k != "pad_value"}
            node = dataclasses.replace(node, op="conv2d", attrs=attrs)
        nodes.append(node)
    return Graph(graph.name + "_integer", graph.inputs, nodes, graph.outputs).check()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--channels", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x_tr, _, x_te, _ = load_data(0)
    x = torch.cat([x_te] * (args.batch // len(x_te) + 1))[:args.batch]
    model = qfx.quantize_model(FracBNN(args.channels), qconfig(8, None, learn=False), x[:2])
    qfx.calibrate(model, [x_tr])
    model.eval()
    graph = qfx.export(model, x[:2])
    codes = input_codes(x.numpy(), graph.inputs[0].type)
    integer = integer_path(graph)

    with torch.no_grad():
        expected = model(x).double().numpy()
    emulated = emulate(graph, x.numpy(), threads=1)  # also compiles both programs before timing
    emulate(integer, codes, codes=True, threads=1)
    assert np.array_equal(emulated, expected), "the emulator differs from PyTorch"

    def run_torch() -> None:
        with torch.no_grad():
            model(x)

    runs = {"torch eval": run_torch,
            "emulator (bit-packed)": lambda: emulate(graph, codes, codes=True, threads=1),
            "emulator, integer path": lambda: emulate(integer, codes, codes=True, threads=1)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    load = os.getloadavg()
    median = {name: statistics.median(t) for name, t in times.items()}
    print(f"FracBNN-style network, {args.channels} channels, batch {args.batch}, one thread, "
          f"median of {args.repeats}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for name, seconds in median.items():
        print(f"  {name:<24} {args.batch / seconds:>10,.0f} samples/s   {seconds * 1e3:8.1f} ms   "
              f"x{median['torch eval'] / seconds:5.2f} vs torch")
    print(f"  bit-packed emulator vs integer path: x{median['emulator, integer path'] / median['emulator (bit-packed)']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
