"""The request layer: every request the kernel can make, answered without pyfuse3.

`IcefsCore` holds the inode and handle tables and hands each request to the
collaborator that does that job: `Namespace` (what a path is), `Listings`,
`Attributes`, `Reads`, the writer of each rendering of a ref (`TreeWrites`:
files and names in a branch's v3 tree or its Zarr v2 view), `RefDirectories`
(refs as directories) and the control files.  It answers on plain values
(`Attr`, `OpenReply`, `StatFs`) and raises `IcefsError`s; the pyfuse3 adapter
in `icefs.fuse` only converts.  `Filesystem.build` makes one with all its
collaborators; tests call it directly.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
from typing import TYPE_CHECKING, Final

from icefs.errors import (
    CrossDevice,
    InvalidInput,
    IsADirectory,
    NoAttribute,
    NotFound,
    NotPermitted,
    NotSupported,
    ReadOnly,
)
from icefs.fs.attrs import XATTR_LOCATION
from icefs.fs.handles import Buffered, Command, Listing, Query
from icefs.fs.values import NodeKind, rendered

if TYPE_CHECKING:
    from collections.abc import Mapping

    from icefs.fs.attrs import Attributes
    from icefs.fs.branches import Branches
    from icefs.fs.control.files import ControlFiles
    from icefs.fs.handles import HandleTable
    from icefs.fs.inodes import InodeTable, Path
    from icefs.fs.listings import Listings
    from icefs.fs.namespace import Namespace
    from icefs.fs.overlay import WriteOverlay
    from icefs.fs.reads import Reads
    from icefs.fs.refdirs import RefDirectories
    from icefs.fs.refs import RefTable
    from icefs.fs.stats import Stats
    from icefs.fs.values import Attr, AttrChange, Caller, Node, OpenReply, StatFs
    from icefs.fs.writes import TreeWrites
    from icefs.store import SnapshotTree, TreeEntry

__all__ = ["IcefsCore"]

log = logging.getLogger(__name__)

#: fallocate(2)'s flag that reserves without changing the size (linux/falloc.h).
FALLOC_FL_KEEP_SIZE: Final = 1


class IcefsCore:
    """Answers the kernel's requests through the collaborators it is given."""

    def __init__(
        self,
        *,
        inodes: InodeTable,
        handles: HandleTable,
        refs: RefTable,
        branches: Branches,
        namespace: Namespace,
        listings: Listings,
        attrs: Attributes,
        reads: Reads,
        overlay: WriteOverlay,
        writes: Mapping[str, TreeWrites],
        refdirs: RefDirectories,
        controls: ControlFiles,
        stats: Stats,
    ) -> None:
        #: the writer of each rendering of a ref, by `View.render` ("" is the v3 tree)
        self.writes = writes
        self.inodes = inodes
        self.handles = handles
        self.refs = refs
        self.branches = branches
        self.namespace = namespace
        self.listings = listings
        self.attrs = attrs
        self.reads = reads
        self.overlay = overlay
        self.refdirs = refdirs
        self.controls = controls
        self.stats = stats

    def _writer(self, node: Node) -> TreeWrites:
        """The writer of the rendering *node* lies in (outside any ref: the v3 one, which
        refuses as the rules there say)."""
        return self.writes[node.view.render if node.view is not None else ""]

    def note_error(self, message: str) -> None:
        """Show *message* as the root status's last error (storage trouble), and log it."""
        self.refs.note_error(message)

    # -- names and attributes ------------------------------------------------------------------

    async def lookup(self, parent_ino: int, name: str) -> Attr:
        """Resolve *name* in *parent_ino*, count a kernel lookup, return its attributes.

        Raises `NotFound` (whose ``cache_for`` says how long the absence may be cached).
        """
        parent = await self.namespace.node(parent_ino)
        if name in (".", ".."):  # asked by NFS export; the kernel counts these too
            path = parent.path if name == "." else parent.path[:-1]
            return self.attrs.of(await self.namespace.resolve(path), self.inodes.lookup(path))
        try:
            node = await self.namespace.lookup(parent, name)
        except NotFound as exc:
            exc.cache_for = self.attrs.negative_timeout(parent)
            raise
        return self.attrs.of(node, self.inodes.lookup(node.path))

    async def getattr(self, ino: int) -> Attr:
        """Return the attributes of *ino*."""
        return self.attrs.of(await self.namespace.node(ino), ino)

    async def setattr(self, ino: int, change: AttrChange) -> Attr:
        """Apply *change* to *ino*: truncate; chmod, chown and utime (kept while mounted).

        Mode, owner and times set here live in the branch's `Stamp`s, not in
        Icechunk: committed data shows its commit time after a remount.
        """
        node = await self.namespace.node(ino)
        if node.kind in (NodeKind.ROOT_CTRL_FILE, NodeKind.REF_CTRL_FILE):
            self.controls.check_writable(node)  # truncating a command file: nothing to do
            return self.attrs.of(node, ino)
        if node.kind not in (NodeKind.TREE_FILE, NodeKind.TREE_DIR, NodeKind.REF_ROOT):
            raise ReadOnly(f"{'/'.join(node.path) or '/'} is read-only")
        return self.attrs.of(await self._writer(node).setattr(node, ino, change), ino)

    def forget(self, forgets: list[tuple[int, int]]) -> None:
        """Drop kernel lookups: (ino, count) pairs.  Never raises."""
        for ino, count in forgets:
            self.inodes.forget(ino, count)
            if not self.inodes.lookup_count(ino):
                self.reads.forgotten(ino)

    async def access(self, ino: int, mode: int) -> None:
        """Check access(2) *mode*: writes are refused with EROFS where nothing is writable."""
        node = await self.namespace.node(ino)
        if not mode & os.W_OK:
            return
        if node.kind in (NodeKind.ROOT_CTRL_FILE, NodeKind.REF_CTRL_FILE):
            self.controls.check_writable(node)
            return
        if node.kind in (NodeKind.TREE_FILE, NodeKind.TREE_DIR, NodeKind.REF_ROOT):
            self.branches.writable(node.view)
            return
        raise ReadOnly("/".join(node.path))

    def statfs(self) -> StatFs:
        """Filesystem-wide numbers."""
        return self.attrs.statfs()

    async def getxattr(self, ino: int, name: str) -> bytes:
        """Return the extended attribute *name* of *ino*; `NoAttribute` if it has none."""
        self.attrs.check_xattr_name(name)  # answered without resolving the path
        node = await self.namespace.node(ino)
        if name == XATTR_LOCATION:
            chunk = await self._stored_chunk(node)
            where = await chunk[0].chunk_location(chunk[1]) if chunk else None
            if where is None:
                raise NoAttribute(name)
            return where.render().encode()
        values = self.attrs.xattrs(node)
        if name not in values:
            raise NoAttribute(name)
        return values[name]

    async def listxattr(self, ino: int) -> list[str]:
        """Return the names of the extended attributes of *ino*."""
        node = await self.namespace.node(ino)
        names = sorted(self.attrs.xattrs(node))
        chunk = await self._stored_chunk(node)
        if chunk and await chunk[0].is_virtual(chunk[1]):
            names.append(XATTR_LOCATION)
        return names

    async def _stored_chunk(self, node: Node) -> tuple[SnapshotTree, TreeEntry] | None:
        """The tree and entry of *node* if it is a stored chunk file (not being written)."""
        entry = node.entry
        if node.kind is not NodeKind.TREE_FILE or entry is None or entry.array is None:
            return None
        if node.overlay is not None or node.view is None:
            return None
        return await self.namespace.tree_for(node.view), entry

    async def refuse_write(self, ino: int, op: str) -> None:
        """Answer *op* on or below *ino*, which icefs never supports.

        EROFS on read-only views; on branches ENOTSUP for extended attributes (so
        cp, mv and sed skip copying ACLs) and EPERM for symlinks and device nodes.
        """
        node = await self.namespace.node(ino)
        if node.view is not None and not node.view.read_only:
            if op.endswith("xattr"):
                raise NotSupported(f"{op}: extended attributes are not stored")
            raise NotPermitted(f"{op} is not supported ({'/'.join(node.path)})")
        raise ReadOnly(f"{op} on {'/'.join(node.path) or '/'}: read-only")

    # -- directories ---------------------------------------------------------------------------

    async def opendir(self, ino: int) -> int:
        """Open the directory *ino*: pin its listing to a handle and return the handle."""
        return self.handles.add(await self.listings.listing(await self.namespace.node(ino)))

    def readdir(self, fh: int, start: int) -> Listing:
        """The listing the directory handle *fh* pinned, checked for reading from *start*.

        Offsets index its entries.  A `Listing.fixed` listing (a tag's or a
        snapshot's) is the same object for every handle while it is kept and never
        changes: the adapter may keep replies built from it in `Listing.replies`.
        No lookup is counted: the adapter calls `entry_returned` for each entry the
        kernel took.
        """
        return self.handles.listing(fh, start)

    def listed(self, fh: int, start: int) -> list[tuple[int, str, Attr]]:
        """(next offset, name, attributes) of the entries of the directory handle *fh* from
        *start*, whatever form its listing takes; no lookup counted (for callers other
        than the FUSE adapter, which answers from the listing itself)."""
        listing = self.handles.listing(fh, start)
        files = listing.chunks
        if files is None:
            nodes = listing.entries
            return [(i + 1, nodes[i].path[-1], self.entry_attr(nodes[i]))
                    for i in range(start, len(nodes))]  # fmt: skip
        return [
            (
                i + 1,
                str(int(files.names[i])),
                dataclasses.replace(
                    files.template, ino=files.first_ino + i, size=int(files.sizes[i])
                ),
            )
            for i in range(start, len(files.names))
        ]

    def entry_attr(self, node: Node, ino: int | None = None) -> Attr:
        """The attributes of a listed entry, with its inode number (no lookup counted).

        *ino* 0 builds a template whose number the caller sets (`entry_ino`).
        """
        return self.attrs.of(node, self.inodes.ino(node.path) if ino is None else ino)

    def entry_ino(self, node: Node) -> int:
        """The inode number of a listed entry (no lookup counted)."""
        return self.inodes.ino(node.path)

    def entry_returned(self, ino: int) -> None:
        """Count the lookup the kernel takes for an entry it accepted from readdirplus."""
        self.inodes.count_lookup(ino)

    def entries_returned(self, first: int, count: int) -> None:
        """Count the lookups the kernel takes for *count* entries of a numbered chunk
        directory it accepted from readdirplus, numbered from *first* on."""
        self.inodes.count_run(first, count)

    def releasedir(self, fh: int) -> None:
        """Forget the directory handle *fh*.  Never raises."""
        self.handles.pop(fh)

    async def mkdir(self, parent_ino: int, name: str, caller: Caller | None = None) -> Attr:
        """Make the directory *name*: it lives in the mount until something is stored below.

        In ``branches/`` it makes a branch at the default branch's tip.  Inside a
        branch, the directory belongs to *caller*, with the mode it asked for.
        """
        parent = await self.namespace.node(parent_ino)
        path: Path
        if parent.view is None and rendered(parent.path):
            raise ReadOnly(f"{'/'.join(parent.path)} is read-only")
        if parent.kind is NodeKind.REF_LIST and parent.path == ("branches",):
            await self.refdirs.mkdir_branch(name)
            path = ("branches", name)
        else:
            path = await self._writer(parent).mkdir(parent, name, caller)
        return self.attrs.of(await self.namespace.resolve(path), self.inodes.lookup(path))

    async def rmdir(self, parent_ino: int, name: str) -> None:
        """Remove the empty directory *name* (or, in ``branches/`` and ``tags/``, the ref).

        Icechunk has no empty directories: once `rm -r` has deleted the last key
        below a directory (and maybe below its parent), the directory is gone
        before its rmdir arrives.  A directory the kernel still knows by that path
        is then removed successfully.
        """
        path = (*self.inodes.path(parent_ino), name)
        try:
            parent = await self.namespace.node(parent_ino)
            if parent.view is None and rendered(parent.path):
                raise ReadOnly(f"{'/'.join(parent.path)} is read-only")
            if parent.kind is NodeKind.REF_LIST:
                await self.refdirs.rmdir(parent, name)
            else:
                await self._writer(parent).rmdir(parent, name)
        except NotFound:
            if not self.inodes.known(path) or path[0] != "branches" or len(path) < 3:
                raise
            self.inodes.forget_path(path)

    # -- files ---------------------------------------------------------------------------------

    async def open(self, ino: int, flags: int, uid: int | None = None) -> OpenReply:
        """Open the file *ino* with the open(2) *flags*, for the user *uid*."""
        node = await self.namespace.node(ino)
        if node.is_dir:
            raise IsADirectory("/".join(node.path))
        writing = bool((flags & os.O_ACCMODE) != os.O_RDONLY or flags & os.O_TRUNC)
        if node.kind is NodeKind.TREE_FILE:
            if writing or node.overlay is not None:
                return await self._writer(node).open(node, ino, flags, writing)
            return await self.reads.open(node, ino)
        return await self.controls.open(node, ino, writing, uid)

    async def create(
        self, parent_ino: int, name: str, flags: int, caller: Caller | None = None
    ) -> tuple[OpenReply, Attr]:
        """Create the file *name* in *parent_ino* and open it; a new file of a branch
        belongs to *caller*, with the mode it asked for."""
        parent = await self.namespace.node(parent_ino)
        return await self._writer(parent).create(parent, name, flags, caller)

    async def mknod(
        self, parent_ino: int, name: str, mode: int, caller: Caller | None = None
    ) -> Attr:
        """Make a regular file *name*, as creat(2) and close would; EPERM for special files
        (sockets, FIFOs, devices: Icechunk stores none)."""
        if not stat.S_ISREG(mode):
            await self.refuse_write(parent_ino, "mknod of a special file")
        reply, attr = await self.create(
            parent_ino, name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, caller
        )
        try:
            await self.flush(reply.fh)
        finally:
            self.release(reply.fh)
        return attr

    async def read(self, fh: int, offset: int, size: int) -> bytes | memoryview:
        """Read up to *size* bytes at *offset* from the open file *fh*."""
        handle = self.handles.file(fh)
        if isinstance(handle, Query) and handle.answer is None:
            await self.controls.ask(handle, b"")  # read before any request: the default one
        return await self.reads.read(handle, offset, size)

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        """Write *data* at *offset* to the open file *fh*."""
        handle = self.handles.file(fh)
        if isinstance(handle, Buffered):
            return self.overlay.write(handle, offset, data)
        if isinstance(handle, Command):
            return await self.controls.write(handle, data)
        if isinstance(handle, Query):
            return await self.controls.ask(handle, data)
        raise ReadOnly(f"{'/'.join(handle.node.path)} is read-only")

    def fallocate(self, fh: int, mode: int, offset: int, length: int) -> None:
        """Reserve bytes [*offset*, *offset* + *length*) of the open file *fh*.

        Mode 0 extends a shorter file with zeros (sparse on disk, as a truncate up);
        ``FALLOC_FL_KEEP_SIZE`` leaves it as it is (the write buffer grows as it is
        written, there is nothing to reserve ahead).  Any other mode (punching holes,
        zeroing, collapsing, inserting ranges) is `NotSupported`.  Past an
        uncompressed chunk's exact size: `FileTooLarge`.
        """
        handle = self.handles.file(fh)
        if mode & ~FALLOC_FL_KEEP_SIZE:
            raise NotSupported(f"fallocate mode {mode:#x}: only 0 and FALLOC_FL_KEEP_SIZE")
        if offset < 0 or length <= 0:
            raise InvalidInput(f"fallocate of {length} bytes at {offset}")
        if not isinstance(handle, Buffered):
            raise ReadOnly(f"{'/'.join(handle.node.path)} is not open for writing here")
        end = offset + length
        if not mode & FALLOC_FL_KEEP_SIZE and end > handle.overlay.spool.size:
            self.overlay.truncate(handle.node, handle.overlay, end)

    async def flush(self, fh: int, *, sync: bool = False) -> None:
        """Store the file's new contents (close; fsync if *sync*): errors reach close(2).

        A command file closed before anything was written is no error here: the
        shell's ``echo msg > .icefs/commit`` closes a duplicate of the descriptor
        before it writes; only the last close (`release`) can tell.
        """
        handle = self.handles.file(fh)
        if isinstance(handle, Buffered):
            await self._writer(handle.node).store(handle, sync)
        state = self.branches.of_view(handle.node.view) if sync else None
        if state is not None:  # fsync of any file of a branch: what is stored survives a crash
            await state.save_journal()

    def release(self, fh: int) -> None:
        """Forget the file or directory handle *fh*: its last descriptor closed.  Never raises."""
        handle = self.handles.pop(fh)
        if isinstance(handle, Command):
            self.controls.released(handle)
        elif isinstance(handle, Buffered):
            self._writer(handle.node).release(handle)

    async def unlink(self, parent_ino: int, name: str) -> None:
        """Remove the file *name*: a chunk, a node (its ``zarr.json``) or a scratch file."""
        parent = await self.namespace.node(parent_ino)
        await self._writer(parent).unlink(parent, name)

    async def rename(
        self, old_ino: int, old_name: str, new_ino: int, new_name: str, flags: int = 0
    ) -> None:
        """Rename a file inside one branch; the target, if any, is replaced atomically."""
        old_parent = await self.namespace.node(old_ino)
        new_parent = old_parent if new_ino == old_ino else await self.namespace.node(new_ino)
        writer = self._writer(old_parent)
        if self._writer(new_parent) is not writer:
            raise CrossDevice("rename between views")  # mv copies instead
        await writer.rename(old_parent, old_name, new_parent, new_name, flags)

    async def link(self, ino: int, new_parent_ino: int, new_name: str) -> Attr:
        """Make *new_name* a copy of the file *ino* (Icechunk has no hard links)."""
        src = await self.namespace.node(ino)
        new_parent = await self.namespace.node(new_parent_ino)
        writer = self._writer(new_parent)
        if self._writer(src) is not writer:
            raise NotPermitted("no hard links between views")
        path = await writer.link(src, new_parent, new_name)
        return self.attrs.of(await self.namespace.resolve(path), self.inodes.lookup(path))
