"""fallocate(2) for the mount, which pyfuse3 has no handler for.

`preload` loads ``_fallocate`` (a small C library built with icefs, see its source)
with RTLD_GLOBAL before pyfuse3 is imported: pyfuse3's call to libfuse's
``fuse_session_new`` then binds to the library's, which adds a fallocate
operation that answers with `serve`'s handler.  Where the library cannot be
loaded, or pyfuse3 was imported first, fallocate stays unsupported (EOPNOTSUPP),
as it was; the daemon logs which.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import sys
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["installed", "preload", "serve"]

log = logging.getLogger(__name__)

#: uint64 fh, int mode, int64 offset, int64 length -> errno (0: done)
_HANDLER: Final = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_uint64, ctypes.c_int, ctypes.c_int64, ctypes.c_int64
)

_library: ctypes.CDLL | None = None
#: the ctypes function handed to C: kept referenced for as long as C may call it
_kept: object = None


def preload() -> bool:
    """Load the library before pyfuse3; return whether it is loaded."""
    global _library
    if _library is not None:
        return True
    if "pyfuse3" in sys.modules:
        log.debug("pyfuse3 was imported before the fallocate library: no fallocate")
        return False
    spec = importlib.util.find_spec("icefs.fuse._fallocate")
    if spec is None or spec.origin is None:
        log.info("the fallocate library was not built: fallocate is not supported")
        return False
    try:
        _library = ctypes.CDLL(spec.origin, mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        log.warning("cannot load the fallocate library, fallocate is not supported: %s", exc)
        return False
    return True


def serve(handler: Callable[[int, int, int, int], int]) -> None:
    """Answer fallocate requests with *handler*(fh, mode, offset, length) -> errno.

    *handler* must not raise (an exception cannot cross into C): it returns EIO
    for the unexpected, which it logs.
    """
    global _kept
    if _library is None:
        return
    _kept = _HANDLER(handler)
    _library.icefs_set_fallocate(_kept)


def installed() -> bool:
    """Whether the mount's FUSE session has the fallocate operation."""
    return _library is not None and bool(_library.icefs_fallocate_installed())
