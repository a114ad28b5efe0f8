"""Smoke tests of examples/resnet20_cifar10.py: a tiny synthetic run, and the pickle refusal."""

from __future__ import annotations

import json
import pathlib
import pickle
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "examples" / "resnet20_cifar10.py"


def run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)


def test_synthetic_run_writes_metrics(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "run"
    result = run("--synthetic", "64", "--steps", "2", "--epochs", "1", "--qat-epochs", "1", "--batch-size", "16",
                 "--calib-batches", "1", "--calib-passes", "2", "--eval-steps", "1", "--out", str(out))
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("float_accuracy", "ptq_accuracy", "qat_accuracy", "bit_cost", "formats"):
        assert key in metrics
    assert 0.0 <= metrics["qat_accuracy"] <= 1.0
    assert (out / "float_model.pt").is_file() and (out / "qat_model.pt").is_file()
    assert "QConv2d" in result.stdout  # qfx.summary printed
    assert not list(out.glob(".*.tmp"))  # atomic writes left no temporaries
    # a second run into the same, now non-empty, directory is refused without --force
    again = run("--synthetic", "16", "--out", str(out))
    assert again.returncode != 0 and "--force" in again.stderr


def test_pickle_batches_refused_without_trust_pickle(tmp_path: pathlib.Path) -> None:
    data = tmp_path / "cifar-10-batches-py"
    data.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": np.zeros((2, 3072), dtype=np.uint8), b"labels": [0, 1]}
        (data / name).write_bytes(pickle.dumps(batch))  # our own, harmless, file
    result = run(str(data), "--epochs", "0", "--qat-epochs", "0", timeout=120)
    assert result.returncode == 2
    assert "--trust-pickle" in result.stderr and "arbitrary code" in result.stderr
    assert "Traceback" not in result.stderr


def test_npz_layout_errors_are_clear(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=np.zeros((2, 3, 32, 32), dtype=np.uint8), y_train=np.zeros(2),
             x_test=np.zeros((2, 3, 32, 32), dtype=np.uint8), y_test=np.zeros(2))
    result = run(str(path), "--epochs", "0", "--qat-epochs", "0", timeout=120)
    assert result.returncode == 2 and "NHWC" in result.stderr
