"""The ref table: branches and tags as the mount shows them, and their refresher.

`RefTable` keeps {branch: tip} and {tag: snapshot} as last read from the
repository, re-reads them every refresh interval (or when asked), and is told
of every change made here (a commit, a new or deleted ref) at once, so that a
refresh that read the repository before that change cannot put it back.  It
also makes and deletes refs, and turns a ref directory's name into a `View`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING

import trio

from icefs.errors import Exists, IcefsError, InvalidInput, NotFound
from icefs.fs.values import View
from icefs.paths import name_to_ref, ref_to_name
from icefs.timefmt import now_utc

if TYPE_CHECKING:
    from icefs.store import Repo

__all__ = ["RefTable"]

log = logging.getLogger(__name__)

#: Reads of the refs that a change made here meanwhile may send back, before giving up.
REREADS = 5


class RefTable:
    """Branches and tags of the repository as this mount knows them."""

    def __init__(self, repo: Repo, *, refresh: float, read_only: bool) -> None:
        self._repo = repo
        #: seconds between refreshes (SIGHUP may change it)
        self.interval = refresh
        self._read_only = read_only
        self.branches: dict[str, str] = {}
        self.tags: dict[str, str] = {}
        self.last_refresh = 0.0
        self.last_error: str | None = None
        self.last_error_at: str | None = None
        self._refresh_failed = False
        self._wanted = trio.Event()
        #: bumped by every change of `branches`/`tags` made here (see `refresh`)
        self._generation = 0

    # -- reading ------------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Re-read every branch and tag from the repository."""
        # A commit, discard or ref change made here while the refs were being read is
        # newer than what was read: read again rather than put a branch back to its old
        # tip (seen: a just-committed chunk vanished for a refresh interval).
        for _ in range(REREADS):
            generation = self._generation
            branches, tags = await self._repo.refs()
            if generation == self._generation:
                break
        else:
            return
        # A ref this mount knew that is missing from the listing is asked for by name
        # before it goes: a branch that exists must never vanish from the view.
        for known, found, lookup in (
            (self.branches, branches, self._repo.lookup_branch),
            (self.tags, tags, self._repo.lookup_tag),
        ):
            for ref in [r for r in known if r not in found]:
                with contextlib.suppress(NotFound, InvalidInput):
                    found[ref] = await lookup(ref)
        if generation != self._generation:
            return  # changed here while we asked: the next refresh reads again
        moved = [b for b, sid in branches.items() if self.branches.get(b, sid) != sid]
        if moved:
            log.info("branches moved: %s", ", ".join(sorted(moved)))
        self.branches, self.tags = branches, tags
        self.last_refresh = time.time()
        if self._refresh_failed:
            self.last_error = self.last_error_at = None
            self._refresh_failed = False

    def wanted(self) -> None:
        """Ask the refresher for a refresh now."""
        self._wanted.set()

    async def run_refresher(self) -> None:
        """Refresh every `interval` seconds (or when asked), forever."""
        while True:
            with trio.move_on_after(self.interval):
                await self._wanted.wait()
            self._wanted = trio.Event()
            try:
                await self.refresh()
            except IcefsError as exc:
                self.note_error(f"refreshing refs failed: {exc}", refreshing=True)

    def note_error(self, message: str, *, refreshing: bool = False) -> None:
        """Log *message* as a warning and show it as the root status's `last_error`.

        An error *refreshing* the refs is cleared by the next refresh that works.
        """
        log.warning("%s", message)
        self.last_error = message
        self.last_error_at = now_utc()
        self._refresh_failed = refreshing

    async def view(self, kind: str, name: str, session_base: str | None = None) -> View:
        """Resolve the ref directory *name* of *kind*; `NotFound` if there is none.

        *session_base*: the snapshot a branch's writable session stands on, which
        the view shows instead of the moving tip.
        """
        if kind == "snapshot":
            try:
                meta = await self._repo.snapshot(name)
            except (NotFound, InvalidInput):
                raise NotFound(f"no snapshot {name}") from None
            return View("snapshot", name, meta.id, meta.written_ns, True)
        ref = name_to_ref(name)
        if ref_to_name(ref) != name:
            raise NotFound(f"no {kind} {name}")
        known = self.branches if kind == "branch" else self.tags
        lookup = self._repo.lookup_branch if kind == "branch" else self._repo.lookup_tag
        sid = known.get(ref)
        if sid is None:
            # Not seen at the last refresh: ask the repository now, so a ref made
            # elsewhere is reachable at once by name.
            try:
                sid = await lookup(ref)
            except (NotFound, InvalidInput):
                raise NotFound(f"no {kind} {ref}") from None
            known[ref] = sid
        if session_base is not None:
            sid = session_base  # the session's base, not the moving tip
        try:
            meta = await self._repo.snapshot(sid)
        except (NotFound, InvalidInput):
            # The tip we knew is gone (moved by a reset, or dropped by a writer that
            # raced on local disk): the ref stays, at where the repository has it now.
            if session_base is not None:
                raise
            try:
                sid = known[ref] = await lookup(ref)
            except (NotFound, InvalidInput):
                raise NotFound(f"no {kind} {ref}") from None
            meta = await self._repo.snapshot(sid)
        read_only = kind != "branch" or self._read_only
        return View(kind, ref, sid, meta.written_ns, read_only)

    def known(self, kind: str, ref: str) -> bool:
        """Whether the branch or tag *ref* is in the table (kind: 'branches' or 'tags')."""
        return ref in (self.branches if kind == "branches" else self.tags)

    async def snapshot_ids(self) -> list[str]:
        """Return every snapshot reachable from a branch or a tag, newest first."""
        seen: dict[str, int] = {}
        for sid in {*self.branches.values(), *self.tags.values()}:
            # histories share their older part: each walk stops where one before it went
            for meta in await self._repo.ancestry(sid, stop=seen):
                seen[meta.id] = meta.written_ns
        return sorted(seen, key=lambda s: (-seen[s], s))

    # -- changes made here --------------------------------------------------------------------

    def committed(self, branch: str, sid: str) -> None:
        """*branch* now stands at *sid*, committed or reset here (before any other task runs)."""
        # The branch view must go from the session to the new tip, never back to the old
        # tip in between (a reader saw old chunks, or ENOENT for new ones).
        self.branches[branch] = sid
        self._generation += 1

    async def follow(self, branch: str) -> None:
        """Read where *branch* stands now (after a discard); errors are left to the refresher."""
        with contextlib.suppress(IcefsError):
            self.branches[branch] = await self._repo.lookup_branch(branch)
            self._generation += 1

    async def create_branch(self, branch: str, sid: str) -> None:
        """Create *branch* at *sid*; `Exists` if there is one."""
        if branch in self.branches:
            raise Exists(f"branch {branch!r} already exists")
        await self._repo.create_branch(branch, sid)
        self.branches[branch] = sid
        self._generation += 1

    async def delete_branch(self, branch: str) -> None:
        await self._repo.delete_branch(branch)
        self.branches.pop(branch, None)
        self._generation += 1

    async def create_tag(self, tag: str, sid: str) -> None:
        await self._repo.create_tag(tag, sid)
        self.tags[tag] = sid
        self._generation += 1

    async def delete_tag(self, tag: str) -> None:
        await self._repo.delete_tag(tag)
        self.tags.pop(tag, None)
        self._generation += 1

    async def resolve(self, name: str) -> str:
        """The snapshot id *name* stands for: a branch, else a tag, else a snapshot id."""
        for known in (self.branches, self.tags):
            if name in known:
                return known[name]
        with contextlib.suppress(NotFound, InvalidInput):
            return (await self._repo.snapshot(name)).id
        for lookup in (self._repo.lookup_branch, self._repo.lookup_tag):  # made elsewhere
            with contextlib.suppress(NotFound, InvalidInput):
                return await lookup(name)
        raise NotFound(f"no branch, tag or snapshot {name!r}")

    async def tip(self, branch: str) -> str:
        """Where *branch* stands (the table, else the repository)."""
        return self.branches.get(branch) or await self._repo.lookup_branch(branch)
