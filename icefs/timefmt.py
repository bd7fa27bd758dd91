"""Times as icefs shows them: UTC, ISO 8601, to the second."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["render_time"]


def render_time(ns: int) -> str:
    """Return the epoch nanoseconds *ns* as an ISO 8601 UTC time with seconds."""
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
