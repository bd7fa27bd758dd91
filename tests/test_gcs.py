"""GCS end to end: `tests/gcs_suite.py` in a pytest process of its own, inside a private
network namespace where only loopback exists (fake-gcs-server and the daemons too)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.netns import ROOT, PrivateNetwork

pytestmark = pytest.mark.fuse  # the suite it runs mounts

#: The tests gcs_suite.py holds: each must pass, none may be skipped.
EXPECTED = 3


def test_gcs_suite_in_a_private_network():
    network = PrivateNetwork()
    try:
        result = subprocess.run(
            [
                *network.prefix,
                sys.executable,
                "-m",
                "pytest",
                "tests/gcs_suite.py",
                "-q",
                "-p",
                "no:cacheprovider",
                "-rA",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    finally:
        network.close()
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert re.fullmatch(rf"=* ?{EXPECTED} passed in [0-9.]+s.*", summary), summary
