"""Errors of icefs: the errno of each failed request, and the failures of setting up.

Hierarchy::

    IcefsError                  errno EIO unless a subclass says otherwise; a request failed
     +-- NotFound               ENOENT   a path, ref, snapshot or node that does not exist
     +-- NotADirectory          ENOTDIR
     +-- IsADirectory           EISDIR
     +-- ReadOnly               EROFS    a write on a tag, a snapshot or a --read-only mount
     +-- PermissionDenied       EACCES   e.g. opening a read-only control file for writing
     |    +-- NotAuthorized               a virtual chunk container not authorized
     +-- NotPermitted           EPERM
     +-- InvalidInput           EINVAL   malformed control input, invalid name or content
     +-- NameTooLong            ENAMETOOLONG
     +-- Exists                 EEXIST
     +-- NotEmpty               ENOTEMPTY
     +-- CrossDevice            EXDEV
     +-- Busy                   EBUSY    a conflict that could not be rebased
     +-- Stale                  ESTALE   a ref deleted under an open handle
     +-- BadHandle              EBADF    an unknown file handle or out-of-order readdir
     +-- NoAttribute            ENODATA  an unknown extended attribute
     +-- FileTooLarge           EFBIG    a write past the largest file size
     +-- NotSupported           ENOTSUP  extended attributes outside user.*
     +-- StorageFailure         EIO      the storage failed (network, permissions, ...)
          +-- TimedOut          ETIMEDOUT the storage did not answer within a deadline

    SetupError                  nothing was mounted (or unmounted): the command says why
     +-- UsageError             a bad option, setting, URL or config file
     +-- RepositoryError        no repository there, not one, or one exists already
     +-- StorageUnreachable     the storage refused or could not be reached
     +-- MountpointError        missing, not a directory, already mounted, busy
     +-- FuseUnavailable        no /dev/fuse or fusermount3
     +-- NotMounted             not mounted, or not an icefs mount
     +-- Timeout                the daemon did not get ready, or did not exit

Each `IcefsError` carries the level it is logged at: what users do every day
(probing for missing files) is DEBUG, refused requests are INFO, trouble with
the storage is WARNING.  Only Icechunk's and the operating system's own
exceptions are ever translated into these (`icefs.store.errors`); any other
exception is a bug, logged with its traceback.  Command-line exit codes belong
to the command line (`icefs.cli.exits`).
"""

from __future__ import annotations

import errno as _errno
import logging

__all__ = [
    "BadHandle",
    "Busy",
    "CrossDevice",
    "Exists",
    "FileTooLarge",
    "FuseUnavailable",
    "IcefsError",
    "InvalidInput",
    "IsADirectory",
    "MountpointError",
    "NameTooLong",
    "NoAttribute",
    "NotADirectory",
    "NotAuthorized",
    "NotEmpty",
    "NotFound",
    "NotMounted",
    "NotPermitted",
    "NotSupported",
    "PermissionDenied",
    "ReadOnly",
    "RepositoryError",
    "SetupError",
    "Stale",
    "StorageFailure",
    "StorageUnreachable",
    "TimedOut",
    "Timeout",
    "UsageError",
]


class IcefsError(Exception):
    """Base of every error a filesystem request can end with."""

    errno: int = _errno.EIO
    #: the level the request's failure is logged at
    log_level: int = logging.INFO


class NotFound(IcefsError):
    errno = _errno.ENOENT
    log_level = logging.DEBUG
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


class NotAuthorized(PermissionDenied):
    """A virtual chunk container the mount was not given: the storage layer logs it once
    per container, so each refused read is only a debug line."""

    log_level = logging.DEBUG


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
    log_level = logging.WARNING


class Stale(IcefsError):
    errno = _errno.ESTALE


class BadHandle(IcefsError):
    errno = _errno.EBADF


class NoAttribute(IcefsError):
    errno = _errno.ENODATA
    log_level = logging.DEBUG


class FileTooLarge(IcefsError):
    errno = _errno.EFBIG


class NotSupported(IcefsError):
    errno = _errno.ENOTSUP
    log_level = logging.DEBUG  # `ls -l` asks every file for security.* and ACLs


class StorageFailure(IcefsError):
    errno = _errno.EIO
    log_level = logging.WARNING


class TimedOut(StorageFailure):
    errno = _errno.ETIMEDOUT


class SetupError(Exception):
    """Nothing could be mounted (or unmounted); the message says why in one line."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(SetupError):
    pass


class RepositoryError(SetupError):
    pass


class StorageUnreachable(SetupError):
    pass


class MountpointError(SetupError):
    pass


class FuseUnavailable(SetupError):
    pass


class NotMounted(SetupError):
    pass


class Timeout(SetupError):
    pass


#: The `SetupError` classes by name (how a background daemon reports one to its starter).
SETUP_ERRORS: dict[str, type[SetupError]] = {
    cls.__name__: cls
    for cls in (
        SetupError,
        UsageError,
        RepositoryError,
        StorageUnreachable,
        MountpointError,
        FuseUnavailable,
        NotMounted,
        Timeout,
    )
}
