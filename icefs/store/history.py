"""What changed between two snapshots, and the repository's operations log.

`diff` and `operations` return plain JSON documents (the `.icefs/diff` and
`.icefs/ops` control files and ``icefs diff`` / ``icefs log --ops`` render
them; ``--json`` prints them as they are).  Both run from trio through a `Repo`;
the command line runs them under ``trio.run`` with its own `Bridge`.

A diff document::

    {"from": SNAPSHOT | null, "to": SNAPSHOT, "direction": "forward" | "backward",
     "nodes": [{"path", "kind": "array" | "group",
                "change": "new" | "deleted" | "updated" | "chunks",
                "metadata": [changed zarr.json fields other than attributes],
                "attributes": {"added": [...], "removed": [...], "changed": [...]},
                "chunks": N, "chunk_coords": [[i, j], ...] (with chunks=True)}, ...],
     "moved": [[from_path, to_path], ...],
     "summary": {"new": N, "deleted": N, "updated": N, "chunks": N}}

SNAPSHOT is `snapshot_doc`: ``{"id", "parent_id", "time", "message",
"metadata"}``.  "backward" means TO is an ancestor of FROM: the document says
what going from FROM back to TO undoes.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final

from icefs import errors
from icefs.timefmt import render_time

if TYPE_CHECKING:
    import icechunk

    from icefs.store.repo import Repo, SnapshotMeta

__all__ = ["diff", "operations", "read_operations", "snapshot_doc"]

#: Fields of an operations-log entry, and the name each has in our documents.
_OP_FIELDS: Final = {
    "name": "name",
    "branch": "branch",
    "previous_snap_id": "previous_snapshot_id",
    "new_snap_id": "snapshot_id",
    "from_version": "from_version",
    "to_version": "to_version",
    "id": "flag",
    "new_value": "value",
    "status": "status",
}


def snapshot_doc(meta: SnapshotMeta) -> dict[str, Any]:
    """One snapshot as documents show it (``icefs log --json``, a diff's ends)."""
    return {
        "id": meta.id,
        "parent_id": meta.parent_id,
        "time": render_time(meta.written_ns),
        "message": meta.message,
        "metadata": meta.metadata,
    }


async def _ancestry_ids(repo: Repo, snapshot_id: str) -> list[str]:
    return [m.id for m in await repo.ancestry(snapshot_id)]


async def _raw_diff(repo: Repo, from_sid: str, to_sid: str) -> tuple[Any, str]:
    """Icechunk's diff of *from_sid* → *to_sid* and its direction.

    Icechunk diffs only from an ancestor; the other way round the diff is taken
    forward and read backward.  Two snapshots on separate lines of history are
    `InvalidInput`, naming their last common snapshot.
    """
    to_line = await _ancestry_ids(repo, to_sid)
    if from_sid in to_line:
        found = await repo.call(
            lambda: repo.repository.diff(from_snapshot_id=from_sid, to_snapshot_id=to_sid),
            kind="snapshot",
        )
        return found, "forward"
    from_line = await _ancestry_ids(repo, from_sid)
    if to_sid in from_line:
        found = await repo.call(
            lambda: repo.repository.diff(from_snapshot_id=to_sid, to_snapshot_id=from_sid),
            kind="snapshot",
        )
        return found, "backward"
    common = next((s for s in from_line if s in set(to_line)), None)
    raise errors.InvalidInput(
        f"{from_sid} and {to_sid} are on separate lines of history; their last common "
        f"snapshot is {common}: diff each of them against it"
    )


async def _metadata(repo: Repo, snapshot_id: str, path: str) -> dict[str, Any]:
    reader = await repo.reader(snapshot_id)
    key = f"{path.strip('/')}/zarr.json".lstrip("/")
    try:
        doc = json.loads(bytes(await reader.get(key)))
    except errors.NotFound:
        return {}
    return doc if isinstance(doc, dict) else {}


def _compare(old: dict[str, Any], new: dict[str, Any]) -> tuple[list[str], dict[str, list[str]]]:
    """The zarr.json fields that differ (attributes apart) and the attribute changes."""
    fields = sorted(
        k for k in set(old) | set(new) if k != "attributes" and old.get(k) != new.get(k)
    )
    a: dict[str, Any] = old.get("attributes") or {}
    b: dict[str, Any] = new.get("attributes") or {}
    attrs = {
        "added": sorted(set(b) - set(a)),
        "removed": sorted(set(a) - set(b)),
        "changed": sorted(k for k in set(a) & set(b) if a[k] != b[k]),
    }
    return fields, attrs


async def diff(
    repo: Repo, from_sid: str | None, to_sid: str, *, chunks: bool = False
) -> dict[str, Any]:
    """The diff document of *from_sid* → *to_sid* (None: *to_sid*'s parent).

    `NotFound` for an unknown snapshot, `InvalidInput` for two snapshots on
    separate lines of history.
    """
    to_meta = await repo.snapshot(to_sid)
    if from_sid is None:
        from_sid = to_meta.parent_id
    doc: dict[str, Any] = {
        "from": None,
        "to": snapshot_doc(to_meta),
        "direction": "forward",
        "nodes": [],
        "moved": [],
        "summary": {"new": 0, "deleted": 0, "updated": 0, "chunks": 0},
    }
    if from_sid is None:  # the repository's first snapshot: nothing before it
        return doc
    doc["from"] = snapshot_doc(await repo.snapshot(from_sid))
    if from_sid == to_sid:
        return doc
    raw, direction = await _raw_diff(repo, from_sid, to_sid)
    doc["direction"] = direction
    backward = direction == "backward"
    new_groups, deleted_groups = raw.new_groups, raw.deleted_groups
    new_arrays, deleted_arrays = raw.new_arrays, raw.deleted_arrays
    if backward:
        new_groups, deleted_groups = deleted_groups, new_groups
        new_arrays, deleted_arrays = deleted_arrays, new_arrays
    nodes: dict[str, dict[str, Any]] = {}
    for paths, kind, change in (
        (new_groups, "group", "new"),
        (new_arrays, "array", "new"),
        (deleted_groups, "group", "deleted"),
        (deleted_arrays, "array", "deleted"),
        (raw.updated_groups, "group", "updated"),
        (raw.updated_arrays, "array", "updated"),
    ):
        for path in paths:
            nodes[path] = {"path": path, "kind": kind, "change": change}
    for path, node in nodes.items():
        if node["change"] == "updated":
            fields, attrs = _compare(
                await _metadata(repo, from_sid, path), await _metadata(repo, to_sid, path)
            )
            node["metadata"] = fields
            node["attributes"] = attrs
    updated_chunks: dict[str, list[list[int]]] = raw.updated_chunks
    for path, coords in updated_chunks.items():
        node = nodes.setdefault(path, {"path": path, "kind": "array", "change": "chunks"})
        node["chunks"] = len(coords)
        if chunks:
            node["chunk_coords"] = sorted([int(c) for c in row] for row in coords)
    moved = [[a, b] for a, b in raw.moved_nodes]
    doc["moved"] = [[b, a] for a, b in reversed(moved)] if backward else moved
    doc["nodes"] = [nodes[p] for p in sorted(nodes)]
    summary = doc["summary"]
    for node in doc["nodes"]:
        if node["change"] in ("new", "deleted", "updated"):
            summary[node["change"]] += 1
        summary["chunks"] += node.get("chunks", 0)
    return doc


def _op_doc(update: Any) -> dict[str, Any]:
    kind = update.kind
    name = type(kind).__name__
    entry: dict[str, Any] = {
        "time": update.updated_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        # BranchCreated -> branch_created
        "operation": "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_"),
    }
    for attr, key in _OP_FIELDS.items():
        value = getattr(kind, attr, None)
        if value is None or isinstance(value, type):
            continue
        entry[key] = value if isinstance(value, bool | int | str) else str(value)
    return entry


def read_operations(repository: icechunk.Repository, limit: int | None) -> list[dict[str, Any]]:
    """The operations log of *repository*, newest first, at most *limit* entries (blocking)."""
    out = []
    for update in repository.ops_log():
        out.append(_op_doc(update))
        if limit is not None and len(out) >= limit:
            break
    return out


async def operations(repo: Repo, limit: int | None = None) -> list[dict[str, Any]]:
    """The repository's operations log, newest first (at most *limit* entries)."""
    result: list[dict[str, Any]] = await repo.call(
        read_operations, repo.repository, limit, kind="ref"
    )
    return result
