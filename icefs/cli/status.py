"""``icefs commit``, ``status``, ``discard`` and ``stats``: thin clients of control files."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from icefs.cli.exits import ExitCode

if TYPE_CHECKING:
    import argparse

__all__ = ["commit_command", "discard_command", "stats_command", "status_command"]


def commit_command(args: argparse.Namespace) -> int:
    from icefs.cli.client import commit, read_status

    before = read_status(args.path).get("last_commit")
    doc = commit(args.path, args.message, dict(args.meta))
    after = doc.get("last_commit")
    if after and after != before:
        print(after["snapshot_id"])
    else:
        print(f"nothing to commit on {doc.get('ref')}")
    return ExitCode.OK


def status_command(args: argparse.Namespace) -> int:
    import json

    from icefs.cli.client import read_status

    doc = read_status(args.path)
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
        return ExitCode.OK
    print(
        f"{doc['kind']} {doc['ref']} at {doc['snapshot_id']}"
        + (" (read-only)" if doc.get("read_only") else "")
    )
    if doc.get("has_uncommitted_changes"):
        print(f"uncommitted: {doc['changed_nodes']} nodes, {doc['changed_chunks']} chunks")
        for path in doc.get("changed_paths", []):
            print(f"  {path}")
    else:
        print("no uncommitted changes")
    if doc.get("recovered_from_journal"):
        print(
            f"recovered after a crash (saved at {doc['recovered_from_journal']}): "
            "commit or discard it"
        )
    for label, key in (
        ("scratch files (never committed)", "scratch_files"),
        ("files being written", "files_being_written"),
        ("empty directories", "empty_directories"),
    ):
        if doc.get(key):
            print(f"{label}: " + ", ".join(doc[key]))
    if doc.get("last_commit"):
        last = doc["last_commit"]
        print(f"last commit: {last['snapshot_id']} at {last['time']}: {last['message']}")
    if doc.get("last_error"):
        print(f"last error: {doc['last_error']}")
    for conflict in doc.get("conflicts", []):
        print(f"conflict: {conflict}")
    return ExitCode.OK


def discard_command(args: argparse.Namespace) -> int:
    from icefs.cli.client import discard

    doc = discard(args.path)
    print(f"discarded uncommitted changes of {doc.get('ref')}")
    return ExitCode.OK


def stats_command(args: argparse.Namespace) -> int:
    from icefs.cli.mounted import MountRefs

    root = MountRefs(args.path).root
    with open(os.path.join(root, ".icefs", "stats")) as f:
        doc = json.load(f)
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
        return ExitCode.OK
    print(f"{'operation':<12} {'count':>9} {'errors':>7} {'mean ms':>9} {'max ms':>9}")
    for op, row in doc["requests"].items():
        print(
            f"{op:<12} {row['count']:>9} {row['errors']:>7} {row['mean_ms']:>9.3f} "
            f"{row['max_ms']:>9.3f}"
        )
    commits = doc["commits"]
    print(
        f"\nrequests {doc['requests_total']}, errors {doc['errors']} "
        f"{doc['errors_by_errno'] or ''}".rstrip()
    )
    print(
        f"bytes read {doc['bytes_read']}, written {doc['bytes_written']}, "
        f"pending (not yet stored) {doc['pending_bytes']}; background stores in flight "
        f"{doc['background_stores']['in_flight']}, stored {doc['background_stores']['stored']}, "
        f"failed {doc['background_stores']['failed']}"
    )
    print(f"tree cache hits {doc['cache']['hits']}, misses {doc['cache']['misses']}")
    disk = doc["read_cache"]
    if disk["enabled"]:
        print(
            f"read cache hits {disk['hits']}, misses {disk['misses']}, bytes served "
            f"{disk['bytes_served']}, evictions {disk['evictions']}, damaged {disk['damaged']}"
        )
    ahead = doc["prefetch"]
    print(
        f"prefetched chunks read {ahead['hits']}, fetched at open "
        f"{ahead['started_at_open']}, dropped unread {ahead['unused']}, "
        f"shared by readers {ahead['joined']}, held {ahead['held_bytes']} bytes, "
        f"reads that waited {ahead['waited']}, window {ahead['window']} chunks, "
        f"mean fetch {ahead['fetch_ms']} ms"
    )
    print(
        f"commits {commits['count']} (failed {commits['failed']}), mean "
        f"{commits['mean_ms']} ms, max {commits['max_ms']} ms; up {doc['uptime_seconds']} s"
    )
    return ExitCode.OK
