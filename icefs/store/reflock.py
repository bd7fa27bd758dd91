"""`RefLock`: one writer of a local repository's refs at a time, across processes.

Icechunk keeps a repository's branches, tags and snapshot list in one object
(``repo``) that every commit and ref change rewrites.  On object stores that
rewrite is a conditional write, so of two writers racing one gets a conflict.
On local disk it is not: two processes committing at the same instant both
succeed, and the later rewrite drops the earlier snapshot from the branch
(docs/reliability.md: commits under concurrency).

`RefLock` serialises those rewrites between icefs processes on one machine
with ``flock`` on the repository directory itself (no file is added to the
repository).  It cannot hold back writers that do not take it (plain Icechunk
programs): the commit path also checks, after each commit, that the branch
reached the new snapshot (`icefs.store.writer.BranchWriter.commit`).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["RefLock"]

log = logging.getLogger(__name__)


class RefLock:
    """Exclusive access to the refs of the local repository at *path* ("" = no lock needed).

    `held` blocks: call it from a worker thread, never from the trio loop.
    """

    def __init__(self, path: str = "") -> None:
        self.path = path
        # flock already excludes other descriptors of this process; this lock keeps
        # threads of this process from piling up on the kernel's lock one by one.
        self._threads = threading.Lock()

    @property
    def needed(self) -> bool:
        return bool(self.path)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock for the body (a commit and its check, a ref change)."""
        if not self.path:
            yield
            return
        with self._threads:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing the last descriptor releases the flock
