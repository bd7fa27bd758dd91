"""Repositories Icechunk's own test suite wrote (spec 1, spec 2, migrated), through every view.

Each repository is copied, its virtual chunk served from moto in a private network
namespace (where its container's ``localhost:4200`` is free and nothing else is
reachable), and mounted from that namespace with the container authorized by its
URL prefix.  Every branch, tag and snapshot is read through the v3 view (every
key's bytes, every array's values with zarr 3), and through ``zarr2/`` and
``zarr2-decoded/`` (zarr 3's v2 reader and zarr-python 2 itself), against what
Icechunk reads directly in the same namespace.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import zarr
from zarr.storage import LocalStore

from icefs.paths import ref_to_name
from tests.corpus import (
    CORPUS,
    REPOSITORIES,
    ROOT,
    VIRTUAL_BUCKET,
    VIRTUAL_KEY,
    VIRTUAL_PORT,
    virtual_bytes,
)
from tests.netns import PrivateNetwork
from tests.test_legacy import ZARR2_PYTHON

pytestmark = pytest.mark.fuse

_DIRS = {"branch": "branches", "tag": "tags", "snapshot": "snapshots"}


@pytest.fixture
def network():
    net = PrivateNetwork()
    yield net
    net.close()


def _corpus_copy(name: str, tmp_path):
    source = CORPUS / name
    if not source.is_dir():
        pytest.fail(f"the Icechunk corpus is missing: {source} (shared/corpus beside the checkout)")
    repo = tmp_path / name
    shutil.copytree(source, repo)
    return repo


def _walk(top) -> set[str]:
    found = set()
    for here, _, files in os.walk(top):
        for f in files:
            found.add(os.path.relpath(os.path.join(here, f), top))
    return found


def _zarr2_read(paths: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """Every array zarr-python 2 opens (consolidated) below each of *paths*."""
    script = textwrap.dedent(
        """
        import pickle, sys, zarr
        out = {}
        for path in sys.argv[2:]:
            group = zarr.open_consolidated(path, mode="r")
            arrays = {}
            def visit(name, node):
                if isinstance(node, zarr.Array):
                    arrays[name] = node[...]
            group.visititems(visit)
            out[path] = arrays
        open(sys.argv[1], "wb").write(pickle.dumps(out))
        """
    )
    out = ROOT / ".pytest-zarr2-corpus.pickle"
    try:
        subprocess.run(
            [str(ZARR2_PYTHON), "-c", script, str(out), *paths],
            check=True,
            timeout=300,
            capture_output=True,
        )
        return pickle.loads(out.read_bytes())
    finally:
        out.unlink(missing_ok=True)


@pytest.mark.parametrize("name", REPOSITORIES)
def test_every_ref_through_every_view(name, tmp_path, network, mount_factory):
    repo = _corpus_copy(name, tmp_path)
    network.serve_s3(VIRTUAL_PORT, VIRTUAL_BUCKET, {VIRTUAL_KEY: virtual_bytes(repo)}, tmp_path)
    keys = network.static_keys(tmp_path / "keys")
    expected_file = tmp_path / "direct.pickle"
    network.run(sys.executable, "-m", "tests.corpus", str(repo), str(expected_file), str(keys))
    expected = pickle.loads(expected_file.read_bytes())
    m = mount_factory(
        repo, "--virtual", f"s3://{VIRTUAL_BUCKET}/=static:{keys}", wrap=network.prefix
    )
    status = json.loads((m.mountpoint / ".icefs/status").read_text())
    named = {c["name"]: c for c in status["virtual_containers"]}
    s3 = next(c for c in named.values() if c["prefix"].startswith("s3://testbucket"))
    assert s3["authorized"], status["virtual_containers"]

    checked = {"refs": 0, "arrays": 0, "keys": 0, "v2_arrays": 0}
    zarr2_paths: dict[str, dict[str, np.ndarray]] = {}
    for (kind, ref), snapshot_id in sorted(expected["refs"].items()):
        shown = ref_to_name(ref)
        assert shown is not None
        want = expected["snapshots"][snapshot_id]
        top = m.mountpoint / _DIRS[kind] / shown
        assert _walk(top) == set(want["keys"]), (kind, ref)
        for key, data in want["keys"].items():
            assert (top / key).read_bytes() == data, (kind, ref, key)
            checked["keys"] += 1
        for path, values in want["arrays"].items():
            np.testing.assert_array_equal(
                zarr.open_array(LocalStore(top / path, read_only=True), mode="r")[...], values
            )
            checked["arrays"] += 1
        for view in ("zarr2", "zarr2-decoded"):
            v2 = m.mountpoint / view / _DIRS[kind] / shown
            group = zarr.open_group(LocalStore(v2, read_only=True), mode="r", zarr_format=2)
            shown_arrays = {
                n for n, a in group.members(max_depth=None) if isinstance(a, zarr.Array)
            }
            assert shown_arrays == set(want["arrays"]), (view, kind, ref)
            for path, values in want["arrays"].items():
                np.testing.assert_array_equal(group[path][...], values)
                checked["v2_arrays"] += 1
            zarr2_paths[str(v2)] = want["arrays"]
        checked["refs"] += 1

    read = _zarr2_read(sorted(zarr2_paths))
    for path, arrays in zarr2_paths.items():
        assert set(read[path]) == set(arrays), path
        for array, values in arrays.items():
            np.testing.assert_array_equal(read[path][array], values)
            checked["v2_arrays"] += 1
    print(name, checked)
    assert checked["refs"] >= 8
    assert checked["arrays"] >= 10
