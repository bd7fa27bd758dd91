"""What `icefs.store.reader` reads of a real local repository: which nodes a snapshot or
session has (from the snapshot alone where nothing changed, by keys where it did), and
the chunk directories an array's chunk coordinates make."""

from __future__ import annotations

import json
import shutil

import icechunk
import numpy as np
import zarr

from icefs.store import Repo
from icefs.store.chunkindex import ChunkIndex
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


def _oracle_check(index: ChunkIndex, chunks: dict[tuple[int, ...], int], ndim: int) -> None:
    """*index* answers as the plain dict *chunks* (coordinates -> length) does."""
    assert len(index) == len(chunks)
    prefixes: dict[tuple[int, ...], set[int]] = {}
    for coords in chunks:
        for depth in range(ndim):
            prefixes.setdefault(coords[:depth], set()).add(coords[depth])
    for prefix, nxt in prefixes.items():
        below, lengths = index.below(prefix)
        assert below.tolist() == sorted(nxt), prefix
        assert index.has_prefix(prefix)
        if len(prefix) == ndim - 1:
            assert lengths.tolist() == [chunks[(*prefix, c)] for c in sorted(nxt)]
    for coords, length in chunks.items():
        assert index.length(coords) == length
    assert index.length((10**6,) * ndim) is None
    assert not index.has_prefix((99,)) or ndim == 0


def test_chunk_index_answers_as_a_dict_would():
    """Random sparse coordinates (some listed twice, the last length winning), stores and
    deletes kept beside the arrays and folded in, against a plain dict."""
    rng = np.random.default_rng(0)
    for ndim in (1, 2, 3):
        for count in (0, 1, 5, 300, 6000):
            rows = rng.integers(0, 12 if ndim > 1 else 5000, size=(count, ndim))
            lengths = rng.integers(1, 1 << 20, size=count)
            chunks = {
                tuple(r): int(n) for r, n in zip(rows.tolist(), lengths.tolist(), strict=True)
            }
            batches = [
                (rows[i : i + 700], np.ones(len(rows[i : i + 700]), "u1"), lengths[i : i + 700])
                for i in range(0, count, 700)
            ]
            grid = (12,) * ndim if ndim > 1 else (5000,)
            index = ChunkIndex.build(ndim, grid, batches)
            _oracle_check(index, chunks, ndim)
            for _ in range(5000 if count == 6000 else 50):  # past the merge threshold
                coords = tuple(int(c) for c in rng.integers(0, grid[0], size=ndim))
                if rng.random() < 0.5:
                    assert index.stored(coords, 7)
                    chunks[coords] = 7
                else:
                    index.deleted(coords)
                    chunks.pop(coords, None)
            _oracle_check(index, chunks, ndim)
    zero = ChunkIndex.build(0, (), [(np.empty((1, 0), np.int64), np.ones(1, "u1"), np.array([9]))])
    assert zero.length(()) == 9  # a 0-d array's one chunk
    assert len(zero) == 1


def test_chunk_index_orders_for_the_read_ahead():
    rows = np.array([(r, c) for r in range(12) for c in range(12) if (r + c) % 3], np.int64)
    index = ChunkIndex.build(2, (12, 12), [(rows, np.ones(len(rows), "u1"), np.arange(len(rows)))])
    c_order = sorted(map(tuple, rows.tolist()))
    walk = sorted(c_order, key=lambda c: tuple(map(str, c)))
    assert [c for c, _ in index.between(False, 0, len(rows))] == c_order
    assert index.position(walk[5], True) == -1, "the walk order is made on demand"
    index.walk_order()
    assert [c for c, _ in index.between(True, 0, len(rows))] == walk
    for i, coords in enumerate(walk):
        assert index.position(coords, True) == i
        assert index.position(coords, False) == c_order.index(coords)
    assert index.nbytes < 200 + 20 * len(rows) + 16 * len(rows)


def test_a_million_chunks_take_a_few_bytes_each():
    n = 1000
    grid = np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1).reshape(-1, 2)
    index = ChunkIndex.build(2, (n, n), [(grid, np.full(n * n, 2, "u1"), np.full(n * n, 4))])
    assert len(index) == n * n
    assert index.nbytes <= 14 * n * n, index.nbytes
    assert index.length((999, 999)) == 4
    assert index.is_virtual((3, 4))
    assert index.below((500,))[0].tolist() == list(range(n))


class _CountingRepository:
    """An Icechunk repository that counts the snapshots its ancestry walks hand out."""

    def __init__(self, repository):
        self._repository = repository
        self.read = 0

    def __getattr__(self, name):
        return getattr(self._repository, name)

    def ancestry(self, **where):
        for info in self._repository.ancestry(**where):
            self.read += 1
            yield info


async def test_ancestry_walks_stop_early(bridge, tmp_path):
    """`ls snapshots/` walks each ref's history only down to where another walk went, and
    a limited log reads only what it shows."""
    repository = icechunk.Repository.create(sample_storage(str(tmp_path / "repo")))
    for i in range(30):
        session = repository.writable_session("main")
        zarr.create_array(session.store, name=f"a{i}", shape=(1,), dtype="i1")
        session.commit(f"commit {i}")
    tip = repository.lookup_branch("main")
    counting = _CountingRepository(repository)
    repo = Repo(counting, bridge, "t")  # type: ignore[arg-type]  # a counting stand-in
    everything = await repo.ancestry(tip)
    assert len(everything) == 31
    counting.read = 0
    assert [m.id for m in await repo.ancestry(tip, limit=3)] == [m.id for m in everything[:3]]
    assert counting.read <= 4
    counting.read = 0
    stop = {everything[5].id}
    assert [m.id for m in await repo.ancestry(tip, stop=stop)] == [m.id for m in everything[:5]]
    assert counting.read == 6
