"""What tests and benchmarks share: real ``icefs mount`` daemons, and direct Icechunk reads.

`Mount` runs ``icefs mount --foreground`` as a subprocess with a deadline on
every step (pyfuse3's and S3QL's test helpers do the same): it waits until the
mount answers through the kernel, and `stop` leaves nothing behind (a lazy
unmount, then terminate, then kill).  `Mount.log_problems` lists the error
lines and tracebacks of the daemon's log: the test fixture fails a test whose
daemon logged one it did not expect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import icechunk
from zarr.core.buffer import default_buffer_prototype

from icefs.store.sample import sample_storage

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "Mount",
    "MountFailed",
    "direct_get",
    "direct_keys",
    "fuse_usable",
    "peak_mib",
    "rss_mib",
    "run_icefs",
]

MOUNT_DEADLINE: Final = 30.0
UMOUNT_DEADLINE: Final = 30.0
#: Log lines that mean something went wrong in the daemon (S3QL's checklogs, for icefs).
_PROBLEM: Final = re.compile(r" (ERROR|CRITICAL) |^Traceback |panicked")


def problems_in(log: str, allowed: list[str]) -> list[str]:
    """The lines of *log* that tell of an error or a traceback, but those *allowed* match."""
    return [
        line for line in log.splitlines() if _PROBLEM.search(line) and not _allowed(line, allowed)
    ]


def _allowed(line: str, allowed: list[str]) -> bool:
    """Whether one of the patterns *allowed* matches *line*."""
    return any(re.search(a, line) for a in allowed)


class LogProblems(logging.Handler):
    """Keeps the ERROR records, and any record with a traceback, logged in this process
    (the in-process half of the log check `problems_in` does for daemons)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            line = f"{record.name} {record.levelname} {record.getMessage()}"
            if record.exc_info:
                line += " (with a traceback)"
            self.lines.append(line)

    def unexpected(self, allowed: list[str]) -> list[str]:
        """The lines kept that none of the patterns *allowed* match."""
        return [line for line in self.lines if not _allowed(line, allowed)]


class MountFailed(RuntimeError):
    """The daemon exited or did not answer in time; the message holds its log."""


def _status_mib(pid: int, field: str) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for process {pid}")


def rss_mib(pid: int) -> float:
    """The resident memory of process *pid* now, in MiB."""
    return _status_mib(pid, "VmRSS:")


def peak_mib(pid: int) -> float:
    """The most resident memory process *pid* has had, in MiB."""
    return _status_mib(pid, "VmHWM:")


def fuse_usable() -> bool:
    return os.path.exists("/dev/fuse") and os.path.exists("/usr/bin/fusermount3")


def direct_get(repo_path: Path, snapshot_id: str, key: str) -> bytes | None:
    """Read *key* at *snapshot_id* straight from Icechunk (no icefs involved)."""
    repo = icechunk.Repository.open(sample_storage(str(repo_path)))
    store = repo.readonly_session(snapshot_id=snapshot_id).store

    async def get() -> bytes | None:
        buf = await store.get(key, default_buffer_prototype())
        return None if buf is None else buf.to_bytes()

    return asyncio.run(get())


def direct_keys(repo_path: Path, snapshot_id: str) -> list[str]:
    repo = icechunk.Repository.open(sample_storage(str(repo_path)))
    return sorted(repo.readonly_session(snapshot_id=snapshot_id).store.list())


def run_icefs(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "icefs", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


class Mount:
    """A real ``icefs mount --foreground`` subprocess with a deadline on every step."""

    def __init__(
        self,
        storage: str,
        mountpoint: Path,
        *args: str,
        log: Path | None = None,
        ready: bool = True,
        wrap: Sequence[str] = (),
    ) -> None:
        """*wrap* is a command prefix the daemon runs under (`tests.netns`: its network)."""
        mountpoint.mkdir(parents=True, exist_ok=True)
        self.mountpoint = mountpoint
        self.log = log or mountpoint.parent / f"{mountpoint.name}.log"
        self._log_file = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [
                *wrap,
                sys.executable,
                "-m",
                "icefs",
                "mount",
                "--foreground",
                str(storage),
                str(mountpoint),
                *args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=self._log_file,
        )
        if ready:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Poll until the mount answers (a dead mount left behind does not count)."""
        deadline = time.monotonic() + MOUNT_DEADLINE
        while True:
            if self.proc.poll() is not None:
                raise MountFailed(
                    f"icefs exited with {self.proc.returncode} before mounting:\n" + self.log_text()
                )
            if time.monotonic() > deadline:
                raise MountFailed("mount not ready within deadline:\n" + self.log_text())
            try:
                if os.path.ismount(self.mountpoint):
                    os.statvfs(self.mountpoint)
                    os.listdir(self.mountpoint / "branches")
                    return
            except OSError:
                pass
            time.sleep(0.05)

    def log_text(self) -> str:
        if not self._log_file.closed:
            self._log_file.flush()
        return self.log.read_text(errors="replace")

    def log_problems(self, allowed: list[str] = ()) -> list[str]:  # type: ignore[assignment]
        """Error lines and tracebacks in the daemon's log not matching any of *allowed*."""
        return [
            line
            for line in self.log_text().splitlines()
            if _PROBLEM.search(line) and not any(re.search(a, line) for a in allowed)
        ]

    def stats(self) -> dict[str, Any]:
        """The mount's ``.icefs/stats`` document."""
        return dict(json.loads((self.mountpoint / ".icefs" / "stats").read_text()))

    def storage_requests(self, kind: str) -> int:
        """Requests of *kind* (chunk, manifest, ...) the mount made to Icechunk so far, with
        any outcome."""
        made = self.stats()["storage_requests"]
        return sum(n for k, n in made.items() if k.split()[0] == kind)

    def umount(self) -> int:
        """Unmount cleanly and return the daemon's exit code."""
        subprocess.run(
            ["fusermount3", "-u", str(self.mountpoint)], check=True, timeout=UMOUNT_DEADLINE
        )
        return self.proc.wait(timeout=UMOUNT_DEADLINE)

    def stop(self) -> None:
        """Make sure nothing is left: lazy unmount, then terminate, then kill."""
        if os.path.ismount(self.mountpoint) or self._dead_mount():
            subprocess.run(
                ["fusermount3", "-u", "-z", str(self.mountpoint)],
                capture_output=True,
                check=False,
                timeout=UMOUNT_DEADLINE,
            )
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        with contextlib.suppress(OSError):
            self._log_file.close()

    def close(self) -> None:
        """Unmount as a user would (the daemon commits), else stop."""
        if self.proc.poll() is None and os.path.ismount(self.mountpoint):
            subprocess.run(["fusermount3", "-u", str(self.mountpoint)], check=False)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=UMOUNT_DEADLINE)
        self.stop()

    def _dead_mount(self) -> bool:
        try:
            os.statvfs(self.mountpoint)
        except OSError:
            return True
        return False

    def __enter__(self) -> Mount:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
