"""Write-behind (`icefs.fs.uploads`): a close leaves the store of a chunk to the background.

Through the core on in-memory Icechunk, with the store of chosen keys held back or
failing: the close returns at once, reads see the bytes, the commit waits for the
store and includes it, failures surface at the next close, fsync and commit, bad
input still fails the close, a rename onto a chunk (how zarr publishes one) stores
the same way, stores land in the order of the closes, and the bytes waiting are
bounded.  Then once through a real mount on the loopback S3 server,
where ``auto`` turns it on.
"""

from __future__ import annotations

import json
import os
import subprocess

import icechunk
import numpy as np
import pytest
import trio
import zarr

from icefs.errors import InvalidInput, NotFound, StorageFailure
from icefs.settings import WriteBehind
from icefs.store.writer import BranchWriter
from tests.corehelpers import close, filesystem_of, make_core, read_all, rows_repo, walk

ROWS = 8
NEW = np.full(256, 7.5, dtype="f4").tobytes()


class Stores:
    """Holds back or fails `BranchWriter.set` for chosen keys."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.gates: dict[str, trio.Event] = {}
        self.failing: dict[str, int] = {}  # key -> failures left (-1: always)
        self.started: list[str] = []
        original = BranchWriter.set

        async def held(writer, key, data):
            self.started.append(key)
            gate = self.gates.get(key)
            if gate is not None:
                await gate.wait()
            left = self.failing.get(key, 0)
            if left:
                self.failing[key] = left - 1 if left > 0 else left
                raise StorageFailure(f"injected failure storing {key}")
            return await original(writer, key, data)

        monkeypatch.setattr(BranchWriter, "set", held)

    def hold(self, key: str) -> trio.Event:
        gate = self.gates[key] = trio.Event()
        return gate


@pytest.fixture
async def setup(bridge, tmp_path, monkeypatch):
    repo, data, _ = rows_repo(icechunk.in_memory_storage(), ROWS)
    core = await make_core(repo, bridge, write_behind=WriteBehind.ON, cache_dir=str(tmp_path / "c"))
    stores = Stores(monkeypatch)
    async with filesystem_of(core).background_stores():
        yield core, data, stores, core.branches.state("main")
    close(core)


async def rewrite(core, row: int, data: bytes = NEW, *, sync: bool = False) -> None:
    attr = await walk(core, "branches", "main", "a", "c", str(row), "0")
    reply = await core.open(attr.ino, os.O_WRONLY | os.O_TRUNC)
    try:
        await core.write(reply.fh, 0, data)
        await core.flush(reply.fh, sync=sync)
    finally:
        core.release(reply.fh)


async def read_row(core, *path: str) -> bytes:
    attr = await walk(core, *path)
    return (await read_all(core, attr.ino))[0]


async def committed_row(core, sid: str, row: int) -> bytes:
    return await read_row(core, "snapshots", sid, "a", "c", str(row), "0")


async def commit_once_released(state, gate: trio.Event, message: str) -> str:
    """Commit while *gate* holds a store back: the commit must wait until it is set."""
    done: list[str | None] = []

    async def commit() -> None:
        done.append(await state.commit(message))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(commit)
        await trio.sleep(0.05)
        assert done == [], "the commit waits for the store"
        gate.set()
    sid = done[0]
    assert sid is not None
    return sid


async def test_close_returns_before_the_store_and_commit_waits_for_it(setup):
    core, _data, stores, state = setup
    gate = stores.hold("a/c/3/0")
    await rewrite(core, 3)
    assert "a/c/3/0" in state.local.uploading, "the close returned with the store in flight"
    assert state.dirty
    assert await read_row(core, "branches", "main", "a", "c", "3", "0") == NEW
    sid = await commit_once_released(state, gate, "write-behind")
    assert await committed_row(core, sid, 3) == NEW
    assert state.local.uploading == {}
    assert "a/c/3/0" not in state.local.files, "a stored file leaves the overlay"


async def test_a_failed_store_is_kept_and_stored_again_by_the_commit(setup):
    core, _data, stores, state = setup
    stores.failing["a/c/2/0"] = 1
    await rewrite(core, 2)
    await state.settle()
    overlay = state.local.files["a/c/2/0"]
    assert isinstance(overlay.upload_error, StorageFailure)
    assert "a/c/2/0" in (state.last_error or "")
    assert await read_row(core, "branches", "main", "a", "c", "2", "0") == NEW
    sid = await state.commit("second try")
    assert sid is not None
    assert await committed_row(core, sid, 2) == NEW
    assert "a/c/2/0" not in state.local.files


async def test_a_store_that_keeps_failing_fails_the_commit_and_the_next_close(setup):
    core, data, stores, state = setup
    tip = core.refs.branches["main"]
    stores.failing["a/c/5/0"] = -1
    await rewrite(core, 5)
    with pytest.raises(StorageFailure, match="a/c/5/0"):
        await state.commit("fails")
    assert core.refs.branches["main"] == tip, "nothing was committed"
    assert await read_row(core, "branches", "main", "a", "c", "5", "0") == NEW
    attr = await walk(core, "branches", "main", "a", "c", "5", "0")
    reply = await core.open(attr.ino, os.O_RDONLY)
    with pytest.raises(StorageFailure, match="injected"):
        await core.flush(reply.fh)  # the next close stores it again, and says it failed
    core.release(reply.fh)
    # reported to that close: the previous content stays, the commit no longer fails
    stores.failing.clear()
    assert await read_row(core, "branches", "main", "a", "c", "5", "0") == data[5].tobytes()
    assert await state.commit("nothing left") is None


async def test_fsync_waits_for_the_store_and_reports_its_failure(setup):
    core, _data, stores, _state = setup
    gate = stores.hold("a/c/1/0")
    stores.failing["a/c/1/0"] = -1
    await rewrite(core, 1)
    attr = await walk(core, "branches", "main", "a", "c", "1", "0")
    reply = await core.open(attr.ino, os.O_RDONLY)
    outcome: list[BaseException | None] = []

    async def fsync() -> None:
        try:
            await core.flush(reply.fh, sync=True)
            outcome.append(None)
        except StorageFailure as exc:
            outcome.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fsync)
        await trio.sleep(0.05)
        assert outcome == [], "fsync waits for the background store"
        gate.set()
    core.release(reply.fh)
    assert isinstance(outcome[0], StorageFailure)


async def test_bad_input_fails_the_close_itself(setup):
    core, data, stores, state = setup
    with pytest.raises(InvalidInput):
        await rewrite(core, 4, b"xyz")  # 3 bytes for a chunk of 1 KiB, uncompressed
    assert state.local.uploading == {}
    assert stores.started == []
    assert await read_row(core, "branches", "main", "a", "c", "4", "0") == data[4].tobytes()


async def test_stores_land_in_the_order_of_the_closes_and_before_a_delete(setup):
    core, _data, stores, state = setup
    second = np.full(256, 9.0, dtype="f4").tobytes()
    gate = stores.hold("a/c/6/0")
    await rewrite(core, 6)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(rewrite, core, 6, second)  # waits for the first store
        await trio.sleep(0.05)
        gate.set()
    gate = stores.hold("a/c/7/0")
    await rewrite(core, 7)
    c = await walk(core, "branches", "main", "a", "c", "7")
    unlinked = trio.Event()

    async def unlink() -> None:
        await core.unlink(c.ino, "0")
        unlinked.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(unlink)
        await trio.sleep(0.05)
        assert not unlinked.is_set(), "the delete waits for the store it would undo"
        gate.set()
    sid = await state.commit("order")
    assert sid is not None
    assert await committed_row(core, sid, 6) == second
    snap_c = await walk(core, "snapshots", sid, "a", "c")
    with pytest.raises(NotFound):  # its only chunk deleted: no directory 7 either
        await core.lookup(snap_c.ino, "7")


async def test_bytes_waiting_to_be_stored_are_bounded(setup):
    core, _data, stores, state = setup
    uploader = filesystem_of(core).uploader
    uploader.budget = 2 * 1024  # two chunks
    gates = [stores.hold(f"a/c/{r}/0") for r in range(3)]
    closed: list[int] = []

    async def write(row: int) -> None:
        await rewrite(core, row)
        closed.append(row)

    async with trio.open_nursery() as nursery:
        for row in range(3):
            nursery.start_soon(write, row)
            await trio.sleep(0.02)
        assert sorted(closed) == [0, 1], "the third close waits for room"
        assert uploader.waiting_bytes <= uploader.budget
        gates[0].set()
        await trio.sleep(0.05)
        assert sorted(closed) == [0, 1, 2]
        for gate in gates[1:]:
            gate.set()
    assert await state.commit("bounded") is not None


async def publish(core, row: int, data: bytes = NEW) -> None:
    """Write row *row*'s chunk as zarr does: a temporary file, renamed onto the chunk."""
    c = await walk(core, "branches", "main", "a", "c", str(row))
    reply, _ = await core.create(c.ino, "0.partial", os.O_WRONLY)
    try:
        await core.write(reply.fh, 0, data)
        await core.flush(reply.fh)
    finally:
        core.release(reply.fh)
    await core.rename(c.ino, "0.partial", c.ino, "0")


async def test_a_rename_onto_a_chunk_leaves_its_store_to_the_background(setup):
    core, data, stores, state = setup
    gate = stores.hold("a/c/2/0")
    with trio.fail_after(5):  # a rename that waited for the store would wait for the gate
        await publish(core, 2)
    assert "a/c/2/0" in state.local.uploading, "the rename returned with the store in flight"
    assert await read_row(core, "branches", "main", "a", "c", "2", "0") == NEW
    c = await walk(core, "branches", "main", "a", "c", "2")
    with pytest.raises(NotFound):
        await core.lookup(c.ino, "0.partial")
    sid = await commit_once_released(state, gate, "renamed")
    assert await committed_row(core, sid, 2) == NEW
    assert "a/c/2/0" not in state.local.files, "a stored file leaves the overlay"
    # bad input still fails the rename itself, and nothing is stored
    with pytest.raises(InvalidInput):
        await publish(core, 3, b"xyz")
    assert "a/c/3/0" not in state.local.uploading
    assert await read_row(core, "branches", "main", "a", "c", "3", "0") == data[3].tobytes()


async def test_a_failed_store_of_a_renamed_chunk_surfaces_at_fsync_and_commit(setup):
    core, data, stores, state = setup
    tip = core.refs.branches["main"]
    stores.failing["a/c/4/0"] = -1
    await publish(core, 4)
    await state.settle()
    assert isinstance(state.local.files["a/c/4/0"].upload_error, StorageFailure)
    assert await read_row(core, "branches", "main", "a", "c", "4", "0") == NEW
    with pytest.raises(StorageFailure, match="a/c/4/0"):
        await state.commit("fails")
    assert core.refs.branches["main"] == tip, "nothing was committed"
    attr = await walk(core, "branches", "main", "a", "c", "4", "0")
    reply = await core.open(attr.ino, os.O_RDONLY)
    with pytest.raises(StorageFailure, match="injected"):
        await core.flush(reply.fh, sync=True)
    core.release(reply.fh)
    stores.failing.clear()
    assert await read_row(core, "branches", "main", "a", "c", "4", "0") == data[4].tobytes()


@pytest.mark.fuse
def test_write_behind_through_an_s3_mount(s3_server, mount_factory, tmp_path):
    """On S3, ``auto`` stores closed chunk files in the background; the commit has them."""
    bucket = s3_server.create_bucket("write-behind")
    repo = icechunk.Repository.create(s3_server.storage(bucket, "r"))
    session = repo.writable_session("main")
    zarr.group(store=session.store).create_array(
        "a", shape=(32, 256), chunks=(1, 256), dtype="f4", compressors=None
    )
    session.commit("empty array")
    m = mount_factory(
        f"s3://{bucket}/r", *s3_server.options(), "--config", str(_keys(s3_server, tmp_path))
    )
    main = m.mountpoint / "branches" / "main"
    rows = np.arange(32 * 256, dtype="f4").reshape(32, 256)
    (main / "a" / "c").mkdir(exist_ok=True)
    for r in range(32):
        (main / "a" / "c" / str(r)).mkdir(exist_ok=True)
        (main / "a" / "c" / str(r) / "0").write_bytes(rows[r].tobytes())
    for r in range(32):  # read-your-writes, stored or not yet
        assert (main / "a" / "c" / str(r) / "0").read_bytes() == rows[r].tobytes()
    (main / ".icefs" / "commit").write_text("through write-behind")
    stats = json.loads((m.mountpoint / ".icefs" / "stats").read_text())
    assert stats["background_stores"]["stored"] == 32, stats["background_stores"]
    assert stats["background_stores"]["failed"] == 0
    fresh = icechunk.Repository.open(s3_server.storage(bucket, "r"))
    got = zarr.open_array(fresh.readonly_session(branch="main").store, path="a", mode="r")[:]
    np.testing.assert_array_equal(got, rows)
    out = subprocess.run(["icefs", "stats", str(m.mountpoint)], capture_output=True, text=True)
    assert "background stores in flight 0, stored 32, failed 0" in out.stdout, out


def _keys(s3_server, tmp_path):
    conf = tmp_path / "keys.toml"
    conf.write_text(
        f'access_key_id = "{s3_server.key_id}"\nsecret_access_key = "{s3_server.secret}"\n'
    )
    conf.chmod(0o600)
    return conf


async def test_files_still_being_stored_at_a_crash_are_reported_lost(bridge, tmp_path, monkeypatch):
    """The journal saved with a store in flight names that file; after the crash the
    next mount recovers what was stored and reports the rest as lost (status, log)."""
    from icefs.daemon.journal import Journal
    from icefs.fs import Filesystem, MountOptions
    from icefs.store import Repo

    repo, data, _ = rows_repo(icechunk.local_filesystem_storage(str(tmp_path / "r")), ROWS)
    options = MountOptions(write_behind=WriteBehind.ON, cache_dir=str(tmp_path / "cache"))

    def build() -> Filesystem:
        journal = Journal(str(tmp_path / "cache"), "the test repository")
        return Filesystem.build(Repo(repo, bridge, "test"), options, journal=journal)

    stores = Stores(monkeypatch)
    fs = build()
    await fs.start(recover=True)
    core = fs.core
    with trio.CancelScope() as crash:
        async with fs.background_stores():
            stores.hold("a/c/3/0")
            await rewrite(core, 2)
            state = core.branches.state("main")
            await state.settle("a/c/2/0")
            await rewrite(core, 3)  # its store never ends: the daemon dies first
            await state.save_journal()
            crash.cancel()
    fs.close()

    stores.gates.clear()
    fs = build()
    await fs.start(recover=True)
    core = fs.core
    state = core.branches.states["main"]
    assert state.lost_at_crash == ["a/c/3/0"]
    assert "a/c/3/0" in (state.last_error or "")
    assert await read_row(core, "branches", "main", "a", "c", "2", "0") == NEW, "recovered"
    assert await read_row(core, "branches", "main", "a", "c", "3", "0") == data[3].tobytes()
    status = json.loads(await read_row(core, "branches", "main", ".icefs", "status"))
    assert status["lost_at_crash"] == ["a/c/3/0"]
    assert await state.commit("after the crash") is not None
    assert state.lost_at_crash == []
    fs.close()


async def test_a_write_during_a_close_is_stored_by_the_next_close(setup):
    """Two descriptors of one file: a write through one while the other's close waits is
    not taken as stored by that close; the writer's own close stores it."""
    core, _data, stores, state = setup
    first, second, third = (np.full(256, v, dtype="f4").tobytes() for v in (1.0, 2.0, 3.0))
    gate = stores.hold("a/c/0/0")
    await rewrite(core, 0, first)  # its store is held: the next close of the file waits
    attr = await walk(core, "branches", "main", "a", "c", "0", "0")
    a = await core.open(attr.ino, os.O_WRONLY)
    b = await core.open(attr.ino, os.O_WRONLY)
    await core.write(a.fh, 0, second)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(core.flush, a.fh)  # waits for the first store
        await trio.sleep(0.02)
        await core.write(b.fh, 0, third)  # while that close waits
        gate.set()
    core.release(a.fh)
    await core.flush(b.fh)
    core.release(b.fh)
    sid = await state.commit("both")
    assert sid is not None
    assert await committed_row(core, sid, 0) == third
