"""Load and concurrency: the soak benchmark, short, must end with no error and no lost write.

Threads and processes write different and the same chunk files of one branch
through one mount while readers check every read is a whole record, a second
mount writes the same branch, and both commit every second (benchmarks/soak.py).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.fuse
def test_soak_short(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "soak.py"),
            "--seconds",
            "8",
            "--threads",
            "6",
            "--procs",
            "2",
            "--readers",
            "3",
            "--dir",
            str(tmp_path / "soak"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, f"{summary}\n{result.stderr[-3000:]}"
    found = re.search(
        r"operations: (\d+) .*errors: 0, lost or torn chunks: 0, hung workers: 0, "
        r"commits: (\d+)",
        summary,
    )
    assert found, summary
    assert int(found.group(1)) > 100, "the workers really ran"
    assert int(found.group(2)) > 3, "commits happened while writing"
