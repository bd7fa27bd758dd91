"""The ``icefs`` command line: parse, run one command, map its failure to an exit code.

Every failure is one line on stderr and a documented exit code (docs/commands.md,
"Exit codes"); a traceback means a bug.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

from icefs.cli.cache import cache_command
from icefs.cli.exits import ExitCode, QuietError, exit_code
from icefs.cli.mount import mount_command, umount_command
from icefs.cli.parser import build_parsers
from icefs.cli.refs import diff_command, init_command, log_command, ref_command
from icefs.cli.status import commit_command, discard_command, stats_command, status_command
from icefs.cli.storage import redact_message
from icefs.cli.upkeep import expire_command, gc_command
from icefs.errors import SetupError

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence


__all__ = ["main", "parse_args"]

log = logging.getLogger(__name__)


def _demo(args: argparse.Namespace) -> int:
    from icefs.cli.demo import run_demo

    return run_demo(args.directory, foreground=args.foreground, mount=main)


# name -> (handler, whether Icechunk's own log is cut to warnings: the command reports failures)
COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], bool]] = {
    "mount": (mount_command, False),
    "umount": (umount_command, False),
    "demo": (_demo, True),
    "commit": (commit_command, False),
    "status": (status_command, False),
    "discard": (discard_command, False),
    "stats": (stats_command, False),
    "init": (init_command, True),
    "branch": (ref_command, True),
    "tag": (ref_command, True),
    "log": (log_command, True),
    "diff": (diff_command, True),
    "expire": (expire_command, True),
    "gc": (gc_command, True),
    "cache": (cache_command, True),
}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse *argv*; ``command`` is None when no subcommand was given (after printing help)."""
    parsers = build_parsers()
    argv = list(argv)
    if argv and argv[0] == "mount":
        # STORAGE and MOUNTPOINT are optional (--config): let options come between them.
        args = parsers.mount.parse_intermixed_args(argv[1:])
        args.command = "mount"
        return args
    args = parsers.root.parse_args(argv)
    if args.command is None:
        parsers.root.print_help()
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the icefs command line with *argv* (default: sys.argv[1:]); return the exit code."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.command is None:
        return ExitCode.USAGE
    handler, quiet_icechunk = COMMANDS[args.command]
    if quiet_icechunk:
        from icefs.store.open import configure_icechunk_logs

        configure_icechunk_logs(logging.WARNING)
    try:
        return handler(args)
    except (QuietError, SetupError) as err:
        print(f"icefs {args.command}: {redact_message(err.message)}", file=sys.stderr)
        return exit_code(err)
    except KeyboardInterrupt:
        return 130
