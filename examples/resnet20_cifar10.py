"""ResNet-20 on CIFAR-10: float training, then quantization-aware training with learned binary points.

    python examples/resnet20_cifar10.py DATA [--epochs 30] [--qat-epochs 10] [--out run1]
    python examples/resnet20_cifar10.py --synthetic 512 --steps 5     # smoke run, no data needed

DATA is either

* a NumPy ``.npz`` file with ``x_train``, ``y_train``, ``x_test``, ``y_test``:
  images as ``uint8`` of shape ``(N, 32, 32, 3)`` (NHWC, 0..255, as most
  CIFAR-10 exports store them) or as floating point of shape
  ``(N, 3, 32, 32)`` (NCHW) with values in ``[0, 1]``; labels are integers
  0..9 of shape ``(N,)``.  Loaded with ``allow_pickle=False``.
* the directory of the standard "CIFAR-10 python version" (``data_batch_1``
  .. ``data_batch_5``, ``test_batch``).  Those files are Python pickles, and
  unpickling a file can run arbitrary code, so the script reads them only
  with ``--trust-pickle`` (pass it only for files from a source you trust;
  or convert them once to ``.npz``).

``--synthetic N`` uses N random images instead (labels tied to a colour
shift so that the network can learn something), for tests and smoke runs.

Flow: train the float ResNet-20 (or load ``--float-checkpoint``, a state dict
read with ``torch.load(..., weights_only=True)``), convert it with
``qfx.quantize_model`` (``learn_int_bits=True``: every binary point becomes a
trained parameter), place the binary points with ``qfx.calibrate``, train
(QAT) for ``--qat-epochs``, report float and fixed-point test accuracy and
print ``qfx.summary``.

The shortcut of a block that changes shape is a 1x1 strided convolution and
BatchNorm ("option B"): option A (strided slicing and zero-padding of
channels) is not among the operations ``qfx.quantize_model`` converts.

``--out DIR`` writes ``float_model.pt``, ``qat_model.pt`` (state dicts) and
``metrics.json``, each atomically (temporary file then rename); a non-empty
DIR is refused unless ``--force``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import sys
import tempfile
import time
from typing import Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import qfx

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


# ------------------------------------------------------------------ model
class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Identity()
        if stride != 1 or in_planes != planes:  # option B: 1x1 conv + BN
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    """ResNet-20 for 32x32 images: 3 stages of 3 basic blocks, 16/32/64 channels."""

    def __init__(self, num_classes: int = 10, blocks_per_stage: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(blocks_per_stage):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


# ------------------------------------------------------------------- data
class DataError(RuntimeError):
    pass


def _normalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _images(array: np.ndarray, name: str) -> torch.Tensor:
    """uint8 NHWC (0..255) or float NCHW ([0, 1]) to float32 NCHW in [0, 1]."""
    if array.ndim != 4:
        raise DataError(f"{name}: expected a 4-d array of images, got shape {array.shape}")
    if array.dtype == np.uint8:
        if array.shape[1:] != (32, 32, 3):
            raise DataError(f"{name}: uint8 images must be NHWC (N, 32, 32, 3), got {array.shape}")
        return torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float().div(255.0).contiguous()
    if np.issubdtype(array.dtype, np.floating):
        if array.shape[1:] != (3, 32, 32):
            raise DataError(f"{name}: float images must be NCHW (N, 3, 32, 32) in [0, 1], got {array.shape}")
        return torch.from_numpy(array.astype(np.float32))
    raise DataError(f"{name}: images must be uint8 NHWC or float NCHW, got dtype {array.dtype}")


def _labels(array: np.ndarray, name: str, n: int) -> torch.Tensor:
    y = torch.from_numpy(np.asarray(array).astype(np.int64).reshape(-1))
    if y.numel() != n:
        raise DataError(f"{name}: {y.numel()} labels for {n} images")
    if n and (int(y.min()) < 0 or int(y.max()) > 9):
        raise DataError(f"{name}: labels must lie in 0..9")
    return y


def load_npz(path: pathlib.Path) -> tuple[torch.Tensor, ...]:
    with np.load(path, allow_pickle=False) as data:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(data.files)
        if missing:
            raise DataError(f"{path}: missing arrays {sorted(missing)} (found {data.files})")
        x_train, x_test = _images(data["x_train"], "x_train"), _images(data["x_test"], "x_test")
        return (x_train, _labels(data["y_train"], "y_train", len(x_train)),
                x_test, _labels(data["y_test"], "y_test", len(x_test)))


PICKLE_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def load_pickle_batches(directory: pathlib.Path, trust_pickle: bool) -> tuple[torch.Tensor, ...]:
    missing = [f for f in PICKLE_FILES if not (directory / f).is_file()]
    if missing:
        raise DataError(f"{directory}: not a CIFAR-10 python directory (missing {', '.join(missing)})")
    if not trust_pickle:
        raise DataError(
            f"{directory} holds CIFAR-10 as Python pickle files. Unpickling can execute arbitrary code, so this "
            "script does not load them unless you pass --trust-pickle (do so only for files from a source you "
            "trust, e.g. the official archive with a checked checksum). Alternatively convert them once to a "
            ".npz with x_train/y_train/x_test/y_test (uint8 NHWC) and pass that file instead.")
    import pickle  # only here, and only with --trust-pickle

    def read(name: str) -> tuple[torch.Tensor, torch.Tensor]:
        with open(directory / name, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data = batch.get(b"data", batch.get("data"))
        labels = batch.get(b"labels", batch.get("labels"))
        if data is None or labels is None:
            raise DataError(f"{directory / name}: no 'data'/'labels' entries")
        x = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        x = _images(x, name)
        return x, _labels(np.asarray(labels), name, len(x))

    train = [read(f) for f in PICKLE_FILES[:5]]
    x_test, y_test = read("test_batch")
    return torch.cat([x for x, _ in train]), torch.cat([y for _, y in train]), x_test, y_test


def synthetic(n: int, seed: int) -> tuple[torch.Tensor, ...]:
    """``n`` training and ``max(n // 4, 10)`` test images: noise plus a per-class colour shift."""
    g = torch.Generator().manual_seed(seed + 12345)
    shifts = torch.rand(10, 3, 1, 1, generator=g) * 0.6 - 0.3

    def make(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, 10, (count,), generator=g)
        x = (torch.rand(count, 3, 32, 32, generator=g) * 0.5 + 0.25 + shifts[y]).clamp(0, 1)
        return x, y

    return (*make(n), *make(max(n // 4, 10)))


def load_data(args: argparse.Namespace) -> tuple[torch.Tensor, ...]:
    if args.synthetic:
        x_train, y_train, x_test, y_test = synthetic(args.synthetic, args.seed)
    else:
        if args.data is None:
            raise DataError("give a data path (a .npz file or the CIFAR-10 python directory) or --synthetic N")
        path = pathlib.Path(args.data)
        if path.is_dir():
            x_train, y_train, x_test, y_test = load_pickle_batches(path, args.trust_pickle)
        elif path.is_file():
            x_train, y_train, x_test, y_test = load_npz(path)
        else:
            raise DataError(f"{path}: no such file or directory")
    return _normalize(x_train), y_train, _normalize(x_test), y_test


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random crop (padding 4) and horizontal flip, per image."""
    n = x.shape[0]
    padded = F.pad(x, (4, 4, 4, 4))
    dx = torch.randint(0, 9, (n,), generator=g)
    dy = torch.randint(0, 9, (n,), generator=g)
    rows = (dy.view(n, 1) + torch.arange(32)).view(n, 1, 32, 1).expand(n, 3, 32, 32)
    cols = (dx.view(n, 1) + torch.arange(32)).view(n, 1, 1, 32).expand(n, 3, 32, 32)
    out = padded[torch.arange(n).view(n, 1, 1, 1), torch.arange(3).view(1, 3, 1, 1), rows, cols]
    flip = torch.rand(n, generator=g) < 0.5
    out[flip] = out[flip].flip(3)
    return out


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, g: Optional[torch.Generator] = None,
            max_steps: Optional[int] = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    order = torch.randperm(len(x), generator=g) if g is not None else torch.arange(len(x))
    for step, start in enumerate(range(0, len(x), batch_size)):
        if max_steps is not None and step >= max_steps:
            return
        idx = order[start:start + batch_size]
        xb = x[idx]
        yield (augment(xb, g) if g is not None else xb), y[idx]


def _progress(iterable, total: int, desc: str):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False, disable=not sys.stderr.isatty())


# --------------------------------------------------------------- training
def train(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, x: torch.Tensor, y: torch.Tensor,
          args: argparse.Namespace, epochs: int, g: torch.Generator, device: torch.device, desc: str) -> float:
    loss_value = float("nan")
    steps_per_epoch = math.ceil(len(x) / args.batch_size)
    if args.steps:
        steps_per_epoch = min(steps_per_epoch, args.steps)
    for epoch in range(epochs):
        model.train()
        total, count = 0.0, 0
        for xb, yb in _progress(batches(x, y, args.batch_size, g, args.steps), steps_per_epoch,
                                f"{desc} {epoch + 1}/{epochs}"):
            xb, yb = xb.to(device), yb.to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total, count = total + loss.item() * len(xb), count + len(xb)
        loss_value = total / max(count, 1)
        print(f"{desc} epoch {epoch + 1}/{epochs}: loss {loss_value:.4f}", flush=True)
    return loss_value


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace,
             device: torch.device) -> float:
    model.eval()
    correct = 0
    max_steps = args.eval_steps if args.eval_steps else None
    seen = 0
    for xb, yb in batches(x, y, args.batch_size, None, max_steps):
        correct += int((model(xb.to(device)).argmax(1).cpu() == yb).sum())
        seen += len(yb)
    return correct / max(seen, 1)


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, total_steps: int):
    # Biases and BatchNorm parameters are not weight-decayed; binary points (``*.int_bits_move``) never are,
    # whatever the group: the quantizers fold each move into ``int_bits`` before the optimizer sees it.
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.dim() <= 1 else decay).append(p)
    optimizer = torch.optim.SGD([{"params": decay, "weight_decay": weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=lr, momentum=0.9, nesterov=True)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(total_steps, 1))
    return optimizer, scheduler


# ----------------------------------------------------------------- output
def prepare_out(out: Optional[str], force: bool) -> Optional[pathlib.Path]:
    if out is None:
        return None
    path = pathlib.Path(out)
    if path.exists() and not path.is_dir():
        raise SystemExit(f"error: --out {path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise SystemExit(f"error: --out {path} is not empty; pass --force to overwrite its files")
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write(path: pathlib.Path, write) -> None:
    """``write(file)`` into a temporary file next to ``path``, then rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def save_state(path: pathlib.Path, model: nn.Module) -> None:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_write(path, lambda f: torch.save(state, f))


def load_float_checkpoint(model: nn.Module, path: str) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    model.load_state_dict(state)


# ------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", nargs="?", help=".npz file or CIFAR-10 python directory (see the module docstring)")
    p.add_argument("--synthetic", type=int, metavar="N", default=0, help="use N random images instead of data")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow unpickling the CIFAR-10 python batches (only for files you trust)")
    p.add_argument("--float-checkpoint", help="float ResNet-20 state dict to start from (skips float training)")
    p.add_argument("--epochs", type=int, default=30, help="float training epochs")
    p.add_argument("--qat-epochs", type=int, default=10, help="quantization-aware training epochs")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1, help="float learning rate (QAT uses a tenth)")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--weight-bits", type=int, default=8)
    p.add_argument("--activation-bits", type=int, default=8)
    p.add_argument("--calib-batches", type=int, default=8)
    p.add_argument("--calib-passes", type=int, default=None,
                   help="cap on qfx.calibrate passes (default: qfx's, one per activation quantizer + 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=0, help="at most this many steps per epoch (0: all)")
    p.add_argument("--eval-steps", type=int, default=0, help="at most this many evaluation batches (0: all)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", help="directory for state dicts and metrics.json")
    p.add_argument("--force", action="store_true", help="write into a non-empty --out directory")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = prepare_out(args.out, args.force)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    try:
        x_train, y_train, x_test, y_test = load_data(args)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"data: {len(x_train)} training, {len(x_test)} test images; device {device}")
    g = torch.Generator().manual_seed(args.seed)
    steps = math.ceil(len(x_train) / args.batch_size)
    if args.steps:
        steps = min(steps, args.steps)
    start = time.time()

    model = ResNet20().to(device)
    if args.float_checkpoint:
        load_float_checkpoint(model, args.float_checkpoint)
        float_loss = None
        print(f"float model loaded from {args.float_checkpoint}")
    else:
        optimizer, scheduler = make_optimizer(model, args.lr, args.weight_decay, args.epochs * steps)
        float_loss = train(model, optimizer, scheduler, x_train, y_train, args, args.epochs, g, device, "float")
    float_acc = evaluate(model, x_test, y_test, args, device)
    print(f"float test accuracy: {float_acc:.4f}")
    if out is not None:
        save_state(out / "float_model.pt", model)

    config = qfx.QConfig(weight=args.weight_bits, activation=args.activation_bits, learn_int_bits=True)
    qmodel = qfx.quantize_model(model.cpu(), config, example_input=x_test[:2]).to(device)
    model.to(device)
    calib = [xb for xb, _ in batches(x_train, y_train, args.batch_size, None, args.calib_batches)]
    qfx.calibrate(qmodel, [xb.to(device) for xb in calib], max_passes=args.calib_passes)
    ptq_acc = evaluate(qmodel, x_test, y_test, args, device)
    print(f"fixed point after calibration: {ptq_acc:.4f}")

    optimizer, scheduler = make_optimizer(qmodel, args.lr / 10, args.weight_decay, args.qat_epochs * steps)
    qat_loss = train(qmodel, optimizer, scheduler, x_train, y_train, args, args.qat_epochs, g, device, "QAT")
    qat_acc = evaluate(qmodel, x_test, y_test, args, device)
    print(f"fixed point after QAT: {qat_acc:.4f}")
    qmodel.cpu()
    summary = qfx.summary(qmodel, x_test[:1], print_fn=None)
    print(summary)

    metrics = {
        "float_accuracy": float_acc, "ptq_accuracy": ptq_acc, "qat_accuracy": qat_acc,
        "float_loss": float_loss, "qat_loss": qat_loss,
        "bit_cost": float(qfx.bit_cost(qmodel, x_test[:1]).detach()),
        "formats": {name: [str(t) for t in (q.fixed_type if isinstance(q.fixed_type, list) else [q.fixed_type])]
                    for name, q in qmodel.named_modules() if isinstance(q, qfx.nn.FixedQuantizer)},
        "args": vars(args), "seconds": time.time() - start,
    }
    if out is not None:
        save_state(out / "qat_model.pt", qmodel)
        atomic_write(out / "metrics.json", lambda f: f.write(json.dumps(metrics, indent=2).encode()))
        atomic_write(out / "summary.txt", lambda f: f.write(summary.encode()))
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
