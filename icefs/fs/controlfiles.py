"""The control files at work: what reading them says, and what writing them does.

Reading a control file renders its text at open (`Text`): the mount's
version, pid, stats and status, a view's snapshot id, log and status.  Writing
one (`Command`) runs its command when the bytes arrive: ``refresh`` re-reads
the refs, ``commit`` commits the branch with the written message, ``discard``
drops its uncommitted changes, ``branch`` and ``tag`` make refs.  A commit
file closed with nothing written commits nothing, and says so in status.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from icefs import __version__
from icefs.errors import InvalidInput, NotFound, PermissionDenied, ReadOnly
from icefs.fs import control
from icefs.fs.handles import Command, Text
from icefs.fs.values import NodeKind, OpenReply

if TYPE_CHECKING:
    from icefs.fs.branches import Branches
    from icefs.fs.handles import HandleTable
    from icefs.fs.inodes import InodeTable, Path
    from icefs.fs.refdirs import RefDirectories
    from icefs.fs.refs import RefTable
    from icefs.fs.stats import Stats
    from icefs.fs.values import Invalidator, MountOptions, Node, View
    from icefs.store.prefetch import Prefetcher
    from icefs.store.repo import Repo

__all__ = ["ControlFiles"]

log = logging.getLogger(__name__)


class ControlFiles:
    """Opens, renders and runs the control files of the root and of each view."""

    def __init__(
        self,
        repo: Repo,
        refs: RefTable,
        branches: Branches,
        refdirs: RefDirectories,
        handles: HandleTable,
        inodes: InodeTable,
        stats: Stats,
        prefetcher: Prefetcher,
        options: MountOptions,
        kernel: Invalidator,
    ) -> None:
        self._repo = repo
        self._refs = refs
        self._branches = branches
        self._refdirs = refdirs
        self._handles = handles
        self._inodes = inodes
        self._stats = stats
        self._prefetcher = prefetcher
        self._options = options
        self._kernel = kernel

    def check_writable(self, node: Node) -> None:
        """Refuse (EACCES, EROFS) writing the control file *node*."""
        is_root_file = node.kind is NodeKind.ROOT_CTRL_FILE
        if node.ctrl not in control.writable_files(is_root_file):
            raise PermissionDenied(f"{'/'.join(node.path)} is read-only")
        if node.kind is NodeKind.REF_CTRL_FILE:
            if node.ctrl in control.BRANCH_COMMANDS:
                self._branches.writable(node.view)  # commit, discard: writable branches only
            elif self._options.read_only:
                raise ReadOnly("the mount is read-only: no new branches or tags")

    async def open(self, node: Node, ino: int, writing: bool) -> OpenReply:
        """Open the control file *node*: a command to write, or its text to read."""
        if writing:
            self.check_writable(node)
            return OpenReply(self._handles.add(Command(node, ino)), direct_io=True)
        text = Text(node, ino, await self._render(node))
        return OpenReply(self._handles.add(text), direct_io=True)

    async def write(self, handle: Command, data: bytes) -> int:
        """Run the command of *handle* with the written *data*."""
        node = handle.node
        handle.wrote = True
        if node.kind is NodeKind.ROOT_CTRL_FILE and node.ctrl == "refresh":
            self._refs.wanted()
            await self._refs.refresh()
        elif node.ctrl in control.REF_COMMANDS:
            await self._refdirs.make_ref(node, data)
        elif node.ctrl == "discard":
            await self._discard(node)
        elif node.ctrl == "commit":
            await self._commit(node, data)
        else:
            raise ReadOnly(f"{'/'.join(node.path)} is read-only")
        return len(data)

    def released(self, handle: Command) -> None:
        """The last descriptor of *handle* closed.  Never raises."""
        if not handle.wrote and handle.node.ctrl == "commit" and handle.node.view is not None:
            # no errno can reach anyone now: status and log say it
            self._branches.state(handle.node.view.ref).error(
                "nothing was written to .icefs/commit before it was closed: nothing "
                "committed (write a message)"
            )

    async def _commit(self, node: Node, data: bytes) -> None:
        state = self._branches.writable(node.view)
        try:
            message = data.decode("utf-8").strip()
        except UnicodeDecodeError:
            state.error("commit refused: the message is not UTF-8 text")
            raise InvalidInput("commit message is not UTF-8") from None
        if not message:
            state.error("commit refused: empty commit message")
            raise InvalidInput("empty commit message")
        await self._branches.commit(state, message)

    async def _discard(self, node: Node) -> None:
        state = self._branches.writable(node.view)
        changed = set(state.changed_keys)
        await state.discard()
        await self._refs.follow(state.branch)
        await self._forget_view(node.path[:2], changed)

    async def _forget_view(self, prefix: Path, keys: set[str]) -> None:
        """Make the kernel forget what it caches of the ref directory *prefix*, whose
        content just changed under it (a discard): attributes, pages and names, and
        the cached absence of each of *keys*; return when it has, so that the next
        call sees the new content."""
        names: dict[Path, int] = dict(self._inodes.below(prefix))
        for key in keys:
            names.setdefault((*prefix, *key.split("/")), 0)
        for ino in names.values():
            if ino:
                self._kernel.inode(ino)
        await self._kernel.entries(
            [(self._inodes.ino(p[:-1]), p[-1]) for p in names if self._inodes.known(p[:-1])]
        )

    # -- what reading says -------------------------------------------------------------------

    async def _render(self, node: Node) -> bytes:
        name = node.ctrl
        if node.kind is NodeKind.ROOT_CTRL_FILE:
            if name == "version":
                return f"{__version__}\n".encode()
            if name == "pid":
                return f"{os.getpid()}\n".encode()
            if name == "stats":
                return control.render_json(self._stats_doc())
            if name == "refresh":
                return f"{self._refs.interval:g}\n".encode()
            if name == "status":
                return control.render_json(self.mount_status())
        view = node.view
        assert view is not None
        if name == "snapshot_id":
            return f"{view.snapshot_id}\n".encode()
        if name == "log":
            return control.render_log(await self._repo.ancestry(view.snapshot_id))
        if name == "status":
            return control.render_json(await self.view_status(view))
        if name in control.BRANCH_COMMANDS | control.REF_COMMANDS:
            return b""
        raise NotFound(name)

    def _stats_doc(self) -> dict[str, object]:
        stats, ahead = self._stats, self._prefetcher
        stats.pending_bytes = sum(
            f.spool.size
            for st in self._branches.states.values()
            for f in st.files.values()
            if not f.scratch
        )
        stats.prefetch_hits = ahead.hits
        stats.prefetch_at_open = ahead.at_open
        stats.prefetch_unused = ahead.unused
        stats.prefetch_joined = ahead.joined
        stats.prefetch_held_bytes = ahead.held_bytes
        return stats.as_json()

    def mount_status(self) -> dict[str, object]:
        """The mount-wide status document."""
        refs = self._refs
        return {
            "version": __version__,
            "pid": os.getpid(),
            "storage": self._options.storage,
            "mountpoint": self._options.mountpoint,
            "read_only": self._options.read_only,
            "refresh_seconds": refs.interval,
            "default_branch": self._options.default_branch,
            "branches": len(refs.branches),
            "tags": len(refs.tags),
            "last_refresh": (
                control.render_time(int(refs.last_refresh * 1e9)) if refs.last_refresh else None
            ),
            "last_error": refs.last_error,
            "last_error_at": refs.last_error_at,
            # what an unmount now would drop, by branch: scratch files, pending chunks
            "dropped_at_unmount": self._branches.leftovers(),
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
            doc.update(await state.status())
        if view.kind == "branch":
            doc["tip_snapshot_id"] = self._refs.branches.get(view.ref)
        return doc
