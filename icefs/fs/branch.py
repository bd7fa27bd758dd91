"""A branch being written through the mount: its session, its commits, its status.

`BranchState` owns the branch's writable session (`BranchWriter`, opened at the
first write) and a `SnapshotTree` over it, so that reads, listings and stats show
the uncommitted changes; what lives only in the mount (`BranchFiles`); commit,
discard and moves, serialised against stores by a shared/exclusive lock; and what
`status` reports: last commit, last error, conflicts.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Final

import trio

from icefs.errors import (
    Busy,
    FileTooLarge,
    IcefsError,
    InvalidInput,
    NotADirectory,
    NotFound,
    StorageFailure,
)
from icefs.fs.branchfiles import BranchFiles
from icefs.gate import ALONE, Gate
from icefs.store import KeyClass, KeyKind, SnapshotTree
from icefs.store.validate import check_metadata
from icefs.store.writer import move_node, open_writer, restore_writer
from icefs.timefmt import now_utc, render_time

if TYPE_CHECKING:
    from collections.abc import Callable

    from icefs.fs.files import JournalEntryLike, OverlayFile, SessionJournal
    from icefs.fs.zarr2files import Zarr2Files
    from icefs.memory import MemoryBudget
    from icefs.store import Repo
    from icefs.store.writer import BranchWriter

__all__ = ["MAX_METADATA_SIZE", "BranchState"]

#: The largest zarr.json icefs stores (Icechunk keeps metadata inside every snapshot).
MAX_METADATA_SIZE: Final = 16 << 20

log = logging.getLogger(__name__)


class BranchState:
    """Everything this mount holds for one branch beyond its committed tip."""

    def __init__(
        self,
        branch: str,
        repo: Repo,
        journal: SessionJournal,
        *,
        on_commit: Callable[[str, str], None] = lambda branch, sid: None,
        decode_chunks: bool = True,
        zarr2_files: Zarr2Files | None = None,
        budget: MemoryBudget | None = None,
    ) -> None:
        self.branch = branch
        #: the mount's memory budget, which the session's tree keeps its caches in
        self._budget = budget
        #: the files written through the branch's Zarr v2 view, until stored
        self.zarr2_files = zarr2_files
        #: decode each compressed chunk with its array's codecs before storing it
        self._decode_chunks = decode_chunks
        #: told (branch, new snapshot) synchronously as the committed session is dropped
        self._on_commit = on_commit
        self._repo = repo
        self._journal = journal
        #: stores or deletes happened since the session was last saved to the journal
        self.journal_wanted = False
        #: when the session was recovered from the journal (status shows it)
        self.recovered: str | None = None
        self.writer: BranchWriter | None = None
        self.tree: SnapshotTree | None = None
        #: files, empty directories, stamps and background stores that live in the mount
        self.local = BranchFiles()
        #: when the session last changed a key or a directory's entries (until committed)
        self.written_ns: dict[str, int] = {}
        #: every key stored or deleted in the session: what a discard changes back
        self.changed_keys: set[str] = set()
        self.last_commit: dict[str, Any] | None = None
        #: bytes stored in the session since it was opened (until committed or discarded)
        self.uncommitted_bytes = 0
        #: sessions saved to the crash journal
        self.journal_saves = 0
        #: a commit is in flight (status then does not wait for the session)
        self.committing = False
        #: the last reset made through this mount: {"from", "to", "time"}
        self.last_reset: dict[str, str] | None = None
        self.last_error: str | None = None
        self.last_error_path: str | None = None
        self.last_error_at: str | None = None
        self.conflicts: list[str] = []
        #: files closed whose background store had not ended when the daemon died
        self.lost_at_crash: list[str] = []
        #: bumped whenever a directory of the branch may have changed what it is (a new
        #: or dropped session, a stored zarr.json, a delete): nodes resolved before are stale
        self.layout = 0
        self._lock = Gate()
        self._opening = trio.Lock()

    @property
    def active(self) -> bool:
        """True while the branch view shows this mount's session instead of the tip."""
        return self.writer is not None

    @property
    def dirty(self) -> bool:
        """Whether the branch has changes to commit: in the session, being stored in the
        background, or kept after their background store failed."""
        return (
            bool(self.local.uploading)
            or (self.writer is not None and self.writer.touched)
            or any(f.upload_error is not None for f in self.local.files.values())
        )

    def modified(self, key: str, now: int | None = None) -> int:
        """Note that the file or directory *key* changed at *now*; return the time.

        A time set by utime before the change no longer holds (as for a write).
        """
        self.local.written(key)
        return now or time.time_ns()

    def entries_changed(self, key: str) -> None:
        """Note that the directory *key* gained or lost an entry now (its mtime and ctime)."""
        self.written_ns[key] = self.modified(key)

    def unchanged(self, key: str, array: str) -> bool:
        """Whether the session holds what its base snapshot holds at *key*, a chunk of
        *array*: nothing stored or deleted there, nor at the metadata of the array or of
        a group above it. Unknown (False) for a session recovered from the journal."""
        if self.recovered is not None or key in self.changed_keys:
            return False
        node = array
        while node:
            if f"{node}/zarr.json" in self.changed_keys:
                return False
            node = node.rpartition("/")[0]
        return "zarr.json" not in self.changed_keys

    def upload_started(self, key: str, overlay: OverlayFile) -> None:
        """The background store of *overlay* at *key* began (the journal names it)."""
        self.local.upload_started(key, overlay)
        self.journal_wanted = True

    def note_late(self, sid: str, seconds: float) -> None:
        """The commit *sid*, which timed out, landed *seconds* after its deadline."""
        if self.last_commit is not None and self.last_commit.get("snapshot_id") == sid:
            self.last_commit["late_seconds"] = round(seconds, 3)

    def note_reset(self, old: str, new: str) -> None:
        """This mount moved the branch from snapshot *old* to *new*."""
        self.last_reset = {"from": old, "to": new, "time": now_utc()}

    def error(self, message: str, path: str | None = None) -> None:
        """Record *message* as the branch's last error (shown in status) and log it.

        *path* names the file it is about: storing that file successfully later
        clears the error, so status never sends anyone after a problem that is gone.
        """
        log.warning("branch %s: %s", self.branch, message)
        self.last_error = message
        self.last_error_path = path
        self.last_error_at = now_utc()

    def _clear_error(self, path: str | None = None) -> None:
        """Forget the last error (about *path*, or whatever it was about if None)."""
        if path is None or self.last_error_path == path:
            self.last_error = self.last_error_path = self.last_error_at = None

    async def _ensure_writer(self) -> BranchWriter:
        if self.writer is not None:
            return self.writer
        # One lock: two first writes arriving together must share one session (opening
        # is an await; without the lock the second session replaced the first, and the
        # first write was lost).
        async with self._opening:
            if self.writer is None:
                self.writer = await open_writer(self._repo, self.branch)
                self.tree = SnapshotTree(self.writer.reader, self._budget)
                self.layout += 1
                log.info(
                    "branch %s: writable session opened at %s",
                    self.branch,
                    self.writer.base_snapshot_id,
                )
            return self.writer

    async def classify(self, key: str, tree: SnapshotTree) -> KeyClass:
        """Classify *key*; keys whose store would fail still count as keys (not scratch)."""
        try:
            return await tree.classify(key)
        except (NotFound, InvalidInput):
            return KeyClass(KeyKind.CHUNK, key)

    async def settle(self, key: str | None = None) -> None:
        """Wait until the background store of *key* (of every key if None) has ended."""
        while True:
            if key is None:
                overlay = next(iter(self.local.uploading.values()), None)
            else:
                overlay = self.local.uploading.get(key)
            if overlay is None or overlay.upload is None:
                return
            await overlay.upload.wait()

    async def store(self, key: str, data: Any, size: int) -> None:
        """Validate and store *data* (*size* bytes) at the Zarr key *key* in the session.

        Raises `InvalidInput` (bad metadata, chunk outside the grid, wrong number of
        coordinates) or `NotFound` (no such array); the previous content stays and the
        reason goes to `last_error`. A background store of *key* ends first.
        """
        await self.settle(key)
        what = await self.check(key, data, size)
        await self.store_checked(key, what, data, size)

    async def check(self, key: str, data: Any, size: int) -> KeyClass:
        """Check that *data* may be stored at *key* (as `store` does); return what it is."""
        async with self._lock.hold("store"):
            await self._ensure_writer()
            assert self.tree is not None
            try:
                what = await self.tree.classify(key)
                if what.kind is KeyKind.SCRATCH:
                    raise InvalidInput(f"{key} is not a Zarr key")
                if what.kind is KeyKind.METADATA and size > MAX_METADATA_SIZE:
                    raise FileTooLarge(
                        f"{key}: {size} bytes of metadata; the limit is "
                        f"{MAX_METADATA_SIZE} (every snapshot carries it)"
                    )
                await self._check(what, data)
            except IcefsError as exc:
                self.error(f"storing {key} failed: {exc}", key)
                raise
            return what

    async def store_checked(self, key: str, what: KeyClass, data: Any, size: int) -> None:
        """Store *data* at *key*, checked by `check` as *what*."""
        async with self._lock.hold("store"):
            writer = await self._ensure_writer()
            assert self.tree is not None
            try:
                if key not in self.changed_keys and await self._holds(key, data, size):
                    # the same bytes as the branch holds (rsync or cp run again): no change
                    self._clear_error(key)
                    return
                await writer.set(key, data)
            except IcefsError as exc:
                self.error(f"storing {key} failed: {exc}", key)
                raise
            self._clear_error(key)
            self.tree.note_stored(what, size)
            if what.kind is KeyKind.METADATA:
                self.layout += 1
            self.journal_wanted = True
            self.changed_keys.add(key)
            self.uncommitted_bytes += size
            log.debug("branch %s: stored %s (%d bytes)", self.branch, key, size)
            self.written_ns[key] = time.time_ns()
            self.local.drop_dirs_above(key)
        if what.kind is KeyKind.METADATA:
            await self._store_pending(what.node)

    async def _holds(self, key: str, data: Any, size: int) -> bool:
        """Whether the branch already holds exactly *data* (*size* bytes) at *key*.

        Asked only for a key unchanged in the session: reads it once when the sizes
        match (metadata and inline chunks are in memory already).
        """
        assert self.tree is not None
        try:
            entry = await self.tree.resolve(tuple(key.split("/")))
        except (NotFound, InvalidInput, NotADirectory):
            return False
        if entry.is_dir or entry.size != size:
            return False
        held = await self.tree.read_whole(entry)
        return memoryview(held).cast("B") == memoryview(data).cast("B")

    async def _check(self, what: KeyClass, data: Any) -> None:
        """Refuse (`InvalidInput`) what zarr could not read back: bad metadata, bad chunks."""
        assert self.tree is not None
        if what.kind is KeyKind.METADATA:
            await trio.to_thread.run_sync(check_metadata, data)
        elif what.kind is KeyKind.CHUNK:
            check = await self.tree.chunk_check(what.node)
            decode = check.decodes and self._decode_chunks
            if decode:
                await trio.to_thread.run_sync(check.check, data, what.coords)
            elif check.cheap:  # headers and sizes: microseconds, not worth a thread
                check.check(data, what.coords, decode=False)

    async def _store_pending(self, array: str) -> None:
        """Store the chunks that were waiting for the array at *array* to exist."""
        prefix = f"{array}/c/" if array else "c/"
        waiting = [
            (k, f)
            for k, f in self.local.files.items()
            if f.pending and (k.startswith(prefix) or k == prefix[:-1])
        ]
        for key, overlay in waiting:
            version = overlay.version
            try:
                await self.store(key, overlay.spool.contents(), overlay.spool.size)
            except NotFound:
                continue  # still no array there (e.g. a group was stored)
            except IcefsError:
                pass  # recorded in last_error; the chunk cannot be stored
            if self.local.files.get(key) is overlay and overlay.version == version:
                overlay.pending = overlay.dirty = False
                if overlay.handles <= 0:
                    self.local.drop(key, overlay)
                    overlay.spool.close()

    async def delete(self, key: str, what: KeyClass) -> None:
        """Delete the key *key* (a node's ``zarr.json`` deletes the node), once every
        background store has ended (one below a deleted node would bring a key back)."""
        await self.settle()
        async with self._lock.hold("store"):
            writer = await self._ensure_writer()
            assert self.tree is not None
            try:
                await writer.delete(key)
            except IcefsError as exc:
                self.error(f"deleting {key} failed: {exc}", key)
                raise
            finally:
                self.layout += 1
            self.tree.note_deleted(what)
            self.journal_wanted = True
            self.changed_keys.add(key)
            self.written_ns.pop(key, None)

    async def commit(self, message: str, metadata: dict[str, Any] | None = None) -> str | None:
        """Commit the session with *message* and *metadata*; return the snapshot id, None if
        nothing changed.

        Raises `Busy` when another writer's changes overlap ours (the changes stay), and
        `StorageFailure` when a file closed before could not be stored (it stays, and
        the next commit tries again).
        """
        await self.store_failed()
        async with self._lock.hold(ALONE):
            writer = self.writer
            if writer is None or not await writer.has_changes():
                return None
            started = time.monotonic()
            self.committing = True
            try:
                sid = await writer.commit(message, metadata)
            except Busy as exc:
                self.conflicts = [str(exc)]
                self.error(f"commit failed: {exc}")
                raise
            except IcefsError as exc:
                self.error(f"commit failed: {exc}")
                if self.tree is not None and self.tree.reader is not writer.reader:
                    # the writer went back to its changes in a restored session
                    self.tree = SnapshotTree(writer.reader, self._budget)
                    self.layout += 1
                raise
            finally:
                self.committing = False
            self._landed(sid, message, started)
            log.info("branch %s: committed %s (%s)", self.branch, sid, message.splitlines()[0])
            return sid

    def _landed(self, sid: str, message: str, started: float) -> None:
        """A commit (or a move) *sid* reached the branch: the session goes, status says so."""
        self._forget_session()
        self._on_commit(self.branch, sid)
        self._clear_error()
        self.last_commit = {
            "snapshot_id": sid,
            "message": message,
            "time": now_utc(),
            "seconds": round(time.monotonic() - started, 3),
        }

    async def move(self, source: str, target: str, metadata: dict[str, Any]) -> str:
        """Move the node *source* to *target* as a commit of its own (`move_node`); return
        the snapshot.  The session must hold no change (the caller commits them first):
        Icechunk's moves share a session with nothing else."""
        async with self._lock.hold(ALONE):
            if self.writer is not None and await self.writer.has_changes():
                raise Busy(f"branch {self.branch} has uncommitted changes: commit them first")
            message = f"icefs: mv /{source} /{target}"
            started = time.monotonic()
            try:
                sid = await move_node(self._repo, self.branch, source, target, message, metadata)
            except IcefsError as exc:
                self.error(f"moving /{source} to /{target} failed: {exc}")
                raise
            self._landed(sid, message, started)
            log.info("branch %s: moved /%s to /%s in %s", self.branch, source, target, sid)
            return sid

    async def store_failed(self) -> None:
        """Wait for every background store, and store again those that failed; raise
        `StorageFailure` naming the first file that still cannot be stored."""
        await self.settle()
        for key, overlay in list(self.local.files.items()):
            if overlay.upload_error is None or self.local.files.get(key) is not overlay:
                continue
            version = overlay.version
            try:
                await self.store(key, overlay.spool.contents(), overlay.spool.size)
            except IcefsError as exc:
                raise StorageFailure(f"{key}, closed before, could not be stored: {exc}") from None
            overlay.upload_error = None
            if overlay.version != version:
                continue  # written again meanwhile: its next close stores it
            overlay.dirty = False
            if overlay.handles <= 0 and self.local.drop(key, overlay):
                overlay.spool.close()

    async def discard(self) -> None:
        """Drop every uncommitted change: the session and files being written (scratch stays)."""
        await self.settle()
        async with self._lock.hold(ALONE):
            self._forget_session()
            for overlay in self.local.drop_written():
                overlay.spool.close()
            self._clear_error()
            log.info("branch %s: uncommitted changes discarded", self.branch)

    def _forget_session(self) -> None:
        if self.tree is not None:
            self.tree.release()
        self.writer = None
        self.tree = None
        self.layout += 1
        self.written_ns.clear()
        self.changed_keys.clear()
        self.uncommitted_bytes = 0
        self.conflicts = []
        self.journal_wanted = False
        self.recovered = None
        self.lost_at_crash = []
        self._journal.drop(self.branch)

    async def save_journal(self) -> None:
        """Save the session to the crash journal if it changed since the last save."""
        if not self._journal.enabled:
            return
        async with self._lock.hold("store"):  # not while a commit or discard runs
            if self.writer is None or not self.journal_wanted:
                return
            self.journal_wanted = False
            try:
                data = await self.writer.serialized()
                unstored = sorted(
                    k
                    for k, f in self.local.files.items()
                    if k in self.local.uploading or f.upload_error
                )
                await trio.to_thread.run_sync(
                    self._journal.save,
                    self.branch,
                    self.writer.token,
                    data,
                    self.writer.since_ns,
                    unstored,
                )
                self.journal_saves += 1
            except (OSError, IcefsError) as exc:
                self.journal_wanted = True
                self.error(f"saving the session to the journal failed: {exc}")

    async def recover(self, entry: JournalEntryLike) -> None:
        """Make the session saved in *entry* this branch's session (after a crash)."""
        async with self._opening, self._lock.hold(ALONE):
            self.writer = await restore_writer(
                self._repo, self.branch, entry.data, entry.token, entry.since_ns
            )
            self.tree = SnapshotTree(self.writer.reader, self._budget)
            self.layout += 1
            self.recovered = render_time(entry.saved_ns)
            self.lost_at_crash = list(entry.unstored)
        if self.lost_at_crash:
            self.error(
                f"{len(self.lost_at_crash)} file(s) closed before the daemon died were still "
                f"being stored and are lost: {', '.join(self.lost_at_crash[:10])}"
            )
        log.warning(
            "branch %s: recovered the uncommitted session saved at %s (base %s); "
            "commit or discard it",
            self.branch,
            self.recovered,
            self.writer.base_snapshot_id,
        )
