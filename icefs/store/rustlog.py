"""Icechunk's own log lines, routed into Python's `logging`.

Icechunk logs from Rust (``tracing``) straight to file descriptor 2, coloured,
with no Python involved.  `route_stderr` points descriptor 2 at a pipe and a
daemon thread turns each event into a log record of the ``icechunk.<target>``
logger at its own level, so journald and the log file get clean, levelled
lines.  Each distinct warning is logged once per process (Icechunk repeats its
local-storage warning at every commit).  Anything else that arrives on
descriptor 2 (a Rust panic, a Python "Exception ignored" message) is logged
too, as an error or a warning, never dropped.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass, field
from typing import IO, Final

__all__ = ["parse_events", "route_stderr"]

log = logging.getLogger(__name__)

_ANSI: Final = re.compile(r"\x1b\[[0-9;]*m")
_EVENT: Final = re.compile(
    r"^\s*\d{4}-\d\d-\d\dT[0-9:.]+Z\s+(ERROR|WARN|INFO|DEBUG|TRACE)\s+([\w:]+):\s?(.*)$"
)
_SOURCE: Final = re.compile(r"^\s+at \S+:\d+\s*$")
_LEVELS: Final = {
    "ERROR": logging.ERROR,
    "WARN": logging.WARNING,
    "INFO": logging.INFO,
    "DEBUG": logging.DEBUG,
    "TRACE": logging.DEBUG,
}


@dataclass(slots=True)
class _Event:
    level: int
    name: str
    lines: list[str] = field(default_factory=list)


def parse_events(lines: list[str]) -> list[tuple[int, str, str]]:
    """Return (level, logger name, message) for the Icechunk events in *lines*.

    Lines that belong to no event come back one by one under ``icefs.stderr``:
    an error if they tell of a panic, else a warning.
    """
    out: list[tuple[int, str, str]] = []
    current: _Event | None = None
    for raw in [*lines, ""]:  # the empty line closes the last event
        line = _ANSI.sub("", raw).rstrip("\n")
        event = _EVENT.match(line)
        if event or not line.strip():
            if current is not None:
                out.append((current.level, current.name, "\n".join(current.lines).strip()))
                current = None
            if event:
                level, target, message = event.groups()
                current = _Event(_LEVELS[level], "icechunk." + target.split("::")[0], [message])
        elif _SOURCE.match(line):
            continue
        elif current is not None:
            current.lines.append(line.strip())
        else:
            level = logging.ERROR if "panicked" in line else logging.WARNING
            out.append((level, "icefs.stderr", line.strip()))
    return out


class _Router:
    def __init__(self, read_fd: int) -> None:
        self._read = os.fdopen(read_fd, "r", encoding="utf-8", errors="replace")
        self._seen: set[tuple[str, str]] = set()

    def emit(self, lines: list[str]) -> None:
        for level, name, message in parse_events(lines):
            if level >= logging.WARNING and name.startswith("icechunk."):
                if (name, message) in self._seen:
                    continue  # once per process
                self._seen.add((name, message))
            logging.getLogger(name).log(level, "%s", message)

    def run(self) -> None:
        pending: list[str] = []
        for line in self._read:
            pending.append(line)
            if not line.strip():  # Icechunk ends every event with an empty line
                self.emit(pending)
                pending = []
        self.emit(pending)


def route_stderr() -> IO[str]:
    """Send what is written to descriptor 2 into `logging`; return a stream on the old stderr.

    Log handlers that should write to the terminal (or journald) must use the
    returned stream, not ``sys.stderr``, which now leads to the pipe.
    """
    saved = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    router = _Router(read_fd)
    threading.Thread(target=router.run, name="icefs-stderr", daemon=True).start()
    return os.fdopen(saved, "w", buffering=1, encoding="utf-8", errors="replace")
