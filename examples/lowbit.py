"""Accuracy against bit-operations at low word lengths: float, PTQ (min/max and least error), QAT.

Two real data sets shipped with scikit-learn (nothing is downloaded): the
8x8 handwritten digits (a small residual CNN with BatchNorm) and the
Wisconsin breast-cancer measurements (an MLP with BatchNorm).  For each
data set a float model is trained, then every configuration below is

* **PTQ min/max**: ``qfx.calibrate(observer=MinMaxObserver, constant_observer=MinMaxObserver)``;
* **PTQ**: ``qfx.calibrate`` with its default (least squared cast error);
* **QAT**: ``quantize_model(learn_int_bits=True)`` started from the PTQ
  model and trained as the README shows: one ``AdamW`` over
  ``model.parameters()`` at ``lr = 1e-3``, weight decay ``1e-2``; the
  epoch kept is the best on a validation split (the PTQ start included).

Configurations: ``w8a8``, ``w6a6``, ``w4a4`` (weights / activations, the
input included; BatchNorm scale and shift at 8 bits), ``w4/ew4`` and
``w8/ew4`` (4-bit element-wise layers: BatchNorm scale and shift, adds and
activations), ``w8a8 khot2`` (weights and BatchNorm scales with at most two
nonzero signed digits: products become one add).  Every quantized model's
eval output is checked against the IR interpreter, bit for bit.

Prints one table per data set (accuracy in %, bit-operations per inference
from ``qfx.bit_cost``) and plots accuracy against bit-operations
(``--plot lowbit.png``).  ``--quick`` runs tiny settings (the smoke test).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys

import numpy as np
import torch
from torch import nn

import qfx

CONFIGS = {  # name: QConfig fields
    "w8a8": dict(weight=8, activation=8),
    "w6a6": dict(weight=6, activation=6),
    "w4a4": dict(weight=4, activation=4),
    "w4/ew4": dict(weight=4, activation=4, scale=4, shift=4),
    "w8/ew4": dict(weight=8, activation=4, scale=4, shift=4),
    "w8a8 khot2": dict(weight=8, activation=8, multiplier_free="khot:2"),
}
QAT_LR, QAT_WEIGHT_DECAY = 1e-3, 1e-2  # the README's recipe


class DigitsNet(nn.Module):
    """conv-BN-ReLU, a residual conv-BN block, global average pooling, a linear classifier."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, channels, 3, padding=1), nn.BatchNorm2d(channels)
        self.conv2, self.bn2 = nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels)
        self.pool = nn.MaxPool2d(2)
        self.conv3, self.bn3 = nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.BatchNorm2d(2 * channels)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * channels, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)) + x)
        x = torch.relu(self.bn3(self.conv3(self.pool(x))))
        return self.fc(torch.flatten(self.gap(x), 1))


def cancer_net() -> nn.Module:
    return nn.Sequential(nn.Linear(30, 32), nn.BatchNorm1d(32), nn.ReLU(),
                         nn.Linear(32, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2))


def load(name: str, seed: int):
    """Standardized features, split 60/20/20 (train/validation/test), stratified by a fixed permutation."""
    from sklearn import datasets
    if name == "digits":
        data = datasets.load_digits()
        x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
        x = (x - x.mean()) / x.std()
    else:
        data = datasets.load_breast_cancer()
        x = torch.tensor(data.data, dtype=torch.float32)
        x = (x - x.mean(0)) / x.std(0)
    y = torch.tensor(data.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    x, y = x[perm], y[perm]
    a, b = int(0.6 * len(y)), int(0.8 * len(y))
    return (x[:a], y[:a]), (x[a:b], y[a:b]), (x[b:], y[b:])


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return 100.0 * float((model(x).argmax(1) == y).float().mean())


def val_score(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        out = model(x)
    return float((out.argmax(1) == y).float().mean()), -float(nn.functional.cross_entropy(out, y))


def train(model: nn.Module, train_set, val_set, epochs: int, optimizer, seed: int) -> nn.Module:
    """Mini-batch training; the state with the best validation (accuracy, -loss) is kept, the start included."""
    x, y = train_set
    gen = torch.Generator().manual_seed(seed)
    best, best_state = val_score(model, *val_set), copy.deepcopy(model.state_dict())
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(y), generator=gen).split(32):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        score = val_score(model, *val_set)
        if score > best:
            best, best_state = score, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return model.eval()


def exact(model: nn.Module, x: torch.Tensor) -> bool:
    """The eval output equals the IR interpreter's, bit for bit."""
    model.eval()
    graph = qfx.export(model, x[:2])
    with torch.no_grad():
        ours = model(x).double().numpy()
    return bool(np.array_equal(qfx.ir.run(graph, x.numpy()), ours))


def run(name: str, args) -> list[dict]:
    torch.manual_seed(args.seed)
    train_set, val_set, test_set = load(name, args.seed)
    model = DigitsNet() if name == "digits" else cancer_net()
    train(model, train_set, val_set, args.float_epochs,
          torch.optim.Adam(model.parameters(), lr=3e-3), args.seed)
    float_acc = accuracy(model, *test_set)
    calib = [train_set[0][i:i + 256] for i in range(0, len(train_set[1]), 256)]
    example = train_set[0][:2]
    rows = [{"data": name, "config": "float", "method": "float", "acc": float_acc, "bitops": float("nan")}]
    for config in args.configs:
        fields = CONFIGS[config]
        results = {}
        ptq_minmax = qfx.quantize_model(model, qfx.QConfig(**fields), example)
        qfx.calibrate(ptq_minmax, calib, observer=qfx.MinMaxObserver, constant_observer=qfx.MinMaxObserver)
        ptq = qfx.quantize_model(model, qfx.QConfig(**fields), example)
        qfx.calibrate(ptq, calib)
        qat = qfx.quantize_model(model, qfx.QConfig(**fields, learn_int_bits=True), example)
        qat.load_state_dict(ptq.state_dict())
        torch.manual_seed(args.seed)
        train(qat, train_set, val_set, args.qat_epochs,
              torch.optim.AdamW(qat.parameters(), lr=QAT_LR, weight_decay=QAT_WEIGHT_DECAY), args.seed + 1)
        for method, m in (("PTQ min/max", ptq_minmax), ("PTQ", ptq), ("QAT", qat)):
            if not exact(m, test_set[0]):
                raise SystemExit(f"{name} {config} {method}: PyTorch and the IR interpreter differ")
            results[method] = accuracy(m, *test_set)
            rows.append({"data": name, "config": config, "method": method, "acc": results[method],
                         "bitops": float(qfx.bit_cost(m, example).detach())})
    return rows


def table(rows: list[dict]) -> str:
    name = rows[0]["data"]
    lines = [f"{name}: float {rows[0]['acc']:.1f}%",
             f"{'config':<12}{'PTQ min/max':>12}{'PTQ':>8}{'QAT':>8}{'bit-ops':>12}"]
    for config in dict.fromkeys(r["config"] for r in rows[1:]):
        by = {r["method"]: r for r in rows if r["config"] == config}
        lines.append(f"{config:<12}{by['PTQ min/max']['acc']:>12.1f}{by['PTQ']['acc']:>8.1f}"
                     f"{by['QAT']['acc']:>8.1f}{by['QAT']['bitops']:>12,.0f}")
    return "\n".join(lines)


def plot(all_rows: list[list[dict]], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(all_rows), figsize=(6 * len(all_rows), 4.5), squeeze=False)
    for ax, rows in zip(axes[0], all_rows):
        ax.axhline(rows[0]["acc"], color="gray", linestyle="--", label="float")
        for method, marker in (("PTQ min/max", "x"), ("PTQ", "s"), ("QAT", "o")):
            pts = [r for r in rows if r["method"] == method]
            ax.scatter([r["bitops"] for r in pts], [r["acc"] for r in pts], marker=marker, label=method)
            if method == "QAT":
                for r in pts:
                    ax.annotate(r["config"], (r["bitops"], r["acc"]), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("bit-operations per inference")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(rows[0]["data"])
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["digits", "cancer"], choices=["digits", "cancer"])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--float-epochs", type=int, default=30)
    parser.add_argument("--qat-epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default=None, help="write the accuracy / bit-operations plot here (PNG)")
    parser.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.float_epochs, args.qat_epochs = 2, 1
    all_rows = []
    for name in args.data:
        rows = run(name, args)
        all_rows.append(rows)
        print(table(rows))
        print()
    print(f"load average {os.getloadavg()[0]:.2f}; QAT: one AdamW over model.parameters(), lr {QAT_LR}, "
          f"weight decay {QAT_WEIGHT_DECAY}, {args.qat_epochs} epochs")
    if args.plot:
        plot(all_rows, args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
