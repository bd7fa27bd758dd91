"""Acknowledged commits are never lost: two mounts committing one branch at the same instant.

Each round, two mounts of one repository write a different row of ``conc`` and
write a message to ``.icefs/commit`` at the same moment. Every commit that
returned success must be on the branch's ancestry afterwards, and the branch
must never vanish from either mount while they race.  Then, without the kernel,
which commits check that they reached the branch afterwards.
"""

from __future__ import annotations

import json
import os
import threading
import uuid

import icechunk
import numpy as np
import zarr

from icefs.store import Repo
from icefs.store import writer as writer_module
from icefs.store.reflock import RefLock
from icefs.store.sample import sample_storage
from icefs.store.writer import open_writer

ROUNDS = 50


def _seed(storage: icechunk.Storage) -> icechunk.Repository:
    repo = icechunk.Repository.create(storage)
    session = repo.writable_session("main")
    zarr.group(store=session.store).create_array(
        "conc", shape=(2, 4), chunks=(1, 4), dtype="<i4", compressors=None, fill_value=0
    )[:] = -1
    session.commit("base")
    return repo


def _race(mounts, repo: icechunk.Repository, rounds: int = ROUNDS) -> None:
    """Run *rounds* of simultaneous commits from *mounts*; assert nothing acknowledged is lost."""
    barrier = threading.Barrier(len(mounts))
    acknowledged: list[str] = []
    failures: list[str] = []
    stop = threading.Event()
    vanished: list[str] = []

    def watch(branch_dir) -> None:
        while not stop.is_set():
            try:
                os.stat(branch_dir)
            except OSError as exc:
                vanished.append(f"{branch_dir}: {exc}")

    def writer(row: int, main) -> None:
        try:
            for r in range(rounds):
                (main / "conc" / "c" / str(row) / "0").write_bytes(
                    np.full(4, r + 1, "<i4").tobytes()
                )
                barrier.wait(timeout=60)
                with open(main / ".icefs" / "commit", "w") as f:
                    f.write(f"row {row} round {r}")
                status = json.loads((main / ".icefs" / "status").read_text())
                acknowledged.append(status["last_commit"]["snapshot_id"])
        except (OSError, threading.BrokenBarrierError) as exc:
            failures.append(f"row {row}: {exc!r}")
            barrier.abort()

    branch_dirs = [m.mountpoint / "branches" / "main" for m in mounts]
    watchers = [threading.Thread(target=watch, args=(d,)) for d in branch_dirs]
    writers = [threading.Thread(target=writer, args=(row, d)) for row, d in enumerate(branch_dirs)]
    for t in (*watchers, *writers):
        t.start()
    for t in writers:
        t.join(timeout=600)
    stop.set()
    for t in watchers:
        t.join(timeout=10)
    assert not failures, failures
    assert len(acknowledged) == rounds * len(mounts)
    ancestry = {meta.id for meta in repo.ancestry(branch="main")}
    lost = [sid for sid in acknowledged if sid not in ancestry]
    assert not lost, f"{len(lost)} of {len(acknowledged)} acknowledged commits are not on main"
    assert not vanished, vanished[:5]
    final = zarr.open_array(repo.readonly_session(branch="main").store, path="conc")[:]
    np.testing.assert_array_equal(final, np.full((2, 4), rounds))


def test_simultaneous_commits_on_local_storage(tmp_path, mount_factory):
    path = tmp_path / "repo"
    repo = _seed(sample_storage(str(path)))
    mounts = [mount_factory(path, name=f"m{i}") for i in range(2)]
    _race(mounts, repo)
    for m in mounts:
        assert "not safe for concurrent commits" in m.log_text()


def test_simultaneous_commits_on_s3(s3_server, mount_factory, tmp_path):
    bucket = s3_server.create_bucket(f"race-{uuid.uuid4().hex[:8]}")
    repo = _seed(s3_server.storage(bucket, "repo"))
    keys = tmp_path / "keys.toml"
    keys.write_text(
        f'access_key_id = "{s3_server.key_id}"\nsecret_access_key = "{s3_server.secret}"\n'
    )
    keys.chmod(0o600)
    mounts = [
        mount_factory(
            f"s3://{bucket}/repo", *s3_server.options(), "--config", str(keys), name=f"m{i}"
        )
        for i in range(2)
    ]
    _race(mounts, repo)


async def _commit_row(storage: icechunk.Storage, bridge, lock: RefLock | None) -> str:
    repo = _seed(storage)
    writer = await open_writer(Repo(repo, bridge, "test", lock), "main")
    await writer.set("conc/c/0/0", np.full(4, 7, dtype="<i4").tobytes())
    return await writer.commit("one row")


async def test_a_local_commit_is_checked_on_the_branch(bridge, tmp_path, monkeypatch):
    """On local disk a ref update is not conditional: each commit checks that it landed
    (and commits again when another writer's ref update dropped it)."""
    checked: list[str] = []
    original = writer_module.landed

    def spy(repository, branch, sid):
        checked.append(sid)
        return original(repository, branch, sid)

    monkeypatch.setattr(writer_module, "landed", spy)
    path = tmp_path / "repo"
    storage = icechunk.local_filesystem_storage(str(path))
    sid = await _commit_row(storage, bridge, RefLock(str(path)))
    assert checked == [sid]


async def test_an_object_store_commit_is_not_checked_again(bridge, monkeypatch):
    """On object stores the ref update is conditional: a commit that returned is on the
    branch, and checking it would cost a round trip (or more) per commit."""

    def never(*args):
        raise AssertionError("a commit on an object store checked its ref")

    monkeypatch.setattr(writer_module, "landed", never)
    assert await _commit_row(icechunk.in_memory_storage(), bridge, None)


async def test_rebases_and_retries_are_counted(bridge, tmp_path):
    """A commit over another writer's commit rebases, and `Repo.events` counts it (the
    metric icefs_commit_rebases_total); a commit with nothing in its way does not."""
    path = tmp_path / "repo"
    _seed(sample_storage(str(path)))
    repo = Repo(
        icechunk.Repository.open(sample_storage(str(path))), bridge, "test", RefLock(str(path))
    )
    first = await open_writer(repo, "main")
    second = await open_writer(repo, "main")
    await first.set("conc/c/0/0", np.full(4, 1, dtype="<i4").tobytes())
    await second.set("conc/c/1/0", np.full(4, 2, dtype="<i4").tobytes())
    await first.commit("first")
    assert repo.events["rebases"] == 0
    await second.commit("second, rebased over the first")
    assert repo.events["rebases"] == 1
    assert repo.events["commit_retries"] == 0
