"""Every branch this mount writes: their states, commits, the crash journal, unmount.

`Branches` makes a `BranchState` the first time a branch is written and keeps
it while the mount lives.  It commits (counting commits in the stats), saves
sessions to the crash journal and restores them after a crash, and commits or
discards everything at unmount.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

import trio

from icefs.errors import Busy, IcefsError, ReadOnly, TimedOut
from icefs.fs import branchstatus
from icefs.fs.branch import BranchState
from icefs.fs.commitinfo import signature
from icefs.fs.files import describe_leftovers
from icefs.memory import release_freed
from icefs.tasks import TaskNursery

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from icefs.fs.files import SessionJournal
    from icefs.fs.refs import RefTable
    from icefs.fs.stats import Stats
    from icefs.fs.values import View
    from icefs.fs.zarr2files import Zarr2Files
    from icefs.memory import MemoryBudget
    from icefs.store import Repo, SnapshotTree

__all__ = ["Branches"]

log = logging.getLogger(__name__)


class Branches:
    """The `BranchState` of each branch written through this mount."""

    def __init__(
        self,
        repo: Repo,
        journal: SessionJournal,
        refs: RefTable,
        stats: Stats,
        *,
        decode_chunks: bool,
        mountpoint: str = "",
        zarr2_files: Zarr2Files | None = None,
        budget: MemoryBudget | None = None,
        commit_timeout: float | None = None,
    ) -> None:
        self._repo = repo
        #: seconds a caller waits for a commit (None: until it ends)
        self._commit_timeout = commit_timeout
        #: where commits run while `run` runs, so that one past its deadline goes on
        self._tasks = TaskNursery()
        self._zarr2_files = zarr2_files
        self._budget = budget
        #: recorded in every commit's metadata (`icefs.fs.commitinfo.signature`)
        self._mountpoint = mountpoint
        self.journal = journal
        self._refs = refs
        self._stats = stats
        self._decode_chunks = decode_chunks
        self.states: dict[str, BranchState] = {}
        #: branches whose commit at unmount failed
        self.unmount_failures: list[str] = []

    def get(self, branch: str) -> BranchState | None:
        return self.states.get(branch)

    def state(self, branch: str) -> BranchState:
        """The state of *branch*, made at its first use."""
        state = self.states.get(branch)
        if state is None:
            state = self.states[branch] = BranchState(
                branch,
                self._repo,
                self.journal,
                on_commit=self._refs.committed,
                decode_chunks=self._decode_chunks,
                zarr2_files=self._zarr2_files,
                budget=self._budget,
            )
        return state

    def writable(self, view: View | None) -> BranchState:
        """The state of a writable branch view; `ReadOnly` for anything else."""
        if view is None or view.read_only:
            raise ReadOnly("read-only" if view is None else f"{view.kind} {view.ref} is read-only")
        return self.state(view.ref)

    def of_view(self, view: View | None) -> BranchState | None:
        """The state of the branch *view* shows, if it has one (None for tags, snapshots,
        and the Zarr v2 renderings, which show only what is stored)."""
        if view is None or view.kind != "branch" or view.render:
            return None
        return self.states.get(view.ref)

    def session_base(self, branch: str) -> str | None:
        """The snapshot the writable session of *branch* stands on, if it has one."""
        state = self.states.get(branch)
        return state.writer.base_snapshot_id if state is not None and state.writer else None

    def session_tree(self, branch: str) -> SnapshotTree | None:
        """The tree of the writable session of *branch* (it shows the uncommitted changes)."""
        state = self.states.get(branch)
        return state.tree if state is not None else None

    def forget(self, branch: str) -> None:
        """Drop the state of *branch* (the branch was deleted)."""
        self.states.pop(branch, None)

    @property
    def dirty(self) -> list[str]:
        """The branches with uncommitted changes."""
        return sorted(name for name, state in self.states.items() if state.dirty)

    async def commit(
        self,
        state: BranchState,
        message: str,
        metadata: dict[str, Any] | None = None,
        uid: int | None = None,
    ) -> str | None:
        """Commit *state*'s branch with *message*; return the new snapshot (None: no changes).

        The commit records *metadata* and who (*uid*, else the daemon's user) made it where.
        """
        recorded = {
            **signature(os.getuid() if uid is None else uid, self._mountpoint),
            **(metadata or {}),
        }
        return await self._bounded(state, self._counted(state.commit(message, recorded)))

    async def run(self) -> None:
        """Keep the nursery commits run in until cancelled (a task of the mount's nursery);
        cancelled, it waits for a commit in flight (Icechunk cannot stop one)."""
        await self._tasks.run()

    async def _bounded(
        self, state: BranchState, commit: Coroutine[Any, Any, str | None]
    ) -> str | None:
        """Await *commit*, or raise `TimedOut` once the commit timeout has passed.

        Icechunk cannot stop a commit: past the deadline it goes on in the background,
        holding the branch's lock (a later commit waits for it, and finds nothing left
        to commit if it landed).  A late landing is logged and shown in status as
        ``last_commit`` with ``late_seconds``; a late failure leaves the changes
        uncommitted, as any failed commit does.
        """
        nursery = self._tasks.nursery
        if nursery is None or self._commit_timeout is None:
            return await commit
        timeout = self._commit_timeout
        done = trio.Event()
        outcome: list[str | None] = []
        #: the commit's error: an IcefsError, or a bug the caller's request reports
        failure: list[Exception] = []
        answered: list[float] = []

        async def run() -> None:
            try:
                outcome.append(await commit)
            except Exception as exc:  # never into the nursery: it would end the mount
                failure.append(exc)
            finally:
                done.set()
            if answered:
                self._late(state, outcome, failure, time.monotonic() - answered[0])

        nursery.start_soon(run)
        with trio.move_on_after(timeout):
            await done.wait()
        if failure:
            raise failure[0]
        if outcome:
            return outcome[0]
        answered.append(time.monotonic())
        self._stats.commit_timeouts += 1
        message = (
            f"the commit took longer than {timeout:g} s (commit_timeout): the changes "
            "stay uncommitted for now; it goes on, and status says if it lands"
        )
        state.error(message)
        raise TimedOut(f"branch {state.branch}: {message}")

    @staticmethod
    def _late(
        state: BranchState, outcome: list[str | None], failure: list[Exception], after: float
    ) -> None:
        """Say how a commit answered with `TimedOut` ended, *after* seconds later."""
        if failure and not isinstance(failure[0], IcefsError):
            log.error("branch %s: a commit failed unexpectedly", state.branch, exc_info=failure[0])
            return
        if failure:
            log.warning(
                "branch %s: the commit that timed out failed %.1f s later; the changes "
                "stay uncommitted: %s",
                state.branch,
                after,
                failure[0],
            )
            return
        sid = outcome[0] if outcome else None
        if sid is None:
            return
        state.note_late(sid, after)
        log.warning(
            "branch %s: the commit that timed out landed %.1f s after its deadline: %s",
            state.branch,
            after,
            sid,
        )

    async def _counted(self, commit: Coroutine[Any, Any, str | None]) -> str | None:
        """Run *commit* and count it in the stats (failed, or landed: not when it had
        nothing to commit)."""
        started = time.monotonic()
        try:
            sid = await commit
        except IcefsError as exc:
            self._stats.record_commit(time.monotonic() - started, ok=False)
            if isinstance(exc, Busy):
                self._stats.commit_conflicts += 1
            raise
        if sid is not None:
            self._stats.record_commit(time.monotonic() - started, ok=True)
            await trio.to_thread.run_sync(release_freed)  # the session's memory, dropped
        return sid

    async def move(self, state: BranchState, source: str, target: str) -> str:
        """Move the node *source* of *state*'s branch to *target*: commit the branch's
        uncommitted changes first (Icechunk moves in a session that holds nothing else,
        and cannot rebase other changes over a move), then the move; return its snapshot."""
        await state.settle()
        if state.dirty:
            await self.commit(state, f"icefs: uncommitted changes, before mv /{source} /{target}")
        sid = await self._bounded(
            state,
            self._counted(state.move(source, target, signature(os.getuid(), self._mountpoint))),
        )
        assert sid is not None  # a move always makes a snapshot
        return sid

    def uncommitted_since(self) -> dict[str, str]:
        """{branch: when its uncommitted changes began} for every dirty branch."""
        out = {}
        for name, state in sorted(self.states.items()):
            since = branchstatus.uncommitted_since(state)
            if since is not None:
                out[name] = since
        return out

    def leftovers(self) -> dict[str, dict[str, list[str]]]:
        """Per branch, what lives only in this mount and goes at unmount (scratch, pending)."""
        out = {}
        for name, state in sorted(self.states.items()):
            files = branchstatus.leftovers(state)
            if any(files.values()):
                out[name] = files
        return out

    async def shutdown(self, on_unmount: str, mountpoint: str) -> dict[str, str]:
        """Commit (or discard) every branch with uncommitted changes; return new snapshots.

        Failures are logged and leave that branch's changes uncommitted (in the
        journal, if there is one); the others still commit.
        """
        for name, files in self.leftovers().items():
            log.warning(
                "branch %s: dropped at unmount, never committed: %s",
                name,
                describe_leftovers(files),
            )
        committed: dict[str, str] = {}
        for name in self.dirty:
            state = self.states[name]
            if on_unmount == "discard":
                await state.discard()
                log.info("branch %s: uncommitted changes discarded at unmount", name)
                continue
            message = f"icefs: automatic commit at unmount of {mountpoint}"
            try:
                sid = await self.commit(state, message)
            except IcefsError as exc:
                await state.save_journal()
                where = "kept in the journal for the next mount" if self.journal.enabled else "lost"
                log.error(
                    "branch %s: commit at unmount failed, its uncommitted changes are %s: %s",
                    name,
                    where,
                    exc,
                )
                self.unmount_failures.append(name)
                continue
            if sid is not None:
                committed[name] = sid
                log.info("branch %s: committed %s at unmount", name, sid)
        return committed

    async def recover_journal(self) -> None:
        """Restore the sessions a crashed daemon left in the journal (before serving)."""
        for entry in await trio.to_thread.run_sync(self.journal.entries):
            tip = self._refs.branches.get(entry.branch)
            if tip is None:
                self.journal.set_aside(entry.branch, "the branch no longer exists")
                continue
            if any(meta.token == entry.token for meta in await self._repo.ancestry(tip)):
                # killed after the commit landed but before the journal was dropped
                log.info(
                    "journal: branch %s: the saved session was committed before the "
                    "crash; nothing to recover",
                    entry.branch,
                )
                self.journal.drop(entry.branch)
                continue
            try:
                await self.state(entry.branch).recover(entry)
            except IcefsError as exc:
                self.journal.set_aside(entry.branch, str(exc))

    async def save_journals(self) -> None:
        """Save every branch's session that changed since its last save."""
        for state in list(self.states.values()):
            await state.save_journal()

    async def commit_dirty(self, message: str) -> None:
        """Commit every dirty branch with *message* (for --commit-interval); log failures."""
        for state in list(self.states.values()):
            if state.dirty:
                try:
                    await self.commit(state, message)
                except IcefsError as exc:
                    log.warning("branch %s: periodic commit failed: %s", state.branch, exc)

    def close(self) -> None:
        """Free every write buffer.  Never raises."""
        for state in self.states.values():
            for overlay in state.local.drop_all():
                overlay.spool.close()
