"""Times as icefs shows them: UTC, ISO 8601, to the second."""

from __future__ import annotations

import time
from datetime import UTC, datetime

__all__ = ["now_utc", "render_datetime", "render_time"]

_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def render_datetime(moment: datetime) -> str:
    """Return the aware datetime *moment* as an ISO 8601 UTC time with seconds."""
    return moment.astimezone(UTC).strftime(_FORMAT)


def render_time(ns: int) -> str:
    """Return the epoch nanoseconds *ns* as an ISO 8601 UTC time with seconds."""
    return render_datetime(datetime.fromtimestamp(ns / 1e9, UTC))


def now_utc() -> str:
    """Return the current time as :func:`render_time` shows it."""
    return render_time(time.time_ns())
