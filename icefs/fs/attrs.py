"""Attributes of nodes, how long the kernel may cache them, and extended attributes.

What is in tags and snapshots never changes: the kernel may keep it for a day.
In branches, attributes expire after the refresh interval; files written in
this mount show their write time, and what chmod, chown and utime set there
(`Stamp`s) for as long as the mount lives.  Ref directories carry
``user.icefs.*`` extended attributes; there are no others.
"""

from __future__ import annotations

import stat
import time
from typing import TYPE_CHECKING, Final

from icefs.errors import NoAttribute, NotSupported
from icefs.fs import controltext
from icefs.fs.values import (
    IMMUTABLE_DIR,
    IMMUTABLE_FILE,
    IMMUTABLE_TTL,
    Attr,
    NodeKind,
    StatFs,
    rendered,
)

if TYPE_CHECKING:
    from icefs.fs.branches import Branches
    from icefs.fs.refs import RefTable
    from icefs.fs.values import MountOptions, Node

__all__ = ["XATTR_LOCATION", "XATTR_PREFIX", "Attributes"]

XATTR_SNAPSHOT: Final = "user.icefs.snapshot_id"
XATTR_UNCOMMITTED: Final = "user.icefs.uncommitted"
XATTR_REF: Final = "user.icefs.ref"
XATTR_KIND: Final = "user.icefs.kind"
#: on virtual chunk files: "<url> <offset> <length>" of the bytes it refers to
XATTR_LOCATION: Final = "user.icefs.location"
XATTR_PREFIX: Final = "user.icefs."


class Attributes:
    """Computes the `Attr` of nodes and their extended attributes (pure, no I/O)."""

    def __init__(self, options: MountOptions, refs: RefTable, branches: Branches) -> None:
        self._options = options
        self._refs = refs
        self._branches = branches
        self._started_ns = time.time_ns()

    def of(self, node: Node, ino: int) -> Attr:
        """The attributes of *node*, shown as inode *ino*."""
        opts = self._options
        view = node.view
        kind = node.kind
        if (
            (kind is NodeKind.TREE_FILE or kind is NodeKind.TREE_DIR)
            and view is not None
            and view.immutable
            and node.entry is not None
        ):
            # The common case, first and with positional arguments: a readdir of a
            # tag builds one per entry, and `find` waits on it.
            if node.entry.is_dir:
                return Attr(
                    ino,
                    IMMUTABLE_DIR,
                    2,
                    0,
                    view.mtime_ns,
                    opts.uid,
                    opts.gid,
                    IMMUTABLE_TTL,
                    IMMUTABLE_TTL,
                )
            return Attr(
                ino,
                IMMUTABLE_FILE,
                1,
                node.entry.size,
                view.mtime_ns,
                opts.uid,
                opts.gid,
                IMMUTABLE_TTL,
                IMMUTABLE_TTL,
            )
        refresh = self._refs.interval
        ttl = IMMUTABLE_TTL if view is not None and view.immutable else refresh
        size = 0
        mtime = self._started_ns
        if kind in (NodeKind.ROOT_CTRL_DIR, NodeKind.REF_CTRL_DIR):
            mode, ttl = stat.S_IFDIR | 0o700, IMMUTABLE_TTL
        elif kind is NodeKind.ROOT_CTRL_FILE:
            writable = node.ctrl in controltext.writable_files(root=True)
            mode, ttl = stat.S_IFREG | (0o600 if writable else 0o400), 0.0
        elif kind is NodeKind.REF_CTRL_FILE:
            writable = node.ctrl in controltext.writable_files(root=False)
            mode, ttl = stat.S_IFREG | (0o600 if writable else 0o400), 0.0
        elif kind in (NodeKind.ROOT, NodeKind.RENDERING, NodeKind.REF_LIST):
            read_only = opts.read_only or node.path == ("snapshots",) or rendered(node.path)
            mode, ttl = stat.S_IFDIR | (0o555 if read_only else 0o755), refresh
        else:
            assert view is not None
            assert node.entry is not None
            mtime = view.mtime_ns
            perm = 0o555 if view.read_only else 0o755
            if node.entry.is_dir:
                mode = stat.S_IFDIR | perm
            else:
                mode, size = stat.S_IFREG | (perm & 0o666), node.entry.size
            state = self._branches.of_view(view)
            if node.overlay is not None:
                mtime, size = node.overlay.mtime_ns, node.overlay.spool.size
            elif state is not None:
                mtime = state.written_ns.get(node.key, state.local.dirs.get(node.key, mtime))
            if kind is NodeKind.REF_ROOT:
                ttl = refresh  # the ref itself can move or vanish
            stamp = state.local.stamp_of(node.key) if state is not None else None
            if stamp is not None:  # chmod, chown, utime made in this mount
                return Attr(
                    ino,
                    stamp.mode_of(mode),
                    2 if node.entry.is_dir else 1,
                    size,
                    stamp.mtime_ns or mtime,
                    opts.uid if stamp.uid is None else stamp.uid,
                    opts.gid if stamp.gid is None else stamp.gid,
                    ttl,
                    ttl,
                    stamp.atime_ns or stamp.mtime_ns or mtime,
                    max(mtime, stamp.ctime_ns),
                )
        return Attr(
            ino=ino,
            mode=mode,
            nlink=0 if node.orphan else 2 if stat.S_ISDIR(mode) else 1,
            size=size,
            mtime_ns=mtime,
            uid=opts.uid,
            gid=opts.gid,
            entry_timeout=ttl,
            attr_timeout=ttl,
        )

    def negative_timeout(self, parent: Node) -> float:
        """How long the kernel may remember that a name is absent below *parent*."""
        if (
            parent.view is not None
            and parent.view.immutable
            and parent.kind in (NodeKind.TREE_DIR, NodeKind.REF_ROOT, NodeKind.REF_CTRL_DIR)
        ):
            return IMMUTABLE_TTL
        return 0.0 if parent.kind is NodeKind.REF_LIST else self._refs.interval

    def statfs(self) -> StatFs:
        """Filesystem-wide numbers (capacity is that of the object store: unbounded)."""
        blocks = 1 << 40
        return StatFs(
            bsize=4096,
            blocks=blocks,
            bfree=0 if self._options.read_only else blocks,
            files=1 << 32,
            ffree=1 << 31,
            namemax=255,
        )

    @staticmethod
    def check_xattr_name(name: str) -> None:
        """Refuse, without resolving anything, a name no node has.

        Names outside ``user.*`` (security.*, system.* for POSIX ACLs, trusted.*)
        answer ENOTSUP rather than ENODATA: that also tells `ls -l` (coreutils),
        which asks for security.selinux and the ACL of every file, to stop asking
        on this filesystem, so a listing costs no extra round trip per file.
        """
        if not name.startswith(XATTR_PREFIX):
            if not name.startswith("user."):
                raise NotSupported(f"{name}: icefs has only user.* extended attributes")
            raise NoAttribute(name)

    def xattrs(self, node: Node) -> dict[str, bytes]:
        """The extended attributes of *node*: only ref directories have any."""
        if node.kind is not NodeKind.REF_ROOT or node.view is None:
            return {}
        view = node.view
        state = self._branches.of_view(view)
        return {
            XATTR_SNAPSHOT: view.snapshot_id.encode(),
            XATTR_UNCOMMITTED: b"1" if state is not None and state.dirty else b"0",
            XATTR_REF: view.ref.encode(),
            XATTR_KIND: view.kind.encode(),
        }
