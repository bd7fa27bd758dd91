"""fuse."""

from __future__ import annotations
