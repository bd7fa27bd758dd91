"""The filesystem core called directly (no kernel), over real in-memory and local repositories."""

from __future__ import annotations

import errno
import json
import os
import stat

import icechunk
import numpy as np
import pytest
import trio
import zarr

from icefs.errors import (
    BadHandle,
    IsADirectory,
    NoAttribute,
    NotADirectory,
    NotFound,
    NotPermitted,
    NotSupported,
    PermissionDenied,
    ReadOnly,
    Stale,
)
from icefs.fs import AttrChange
from icefs.fs.inodes import ROOT_INODE
from icefs.fs.values import IMMUTABLE_TTL
from icefs.store.sample import build_sample, sample_storage
from tests.corehelpers import (
    close,
    count_resolutions,
    entries,
    listing,
    make_core,
    read_all,
    rows_tag_core,
    store_get,
    walk,
)


@pytest.fixture(params=["memory", "local"])
def repository(request, tmp_path):
    if request.param == "memory":
        repo = icechunk.Repository.create(icechunk.in_memory_storage())
    else:
        repo = icechunk.Repository.create(sample_storage(str(tmp_path / "repo")))
    ids = build_sample(repo, times=4, lat=6, lon=8)
    return repo, ids


@pytest.fixture
async def core(repository, bridge, tmp_path):
    repo, _ = repository
    c = await make_core(repo, bridge, refresh=0.5, cache_dir=str(tmp_path / "cache"))
    yield c
    close(c)


async def test_root_listing_hides_control_dir(core):
    assert await listing(core, ROOT_INODE) == [
        "branches",
        "tags",
        "snapshots",
        "zarr2",
        "zarr2-decoded",
    ]
    ctrl = await core.lookup(ROOT_INODE, ".icefs")
    assert stat.S_ISDIR(ctrl.mode)
    assert await listing(core, ctrl.ino) == ["ops", "pid", "refresh", "stats", "status", "version"]


async def test_refs_listed(core, repository):
    _, ids = repository
    branches = await walk(core, "branches")
    assert await listing(core, branches.ino) == ["experiment", "main"]
    tags = await walk(core, "tags")
    assert await listing(core, tags.ino) == ["v1.0"]
    snaps = await walk(core, "snapshots")
    names = await listing(core, snaps.ino)
    assert set(names) == {ids["v1.0"], ids["main"], ids["experiment"], "1CECHNKREP0F1RSTCMT0"}
    assert names[-1] == "1CECHNKREP0F1RSTCMT0", "newest first"


async def test_tree_listing_matches_icechunk(core, repository):
    repo, ids = repository
    main = await walk(core, "branches", "main")
    assert await listing(core, main.ino) == ["lat", "lon", "temperature", "time", "zarr.json"]
    keys = sorted(repo.readonly_session(snapshot_id=ids["main"]).store.list())
    # Every key of the snapshot resolves to a regular file of the right size.
    for key in keys:
        attr = await walk(core, "branches", "main", *key.split("/"))
        assert stat.S_ISREG(attr.mode)
        expected = await trio.to_thread.run_sync(store_get, repo, ids["main"], key)
        data, _ = await read_all(core, attr.ino, chunk=333)
        assert data == expected, key
        assert attr.size == len(data), key


async def test_byte_ranges(core, repository):
    attr = await walk(core, "tags", "v1.0", "temperature", "c", "0", "0", "0")
    whole, _ = await read_all(core, attr.ino)
    reply = await core.open(attr.ino, os.O_RDONLY)
    end = attr.size
    for offset, size in [(0, 1), (5, 17), (end - 3, 100), (end, 10), (end + 5, 1)]:
        assert await core.read(reply.fh, offset, size) == whole[offset : offset + size]
    core.release(reply.fh)


async def test_chunk_reads_answer_from_icechunks_buffer_without_a_copy(bridge, tmp_path):
    core, data = await rows_tag_core(bridge, tmp_path, 2)
    for view in ("tags/t", "branches/main"):  # read-ahead path and plain path
        attr = await walk(core, *view.split("/"), "a", "c", "1", "0")
        reply = await core.open(attr.ino, os.O_RDONLY)
        first = await core.read(reply.fh, 0, 7)
        rest = await core.read(reply.fh, 7, attr.size)
        core.release(reply.fh)
        assert bytes(first) + bytes(rest) == data[1].tobytes()
        # Both replies are views of the one buffer Icechunk returned, not of a copy.
        assert isinstance(first, memoryview)
        assert isinstance(rest, memoryview)
        assert first.obj is rest.obj
        assert not isinstance(first.obj, bytes), view
    close(core)


async def test_metadata_file_is_exact(core, repository):
    attr = await walk(core, "branches", "main", "temperature", "zarr.json")
    data, _ = await read_all(core, attr.ino)
    doc = json.loads(data)
    assert doc["node_type"] == "array"
    assert doc["shape"] == [4, 6, 8]
    assert attr.size == len(data)


async def test_tag_content_is_immutable_and_cached(core, repository):
    _, _ids = repository
    attr = await walk(core, "tags", "v1.0", "temperature", "zarr.json")
    assert attr.attr_timeout == IMMUTABLE_TTL
    _, reply = await read_all(core, attr.ino)
    assert reply.keep_cache
    assert attr.mode & 0o222 == 0
    # the tag's version has no history attribute, main's has
    main = await walk(core, "branches", "main", "temperature", "zarr.json")
    assert b"history" in (await read_all(core, main.ino))[0]
    assert b"history" not in (await read_all(core, attr.ino))[0]
    assert main.attr_timeout == 0.5


async def test_tag_paths_resolve_once_until_the_tag_goes(core, repository, monkeypatch):
    """Paths in tags and snapshots are resolved once (lookup, then getattr and open reuse
    it); a deleted tag is noticed all the same."""
    repo, ids = repository
    names = ("temperature", "c", "0", "0", "0")
    tag_file = await walk(core, "tags", "v1.0", *names)
    snap_file = await walk(core, "snapshots", ids["v1.0"], *names)
    asked = count_resolutions(monkeypatch)
    for attr in (tag_file, snap_file):
        assert (await core.getattr(attr.ino)).size == attr.size
        core.release((await core.open(attr.ino, os.O_RDONLY)).fh)
    assert (await walk(core, "tags", "v1.0", *names)).ino == tag_file.ino
    assert asked == [], "resolved again"
    repo.delete_tag("v1.0")
    await core.refs.refresh()
    with pytest.raises(Stale):
        await core.getattr(tag_file.ino)
    with pytest.raises(NotFound):
        await walk(core, "tags", "v1.0")
    assert (await core.getattr(snap_file.ino)).size == snap_file.size


async def test_listed_entries_resolve_as_listed(core, repository, monkeypatch):
    """An entry the kernel got from a tag's listing, never looked up (readdirplus), is
    opened (open, opendir) as the listing found it: no directory's name is resolved
    again, and a chunk file's only by its own name (a search of its array's index: chunk
    directories are listed from the index, with no object per file kept)."""
    directory = await walk(core, "tags", "v1.0", "temperature", "c")
    listing = core.listed(await core.opendir(directory.ino), 0)
    asked = count_resolutions(monkeypatch)
    below = listing[0][2]
    inner = core.listed(await core.opendir(below.ino), 0)
    files = core.listed(await core.opendir(inner[0][2].ino), 0)  # a chunk directory
    core.release((await core.open(files[0][2].ino, os.O_RDONLY)).fh)
    assert asked == [files[0][1]]


async def test_mtime_is_commit_time(core, repository):
    repo, ids = repository
    attr = await walk(core, "snapshots", ids["v1.0"], "zarr.json")
    written = repo.lookup_snapshot(ids["v1.0"]).written_at.timestamp()
    assert abs(attr.mtime_ns / 1e9 - written) < 1e-3


async def test_unknown_names(core, repository):
    with pytest.raises(NotFound):
        await walk(core, "branches", "nope")
    with pytest.raises(NotFound):
        await walk(core, "tags", "nope")
    with pytest.raises(NotFound):
        await walk(core, "snapshots", "0000000000000000000X")
    with pytest.raises(NotFound):
        await walk(core, "snapshots", "not-an-id")
    with pytest.raises(NotFound):
        await walk(core, "elsewhere")
    with pytest.raises(NotFound) as info:
        await walk(core, "tags", "v1.0", "temperature", "c", "9", "0", "0")
    assert info.value.cache_for == IMMUTABLE_TTL, "absence in a tag is cached"
    with pytest.raises(NotFound):
        await walk(core, "tags", "v1.0", "temperature", "c", "00")
    with pytest.raises(NotADirectory):
        await walk(core, "tags", "v1.0", "zarr.json", "x")


async def test_commit_moves_the_branch_view_to_the_new_tip_at_once(core):
    # The session is dropped and the tip published with no await in between: no
    # other task can see the branch at its old tip (a reader saw old chunks, or
    # ENOENT for new ones, under load).
    f = await walk(core, "branches", "main", "zarr.json")
    doc = json.loads((await read_all(core, f.ino))[0])
    doc.setdefault("attributes", {})["note"] = "committed"
    reply = await core.open(f.ino, os.O_WRONLY | os.O_TRUNC)
    await core.write(reply.fh, 0, json.dumps(doc).encode())
    await core.flush(reply.fh)
    core.release(reply.fh)
    sid = await core.branches.states["main"].commit("note")
    assert sid is not None
    assert core.refs.branches["main"] == sid
    f = await walk(core, "branches", "main", "zarr.json")
    assert b"committed" in (await read_all(core, f.ino))[0]


async def put(core, parent_ino, name, data):
    """Create *name* in *parent_ino* with *data* and close it (storing it)."""
    reply, attr = await core.create(parent_ino, name, os.O_WRONLY)
    await core.write(reply.fh, 0, data)
    await core.flush(reply.fh)
    core.release(reply.fh)
    return attr


def array_doc(ndim):
    """The zarr.json of a uint8 array of *ndim* dimensions of 4, one element per chunk."""
    return json.dumps(
        {
            "zarr_format": 3,
            "node_type": "array",
            "shape": [4] * ndim,
            "data_type": "uint8",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1] * ndim}},
            "chunk_key_encoding": {"name": "default"},
            "fill_value": 0,
            "codecs": [{"name": "bytes"}],
        }
    ).encode()


async def test_branch_directories_kept_follow_mkdir_stores_and_deletes(core, repository):
    """Branch paths resolve from directories resolved before (`_resolve_in_branch`);
    each change that alters what a directory is shows at once."""
    main = await walk(core, "branches", "main")
    b = await core.mkdir(main.ino, "b")
    await put(core, b.ino, "zarr.json", array_doc(2))
    c = await core.mkdir(b.ino, "c")
    row = await core.mkdir(c.ino, "2")  # empty directories made here
    assert stat.S_ISDIR((await core.getattr(row.ino)).mode)
    # The first chunk stored below makes them the tree's chunk directories.
    await put(core, row.ino, "3", b"\x07")
    assert (await core.lookup(row.ino, "3")).size == 1
    assert await listing(core, row.ino) == ["3"]
    assert await listing(core, c.ino) == ["2"]
    # Deleting the last chunk below directories leaves them, empty, as on any file
    # system (Icechunk has no directories: the mount keeps them until rmdir).
    await core.unlink(row.ino, "3")
    assert await listing(core, row.ino) == []
    assert await listing(core, c.ino) == ["2"]
    await core.rmdir(c.ino, "2")
    await core.rmdir(b.ino, "c")
    for gone in (row, c):
        with pytest.raises(NotFound):
            await core.getattr(gone.ino)
    # An array given one dimension less: a row is no longer a directory.
    c = await core.mkdir(b.ino, "c")
    one = await core.mkdir(c.ino, "1")
    await put(core, one.ino, "0", b"\x01")
    assert stat.S_ISDIR((await core.getattr(one.ino)).mode)
    await put(core, b.ino, "zarr.json", array_doc(1))
    with pytest.raises(NotFound):
        await core.getattr(one.ino)
    # A commit moves every directory to the new snapshot (its time is their mtime).
    before = (await core.getattr(b.ino)).mtime_ns
    sid = await core.branches.states["main"].commit("b")
    assert sid is not None
    after = (await core.getattr(b.ino)).mtime_ns
    assert after == int(repository[0].lookup_snapshot(sid).written_at.timestamp() * 1e9)
    assert after != before
    # A discard leaves the tip where it was, and takes the session's directories away.
    d = await core.mkdir(main.ino, "d")
    await put(core, d.ino, "zarr.json", array_doc(2))
    row = await core.mkdir((await core.mkdir(d.ino, "c")).ino, "3")
    await put(core, row.ino, "0", b"\x02")
    assert stat.S_ISDIR((await core.getattr(row.ino)).mode)
    await core.branches.states["main"].discard()
    assert core.refs.branches["main"] == sid
    with pytest.raises(NotFound):
        await core.getattr(row.ino)


async def test_stored_bytes_stay_when_a_file_on_disk_is_written_again(bridge, tmp_path):
    """A file spooled on disk (no write-buffer RAM left) is stored as a copy: Icechunk
    keeps a small chunk's buffer until the commit, and a map of the spool file let a
    later write change the stored chunk, and a truncate crash the commit."""
    repo = icechunk.Repository.create(icechunk.in_memory_storage())
    core = await make_core(repo, bridge, write_buffer=0, cache_dir=str(tmp_path / "c"))
    main = await walk(core, "branches", "main")
    b = await core.mkdir(main.ino, "b")
    await put(core, b.ino, "zarr.json", array_doc(1))
    c = await core.mkdir(b.ino, "c")
    reply, attr = await core.create(c.ino, "0", os.O_RDWR)
    await core.write(reply.fh, 0, b"\x07")
    await core.flush(reply.fh, sync=True)  # stored, from a spool file on disk
    assert core.overlay.spool.spilled_files > 0
    state = core.branches.states["main"]
    await core.write(reply.fh, 0, b"\x09")  # written again, not stored yet
    assert bytes(await state.writer.reader.get("b/c/0")) == b"\x07"
    await core.setattr(attr.ino, AttrChange(size=0))  # cut short while open
    sid = await state.commit("the first close")
    core.release(reply.fh)
    assert store_get(repo, sid, "b/c/0") == b"\x07"
    close(core)


async def test_writes_are_refused_on_read_only_views(core):
    tag = await walk(core, "tags", "v1.0")
    f = await walk(core, "tags", "v1.0", "zarr.json")
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC):
        with pytest.raises(ReadOnly):
            await core.open(f.ino, flags)
    with pytest.raises(ReadOnly):
        await core.mkdir(tag.ino, "d")
    with pytest.raises(ReadOnly):
        await core.create(tag.ino, "x", os.O_WRONLY)
    with pytest.raises(ReadOnly):
        await core.unlink(tag.ino, "zarr.json")
    with pytest.raises(ReadOnly):
        await core.setattr(f.ino, AttrChange(size=0))
    with pytest.raises(ReadOnly):
        await core.access(f.ino, os.W_OK)
    with pytest.raises(ReadOnly):
        await core.refuse_write(tag.ino, "symlink")
    await core.access(f.ino, os.R_OK)
    with pytest.raises(IsADirectory):
        await core.open(tag.ino, os.O_RDONLY)
    main = await walk(core, "branches", "main")
    with pytest.raises(NotPermitted):
        await core.refuse_write(main.ino, "symlink")


async def test_control_files(core, repository):
    _, ids = repository
    sid = await walk(core, "tags", "v1.0", ".icefs", "snapshot_id")
    assert (await read_all(core, sid.ino))[0] == f"{ids['v1.0']}\n".encode()
    status = await walk(core, "branches", "main", ".icefs", "status")
    doc = json.loads((await read_all(core, status.ino))[0])
    assert doc["ref"] == "main"
    assert doc["kind"] == "branch"
    assert doc["snapshot_id"] == ids["main"]
    assert doc["has_uncommitted_changes"] is False
    log = await walk(core, "branches", "main", ".icefs", "log")
    lines = (await read_all(core, log.ino))[0].decode().splitlines()
    assert [line.split()[0] for line in lines] == [ids["main"], ids["v1.0"], "1CECHNKREP0F1RSTCMT0"]
    assert lines[0].endswith("warmer second half")
    with pytest.raises(PermissionDenied):
        await core.open(status.ino, os.O_WRONLY)
    stats = await walk(core, ".icefs", "stats")
    doc = json.loads((await read_all(core, stats.ino))[0])
    assert doc["bytes_read"] > 0
    pid = await walk(core, ".icefs", "pid")
    assert int((await read_all(core, pid.ino))[0]) == os.getpid()
    # the ref's control dir is hidden from listings
    main = await walk(core, "branches", "main")
    assert ".icefs" not in await listing(core, main.ino)


async def test_only_tag_and_snapshot_listings_are_fixed(core, repository):
    """Replies may be kept (`FuseOperations._readdir_fixed`) only for listings that never
    change: the cached ones of tags and snapshots."""
    for names, fixed in (
        (("tags", "v1.0", "temperature"), True),
        (("tags", "v1.0", ".icefs"), False),
        (("branches", "main", "temperature"), False),
    ):
        fh = await core.opendir((await walk(core, *names)).ino)
        pinned = core.readdir(fh, 0)
        assert pinned.fixed == fixed, names
        if fixed:
            fh2 = await core.opendir((await walk(core, *names)).ino)
            assert core.readdir(fh2, 0) is pinned, "one listing for every handle"
            core.releasedir(fh2)
        core.releasedir(fh)


async def test_xattrs(core, repository):
    _, ids = repository
    tag = await walk(core, "tags", "v1.0")
    assert await core.getxattr(tag.ino, "user.icefs.snapshot_id") == ids["v1.0"].encode()
    assert "user.icefs.snapshot_id" in await core.listxattr(tag.ino)
    with pytest.raises(NoAttribute):
        await core.getxattr(tag.ino, "user.other")
    for other in ("security.selinux", "system.posix_acl_access", "trusted.x"):
        with pytest.raises(NotSupported):  # namespaces icefs does not have
            await core.getxattr(tag.ino, other)
    f = await walk(core, "tags", "v1.0", "zarr.json")
    assert await core.listxattr(f.ino) == []


async def test_readdir_offsets_survive_listing_changes(core, repository):
    repo, ids = repository
    branches = await walk(core, "branches")
    fh = await core.opendir(branches.ino)
    first = entries(core, fh, 0)[:1]
    repo.create_branch("aaa-new", ids["main"])
    await core.refs.refresh()
    rest = entries(core, fh, first[0][0])
    core.releasedir(fh)
    assert [n for _, n, _ in first + rest] == ["experiment", "main"], "pinned at opendir"
    assert "aaa-new" in await listing(core, branches.ino)
    with pytest.raises(BadHandle):
        core.readdir(fh, 0)


async def test_immutable_listings_are_kept_within_a_bound(
    repository, bridge, tmp_path, monkeypatch
):
    repo, ids = repository
    monkeypatch.setattr("icefs.fs.listings.LISTED_ENTRIES_KEPT", 3)
    core = await make_core(repo, bridge, cache_dir=str(tmp_path / "cache"))
    tag = await walk(core, "tags", "v1.0")
    assert "humidity" not in await listing(core, tag.ino)
    for sid in (ids["main"], ids["experiment"], ids["v1.0"]):
        snap = await walk(core, "snapshots", sid)
        assert "temperature" in await listing(core, snap.ino)
        assert len(core.listings) <= 3, "bounded"
    snap = await walk(core, "snapshots", ids["experiment"])
    assert "humidity" in await listing(core, snap.ino), "a listing belongs to its snapshot"
    assert "humidity" not in await listing(core, tag.ino)
    close(core)


async def test_paths_kept_for_resolve_stay_within_a_bound(
    repository, bridge, tmp_path, monkeypatch
):
    """Listed and looked-up paths of tags are kept for `resolve` up to a bound; past it
    they are dropped, and every path still resolves."""
    monkeypatch.setattr("icefs.fs.namespace.RESOLVED_KEPT", 4)
    core = await make_core(repository[0], bridge, cache_dir=str(tmp_path / "cache"))
    kept = core.namespace._resolved
    for names in ((), ("temperature",), ("temperature", "c"), ("temperature", "c", "0")):
        directory = await walk(core, "tags", "v1.0", *names)
        for name in await listing(core, directory.ino):
            assert len(kept) <= 4, "bounded"
            attr = await walk(core, "tags", "v1.0", *names, name)
            assert (await core.getattr(attr.ino)).ino == attr.ino
    close(core)


async def test_branch_follows_tip(core, repository):
    repo, _ids = repository
    session = repo.writable_session("main")
    zarr.open_array(session.store, path="lat", mode="r+")[:] = np.zeros(6, dtype="f4")
    new = session.commit("zero lat")
    await core.refs.refresh()
    sid = await walk(core, "branches", "main", ".icefs", "snapshot_id")
    assert (await read_all(core, sid.ino))[0].decode().strip() == new


async def test_ref_created_elsewhere_resolves_before_refresh(core, repository):
    repo, ids = repository
    repo.create_tag("later", ids["main"])
    attr = await walk(core, "tags", "later")
    assert stat.S_ISDIR(attr.mode)


async def test_concurrent_reads(core):
    attr = await walk(core, "snapshots")
    names = await listing(core, attr.ino)
    results = []

    async def one(sid):
        a = await walk(core, "snapshots", sid, ".icefs", "snapshot_id")
        results.append((await read_all(core, a.ino))[0].strip().decode())

    async with trio.open_nursery() as nursery:
        for _ in range(10):
            for sid in names:
                nursery.start_soon(one, sid)
    assert sorted(set(results)) == sorted(names)


async def test_forget_releases_inodes(core):
    attr = await walk(core, "branches", "main", "zarr.json")
    before = len(core.inodes)
    core.forget([(attr.ino, 1)])
    assert len(core.inodes) == before - 1


def test_stats_errors_by_errno():
    from icefs.fs.stats import Stats

    s = Stats()
    s.record("lookup", 0.001, errno.ENOENT)
    s.record("read", 0.002)
    doc = s.as_json()
    assert doc["errors_by_errno"] == {"ENOENT": 1}
    assert doc["requests"]["read"]["count"] == 1


async def test_dot_lookups_count_like_any_lookup(core):
    tags = await walk(core, "tags")
    before = core.inodes.lookup_count(tags.ino)
    same = await core.lookup(tags.ino, ".")
    assert same.ino == tags.ino
    assert core.inodes.lookup_count(tags.ino) == before + 1
    up = await core.lookup(tags.ino, "..")
    assert up.ino == ROOT_INODE


async def test_invalid_utf8_name_is_enoent(core):
    tags = await walk(core, "tags")
    with pytest.raises(NotFound):
        await core.lookup(tags.ino, b"\xff".decode("utf-8", "surrogateescape"))


async def test_classify_keys(core, repository):
    from icefs.errors import InvalidInput
    from icefs.store import KeyClass, KeyKind

    _repo, ids = repository
    tree = await core.namespace.tree(ids["main"])
    assert await tree.classify("temperature/zarr.json") == KeyClass(KeyKind.METADATA, "temperature")
    assert await tree.classify("zarr.json") == KeyClass(KeyKind.METADATA, "")
    assert await tree.classify("temperature/c/1/0/0") == KeyClass(
        KeyKind.CHUNK, "temperature", (1, 0, 0)
    )
    assert (await tree.classify("temperature/c/0/x.partial")).kind is KeyKind.SCRATCH
    assert (await tree.classify("notes.txt")).kind is KeyKind.SCRATCH
    assert (await tree.classify("temperature/c/01/0/0")).kind is KeyKind.SCRATCH, "not canonical"
    with pytest.raises(InvalidInput):
        await tree.classify("temperature/c/0/0")
    with pytest.raises(NotFound):
        await tree.classify("nothing/c/0")
