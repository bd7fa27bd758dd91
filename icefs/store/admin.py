"""Synchronous ref management for the command line (``icefs branch/tag/log --repo``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from icefs import errors
from icefs.store.errors import translate
from icefs.store.reflock import RefLock
from icefs.store.repo import SnapshotMeta, snapshot_meta

if TYPE_CHECKING:
    import icechunk

__all__ = ["RepoAdmin"]


class RepoAdmin:
    """Synchronous ref management for the command line (``icefs branch/tag/log --repo``)."""

    def __init__(self, repository: icechunk.Repository, lock: RefLock | None = None) -> None:
        self._repo = repository
        self._lock = lock or RefLock()

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise translate(exc) from exc

    def _change(self, fn: Any, *args: Any) -> Any:
        """Call *fn*, which changes refs, holding the repository's `RefLock`."""
        with self._lock.held():
            return self._call(fn, *args)

    def branches(self) -> dict[str, str]:
        """Return {branch: tip snapshot id}."""
        return {
            b: self._call(self._repo.lookup_branch, b) for b in self._call(self._repo.list_branches)
        }

    def tags(self) -> dict[str, str]:
        """Return {tag: snapshot id}."""
        return {t: self._call(self._repo.lookup_tag, t) for t in self._call(self._repo.list_tags)}

    def resolve(self, ref: str) -> str:
        """Return the snapshot id *ref* names: a branch, else a tag, else a snapshot id."""
        if ref in self._call(self._repo.list_branches):
            return str(self._call(self._repo.lookup_branch, ref))
        if ref in self._call(self._repo.list_tags):
            return str(self._call(self._repo.lookup_tag, ref))
        try:
            return str(self._call(self._repo.lookup_snapshot, ref).id)
        except (errors.NotFound, errors.InvalidInput):
            raise errors.NotFound(f"no branch, tag or snapshot {ref!r}") from None

    def create_branch(self, name: str, snapshot_id: str) -> None:
        self._change(self._repo.create_branch, name, snapshot_id)

    def delete_branch(self, name: str) -> None:
        self._change(self._repo.delete_branch, name)

    def create_tag(self, name: str, snapshot_id: str) -> None:
        self._change(self._repo.create_tag, name, snapshot_id)

    def delete_tag(self, name: str) -> None:
        self._change(self._repo.delete_tag, name)

    def reset_branch(self, name: str, snapshot_id: str, expected: str) -> None:
        """Move branch *name* to *snapshot_id* if it still stands at *expected* (else `Busy`)."""
        self._change(lambda: self._repo.reset_branch(name, snapshot_id, from_snapshot_id=expected))

    def log(self, snapshot_id: str) -> list[SnapshotMeta]:
        """Return the ancestry of *snapshot_id*, newest first."""
        return [snapshot_meta(i) for i in self._call(self._repo.ancestry, snapshot_id=snapshot_id)]
