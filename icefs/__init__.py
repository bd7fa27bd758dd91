"""icefs: mount Icechunk repositories as a filesystem."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
