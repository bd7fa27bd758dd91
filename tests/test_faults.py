"""Storage faults: the S3 server hangs during reads, writes and a commit, then comes back."""

from __future__ import annotations

import errno
import json
import os
import signal
import time

import icechunk
import numpy as np
import pytest
import zarr
from zarr.storage import LocalStore

from harness.servers import clean_env

#: Storage timeouts of the fault mounts, and the bound a caller may wait for EIO.
TIMEOUTS = ["--connect-timeout", "1", "--operation-timeout", "2", "--max-retries", "1"]
BOUND = 60.0  # above the timeouts and retries of TIMEOUTS on a busy machine; a hang is far longer


@pytest.fixture
def frozen(s3_server):
    """Freeze the S3 server (SIGSTOP: connections hang) and always thaw it afterwards."""
    stopped = []

    def freeze():
        os.kill(s3_server.proc.pid, signal.SIGSTOP)
        stopped.append(True)

    def thaw():
        if stopped:
            os.kill(s3_server.proc.pid, signal.SIGCONT)
            stopped.clear()

    yield freeze, thaw
    thaw()


def write_and_fsync(path, data):
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def timed(fn):
    started = time.monotonic()
    try:
        fn()
    except OSError as exc:
        return exc.errno, time.monotonic() - started
    return 0, time.monotonic() - started


def seeded_s3_repo(s3_server, monkeypatch, name):
    """A repository on *s3_server* with arrays x and y of 10 chunks each (16 KB, so
    reads reach the storage); the test's environment holds the server's keys."""
    bucket = s3_server.create_bucket(f"{name}-{os.getpid()}-{time.monotonic_ns()}")
    repo = icechunk.Repository.create(s3_server.storage(bucket, "r"))
    session = repo.writable_session("main")
    group = zarr.group(store=session.store)
    for array in ("x", "y"):
        arr = group.create_array(
            array, shape=(40_000,), chunks=(4000,), dtype="i4", compressors=None
        )
        arr[:] = np.arange(40_000)
    session.commit("seed")
    for key, value in clean_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret)
    return bucket, repo


def test_hung_storage_gives_eio_in_bounded_time_and_recovers(
    s3_server, mount_factory, frozen, monkeypatch
):
    freeze, thaw = frozen
    bucket, repo = seeded_s3_repo(s3_server, monkeypatch, "faults")
    m = mount_factory(f"s3://{bucket}/r", *s3_server.options(), *TIMEOUTS)
    main = m.mountpoint / "branches" / "main"
    assert sorted(os.listdir(main / "x" / "c"), key=int) == [str(i) for i in range(10)]

    freeze()
    # a read of a chunk never fetched, a write, and a commit: EIO, not a hang
    code, took = timed(lambda: (main / "x" / "c" / "9").read_bytes())
    assert code == errno.EIO, code
    assert took < BOUND
    # On S3 the close leaves the store to the background (write-behind): the fsync
    # that waits for it gets the EIO
    code, took = timed(lambda: write_and_fsync(main / "x" / "c" / "3", b"\0" * 16000))
    assert code == errno.EIO
    assert took < BOUND
    assert m.proc.poll() is None, "the daemon stays up"
    thaw()

    # back: the same write works, a commit fails while frozen, then succeeds once
    (main / "x" / "c" / "3").write_bytes(np.full(4000, 7, dtype="i4").tobytes())
    freeze()
    code, took = timed(lambda: (main / ".icefs" / "commit").write_text("during the outage"))
    assert code == errno.EIO
    assert took < BOUND
    status = json.loads((main / ".icefs/status").read_text())
    assert status["has_uncommitted_changes"] is True, "nothing lost"
    assert status["last_error"]
    thaw()
    (main / ".icefs" / "commit").write_text("after the outage")
    messages = [s.message for s in repo.ancestry(branch="main")]
    assert messages[:2] == ["after the outage", "seed"], "committed once, not twice"
    np.testing.assert_array_equal(
        zarr.open_array(repo.readonly_session(branch="main").store, path="x")[12000:16000],
        [7] * 4000,
    )
    assert (main / "x" / "c" / "9").read_bytes() == np.arange(36000, 40000, dtype="i4").tobytes()
    np.testing.assert_array_equal(zarr.open_array(LocalStore(main), path="x")[:4], [0, 1, 2, 3])


def test_repository_that_disappears_while_mounted(tmp_path, mount_factory):
    """The repository directory is moved away under the mount: EIO (not a hang, not a
    crash), a clear message, and everything works again once it is back."""
    import shutil

    from icefs.store.sample import sample_storage

    path = tmp_path / "repo"
    repo = icechunk.Repository.create(sample_storage(str(path)))
    session = repo.writable_session("main")
    zarr.group(store=session.store).create_array("a", shape=(8,), chunks=(2,), dtype="i4")[:] = 3
    session.commit("base")
    m = mount_factory(path)
    main = m.mountpoint / "branches" / "main"
    shutil.move(path, tmp_path / "away")
    started = time.monotonic()
    with pytest.raises(OSError) as info:
        (main / "a" / "c" / "1").read_bytes()  # not read before: it needs the storage
    assert info.value.errno == errno.EIO
    with pytest.raises(OSError) as info:  # storing needs a writable session: storage
        (main / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    assert info.value.errno == errno.EIO
    assert time.monotonic() - started < BOUND
    assert m.proc.poll() is None, "the daemon stays up"
    assert (
        "repository" in json.loads((m.mountpoint / ".icefs" / "status").read_text())["last_error"]
    )
    shutil.move(tmp_path / "away", path)
    assert (main / "a" / "c" / "1").read_bytes(), "works again once it is back"
    assert m.umount() == 0


def test_deadlines_with_default_storage_timeouts(s3_server, mount_factory, frozen, monkeypatch):
    """Icechunk's own limits (connect 10 s, operations 60 s, 3 retries) let a frozen
    server hang a caller for minutes; icefs's deadlines answer within their settings,
    here scaled down by --request-timeout and --commit-timeout only."""
    freeze, thaw = frozen
    bucket, repo = seeded_s3_repo(s3_server, monkeypatch, "deadline")
    request, commit = 3.0, 5.0
    m = mount_factory(
        f"s3://{bucket}/r",
        *s3_server.options(),
        "--request-timeout",
        str(request),
        "--commit-timeout",
        str(commit),
    )
    main = m.mountpoint / "branches" / "main"
    assert sorted(os.listdir(main / "x" / "c"), key=int) == [str(i) for i in range(10)]
    write_and_fsync(main / "x" / "c" / "3", np.full(4000, 7, dtype="i4").tobytes())
    first = list(repo.ancestry(branch="main"))[-1].id  # a snapshot never opened

    freeze()
    # a read of a chunk never fetched, and a listing of an array never listed
    code, took = timed(lambda: (main / "x" / "c" / "9").read_bytes())
    assert code == errno.ETIMEDOUT, code
    assert took < request + 20
    code, took = timed(lambda: os.listdir(m.mountpoint / "snapshots" / first / "x" / "c"))
    assert code == errno.ETIMEDOUT, code
    assert took < request + 20
    # the commit: ETIMEDOUT with the changes kept; a second one waits for the first
    code, took = timed(lambda: (main / ".icefs" / "commit").write_text("during the freeze"))
    assert code == errno.ETIMEDOUT, code
    assert took < commit + 20
    status = json.loads((main / ".icefs/status").read_text())
    assert status["has_uncommitted_changes"] is True, "nothing lost"
    assert "commit_timeout" in status["last_error"]
    code, _ = timed(lambda: (main / ".icefs" / "commit").write_text("again"))
    assert code == errno.ETIMEDOUT, code
    assert m.proc.poll() is None, "the daemon stays up"
    thaw()

    # the first commit lands late: status says so; nothing is applied twice
    deadline = time.monotonic() + 120
    while True:
        status = json.loads((main / ".icefs/status").read_text())
        last = status.get("last_commit") or {}
        if last.get("message") == "during the freeze" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert last.get("message") == "during the freeze", status
    assert last["late_seconds"] > 0
    assert status["has_uncommitted_changes"] is False
    assert not status["last_error"]
    (main / ".icefs" / "commit").write_text("after the freeze")
    messages = [s.message for s in repo.ancestry(branch="main")]
    assert messages[:2] == ["during the freeze", "seed"], "committed once, not twice"
    assert "landed" in m.log_text()
    np.testing.assert_array_equal(
        zarr.open_array(repo.readonly_session(branch="main").store, path="x")[12000:16000],
        [7] * 4000,
    )
    assert (main / "x" / "c" / "9").read_bytes() == np.arange(36000, 40000, dtype="i4").tobytes()
