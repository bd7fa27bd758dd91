"""The filesystem core: every request the kernel can make, without pyfuse3.

`Filesystem.build` makes it over an open repository; `Filesystem.core` (an
`IcefsCore`) answers requests on the plain values of `icefs.fs.values`.
"""

from __future__ import annotations

from icefs.fs.core import IcefsCore
from icefs.fs.filesystem import Filesystem, default_cache_dir
from icefs.fs.values import (
    Attr,
    AttrChange,
    MountOptions,
    Node,
    NodeKind,
    OpenReply,
    StatFs,
)

__all__ = [
    "Attr",
    "AttrChange",
    "Filesystem",
    "IcefsCore",
    "MountOptions",
    "Node",
    "NodeKind",
    "OpenReply",
    "StatFs",
    "default_cache_dir",
]
