"""Starting the daemon in the background and hearing back from it.

``icefs mount`` without ``--foreground`` re-executes itself in the foreground
in a new session, with the write end of a pipe (``--ready-fd``).  The daemon
writes one line there: ``ready`` once the mount answers a request through the
kernel, or ``error <SetupError class> <message>`` if it cannot start; the
starter raises that error, and the command line prints it and exits with its
code.  Re-executing (instead of forking) keeps Icechunk's threads out of the
child.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from typing import Final

from icefs.errors import SETUP_ERRORS, SetupError, Timeout

__all__ = ["READY_TIMEOUT", "Reporter", "start_background"]

#: Seconds `icefs mount` waits for the daemon to report that the mount is ready.
READY_TIMEOUT: Final = 120.0


def start_background(
    argv: list[str],
    log_file: str,
    timeout: float = READY_TIMEOUT,
    env: dict[str, str] | None = None,
) -> None:
    """Start ``icefs mount --foreground`` with *argv* detached; return once the mount is ready.

    Raises the daemon's own `SetupError` (its class and message) if it fails.
    """
    read_fd, write_fd = os.pipe()
    os.makedirs(os.path.dirname(log_file) or ".", exist_ok=True)
    with open(log_file, "ab") as log_out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "icefs",
                "mount",
                "--foreground",
                "--ready-fd",
                str(write_fd),
                "--log-file",
                log_file,
                *argv,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_out,
            stderr=log_out,
            pass_fds=(write_fd,),
            start_new_session=True,
            close_fds=True,
            env={**os.environ, **(env or {})},
        )
    os.close(write_fd)
    try:
        line = _read_line(read_fd, timeout)
    finally:
        os.close(read_fd)
    if line == "ready":
        return
    if line.startswith("error "):
        _, kind, message = line.split(" ", 2)
        raise SETUP_ERRORS.get(kind, SetupError)(message)
    if not line:
        if proc.poll() is None:
            proc.terminate()
            raise Timeout(f"the daemon did not report ready within {timeout:g} s (see {log_file})")
        raise SetupError(f"the daemon exited during start-up (see {log_file})")
    raise SetupError(f"unexpected start-up report {line!r}")


def _read_line(fd: int, timeout: float) -> str:
    import select

    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()


class Reporter:
    """Tells whoever started the daemon how start-up went, once (no-op without a pipe)."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def _send(self, line: str) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.write(self._fd, (line + "\n").encode())
            os.close(self._fd)
        self._fd = None

    def ready(self) -> None:
        self._send("ready")

    def error(self, err: SetupError) -> None:
        self._send(f"error {type(err).__name__} {err.message}")
