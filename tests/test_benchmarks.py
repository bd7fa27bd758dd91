"""A smoke run of the benchmark command on tiny data, so it cannot rot (no timing asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.fuse
def test_benchmark_command_smoke(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--dir", str(tmp_path / "bench")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    for row in (
        "warm read big",
        "cold read big",
        "write ",
        "daemon RSS",
        "concurrent readers",
        "`find`",
        "`ls -lR`",
        "random 1 KiB chunk reads",
        "fio sequential read",
        "floor: write",
        "floor: read",
        "floor: one request round trip",
        "(floor) the same zarr write",
        "(floor) `find`",
        "(floor) the same reads",
        "(floor) both halves at once: direct read",
        "(reference) the direct write + commit",
        "(floor) warm plain reads",
        "CPU-seconds per GiB",
        "cold read of a virtual array",
        "(floor) both halves at once: the direct virtual read",
    ):
        assert any(row in line for line in table), row
    assert "fio not installed" not in result.stdout, "bootstrap installs fio"
    assert "icechunk" in result.stdout  # the environment block
    assert "- free page reporting" in result.stdout  # whether the run held it off


def test_steady_memory_restores_the_knobs(tmp_path, monkeypatch):
    """`steady_memory` holds free page reporting off and puts every setting back."""
    from benchmarks import common

    knobs = tmp_path / "parameters"
    knobs.mkdir()
    (knobs / "min_free_ms").write_text("0\n")
    (knobs / "max_waiting_mib").write_text("1024\n")
    monkeypatch.setattr(common, "PAGE_REPORTING", str(knobs))
    with common.steady_memory(0.001):
        assert (knobs / "min_free_ms").read_text() == "300000"
        assert (knobs / "max_waiting_mib").read_text() == "1000000"
        assert "held off" in common.environment()[-1]
    assert (knobs / "min_free_ms").read_text() == "0"
    assert (knobs / "max_waiting_mib").read_text() == "1024"
