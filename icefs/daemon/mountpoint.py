"""The mountpoint: FUSE options, the checks before mounting, and unmounting.

A mount whose daemon died ("Transport endpoint is not connected") is cleaned
up wherever a mountpoint is checked.  `unmount` reads the daemon's pid through
the mount, unmounts, and waits until that daemon has exited.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import time
from typing import TYPE_CHECKING, Final

from icefs.errors import (
    FuseUnavailable,
    MountpointError,
    NotMounted,
    SetupError,
    Timeout,
    UsageError,
)

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["check_fuse", "check_mountpoint", "parse_fuse_options", "source_name", "unmount"]

#: The longest source name a mount is given (the ``fsname`` option).
SOURCE_NAME_MAX: Final = 193


def source_name(display: str) -> str:
    """The source of a mount of the repository *display*, as /proc/mounts shows it."""
    return f"icefs#{display}"[:SOURCE_NAME_MAX]


log = logging.getLogger(__name__)

#: FUSE options passed to the kernel as given.
PASSED_OPTIONS: Final = frozenset(
    {
        "allow_other",
        "allow_root",
        "auto_unmount",
        "default_permissions",
        "nosuid",
        "suid",
        "nodev",
        "dev",
        "noexec",
        "exec",
        "noatime",
        "atime",
        "relatime",
    }
)
#: FUSE options icefs reads itself.
OWN_OPTIONS: Final = frozenset({"ro", "rw", "noxattr"})
#: Options mount(8) and systemd pass that mean nothing to the daemon.
IGNORED_OPTIONS: Final = frozenset(
    {"_netdev", "nofail", "noauto", "auto", "user", "users", "nouser", "defaults"}
)


def parse_fuse_options(values: list[str]) -> tuple[tuple[str, ...], dict[str, str]]:
    """Split ``-o`` *values* into options for the kernel and options icefs reads itself.

    Raises `UsageError` for an option icefs does not know.
    """
    passed: list[str] = []
    own: dict[str, str] = {}
    for value in values:
        for item in filter(None, (v.strip() for v in value.split(","))):
            name, _, arg = item.partition("=")
            if name in PASSED_OPTIONS and not arg:
                passed.append(name)
            elif name in OWN_OPTIONS:
                own[name] = arg
            elif name in IGNORED_OPTIONS or name.startswith(("x-systemd.", "x-")):
                continue
            else:
                raise UsageError(f"unknown mount option {item!r}")
    return tuple(dict.fromkeys(passed)), own


def check_fuse() -> None:
    """Raise `FuseUnavailable` when this machine cannot mount FUSE filesystems."""
    if not os.path.exists("/dev/fuse"):
        raise FuseUnavailable("FUSE is not available: /dev/fuse is missing (modprobe fuse?)")
    if shutil.which("fusermount3") is None:
        raise FuseUnavailable("FUSE is not available: fusermount3 not found (install fuse3)")


def _lazy_unmount(path: str) -> bool:
    result = subprocess.run(
        ["fusermount3", "-u", "-z", path], capture_output=True, text=True, check=False
    )
    return result.returncode == 0


def check_mountpoint(path: str) -> str:
    """Return the absolute *path* if a filesystem can be mounted there.

    A mount whose daemon died ("Transport endpoint is not connected") is cleaned
    up.  Raises `MountpointError` if the path is missing, not a directory
    or already mounted.
    """
    path = os.path.abspath(path)
    _probe_or_clean(path, MountpointError(f"mountpoint {path} does not exist"))
    if not os.path.isdir(path):
        raise MountpointError(f"mountpoint {path} is not a directory")
    if os.path.ismount(path):
        raise MountpointError(f"mountpoint {path} is already mounted")
    return path


def _probe_or_clean(path: str, missing: SetupError) -> bool:
    """Check that *path* can be used, removing a dead mount there; True if one was removed.

    Raises *missing* if the path does not exist, and `MountpointError`
    for any other failure.
    """
    try:
        _probe(path)
    except FileNotFoundError:
        raise missing from None
    except OSError as exc:
        if exc.errno != errno.ENOTCONN:
            raise MountpointError(f"{path}: {exc.strerror}") from None
        log.warning("cleaning up the dead mount at %s", path)
        if not _lazy_unmount(path):
            raise MountpointError(f"{path} holds a dead mount that cannot be removed") from None
        return True
    return False


def _probe(path: str) -> None:
    """Raise the OSError that using *path* gives (ENOTCONN for a dead FUSE mount).

    stat() alone can be answered from the kernel's attribute cache even when the
    daemon is gone; statfs() always reaches the filesystem.
    """
    os.stat(path)
    os.statvfs(path)


# -- unmount --------------------------------------------------------------------------------------


def _process_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True


def unmount(
    mountpoint: str,
    timeout: float = 60.0,
    wait: Callable[[float], None] = time.sleep,
) -> tuple[str, list[str]]:
    """Unmount the icefs mount at *mountpoint* and wait for its daemon to exit.

    Cleans up a dead mount.  Returns what was done and warnings about what the
    unmount dropped (scratch files, pending chunks); raises a `SetupError`.
    """
    path = os.path.abspath(mountpoint)
    if _probe_or_clean(path, NotMounted(f"{path} does not exist")):
        return f"cleaned up the dead mount at {path}", []
    if not os.path.ismount(path):
        raise NotMounted(f"{path} is not mounted")
    pid: int | None = None
    try:
        with open(os.path.join(path, ".icefs", "pid")) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        raise NotMounted(f"{path} is not an icefs mount") from None
    dropped = _dropped_at_unmount(path)
    result = subprocess.run(
        ["fusermount3", "-u", path], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        reason = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"
        raise MountpointError(f"cannot unmount {path}: {reason}")
    deadline = time.monotonic() + timeout
    while not _process_gone(pid):
        if time.monotonic() > deadline:
            raise Timeout(f"unmounted {path}, but daemon {pid} is still running")
        wait(0.05)
    return f"unmounted {path}", dropped


def _dropped_at_unmount(path: str) -> list[str]:
    """Warnings naming the scratch files and pending chunks the unmount of *path* drops."""
    from icefs.fs.files import describe_leftovers

    try:
        with open(os.path.join(path, ".icefs", "status")) as f:
            leftovers = json.load(f).get("dropped_at_unmount") or {}
    except (OSError, ValueError):
        return []
    return [
        f"warning: branches/{branch}: dropped, never committed: {describe_leftovers(files)}"
        for branch, files in sorted(leftovers.items())
    ]
