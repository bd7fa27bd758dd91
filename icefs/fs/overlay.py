"""The write overlay: files being written, their buffers, and when they are stored.

Writing a file of a branch goes into an `OverlayFile` (RAM up to the mount's
write buffer, then the spool on disk).  Icechunk stores whole objects, so a key
(a chunk, a ``zarr.json``) is stored when its file is closed, fsync'ed or
renamed onto it, and validated then; the previous content stays if it is
refused.  A chunk whose array does not exist yet waits, pending, until the
array's ``zarr.json`` is stored.  Names that are not keys are scratch files:
they live in the mount only.
"""

from __future__ import annotations

import logging
import mmap
import os
import time
from typing import TYPE_CHECKING

from icefs.errors import FileTooLarge, IcefsError, NotFound
from icefs.fs.files import OverlayFile
from icefs.fs.handles import Buffered
from icefs.fs.spool import SpoolFile
from icefs.fs.values import Node, NodeKind, OpenReply
from icefs.store import KeyKind, TreeEntry

if TYPE_CHECKING:
    from icefs.fs.branch import BranchState
    from icefs.fs.branches import Branches
    from icefs.fs.handles import HandleTable
    from icefs.fs.inodes import InodeTable, Path
    from icefs.fs.namespace import Namespace
    from icefs.fs.spool import SpoolBudget
    from icefs.fs.stats import Stats
    from icefs.fs.uploads import Uploader
    from icefs.fs.values import Invalidator
    from icefs.store import KeyClass, SnapshotTree

__all__ = ["WriteOverlay"]

log = logging.getLogger(__name__)


class WriteOverlay:
    """Opens files for writing, buffers their bytes and stores them into the branch."""

    def __init__(
        self,
        namespace: Namespace,
        branches: Branches,
        handles: HandleTable,
        inodes: InodeTable,
        spool: SpoolBudget,
        stats: Stats,
        kernel: Invalidator,
        uploader: Uploader,
    ) -> None:
        self._uploader = uploader
        self._namespace = namespace
        self._branches = branches
        self._handles = handles
        self._inodes = inodes
        self.spool = spool
        self._stats = stats
        self._kernel = kernel

    async def open(self, node: Node, ino: int, flags: int, writing: bool) -> OpenReply:
        """Open a branch file through the overlay: its bytes in a write buffer."""
        assert node.view is not None
        assert node.entry is not None
        state = (
            self._branches.writable(node.view) if writing else self._branches.state(node.view.ref)
        )
        overlay = state.local.files.get(node.key)
        if overlay is None:
            tree = await self._namespace.tree_for(node.view)
            data = b"" if flags & os.O_TRUNC else bytes(await tree.read_whole(node.entry))
            what = await state.classify(node.key, tree)
            # Another open may have made the buffer while we awaited: share it, or the
            # writes through one of the two handles would go nowhere.
            limit = await self._limit(what, tree)
            overlay = state.local.files.get(node.key)
            if overlay is None:
                # O_TRUNC of a non-empty file is a change even if nothing is written
                overlay = OverlayFile(
                    SpoolFile(self.spool, data),
                    scratch=what.kind is KeyKind.SCRATCH,
                    dirty=bool(flags & os.O_TRUNC and node.entry.size),
                    limit=limit,
                )
                state.local.keep(node.key, overlay)
        if flags & os.O_TRUNC:
            if overlay.spool.size:
                overlay.spool.truncate(0)
                overlay.dirty = True
                overlay.version += 1
            # POSIX: O_TRUNC of an existing file changes its mtime and ctime, empty or not
            overlay.mtime_ns = state.modified(node.key)
        overlay.handles += 1
        return OpenReply(self._handles.add(Buffered(node, ino, overlay, state)))

    async def create(self, parent: Node, state: BranchState, name: str) -> int | None:
        """Make the new file *name* in *parent* and open it; return its handle.

        None if a concurrent request made the file while this one awaited.
        """
        assert parent.view is not None
        path = (*parent.path, name)
        key = "/".join(path[2:])
        tree = await self._namespace.tree_for(parent.view)
        await tree.check_new_name(key)
        what = await state.classify(key, tree)
        limit = await self._limit(what, tree)
        if key in state.local.files:  # made by a concurrent request while we awaited
            return None
        overlay = OverlayFile(
            SpoolFile(self.spool), scratch=what.kind is KeyKind.SCRATCH, dirty=True, limit=limit
        )
        state.local.keep(key, overlay)
        node = Node(
            path, NodeKind.TREE_FILE, parent.view, TreeEntry(False, key, 0), overlay=overlay
        )
        overlay.handles += 1
        state.entries_changed(parent.key)
        ino = self._inodes.lookup(path)
        return self._handles.add(Buffered(node, ino, overlay, state))

    async def _limit(self, what: KeyClass, tree: SnapshotTree) -> int | None:
        """The exact size of the chunk *what* names, if its array has one (`OverlayFile.limit`)."""
        if what.kind is not KeyKind.CHUNK:
            return None
        try:
            check = await tree.chunk_check(what.node)
        except IcefsError:  # no array there yet (pending), or unreadable: checked at close
            return None
        return check.exact_size(what.coords)

    def _check_limit(self, node: Node, overlay: OverlayFile, end: int) -> None:
        if overlay.limit is not None and end > overlay.limit:
            raise FileTooLarge(
                f"{node.key}: a chunk of this uncompressed array has exactly "
                f"{overlay.limit} bytes; writing to byte {end} would pass it"
            )

    def write(self, handle: Buffered, offset: int, data: bytes) -> int:
        """Write *data* at *offset* into the buffer of *handle*; `FileTooLarge` past the
        exact size of an uncompressed chunk."""
        try:
            self._check_limit(handle.node, handle.overlay, offset + len(data))
        except FileTooLarge as exc:
            if handle.branch is not None:
                handle.branch.error(str(exc), handle.node.key)
            raise
        try:
            written = handle.overlay.spool.write(offset, data)
        except OverflowError:
            raise FileTooLarge(f"{handle.node.key}: past the largest file size") from None
        handle.overlay.dirty = True
        handle.overlay.version += 1
        handle.overlay.mtime_ns = (
            handle.branch.modified(handle.node.key) if handle.branch else time.time_ns()
        )
        self._stats.bytes_written += written
        return written

    async def store(self, handle: Buffered, sync: bool) -> None:
        """Store the new contents of *handle* (close; fsync if *sync*): errors reach close(2).

        A chunk whose array does not exist yet stays in the mount, pending, until
        the array's zarr.json is stored (copy tools write files in any order);
        fsync of such a chunk answers ENOENT.  With write-behind a close leaves the
        store of a chunk to the background (`icefs.fs.uploads`), after checking it;
        an fsync waits for the store, and a file whose background store failed is
        stored again now.
        """
        overlay, state = handle.overlay, handle.branch
        if state is None or overlay.scratch:
            return
        if sync and overlay.upload is not None:
            await overlay.upload.wait()
        if not overlay.dirty and not (sync and overlay.pending):
            return
        key = handle.node.key
        if state.local.files.get(key) is not overlay:
            return  # deleted while open: its bytes went with it
        data, version = overlay.spool.contents(), overlay.version
        try:
            if (
                self._uploader.active
                and not sync
                and overlay.upload_error is None
                and not isinstance(data, mmap.mmap)  # a live view of the spool file
            ):
                await state.settle(key)
                what = await state.check(key, data, overlay.spool.size)
                if what.kind is KeyKind.CHUNK:
                    await self._uploader.submit(state, key, overlay, what, data, version)
                    return
                await state.store_checked(key, what, data, overlay.spool.size)
            else:
                await state.store(key, data, overlay.spool.size)
        except NotFound:
            if sync:
                raise
            overlay.pending = True
            log.info("%s waits for its array's zarr.json (kept in the mount)", key)
            return
        except IcefsError:
            # the previous content stays; do not retry at release (unless written since)
            overlay.dirty = overlay.version != version
            overlay.upload_error = None  # this close (or fsync) reports it
            self.drop(state, key, overlay)
            self._forget_kernel(handle.node.path)  # the kernel saw the new size (or name)
            raise
        if overlay.version == version:  # else a write came in meanwhile: still to store
            overlay.dirty = overlay.pending = False
        overlay.upload_error = None

    async def place(
        self, state: BranchState, key: str, data: object, size: int
    ) -> OverlayFile | None:
        """Store *data* at *key* for a rename or link onto it; return the file to keep at
        *key* in the mount, if any.

        As at close: bad input fails here, with the errno of its check; a chunk whose
        array does not exist yet stays pending (the returned file).  With write-behind
        a chunk is stored in the background from the returned file, which reads see
        until the store ends; a failed store surfaces at its fsync, its next close and
        the commit.  zarr publishes every chunk by renaming a temporary file onto it,
        and the kernel renames in one directory one at a time: waiting for each store
        here cost a round trip per chunk on object storage.
        """
        try:
            if self._uploader.active:
                await state.settle(key)
                what = await state.check(key, data, size)
                if what.kind is KeyKind.CHUNK:
                    copy = OverlayFile(self.spooled(data), scratch=False, dirty=True)
                    held = copy.spool.contents()
                    if not isinstance(held, mmap.mmap):  # else a live view of the spool file
                        await self._uploader.submit(state, key, copy, what, held, copy.version)
                        return copy
                    copy.spool.close()
                await state.store_checked(key, what, data, size)
            else:
                await state.store(key, data, size)
        except NotFound:  # its array is not there yet: keep it pending
            return OverlayFile(self.spooled(data), scratch=False, dirty=True, pending=True)
        return None

    def release(self, handle: Buffered) -> bool:
        """A descriptor of *handle* closed; return True if it was an unlinked file's last."""
        overlay, state = handle.overlay, handle.branch
        overlay.handles -= 1
        if overlay.detached:
            if overlay.handles <= 0:  # the last descriptor of an unlinked file: it goes
                overlay.spool.close()
                return True
            return False
        # a background store drops the file when it ends; a failed one keeps it
        keep = overlay.scratch or overlay.pending or overlay.upload_error is not None
        if state is not None and state.local.uploading.get(handle.node.key) is overlay:
            keep = True
        if overlay.handles <= 0 and not keep and state is not None:
            if overlay.dirty:
                state.error(f"{handle.node.key}: released with unstored changes (dropped)")
            self.drop(state, handle.node.key, overlay)
        return False

    def drop(self, state: BranchState, key: str, overlay: OverlayFile) -> None:
        """Forget *overlay* at *key* unless a handle still holds it."""
        if overlay.handles <= 0 and state.local.drop(key, overlay):
            overlay.spool.close()

    def _forget_kernel(self, path: Path) -> None:
        if self._inodes.known(path):
            self._kernel.inode(self._inodes.ino(path))
            self._kernel.entry(self._inodes.ino(path[:-1]), path[-1])

    def truncate(self, node: Node, overlay: OverlayFile, size: int) -> None:
        """Cut or extend *overlay*, the bytes of *node*, to *size* (`FileTooLarge` past 1 TiB,
        or past the exact size of an uncompressed chunk)."""
        self._check_limit(node, overlay, size)
        try:
            overlay.spool.truncate(size)
        except OverflowError:
            raise FileTooLarge(
                f"{node.key}: {size} bytes is past the largest file size icefs holds"
            ) from None
        overlay.dirty = True
        overlay.version += 1
        overlay.mtime_ns = time.time_ns()

    async def truncate_file(self, node: Node, ino: int, state: BranchState, size: int) -> None:
        """Cut or extend the branch file *node* to *size* bytes (stored if it is a key)."""
        overlay = node.overlay
        if overlay is None:
            reply = await self.open(node, ino, os.O_RDWR, True)
            handle = self._handles.pop(reply.fh)
            assert isinstance(handle, Buffered)
            try:
                self.truncate(node, handle.overlay, size)
                await self.store(handle, sync=False)
            finally:
                self.release(handle)
        else:
            self.truncate(node, overlay, size)
            overlay.mtime_ns = state.modified(node.key)
            if overlay.handles <= 0 and not overlay.scratch:
                await state.store(node.key, overlay.spool.contents(), overlay.spool.size)
                overlay.dirty = False

    def spooled(self, data: object) -> SpoolFile:
        """A new buffer holding *data* (bytes-like)."""
        spool = SpoolFile(self.spool)
        spool.write(0, bytes(data))  # type: ignore[call-overload]
        return spool
