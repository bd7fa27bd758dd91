"""``icefs expire`` and ``icefs gc``: reclaim space, safely, on ``--repo``.

Safety rules (docs/commands.md, "Upkeep"):

* ``expire`` never drops what a branch or tag points at, never deletes a
  branch or tag, and keeps the first snapshot; ``--dry-run`` lists what would go.
* ``gc`` deletes only objects that no branch or tag reaches *and* that are
  older than the grace period (``--grace``, default `DEFAULT_GRACE`): chunks
  written by sessions that have not committed yet are younger than that, unless
  a session stays uncommitted longer.  So that one on this machine cannot lose
  its chunks, ``gc`` first reads every icefs mount of the repository here and
  every crash journal in the default cache directory, and refuses (exit code 9)
  if any holds uncommitted changes older than the cut-off.  A grace period
  under `MIN_GRACE` is refused unless ``--allow-short-grace``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import IO, TYPE_CHECKING, Any, Final

from icefs.cli.exits import ExitCode, QuietError
from icefs.cli.storage import add_storage_options, storage_from_args
from icefs.paths import CONTROL_DIR
from icefs.timefmt import render_datetime, render_time

if TYPE_CHECKING:
    from collections.abc import Callable

    from icefs.storage import StorageSpec
    from icefs.store.upkeep import GarbageSummary

__all__ = [
    "DEFAULT_GRACE",
    "MIN_GRACE",
    "add_upkeep_parsers",
    "expire_command",
    "gc_command",
    "parse_duration",
]

#: How old an unreachable object must be before ``gc`` deletes it, by default.
DEFAULT_GRACE: Final = "7d"
#: The shortest grace period ``gc`` takes without ``--allow-short-grace``.
MIN_GRACE: Final = timedelta(hours=1)

_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``12h``, ``7d``, ``2w`` or a sum such as ``1d12h``."""
    parts = _DURATION.findall(text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise argparse.ArgumentTypeError(
            f"not a duration: {text!r} (a number and s, m, h, d or w; e.g. 30d, 12h, 1d12h)"
        )
    return timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in parts))


def add_upkeep_parsers(sub: Any, add_command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``expire`` and ``gc`` to the subcommands *sub* through *add_command*."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--repo", metavar="STORAGE", required=True, help="the repository (a path or URL)"
    )
    common.add_argument("--dry-run", action="store_true", help="only say what would go")
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    add_storage_options(common)
    expire = add_command(
        sub,
        "expire",
        parents=(common,),
        help="drop old snapshots from the history",
        description="Drop the snapshots older than DURATION from the history of every "
        "branch and tag. What a branch or tag points at stays, whatever its age, and "
        "so does every branch and tag. The space comes back with 'icefs gc'.",
        examples="icefs expire --repo ./repo --older-than 90d --dry-run\n"
        "icefs expire --repo s3://bucket/repo --older-than 26w",
    )
    expire.add_argument(
        "--older-than", type=parse_duration, required=True, metavar="DURATION", help="e.g. 90d"
    )
    gc = add_command(
        sub,
        "gc",
        parents=(common,),
        help="delete what no branch or tag reaches",
        description="Delete the snapshots, manifests and chunks that no branch or tag "
        "reaches and that are older than the grace period, and print how much was freed.",
        examples="icefs gc --repo ./repo --dry-run\nicefs gc --repo ./repo",
    )
    gc.add_argument(
        "--grace",
        type=parse_duration,
        default=parse_duration(DEFAULT_GRACE),
        metavar="DURATION",
        help=f"keep every object younger than this (default {DEFAULT_GRACE}): it spares "
        "the chunks of writers that have not committed yet",
    )
    gc.add_argument(
        "--allow-short-grace",
        action="store_true",
        help="accept a grace period under one hour (writers elsewhere that have not "
        "committed for longer than it lose their chunks)",
    )
    gc.add_argument(
        "--progress",
        action="store_true",
        help="print each phase as it starts (the default on a terminal: a status line)",
    )


def _open(args: argparse.Namespace) -> tuple[StorageSpec, Any]:
    from icefs.store.open import open_repository

    spec = storage_from_args(args.repo, args)
    if spec.kind == "memory":
        raise QuietError("--repo memory:// would be a new, empty repository", ExitCode.USAGE)
    return spec, open_repository(spec, "open")


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def expire_command(args: argparse.Namespace) -> int:
    from icefs.store.open import ref_lock
    from icefs.store.upkeep import expire, expire_plan

    spec, repository = _open(args)
    cutoff = datetime.now(UTC) - args.older_than
    plan = expire_plan(repository, cutoff)
    dropped = {m.id for m in plan}
    if not args.dry_run:
        dropped = expire(repository, ref_lock(spec), cutoff)
    shown = [m for m in plan if m.id in dropped]
    if args.json:
        entries = [
            {"id": m.id, "time": render_time(m.written_ns), "message": m.message} for m in shown
        ]
        doc = {"dry_run": args.dry_run, "older_than": cutoff.isoformat(), "expired": entries}
        print(json.dumps(doc, indent=2))
        return ExitCode.OK
    verb = "would expire" if args.dry_run else "expired"
    for m in shown:
        print(f"{verb} {m.id}  {render_time(m.written_ns)}  {m.message.splitlines()[0]}")
    extra = sorted(dropped - {m.id for m in plan})
    for sid in extra:  # Icechunk dropped one the plan did not name (never seen so far)
        print(f"{verb} {sid}")
    print(f"{len(dropped)} snapshot(s) {verb} (older than {render_datetime(cutoff)})")
    if not args.dry_run and dropped:
        print("run 'icefs gc' to delete what they alone used")
    return ExitCode.OK


# -- gc ---------------------------------------------------------------------------------------


def _unescape(field: str) -> str:
    """A field of /proc/self/mountinfo, its octal escapes (``\\040``, ``\\043``) undone."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mounts_of(display: str) -> list[str]:
    """The mountpoints of icefs mounts of the repository *display* on this machine."""
    from icefs.daemon.mountpoint import source_name

    out = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            if " - " not in line:
                continue
            before, after = line.split(" - ", 1)
            kind, source = ([*after.split(), "", ""])[:2]
            if kind == "fuse.icefs" and _unescape(source) == source_name(display):
                out.append(_unescape(before.split()[4]))
    return out


def _holders(spec: StorageSpec, cutoff: datetime) -> list[str]:
    """What on this machine holds uncommitted changes of *spec* from before *cutoff*."""
    from icefs.daemon.journal import Journal
    from icefs.fs.filesystem import default_cache_dir

    found = []
    limit = render_time(int(cutoff.timestamp() * 1e9))
    for mnt in _mounts_of(spec.display()):
        try:
            with open(os.path.join(mnt, CONTROL_DIR, "status"), encoding="utf-8") as f:
                since: dict[str, str] = json.load(f).get("uncommitted_since") or {}
        except (OSError, ValueError) as exc:
            found.append(f"the mount at {mnt} cannot be asked ({exc}); unmount it first")
            continue
        for branch, when in sorted(since.items()):
            # ISO times in UTC compare as text.  Both are cut to the second: changes
            # that began earlier in the cut-off's own second show the same text, and
            # their chunks are older than the cut-off, so equal counts as older.
            if when <= limit:
                found.append(f"the mount at {mnt} has uncommitted changes on {branch} since {when}")
    for journal in Journal.of_repository(default_cache_dir(), spec.display()):
        for entry in journal.entries():
            if entry.since_ns < cutoff.timestamp() * 1e9:
                found.append(
                    f"the crash journal in {journal.dir} holds uncommitted changes on "
                    f"{entry.branch} since {render_time(entry.since_ns)}: mount the "
                    "repository again to recover them"
                )
    return found


class _Progress(logging.Handler):
    """Shows the phase of a running garbage collection from Icechunk's log lines."""

    def __init__(self, out: IO[str], *, lines: bool) -> None:
        super().__init__(logging.INFO)
        from icefs.store.upkeep import GC_PHASES

        self._phases = GC_PHASES
        self._out = out
        self._lines = lines
        self._started = time.monotonic()
        self.seen = 0

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        for i, (start, label) in enumerate(self._phases, 1):
            if message.startswith(start):
                self.seen = max(self.seen, i)
                self.show(f"[{i}/{len(self._phases)}] {label}")

    def show(self, text: str) -> None:
        elapsed = time.monotonic() - self._started
        width = len(self._phases)
        bar = "#" * self.seen + "." * (width - self.seen)
        line = f"gc [{bar}] {text} ({elapsed:.0f} s)"
        if self._lines:
            print(line, file=self._out, flush=True)
        else:
            print(f"\r\x1b[2K{line}", end="", file=self._out, flush=True)

    def finish(self) -> None:
        if not self._lines and self.seen:
            print(file=self._out, flush=True)


def gc_command(args: argparse.Namespace) -> int:
    if args.grace < MIN_GRACE and not args.allow_short_grace:
        raise QuietError(
            "a grace period under one hour can delete the chunks of writers that have "
            "not committed yet: add --allow-short-grace to accept that",
            ExitCode.USAGE,
        )
    spec, repository = _open(args)
    cutoff = datetime.now(UTC) - args.grace
    holders = _holders(spec, cutoff)
    if holders:
        raise QuietError(
            "refused: " + "; ".join(holders) + " (commit or discard first)", ExitCode.CONFLICT
        )
    show = not args.json and (args.progress or sys.stderr.isatty())
    lines = args.progress or not sys.stderr.isatty()
    summary = _collect(repository, cutoff, args.dry_run, lines if show else None)
    doc = {"dry_run": args.dry_run, "older_than": cutoff.isoformat(), **summary.as_json()}
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        verb = "would free" if args.dry_run else "freed"
        print(
            f"{verb} {_size(summary.bytes_deleted)}: {summary.chunks} chunks, "
            f"{summary.manifests} manifests, {summary.snapshots} snapshots, "
            f"{summary.transaction_logs} transaction logs (objects older than "
            f"{render_datetime(cutoff)} that no branch or tag reaches)"
        )
    if summary.failed:
        print(
            f"icefs gc: {summary.failed} objects could not be deleted (they stay for the "
            f"next run): {'; '.join(summary.errors)}",
            file=sys.stderr,
        )
        return ExitCode.STORAGE
    return ExitCode.OK


def _collect(
    repository: Any, cutoff: datetime, dry_run: bool, lines: bool | None
) -> GarbageSummary:
    """Collect garbage; with *lines* not None, show its phases on stderr (one line per
    phase if *lines*, else a status line redrawn in place)."""
    from icefs.store.rustlog import route_stderr
    from icefs.store.upkeep import collect_garbage, log_gc_phases

    if lines is None:
        return collect_garbage(repository, cutoff, dry_run=dry_run)

    # Icechunk logs to descriptor 2: while it runs, that leads into `logging`, where
    # the progress handler reads the phases; the terminal is reached through *out*.
    out = route_stderr()
    progress = _Progress(out, lines=lines)
    others = logging.StreamHandler(out)  # anything else logged meanwhile reaches the user
    others.setLevel(logging.WARNING)
    icechunk_log, root = logging.getLogger("icechunk"), logging.getLogger()
    previous_level = icechunk_log.level
    icechunk_log.addHandler(progress)
    icechunk_log.setLevel(logging.INFO)
    root.addHandler(others)
    log_gc_phases(True)
    progress.show("starting")
    try:
        return collect_garbage(repository, cutoff, dry_run=dry_run)
    finally:
        log_gc_phases(False)
        time.sleep(0.2)  # the router thread hands over the last lines
        os.dup2(out.fileno(), 2)  # descriptor 2 is the terminal again; the router ends
        icechunk_log.removeHandler(progress)
        icechunk_log.setLevel(previous_level)
        root.removeHandler(others)
        progress.finish()
