"""What `icefs.store.reader` reads of a real local repository: which nodes a snapshot or
session has (from the snapshot alone where nothing changed, by keys where it did), and
the chunk directories an array's chunk coordinates make."""

from __future__ import annotations

import json
import shutil

import icechunk
import numpy as np
import zarr

from icefs.store.reader import _children
from icefs.store.repo import Repo
from icefs.store.sample import sample_storage
from icefs.store.writer import open_writer

ARRAY_DOC = json.dumps(
    {
        "zarr_format": 3,
        "node_type": "array",
        "shape": [4],
        "data_type": "int32",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0,
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
    }
).encode()

#: groups g and g/h, arrays in each, and x/y/arr stored without its parent groups
NODES = {"", "g", "g/h", "g/a", "g/h/b", "top", "x/y/arr"}


def _build(path):
    """A local repository whose tag ``t`` holds `NODES`, each array with stored chunks."""
    repo = icechunk.Repository.create(sample_storage(str(path)))
    session = repo.writable_session("main")
    root = zarr.open_group(session.store, mode="w")
    for name in ("g/a", "g/h/b", "top"):
        root.create_array(name, shape=(8,), chunks=(2,), dtype="i4")[:] = np.arange(8)

    async def implied():
        buffer = zarr.core.buffer.default_buffer_prototype().buffer
        await session.store.set("x/y/arr/zarr.json", buffer.from_bytes(ARRAY_DOC))
        await session.store.set("x/y/arr/c/0", buffer.from_bytes(b"\1" * 8))

    zarr.core.sync.sync(implied())
    snapshot = session.commit("nodes")
    repo.create_tag("t", snapshot)
    return snapshot


async def test_a_snapshots_nodes_come_without_its_manifests(bridge, tmp_path):
    snapshot = _build(tmp_path / "repo")
    shutil.rmtree(tmp_path / "repo" / "manifests")  # listing the keys would need them
    repo = Repo(icechunk.Repository.open(sample_storage(str(tmp_path / "repo"))), bridge, "t")
    reader = await repo.reader(snapshot)
    assert await reader.node_paths() == NODES
    writer = await open_writer(repo, "main")  # a session with no changes: the same
    assert await writer.reader.node_paths() == NODES


async def test_nodes_by_keys_agree_and_see_a_sessions_changes(bridge, tmp_path):
    snapshot = _build(tmp_path / "repo")
    repo = Repo(icechunk.Repository.open(sample_storage(str(tmp_path / "repo"))), bridge, "t")
    by_keys = await repo.reader(snapshot)
    by_keys._repository = None  # what a reader does when Icechunk gives no node list
    assert await by_keys.node_paths() == NODES
    writer = await open_writer(repo, "main")
    await writer.set("new/zarr.json", ARRAY_DOC)
    await writer.delete("g/h/zarr.json")
    assert await writer.reader.node_paths() == (NODES - {"g/h", "g/h/b"}) | {"new"}


def test_chunk_children_are_every_prefixs_sorted_next_coordinates():
    rng = np.random.default_rng(0)
    for ndim in (1, 2, 3, 4):
        for count in (0, 1, 5, 300):
            rows = rng.integers(0, 12, size=(count, ndim))  # some rows twice
            expected: dict[tuple[int, ...], set[int]] = {}
            for row in rows.tolist():
                for depth in range(ndim):
                    expected.setdefault(tuple(row[:depth]), set()).add(row[depth])
            assert _children(rows) == {k: sorted(v) for k, v in expected.items()}
    assert _children(np.empty((1, 0), dtype=np.int64)) == {}  # a 0-d array's one chunk
