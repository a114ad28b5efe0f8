"""The embedded default demo: a small CNN on scikit-learn's 8x8 digits, float -> PTQ -> QAT, bit-exact.

Runs offline on a laptop CPU in a few minutes (the data ships inside scikit-learn):

    python examples/digits.py [--out out/digits] [--seed 0] [--epochs 30] [--qat-epochs 10] [--quick] [--force]

What it does:

1. trains a float CNN (conv-BN-ReLU, max pool, conv-BN-ReLU, average pool,
   linear) on a fixed, stratified 80/20 train/test split, of which 15% of
   the training images are held out as a validation split (the test
   images are never used to choose anything);
2. for each configuration (weight bits, activation/element-wise bits) in
   (8,8), (6,6), (4,6) and K-hot (k=2) weights and BatchNorm scales at (8,8):

   * PTQ: ``qfx.quantize_model`` + ``qfx.calibrate`` (nothing else);
   * QAT: ``quantize_model(learn_int_bits=True)`` loaded with the calibrated
     PTQ model's state (so it starts exactly where PTQ ends), then a few
     epochs of fine-tuning in which the weights (at a small learning rate)
     *and* every binary point (weights, biases, BN scale/shift,
     activations, pooling) are learned.  After every epoch the model is
     scored on the validation split in eval mode (bit-exact) and the best
     epoch is kept, but only if it classifies more validation images
     correctly than the PTQ start and has a lower validation loss:
     otherwise QAT keeps the PTQ weights and formats (the "QAT epoch"
     column then shows 0);

   every op is quantized: input, conv, BatchNorm (as a per-channel
   multiply-add), ReLU, max and average pooling, linear;
3. evaluates all models in ``eval()`` mode, the bit-exact ``ap_fixed`` mode,
   and checks that every output is an exact value of the output format;
4. prints a table and ``qfx.summary`` of the (8,8) QAT model, and writes
   ``metrics.json`` and ``digits.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault("MPLBACKEND", "Agg")

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

import qfx

try:
    from tqdm.auto import tqdm
except ImportError:  # optional
    tqdm = None

#: (name, weight bits, activation/element-wise bits, multiplier_free)
CONFIGS = [
    ("w8a8", 8, 8, None),
    ("w6a6", 6, 6, None),
    ("w4a6", 4, 6, None),
    ("khot2-w8a8", 8, 8, "khot:2"),
]

# QAT fine-tunes a trained, calibrated model: weights move little (a twentieth of
# the float learning rate), binary points faster (they move in whole bits).
QAT_EPOCHS = 10
QAT_LR = 5e-4


# ----------------------------------------------------------------------------- data and model
def load_data(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stratified 80/20 split of the 1,797 digits, images as float32 (N, 1, 8, 8) in [0, 1]."""
    digits = load_digits()
    x = torch.from_numpy(digits.images).float().unsqueeze(1) / 16.0
    y = torch.from_numpy(digits.target).long()
    idx = torch.arange(len(y)).numpy()
    train_idx, test_idx = train_test_split(idx, test_size=0.2, stratify=digits.target, random_state=seed)
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx]


def split_validation(x: torch.Tensor, y: torch.Tensor, seed: int,
                     fraction: float = 0.15) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hold out a stratified ``fraction`` of the training images for model selection: (fit x, y, val x, y)."""
    idx = torch.arange(len(y)).numpy()
    fit_idx, val_idx = train_test_split(idx, test_size=fraction, stratify=y.numpy(), random_state=seed)
    return x[fit_idx], y[fit_idx], x[val_idx], y[val_idx]


class DigitsCNN(nn.Module):
    """conv(1->16)-BN-ReLU, maxpool 2 (8x8 -> 4x4), conv(16->32)-BN-ReLU, avgpool 2 (-> 2x2), linear(128->10)."""

    def __init__(self, c1: int = 16, c2: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c2)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.AvgPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c2 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.bn1(self.conv1(x))))
        x = self.pool2(self.relu2(self.bn2(self.conv2(x))))
        return self.fc(self.flatten(x))


# ----------------------------------------------------------------------------- training and evaluation
def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator):
    perm = torch.randperm(len(y), generator=generator)
    for i in range(0, len(y), batch_size):
        j = perm[i:i + batch_size]
        yield x[j], y[j]


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float, seed: int,
          batch_size: int, desc: str, quiet: bool,
          validation: tuple[torch.Tensor, torch.Tensor] | None = None) -> int:
    """Adam with cosine decay over ``model.parameters()``, learned binary points included (see qfx.nn.quantizers).

    With ``validation=(x, y)`` the model is scored (eval mode) before training
    and after every epoch.  The best epoch (accuracy, then lower loss; ties
    keep the earlier one) replaces the starting state only if it both
    classifies more validation images correctly and has the lower
    validation loss: on a small validation split one image is noise, and
    the two criteria together ask for a change that shows in both.
    Returns the epoch of the state kept, 0 for the starting state (always
    0 without ``validation``).
    """
    if epochs <= 0:
        return 0
    best_epoch, best_score, best_state = 0, None, None
    if validation is not None:
        start_score, start_state = validation_score(model, *validation), copy.deepcopy(model.state_dict())
    opt = torch.optim.Adam(model.parameters(), lr=lr)  # binary points included: one optimizer, one lr
    steps = epochs * ((len(y) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    epoch_iter = range(epochs)
    bar = None
    if tqdm is not None and not quiet:
        bar = tqdm(epoch_iter, desc=desc, leave=False, file=sys.stderr)
        epoch_iter = bar
    for epoch in epoch_iter:
        model.train()
        for xb, yb in batches(x, y, batch_size, gen):
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            sched.step()
        if bar is not None:
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if validation is not None:
            score = validation_score(model, *validation)
            if best_score is None or score > best_score:
                best_epoch, best_score, best_state = epoch + 1, score, copy.deepcopy(model.state_dict())
    if validation is not None:
        if not (best_score[0] > start_score[0] and best_score[1] > start_score[1]):  # keep the start
            best_epoch, best_state = 0, start_state
        model.load_state_dict(best_state)
    model.train()
    return best_epoch


@torch.no_grad()
def validation_score(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(accuracy, -cross-entropy) in eval mode: larger is better, compared as a tuple."""
    was_training = model.training
    model.eval()
    out = model(x)
    score = ((out.argmax(1) == y).float().mean().item(), -nn.functional.cross_entropy(out.float(), y).item())
    model.train(was_training)
    return score


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return (model(x).argmax(1) == y).float().mean().item()


def output_format(qmodel: nn.Module) -> qfx.FixedType:
    """The output format of the last quantized layer (the fc layer)."""
    return qmodel.fc.output_quantizer.fixed_type


@torch.no_grad()
def exact_output_check(qmodel: nn.Module, x: torch.Tensor) -> dict:
    """Eval outputs are exact values of the output format: ``qfx.quantize(y, fmt) == y`` everywhere."""
    qmodel.eval()
    out = qmodel(x)
    fmt = output_format(qmodel)
    requantized = qfx.quantize(out.double(), fmt)
    codes = qfx.to_codes(out.double(), fmt)
    ok = bool(torch.equal(requantized, out.double())) and bool(torch.equal(qfx.from_codes(codes, fmt), out.double()))
    return {"format": str(fmt), "exact": ok, "dtype": str(out.dtype).replace("torch.", ""),
            "n_values": out.numel()}


def int_bits_by_quantizer(qmodel: nn.Module) -> dict[str, float]:
    """Mean effective integer bits of every quantizer, by ``layer.tensor`` (per-channel ones averaged)."""
    result = {}
    for name, layer in qmodel.named_modules():
        if isinstance(layer, qfx.nn.QuantizedLayer):
            for tensor, q in layer.quantizers().items():
                try:
                    result[f"{name}.{tensor}"] = float(q.effective_int_bits().float().mean())
                except RuntimeError:
                    pass
    return result


def qconfig(w: int, a: int, multiplier_free, learn: bool) -> qfx.QConfig:
    """Weights ``w`` bits; activations, input and BatchNorm scale/shift (element-wise) ``a`` bits."""
    return qfx.QConfig(weight=w, activation=a, input=a, scale=a, shift=a, bias=16,
                       multiplier_free=multiplier_free, learn_int_bits=learn)


# ----------------------------------------------------------------------------- output
def prepare_out(out: pathlib.Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise SystemExit(f"error: --out {out} exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not force:
        raise SystemExit(f"error: output directory {out} exists and is not empty; use --force to overwrite")
    out.mkdir(parents=True, exist_ok=True)


def atomic_write(path: pathlib.Path, write) -> None:
    """Write through a temporary file in the same directory, then ``os.replace`` it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def plot(path: pathlib.Path, metrics: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    bits = metrics["int_bits_w8a8"]
    names = list(bits["qat"])
    pos = range(len(names))
    ax1.bar([p - 0.2 for p in pos], [bits["calibrated"][n] for n in names], 0.4, label="calibrated (PTQ start)")
    ax1.bar([p + 0.2 for p in pos], [bits["qat"][n] for n in names], 0.4, label="learned (QAT)")
    ax1.set_xticks(list(pos))
    ax1.set_xticklabels(names, rotation=70, ha="right", fontsize=7)
    ax1.set_ylabel("integer bits (mean over channels)")
    ax1.set_title("w8a8: binary points per layer tensor")
    ax1.axhline(0, color="k", lw=0.5)
    ax1.legend(fontsize=8)

    rows = metrics["results"]
    x = range(len(rows))
    ax2.plot(x, [100 * metrics["float_acc"]] * len(rows), "k--", label="float")
    ax2.plot(x, [100 * r["ptq_acc"] for r in rows], "o-", label="PTQ")
    ax2.plot(x, [100 * r["qat_acc"] for r in rows], "s-", label="QAT")
    ax2.set_xticks(list(x))
    ax2.set_xticklabels([f"{r['config']}\n{r['bit_cost'] / 1e6:.2f}M bit-ops" for r in rows], fontsize=8)
    ax2.set_ylabel("test accuracy (%)")
    ax2.set_title("accuracy vs bits (eval mode, bit-exact)")
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/digits", help="output directory (default out/digits)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=30, help="float training epochs")
    parser.add_argument("--qat-epochs", type=int, default=QAT_EPOCHS, help="QAT fine-tuning epochs per configuration")
    parser.add_argument("--quick", action="store_true", help="fast smoke run (few epochs, small model)")
    parser.add_argument("--force", action="store_true", help="write into a non-empty output directory")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.qat_epochs = min(args.epochs, 3), min(args.qat_epochs, 1)
    out = pathlib.Path(args.out)
    prepare_out(out, args.force)

    start = time.perf_counter()
    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    x_tr, y_tr, x_te, y_te = load_data(args.seed)
    if args.quick:  # smoke run: a quarter of the training images
        x_tr, y_tr = x_tr[: len(y_tr) // 4], y_tr[: len(y_tr) // 4]
    x_tr, y_tr, x_val, y_val = split_validation(x_tr, y_tr, args.seed)
    example = x_te[:2]
    print(f"digits: {len(y_tr)} train / {len(y_val)} validation / {len(y_te)} test images, 8x8; seed {args.seed}; "
          f"float {args.epochs} epochs, QAT {args.qat_epochs} epochs")

    model = DigitsCNN(8, 16) if args.quick else DigitsCNN()
    train(model, x_tr, y_tr, epochs=args.epochs, lr=1e-2, seed=args.seed, batch_size=128, desc="float",
          quiet=args.no_progress)
    float_acc = accuracy(model, x_te, y_te)
    print(f"float test accuracy: {100 * float_acc:.2f}%")

    results, checks, int_bits_w8a8, summary_text = [], {}, {}, None
    for name, w, a, mf in CONFIGS:
        # PTQ: convert + calibrate, nothing else
        ptq = qfx.quantize_model(model, qconfig(w, a, mf, learn=False), example)
        qfx.calibrate(ptq, [x_tr])
        ptq_acc = accuracy(ptq, x_te, y_te)

        # QAT: learned binary points, starting from the calibrated PTQ model's state, fine-tuned with
        # the best state on the validation split kept (the PTQ start included)
        qat = qfx.quantize_model(model, qconfig(w, a, mf, learn=True), example)
        qat.load_state_dict(ptq.state_dict())
        start_bits = int_bits_by_quantizer(qat)
        torch.manual_seed(args.seed)
        best_epoch = train(qat, x_tr, y_tr, epochs=args.qat_epochs, lr=QAT_LR,
                           seed=args.seed + 1, batch_size=64, desc=f"QAT {name}", quiet=args.no_progress,
                           validation=(x_val, y_val))
        qat_acc = accuracy(qat, x_te, y_te)
        cost = float(qfx.bit_cost(qat, example).detach())

        checks[f"{name}/ptq"] = exact_output_check(ptq, x_te)
        checks[f"{name}/qat"] = exact_output_check(qat, x_te)
        results.append({"config": name, "weight_bits": w, "activation_bits": a, "multiplier_free": mf,
                        "float_acc": float_acc, "ptq_acc": ptq_acc, "qat_acc": qat_acc, "bit_cost": cost,
                        "qat_best_epoch": best_epoch, "ptq_val_acc": validation_score(ptq, x_val, y_val)[0],
                        "qat_val_acc": validation_score(qat, x_val, y_val)[0],
                        "output_format": checks[f"{name}/qat"]["format"]})
        if name == "w8a8":
            int_bits_w8a8 = {"calibrated": start_bits, "qat": int_bits_by_quantizer(qat)}
            summary_text = qfx.summary(qat, example, print_fn=None)

    print()
    header = (f"{'config':<12} {'float acc':>9} {'PTQ acc':>8} {'QAT acc':>8} {'QAT epoch':>9} "
              f"{'bit cost (bit-ops)':>19}")
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r['config']:<12} {100 * r['float_acc']:8.2f}% {100 * r['ptq_acc']:7.2f}% "
              f"{100 * r['qat_acc']:7.2f}% {r['qat_best_epoch']:9d} {r['bit_cost']:19,.0f}")

    print("\nbit-exact check, eval mode: qfx.quantize(y, fmt) == y for every test output")
    all_exact = True
    for key, c in checks.items():
        all_exact &= c["exact"]
        print(f"  {key:<18} {c['format']:<34} {c['dtype']:<8} {c['n_values']:>6} values  "
              f"{'exact' if c['exact'] else 'NOT EXACT'}")

    print("\nqfx.summary of the w8a8 QAT model:")
    print(summary_text)

    by = {r["config"]: r for r in results}
    targets = {
        "qat_w8a8_ge_97": by["w8a8"]["qat_acc"] >= 0.97,
        "qat_ge_ptq_everywhere": all(r["qat_acc"] >= r["ptq_acc"] for r in results),
        "khot_qat_within_2pt_of_float": by["khot2-w8a8"]["qat_acc"] >= float_acc - 0.02,
        "eval_outputs_exact": all_exact,
    }
    elapsed = time.perf_counter() - start
    print("\ntargets:" + "".join(f"\n  {k:<30} {'ok' if v else 'MISSED'}" for k, v in targets.items()))
    print(f"\nruntime {elapsed:.1f} s; wrote {out / 'metrics.json'} and {out / 'digits.png'}")

    metrics = {"seed": args.seed, "epochs": args.epochs, "qat_epochs": args.qat_epochs, "quick": args.quick,
               "n_train": len(y_tr), "n_val": len(y_val), "n_test": len(y_te), "float_acc": float_acc,
               "results": results,
               "exact_output_checks": checks, "int_bits_w8a8": int_bits_w8a8, "targets": targets,
               "runtime_s": elapsed, "torch": torch.__version__, "qfx": qfx.__version__}

    def write_json(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(metrics, f, indent=2)
            f.write("\n")

    atomic_write(out / "metrics.json", write_json)
    plot(out / "digits.png", metrics)
    return 0 if all_exact else 1


if __name__ == "__main__":
    sys.exit(main())
