"""Writing a ref's tree: the operations every view's writer offers, and the Zarr v3 one.

`TreeWrites` is what the core asks of a view's writer. `Filesystem.build` gives
the core one writer per rendering of a ref (`View.render`): `BranchWrites`
here for the Zarr v3 tree (and for paths outside any ref, which it refuses as
the v3 rules say), `icefs.fs.zarr2writes.Zarr2Writes` for the v2 view.  The
core picks the writer from that table and never asks which view it serves.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Protocol

from icefs.errors import Exists
from icefs.fs.values import OpenReply

if TYPE_CHECKING:
    from icefs.fs.attrs import Attributes
    from icefs.fs.branches import Branches
    from icefs.fs.changes import NamespaceChanges
    from icefs.fs.handles import Buffered, HandleTable
    from icefs.fs.inodes import InodeTable, Path
    from icefs.fs.namespace import Namespace
    from icefs.fs.overlay import WriteOverlay
    from icefs.fs.values import Attr, AttrChange, Caller, Node

__all__ = ["BranchWrites", "TreeWrites"]


class TreeWrites(Protocol):
    """The write operations on the files and directories of one rendering of a ref.

    Each raises `ReadOnly` (or the `IcefsError` that fits) where its view cannot be
    written.  Nodes passed in are of that rendering, or outside any ref.
    """

    async def setattr(self, node: Node, ino: int, change: AttrChange) -> Node:
        """Apply *change*; return the node as it is now."""
        ...

    async def mkdir(self, parent: Node, name: str, caller: Caller | None) -> Path:
        """Make the directory *name*; return its path."""
        ...

    async def rmdir(self, parent: Node, name: str) -> None: ...

    async def open(self, node: Node, ino: int, flags: int, writing: bool) -> OpenReply:
        """Open a file to write it, or one being written (*writing* False) to read it."""
        ...

    async def create(
        self, parent: Node, name: str, flags: int, caller: Caller | None
    ) -> tuple[OpenReply, Attr]:
        """Create (or, without O_EXCL, truncate) *name* and open it; its lookup is counted."""
        ...

    async def unlink(self, parent: Node, name: str) -> None: ...

    async def rename(
        self, old_parent: Node, old_name: str, new_parent: Node, new_name: str, flags: int
    ) -> None: ...

    async def link(self, src: Node, new_parent: Node, new_name: str) -> Path:
        """Make *new_name* a copy of *src*; return its path."""
        ...

    async def store(self, handle: Buffered, sync: bool) -> None:
        """Close (fsync if *sync*): store what *handle* wrote; errors reach close(2)."""
        ...

    def release(self, handle: Buffered) -> None:
        """The last descriptor of *handle* closed.  Never raises."""
        ...


class BranchWrites:
    """The Zarr v3 tree of a branch: files through the overlay, names through changes."""

    def __init__(
        self,
        namespace: Namespace,
        branches: Branches,
        overlay: WriteOverlay,
        changes: NamespaceChanges,
        handles: HandleTable,
        inodes: InodeTable,
        attrs: Attributes,
    ) -> None:
        self._namespace = namespace
        self._branches = branches
        self._overlay = overlay
        self._changes = changes
        self._handles = handles
        self._inodes = inodes
        self._attrs = attrs

    async def setattr(self, node: Node, ino: int, change: AttrChange) -> Node:
        """Truncate; chmod, chown and utime are kept in the branch's stamps while mounted
        (committed data shows its commit time after a remount)."""
        state = self._branches.writable(node.view)
        if node.orphan:  # unlinked, still open: only its bytes matter now
            if change.size is not None and node.overlay is not None:
                self._overlay.truncate(node, node.overlay, change.size)
            return node
        if change.size is not None and not node.is_dir:
            await self._overlay.truncate_file(node, ino, state, change.size)
            node = await self._namespace.resolve(node.path)
        if change.touches_stamp:
            state.local.restamp(
                node.key,
                mode=change.mode,
                uid=change.uid,
                gid=change.gid,
                atime_ns=change.atime_ns,
                mtime_ns=change.mtime_ns,
            )
        return node

    async def mkdir(self, parent: Node, name: str, caller: Caller | None) -> Path:
        path = await self._changes.mkdir(parent, name)
        self._own(await self._namespace.resolve(path), caller)
        return path

    async def rmdir(self, parent: Node, name: str) -> None:
        await self._changes.rmdir(parent, name)

    async def open(self, node: Node, ino: int, flags: int, writing: bool) -> OpenReply:
        return await self._overlay.open(node, ino, flags, writing)

    async def create(
        self, parent: Node, name: str, flags: int, caller: Caller | None
    ) -> tuple[OpenReply, Attr]:
        state = self._changes.writable(parent)
        path = (*parent.path, name)
        existing = await self._namespace.child_or_none(parent, name)
        fh = None
        if existing is None:
            fh = await self._overlay.create(parent, state, name)
        if fh is None:  # there already, or made by a concurrent request meanwhile
            if flags & os.O_EXCL or (existing is not None and existing.is_dir):
                raise Exists("/".join(path))
            node = await self._namespace.resolve(path)
            reply = await self.open(node, self._inodes.ino(path), flags | os.O_TRUNC, True)
            node = await self._namespace.resolve(path)
            return reply, self._attrs.of(node, self._inodes.lookup(path))
        handle = self._handles.file(fh)
        self._own(handle.node, caller)
        return OpenReply(fh), self._attrs.of(handle.node, handle.ino)

    async def unlink(self, parent: Node, name: str) -> None:
        await self._changes.unlink(parent, name)

    async def rename(
        self, old_parent: Node, old_name: str, new_parent: Node, new_name: str, flags: int
    ) -> None:
        await self._changes.rename(old_parent, old_name, new_parent, new_name, flags)

    async def link(self, src: Node, new_parent: Node, new_name: str) -> Path:
        return await self._changes.link(src, new_parent, new_name)

    async def store(self, handle: Buffered, sync: bool) -> None:
        await self._overlay.store(handle, sync)

    def release(self, handle: Buffered) -> None:
        if self._overlay.release(handle):
            self._namespace.orphans.pop(handle.ino, None)

    def _own(self, node: Node, caller: Caller | None) -> None:
        """Give the new file or directory *node* to *caller*, with its mode (kept while the
        mount lives, as chmod and chown are), where they differ from what the mount shows
        by default."""
        if caller is None or node.view is None:
            return
        state = self._branches.of_view(node.view)
        if state is None:
            return
        shown = self._attrs.of(node, 0)
        if (shown.mode & 0o7777, shown.uid, shown.gid) == (caller.perm, caller.uid, caller.gid):
            return
        state.local.give(node.key, caller.perm, caller.uid, caller.gid)
