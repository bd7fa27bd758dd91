"""Writes through the Zarr v2 view of a branch (``zarr2/branches/<b>/``), stored as v3.

A v2 writer (zarr-python 2, ``cp -r`` of a v2 directory) writes `.zgroup`,
`.zarray`, `.zattrs` and chunk files named ``0.1`` (or ``0/1``), most of them
as a temporary file renamed into place.  Each file lives in `Zarr2Files`
while it is written; the close (or fsync, or the rename onto its
name) translates and stores it through the branch's own `BranchState.store`,
so checks, journal and commits are the v3 tree's:

* `.zgroup` stores the group's `zarr.json`; `.zarray` the array's (zarr reads
  the v2 document and writes the v3 one, `icefs.store.zarr2`); `.zattrs`
  replaces the node's attributes (``_ARRAY_DIMENSIONS`` becomes the
  dimension names); `.zmetadata` is accepted and not stored (the view makes
  its own).
* a chunk file of an array is stored at the v3 key, its bytes unchanged.

What cannot be translated fails that close with `EINVAL` and the reason (log,
`status`); the previous content stays.  `.zattrs` and chunks that come before
their node's document (copy tools write in any order) wait in the mount until
it is stored.  Once stored, a file is shown as the view renders the tree, which is
also what the v3 tree shows.  Names that are none of these are scratch files:
readable and writable in the mount, never stored.  The decoded view stays read-only.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from typing import TYPE_CHECKING

import trio

from icefs.errors import (
    CrossDevice,
    Exists,
    InvalidInput,
    NotADirectory,
    NotEmpty,
    NotFound,
    NotPermitted,
    NotSupported,
    ReadOnly,
)
from icefs.fs.files import OverlayFile
from icefs.fs.handles import Buffered
from icefs.fs.spool import SpoolFile
from icefs.fs.values import Node, NodeKind, OpenReply
from icefs.fs.zarr2files import DOCUMENTS, stored_name
from icefs.paths import METADATA_NAME, join_key
from icefs.store import CHUNK_DIR, KeyClass, KeyKind, TreeEntry
from icefs.store.zarr2 import (
    ARRAY,
    ATTRS,
    CONSOLIDATED,
    GROUP,
    Untranslatable,
    array_from_v2,
    attributes_document,
    group_from_v2,
    with_attributes,
)

if TYPE_CHECKING:
    from icefs.fs.attrs import Attributes
    from icefs.fs.branch import BranchState
    from icefs.fs.branches import Branches
    from icefs.fs.handles import HandleTable
    from icefs.fs.inodes import InodeTable, Path
    from icefs.fs.namespace import Namespace
    from icefs.fs.overlay import WriteOverlay
    from icefs.fs.values import Attr, AttrChange, Caller, Invalidator, View
    from icefs.fs.zarr2files import Zarr2Files
    from icefs.store import SnapshotTree

__all__ = ["Zarr2Buffered", "Zarr2Writes"]

log = logging.getLogger(__name__)


class Zarr2Buffered(Buffered):
    """An open file of a v2 view (its bytes in `Zarr2Files`, stored at close)."""


class Zarr2Writes:
    """The write operations of the v2 view of a branch."""

    def __init__(
        self,
        namespace: Namespace,
        branches: Branches,
        handles: HandleTable,
        inodes: InodeTable,
        overlay: WriteOverlay,
        files: Zarr2Files,
        kernel: Invalidator,
        attrs: Attributes,
    ) -> None:
        self._attrs = attrs
        self._namespace = namespace
        self._branches = branches
        self._handles = handles
        self._inodes = inodes
        self._overlay = overlay
        self.files = files
        self._kernel = kernel

    def _state(self, view: View | None) -> BranchState:
        if view is None or view.render != "zarr2" or view.kind != "branch":
            raise ReadOnly("only the Zarr v2 view of a branch can be written")
        return self._branches.writable(view)

    # -- files ---------------------------------------------------------------------------------

    async def create(
        self, parent: Node, name: str, flags: int, caller: Caller | None
    ) -> tuple[OpenReply, Attr]:
        """Make (or, without O_EXCL, truncate) the file *name* in *parent* and open it (its
        inode counts the kernel's lookup).  Owners and modes are not kept (*caller*)."""
        fh = await self._create(parent, name, flags)
        handle = self._handles.file(fh)
        return OpenReply(fh), self._attrs.of(handle.node, handle.ino)

    async def _create(self, parent: Node, name: str, flags: int) -> int:
        self._state(parent.view)
        assert parent.view is not None
        path = (*parent.path, name)
        existing = await self._namespace.child_or_none(parent, name)
        if existing is not None:
            if flags & os.O_EXCL or existing.is_dir:
                raise Exists("/".join(path))
            ino = self._inodes.lookup(path)
            return (await self.open(existing, ino, flags | os.O_TRUNC, True)).fh
        overlay = OverlayFile(SpoolFile(self._overlay.spool), scratch=not stored_name(name))
        overlay.dirty = True
        self.files.files[(parent.view.ref, "/".join(path[3:]))] = overlay
        node = Node(path, NodeKind.TREE_FILE, parent.view, TreeEntry(False, "", 0), overlay=overlay)
        overlay.handles += 1
        return self._handles.add(Zarr2Buffered(node, self._inodes.lookup(path), overlay, None))

    async def open(self, node: Node, ino: int, flags: int, writing: bool) -> OpenReply:
        """Open a file of the v2 view to write it (or one being written, to read it)."""
        if writing:
            self._state(node.view)
        assert node.view is not None
        overlay = node.overlay
        if overlay is None:
            assert node.entry is not None
            tree = await self._namespace.tree_for(node.view)
            # A document is rewritten whole, and the view's rendering of it need not be as
            # long as what the writer wrote before (netCDF-C rewrites without truncating):
            # written to, it starts empty.
            fresh = flags & os.O_TRUNC or (writing and node.path[-1] in DOCUMENTS)
            data = b"" if fresh else bytes(await tree.read_whole(node.entry))
            overlay = OverlayFile(self._overlay.spooled(data), scratch=False)
            self.files.files[(node.view.ref, node.key)] = overlay
        if flags & os.O_TRUNC and overlay.spool.size:
            overlay.spool.truncate(0)
        if flags & os.O_TRUNC:
            overlay.dirty = True
            overlay.mtime_ns = time.time_ns()
        overlay.handles += 1
        return OpenReply(self._handles.add(Zarr2Buffered(node, ino, overlay, None)))

    async def store(self, handle: Buffered, sync: bool) -> None:
        """Close (fsync if *sync*): translate and store the file's new bytes."""
        overlay, node = handle.overlay, handle.node
        assert node.view is not None
        if overlay.scratch or overlay.detached or not (overlay.dirty or (sync and overlay.pending)):
            return
        state = self._state(node.view)
        stale: list[tuple[int, str]] = []
        await self._settle(state, node.view, node.key, overlay, stale)
        # no directory is locked by a close or fsync: wait until the kernel forgot them
        await self._kernel.entries(stale)
        if sync:
            await state.save_journal()

    def release(self, handle: Buffered) -> None:
        """A descriptor closed: a stored file now shows as the tree renders it."""
        overlay, node = handle.overlay, handle.node
        overlay.handles -= 1
        if overlay.handles > 0 or overlay.scratch or overlay.pending or node.view is None:
            return
        key = (node.view.ref, node.key)
        if self.files.files.get(key) is overlay:
            if overlay.dirty:
                log.warning("%s: released with unstored changes (dropped)", "/".join(node.path))
            del self.files.files[key]
            overlay.spool.close()
            self._forget(node.path)

    async def setattr(self, node: Node, ino: int, change: AttrChange) -> Node:
        """setattr: a size cuts or extends the file (stored now unless it is open); modes,
        owners and times are accepted and not kept (v2 writers set none that matter)."""
        await self._truncate(node, ino, change.size)
        return await self._namespace.resolve(node.path)

    async def _truncate(self, node: Node, ino: int, size: int | None) -> None:
        self._state(node.view)
        if size is None or node.is_dir:
            return
        if node.overlay is not None:
            self._overlay.truncate(node, node.overlay, size)
            return
        reply = await self.open(node, ino, os.O_RDWR, True)
        handle = self._handles.pop(reply.fh)
        assert isinstance(handle, Zarr2Buffered)
        try:
            self._overlay.truncate(node, handle.overlay, size)
            await self.store(handle, sync=False)
        finally:
            self.release(handle)

    # -- translation ---------------------------------------------------------------------------

    async def _settle(
        self,
        state: BranchState,
        view: View,
        key: str,
        overlay: OverlayFile,
        stale: list[tuple[int, str]],
    ) -> None:
        """Store *overlay*, the file at the v2 key *key*; keep it if it must wait. The
        names the kernel must forget go to *stale*."""
        node_path, _, name = key.rpartition("/")
        data, version = bytes(overlay.spool.contents()), overlay.version
        try:
            if name == CONSOLIDATED:  # the view makes its own
                stored = True
            elif name in (GROUP, ARRAY):
                await self._store_node(state, view, node_path, name, data, stale)
                stored = True
            elif name == ATTRS:
                stored = await self._store_attributes(state, view, node_path, data, stale)
            else:
                stored = await self._store_chunk(state, view, key, data)
        except Untranslatable as exc:
            self._failed(state, view, key, overlay)
            state.error(f"storing {key} through the Zarr v2 view failed: {exc}", key)
            raise InvalidInput(f"{key}: {exc}") from None
        except (InvalidInput, NotFound):
            self._failed(state, view, key, overlay)
            raise
        overlay.dirty = overlay.version != version  # written again while it was stored
        overlay.pending = not stored
        if stored:  # the directories above it are the tree's now
            parts = key.split("/")
            for cut in range(1, len(parts)):
                self.files.dirs.pop((view.ref, "/".join(parts[:cut])), None)
        if not stored:
            log.info("%s waits for its node's %s or %s (kept in the mount)", key, ARRAY, GROUP)

    def _failed(self, state: BranchState, view: View, key: str, overlay: OverlayFile) -> None:
        """A store failed: the file goes (the previous content stays), open handles keep it."""
        overlay.dirty = overlay.pending = False
        overlay.detached = True
        if self.files.files.get((view.ref, key)) is overlay:
            del self.files.files[(view.ref, key)]

    async def _v3_tree(self, view: View) -> SnapshotTree:
        """The tree the branch's v3 view shows (its session while it is written)."""
        return await self._namespace.tree_for(replace(view, render=""))

    async def _store_node(
        self,
        state: BranchState,
        view: View,
        node_path: str,
        name: str,
        data: bytes,
        stale: list[tuple[int, str]],
    ) -> None:
        """Store the group or array document *data* of the node at *node_path*, with the
        attributes a `.zattrs` waiting here holds, else those the node has."""
        current = await (await self._v3_tree(view)).metadata(node_path)
        waiting = self.files.files.get((view.ref, join_key(node_path, ATTRS)))
        zattrs: bytes | None = None
        if waiting is not None:
            zattrs = bytes(waiting.spool.contents())
        elif current is not None:
            zattrs = attributes_document(current)
        if name == GROUP:
            metadata = await trio.to_thread.run_sync(group_from_v2, data, zattrs)
        else:
            metadata = await trio.to_thread.run_sync(array_from_v2, data, zattrs)
        await state.store(join_key(node_path, METADATA_NAME), metadata, len(metadata))
        stale += self._forget_node(view, node_path)
        if waiting is not None and waiting.pending:  # its attributes are in now
            waiting.pending = False
            if waiting.handles <= 0:
                del self.files.files[(view.ref, join_key(node_path, ATTRS))]
                waiting.spool.close()
        await self._store_waiting(state, view, node_path)

    async def _store_waiting(self, state: BranchState, view: View, node_path: str) -> None:
        """Store the chunks below *node_path* that waited for their array."""
        prefix = f"{node_path}/" if node_path else ""
        for (ref, key), overlay in list(self.files.files.items()):
            if ref != view.ref or not overlay.pending or not key.startswith(prefix):
                continue
            if await self._store_chunk(state, view, key, bytes(overlay.spool.contents())):
                overlay.pending = False
                if overlay.handles <= 0:
                    del self.files.files[(ref, key)]
                    overlay.spool.close()

    async def _store_attributes(
        self,
        state: BranchState,
        view: View,
        node_path: str,
        data: bytes,
        stale: list[tuple[int, str]],
    ) -> bool:
        """Replace the attributes of the node at *node_path*; False if it is not there yet."""
        current = await (await self._v3_tree(view)).metadata(node_path)
        if current is None:
            return False
        metadata = await trio.to_thread.run_sync(with_attributes, current, data)
        await state.store(join_key(node_path, METADATA_NAME), metadata, len(metadata))
        stale += self._forget_node(view, node_path)
        return True

    async def _store_chunk(self, state: BranchState, view: View, key: str, data: bytes) -> bool:
        """Store the chunk file at the v2 key *key* at its v3 key; False if no array
        holds it yet."""
        tree = await self._v3_tree(view)
        parts = key.split("/")
        for cut in range(len(parts) - 1, -1, -1):  # the nearest array above it
            array = "/".join(parts[:cut])
            ndim = await tree.array_ndim(array)
            if ndim is None:
                continue
            coords = [c for part in parts[cut:] for c in part.split(".")]
            if ndim == 0 and coords == ["0"]:
                v3 = join_key(array, CHUNK_DIR)
            elif len(coords) == ndim:
                v3 = "/".join(filter(None, (array, CHUNK_DIR, *coords)))
            else:
                raise InvalidInput(f"{key}: not a chunk of the {ndim}-d array /{array}")
            await state.store(v3, data, len(data))
            return True
        return False

    # -- names ---------------------------------------------------------------------------------

    async def mkdir(self, parent: Node, name: str, caller: Caller | None) -> Path:
        self._state(parent.view)
        assert parent.view is not None
        if await self._namespace.child_or_none(parent, name) is not None:
            raise Exists("/".join((*parent.path, name)))
        path = (*parent.path, name)
        self.files.dirs[(parent.view.ref, "/".join(path[3:]))] = time.time_ns()
        return path

    async def rmdir(self, parent: Node, name: str) -> None:
        self._state(parent.view)
        assert parent.view is not None
        node = await self._namespace.child_or_none(parent, name)
        if node is None:  # gone with its node (`rm -r` deleted the node's document)
            key = "/".join((*parent.path, name)[3:])
            self._forget_soon(self._forget_node(parent.view, key, removed=True))
            return
        if not node.is_dir:
            raise NotADirectory("/".join(node.path))
        assert node.entry is not None
        assert node.entry.pos is not None
        try:
            shown = await (await self._namespace.tree_for(parent.view)).listdir(node.entry.pos)
        except NotFound:
            shown = []
        if shown or self.files.names_below(parent.view, node.key):
            raise NotEmpty("/".join(node.path))
        self.files.dirs.pop((parent.view.ref, node.key), None)
        self._forget_soon(self._forget_node(parent.view, node.key, removed=True))

    async def unlink(self, parent: Node, name: str) -> None:
        """Remove a file: a node's document removes the node (and all below it)."""
        state = self._state(parent.view)
        assert parent.view is not None
        node = await self._namespace.child(parent, name)
        if node.is_dir:
            raise InvalidInput(f"{'/'.join(node.path)} is a directory")
        key = node.key
        if node.overlay is not None:
            node.overlay.detached = True
            del self.files.files[(parent.view.ref, key)]
            if node.overlay.handles <= 0:
                node.overlay.spool.close()
            return
        assert node.entry is not None
        if name in (GROUP, ARRAY):
            node_path = key.rpartition("/")[0]
            await state.delete(
                join_key(node_path, METADATA_NAME), KeyClass(KeyKind.METADATA, node_path)
            )
            self._forget_soon(self._forget_node(parent.view, node_path, removed=True))
        elif node.entry.array is not None:
            what = KeyClass(KeyKind.CHUNK, node.entry.array, node.entry.coords)
            await state.delete(node.entry.key, what)
        # `.zattrs` and `.zmetadata` are made by the view: removing them changes nothing
        self._forget(node.path)

    async def link(self, src: Node, new_parent: Node, new_name: str) -> Path:
        raise NotPermitted("no hard links in the Zarr v2 view")

    async def rename(
        self, src_parent: Node, src_name: str, dst_parent: Node, dst_name: str, flags: int
    ) -> None:
        """Move a file written here onto a name (zarr 2's temporary file and replace)."""
        if flags:
            raise NotSupported("rename flags in the Zarr v2 view")
        if (
            src_parent.view is None
            or dst_parent.view is None
            or (src_parent.view.render != dst_parent.view.render)
        ):
            raise CrossDevice("rename between views")  # mv copies instead
        state = self._state(src_parent.view)
        self._state(dst_parent.view)
        assert src_parent.view is not None
        assert dst_parent.view is not None
        if src_parent.view.ref != dst_parent.view.ref:
            raise CrossDevice("rename across branches")
        src = await self._namespace.child(src_parent, src_name)
        if src.overlay is None:
            raise CrossDevice("only files written through the view can be renamed")
        dst = await self._namespace.child_or_none(dst_parent, dst_name)
        if dst is not None and dst.is_dir:
            raise Exists("/".join(dst.path))
        ref = src_parent.view.ref
        overlay = src.overlay
        del self.files.files[(ref, src.key)]
        if dst is not None and dst.overlay is not None:  # replaced: its open handles keep it
            dst.overlay.detached = True
            if dst.overlay.handles <= 0:
                dst.overlay.spool.close()
        dst_key = "/".join((*dst_parent.path, dst_name)[3:])
        self.files.files[(ref, dst_key)] = overlay
        overlay.scratch = not stored_name(dst_name)
        self._inodes.rename(src.path, (*dst_parent.path, dst_name))
        if not overlay.scratch:
            overlay.dirty = True
            stale: list[tuple[int, str]] = []
            await self._settle(state, dst_parent.view, dst_key, overlay, stale)
            self._forget_soon(stale)
            if overlay.handles <= 0 and not overlay.pending:
                del self.files.files[(ref, dst_key)]
                overlay.spool.close()

    def _forget(self, path: Path) -> None:
        """Drop what the kernel caches of *path* (its attributes and its name)."""
        if self._inodes.known(path):
            self._kernel.inode(self._inodes.ino(path))
        if len(path) > 1 and self._inodes.known(path[:-1]):  # also a name cached as absent
            self._kernel.entry(self._inodes.ino(path[:-1]), path[-1])

    def _forget_node(
        self, view: View, node_path: str, *, removed: bool = False
    ) -> list[tuple[int, str]]:
        """Drop the attributes the kernel caches of the node at *node_path* in both views;
        return the (directory, name) entries it must forget too, names cached as absent
        among them. Dropping those waits for requests on the directory: never while one
        holds it (unlink, rmdir, rename), see `_forget_soon`. A node *removed* through
        the v2 view keeps its directories there: `rm -r` removes them next."""
        parts = tuple(filter(None, node_path.split("/")))
        roots: tuple[Path, ...] = (("branches", view.ref),)
        if not removed:
            roots += (("zarr2", "branches", view.ref),)
        paths = [(*root, *parts[:depth]) for root in roots for depth in range(1, len(parts) + 1)]
        paths += [
            ("branches", view.ref, *parts, METADATA_NAME),
            ("zarr2", "branches", view.ref, CONSOLIDATED),
            *(("zarr2", "branches", view.ref, *parts, name) for name in (ARRAY, GROUP, ATTRS)),
        ]
        names = []
        for path in paths:
            if self._inodes.known(path):
                self._kernel.inode(self._inodes.ino(path))
            if self._inodes.known(path[:-1]):
                names.append((self._inodes.ino(path[:-1]), path[-1]))
        return names

    def _forget_soon(self, names: list[tuple[int, str]]) -> None:
        """Have the kernel forget *names* without waiting (a directory may be held)."""
        for parent, name in names:
            self._kernel.entry(parent, name)
