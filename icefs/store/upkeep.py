"""Upkeep of a repository: expiring old history and collecting garbage (blocking calls).

`expire` drops snapshots older than a time from the history of every branch
and tag.  What a branch or tag points at is never expired (the tips are kept,
whatever their age; branches and tags are never deleted), and neither is the
repository's first snapshot.  `expire_plan` computes, without changing
anything, what `expire` would drop: the same rule, walked over the same refs.

`collect_garbage` deletes the objects no branch or tag reaches any more
(expired snapshots, their manifests, chunks only they used, chunks of
discarded or reset work) and that are older than a cut-off time: objects
written after it are never deleted, which is what spares the chunks of
sessions that have not committed yet.  `GC_PHASES` names the phases Icechunk
logs as it goes, for a progress display.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from icefs.store.errors import translate
from icefs.store.repo import ROOT_SNAPSHOT_ID, SnapshotMeta, snapshot_meta

if TYPE_CHECKING:
    from datetime import datetime

    import icechunk

    from icefs.store.reflock import RefLock

__all__ = [
    "GC_PHASES",
    "GarbageSummary",
    "collect_garbage",
    "expire",
    "expire_plan",
    "log_gc_phases",
]

#: The phases of Icechunk's garbage collection, as the first words of the INFO line it
#: logs when each begins (target ``icechunk::ops::gc``/``walker``), and what we call them.
GC_PHASES: Final = (
    ("Finding GC roots", "finding what branches and tags reach"),
    ("manifest walk done", "walked the manifests"),
    ("Retained objects collected", "collected what stays"),
    ("Deleting snapshots", "deleting snapshots"),
    ("Deleting transaction logs", "deleting transaction logs"),
    ("Deleting manifests", "deleting manifests"),
    ("Deleting chunks", "deleting chunks"),
)


def log_gc_phases(on: bool) -> None:
    """Make Icechunk log (*on*) or not the INFO lines `GC_PHASES` come from."""
    import icechunk

    icechunk.set_logs_filter("error,icechunk::ops=info" if on else "error")


def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        raise translate(exc) from exc


def expire_plan(repository: icechunk.Repository, older_than: datetime) -> list[SnapshotMeta]:
    """The snapshots `expire` would drop, newest first: older than *older_than*, on the
    history of a branch or tag, and neither a ref's target nor the first snapshot."""

    def walk() -> list[SnapshotMeta]:
        targets = {repository.lookup_tag(t) for t in repository.list_tags()}
        targets |= {repository.lookup_branch(b) for b in repository.list_branches()}
        dropped: dict[str, SnapshotMeta] = {}
        seen: set[str] = set()
        for sid in sorted(targets):
            for info in repository.ancestry(snapshot_id=sid):
                if info.id in seen:
                    break
                seen.add(info.id)
                if (
                    info.written_at < older_than
                    and info.id not in targets
                    and info.id != ROOT_SNAPSHOT_ID
                ):
                    dropped[info.id] = snapshot_meta(info)
        return sorted(dropped.values(), key=lambda m: (-m.written_ns, m.id))

    result: list[SnapshotMeta] = _call(walk)
    return result


def expire(repository: icechunk.Repository, lock: RefLock, older_than: datetime) -> set[str]:
    """Drop the snapshots older than *older_than* from the history (holding *lock*);
    return their ids.  Branches and tags all stay, at their snapshots."""
    with lock.held():
        result: set[str] = _call(repository.expire_snapshots, older_than)
    return result


@dataclass(frozen=True, slots=True)
class GarbageSummary:
    """What a garbage collection deleted (or, dry, would delete)."""

    bytes_deleted: int
    chunks: int
    manifests: int
    snapshots: int
    transaction_logs: int
    attributes: int
    failed: int
    errors: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "bytes_deleted": self.bytes_deleted,
            "chunks_deleted": self.chunks,
            "manifests_deleted": self.manifests,
            "snapshots_deleted": self.snapshots,
            "transaction_logs_deleted": self.transaction_logs,
            "attributes_deleted": self.attributes,
            "objects_failed_to_delete": self.failed,
            "delete_errors": list(self.errors),
        }


def collect_garbage(
    repository: icechunk.Repository, before: datetime, *, dry_run: bool
) -> GarbageSummary:
    """Delete what no branch or tag reaches and was written before *before*."""
    found = _call(repository.garbage_collect, before, dry_run=dry_run)
    return GarbageSummary(
        bytes_deleted=int(found.bytes_deleted),
        chunks=int(found.chunks_deleted),
        manifests=int(found.manifests_deleted),
        snapshots=int(found.snapshots_deleted),
        transaction_logs=int(found.transaction_logs_deleted),
        attributes=int(found.attributes_deleted),
        failed=int(found.objects_failed_to_delete),
        errors=tuple(str(e) for e in found.delete_errors),
    )
