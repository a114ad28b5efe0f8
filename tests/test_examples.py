"""Every example runs (small settings) and prints what it promises."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_quantize_digits_runs() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "quantize_digits.py"), "--steps", "300"],
                            capture_output=True, text=True, timeout=300, check=True)
    out = result.stdout
    assert "ap_ufixed<8,0,AP_RND_CONV>" in out
    assert "K-hot" in out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith(tuple("01234567"))
            and "ap_fixed<6," in line]
    assert len(rows) == 8
    # learned binary point of each row within one bit of the best found by search
    for row in rows:
        learned = int(row[2].split(",")[1])
        assert abs(learned - int(row[3])) <= 1, row


def test_digits_to_fpga_runs(tmp_path) -> None:
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "digits_to_fpga.py"), "--out", str(tmp_path / "d"),
                             "--epochs", "2", "--qat-epochs", "1"], capture_output=True, text=True, timeout=600,
                            check=True)
    assert "bit-exact" in result.stdout and "yes, every code" in result.stdout


def test_bnn_runs(tmp_path) -> None:
    """The binarized network example, tiny: every row printed, the chosen row bit-exact in the emulator."""
    out = tmp_path / "bnn"
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "bnn.py"), "--quick", "--no-synth", "--no-hls",
                             "--bits", "4", "--out", str(out)], capture_output=True, text=True, timeout=300,
                            check=True)
    for row in ("float element-wise", "PTQ 4-bit", "QAT 4-bit", "K-hot K=1", "K-hot K=2"):
        assert row in result.stdout
    assert "0 mismatching codes" in result.stdout
    assert (out / "metrics.json").exists() and (out / "bnn.png").exists()


def test_lowbit_runs(tmp_path) -> None:
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "lowbit.py"), "--quick", "--data", "cancer",
                             "--configs", "w4a4", "w8a8 khot2", "--budgets", "0.5", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=300, check=True)
    out = result.stdout
    assert "cancer: float" in out and "load average" in out
    rows = [line for line in out.splitlines() if line.startswith(("w4a4", "w8a8 khot2", "learned 0.5"))]
    assert len(rows) == 3 and all(len(r.split()) >= 5 for r in rows), out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert {r["method"] for r in metrics["rows"]} == {"float", "PTQ min/max", "PTQ", "QAT", "learned widths"}
    assert (tmp_path / "lowbit.png").stat().st_size > 0
