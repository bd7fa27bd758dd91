"""The thin pyfuse3 adapter: bytes <-> str, plain values <-> pyfuse3 structs, errors -> errno.

Every handler goes through `_serve`, the one place where an `IcefsError`
becomes a `FUSEError` and anything unexpected becomes a logged EIO, and where
each request is counted in the mount's stats.  No filesystem logic lives here.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import time
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar

import pyfuse3

from icefs.errors import IcefsError, NotFound, StorageFailure
from icefs.fs.values import AttrChange, Caller
from icefs.fuse import fallocate

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Sequence

    from pyfuse3 import (
        EntryAttributes,
        FileHandleT,
        FileInfo,
        FileNameT,
        FlagT,
        InodeT,
        ModeT,
        ReaddirToken,
        RequestContext,
        SetattrFields,
        StatvfsData,
        XAttrNameT,
    )

    from icefs.fs.core import IcefsCore
    from icefs.fs.handles import ChunkFiles, Listing
    from icefs.fs.values import Attr, OpenReply

__all__ = ["IO_BLOCK", "FuseOperations"]

#: The ``st_blksize`` of every entry: the buffer ``cp``, ``cat`` and Python's buffered
#: files use. Reads of this size, smaller than the kernel's read-ahead (1 MiB), leave
#: the kernel reading the next part of a file while the program still copies the last
#: one; reads as large as the read-ahead would wait for each part in turn.
IO_BLOCK: Final = 128 << 10

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


def _errno(core: IcefsCore, op: str, exc: Exception) -> int:
    """The errno that answers *op*, failed with *exc*; logged (or noted) as it deserves."""
    core.stats.record_error(type(exc).__name__ if isinstance(exc, IcefsError) else "bug")
    if isinstance(exc, IcefsError):
        if isinstance(exc, StorageFailure):  # the log and the root status say so
            core.note_error(f"{op}: {exc}")
        else:  # each error knows its level: probes DEBUG, refusals INFO
            log.log(
                exc.log_level, "%s: %s (%s)", op, exc, errno.errorcode.get(exc.errno, exc.errno)
            )
        return exc.errno
    log.error("%s failed unexpectedly", op, exc_info=exc)
    return errno.EIO


def _serve(
    op: str,
) -> Callable[[Callable[P, Coroutine[Any, Any, R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """Wrap the handler *op*: count it, time it, and turn errors into `FUSEError`."""

    def decorate(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
        @functools.wraps(fn)
        async def handler(*args: P.args, **kwargs: P.kwargs) -> R:
            self: FuseOperations = args[0]  # type: ignore[assignment]
            started = time.monotonic()
            err = 0
            try:
                return await fn(*args, **kwargs)
            except pyfuse3.FUSEError as exc:
                err = exc.errno
                raise
            except Exception as exc:
                err = _errno(self.core, op, exc)
                raise pyfuse3.FUSEError(err) from None
            finally:
                self.core.stats.record(op, time.monotonic() - started, err)

        return handler

    return decorate


def _entry(attr: Attr, into: EntryAttributes | None = None) -> EntryAttributes:
    """*attr* as pyfuse3 attributes; *into* (a result of this function) is refilled.

    readdir refills one object for all its entries: pyfuse3 copies the fields into
    the reply at once: building a new object per entry is a cost `find` feels.
    """
    entry = into
    if entry is None:
        entry = pyfuse3.EntryAttributes()
        entry.generation = 0
        entry.st_rdev = 0
        entry.st_blksize = IO_BLOCK
    entry.st_ino = attr.ino
    entry.entry_timeout = attr.entry_timeout
    entry.attr_timeout = attr.attr_timeout
    entry.st_mode = attr.mode
    entry.st_nlink = attr.nlink
    entry.st_uid = attr.uid
    entry.st_gid = attr.gid
    entry.st_size = attr.size
    entry.st_blocks = (attr.size + 511) // 512
    entry.st_atime_ns = attr.atime_ns or attr.mtime_ns
    entry.st_mtime_ns = attr.mtime_ns
    entry.st_ctime_ns = attr.ctime_ns or attr.mtime_ns
    return entry


def _caller(ctx: RequestContext, mode: int) -> Caller:
    return Caller(uid=ctx.uid, gid=ctx.gid, mode=int(mode), umask=ctx.umask)


def _file_info(reply: OpenReply) -> FileInfo:
    return pyfuse3.FileInfo(fh=reply.fh, keep_cache=reply.keep_cache, direct_io=reply.direct_io)


class FuseOperations(pyfuse3.Operations):
    """pyfuse3 handlers that delegate to an `IcefsCore`."""

    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, core: IcefsCore, *, xattrs: bool = True) -> None:
        super().__init__()
        self.core = core
        fallocate.serve(self._fallocate)
        #: False (``-o noxattr``): answer ENOSYS, after which the kernel never asks again.
        #: `ls -l` asks for two attributes of every file; over 100k files those round
        #: trips are most of the time `ls -lR` takes.
        self.xattrs = xattrs

    def _fallocate(self, fh: int, mode: int, offset: int, length: int) -> int:
        """fallocate(2), called from C (`icefs.fuse.fallocate`): answers an errno, never
        raises."""
        started = time.monotonic()
        err = 0
        try:
            self.core.fallocate(fh, mode, offset, length)
        except Exception as exc:
            err = _errno(self.core, "fallocate", exc)
        finally:
            self.core.stats.record("fallocate", time.monotonic() - started, err)
        return err

    def forget(self, inode_list: Sequence[tuple[InodeT, int]]) -> None:  # type: ignore[override]
        try:
            self.core.forget([(int(ino), n) for ino, n in inode_list])
        except Exception:
            log.exception("forget failed")

    @_serve("lookup")
    async def lookup(
        self, parent_inode: InodeT, name: FileNameT, ctx: RequestContext
    ) -> EntryAttributes:
        try:
            return _entry(await self.core.lookup(int(parent_inode), os.fsdecode(name)))
        except NotFound as exc:
            if exc.cache_for <= 0:
                raise
            negative = pyfuse3.EntryAttributes()
            negative.st_ino = 0
            negative.entry_timeout = exc.cache_for
            return negative

    @_serve("getattr")
    async def getattr(self, inode: InodeT, ctx: RequestContext) -> EntryAttributes:
        return _entry(await self.core.getattr(int(inode)))

    @_serve("setattr")
    async def setattr(
        self,
        inode: InodeT,
        attr: EntryAttributes,
        fields: SetattrFields,
        fh: FileHandleT | None,
        ctx: RequestContext,
    ) -> EntryAttributes:
        change = AttrChange(
            size=attr.st_size if fields.update_size else None,
            mode=attr.st_mode if fields.update_mode else None,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None,
            atime_ns=attr.st_atime_ns if fields.update_atime else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
        )
        return _entry(await self.core.setattr(int(inode), change))

    @_serve("readlink")
    async def readlink(self, inode: InodeT, ctx: RequestContext) -> FileNameT:
        await self.core.getattr(int(inode))
        raise pyfuse3.FUSEError(errno.EINVAL)

    @_serve("opendir")
    async def opendir(self, inode: InodeT, ctx: RequestContext) -> FileHandleT:
        return await self.core.opendir(int(inode))

    @_serve("readdir")
    async def readdir(self, fh: FileHandleT, start_id: int, token: ReaddirToken) -> None:
        listing = self.core.readdir(int(fh), start_id)
        if listing.chunks is not None:
            self._readdir_chunks(listing.chunks, start_id, token)
            return
        if listing.fixed:
            self._readdir_fixed(listing, start_id, token)
            return
        entry = None
        core = self.core
        for i in range(start_id, len(listing.entries)):
            attr = core.entry_attr(listing.entries[i])
            entry = _entry(attr, entry)
            if not pyfuse3.readdir_reply(
                token, os.fsencode(listing.entries[i].path[-1]), entry, i + 1
            ):
                break
            core.entry_returned(attr.ino)

    def _readdir_chunks(self, files: ChunkFiles, start_id: int, token: ReaddirToken) -> None:
        """Answer a chunk directory of a tag or snapshot from its arrays: one attributes
        object refilled per file (pyfuse3 copies it into the reply), numbers from its
        range."""
        entry = _entry(files.template)
        names, sizes = files.names.tolist(), files.sizes.tolist()
        first, reply, i = files.first_ino, pyfuse3.readdir_reply, start_id
        for i in range(start_id, len(names)):  # i: how far the reply got
            entry.st_ino = first + i
            entry.st_size = size = sizes[i]
            entry.st_blocks = (size + 511) // 512
            if not reply(token, str(names[i]).encode(), entry, i + 1):
                break
        else:
            i = len(names)
        self.core.entries_returned(first + start_id, i - start_id)

    def _readdir_fixed(self, listing: Listing, start_id: int, token: ReaddirToken) -> None:
        """Answer from the encoded names and attributes built once for *listing*.

        A tag's listing never changes, so a walk run again (`find`, `ls -R`,
        rsync) only sets each entry's inode number. The replies live on the
        listing, as long as the core keeps it.
        """
        built = listing.replies
        if built is None:
            built = listing.replies = [
                (os.fsencode(n.path[-1]), _entry(self.core.entry_attr(n, 0)))
                for n in listing.entries
            ]
        assert isinstance(built, list)
        nodes, ino_of = listing.entries, self.core.entry_ino
        for i in range(start_id, len(built)):
            name, entry = built[i]
            entry.st_ino = ino = ino_of(nodes[i])
            if not pyfuse3.readdir_reply(token, name, entry, i + 1):
                break
            self.core.entry_returned(ino)

    @_serve("releasedir")
    async def releasedir(self, fh: FileHandleT) -> None:
        self.core.releasedir(int(fh))

    @_serve("fsyncdir")
    async def fsyncdir(self, fh: FileHandleT, datasync: bool) -> None:
        return None

    @_serve("open")
    async def open(self, inode: InodeT, flags: FlagT, ctx: RequestContext) -> FileInfo:
        return _file_info(await self.core.open(int(inode), int(flags), ctx.uid))

    @_serve("read")
    async def read(  # type: ignore[override]  # pyfuse3 takes any buffer: no copy
        self, fh: FileHandleT, off: int, size: int
    ) -> bytes | memoryview:
        return await self.core.read(int(fh), off, size)

    @_serve("write")
    async def write(self, fh: FileHandleT, off: int, buf: bytes) -> int:
        return await self.core.write(int(fh), off, buf)

    @_serve("flush")
    async def flush(self, fh: FileHandleT) -> None:
        await self.core.flush(int(fh))

    @_serve("fsync")
    async def fsync(self, fh: FileHandleT, datasync: bool) -> None:
        await self.core.flush(int(fh), sync=True)

    @_serve("release")
    async def release(self, fh: FileHandleT) -> None:
        self.core.release(int(fh))

    @_serve("create")
    async def create(
        self, parent_inode: InodeT, name: FileNameT, mode: ModeT, flags: FlagT, ctx: RequestContext
    ) -> tuple[FileInfo, EntryAttributes]:
        reply, attr = await self.core.create(
            int(parent_inode), os.fsdecode(name), int(flags), _caller(ctx, mode)
        )
        return _file_info(reply), _entry(attr)

    @_serve("mkdir")
    async def mkdir(
        self, parent_inode: InodeT, name: FileNameT, mode: ModeT, ctx: RequestContext
    ) -> EntryAttributes:
        return _entry(
            await self.core.mkdir(int(parent_inode), os.fsdecode(name), _caller(ctx, mode))
        )

    @_serve("mknod")
    async def mknod(
        self, parent_inode: InodeT, name: FileNameT, mode: ModeT, rdev: int, ctx: RequestContext
    ) -> EntryAttributes:
        return _entry(
            await self.core.mknod(
                int(parent_inode), os.fsdecode(name), int(mode), _caller(ctx, mode)
            )
        )

    @_serve("symlink")
    async def symlink(
        self, parent_inode: InodeT, name: FileNameT, target: FileNameT, ctx: RequestContext
    ) -> EntryAttributes:
        await self.core.refuse_write(int(parent_inode), "symlink")
        raise AssertionError("unreachable")

    @_serve("link")
    async def link(
        self, inode: InodeT, new_parent_inode: InodeT, new_name: FileNameT, ctx: RequestContext
    ) -> EntryAttributes:
        return _entry(
            await self.core.link(int(inode), int(new_parent_inode), os.fsdecode(new_name))
        )

    @_serve("unlink")
    async def unlink(self, parent_inode: InodeT, name: FileNameT, ctx: RequestContext) -> None:
        await self.core.unlink(int(parent_inode), os.fsdecode(name))

    @_serve("rmdir")
    async def rmdir(self, parent_inode: InodeT, name: FileNameT, ctx: RequestContext) -> None:
        await self.core.rmdir(int(parent_inode), os.fsdecode(name))

    @_serve("rename")
    async def rename(
        self,
        parent_inode_old: InodeT,
        name_old: FileNameT,
        parent_inode_new: InodeT,
        name_new: FileNameT,
        flags: FlagT,
        ctx: RequestContext,
    ) -> None:
        await self.core.rename(
            int(parent_inode_old),
            os.fsdecode(name_old),
            int(parent_inode_new),
            os.fsdecode(name_new),
            int(flags),
        )

    @_serve("statfs")
    async def statfs(self, ctx: RequestContext) -> StatvfsData:
        numbers = self.core.statfs()
        out = pyfuse3.StatvfsData()
        out.f_bsize = numbers.bsize
        out.f_frsize = numbers.bsize
        out.f_blocks = numbers.blocks
        out.f_bfree = numbers.bfree
        out.f_bavail = numbers.bfree
        out.f_files = numbers.files
        out.f_ffree = numbers.ffree
        out.f_favail = numbers.ffree
        out.f_namemax = numbers.namemax
        return out

    @_serve("getxattr")
    async def getxattr(self, inode: InodeT, name: XAttrNameT, ctx: RequestContext) -> bytes:
        if not self.xattrs:
            raise pyfuse3.FUSEError(errno.ENOSYS)
        return await self.core.getxattr(int(inode), os.fsdecode(name))

    @_serve("listxattr")
    async def listxattr(self, inode: InodeT, ctx: RequestContext) -> Sequence[XAttrNameT]:
        if not self.xattrs:
            raise pyfuse3.FUSEError(errno.ENOSYS)
        names = await self.core.listxattr(int(inode))
        return [os.fsencode(n) for n in names]

    @_serve("setxattr")
    async def setxattr(
        self, inode: InodeT, name: XAttrNameT, value: bytes, ctx: RequestContext
    ) -> None:
        await self.core.refuse_write(int(inode), "setxattr")

    @_serve("removexattr")
    async def removexattr(self, inode: InodeT, name: XAttrNameT, ctx: RequestContext) -> None:
        await self.core.refuse_write(int(inode), "removexattr")

    @_serve("access")
    async def access(self, inode: InodeT, mode: ModeT, ctx: RequestContext) -> bool:
        await self.core.access(int(inode), int(mode))
        return True
