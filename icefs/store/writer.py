"""Writing a branch: one writable session, its stores, deletes and commits.

`BranchWriter.commit` returns only once the branch has reached the new snapshot:
on local disk another program's ref update can drop it (`landed` checks), and
then the same changes commit again; on object stores the ref update is a
conditional write, so a commit that returned has reached it.  Every call goes
through the `Bridge`.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import icechunk

from icefs import errors
from icefs.gate import ALONE
from icefs.store.errors import first_line, translate
from icefs.store.reader import SessionReader, key_kind
from icefs.store.repo import TOKEN_KEY

if TYPE_CHECKING:
    from icefs.store.repo import Repo

__all__ = [
    "BranchWriter",
    "ChangeCounts",
    "landed",
    "move_node",
    "open_writer",
    "restore_writer",
]

log = logging.getLogger(__name__)

#: Commits tried again after another writer's ref update dropped them (see `BranchWriter`).
COMMIT_ATTEMPTS: Final = 3
#: Snapshots walked back from a branch's tip to find a commit that just landed.
LANDED_WALK: Final = 1000


def landed(repository: icechunk.Repository, branch: str, snapshot_id: str) -> bool:
    """Whether *snapshot_id* is on the ancestry of *branch* (blocking: a worker thread)."""
    if repository.lookup_branch(branch) == snapshot_id:
        return True
    for i, info in enumerate(repository.ancestry(branch=branch)):
        if info.id == snapshot_id:
            return True
        if i >= LANDED_WALK:
            break
    return False


@dataclass(frozen=True, slots=True)
class ChangeCounts:
    """What a writable session holds that its base snapshot does not."""

    nodes: int
    chunks: int
    paths: tuple[str, ...]


class BranchWriter:
    """One writable session on a branch: store and delete keys, commit, discard.

    Icechunk refuses every write after a commit; the owner opens a new writer.
    """

    def __init__(self, repo: Repo, branch: str, session: icechunk.Session) -> None:
        self.branch = branch
        self.base_snapshot_id: str = session.snapshot_id
        self._repo = repo
        self._session = session
        self.reader = SessionReader(session, repo.bridge, repo.repository)
        self._raw = self.reader._raw
        #: names this session in its commit's metadata, so that a session recovered
        #: from the crash journal can tell whether it was committed before the crash
        self.token = uuid.uuid4().hex
        #: True once a store or delete succeeded (a cheap, lock-free `has_changes`).
        self.touched = False
        #: when the first store or delete was made (epoch ns; 0: none yet): the session's
        #: chunks are no older, which is what garbage collection must spare
        self.since_ns = 0

    async def set(self, key: str, data: bytes | memoryview | Any) -> None:
        """Store *data* (bytes-like) at *key*; `InvalidInput`, `NotFound` or `StorageFailure`."""
        try:
            async with self.reader.gate.hold("write"):
                await self._repo.bridge.run(self._raw.set, key, data, kind=key_kind(key))
        except Exception as exc:
            raise translate(exc) from exc
        self._touch()

    def _touch(self) -> None:
        if not self.touched:
            self.since_ns = time.time_ns()
            self.touched = True

    async def delete(self, key: str) -> None:
        """Delete *key* (a node's ``zarr.json`` deletes the node and everything below)."""
        try:
            async with self.reader.gate.hold("write"):
                await self._repo.bridge.run(self._raw.delete, key, kind=key_kind(key))
        except Exception as exc:
            raise translate(exc) from exc
        self._touch()

    def _counts_sync(self) -> ChangeCounts:
        diff = self._session.status()
        nodes: set[str] = set()
        for name in (
            "new_groups",
            "new_arrays",
            "updated_arrays",
            "updated_groups",
            "deleted_arrays",
            "deleted_groups",
        ):
            nodes.update(getattr(diff, name))
        chunks = sum(len(coords) for coords in diff.updated_chunks.values())
        return ChangeCounts(len(nodes), chunks, tuple(sorted(nodes | set(diff.updated_chunks))))

    async def counts(self) -> ChangeCounts:
        """Return how many nodes and chunks the session changed."""
        async with self.reader.gate.hold(ALONE):
            result: ChangeCounts = await self._repo.call(self._counts_sync, bounded=False)
        return result

    async def has_changes(self) -> bool:
        """Ask Icechunk whether the session holds changes (a store may have undone one)."""
        async with self.reader.gate.hold(ALONE):
            result: bool = await self._repo.call(
                lambda: bool(self._session.has_uncommitted_changes), bounded=False
            )
        return result

    async def serialized(self) -> bytes:
        """Return the session as bytes for the crash journal (`restore_writer` reads them)."""
        # Icechunk's public pickling refuses writable sessions (they are meant to be
        # forked); its own pickling of forks uses these two calls.
        async with self.reader.gate.hold(ALONE):
            data: bytes = await self._repo.call(
                lambda: bytes(self._session._session.as_bytes()), bounded=False
            )
        return data

    def _adopt(self, session: icechunk.Session) -> None:
        """Make *session* (a writable session of the branch) this writer's session."""
        self._session = session
        self.reader = SessionReader(session, self._repo.bridge, self._repo.repository)
        self._raw = self.reader._raw

    def _commit_sync(self, message: str, metadata: dict[str, Any]) -> str:
        """Commit, and return only once the branch has reached the new snapshot.

        On local disk a ref update is not conditional: a writer that does not take
        the `RefLock` can drop our snapshot from the branch moments after Icechunk
        reported it committed (on object stores it is, and nothing is checked).  The
        session as it was before each attempt is kept; if the branch did not reach the
        snapshot, that session commits again (on top of the other writer's work,
        rebasing).  After `COMMIT_ATTEMPTS` the changes stay in the (restored) session
        and `StorageFailure` is raised.
        """
        repository = self._repo.repository
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            with self._repo.lock.held():
                saved = bytes(self._session._session.as_bytes())
                base = self._session.snapshot_id
                if attempt > 1:
                    self._repo.events["commit_retries"] += 1
                try:
                    sid: str = self._session.commit(
                        message,
                        metadata={**metadata, TOKEN_KEY: self.token},
                        rebase_with=icechunk.ConflictDetector(),
                    )
                except icechunk.InternalError:  # how a rebase off the history ends
                    self._adopt(_session_from_bytes(saved))  # it may have half-run
                    self._refuse_if_moved_off()
                    raise
                # On object stores the ref update is a conditional write: a commit that
                # returned is on the branch (and checking cost a round trip or more).
                if not self._repo.lock.needed or landed(repository, self.branch, sid):
                    # the snapshot just written is in Icechunk's cache (no GET expected; not
                    # yet counted on object storage)
                    if repository.lookup_snapshot(sid).parent_id != base:
                        self._repo.events["rebases"] += 1
                    return sid
            log.warning(
                "branch %s: commit %s was dropped from the branch by another writer's "
                "ref update (a program other than icefs writing the repository?); "
                "committing again (attempt %d of %d)",
                self.branch,
                sid,
                attempt,
                COMMIT_ATTEMPTS,
            )
            self._adopt(_session_from_bytes(saved))
        raise errors.StorageFailure(
            f"commit to {self.branch} was dropped by other writers {COMMIT_ATTEMPTS} times; "
            "the changes stay uncommitted"
        )

    def _refuse_if_moved_off(self) -> None:
        """Raise `Busy` if the branch no longer descends from this session's base.

        That happens when the branch was reset elsewhere to an older or unrelated
        snapshot; Icechunk cannot rebase onto it (it fails with an `InternalError`).
        """
        repository = self._repo.repository
        tip = repository.lookup_branch(self.branch)
        base = self._session.snapshot_id
        if any(info.id == base for info in repository.ancestry(snapshot_id=tip)):
            return
        raise errors.Busy(
            f"branch {self.branch} was moved to {tip} (a reset?), off the history this "
            f"session started from ({base}): the changes stay uncommitted; discard them "
            "or copy them elsewhere first"
        )

    async def commit(self, message: str, metadata: dict[str, Any] | None = None) -> str:
        """Commit with *message* and *metadata*, rebasing over changes made elsewhere when
        they do not overlap.

        Raises `Busy` (with the conflicts in its message) when they do.
        """
        try:
            async with self.reader.gate.hold(ALONE):
                sid: str = await self._repo.bridge.run_sync(
                    self._commit_sync, message, metadata or {}, kind="commit", bounded=False
                )
        except icechunk.RebaseFailedError as exc:
            conflicts = "; ".join(
                f"{getattr(c, 'conflict_type', c)} at {getattr(c, 'path', '?')}"
                for c in getattr(exc, "conflicts", ()) or ()
            )
            raise errors.Busy(
                f"conflicts with another writer: {conflicts or first_line(exc)}"
            ) from exc
        except errors.IcefsError:
            raise
        except Exception as exc:
            raise translate(exc) from exc
        return sid


def _move_sync(
    repo: Repo, branch: str, source: str, target: str, message: str, metadata: dict[str, Any]
) -> str:
    with repo.lock.held():
        session = repo.repository.rearrange_session(branch)
        session.move(f"/{source}", f"/{target}")
        sid: str = session.commit(message, metadata=metadata)
        if repo.lock.needed and not landed(repo.repository, branch, sid):
            raise errors.StorageFailure(
                f"the move of /{source} to /{target} (snapshot {sid}) was dropped from "
                f"{branch} by another writer's ref update: run it again"
            )
    return sid


async def move_node(
    repo: Repo, branch: str, source: str, target: str, message: str, metadata: dict[str, Any]
) -> str:
    """Move the node (array or group) *source* of *branch* to *target*, as a commit of its
    own: Icechunk's rearrange session, which moves nodes without touching a chunk and
    holds nothing else.  Return the new snapshot.

    The target's parent must be a group, and nothing may be at *target* (`Exists`).
    """
    try:
        sid: str = await repo.bridge.run_sync(
            _move_sync,
            repo,
            branch,
            source,
            target,
            message,
            metadata,
            kind="commit",
            bounded=False,
        )
    except errors.IcefsError:
        raise
    except Exception as exc:
        raise translate(exc) from exc
    return sid


async def open_writer(repo: Repo, branch: str) -> BranchWriter:
    """Open a writable session on *branch* at its current tip."""
    session = await repo.call(repo.repository.writable_session, branch, kind="snapshot")
    return BranchWriter(repo, branch, session)


def _session_from_bytes(data: bytes) -> icechunk.Session:
    from icechunk._icechunk_python import PySession

    return icechunk.Session(PySession.from_bytes(data))


async def restore_writer(
    repo: Repo, branch: str, data: bytes, token: str, since_ns: int
) -> BranchWriter:
    """Rebuild the writable session of *branch* from `BranchWriter.serialized` bytes.

    Raises `InvalidInput` for bytes that are not a writable session of *branch*.
    """
    session: icechunk.Session = await repo.call(_session_from_bytes, data, bounded=False)
    if session.read_only or session.branch != branch:
        raise errors.InvalidInput(f"the saved session is not a writable session of {branch}")
    writer = BranchWriter(repo, branch, session)
    writer.token = token
    writer.touched = True
    writer.since_ns = since_ns
    return writer
