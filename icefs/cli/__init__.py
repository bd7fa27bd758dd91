"""The ``icefs`` command line (``main``) and the ``mount.fuse.icefs`` helper."""

from __future__ import annotations

from icefs.cli.main import main

__all__ = ["main"]
