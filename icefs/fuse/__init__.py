"""The pyfuse3 adapter: the only package that talks to the kernel's FUSE interface."""

from __future__ import annotations
