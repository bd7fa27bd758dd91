"""icefs: mount Icechunk repositories as a filesystem.

The command line is ``icefs`` (`icefs.cli`); from Python, `mount` mounts a
repository and returns a `Mount`, a context manager that unmounts on exit::

    with icefs.mount("./repo", "/tmp/ice") as m:
        print(sorted(p.name for p in m.branch("main").iterdir()))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["IcefsError", "Mount", "SetupError", "__version__", "mount"]

if TYPE_CHECKING:
    from icefs.api import Mount as Mount
    from icefs.api import mount as mount
    from icefs.errors import IcefsError as IcefsError
    from icefs.errors import SetupError as SetupError


def __getattr__(name: str) -> Any:
    # The public API is imported when first used: `icefs --help` imports this package
    # and should not pay for it.
    if name in ("Mount", "mount"):
        from icefs import api

        return getattr(api, name)
    if name in ("IcefsError", "SetupError"):
        from icefs import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'icefs' has no attribute {name!r}")
