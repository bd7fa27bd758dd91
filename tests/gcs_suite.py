"""The mount on GCS end to end: reads, writes, commits, refs and the two-mount commit race,
against fake-gcs-server (behind `tests.gcs.GcsProxy`).

Not collected on its own: `tests/test_gcs.py` runs this file in its own pytest process
inside a private network namespace (only loopback), so neither a daemon nor Icechunk
in this process can ever reach a cloud metadata address or any other host.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import uuid

import icechunk
import numpy as np
import pytest
import zarr

from tests.gcs import GcsServer, credentials
from tests.test_backends import full_cycle, seed
from tests.test_concurrency import _race, _seed


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    names = [name for _, name in socket.if_nameindex()]
    if names != ["lo"]:
        pytest.fail(f"run only inside a private network namespace (interfaces: {names})")
    server = GcsServer(tmp_path_factory.mktemp("gcs"), [])
    yield server
    server.close()


@pytest.fixture
def gcs_repo(gcs, tmp_path):
    """(storage, mount options, a bucket of its own) for one test."""
    bucket = gcs.create_bucket(f"icefs-{uuid.uuid4().hex[:8]}")
    key = credentials(gcs.url)
    key_file = tmp_path / "sa.json"
    key_file.write_text(json.dumps(key))
    key_file.chmod(0o600)
    storage = icechunk.gcs_storage(
        bucket=bucket, prefix="repo", service_account_key=json.dumps(key)
    )
    return storage, f"gs://{bucket}/repo", ["--service-account-file", str(key_file)]


def test_gcs_read_write_commit(gcs_repo, mount_factory):
    storage, url, options = gcs_repo
    repo, _ = seed(storage)
    m = mount_factory(url, *options)
    full_cycle(m, repo)
    # big chunks read back whole, through the branch, the snapshot and a fresh mount
    main = m.mountpoint / "branches" / "main"
    data = np.random.default_rng(1).integers(0, 2**31, 3 * 2**20 // 4, dtype="i4")
    group = zarr.open_group(str(main), mode="r+")
    group.create_array("big", shape=data.shape, chunks=(2**18,), dtype="i4", compressors=None)
    zarr.open_array(str(main), path="big", mode="r+")[:] = data
    (main / ".icefs" / "commit").write_text("big")
    sid = json.loads((main / ".icefs" / "status").read_text())["last_commit"]["snapshot_id"]
    other = mount_factory(url, *options, name="other")
    for where in (other.mountpoint / "branches" / "main", other.mountpoint / "snapshots" / sid):
        np.testing.assert_array_equal(zarr.open_array(str(where), path="big", mode="r")[:], data)
    stats = json.loads((other.mountpoint / ".icefs" / "stats").read_text())
    assert stats["bytes_read"] >= data.nbytes


def test_gcs_refs(gcs_repo, mount_factory):
    storage, url, options = gcs_repo
    _repo, first = seed(storage)
    m = mount_factory(url, *options)
    mnt = m.mountpoint
    os.mkdir(mnt / "branches" / "dev")
    zarr.open_array(str(mnt / "branches" / "dev"), path="x", mode="r+")[:3] = 9
    (mnt / "branches" / "dev" / ".icefs" / "commit").write_text("on dev")
    (mnt / "branches" / "dev" / ".icefs" / "tag").write_text("v1")
    assert sorted(os.listdir(mnt / "branches")) == ["dev", "main"]
    assert os.listdir(mnt / "tags") == ["v1"]
    tagged = zarr.open_array(str(mnt / "tags" / "v1"), path="x", mode="r")[:]
    np.testing.assert_array_equal(tagged, [9, 9, 9, 3, 4, 5])
    before = zarr.open_array(str(mnt / "snapshots" / first), path="x", mode="r")[:]
    np.testing.assert_array_equal(before, np.arange(6))
    with pytest.raises(OSError) as err:
        (mnt / "tags" / "v1" / "x" / "c" / "0").write_bytes(b"no")
    assert err.value.errno == errno.EROFS
    # what the mount did is in the repository
    fresh = icechunk.Repository.open(storage)
    assert fresh.list_tags() == {"v1"}
    assert next(s.message for s in fresh.ancestry(tag="v1")) == "on dev"
    os.rmdir(mnt / "branches" / "dev")
    assert "dev" not in icechunk.Repository.open(storage).list_branches()


def test_gcs_two_mounts_commit_race_loses_nothing(gcs_repo, mount_factory):
    storage, url, options = gcs_repo
    repo = _seed(storage)
    mounts = [mount_factory(url, *options, name=f"m{i}") for i in range(2)]
    _race(mounts, repo)
