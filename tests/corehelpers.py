"""Helpers for tests of the filesystem core called directly (no kernel): building a core
over a real repository, walking and reading through it, counting its fetches."""

from __future__ import annotations

import asyncio
import os

import icechunk
import numpy as np
import zarr
from zarr.core.buffer import default_buffer_prototype

from icefs.fs import Filesystem, MountOptions
from icefs.fs.inodes import ROOT_INODE
from icefs.store import Repo, SnapshotTree


def store_get(repo, snapshot_id, key):
    """Read *key* straight from Icechunk, outside trio."""
    store = repo.readonly_session(snapshot_id=snapshot_id).store

    async def get():
        buf = await store.get(key, default_buffer_prototype())
        return buf.to_bytes()

    return asyncio.run(get())


_BUILT: dict[int, Filesystem] = {}


async def make_core(repo, bridge, **options):
    """The core of a `Filesystem` over *repo*, its refs read (close it with `close`)."""
    fs = Filesystem.build(Repo(repo, bridge, "test"), MountOptions(**options))
    _BUILT[id(fs.core)] = fs
    await fs.core.refs.refresh()
    return fs.core


def close(core):
    _BUILT.pop(id(core)).close()


def filesystem_of(core):
    """The `Filesystem` `make_core` built around *core* (its uploader, its background stores)."""
    return _BUILT[id(core)]


async def walk(core, *names):
    ino = ROOT_INODE
    attr = None
    for name in names:
        attr = await core.lookup(ino, name)
        ino = attr.ino
    return attr


async def read_all(core, ino, chunk=1000):
    reply = await core.open(ino, os.O_RDONLY)
    out = b""
    while True:
        data = await core.read(reply.fh, len(out), chunk)
        if not data:
            break
        out += data
    core.release(reply.fh)
    return out, reply


def entries(core, fh, start):
    """(next offset, name, attributes) of the entries of directory handle *fh* from *start*."""
    return core.listed(fh, start)


async def listing(core, ino):
    fh = await core.opendir(ino)
    found = entries(core, fh, 0)
    core.releasedir(fh)
    return [name for _, name, _ in found]


def rows_repo(storage, rows):
    """A repository on *storage* whose branch main holds array ``a``: *rows* rows of
    256 float32, one 1 KiB chunk per row (stored as objects, not inline); return it,
    the rows and the snapshot."""
    repo = icechunk.Repository.create(storage)
    session = repo.writable_session("main")
    data = np.arange(rows * 256, dtype="f4").reshape(rows, 256)
    zarr.group(store=session.store).create_array(
        "a", shape=data.shape, chunks=(1, 256), dtype="f4", compressors=None
    )[:] = data
    return repo, data, session.commit("data")


async def rows_tag_core(bridge, tmp_path, rows):
    """A core over an in-memory `rows_repo` whose tag ``t`` holds its snapshot."""
    repo, data, snapshot = rows_repo(icechunk.in_memory_storage(), rows)
    repo.create_tag("t", snapshot)
    core = await make_core(repo, bridge, cache_dir=str(tmp_path / "c"))
    return core, data


def count_fetches(monkeypatch):
    """Record the key of every chunk `SnapshotTree.read_whole` fetches, in order."""
    fetched: list[str] = []
    original = SnapshotTree.read_whole

    async def counted(self, entry):
        fetched.append(entry.key)
        return await original(self, entry)

    monkeypatch.setattr(SnapshotTree, "read_whole", counted)
    return fetched


def count_resolutions(monkeypatch):
    """Record every name `SnapshotTree.child` resolves, in order."""
    asked: list[str] = []
    original = SnapshotTree.child

    async def counted(self, pos, name):
        asked.append(name)
        return await original(self, pos, name)

    monkeypatch.setattr(SnapshotTree, "child", counted)
    return asked
