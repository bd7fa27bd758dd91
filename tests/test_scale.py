"""The daemon's memory stays under its budget whatever an array's size (no timing asserted).

An array of 300,000 virtual chunks (made in seconds with ``set_virtual_refs``) is
listed, stat'ed and walked twice with ``find`` through a real mount whose metadata
budget is 16 MiB. Before the compact chunk index and the numbered chunk files, the
same walk grew the daemon by about 300 bytes a chunk for the index and 300 more for
each file walked: several hundred MiB here.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from harness.mount import rss_mib
from icefs.store.sample import build_virtual_grid

pytestmark = pytest.mark.fuse

ROWS, COLUMNS = 300, 1000
BUDGET_MIB = 16
#: What the first listing may add beside the budget: Icechunk's own cache of the
#: manifest it reads (about 150 bytes a virtual reference, in Rust: measured 60 MiB
#: here), which Icechunk bounds by its own settings, not icefs's.
MANIFEST_MIB = 72
#: What the walks may add beside the budget: the kernel-held numbers of the files
#: walked (12 bytes each) and the allocator's slack.
WALK_MIB = 16


def test_walking_a_large_array_stays_within_the_budget(tmp_path, mount_factory):
    prefix = build_virtual_grid(str(tmp_path / "v"), ROWS, COLUMNS)
    m = mount_factory(
        tmp_path / "v" / "repo", "--virtual", prefix, "--metadata-memory", f"{BUDGET_MIB}M"
    )
    array = m.mountpoint / "tags" / "v1" / "a"
    os.listdir(m.mountpoint / "tags" / "v1")
    start = rss_mib(m.proc.pid)
    assert len(os.listdir(array / "c" / "150")) == COLUMNS
    indexed = rss_mib(m.proc.pid) - start
    assert os.stat(array / "c" / "299" / "999").st_size == 1
    assert (array / "c" / "7" / "3").read_bytes() == bytes([10])  # offset 7 + 3
    for _ in range(2):
        found = subprocess.run(
            ["find", str(array), "-type", "f"], capture_output=True, text=True, check=True
        ).stdout.count("\n")
        assert found == ROWS * COLUMNS + 1  # and zarr.json
    grown = rss_mib(m.proc.pid) - start
    print(
        f"daemon RSS grew {indexed:.0f} MiB listing one directory (the array's index, "
        f"Icechunk's manifest) and {grown:.0f} MiB walking {ROWS * COLUMNS:,} chunk files"
    )
    assert indexed <= BUDGET_MIB + MANIFEST_MIB, f"{indexed:.0f} MiB"
    assert grown - indexed <= BUDGET_MIB + WALK_MIB, f"{grown - indexed:.0f} MiB"
    stats = json.loads((m.mountpoint / ".icefs" / "stats").read_text())["metadata_memory"]
    assert stats["limit_bytes"] == BUDGET_MIB << 20
    assert 0 < stats["used_bytes"] <= stats["limit_bytes"]
