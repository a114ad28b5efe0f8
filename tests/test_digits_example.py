"""examples/digits.py --quick: runs, writes metrics.json and the plot, refuses to overwrite without --force."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "examples" / "digits.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--quick", "--no-progress", *args],
                          capture_output=True, text=True, timeout=240)


def test_digits_quick(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "digits"
    result = run("--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout
    assert "PTQ acc" in text and "QAT acc" in text
    assert "NOT EXACT" not in text
    assert "qfx.summary" in text and "QBatchNorm2d" in text

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["quick"] is True
    assert 0.0 <= metrics["float_acc"] <= 1.0
    configs = [r["config"] for r in metrics["results"]]
    assert configs == ["w8a8", "w6a6", "w4a6", "khot2-w8a8"]
    for r in metrics["results"]:
        for key in ("float_acc", "ptq_acc", "qat_acc"):
            assert 0.0 <= r[key] <= 1.0, (r["config"], key)
        assert r["bit_cost"] > 0
        assert r["output_format"].startswith("ap_fixed<")
    costs = {r["config"]: r["bit_cost"] for r in metrics["results"]}
    assert costs["w4a6"] < costs["w6a6"] < costs["w8a8"]
    assert costs["khot2-w8a8"] < costs["w8a8"]
    assert metrics["exact_output_checks"] and all(c["exact"] for c in metrics["exact_output_checks"].values())
    assert metrics["targets"]["eval_outputs_exact"] is True
    assert set(metrics["int_bits_w8a8"]) == {"calibrated", "qat"}
    assert "conv1.weight" in metrics["int_bits_w8a8"]["qat"]
    png = out / "digits.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*.tmp")), "temporary files left behind"

    # a second run into the same, now non-empty, directory is refused and changes nothing
    before = (out / "metrics.json").read_bytes()
    again = run("--out", str(out))
    assert again.returncode != 0
    assert "--force" in again.stderr
    assert (out / "metrics.json").read_bytes() == before
