"""An open repository, used from trio: refs, snapshots, ancestry and cached readers.

Every call goes through the `Bridge` (`Repo.call` for Icechunk's blocking
methods); Icechunk's exceptions become `IcefsError`s (`icefs.store.errors`).
Ref changes hold the repository's `RefLock`.
"""

from __future__ import annotations

import collections
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import icechunk

from icefs.store.errors import first_line, translate
from icefs.store.reader import SnapshotReader
from icefs.store.reflock import RefLock

if TYPE_CHECKING:
    from collections.abc import Container

    from icefs.cache import ReadCache
    from icefs.store.bridge import Bridge

__all__ = ["READERS_KEPT", "ROOT_SNAPSHOT_ID", "TOKEN_KEY", "Repo", "SnapshotMeta", "snapshot_meta"]

log = logging.getLogger(__name__)

#: The root snapshot every new repository starts with.
ROOT_SNAPSHOT_ID: Final = "1CECHNKREP0F1RSTCMT0"
#: How many read-only sessions (one per snapshot) are kept open.
READERS_KEPT: Final = 64
#: Above this many branches and tags, a refresh reads them all in one read of the
#: repository's info file instead of asking for each by name.
MANY_REFS: Final = 64
#: The commit metadata key that holds the committing session's token.
TOKEN_KEY: Final = "icefs_session"


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """What icefs shows of a snapshot: id, parent, commit time (epoch ns), message, metadata."""

    id: str
    parent_id: str | None
    written_ns: int
    message: str
    #: the `BranchWriter.token` of the session that made it (icefs commits only)
    token: str = ""
    #: the commit's metadata, without the token and Icechunk's own keys
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def snapshot_meta(info: Any) -> SnapshotMeta:
    metadata = dict(info.metadata or {})
    token = metadata.pop(TOKEN_KEY, "")
    return SnapshotMeta(
        id=info.id,
        parent_id=info.parent_id,
        written_ns=int(info.written_at.timestamp() * 1_000_000_000),
        message=info.message,
        token=str(token),
        metadata={k: v for k, v in metadata.items() if not k.startswith("__")},
    )


class Repo:
    """An open repository, used from trio: refs, snapshots and cached readers."""

    def __init__(
        self,
        repository: icechunk.Repository,
        bridge: Bridge,
        display: str,
        lock: RefLock | None = None,
        cache: ReadCache | None = None,
    ) -> None:
        self.display = display
        #: the persistent read cache its snapshots' readers share (None: off)
        self.cache = cache
        self._repo = repository
        self._bridge = bridge
        #: held around every change of the repository's refs (commits included)
        self.lock = lock or RefLock()
        self._readers: OrderedDict[str, SnapshotReader] = OrderedDict()
        #: whether `inspect_repo_info` answers (not on spec-1 repositories)
        self._repo_info_works = True
        #: what happened inside commits: commit_retries, rebases (for the metrics)
        self.events: collections.Counter[str] = collections.Counter()
        self._snapshots: dict[str, SnapshotMeta] = {}

    @property
    def bridge(self) -> Bridge:
        return self._bridge

    @property
    def repository(self) -> icechunk.Repository:
        """The Icechunk repository (for `icefs.store.writer`; blocking methods)."""
        return self._repo

    async def call(self, fn: Any, *args: Any, kind: str = "other", bounded: bool = True) -> Any:
        """Run the blocking *fn* with *args* in a worker thread, one storage request of
        *kind* (within the bridge's deadline if *bounded*); Icechunk's errors translated."""
        try:
            return await self._bridge.run_sync(fn, *args, kind=kind, bounded=bounded)
        except Exception as exc:
            raise translate(exc) from exc

    def _refs_sync(self) -> tuple[dict[str, str], dict[str, str]]:
        names = self._repo.list_branches()
        tag_names = self._repo.list_tags()
        if len(names) + len(tag_names) > MANY_REFS and self._repo_info_works:
            # one read of the repository's info file names every tip; asking for each
            # ref by name costs a lookup apiece (10k branches: 0.36 s per refresh)
            try:
                info = self._repo.inspect_repo_info()
                return dict(info["branches"]), dict(info["tags"])
            except icechunk.FormatError as exc:  # a spec-1 repository has no such file
                self._repo_info_works = False
                log.info("refs: read one by one (%s)", first_line(exc))
        branches = {b: self._repo.lookup_branch(b) for b in names}
        tags = {t: self._repo.lookup_tag(t) for t in tag_names}
        return branches, tags

    async def refs(self) -> tuple[dict[str, str], dict[str, str]]:
        """Return ({branch: tip snapshot id}, {tag: snapshot id}) as the repository has them now."""
        result: tuple[dict[str, str], dict[str, str]] = await self.call(self._refs_sync, kind="ref")
        return result

    async def lookup_branch(self, branch: str) -> str:
        result: str = await self.call(self._repo.lookup_branch, branch, kind="ref")
        return result

    async def lookup_tag(self, tag: str) -> str:
        result: str = await self.call(self._repo.lookup_tag, tag, kind="ref")
        return result

    async def snapshot(self, snapshot_id: str) -> SnapshotMeta:
        """Return the `SnapshotMeta` of *snapshot_id*; `NotFound`/`InvalidInput` if it is none."""
        meta = self._snapshots.get(snapshot_id)
        if meta is None:
            info = await self.call(self._repo.lookup_snapshot, snapshot_id, kind="snapshot")
            meta = snapshot_meta(info)
            self._snapshots[snapshot_id] = meta
        return meta

    def _ancestry_sync(
        self, snapshot_id: str, limit: int | None, stop: Container[str]
    ) -> list[SnapshotMeta]:
        out: list[SnapshotMeta] = []
        for info in self._repo.ancestry(snapshot_id=snapshot_id):
            if info.id in stop or (limit is not None and len(out) >= limit):
                break
            meta = self._snapshots.get(info.id)
            if meta is None:
                meta = self._snapshots[info.id] = snapshot_meta(info)
            out.append(meta)
        return out

    async def ancestry(
        self, snapshot_id: str, *, limit: int | None = None, stop: Container[str] = ()
    ) -> list[SnapshotMeta]:
        """Return the ancestry of *snapshot_id*, newest first, itself included: at most
        *limit* snapshots, and none from the first one in *stop* on (Icechunk reads the
        history one snapshot at a time: a walk that stops early reads no more)."""
        result: list[SnapshotMeta] = await self.call(
            self._ancestry_sync, snapshot_id, limit, stop, kind="snapshot"
        )
        return result

    def _locked(self, fn: Any, *args: Any) -> Any:
        with self.lock.held():
            return fn(*args)

    async def create_branch(self, branch: str, snapshot_id: str) -> None:
        """Create *branch* at *snapshot_id* (`Exists`, `NotFound`)."""
        await self.call(self._locked, self._repo.create_branch, branch, snapshot_id, kind="ref")

    async def delete_branch(self, branch: str) -> None:
        await self.call(self._locked, self._repo.delete_branch, branch, kind="ref")

    async def create_tag(self, tag: str, snapshot_id: str) -> None:
        """Create *tag* at *snapshot_id* (`Exists`, also for a deleted tag's name)."""
        await self.call(self._locked, self._repo.create_tag, tag, snapshot_id, kind="ref")

    async def delete_tag(self, tag: str) -> None:
        await self.call(self._locked, self._repo.delete_tag, tag, kind="ref")

    async def reset_branch(self, branch: str, snapshot_id: str, expected: str) -> None:
        """Move *branch* to *snapshot_id*, if it still stands at *expected* (else `Busy`)."""
        await self.call(
            self._locked,
            lambda: self._repo.reset_branch(branch, snapshot_id, from_snapshot_id=expected),
            kind="ref",
        )

    async def reader(self, snapshot_id: str) -> SnapshotReader:
        """Return a (cached) `SnapshotReader` for *snapshot_id*."""
        reader = self._readers.get(snapshot_id)
        if reader is not None:
            self._readers.move_to_end(snapshot_id)
            return reader
        session = await self.call(self._open_readonly, snapshot_id, kind="snapshot")
        # Every new repository's first snapshot has the same id: it is never cached.
        cache = self.cache if snapshot_id != ROOT_SNAPSHOT_ID else None
        reader = SnapshotReader(session, self._bridge, self._repo, cache)
        self._readers[snapshot_id] = reader
        while len(self._readers) > READERS_KEPT:
            self._readers.popitem(last=False)
        return reader

    def _open_readonly(self, snapshot_id: str) -> icechunk.Session:
        return self._repo.readonly_session(snapshot_id=snapshot_id)
