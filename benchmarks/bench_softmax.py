"""Softmax and sigmoid in fixed point: qfx's lookup tables beside hls4ml's, on the same trained model and inputs.

The model is ``Linear(64, 32) - Sigmoid - Linear(32, 10) - Softmax``,
trained in float on scikit-learn's 8x8 digits (images flattened, 80/20
stratified split).  The test images go through

* PyTorch float (the reference);
* qfx: ``quantize_model`` with 16-bit weights, biases and activations,
  calibrated on the training images (PTQ); the sigmoid is an exact lookup
  table (``QTable``), the softmax ``QSoftmax`` (max subtraction, exp table,
  sum, reciprocal table); the outputs are PyTorch eval's, which equal
  ``qfx.ir.run`` (checked here) and every qfx back end;
* hls4ml (PyPI ``hls4ml``, Vivado back end, ``io_parallel``) with its
  default configuration for ``ap_fixed<16,6>``, once with one precision for
  the model (``granularity="model"``) and once with per-layer precisions
  (``granularity="name"``: ``auto`` result types); hls4ml's own C++
  (``nnet_activation.h``: its sigmoid table and its "stable" softmax with
  exp and inverse tables) compiled with g++ against the ``ap_types`` headers
  it ships (``hls_model.compile()``, no Vivado needed) and run through
  ``predict``.

Printed per implementation: top-1 agreement with PyTorch float, test
accuracy, the largest and the mean absolute error of the probabilities.
Then the two functions alone, each on one set of inputs fed to both:
sigmoid on 2,001 points in [-10, 10] (inputs on the ``ap_fixed<16,6>``
grid), softmax on the float model's test-set logits (as ``ap_fixed<16,6>``
codes), the error against float64.  Usage::

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_softmax.py [--epochs 200] [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import pathlib
import sys
import tempfile
import time

import numpy as np
import torch
from torch import nn

INPUT_TYPE = "ap_fixed<16,6>"


def digits(seed: int = 0):
    """Flattened digits in [0, 1]: (train x, train y, test x, test y), float32 and int64."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    data = load_digits()
    x = (data.images.reshape(len(data.images), -1) / 16.0).astype(np.float32)
    train, test = train_test_split(np.arange(len(x)), test_size=0.2, stratify=data.target, random_state=seed)
    return x[train], data.target[train], x[test], data.target[test]


def trained_model(x: np.ndarray, y: np.ndarray, epochs: int, seed: int = 0) -> nn.Sequential:
    """The float model, trained full-batch with Adam on the logits (cross entropy); softmax is its last layer."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 32), nn.Sigmoid(), nn.Linear(32, 10), nn.Softmax(dim=1))
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        opt.zero_grad()
        nn.functional.cross_entropy(model[:3](xt), yt).backward()
        opt.step()
    return model.eval()


def qfx_outputs(model: nn.Module, x_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """qfx PTQ at 16 bits: PyTorch eval's probabilities, checked equal to ``qfx.ir.run``."""
    import qfx
    xt = torch.from_numpy(x_train)
    qm = qfx.quantize_model(model, qfx.QConfig(weight=16, bias=16, activation=16), example_input=xt)
    qfx.calibrate(qm, [xt])
    qm.eval()
    with torch.no_grad():
        y = qm(torch.from_numpy(x_test)).double().numpy()
    graph = qfx.export(qm, xt[:1])
    assert np.array_equal(qfx.ir.run(graph, x_test), y), "qfx.ir.run differs from PyTorch eval"
    return y


def hls4ml_model(model: nn.Module, shape: tuple[int, ...], granularity: str, folder: pathlib.Path):
    """hls4ml's model of ``model`` with its default configuration for ``ap_fixed<16,6>``, compiled (g++)."""
    import hls4ml
    with contextlib.redirect_stdout(io.StringIO()):  # its progress messages
        config = hls4ml.utils.config_from_pytorch_model(model, input_shape=shape, granularity=granularity,
                                                        default_precision=INPUT_TYPE, backend="Vivado")
        hm = hls4ml.converters.convert_from_pytorch_model(model, hls_config=config, output_dir=str(folder),
                                                          backend="Vivado", io_type="io_parallel")
        hm.compile()
    return hm


def on_grid(v: np.ndarray) -> np.ndarray:
    """``v`` rounded to the ``ap_fixed<16,6>`` grid (10 fractional bits) and range: both sides read it exactly."""
    return np.clip(np.round(v * 1024) / 1024, -32, 32 - 1 / 1024).astype(np.float32)


def errors(p: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """The largest and the mean absolute difference."""
    d = np.abs(np.asarray(p, np.float64).reshape(reference.shape) - reference)
    return float(d.max()), float(d.mean())


def row(name: str, p: np.ndarray, reference: np.ndarray, y: np.ndarray) -> str:
    """One table row: top-1 agreement with the reference, accuracy, errors."""
    p = np.asarray(p, np.float64).reshape(reference.shape)
    agree = 100 * float((p.argmax(1) == reference.argmax(1)).mean())
    accuracy = 100 * float((p.argmax(1) == y).mean())
    worst, mean = errors(p, reference)
    return f"{name:<44} {agree:>11.1f} {accuracy:>9.1f} {worst:>10.4f} {mean:>10.5f}"


def alone(folder: pathlib.Path, logits: np.ndarray) -> None:
    """Sigmoid and softmax alone: qfx's layer and hls4ml's, on the same inputs, against float64."""
    import qfx
    from qfx.nn import LayerQConfig, QInput

    def qfx_layer(float_layer: nn.Module, x: np.ndarray) -> np.ndarray:
        model = nn.Sequential(QInput(LayerQConfig(output=qfx.FixedType(16, 6))), float_layer)
        qm = qfx.quantize_model(model, qfx.QConfig(activation=16), example_input=torch.from_numpy(x))
        qfx.calibrate(qm, [torch.from_numpy(x)])
        with torch.no_grad():
            return qm.eval()(torch.from_numpy(x)).double().numpy()

    grid = on_grid(np.linspace(-10, 10, 2001, dtype=np.float64)).reshape(-1, 1)
    sig_ref = 1 / (1 + np.exp(-grid.astype(np.float64)))
    z = on_grid(logits)
    soft_ref = np.exp(z - z.max(1, keepdims=True)) / np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)
    print()
    print("each function alone, the same inputs to both (ap_fixed<16,6> grid), error against float64:")
    header = f"{'function':<44} {'max |err|':>10} {'mean |err|':>10}"
    print(header)
    print("-" * len(header))
    cases = [("sigmoid, 2,001 points in [-10, 10]", nn.Sigmoid(), grid, sig_ref),
             ("softmax, the test-set logits", nn.Softmax(dim=1), z, soft_ref)]
    for label, layer, x, reference in cases:
        q = qfx_layer(layer, x)
        hm = hls4ml_model(nn.Sequential(layer), x.shape[1:], "model", folder / label.split(",")[0])
        h = hm.predict(np.ascontiguousarray(x))
        for name, p in ((f"qfx      {label}", q), (f"hls4ml   {label}", h)):
            worst, mean = errors(p, reference)
            print(f"{name:<44} {worst:>10.4f} {mean:>10.5f}")
        sys.stdout.flush()


def run(epochs: int, keep: pathlib.Path | None) -> None:
    """Train, run every implementation on the test images, print both tables."""
    root = keep or pathlib.Path(tempfile.mkdtemp(prefix="bench_softmax_"))
    start = time.perf_counter()
    x_train, y_train, x_test, y_test = digits()
    model = trained_model(x_train, y_train, epochs)
    with torch.no_grad():
        reference = model(torch.from_numpy(x_test)).double().numpy()
        logits = model[:3](torch.from_numpy(x_test)).numpy()
    print(f"digits: {len(x_train)} train / {len(x_test)} test images; model Linear(64, 32) - Sigmoid - "
          f"Linear(32, 10) - Softmax trained {epochs} epochs in float; work folder {root}")
    print("hls4ml: its own C++ (nnet_activation.h) compiled with g++ against the ap_types it ships "
          "(hls_model.compile(); no Vivado), run through predict")
    print(f"load average at start {os.getloadavg()[0]:.2f}")
    header = f"{'implementation':<44} {'top-1 = fp %':>11} {'acc %':>9} {'max |err|':>10} {'mean |err|':>10}"
    print(header)
    print("-" * len(header))
    print(row("PyTorch float", reference, reference, y_test))
    print(row("qfx 16-bit PTQ (table sigmoid, QSoftmax)", qfx_outputs(model, x_train, x_test), reference, y_test))
    sys.stdout.flush()
    for granularity in ("model", "name"):
        hm = hls4ml_model(model, (64,), granularity, root / f"hls4ml_{granularity}")
        print(row(f"hls4ml {INPUT_TYPE}, granularity={granularity!r}", hm.predict(x_test), reference, y_test))
        sys.stdout.flush()
    alone(root, logits)
    print(f"\nload average at end {os.getloadavg()[0]:.2f}; {time.perf_counter() - start:.0f} s")


def main() -> None:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200, help="float training epochs, full batch (default 200)")
    parser.add_argument("--keep", type=pathlib.Path, default=None, help="work folder for hls4ml's projects")
    args = parser.parse_args()
    run(args.epochs, args.keep)


if __name__ == "__main__":
    main()
