"""Thin clients of a mounted icefs: they only read and write control files.

The CLI commands ``commit``, ``status`` and ``discard`` use these; any shell
can do the same with ``echo`` and ``cat`` (docs/semantics.md, "Control files").
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import TYPE_CHECKING, Any

from icefs.cli.exits import ExitCode, QuietError, exit_code
from icefs.paths import CONTROL_DIR

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["ask", "commit", "discard", "find_ref_root", "read_status", "write_control"]


def write_control(path: str | os.PathLike[str], text: str) -> None:
    """Write *text* to the control file *path* in one write(2); raise OSError as it fails."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def ask(path: str, request: dict[str, Any]) -> Any:
    """Write the JSON *request* to the query file *path*; return its JSON answer."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.write(fd, json.dumps(request).encode())
        parts, offset = [], 0
        while chunk := os.pread(fd, 1 << 20, offset):
            parts.append(chunk)
            offset += len(chunk)
    finally:
        os.close(fd)
    return json.loads(b"".join(parts))


def find_ref_root(path: str) -> str:
    """Return the ref directory (``<mnt>/branches/<b>`` ...) that holds *path*.

    Raises `QuietError` (NOT_MOUNTED) when *path* is not inside an icefs ref view.
    """
    return find_up(
        path,
        lambda d: os.path.exists(os.path.join(d, CONTROL_DIR, "snapshot_id")),
        f"{path} is not inside a branch, tag or snapshot of an icefs mount",
    )


def find_up(path: str, found: Callable[[str], bool], missing: str) -> str:
    """The nearest directory at or above *path* for which *found* holds.

    Raises `QuietError` (NOT_MOUNTED) with *missing* when none does.
    """
    current = os.path.abspath(path)
    while not found(current):
        parent = os.path.dirname(current)
        if parent == current:
            raise QuietError(missing, ExitCode.NOT_MOUNTED)
        current = parent
    return current


def read_status(path: str) -> dict[str, Any]:
    """Return the status document of the ref holding *path*."""
    root = find_ref_root(path)
    with open(os.path.join(root, CONTROL_DIR, "status")) as f:
        doc: dict[str, Any] = json.load(f)
    return doc


def _command(path: str, name: str, text: str) -> dict[str, Any]:
    root = find_ref_root(path)
    target = os.path.join(root, CONTROL_DIR, name)
    if not os.path.exists(target):
        raise QuietError(f"{root} is read-only: no {name} here", ExitCode.ERROR)
    try:
        write_control(target, text)
    except OSError as exc:
        reason = ""
        with contextlib.suppress(OSError, ValueError):
            reason = read_status(root).get("last_error") or ""
        # status says what failed too ("commit failed: conflicts ..."): say it once
        reason = reason.removeprefix(f"{name} failed: ")
        raise QuietError(
            f"{name} failed: {reason or exc.strerror}", exit_code(exc.errno or 0)
        ) from None
    return read_status(root)


def commit(path: str, message: str, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """Commit the branch holding *path* with *message* and *metadata*; return its status."""
    if not message.strip():
        raise QuietError("an empty commit message is not allowed", ExitCode.INVALID)
    if metadata or message.lstrip().startswith("{"):
        request = {"message": message, "metadata": metadata or {}}
        return _command(path, "commit", json.dumps(request))
    return _command(path, "commit", message)


def discard(path: str) -> dict[str, Any]:
    """Discard the uncommitted changes of the branch holding *path*."""
    return _command(path, "discard", "discard\n")
