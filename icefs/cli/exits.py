"""Exit codes of the ``icefs`` command, and the one table that picks them.

Every failure is one line on stderr and one of these codes (documented in the
manual, docs/commands.md).  `QuietError` is a command-line failure that has its
code already; `exit_code` picks the code of any error icefs raises.
"""

from __future__ import annotations

import errno as _errno
from typing import Final

from icefs.errors import (
    FuseUnavailable,
    IcefsError,
    MountpointError,
    NotMounted,
    RepositoryError,
    SetupError,
    StorageUnreachable,
    Timeout,
    UsageError,
)

__all__ = ["ExitCode", "QuietError", "exit_code"]


class ExitCode:
    """Exit codes of the ``icefs`` command."""

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


_BY_SETUP: Final[tuple[tuple[type[SetupError], int], ...]] = (
    (UsageError, ExitCode.USAGE),
    (RepositoryError, ExitCode.REPOSITORY),
    (MountpointError, ExitCode.MOUNTPOINT),
    (FuseUnavailable, ExitCode.FUSE),
    (StorageUnreachable, ExitCode.STORAGE),
    (NotMounted, ExitCode.NOT_MOUNTED),
    (Timeout, ExitCode.TIMEOUT),
)
_BY_ERRNO: Final = {
    _errno.EBUSY: ExitCode.CONFLICT,
    _errno.EINVAL: ExitCode.INVALID,
    _errno.EIO: ExitCode.STORAGE,
    _errno.EEXIST: ExitCode.EXISTS,
    _errno.ENOENT: ExitCode.NOT_FOUND,
    _errno.EPERM: ExitCode.NOT_PERMITTED,
}


class QuietError(Exception):
    """A command-line failure: print *message* as one line and exit with *exitcode*."""

    def __init__(self, message: str, exitcode: int = ExitCode.ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.exitcode = exitcode


def exit_code(error: BaseException | int) -> int:
    """The exit code for *error*: an icefs error, or the errno of a failed file operation."""
    if isinstance(error, QuietError):
        return error.exitcode
    if isinstance(error, SetupError):
        return next((code for cls, code in _BY_SETUP if isinstance(error, cls)), ExitCode.ERROR)
    number = error.errno if isinstance(error, (IcefsError, OSError)) else error
    if isinstance(number, int):
        return _BY_ERRNO.get(number, ExitCode.ERROR)
    return ExitCode.ERROR
