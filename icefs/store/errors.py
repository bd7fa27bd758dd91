"""Icechunk's exceptions as `IcefsError`s: the one table, and only Icechunk's own types.

`translate` turns an exception raised by Icechunk (`icechunk.IcechunkError` and
its subclasses) or by the operating system (`OSError`) into the `IcefsError`
with the right errno.  Anything else is not a failure of the storage but a bug
in icefs (or in a library): `translate` raises it again unchanged, so the FUSE
adapter logs it with its traceback and answers EIO, instead of disguising it
as a storage error.
"""

from __future__ import annotations

import errno as _errno
import logging
from typing import Final

import icechunk

from icefs import errors
from icefs.store.virtual import authorize_hint, unauthorized_prefix

__all__ = ["first_line", "translate"]

log = logging.getLogger(__name__)

#: Icechunk's exception classes and the `IcefsError` each becomes, most specific first.
_TABLE: Final[tuple[tuple[type[BaseException], type[errors.IcefsError]], ...]] = (
    # before NotFoundError, its base: the repository vanished under us (an I/O error
    # for whoever asked, not "no such file")
    (icechunk.RepositoryNotFoundError, errors.StorageFailure),
    (icechunk.NotFoundError, errors.NotFound),
    (icechunk.InvalidInputError, errors.InvalidInput),
    (icechunk.ReadOnlyError, errors.ReadOnly),
    (icechunk.RebaseFailedError, errors.Busy),
    (icechunk.ConflictError, errors.Busy),
    (icechunk.AlreadyExistsError, errors.Exists),
    (icechunk.SessionStateError, errors.NotPermitted),
    (icechunk.StorageError, errors.StorageFailure),
    (icechunk.FormatError, errors.StorageFailure),
    (icechunk.InternalError, errors.StorageFailure),
    (icechunk.IcechunkError, errors.StorageFailure),
)
#: OSError numbers that keep their meaning; any other is a storage failure (EIO).
_OS_ERRORS: Final = {
    _errno.ENOENT: errors.NotFound,
    _errno.EACCES: errors.PermissionDenied,
    _errno.EPERM: errors.NotPermitted,
    _errno.EEXIST: errors.Exists,
    _errno.ENOSPC: errors.StorageFailure,
}


#: The virtual chunk containers a read was refused for: each is logged once.
_refused_containers: set[str] = set()


def _unauthorized(prefix: str, name: str) -> errors.NotAuthorized:
    """EACCES for a read of a virtual chunk in the container *prefix* (declared as *name*,
    or '' if by its prefix), not authorized."""
    named = f" (named {name})" if name else ""
    message = (
        f"virtual chunk container {prefix}{named} is not authorized: mount with "
        f"{authorize_hint(prefix)} to read it (docs/virtual.md)"
    )
    if prefix not in _refused_containers:
        _refused_containers.add(prefix)
        log.warning("%s", message)
    return errors.NotAuthorized(message)


def first_line(exc: BaseException) -> str:
    """The first line of *exc*'s message (Icechunk adds pages of context below it)."""
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def translate(exc: BaseException) -> errors.IcefsError:
    """Return the `IcefsError` for *exc*, raised by Icechunk or the OS; re-raise anything else.

    Use as ``except Exception as exc: raise translate(exc) from exc``.
    """
    if isinstance(exc, errors.IcefsError):
        return exc
    message = first_line(exc)
    if isinstance(exc, icechunk.InvalidInputError):
        container = unauthorized_prefix(message)
        if container is not None:
            return _unauthorized(*container)
    for source, target in _TABLE:
        if isinstance(exc, source):
            if source is icechunk.InternalError:  # a bug of Icechunk's, said to be one
                log.error("Icechunk failed inside: %s", exc)
            return target(message)
    if isinstance(exc, OSError):
        return _OS_ERRORS.get(exc.errno or 0, errors.StorageFailure)(message)
    raise exc
