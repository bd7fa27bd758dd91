"""Changes to a branch's names: mkdir, unlink, rmdir, rename and link.

Deleting a chunk key deletes the chunk; deleting a ``zarr.json`` deletes its
node and everything below it (as Icechunk does).  A file renamed or linked
onto a key is stored there (validated then).  Directories cannot be renamed
(EXDEV: ``mv`` copies instead), and a link makes a copy: Icechunk has neither.

An open file outlives its name (POSIX): unlinked or replaced by a rename, it
lives on under its inode (`Namespace.orphans`) until its last descriptor
closes; renamed while open for writing, its descriptors follow it.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

from icefs.errors import (
    Busy,
    CrossDevice,
    Exists,
    InvalidInput,
    IsADirectory,
    NotADirectory,
    NotEmpty,
    NotFound,
    NotPermitted,
    ReadOnly,
)
from icefs.fs.branchstatus import shown_files
from icefs.fs.files import OverlayFile
from icefs.fs.handles import Buffered, TreeFile
from icefs.fs.values import GONE, RENAME_EXCHANGE, RENAME_NOREPLACE, NodeKind
from icefs.store import KeyKind

if TYPE_CHECKING:
    from icefs.fs.attrs import Attributes
    from icefs.fs.branch import BranchState
    from icefs.fs.branches import Branches
    from icefs.fs.handles import HandleTable
    from icefs.fs.inodes import InodeTable, Path
    from icefs.fs.listings import Listings
    from icefs.fs.namespace import Namespace
    from icefs.fs.overlay import WriteOverlay
    from icefs.fs.values import Node

__all__ = ["NamespaceChanges"]

log = logging.getLogger(__name__)


class NamespaceChanges:
    """Makes, removes and renames the files and directories of branches."""

    def __init__(
        self,
        namespace: Namespace,
        branches: Branches,
        listings: Listings,
        overlay: WriteOverlay,
        handles: HandleTable,
        inodes: InodeTable,
        attrs: Attributes,
    ) -> None:
        self._namespace = namespace
        self._branches = branches
        self._listings = listings
        self._overlay = overlay
        self._handles = handles
        self._inodes = inodes
        self._attrs = attrs

    def writable(self, parent: Node) -> BranchState:
        """The branch state of the directory *parent*, if names may be made in it."""
        if parent.kind not in (NodeKind.REF_ROOT, NodeKind.TREE_DIR):
            if parent.kind is NodeKind.REF_LIST and parent.path == ("tags",):
                raise NotPermitted("tags are made with <ref>/.icefs/tag")
            if parent.kind is NodeKind.REF_LIST and parent.path == ("snapshots",):
                raise NotPermitted("snapshots are made by commits")
            raise ReadOnly(f"{'/'.join(parent.path) or '/'} is read-only")
        return self._branches.writable(parent.view)

    async def mkdir(self, parent: Node, name: str) -> Path:
        """Make the directory *name*: it lives in the mount until something is stored below."""
        state = self.writable(parent)
        if await self._namespace.child_or_none(parent, name) is not None:
            raise Exists("/".join((*parent.path, name)))
        path = (*parent.path, name)
        assert parent.view is not None
        await (await self._namespace.tree_for(parent.view)).check_new_name("/".join(path[2:]))
        state.local.make_dir("/".join(path[2:]))
        state.entries_changed(parent.key)
        return path

    async def unlink(self, parent: Node, name: str) -> None:
        """Remove the file *name*: a chunk, a node (its ``zarr.json``) or a scratch file."""
        state = self.writable(parent)
        node = await self._namespace.child_or_none(parent, name)
        if node is None:
            raise NotFound("/".join((*parent.path, name)))
        if node.is_dir:
            raise IsADirectory("/".join(node.path))
        self._unlinked(node, await self._detach_open(node))
        await self.remove_file(state, node)
        self._inodes.forget_path(node.path)
        state.local.unstamp(node.key)
        state.entries_changed(parent.key)

    async def rmdir(self, parent: Node, name: str) -> None:
        """Remove the empty directory *name* of a branch."""
        state = self.writable(parent)
        path = (*parent.path, name)
        node = await self._namespace.child_or_none(parent, name)
        if node is None:
            raise NotFound("/".join(path))
        if not node.is_dir:
            raise NotADirectory("/".join(path))
        if await self._listings.entries(node):
            raise NotEmpty("/".join(path))
        state.local.drop_dir(node.key)
        state.local.unstamp(node.key)
        state.entries_changed(parent.key)
        self._inodes.forget_path(path)

    async def rename(
        self, old_parent: Node, old_name: str, new_parent: Node, new_name: str, flags: int
    ) -> None:
        """Rename a file inside one branch; the target, if any, is replaced atomically."""
        if (
            old_parent.view is None
            or new_parent.view is None
            or old_parent.view.ref != new_parent.view.ref
            or old_parent.view.kind != new_parent.view.kind
        ):
            if old_parent.view is not None and old_parent.view.read_only:
                raise ReadOnly(f"{old_parent.view.kind} {old_parent.view.ref} is read-only")
            raise CrossDevice("rename across refs")
        state = self.writable(old_parent)
        self.writable(new_parent)
        if flags & RENAME_EXCHANGE:
            raise InvalidInput("RENAME_EXCHANGE is not supported")
        src = await self._namespace.child_or_none(old_parent, old_name)
        if src is None:
            raise NotFound("/".join((*old_parent.path, old_name)))
        if src.is_dir:
            await self._rename_dir(state, src, new_parent, new_name, flags)
            state.entries_changed(old_parent.key)
            state.entries_changed(new_parent.key)
            return
        dst = await self._namespace.child_or_none(new_parent, new_name)
        if dst is not None:
            if flags & RENAME_NOREPLACE:
                raise Exists("/".join(dst.path))
            if dst.is_dir:
                raise IsADirectory("/".join(dst.path))
        dst_path = (*new_parent.path, new_name)
        log.debug("rename %s -> %s", "/".join(src.path), "/".join(dst_path))
        if dst_path == src.path:
            return
        if dst is not None:  # a replaced file still open lives on, unlinked
            self._unlinked(dst, await self._detach_open(dst))
        if src.overlay is not None and self._handles.of_inode(self._inodes.find(src.path)):
            await self._move_open(state, src, dst_path)
        else:
            await self._detach_open(src)  # open readers keep the bytes they opened
            await self.copy_file(state, src, new_parent, new_name)
            await self.remove_file(state, src)
        self._inodes.rename(src.path, dst_path)
        state.local.move_stamps(src.key, "/".join(dst_path[2:]))
        state.entries_changed(old_parent.key)
        state.entries_changed(new_parent.key)

    async def _rename_dir(
        self, state: BranchState, src: Node, new_parent: Node, new_name: str, flags: int
    ) -> None:
        """Rename the directory *src* within its branch.

        An array or group moves with Icechunk's move: one commit that touches no
        chunk, whatever the array's size (the branch's uncommitted changes are
        committed just before it: `Branches.move`).  An empty directory made by
        mkdir moves in the mount.  Anything else (a chunk directory, a directory
        only deeper nodes imply, a target parent that is not a group) is `CrossDevice`:
        ``mv`` copies it instead.  POSIX for the target: `Exists` with
        RENAME_NOREPLACE; an empty directory made by mkdir is replaced; any other
        directory is `NotEmpty`; a file is `NotADirectory`.
        """
        assert src.view is not None
        assert new_parent.view is not None
        dst_path = (*new_parent.path, new_name)
        if dst_path == src.path:
            return
        if dst_path[: len(src.path)] == src.path:
            raise InvalidInput(f"cannot move {'/'.join(src.path)} into itself")
        dst = await self._namespace.child_or_none(new_parent, new_name)
        source, target = src.key, "/".join(dst_path[2:])
        if dst is not None:
            if flags & RENAME_NOREPLACE:
                raise Exists("/".join(dst.path))
            if not dst.is_dir:
                raise NotADirectory("/".join(dst.path))
            if dst.key not in state.local.dirs or await self._listings.entries(dst):
                raise NotEmpty("/".join(dst.path))
        tree = await self._namespace.tree_for(src.view)
        if source in state.local.dirs:  # an empty directory made by mkdir: it lives in the mount
            state.local.move_dir(source, target)
        else:
            nodes = await tree.node_paths()
            parent = new_parent.key
            if source not in nodes:
                raise CrossDevice(f"/{source} is not an array or group that can be moved")
            if await tree.array_ndim(parent) is not None:
                raise NotADirectory(f"/{parent} is an array: a node's parent must be a group")
            if parent not in nodes:  # Icechunk moves only into a group that exists
                raise CrossDevice(f"/{parent} is not a group: the move is a copy there")
            busy = self._busy_below(state, (source, target))
            if busy:
                raise Busy(
                    f"cannot move /{source}: {busy[0]} is being written or waits for its "
                    "array (close it, or store its array, first)"
                )
            await self._branches.move(state, source, target)
            # what lives only in the mount below it moves along, as on any file system
            state.local.move_below(source, target)
        for path, _ in sorted(self._inodes.below(src.path), key=lambda item: -len(item[0])):
            self._inodes.rename(path, (*dst_path, *path[len(src.path) :]))
        self._inodes.rename(src.path, dst_path)
        state.local.move_stamps(source, target)

    @staticmethod
    def _busy_below(state: BranchState, keys: tuple[str, ...]) -> list[str]:
        """Files open for writing or pending below any of *keys* (their bytes are in the
        mount, not yet in the branch)."""
        return sorted(
            name
            for name, f in shown_files(state)
            if not f.scratch
            and any(name.removeprefix("zarr2/").startswith(f"{k}/") or name == k for k in keys)
        )

    async def link(self, src: Node, new_parent: Node, new_name: str) -> Path:
        """Make *new_name* a copy of the file *src* (zarr's exclusive create: link + unlink).

        Icechunk has no hard links: the new name gets its own copy of the bytes.
        """
        state = self.writable(new_parent)
        if src.is_dir:
            raise NotPermitted("hard links to directories")
        if src.view is None or new_parent.view is None or src.view.ref != new_parent.view.ref:
            raise CrossDevice("link across refs")
        if await self._namespace.child_or_none(new_parent, new_name) is not None:
            raise Exists("/".join((*new_parent.path, new_name)))
        await self.copy_file(state, src, new_parent, new_name)
        state.entries_changed(new_parent.key)
        return (*new_parent.path, new_name)

    # -- files -----------------------------------------------------------------------------------

    async def remove_file(self, state: BranchState, node: Node) -> None:
        """Delete the file *node* from its branch (its buffer, and its key if stored)."""
        assert node.view is not None
        key = node.key
        overlay = state.local.drop(key)
        if overlay is not None:
            overlay.dirty = False
            if overlay.handles <= 0:
                overlay.spool.close()
            else:
                overlay.detached = True  # its open handles free it (`release`)
            if overlay.scratch:
                return
        tree = await self._namespace.tree_for(node.view)
        try:
            await tree.resolve(tuple(key.split("/")))
        except NotFound:
            return  # only ever existed in the mount
        what = await tree.classify(key)
        await state.delete(key, what)
        await self._keep_emptied(state, node, key)

    async def _keep_emptied(self, state: BranchState, node: Node, key: str) -> None:
        """Keep the directories that deleting *key* emptied as empty directories of the
        mount, as any file system does: Icechunk has no directories, so they vanish with
        their last key, and a copy tool's ``rmdir`` after deleting their files (``mv``
        across branches, ``rm -r`` slower than the kernel's one-second cache) found
        nothing to remove."""
        assert node.view is not None
        tree = await self._namespace.tree_for(node.view)
        parts = key.split("/")
        for depth in range(len(parts) - 1, 0, -1):
            above = "/".join(parts[:depth])
            if above in state.local.dirs:
                return
            try:
                await tree.resolve(tuple(parts[:depth]))
                return  # still there, and so is everything above it
            except NotFound:
                state.local.make_dir(above)

    async def copy_file(self, state: BranchState, src: Node, parent: Node, name: str) -> None:
        """Give *parent*/*name* the bytes of *src*: stored if it is a key, else a scratch file."""
        assert src.view is not None
        assert src.entry is not None
        assert parent.view is not None
        if src.overlay is not None:
            data: object = src.overlay.spool.contents()
            size = src.overlay.spool.size
        else:
            data = await (await self._namespace.tree_for(src.view)).read_whole(src.entry)
            size = src.entry.size
        key = "/".join((*parent.path, name)[2:])
        tree = await self._namespace.tree_for(parent.view)
        await tree.check_new_name(key)
        what = await state.classify(key, tree)
        copy: OverlayFile | None = None
        if what.kind is KeyKind.SCRATCH:
            copy = OverlayFile(self._overlay.spooled(data), scratch=True)
        else:
            copy = await self._overlay.place(state, key, data, size)
        old = state.local.keep(key, copy) if copy is not None else state.local.drop(key)
        if old is not None and old.handles <= 0:
            old.spool.close()

    async def _move_open(self, state: BranchState, src: Node, dst_path: Path) -> None:
        """Rename *src*, a file still open for writing: its buffer and handles move along.

        What is written through the open descriptors after the rename lands at the
        new name (a log renamed while its program writes, as on any file system);
        a key there is stored when the file is closed.
        """
        overlay = src.overlay
        assert overlay is not None
        assert src.view is not None
        key = "/".join(dst_path[2:])
        tree = await self._namespace.tree_for(src.view)
        await tree.check_new_name(key)
        what = await state.classify(key, tree)
        await self.remove_file(state, src)  # the old name goes (and its stored key)
        overlay.detached = False
        old = state.local.keep(key, overlay)
        if old is not None:
            if old.handles <= 0:
                old.spool.close()
            else:
                old.detached = True
        overlay.scratch = what.kind is KeyKind.SCRATCH
        overlay.dirty = not overlay.scratch
        for _, handle in self._handles.of_inode(self._inodes.find(src.path)):
            if isinstance(handle, Buffered):
                handle.node = dataclasses.replace(handle.node, path=dst_path)
                handle.branch = state

    async def _detach_open(self, node: Node) -> OverlayFile | None:
        """Give the open handles of the file *node* its bytes to keep, whatever happens to
        its name next (unlink, rename, replaced by a rename); return them, None if no
        handle is open.

        POSIX: an open file stays usable after its name is removed or replaced (temp
        files, editors, SQLite rely on it).  Handles that read the tree get a copy of
        the bytes (one read); handles of a file being written already share its buffer.
        """
        open_handles = self._handles.of_inode(self._inodes.find(node.path))
        if not open_handles:
            return None
        if node.overlay is not None:
            return node.overlay
        assert node.entry is not None
        assert node.view is not None
        held = next(
            (h.data for _, h in open_handles if isinstance(h, TreeFile) and h.data is not None),
            None,
        )
        if held is None:
            held = await (await self._namespace.tree_for(node.view)).read_whole(node.entry)
        overlay = OverlayFile(
            self._overlay.spooled(held),
            scratch=True,
            detached=True,
            mtime_ns=self._attrs.of(node, 0).mtime_ns,
        )
        for fh, handle in open_handles:
            if isinstance(handle, TreeFile):
                self._handles.replace(fh, Buffered(handle.node, handle.ino, overlay, None))
                overlay.handles += 1
        return overlay

    def _unlinked(self, node: Node, overlay: OverlayFile | None) -> None:
        """Keep the inode of *node*, unlinked while *overlay* (its bytes) is open, alive."""
        ino = self._inodes.find(node.path)
        if overlay is None or ino is None:
            return
        overlay.detached = True
        self._namespace.orphans[ino] = dataclasses.replace(
            node, path=(GONE, str(ino)), overlay=overlay, orphan=True
        )
        for _, handle in self._handles.of_inode(ino):
            if isinstance(handle, Buffered):
                handle.branch = None  # nothing an unlinked file holds is ever stored
