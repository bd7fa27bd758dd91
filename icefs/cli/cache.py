"""``icefs cache stats|clear|prune``: the persistent read cache on this host.

Safe while daemons use the cache: they share it through the same locks.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from icefs.cli.exits import ExitCode
from icefs.cli.options import add_setting_arguments

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

__all__ = ["add_cache_parser", "cache_command"]


def add_cache_parser(sub: Any, add_command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``cache`` to the subcommands *sub* through *add_command*."""
    cache = add_command(
        sub,
        "cache",
        help="show, clear or prune the persistent read cache",
        description="The read cache keeps snapshot data (chunks, node lists, chunk "
        "indexes) of repositories on object storage under --cache-dir/read, shared by "
        "every mount using it. stats: its size and bound; clear: remove every entry; "
        "prune: check every entry (removing the damaged), remove what crashed mounts "
        "left, and evict to --read-cache-size. Safe while mounts use it.",
        examples="icefs cache stats\nicefs cache prune --read-cache-size 2G --json\n"
        "icefs cache clear --cache-dir /var/cache/icefs",
    )
    cache.add_argument("action", choices=("stats", "clear", "prune"))
    cache.add_argument("--json", action="store_true", help="print JSON for scripts")
    add_setting_arguments(cache, ["cache_dir", "read_cache_size"])


def cache_command(args: argparse.Namespace) -> int:
    from icefs.cache import EntryStore, default_size
    from icefs.fs import default_cache_dir

    directory = os.path.join(args.cache_dir or default_cache_dir(), "read")
    limit = args.read_cache_size if args.read_cache_size is not None else default_size(directory)
    if not os.path.isdir(directory) and args.action != "prune":
        report: dict[str, Any] = {"directory": directory, "entries": 0, "bytes": 0}
    else:
        entries = EntryStore(directory, max(limit, 1))
        if args.action == "clear":
            report = {"directory": directory, "removed": entries.clear()}
        elif args.action == "prune":
            scan = entries.scan(verify=True, trim_to=limit)
            report = {
                "directory": directory,
                "entries": scan.entries,
                "bytes": scan.bytes,
                "limit_bytes": limit,
                "damaged": scan.damaged,
                "evicted": scan.evicted,
                "leftovers": scan.leftovers,
            }
        else:
            size, count = entries.counted()
            report = {"directory": directory, "entries": count, "bytes": size}
    if args.action == "stats":
        report["limit_bytes"] = limit
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(", ".join(f"{k.replace('_', ' ')} {v}" for k, v in report.items()))
    return ExitCode.OK
