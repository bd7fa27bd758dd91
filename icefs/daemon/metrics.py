"""Prometheus metrics of a mount, served over HTTP (``--metrics HOST:PORT``).

The numbers are the mount's `Stats` (the same as ``.icefs/stats``), turned into
metric families at each scrape by `MountCollector`.  The HTTP server is a trio
task of the daemon: a scrape is rendered on the trio thread that updates the
stats, so it never sees them half-changed, and it costs the daemon no thread.

Labels carry operation names, errno names, storage request kinds and outcomes,
error classes, and branch names (``metrics_branches = false``: none), never a
path, a key or a credential: the number of series stays bounded by the code,
plus one per branch written.  docs/operations.md lists every metric.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

import trio
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from icefs.errors import UsageError
from icefs.fs.stats import BUCKETS

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from icefs.fs.stats import Histogram, Stats

__all__ = ["MountCollector", "open_listeners", "parse_address", "registry", "serve"]

log = logging.getLogger(__name__)

#: The most a scrape request may send, and how long it may take to send it.
MAX_REQUEST: Final = 8192
REQUEST_SECONDS: Final = 10.0


def parse_address(text: str) -> tuple[str, int]:
    """(host, port) of ``HOST:PORT``, ``[V6]:PORT`` or ``PORT`` (host 127.0.0.1)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    host = host.removeprefix("[").removesuffix("]") or "127.0.0.1"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--metrics {text}: not HOST:PORT (example: 127.0.0.1:9464)")
    return host, int(port)


def _buckets(h: Histogram) -> list[tuple[str, float]]:
    cumulative = 0
    out: list[tuple[str, float]] = []
    for bound, n in zip((*BUCKETS, float("inf")), h.counts, strict=True):
        cumulative += n
        out.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
    return out


class MountCollector(Collector):
    """The metric families of one mount, from *current_stats* at each scrape."""

    def __init__(self, current_stats: Callable[[], Stats], *, branch_labels: bool) -> None:
        self._current = current_stats
        self._branch_labels = branch_labels

    def collect(self) -> Iterator[Metric]:
        stats = self._current()
        yield from self._fuse(stats)
        yield from self._storage(stats)
        yield from self._reads(stats)
        yield from self._commits(stats)
        yield from self._branches(stats)
        errors = CounterMetricFamily(
            "icefs_errors", "Failed requests by the class of their error", labels=["class"]
        )
        for name, n in sorted(stats.errors_by_class.items()):
            errors.add_metric([name], n)
        yield errors

    def _fuse(self, stats: Stats) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "icefs_fuse_requests",
            "FUSE requests by operation and errno (none: success)",
            labels=["operation", "errno"],
        )
        latency = HistogramMetricFamily(
            "icefs_fuse_request_duration_seconds",
            "Time to answer a FUSE request, by operation",
            labels=["operation"],
        )
        for op, s in sorted(stats.ops.items()):
            requests.add_metric([op, "none"], s.count - s.errors)
            for name, n in sorted(s.by_errno.items()):
                requests.add_metric([op, name], n)
            latency.add_metric([op], _buckets(s.latency), s.latency.total)
        yield requests
        yield latency

    def _storage(self, stats: Stats) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "icefs_storage_requests",
            "Requests to Icechunk by object kind and outcome (one may be several GETs, or "
            "none when Icechunk's cache has the object)",
            labels=["kind", "outcome"],
        )
        for (kind, outcome), n in sorted(stats.storage.items()):
            requests.add_metric([kind, outcome], n)
        yield requests
        latency = HistogramMetricFamily(
            "icefs_storage_request_duration_seconds",
            "Time Icechunk took to answer a request, by object kind",
            labels=["kind"],
        )
        for kind, h in sorted(stats.storage_latency.items()):
            latency.add_metric([kind], _buckets(h), h.total)
        yield latency

    def _reads(self, stats: Stats) -> Iterator[Metric]:
        yield CounterMetricFamily("icefs_read_bytes", "Bytes read", value=stats.bytes_read)
        yield CounterMetricFamily("icefs_written_bytes", "Bytes written", value=stats.bytes_written)
        yield CounterMetricFamily(
            "icefs_readahead_hits",
            "Chunk reads served by the read-ahead across files",
            value=stats.prefetch_hits + stats.prefetch_at_open,
        )
        yield CounterMetricFamily(
            "icefs_readahead_misses",
            "Whole-chunk reads that found nothing fetched ahead and fetched it themselves",
            value=stats.prefetch_misses,
        )
        yield CounterMetricFamily(
            "icefs_readahead_unused",
            "Chunks fetched ahead and dropped unread",
            value=stats.prefetch_unused,
        )
        for name, what in (
            ("hits", "Reads answered from the persistent read cache"),
            ("misses", "Reads of cacheable data the persistent read cache did not have"),
            ("bytes_served", "Bytes answered from the persistent read cache"),
            ("evictions", "Entries the persistent read cache dropped to keep its bound"),
            ("damaged", "Entries of the persistent read cache that failed their check"),
        ):
            yield CounterMetricFamily(
                f"icefs_read_cache_{name}", what, value=stats.read_cache.get(name, 0)
            )
        memory = stats.memory
        yield CounterMetricFamily(
            "icefs_metadata_cache_hits", "Snapshot trees found cached", value=stats.cache_hits
        )
        yield CounterMetricFamily(
            "icefs_metadata_cache_misses", "Snapshot trees read again", value=stats.cache_misses
        )
        yield CounterMetricFamily(
            "icefs_metadata_cache_evictions",
            "Entries dropped to keep the metadata memory budget",
            value=memory.evictions if memory else 0,
        )
        yield GaugeMetricFamily(
            "icefs_metadata_memory_bytes",
            "Metadata held in memory (chunk indexes, listings, resolved paths)",
            value=memory.used if memory else 0,
        )
        yield GaugeMetricFamily(
            "icefs_metadata_memory_limit_bytes",
            "The metadata memory budget (--metadata-memory)",
            value=memory.limit if memory else 0,
        )

    def _commits(self, stats: Stats) -> Iterator[Metric]:
        for name, help_text, value in (
            ("commits", "Commits (and moves) that landed", stats.commits),
            ("commit_failures", "Commits that failed, conflicts included", stats.commit_failures),
            ("commit_conflicts", "Commits refused: overlapping changes", stats.commit_conflicts),
            ("commit_timeouts", "Commits answered ETIMEDOUT (may land)", stats.commit_timeouts),
            ("commit_rebases", "Commits rebased over other writers' ones", stats.commit_rebases),
            ("commit_retries", "Commits tried again: dropped by a writer", stats.commit_retries),
            ("journal_saves", "Sessions saved to the crash journal", stats.journal_saves),
            ("background_stores", "Files stored in the background", stats.uploads_stored),
            ("background_store_failures", "Background stores that failed", stats.uploads_failed),
        ):  # fmt: skip
            yield CounterMetricFamily(f"icefs_{name}", help_text, value=value)
        latency = HistogramMetricFamily(
            "icefs_commit_duration_seconds", "Time a commit that landed took"
        )
        latency.add_metric([], _buckets(stats.commit_latency), stats.commit_latency.total)
        yield latency

    def _branches(self, stats: Stats) -> Iterator[Metric]:
        labels = ["branch"] if self._branch_labels else []
        size = GaugeMetricFamily(
            "icefs_uncommitted_bytes", "Bytes stored and not committed yet", labels=labels
        )
        files = GaugeMetricFamily(
            "icefs_uncommitted_files",
            "Files changed and not committed yet (stored or open)",
            labels=labels,
        )
        if self._branch_labels:
            for branch, (n_bytes, n_files) in sorted(stats.uncommitted.items()):
                size.add_metric([branch], n_bytes)
                files.add_metric([branch], n_files)
        else:
            size.add_metric([], sum(b for b, _ in stats.uncommitted.values()))
            files.add_metric([], sum(f for _, f in stats.uncommitted.values()))
        yield size
        yield files
        yield GaugeMetricFamily(
            "icefs_pending_bytes",
            "Bytes of files being written, in memory or spooled, not stored yet",
            value=stats.pending_bytes,
        )


def registry(collector: MountCollector) -> CollectorRegistry:
    """A registry of the mount's metrics and the daemon process's (memory, CPU, fds)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    ProcessCollector(registry=reg)
    return reg


async def open_listeners(address: str) -> list[trio.SocketListener]:
    """Bind *address* (`UsageError` if it cannot be: in use, not local, ...)."""
    host, port = parse_address(address)
    try:
        return await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise UsageError(f"--metrics {address}: cannot listen there: {exc.strerror}") from None


async def serve(listeners: list[trio.SocketListener], reg: CollectorRegistry) -> None:
    """Answer ``GET /metrics`` on *listeners* with *reg*'s metrics until cancelled."""

    async def answer(stream: trio.SocketStream) -> None:
        try:
            with trio.move_on_after(REQUEST_SECONDS):
                head = b""
                while b"\r\n\r\n" not in head and len(head) < MAX_REQUEST:
                    data = await stream.receive_some(MAX_REQUEST)
                    if not data:
                        break
                    head += data
                request = head.split(b"\r\n", 1)[0].split()
                if len(request) < 2 or request[0] not in (b"GET", b"HEAD"):
                    await _reply(stream, b"405 Method Not Allowed", b"text/plain", b"GET only\n")
                elif request[1].split(b"?")[0] not in (b"/metrics", b"/"):
                    await _reply(stream, b"404 Not Found", b"text/plain", b"see /metrics\n")
                else:
                    body = generate_latest(reg)
                    await _reply(
                        stream,
                        b"200 OK",
                        CONTENT_TYPE_LATEST.encode(),
                        b"" if request[0] == b"HEAD" else body,
                    )
        except trio.BrokenResourceError:  # the scraper went away
            pass
        except Exception:
            log.exception("answering a metrics scrape failed")
        finally:
            await stream.aclose()

    await trio.serve_listeners(answer, listeners)


async def _reply(stream: trio.SocketStream, status: bytes, kind: bytes, body: bytes) -> None:
    await stream.send_all(
        b"HTTP/1.1 " + status + b"\r\nContent-Type: " + kind
        + b"\r\nContent-Length: " + str(len(body)).encode()
        + b"\r\nConnection: close\r\n\r\n" + body
    )  # fmt: skip
