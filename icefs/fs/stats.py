"""Counters of what a mount has done, shown in ``.icefs/stats`` and as Prometheus metrics
(`icefs.daemon.metrics`).  Updated on the trio thread only; read there too."""

from __future__ import annotations

import bisect
import errno
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from icefs.memory import MemoryBudget

__all__ = ["BUCKETS", "Histogram", "Stats"]

#: Upper bounds (seconds) of the latency histograms: a page-cache hit to a hung store.
BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
)  # fmt: skip


@dataclass(slots=True)
class Histogram:
    """Counts of observations by `BUCKETS` (not cumulative; the last one: above all)."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds


@dataclass(slots=True)
class _OpStats:
    count: int = 0
    errors: int = 0
    seconds: float = 0.0
    max_seconds: float = 0.0
    latency: Histogram = field(default_factory=Histogram)
    #: failed requests by errno name
    by_errno: dict[str, int] = field(default_factory=dict)


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
    prefetch_misses: int = 0
    #: the persistent read cache's counters (`icefs.cache.CacheCounters`) and its bound;
    #: empty when the mount has none
    read_cache: dict[str, int] = field(default_factory=dict)
    #: the mount's memory budget for what grows with the repository (`icefs.memory`)
    memory: MemoryBudget | None = None
    #: storage requests by (kind, outcome), and their latency by kind (`Bridge.observe`)
    storage: dict[tuple[str, str], int] = field(default_factory=dict)
    storage_latency: dict[str, Histogram] = field(default_factory=dict)
    commit_latency: Histogram = field(default_factory=Histogram)
    commit_conflicts: int = 0
    commit_timeouts: int = 0
    #: inside Icechunk's commits (`Repo.events`): rebases over other writers, retries
    commit_rebases: int = 0
    commit_retries: int = 0
    journal_saves: int = 0
    #: failed requests by the class of their error ("bug": not an icefs error)
    errors_by_class: dict[str, int] = field(default_factory=dict)
    #: per branch written: (uncommitted bytes, uncommitted files)
    uncommitted: dict[str, tuple[int, int]] = field(default_factory=dict)

    def record_storage(self, kind: str, outcome: str, seconds: float) -> None:
        """Count one storage request of *kind* that ended with *outcome* after *seconds*."""
        key = (kind, outcome)
        self.storage[key] = self.storage.get(key, 0) + 1
        latency = self.storage_latency.get(kind)
        if latency is None:
            latency = self.storage_latency[kind] = Histogram()
        latency.observe(seconds)

    def record_error(self, name: str) -> None:
        """Count one failed request whose error is of the class *name*."""
        self.errors_by_class[name] = self.errors_by_class.get(name, 0) + 1

    def record_commit(self, seconds: float, ok: bool) -> None:
        """Count one commit attempt that took *seconds*."""
        if not ok:
            self.commit_failures += 1
            return
        self.commits += 1
        self.commit_latency.observe(seconds)
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
        stats.latency.observe(seconds)
        if err:
            stats.errors += 1
            name = errno.errorcode.get(err, str(err))
            self.errors_by_errno[name] = self.errors_by_errno.get(name, 0) + 1
            stats.by_errno[name] = stats.by_errno.get(name, 0) + 1

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
                "misses": self.prefetch_misses,
            },
            "read_cache": {"enabled": bool(self.read_cache), **self.read_cache},
            "storage_requests": {
                f"{kind} {outcome}": n for (kind, outcome), n in sorted(self.storage.items())
            },
            "commits": {
                "count": self.commits,
                "failed": self.commit_failures,
                "mean_ms": round(1000 * self.commit_seconds / self.commits, 3)
                if self.commits
                else 0.0,
                "max_ms": round(1000 * self.commit_max_seconds, 3),
                "conflicts": self.commit_conflicts,
                "timed_out": self.commit_timeouts,
                "rebases": self.commit_rebases,
                "retries": self.commit_retries,
            },
            "journal_saves": self.journal_saves,
            "errors_by_class": dict(sorted(self.errors_by_class.items())),
            "errors": sum(self.errors_by_errno.values()),
            "errors_by_errno": dict(sorted(self.errors_by_errno.items())),
        }
