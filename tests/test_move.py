"""``mv`` of arrays and groups inside a branch is Icechunk's move: one commit, no chunk copied.

Real mounts, ordinary file calls (``os.rename``, ``renameat2``, the ``mv`` command),
and the repository read directly afterwards.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import subprocess
from typing import Any

import icechunk
import numpy as np
import pytest
import zarr
from zarr.storage import LocalStore

from harness.mount import run_icefs
from icefs.store.sample import sample_storage

pytestmark = pytest.mark.fuse

RENAME_NOREPLACE = 1
AT_FDCWD = -100


def _renameat2(old, new, flags: int) -> int:
    """renameat2(2): 0, or the errno."""
    libc = ctypes.CDLL(None, use_errno=True)
    done = libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags)
    return 0 if done == 0 else ctypes.get_errno()


def _chunk_objects(repo_path) -> int:
    return (
        sum(1 for _ in (repo_path / "chunks").iterdir()) if (repo_path / "chunks").exists() else 0
    )


@pytest.fixture
def repo_path(tmp_path):
    """A branch with an array of 2,000 chunks of 1 KiB (objects, not inline), a group
    holding an array, and another array."""
    path = tmp_path / "repo"
    repo = icechunk.Repository.create(sample_storage(str(path)))
    session = repo.writable_session("main")
    root = zarr.group(store=session.store)
    big = root.create_array(
        "big", shape=(40, 50 * 256), chunks=(1, 256), dtype="<i4", compressors=None
    )
    big[:] = np.arange(40 * 50 * 256, dtype="<i4").reshape(40, 50 * 256)
    group = root.create_group("grp", attributes={"kind": "group"})
    small: dict[str, Any] = {"shape": (4,), "chunks": (2,), "dtype": "<i2", "compressors": None}
    group.create_array("inner", **small)[:] = [1, 2, 3, 4]
    root.create_array("other", **small)[:] = 5
    session.commit("base")
    return path


def _direct(repo_path, branch="main"):
    repo = icechunk.Repository.open(sample_storage(str(repo_path)))
    return zarr.open_group(repo.readonly_session(branch=branch).store, mode="r")


def _messages(repo_path, n=3):
    repo = icechunk.Repository.open(sample_storage(str(repo_path)))
    return [s.message for s in repo.ancestry(branch="main")][:n]


def test_rename_an_array_is_a_move_without_a_chunk_copied(repo_path, mount_factory):
    m = mount_factory(repo_path)
    main = m.mountpoint / "branches" / "main"
    expected = _direct(repo_path)["big"][...]
    objects = _chunk_objects(repo_path)
    assert objects >= 2000
    with open(main / "big" / "c" / "3" / "7", "rb") as reader:  # a reader already open
        first = reader.read(100)
        os.rename(main / "big", main / "renamed")
        assert reader.read() == (main / "renamed" / "c" / "3" / "7").read_bytes()[100:]
    assert first
    assert not (main / "big").exists()
    assert sorted(os.listdir(main)) == ["grp", "other", "renamed", "zarr.json"]
    np.testing.assert_array_equal(zarr.open_array(LocalStore(main / "renamed"))[...], expected)
    assert _chunk_objects(repo_path) == objects, "no chunk object written"
    assert _messages(repo_path, 1) == ["icefs: mv /big /renamed"]
    direct = _direct(repo_path)
    assert "big" not in direct
    np.testing.assert_array_equal(direct["renamed"][...], expected)
    # the other views follow, and the history says it moved
    assert (m.mountpoint / "zarr2" / "branches" / "main" / "renamed" / ".zarray").exists()
    assert not (m.mountpoint / "zarr2" / "branches" / "main" / "big").exists()
    diff = run_icefs("diff", _tip(repo_path), "-C", str(main))  # what the move commit did
    assert diff.returncode == 0, diff.stderr
    assert "> /big -> /renamed  moved" in diff.stdout, diff.stdout
    # and after a remount
    m.stop()
    again = mount_factory(repo_path, name="again")
    np.testing.assert_array_equal(
        zarr.open_array(LocalStore(again.mountpoint / "branches" / "main" / "renamed"))[...],
        expected,
    )


def _tip(repo_path) -> str:
    return icechunk.Repository.open(sample_storage(str(repo_path))).lookup_branch("main")


def test_rename_a_group_and_the_posix_rules_for_targets(repo_path, mount_factory):
    m = mount_factory(repo_path)
    main = m.mountpoint / "branches" / "main"
    os.rename(main / "grp", main / "group2")
    assert json.loads((main / "group2" / "zarr.json").read_text())["attributes"] == {
        "kind": "group"
    }
    np.testing.assert_array_equal(
        zarr.open_array(LocalStore(main / "group2" / "inner"))[...], [1, 2, 3, 4]
    )
    # onto an existing node: not empty
    with pytest.raises(OSError) as info:
        os.rename(main / "group2", main / "other")
    assert info.value.errno == errno.ENOTEMPTY
    # RENAME_NOREPLACE onto anything there
    assert _renameat2(main / "group2", main / "other", RENAME_NOREPLACE) == errno.EEXIST
    # onto a file
    with pytest.raises(OSError) as info:
        os.rename(main / "group2", main / "zarr.json")
    assert info.value.errno == errno.ENOTDIR
    # onto an empty directory: replaced, as POSIX says
    (main / "empty").mkdir()
    os.rename(main / "group2", main / "empty")
    assert (main / "empty" / "inner" / "zarr.json").exists()
    # into an array: a node's parent must be a group
    with pytest.raises(OSError) as info:
        os.rename(main / "empty", main / "other" / "sub")
    assert info.value.errno == errno.ENOTDIR
    # into a group: fine
    os.rename(main / "other", main / "empty" / "other")
    np.testing.assert_array_equal(
        zarr.open_array(LocalStore(main / "empty" / "other"))[...], [5, 5, 5, 5]
    )
    # an empty directory made by mkdir moves in the mount
    (main / "scratchdir").mkdir()
    os.rename(main / "scratchdir", main / "scratchdir2")
    assert (main / "scratchdir2").is_dir()
    assert sorted(_direct(repo_path).group_keys()) == ["empty"]


def test_uncommitted_writes_are_committed_first_never_lost(repo_path, mount_factory):
    m = mount_factory(repo_path)
    main = m.mountpoint / "branches" / "main"
    # outside the moved tree, and inside it (stored at close, not yet committed)
    (main / "other" / "c" / "0").write_bytes(np.array([7, 7], "<i2").tobytes())
    (main / "grp" / "inner" / "c" / "1").write_bytes(np.array([8, 9], "<i2").tobytes())
    (main / "grp" / "notes.txt").write_text("a scratch file moves along")
    os.rename(main / "grp", main / "moved")
    assert _messages(repo_path, 2) == [
        "icefs: mv /grp /moved",
        "icefs: uncommitted changes, before mv /grp /moved",
    ]
    direct = _direct(repo_path)
    np.testing.assert_array_equal(direct["other"][...], [7, 7, 5, 5])
    np.testing.assert_array_equal(direct["moved/inner"][...], [1, 2, 8, 9])
    assert (main / "moved" / "notes.txt").read_text() == "a scratch file moves along"
    # a file still open for writing inside the tree: its bytes are not stored yet
    with open(main / "moved" / "inner" / "c" / "0", "wb") as f:
        f.write(np.array([3, 3], "<i2").tobytes())
        f.flush()
        with pytest.raises(OSError) as info:
            os.rename(main / "moved", main / "again")
        assert info.value.errno == errno.EBUSY
    np.testing.assert_array_equal(
        zarr.open_array(LocalStore(main / "moved" / "inner"))[...], [3, 3, 8, 9]
    )
    status = json.loads((main / ".icefs" / "status").read_text())
    assert status["has_uncommitted_changes"]


def test_mv_falls_back_to_a_copy_where_a_move_cannot_be(repo_path, mount_factory, tmp_path):
    """Across branches (EXDEV), mv copies and deletes, and exits 0."""
    m = mount_factory(repo_path)
    (m.mountpoint / "branches" / "dev").mkdir()
    main = m.mountpoint / "branches" / "main"
    dev = m.mountpoint / "branches" / "dev"
    expected = _direct(repo_path)["big"][...]
    for name in ("grp", "big"):  # big: 2,000 chunks in 40 chunk directories
        done = subprocess.run(
            ["mv", str(main / name), str(dev / name)], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
        assert not (main / name).exists()
    np.testing.assert_array_equal(zarr.open_array(LocalStore(dev / "big"))[...], expected)
    np.testing.assert_array_equal(
        zarr.open_array(LocalStore(dev / "grp" / "inner"))[...], [1, 2, 3, 4]
    )
