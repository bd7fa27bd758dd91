"""Files that live in the mount (write buffers, scratch files), and what a branch keeps.

`OverlayFile` is a file's bytes while it is written or when it is a scratch
file; `Stamp` holds the attributes chmod, chown and utime set; `SessionJournal`
is what a branch needs of the crash journal (the daemon passes its own).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence

    import trio

    from icefs.errors import IcefsError
    from icefs.fs.spool import SpoolFile

__all__ = ["JournalEntryLike", "OverlayFile", "SessionJournal", "Stamp", "describe_leftovers"]


class JournalEntryLike(Protocol):
    """One saved session (`icefs.daemon.journal.JournalEntry`)."""

    @property
    def branch(self) -> str: ...

    @property
    def token(self) -> str: ...

    @property
    def data(self) -> bytes: ...

    @property
    def saved_ns(self) -> int: ...

    @property
    def since_ns(self) -> int: ...

    @property
    def unstored(self) -> Sequence[str]: ...


class SessionJournal(Protocol):
    """Where uncommitted sessions are saved (`icefs.daemon.journal.Journal`)."""

    enabled: bool

    def save(
        self, branch: str, token: str, data: bytes, since_ns: int, unstored: Sequence[str] = ()
    ) -> None: ...

    def drop(self, branch: str) -> None: ...

    def entries(self) -> Sequence[JournalEntryLike]: ...

    def set_aside(self, branch: str, reason: str) -> str: ...


def describe_leftovers(files: dict[str, list[str]]) -> str:
    """Say in one line which scratch files and pending chunks *files* (`leftovers`) holds."""
    parts = []
    for field_name, what in (
        ("scratch_files", "scratch file"),
        ("pending_chunks", "pending chunk"),
    ):
        names = files.get(field_name, [])
        if names:
            shown = ", ".join(names[:10]) + (
                f", ... ({len(names) - 10} more)" if len(names) > 10 else ""
            )
            parts.append(f"{len(names)} {what}{'s' if len(names) > 1 else ''} ({shown})")
    return "; ".join(parts)


@dataclass(slots=True)
class Stamp:
    """Attributes set in this mount by chmod, chown and utime: kept while the mount lives.

    None (or 0 for times) means "as the view shows it".  A write supersedes a time
    set before it (`BranchState.modified`).
    """

    mode: int | None = None  # permission bits only
    uid: int | None = None
    gid: int | None = None
    atime_ns: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0

    def mode_of(self, mode: int) -> int:
        """*mode* (type and default permissions) with the permissions set here."""
        return mode if self.mode is None else (mode & ~0o7777) | self.mode


@dataclass(slots=True)
class OverlayFile:
    """A file that lives in the mount: being written, or a scratch file."""

    spool: SpoolFile
    scratch: bool
    dirty: bool = False
    #: A chunk whose array does not exist yet: stored when the array's zarr.json is.
    pending: bool = False
    handles: int = 0
    mtime_ns: int = field(default_factory=time.time_ns)
    #: no longer in the branch (unlinked or renamed away while open): its open handles
    #: alone hold it, and the last one to close frees it
    detached: bool = False
    #: bumped by every change of its bytes: a store marks the file clean only if no
    #: change came in while it ran
    version: int = 0
    #: set when its background store (write-behind) ends; None if none was started
    upload: trio.Event | None = None
    #: why its last background store failed; its bytes stay until stored
    upload_error: IcefsError | None = None
    #: the exact size of a chunk of an uncompressed array: a write past it fails at once
    #: (EFBIG) rather than at close, which shells and many programs never check
    limit: int | None = None
