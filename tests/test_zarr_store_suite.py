"""zarr-python's own store test class (`zarr.testing.store.StoreTests`) on a branch.

`tests/zarrsuite.py` runs it against a LocalStore whose root is a directory inside
``branches/main`` of a real mount, in a pytest process of its own (zarr's tests are
asyncio tests; this suite runs trio).  Every case passes except the ones icefs
refuses by design, which that module marks as strict expected failures with why.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import icechunk
import pytest

from icefs.store.sample import sample_storage
from tests.corpus import ROOT

pytestmark = pytest.mark.fuse


def test_zarr_store_tests_in_a_branch(tmp_path, mount_factory):
    icechunk.Repository.create(sample_storage(str(tmp_path / "repo")))
    m = mount_factory(tmp_path / "repo")
    root = m.mountpoint / "branches" / "main" / "suite"
    root.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "asyncio",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
            "-o",
            "trio_mode=false",
            "-o",
            "asyncio_mode=auto",
            "-o",
            "asyncio_default_fixture_loop_scope=function",
            "-q",
            "-rxX",
            str(ROOT / "tests" / "zarrsuite.py"),
        ],
        cwd=ROOT,
        env={**os.environ, "ICEFS_ZARR_SUITE_ROOT": str(root)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    refused = int(re.search(r"(\d+) xfailed", summary).group(1))
    print(summary)
    assert passed >= 60, summary
    assert refused == 12, "the cases docs/semantics.md lists: " + summary
