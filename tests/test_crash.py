"""SIGKILL of the daemon while writing, committing and unmounting.

Every branch stands at its last completed commit (never a partial one), the
dead mountpoint is cleaned, and uncommitted writes that reached the crash
journal come back at the next mount, exactly once.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from typing import Any

import icechunk
import numpy as np
import pytest
import zarr
from zarr.storage import LocalStore

from harness.mount import run_icefs
from icefs.store.sample import sample_storage


@pytest.fixture
def repo_path(tmp_path):
    """A repository whose main holds array ``a`` (64 x 64 float64, 16 chunks), all zeros."""
    path = tmp_path / "repo"
    repo = icechunk.Repository.create(sample_storage(str(path)))
    session = repo.writable_session("main")
    zarr.group(store=session.store).create_array(
        "a", shape=(64, 64), chunks=(4, 64), dtype="f8", fill_value=0.0
    )[:] = 0.0
    session.commit("base")
    return path


def committed(repo_path) -> tuple[np.ndarray, int]:
    """The repository as a fresh process sees it: main's ``a`` and main's history length."""
    repo = icechunk.Repository.open(sample_storage(str(repo_path)))
    values = np.asarray(zarr.open_array(repo.readonly_session(branch="main").store, path="a")[:])
    return values, len(list(repo.ancestry(branch="main")))


def assert_whole(values: np.ndarray, allowed: set[float]) -> float:
    """The array holds one value everywhere (a commit is all or nothing); return it."""
    found = set(np.unique(values).tolist())
    assert len(found) == 1, f"partial content: {found}"
    assert found <= allowed, f"unexpected content: {found}"
    return found.pop()


def kill(m) -> None:
    m.proc.send_signal(signal.SIGKILL)
    m.proc.wait(timeout=10)


def clean_dead_mount(mountpoint) -> None:
    """`icefs umount` on the dead mountpoint leaves an ordinary directory."""
    with pytest.raises(OSError):
        os.listdir(mountpoint)  # ENOTCONN: the daemon is gone
    result = run_icefs("umount", str(mountpoint), timeout=30)
    assert result.returncode == 0, result.stderr
    assert not os.path.ismount(mountpoint)
    assert os.listdir(mountpoint) == []


def status(mountpoint) -> dict[str, Any]:
    return json.loads((mountpoint / "branches" / "main" / ".icefs" / "status").read_text())


def write_all(mountpoint, value: float, *, fsync: bool) -> None:
    main = mountpoint / "branches" / "main"
    zarr.open_array(LocalStore(main), path="a", mode="r+")[:] = value
    if fsync:
        fd = os.open(main / "a" / "c" / "0" / "0", os.O_RDONLY)
        os.fsync(fd)  # a durability point: the session is in the journal when it returns
        os.close(fd)


def test_kill_during_writes_recovers_the_journal(repo_path, mount_factory, tmp_path):
    m = mount_factory(repo_path)
    write_all(m.mountpoint, 7.0, fsync=True)
    kill(m)
    values, history = committed(repo_path)
    assert_whole(values, {0.0})  # nothing was committed
    assert history == 2
    clean_dead_mount(m.mountpoint)

    again = mount_factory(repo_path)  # same cache dir: the journal is found
    doc = status(again.mountpoint)
    assert doc["recovered_from_journal"], doc
    assert doc["has_uncommitted_changes"], doc
    assert doc["changed_chunks"] == 16, doc
    shown = np.asarray(
        zarr.open_array(LocalStore(again.mountpoint / "branches" / "main"), path="a")[:]
    )
    assert_whole(shown, {7.0})  # the branch view shows the recovered writes
    assert "recovered the uncommitted session" in again.log_text()
    assert (
        run_icefs(
            "commit", str(again.mountpoint / "branches" / "main"), "-m", "recovered"
        ).returncode
        == 0
    )
    values, history = committed(repo_path)
    assert_whole(values, {7.0})
    assert history == 3
    assert not status(again.mountpoint)["recovered_from_journal"]
    assert again.umount() == 0
    journal = tmp_path / "cache" / "journal"
    assert not [p for p in journal.rglob("*.session")], "a commit removes the journal"


def test_journal_can_be_turned_off(repo_path, mount_factory):
    m = mount_factory(repo_path, "--journal-interval", "0")
    write_all(m.mountpoint, 3.0, fsync=True)
    kill(m)
    clean_dead_mount(m.mountpoint)
    again = mount_factory(repo_path)
    assert not status(again.mountpoint)["has_uncommitted_changes"]
    assert_whole(
        np.asarray(
            zarr.open_array(LocalStore(again.mountpoint / "branches" / "main"), path="a")[:]
        ),
        {0.0},
    )


def test_periodic_journal_without_fsync(repo_path, mount_factory):
    m = mount_factory(repo_path, "--journal-interval", "0.2")
    write_all(m.mountpoint, 4.0, fsync=False)
    time.sleep(1.0)  # several journal intervals
    kill(m)
    clean_dead_mount(m.mountpoint)
    again = mount_factory(repo_path)
    assert status(again.mountpoint)["changed_chunks"] == 16
    again.umount()
    assert_whole(committed(repo_path)[0], {4.0})


@pytest.mark.parametrize("delay", [0.0, 0.02, 0.05, 0.1, 0.3])
def test_kill_during_commit_is_all_or_nothing_and_never_twice(repo_path, mount_factory, delay):
    m = mount_factory(repo_path)
    write_all(m.mountpoint, 5.0, fsync=True)

    def commit() -> None:
        with contextlib.suppress(OSError):  # the daemon died under us: expected
            (m.mountpoint / "branches" / "main" / ".icefs" / "commit").write_text("racing")

    writer = threading.Thread(target=commit)
    writer.start()
    time.sleep(delay)
    kill(m)
    writer.join(timeout=30)
    assert not writer.is_alive()
    values, history = committed(repo_path)
    landed = assert_whole(values, {0.0, 5.0}) == 5.0
    assert history == (3 if landed else 2)
    clean_dead_mount(m.mountpoint)

    again = mount_factory(repo_path)
    doc = status(again.mountpoint)
    if landed:  # a journal left behind belongs to a committed session: not recovered
        assert not doc["has_uncommitted_changes"], doc
    else:
        assert doc["recovered_from_journal"], doc
        assert doc["changed_chunks"] == 16, doc
    assert again.umount() == 0
    values, history = committed(repo_path)
    assert_whole(values, {5.0})
    assert history == 3, "exactly one commit holds the writes"


def test_kill_during_unmount(repo_path, mount_factory):
    m = mount_factory(repo_path)
    write_all(m.mountpoint, 6.0, fsync=True)
    os.system(f"fusermount3 -u {m.mountpoint}")  # the commit at unmount starts
    kill(m)
    values, history = committed(repo_path)
    landed = assert_whole(values, {0.0, 6.0}) == 6.0
    assert history == (3 if landed else 2)
    if os.path.ismount(m.mountpoint):
        clean_dead_mount(m.mountpoint)
    again = mount_factory(repo_path)  # the next mount also copes with what is left
    assert again.umount() == 0
    values, history = committed(repo_path)
    assert_whole(values, {6.0})
    assert history == 3


def test_next_mount_cleans_a_dead_mountpoint(repo_path, mount_factory):
    m = mount_factory(repo_path)
    kill(m)
    with pytest.raises(OSError):
        os.listdir(m.mountpoint)
    again = mount_factory(repo_path)  # same mountpoint, no `icefs umount` first
    assert again.mountpoint == m.mountpoint
    assert os.listdir(again.mountpoint / "branches") == ["main"]


def test_unreadable_journal_is_set_aside(repo_path, mount_factory, tmp_path, log_allows):
    log_allows.append("cannot be recovered")
    m = mount_factory(repo_path)
    write_all(m.mountpoint, 2.0, fsync=True)
    kill(m)
    clean_dead_mount(m.mountpoint)
    [saved] = (tmp_path / "cache" / "journal").rglob("*.session")
    header = saved.read_bytes().split(b"\n", 1)[0]
    saved.write_bytes(header + b"\nnot a session")
    again = mount_factory(repo_path)  # starts anyway
    assert not status(again.mountpoint)["has_uncommitted_changes"]
    assert "cannot be recovered" in again.log_text()
    assert list(saved.parent.glob("*.failed-*")), "the bad file is kept for inspection"


def test_journal_of_a_committed_session_is_not_replayed(repo_path, mount_factory, tmp_path):
    """A kill between the commit and the removal of its journal file (made deterministic
    by putting the file back) must not commit the same writes twice."""
    m = mount_factory(repo_path)
    write_all(m.mountpoint, 8.0, fsync=True)
    [saved] = (tmp_path / "cache" / "journal").rglob("*.session")
    content = saved.read_bytes()
    assert m.umount() == 0  # commits at unmount and removes the journal
    assert not saved.exists()
    saved.write_bytes(content)
    again = mount_factory(repo_path)
    assert not status(again.mountpoint)["has_uncommitted_changes"]
    assert "was committed before the crash" in again.log_text()
    assert not saved.exists()
    assert again.umount() == 0
    values, history = committed(repo_path)
    assert_whole(values, {8.0})
    assert history == 3


def test_journal_recovers_on_s3(s3_server, mount_factory, tmp_path):
    """The journal works for object storage too (moto on loopback, keys from a config file)."""
    import uuid

    bucket = s3_server.create_bucket(f"crash-{uuid.uuid4().hex[:8]}")
    repo = icechunk.Repository.create(s3_server.storage(bucket, "r"))
    session = repo.writable_session("main")
    zarr.group(store=session.store).create_array(
        "a", shape=(64, 64), chunks=(4, 64), dtype="f8", fill_value=0.0
    )[:] = 0.0
    session.commit("base")
    conf = tmp_path / "s3.toml"
    conf.write_text(
        f'region = "us-east-1"\nendpoint_url = "{s3_server.endpoint}"\nallow_http = true\n'
        f'force_path_style = true\naccess_key_id = "{s3_server.key_id}"\n'
        f'secret_access_key = "{s3_server.secret}"\n'
    )
    conf.chmod(0o600)
    url = f"s3://{bucket}/r"
    m = mount_factory(url, "--config", str(conf))
    write_all(m.mountpoint, 9.0, fsync=True)
    kill(m)
    clean_dead_mount(m.mountpoint)
    [saved] = (tmp_path / "cache" / "journal").rglob("*.session")
    assert saved.stat().st_mode & 0o077 == 0, "owner-only: it holds the storage settings"
    assert saved.parent.stat().st_mode & 0o077 == 0
    again = mount_factory(url, "--config", str(conf))
    assert status(again.mountpoint)["changed_chunks"] == 16
    assert again.umount() == 0
    fresh = icechunk.Repository.open(s3_server.storage(bucket, "r"))
    values = np.asarray(zarr.open_array(fresh.readonly_session(branch="main").store, path="a")[:])
    assert_whole(values, {9.0})
