"""Smoke runs of the benchmark scripts on tiny data, so they cannot rot (no timing asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_read_benchmark_smoke(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "read.py"), "--smoke", "--dir",
         str(tmp_path / "bench")], capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| warm read big" in result.stdout
    assert "x throughput" in result.stdout


def test_write_benchmark_smoke(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "write.py"), "--smoke", "--dir",
         str(tmp_path / "bench")], capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "x throughput" in result.stdout
    assert "daemon RSS" in result.stdout
