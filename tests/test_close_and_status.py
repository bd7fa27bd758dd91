"""Close semantics, status and messages: what users are told matches what happened."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time

import icechunk
import numpy as np
import pytest
import zarr

from harness.mount import run_icefs
from icefs.store.sample import sample_storage


def status(ref_dir):
    return json.loads((ref_dir / ".icefs" / "status").read_text())


def test_shell_redirection_to_commit_is_not_an_error(one_array_repo, mount_factory):
    """bash closes a duplicate of the descriptor before `echo` writes: no error for that."""
    m = mount_factory(one_array_repo)
    main = m.mountpoint / "branches" / "main"
    (main / "a" / "c" / "0").write_bytes(np.array([5, 6], "<i4").tobytes())
    result = subprocess.run(
        ["bash", "-c", f"echo 'via bash' > {main}/.icefs/commit"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    doc = status(main)
    assert doc["last_commit"]["message"] == "via bash"
    assert doc["last_error"] is None
    assert "commit refused" not in m.log_text()
    assert "nothing was written" not in m.log_text()
    # closing with nothing written at all commits nothing, and status says why
    subprocess.run(["bash", "-c", f": > {main}/.icefs/commit"], check=True, timeout=60)
    doc = status(main)
    assert "nothing was written to .icefs/commit" in doc["last_error"]
    assert doc["last_commit"]["message"] == "via bash"


def test_rmdir_of_a_branch_names_what_keeps_it(one_array_repo, mount_factory):
    m = mount_factory(one_array_repo)
    os.mkdir(m.mountpoint / "branches" / "x")
    x = m.mountpoint / "branches" / "x"
    (x / "NOTES.txt").write_text("mine")
    with pytest.raises(OSError) as info:
        os.rmdir(x)
    assert info.value.errno == errno.EPERM
    root = json.loads((m.mountpoint / ".icefs" / "status").read_text())
    assert "scratch files" in root["last_error"]
    assert "NOTES.txt" in root["last_error"]
    assert "uncommitted changes" not in root["last_error"]
    doc = status(x)
    assert doc["has_uncommitted_changes"] is False
    assert doc["scratch_files"] == ["NOTES.txt"]
    os.unlink(x / "NOTES.txt")
    os.rmdir(x)
    assert "x" not in os.listdir(m.mountpoint / "branches")


@pytest.mark.fuse
def test_scratch_files_dropped_at_unmount_are_named(one_array_repo, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    log = tmp_path / "daemon.log"
    result = run_icefs(
        "mount",
        str(one_array_repo),
        str(mnt),
        "--log-file",
        str(log),
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    assert result.returncode == 0, result.stderr
    try:
        main = mnt / "branches" / "main"
        (main / "NOTES.txt").write_text("mine")
        (main / "a" / "c" / ".0.tmp").write_text("x")
        # through the Zarr v2 view of the branch too
        (mnt / "zarr2" / "branches" / "main" / "README.v2").write_text("v2 notes")
        scratch = ["NOTES.txt", "a/c/.0.tmp", "zarr2/README.v2"]
        root = json.loads((mnt / ".icefs" / "status").read_text())
        assert root["dropped_at_unmount"] == {
            "main": {"scratch_files": scratch, "pending_chunks": []}
        }
        branch = json.loads((main / ".icefs" / "status").read_text())
        assert branch["scratch_files"] == scratch
    finally:
        result = run_icefs("umount", str(mnt))
    assert result.returncode == 0, result.stderr
    assert "NOTES.txt" in result.stderr
    assert "zarr2/README.v2" in result.stderr
    assert "never committed" in result.stderr
    assert "NOTES.txt" in log.read_text()
    assert "dropped at unmount" in log.read_text()


def test_last_error_clears_once_the_file_is_stored(one_array_repo, mount_factory):
    m = mount_factory(one_array_repo)
    main = m.mountpoint / "branches" / "main"
    with pytest.raises(OSError) as info:
        (main / "a" / "c" / "1").write_bytes(b"short")
    assert info.value.errno == errno.EINVAL
    doc = status(main)
    assert "an uncompressed chunk of this array has 8" in doc["last_error"]
    assert doc["last_error_path"] == "a/c/1"
    assert doc["last_error_at"].endswith("Z")
    (main / "a" / "c" / "1").write_bytes(np.array([7, 8], "<i4").tobytes())
    doc = status(main)
    assert doc["last_error"] is None
    assert doc["last_error_path"] is None


@pytest.mark.parametrize("url", ["s3:/", "s3:bucket", "gs:/b", "az:x", "file:/x", "memory:"])
def test_malformed_urls_are_usage_errors(url, tmp_path):
    result = run_icefs("mount", url, str(tmp_path))
    assert result.returncode == 2, result.stderr
    assert f"malformed storage URL {url!r}" in result.stderr


def test_spool_of_a_zombie_daemon_is_removed(one_array_repo, tmp_path, mount_factory):
    """A daemon killed and never reaped (a zombie) leaves its spool; the next mount removes it."""
    cache = tmp_path / "cache"
    (tmp_path / "first").mkdir()
    zombie = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "icefs",
            "mount",
            "--foreground",
            str(one_array_repo),
            str(tmp_path / "first"),
            "--cache-dir",
            str(cache),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not any(p.name.startswith(f"spool-{zombie.pid}-") for p in cache.glob("*")):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(zombie.pid, signal.SIGKILL)
        while open(f"/proc/{zombie.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
            time.sleep(0.01)  # dead, and not reaped: a zombie
        mount_factory(one_array_repo, "--cache-dir", str(cache), name="second")
        assert not any(p.name.startswith(f"spool-{zombie.pid}-") for p in cache.glob("*"))
    finally:
        subprocess.run(
            ["fusermount3", "-u", "-z", str(tmp_path / "first")], check=False, capture_output=True
        )
        zombie.wait(timeout=10)


def test_a_conflict_is_told_once(one_array_repo, mount_factory):
    """Another writer changed the same chunk: EBUSY, and the message says so once."""
    m = mount_factory(one_array_repo, "--on-unmount", "discard")
    main = m.mountpoint / "branches" / "main"
    (main / "a" / "c" / "0").write_bytes(np.full(2, 5, "<i4").tobytes())
    repo = icechunk.Repository.open(sample_storage(str(one_array_repo)))
    session = repo.writable_session("main")
    zarr.open_array(session.store, path="a", mode="r+")[0:2] = 9
    session.commit("the other writer")
    result = run_icefs("commit", str(main), "-m", "mine")
    assert result.returncode != 0
    assert result.stderr.count("commit failed") == 1, result.stderr
    assert "conflict" in result.stderr.lower(), result.stderr
