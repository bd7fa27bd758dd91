"""Storage URLs: parse what the user typed into a `StorageSpec` (pure, no I/O).

Supported here: a local path or ``file:///path``, and ``memory://``.  Cloud
URLs (``s3://``, ``gs://``, ``az://``) are recognised and refused with a clear
message until their backends land.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

from icefs.errors import ExitCode, QuietError

__all__ = ["StorageSpec", "parse_storage"]

StorageKind = Literal["local", "memory"]


@dataclass(frozen=True, slots=True)
class StorageSpec:
    """Where a repository lives.  *path* is absolute for local storage, '' for memory."""

    kind: StorageKind
    path: str = ""

    def display(self) -> str:
        """Return a form of the URL that is safe to log and show (never a secret)."""
        return "memory://" if self.kind == "memory" else self.path


def parse_storage(url: str) -> StorageSpec:
    """Parse the storage *url* given on the command line.

    Raises `QuietError` (exit code USAGE) for an empty or unsupported URL.
    """
    if not url:
        raise QuietError("empty storage URL", ExitCode.USAGE)
    if url == "memory://" or url.startswith("memory://"):
        return StorageSpec("memory")
    scheme = urlsplit(url).scheme if "://" in url else ""
    if scheme == "file":
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise QuietError(f"file URL with a host is not supported: {url}", ExitCode.USAGE)
        return StorageSpec("local", os.path.abspath(unquote(parts.path)))
    if scheme in ("s3", "gs", "gcs", "az", "azure", "abfs"):
        raise QuietError(
            f"{scheme}:// storage is not supported by this version of icefs yet",
            ExitCode.USAGE,
        )
    if scheme:
        raise QuietError(f"unknown storage URL scheme {scheme!r} in {url!r}", ExitCode.USAGE)
    return StorageSpec("local", os.path.abspath(os.path.expanduser(url)))
