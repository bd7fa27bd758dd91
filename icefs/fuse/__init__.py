"""The pyfuse3 adapter: the only package that talks to the kernel's FUSE interface."""

from __future__ import annotations

from icefs.fuse.fallocate import preload as _preload

# Before anything here imports pyfuse3 (icefs.fuse.fallocate says why).
_preload()
