"""Errors of icefs and the one table that turns them into errno values.

Hierarchy::

    IcefsError                  (errno EIO unless a subclass says otherwise)
     +-- NotFound               ENOENT   a path, ref, snapshot or node that does not exist
     +-- NotADirectory          ENOTDIR
     +-- IsADirectory           EISDIR
     +-- ReadOnly               EROFS    a write on a tag, a snapshot or a --read-only mount
     +-- PermissionDenied       EACCES   e.g. opening a read-only control file for writing
     +-- NotPermitted           EPERM
     +-- InvalidInput           EINVAL   malformed control input, invalid name
     +-- NameTooLong            ENAMETOOLONG
     +-- Exists                 EEXIST
     +-- NotEmpty               ENOTEMPTY
     +-- CrossDevice            EXDEV
     +-- Busy                   EBUSY    a conflict that could not be rebased
     +-- Stale                  ESTALE   a ref deleted under an open handle
     +-- BadHandle              EBADF    an unknown file handle or out-of-order readdir
     +-- NoAttribute            ENODATA  an unknown extended attribute
     +-- FileTooLarge           EFBIG    a write past the largest file size
     +-- NotSupported           ENOTSUP  extended attributes on branch files
     +-- StorageFailure         EIO      the storage failed (network, permissions, ...)

Icechunk's own exceptions are translated into these in :mod:`icefs.store.repo`, the
only module that imports icechunk.  Command-line failures raise `QuietError`,
which the CLI prints as one line and turns into an exit code.
"""

from __future__ import annotations

import errno as _errno

__all__ = [
    "BadHandle",
    "Busy",
    "CrossDevice",
    "Exists",
    "ExitCode",
    "IcefsError",
    "InvalidInput",
    "IsADirectory",
    "NameTooLong",
    "NoAttribute",
    "NotADirectory",
    "NotEmpty",
    "NotFound",
    "NotPermitted",
    "NotSupported",
    "PermissionDenied",
    "QuietError",
    "ReadOnly",
    "Stale",
    "StorageFailure",
    "exit_code_for",
]


class IcefsError(Exception):
    """Base of every error a filesystem request can end with."""

    errno: int = _errno.EIO


class NotFound(IcefsError):
    errno = _errno.ENOENT
    #: Seconds the kernel may remember the absence (0: do not cache).
    cache_for: float = 0.0


class NotADirectory(IcefsError):
    errno = _errno.ENOTDIR


class IsADirectory(IcefsError):
    errno = _errno.EISDIR


class ReadOnly(IcefsError):
    errno = _errno.EROFS


class PermissionDenied(IcefsError):
    errno = _errno.EACCES


class NotPermitted(IcefsError):
    errno = _errno.EPERM


class InvalidInput(IcefsError):
    errno = _errno.EINVAL


class NameTooLong(IcefsError):
    errno = _errno.ENAMETOOLONG


class Exists(IcefsError):
    errno = _errno.EEXIST


class NotEmpty(IcefsError):
    errno = _errno.ENOTEMPTY


class CrossDevice(IcefsError):
    errno = _errno.EXDEV


class Busy(IcefsError):
    errno = _errno.EBUSY


class Stale(IcefsError):
    errno = _errno.ESTALE


class BadHandle(IcefsError):
    errno = _errno.EBADF


class NoAttribute(IcefsError):
    errno = _errno.ENODATA


class FileTooLarge(IcefsError):
    errno = _errno.EFBIG


class NotSupported(IcefsError):
    errno = _errno.ENOTSUP


class StorageFailure(IcefsError):
    errno = _errno.EIO


class ExitCode:
    """Exit codes of the ``icefs`` command (documented in README.md)."""

    OK = 0
    ERROR = 1
    USAGE = 2
    REPOSITORY = 3
    MOUNTPOINT = 4
    FUSE = 5
    STORAGE = 6
    NOT_MOUNTED = 7
    TIMEOUT = 8
    CONFLICT = 9
    INVALID = 10
    EXISTS = 11
    NOT_FOUND = 12
    NOT_PERMITTED = 13


_EXIT_BY_ERRNO = {
    _errno.EBUSY: ExitCode.CONFLICT,
    _errno.EINVAL: ExitCode.INVALID,
    _errno.EIO: ExitCode.STORAGE,
    _errno.EEXIST: ExitCode.EXISTS,
    _errno.ENOENT: ExitCode.NOT_FOUND,
    _errno.EPERM: ExitCode.NOT_PERMITTED,
}


def exit_code_for(err: int) -> int:
    """Return the CLI exit code for a failed file operation's errno *err*."""
    return _EXIT_BY_ERRNO.get(err, ExitCode.ERROR)


class QuietError(Exception):
    """A command-line failure: print *message* as one line and exit with *exitcode*."""

    def __init__(self, message: str, exitcode: int = ExitCode.ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.exitcode = exitcode
