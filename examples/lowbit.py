"""Accuracy against bit-operations at low word lengths: float, PTQ (min/max and least error), QAT, learned widths.

Real data sets shipped with scikit-learn (nothing is downloaded): the 8x8
handwritten digits as images (a small residual CNN with BatchNorm) and, read
row by row, as 64-sample 1-d signals (three conv1d-BatchNorm-ReLU blocks),
and the Wisconsin breast-cancer measurements (an MLP with BatchNorm).  For
each data set a float model is trained, then every configuration below is

* **PTQ min/max**: ``qfx.calibrate(observer=MinMaxObserver, constant_observer=MinMaxObserver)``;
* **PTQ**: ``qfx.calibrate`` with its default (least squared cast error);
* **QAT**: ``quantize_model(learn_int_bits=True)`` started from the PTQ
  model and trained as the README shows: one ``AdamW`` over
  ``model.parameters()`` at ``lr = 1e-3`` on a cosine schedule, weight
  decay ``1e-2``; the epoch kept is the best on a validation split (the
  PTQ start included);
* **learned widths** (``learned <lambda>``): the same from ``w8a8`` with
  ``learn_widths=True`` and ``lambda * bit_cost / bit_cost(w8a8)`` added
  to the loss, one row per ``lambda`` (``--budgets``); the epoch kept is the
  best on validation among those no costlier than the last.

Every row uses the README's recipe formats (``RECIPE``: weight binary points
per output channel, 16-bit BatchNorm inputs, unsigned ReLU outputs).
Configurations: ``w8a8``, ``w6a6``, ``w4a4`` (weights / activations, the
input included; BatchNorm scale and shift at 8 bits), ``w4/ew4`` and
``w8/ew4`` (4-bit element-wise layers: BatchNorm scale and shift, adds and
activations), ``w8a8 khot2`` (weights and BatchNorm scales with at most two
nonzero signed digits: products become one add).  Every quantized model's
eval output is checked against the IR interpreter, bit for bit.

Prints one table per data set (accuracy in %, bit-operations per inference
from ``qfx.bit_cost``); ``--out DIR`` writes ``metrics.json`` and the plot of
accuracy against bit-operations ``lowbit.png``.  ``--quick`` runs tiny
settings (the smoke test).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import pathlib
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
#: The README's recipe below 8 bits: weight binary points per output channel, BatchNorm's input at 16 bits,
#: unsigned ReLU outputs (applied to every row, PTQ and QAT alike).
RECIPE = dict(weight_granularity="channel", pre_batchnorm=16, unsigned_relu=True)
QAT_LR, QAT_WEIGHT_DECAY = 1e-3, 1e-2  # one AdamW over model.parameters(), cosine schedule


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


def signal_net(channels: int = 16) -> nn.Module:
    """Three conv1d-BN-ReLU blocks (the middle ones pooled) on a 1-d signal, then a linear classifier."""
    c = channels
    return nn.Sequential(nn.Conv1d(1, c, 5, padding=2), nn.BatchNorm1d(c), nn.ReLU(), nn.MaxPool1d(2),
                         nn.Conv1d(c, 2 * c, 5, padding=2), nn.BatchNorm1d(2 * c), nn.ReLU(), nn.MaxPool1d(2),
                         nn.Conv1d(2 * c, 2 * c, 5, padding=2), nn.BatchNorm1d(2 * c), nn.ReLU(),
                         nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(2 * c, 10))


def cancer_net() -> nn.Module:
    return nn.Sequential(nn.Linear(30, 32), nn.BatchNorm1d(32), nn.ReLU(),
                         nn.Linear(32, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2))


def load(name: str, seed: int):
    """Standardized features, split 60/20/20 (train/validation/test), stratified by a fixed permutation."""
    from sklearn import datasets
    if name in ("digits", "signal"):
        data = datasets.load_digits()
        x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
        x = (x - x.mean()) / x.std()
        if name == "signal":  # each image read row by row as one 64-sample signal
            x = x.reshape(len(x), 1, 64)
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


def val_score(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Validation accuracy (a fraction)."""
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def train(model: nn.Module, train_set, val_set, epochs: int, optimizer, seed: int, cosine: bool = False,
          penalty=None) -> nn.Module:
    """Mini-batch training (``cosine``: the learning rate follows a cosine from its value to 0 over all steps);
    the state of best validation accuracy is kept (the start included, and kept on a tie).  With ``penalty`` (a
    function of the model added to the loss), only the states whose penalty is at most the last one's compete
    (the start excluded): the best within the budget the training reached."""
    x, y = train_set
    gen = torch.Generator().manual_seed(seed)
    batches = -(-len(y) // 32)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * batches) if cosine else None
    states = [] if penalty is not None else [(val_score(model, *val_set), copy.deepcopy(model.state_dict()), 0.0)]
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(y), generator=gen).split(32):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            if penalty is not None:
                loss = loss + penalty(model)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
        score = val_score(model, *val_set)  # eval mode folds the last moves
        cost = 0.0 if penalty is None else float(penalty(model).detach())
        states.append((score, copy.deepcopy(model.state_dict()), cost))
    final_cost = states[-1][-1] if penalty is not None else 0.0
    best = None
    for state in states:
        if (penalty is None or state[2] <= final_cost) and (best is None or state[0] > best[0]):
            best = state
    model.load_state_dict(best[1])
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
    model = {"digits": DigitsNet, "signal": signal_net, "cancer": cancer_net}[name]()
    train(model, train_set, val_set, args.float_epochs,
          torch.optim.Adam(model.parameters(), lr=3e-3), args.seed)
    float_acc = accuracy(model, *test_set)
    calib = [train_set[0][i:i + 256] for i in range(0, len(train_set[1]), 256)]
    example = train_set[0][:2]
    rows = [{"data": name, "config": "float", "method": "float", "acc": float_acc, "bitops": None}]
    for config in args.configs:
        fields = {**CONFIGS[config], **RECIPE}
        results = {}
        ptq_minmax = qfx.quantize_model(model, qfx.QConfig(**fields), example)
        qfx.calibrate(ptq_minmax, calib, observer=qfx.MinMaxObserver, constant_observer=qfx.MinMaxObserver)
        ptq = qfx.quantize_model(model, qfx.QConfig(**fields), example)
        qfx.calibrate(ptq, calib)
        qat = qfx.quantize_model(model, qfx.QConfig(**fields, learn_int_bits=True), example)
        qat.load_state_dict(ptq.state_dict())
        torch.manual_seed(args.seed)
        train(qat, train_set, val_set, args.qat_epochs,
              torch.optim.AdamW(qat.parameters(), lr=QAT_LR, weight_decay=QAT_WEIGHT_DECAY), args.seed + 1,
              cosine=True)
        for method, m in (("PTQ min/max", ptq_minmax), ("PTQ", ptq), ("QAT", qat)):
            if not exact(m, test_set[0]):
                raise SystemExit(f"{name} {config} {method}: PyTorch and the IR interpreter differ")
            results[method] = accuracy(m, *test_set)
            rows.append({"data": name, "config": config, "method": method, "acc": results[method],
                         "bitops": float(qfx.bit_cost(m, example).detach())})
    for lam in args.budgets:
        rows.append(learned_widths(model, lam, calib, example, train_set, val_set, test_set, name, args))
    return rows


def learned_widths(model, lam: float, calib, example, train_set, val_set, test_set, name: str, args) -> dict:
    """QAT from w8a8 with every word length learned too, under ``lam * bit_cost / bit_cost(w8a8)`` in the loss."""
    learned = qfx.quantize_model(model, qfx.QConfig(**CONFIGS["w8a8"], **RECIPE, learn_int_bits=True,
                                                    learn_widths=True), example)
    qfx.calibrate(learned, calib)
    start = float(qfx.bit_cost(learned).detach())
    torch.manual_seed(args.seed)
    train(learned, train_set, val_set, args.qat_epochs,
          torch.optim.AdamW(learned.parameters(), lr=QAT_LR, weight_decay=QAT_WEIGHT_DECAY), args.seed + 1,
          cosine=True, penalty=lambda m: lam * qfx.bit_cost(m) / start)
    config = f"learned {lam:g}"
    if not exact(learned, test_set[0]):
        raise SystemExit(f"{name} {config}: PyTorch and the IR interpreter differ")
    widths = [q.effective_width() for q in learned.modules() if getattr(q, "learns_width", False)]
    return {"data": name, "config": config, "method": "learned widths", "acc": accuracy(learned, *test_set),
            "bitops": float(qfx.bit_cost(learned, example).detach()), "widths": widths}


def table(rows: list[dict]) -> str:
    name = rows[0]["data"]
    lines = [f"{name}: float {rows[0]['acc']:.1f}%",
             f"{'config':<12}{'PTQ min/max':>12}{'PTQ':>8}{'QAT':>8}{'bit-ops':>12}"]
    for config in dict.fromkeys(r["config"] for r in rows[1:]):
        by = {r["method"]: r for r in rows if r["config"] == config}
        if "learned widths" in by:
            r = by["learned widths"]
            lines.append(f"{config:<12}{'':>12}{'':>8}{r['acc']:>8.1f}{r['bitops']:>12,.0f}   widths "
                         f"{min(r['widths'])}..{max(r['widths'])}, mean {np.mean(r['widths']):.1f}")
            continue
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
        for method, marker in (("PTQ min/max", "x"), ("PTQ", "s"), ("QAT", "o"), ("learned widths", "^")):
            pts = [r for r in rows if r["method"] == method]
            ax.scatter([r["bitops"] for r in pts], [r["acc"] for r in pts], marker=marker, label=method)
            if method in ("QAT", "learned widths"):
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
    parser.add_argument("--data", nargs="+", default=["digits", "signal", "cancer"],
                        choices=["digits", "signal", "cancer"])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--float-epochs", type=int, default=30)
    parser.add_argument("--qat-epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budgets", nargs="*", type=float, default=[0.05, 0.2, 1.0],
                        help="weights lambda of the bit-cost penalty for the learned word lengths (none: no rows)")
    parser.add_argument("--out", default=None,
                        help="write metrics.json and lowbit.png (accuracy against bit-operations) here")
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
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; QAT: one AdamW over model.parameters(), "
          f"lr {QAT_LR} on a cosine, weight decay {QAT_WEIGHT_DECAY}, {args.qat_epochs} epochs, the best "
          f"validation epoch kept; {RECIPE}")
    if args.out:
        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        settings = {k: v for k, v in vars(args).items() if k != "out"}
        (out / "metrics.json").write_text(json.dumps({"settings": settings, "recipe": RECIPE, "load_average": load,
                                                      "rows": [r for rows in all_rows for r in rows]}, indent=1))
        plot(all_rows, str(out / "lowbit.png"))
        print(f"wrote {out / 'metrics.json'} and {out / 'lowbit.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
