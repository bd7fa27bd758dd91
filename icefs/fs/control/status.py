"""What ``.icefs/status`` and ``.icefs/stats`` say: the mount's and each view's status.

The facts come from the parts that hold them (refs, branches, the read-ahead, the
background stores); `Stats.as_json` and `icefs.daemon.metrics` show the same
numbers.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from icefs import __version__
from icefs.fs.branchstatus import status as branch_status
from icefs.store.zarr2tree import left_out
from icefs.timefmt import render_time

if TYPE_CHECKING:
    from icefs.fs.branches import Branches
    from icefs.fs.namespace import Namespace
    from icefs.fs.refs import RefTable
    from icefs.fs.stats import Stats
    from icefs.fs.uploads import Uploader
    from icefs.fs.values import MountOptions, View
    from icefs.store import Repo
    from icefs.store.prefetch import Prefetcher

__all__ = ["StatusReports"]


class StatusReports:
    """Builds the status documents and brings the mount's `Stats` up to date."""

    def __init__(
        self,
        repo: Repo,
        refs: RefTable,
        branches: Branches,
        namespace: Namespace,
        options: MountOptions,
        stats: Stats,
        prefetcher: Prefetcher,
        uploader: Uploader,
    ) -> None:
        self._repo = repo
        self._refs = refs
        self._branches = branches
        self._namespace = namespace
        self._options = options
        self._stats = stats
        self._prefetcher = prefetcher
        self._uploader = uploader

    def current_stats(self) -> Stats:
        """The mount's `Stats`, with what its collaborators count copied in."""
        stats, ahead = self._stats, self._prefetcher
        states = list(self._branches.states.values())
        stats.uncommitted = {
            st.branch: (st.uncommitted_bytes, len(st.changed_keys | st.local.files.keys()))
            for st in states
            if st.dirty
        }
        stats.journal_saves = sum(st.journal_saves for st in states)
        stats.commit_rebases = self._repo.events["rebases"]
        stats.commit_retries = self._repo.events["commit_retries"]
        stats.pending_bytes = sum(
            f.spool.size for st in states for f in st.local.files.values() if not f.scratch
        )
        stats.uploads_in_flight = sum(len(st.local.uploading) for st in states)
        stats.uploads_stored = self._uploader.stored
        stats.uploads_failed = self._uploader.failed
        stats.prefetch_misses = ahead.misses
        stats.prefetch_hits = ahead.hits
        stats.prefetch_at_open = ahead.at_open
        stats.prefetch_unused = ahead.unused
        stats.prefetch_joined = ahead.joined
        stats.prefetch_held_bytes = ahead.held_bytes
        stats.prefetch_late = ahead.late
        stats.prefetch_window = ahead.widest
        stats.prefetch_fetch_ms = 1000 * ahead.fetch_seconds
        cache = self._repo.cache
        if cache is not None:
            stats.read_cache = {**cache.counters.as_dict(), "limit_bytes": cache.limit}
        return stats

    def mount_status(self) -> dict[str, object]:
        """The mount-wide status document."""
        refs, options = self._refs, self._options
        return {
            "version": __version__,
            "pid": os.getpid(),
            "storage": options.storage,
            "mountpoint": options.mountpoint,
            "read_only": options.read_only,
            "refresh_seconds": refs.interval,
            "default_branch": options.default_branch,
            "branches": len(refs.branches),
            "tags": len(refs.tags),
            "last_refresh": (
                render_time(int(refs.last_refresh * 1e9)) if refs.last_refresh else None
            ),
            "last_error": refs.last_error,
            "last_error_at": refs.last_error_at,
            # what an unmount now would drop, by branch: scratch files, pending chunks
            "dropped_at_unmount": self._branches.leftovers(),
            # by branch: when its uncommitted changes began (`icefs gc` spares them)
            "uncommitted_since": self._branches.uncommitted_since(),
            "virtual_containers": list(options.virtual_containers),
            # how Icechunk's calls reach trio (see `Bridge.run`)
            "icechunk_calls": "direct" if self._repo.bridge.direct else "loop thread",
        }

    async def view_status(self, view: View) -> dict[str, object]:
        """The status document of one ref view."""
        doc: dict[str, object] = {
            "ref": view.ref,
            "kind": view.kind,
            "snapshot_id": view.snapshot_id,
            "read_only": view.read_only,
            "has_uncommitted_changes": False,
            "changed_nodes": 0,
            "changed_chunks": 0,
            "changed_paths": [],
            "scratch_files": [],
            "files_being_written": [],
            "empty_directories": [],
            "last_commit": None,
            "last_error": None,
            "last_error_at": None,
            "last_error_path": None,
            "conflicts": [],
        }
        state = self._branches.of_view(view)
        if state is not None:
            doc.update(await branch_status(state))
        if view.kind == "branch":
            doc["tip_snapshot_id"] = self._refs.branches.get(view.ref)
        if state is not None and state.committing:  # it holds the session: answer now
            doc["zarr2_left_out"] = None
            return doc
        tree = await self._namespace.tree_for(view)
        doc["zarr2_left_out"] = await left_out(tree, self._namespace.translations)
        return doc
