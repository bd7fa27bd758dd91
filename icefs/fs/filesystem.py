"""`Filesystem`: the filesystem core with its collaborators, as the daemon drives it.

`Filesystem.build` makes every collaborator once and passes each the others it
needs; the daemon only uses this small facade (start, background jobs, shutdown,
close, reconfigure, summary) and hands `Filesystem.core` to the FUSE adapter.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import platformdirs
import trio

from icefs.errors import IcefsError
from icefs.fs.attrs import Attributes
from icefs.fs.branches import Branches
from icefs.fs.changes import NamespaceChanges
from icefs.fs.control.commands import Commands
from icefs.fs.control.files import ControlFiles
from icefs.fs.control.queries import Queries
from icefs.fs.control.status import StatusReports
from icefs.fs.core import IcefsCore
from icefs.fs.handles import HandleTable
from icefs.fs.inodes import InodeTable
from icefs.fs.listings import Listings
from icefs.fs.namespace import Namespace
from icefs.fs.overlay import WriteOverlay
from icefs.fs.reads import WHOLE_FETCH_LIMIT, Reads
from icefs.fs.refdirs import RefDirectories
from icefs.fs.refs import RefTable
from icefs.fs.spool import SpoolBudget
from icefs.fs.stats import Stats
from icefs.fs.uploads import Uploader
from icefs.fs.values import RENDERINGS, NoKernel
from icefs.fs.writes import BranchWrites
from icefs.fs.zarr2files import Zarr2Files
from icefs.fs.zarr2writes import Zarr2Writes
from icefs.memory import MemoryBudget
from icefs.store.prefetch import Prefetcher

if TYPE_CHECKING:
    from collections.abc import Sequence

    from icefs.cache import ReadCache
    from icefs.fs.files import SessionJournal
    from icefs.fs.values import Invalidator, MountOptions
    from icefs.fs.writes import TreeWrites
    from icefs.store import Repo

__all__ = ["Filesystem", "Summary", "default_cache_dir"]

log = logging.getLogger(__name__)


def default_cache_dir() -> str:
    """Where write buffers spool and the crash journal lives when no cache dir is given."""
    return platformdirs.user_cache_dir("icefs", appauthor=False)


@dataclass(frozen=True, slots=True)
class Summary:
    branches: int
    tags: int
    dirty: tuple[str, ...]


class _NoJournal:
    """The crash journal of a mount that keeps none."""

    enabled = False

    def save(
        self, branch: str, token: str, data: bytes, since_ns: int, unstored: Sequence[str] = ()
    ) -> None:
        pass

    def drop(self, branch: str) -> None:
        pass

    def entries(self) -> list[object]:
        return []

    def set_aside(self, branch: str, reason: str) -> str:
        return ""


class Filesystem:
    """One mounted repository: the request layer and what runs beside it."""

    def __init__(
        self,
        core: IcefsCore,
        spool: SpoolBudget,
        prefetcher: Prefetcher,
        uploader: Uploader,
        cache: ReadCache | None = None,
    ) -> None:
        self.core = core
        self._cache = cache
        self._spool = spool
        self._prefetcher = prefetcher
        self.uploader = uploader

    def background_stores(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Inside, closes may leave stores to the background (write-behind); leaving
        waits for those in flight. Hold it around serving requests *and* the unmount's
        commits: a store cancelled with the request loop would be lost."""
        return self.uploader.running()

    @classmethod
    def build(
        cls,
        repo: Repo,
        options: MountOptions,
        *,
        journal: SessionJournal | None = None,
        kernel: Invalidator | None = None,
    ) -> Filesystem:
        """Make the filesystem of *repo* as *options* say, every collaborator passed in.

        *journal*: where uncommitted sessions are saved (none by default); *kernel*:
        what drops the kernel's caches (the FUSE adapter's; nothing by default).
        """
        kernel = kernel or NoKernel()
        journal = journal or _NoJournal()  # type: ignore[assignment]
        assert journal is not None
        budget = MemoryBudget(options.metadata_memory)
        stats = Stats(memory=budget)
        repo.bridge.observe = stats.record_storage
        inodes = InodeTable()
        handles = HandleTable()
        spool = SpoolBudget(options.write_buffer, options.cache_dir or default_cache_dir())
        prefetcher = Prefetcher(largest=WHOLE_FETCH_LIMIT, budget=options.read_ahead_memory)
        refs = RefTable(repo, refresh=options.refresh, read_only=options.read_only)
        zarr2_files = Zarr2Files()
        branches = Branches(
            repo,
            journal,
            refs,
            stats,
            decode_chunks=options.verify_chunks == "decode",
            mountpoint=options.mountpoint,
            zarr2_files=zarr2_files,
            budget=budget,
            commit_timeout=options.commit_timeout,
        )
        namespace = Namespace(repo, refs, branches, inodes, stats, zarr2_files, budget)
        attrs = Attributes(options, refs, branches)
        listings = Listings(namespace, refs, branches, attrs)
        reads = Reads(namespace, refs, handles, prefetcher, stats)
        uploader = Uploader(
            options.write_buffer, enabled=options.write_behind.enabled(options.remote)
        )
        overlay = WriteOverlay(namespace, branches, handles, inodes, spool, stats, kernel, uploader)
        changes = NamespaceChanges(namespace, branches, listings, overlay, handles, inodes, attrs)
        refdirs = RefDirectories(refs, branches, namespace, listings, inodes, options)
        controls = ControlFiles(
            Commands(repo, refs, branches, refdirs, inodes, kernel),
            Queries(repo, refs),
            StatusReports(repo, refs, branches, namespace, options, stats, prefetcher, uploader),
            handles,
            branches,
            refs,
            read_only=options.read_only,
        )
        v3 = BranchWrites(namespace, branches, overlay, changes, handles, inodes, attrs)
        v2 = Zarr2Writes(
            namespace, branches, handles, inodes, overlay, namespace.zarr2_files, kernel, attrs
        )
        writes: dict[str, TreeWrites] = {"": v3, **dict.fromkeys(RENDERINGS, v2)}
        core = IcefsCore(
            inodes=inodes,
            handles=handles,
            refs=refs,
            branches=branches,
            namespace=namespace,
            listings=listings,
            attrs=attrs,
            reads=reads,
            overlay=overlay,
            writes=writes,
            refdirs=refdirs,
            controls=controls,
            stats=stats,
        )
        return cls(core, spool, prefetcher, uploader, repo.cache)

    async def start(self, *, recover: bool) -> None:
        """Read the refs; with *recover*, restore the sessions a crash left in the journal."""
        await self.core.refs.refresh()
        if recover:
            await self.core.branches.recover_journal()

    async def run(self, *, journal_interval: float, commit_interval: float) -> None:
        """Run what goes on beside requests until cancelled: refreshing refs, the read-ahead,
        saving sessions to the journal every *journal_interval* seconds, committing every
        *commit_interval* seconds (0: never), filling the read cache."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.core.refs.run_refresher)
            nursery.start_soon(self._prefetcher.run)
            if self._cache is not None:
                nursery.start_soon(self._cache.run)
            nursery.start_soon(self.core.branches.run)
            if self.core.branches.journal.enabled and journal_interval > 0:
                nursery.start_soon(self._every, journal_interval, self.core.branches.save_journals)
            if commit_interval > 0:
                message = f"icefs: periodic commit ({commit_interval:g} s)"
                nursery.start_soon(
                    self._every, commit_interval, self.core.branches.commit_dirty, message
                )

    @staticmethod
    async def _every(seconds: float, job: object, *args: object) -> None:
        while True:
            await trio.sleep(seconds)
            await job(*args)  # type: ignore[operator]

    async def shutdown(self, on_unmount: str, mountpoint: str) -> dict[str, str]:
        """Store files still open for writing, then commit (or discard) every branch with
        uncommitted changes; return the new snapshots by branch."""
        for fh, _ in self.core.handles.buffered():
            with contextlib.suppress(IcefsError):
                await self.core.flush(fh)
        return await self.core.branches.shutdown(on_unmount, mountpoint)

    @property
    def unmount_failures(self) -> list[str]:
        """The branches whose commit at unmount failed."""
        return self.core.branches.unmount_failures

    def summary(self) -> Summary:
        refs = self.core.refs
        return Summary(len(refs.branches), len(refs.tags), tuple(self.core.branches.dirty))

    def reconfigure(self, *, refresh: float) -> None:
        """Change what may change while mounted (SIGHUP): the refresh interval."""
        self.core.refs.interval = refresh

    def close(self) -> None:
        """Free write buffers and remove the spool directory.  Never raises."""
        self.core.branches.close()
        self._spool.cleanup()
