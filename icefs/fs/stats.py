"""Counters of what a mount has done, shown in ``.icefs/stats``."""

from __future__ import annotations

import errno
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from icefs.memory import MemoryBudget

__all__ = ["Stats"]


@dataclass(slots=True)
class _OpStats:
    count: int = 0
    errors: int = 0
    seconds: float = 0.0
    max_seconds: float = 0.0


@dataclass(slots=True)
class Stats:
    """Requests, latency and errors by operation; bytes read; errors by errno."""

    started: float = field(default_factory=time.time)
    ops: dict[str, _OpStats] = field(default_factory=dict)
    errors_by_errno: dict[str, int] = field(default_factory=dict)
    bytes_read: int = 0
    bytes_written: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    commits: int = 0
    commit_failures: int = 0
    commit_seconds: float = 0.0
    commit_max_seconds: float = 0.0
    pending_bytes: int = 0
    #: write-behind: background stores running or queued, ended well, failed
    uploads_in_flight: int = 0
    uploads_stored: int = 0
    uploads_failed: int = 0
    #: read-ahead across chunk files: fetched ahead and then read / dropped unread / held,
    #: and reads that shared another reader's fetch of the same chunk; reads that waited
    #: for the look-ahead, the widest window (chunks) and the mean fetch time
    prefetch_hits: int = 0
    prefetch_at_open: int = 0
    prefetch_unused: int = 0
    prefetch_joined: int = 0
    prefetch_held_bytes: int = 0
    prefetch_late: int = 0
    prefetch_window: int = 0
    prefetch_fetch_ms: float = 0.0
    #: the mount's memory budget for what grows with the repository (`icefs.memory`)
    memory: MemoryBudget | None = None

    def record_commit(self, seconds: float, ok: bool) -> None:
        """Count one commit attempt that took *seconds*."""
        if not ok:
            self.commit_failures += 1
            return
        self.commits += 1
        self.commit_seconds += seconds
        self.commit_max_seconds = max(self.commit_max_seconds, seconds)

    def record(self, op: str, seconds: float, err: int = 0) -> None:
        """Count one *op* request that took *seconds* and ended with errno *err* (0 = success)."""
        stats = self.ops.get(op)
        if stats is None:
            stats = self.ops[op] = _OpStats()
        stats.count += 1
        stats.seconds += seconds
        stats.max_seconds = max(stats.max_seconds, seconds)
        if err:
            stats.errors += 1
            name = errno.errorcode.get(err, str(err))
            self.errors_by_errno[name] = self.errors_by_errno.get(name, 0) + 1

    def as_json(self) -> dict[str, Any]:
        """Return the counters as a JSON-ready dict."""
        return {
            "uptime_seconds": round(time.time() - self.started, 3),
            "requests": {
                op: {
                    "count": s.count,
                    "errors": s.errors,
                    "mean_ms": round(1000 * s.seconds / s.count, 3) if s.count else 0.0,
                    "max_ms": round(1000 * s.max_seconds, 3),
                }
                for op, s in sorted(self.ops.items())
            },
            "requests_total": sum(s.count for s in self.ops.values()),
            "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written,
            "cache": {"hits": self.cache_hits, "misses": self.cache_misses},
            "metadata_memory": {
                "used_bytes": self.memory.used if self.memory else 0,
                "limit_bytes": self.memory.limit if self.memory else 0,
                "entries": len(self.memory) if self.memory else 0,
                "evictions": self.memory.evictions if self.memory else 0,
            },
            "pending_bytes": self.pending_bytes,
            "background_stores": {
                "in_flight": self.uploads_in_flight,
                "stored": self.uploads_stored,
                "failed": self.uploads_failed,
            },
            "prefetch": {
                "hits": self.prefetch_hits,
                "started_at_open": self.prefetch_at_open,
                "unused": self.prefetch_unused,
                "joined": self.prefetch_joined,
                "held_bytes": self.prefetch_held_bytes,
                "waited": self.prefetch_late,
                "window": self.prefetch_window,
                "fetch_ms": round(self.prefetch_fetch_ms, 3),
            },
            "commits": {
                "count": self.commits,
                "failed": self.commit_failures,
                "mean_ms": round(1000 * self.commit_seconds / self.commits, 3)
                if self.commits
                else 0.0,
                "max_ms": round(1000 * self.commit_max_seconds, 3),
            },
            "errors": sum(self.errors_by_errno.values()),
            "errors_by_errno": dict(sorted(self.errors_by_errno.items())),
        }
