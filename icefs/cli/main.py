"""The ``icefs`` command line: mount, umount, demo.

Every failure is one line on stderr and a documented exit code (docs/commands.md,
"Exit codes"); a traceback means a bug.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING

from icefs import __version__
from icefs.cli.exits import ExitCode, QuietError, exit_code
from icefs.cli.mount import mount_command, umount_command
from icefs.cli.options import add_arguments
from icefs.cli.refs import diff_command, init_command, log_command, ref_command
from icefs.cli.status import commit_command, discard_command, stats_command, status_command
from icefs.cli.storage import add_storage_options, redact_message
from icefs.cli.upkeep import add_upkeep_parsers, expire_command, gc_command
from icefs.errors import SetupError

if TYPE_CHECKING:
    from collections.abc import Sequence


__all__ = ["main"]

log = logging.getLogger(__name__)

LOG_LEVELS = ("debug", "info", "warning", "error")
_MOUNT_PARSER: list[argparse.ArgumentParser] = []

MOUNT_EPILOG = """\
examples:
  icefs mount ./repo /mnt/ice                 mount a local repository
  icefs mount file:///data/repo /mnt/ice --read-only
  icefs mount memory:// /mnt/ice              an empty in-memory repository
  icefs mount ./new /mnt/ice --mode create    create the repository first
  icefs mount ./repo /mnt/ice -o allow_other --refresh 5

then: ls /mnt/ice/branches/main, cat /mnt/ice/tags/v1/.icefs/log, icefs umount /mnt/ice
"""


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {value!r}")
    return number


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"not KEY=VALUE: {text!r}")
    return key.strip(), value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="icefs",
        description="Mount Icechunk repositories as a filesystem: "
        "branches/, tags/ and snapshots/ as directories.",
    )
    parser.add_argument("--version", action="version", version=f"icefs {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    mount = sub.add_parser(
        "mount",
        help="mount a repository",
        epilog=MOUNT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Mount the Icechunk repository at STORAGE (s3://bucket/prefix, "
        "gs://bucket/prefix, az://account/container/prefix, a local path, a "
        "file:// URL or memory://) on MOUNTPOINT. Returns once the mount is ready.",
    )
    mount.add_argument(
        "storage", metavar="STORAGE", nargs="?", help="the repository (or `storage` in --config)"
    )
    mount.add_argument(
        "mountpoint",
        metavar="MOUNTPOINT",
        nargs="?",
        help="where to mount (or `mountpoint` in --config)",
    )
    mount.add_argument(
        "-o",
        dest="options",
        action="append",
        default=[],
        metavar="OPT[,OPT]",
        help="FUSE options (allow_other, allow_root, default_permissions, ro, "
        "noxattr, auto_unmount, nosuid, nodev, noexec, noatime) and any "
        "setting as name=value (refresh=5, uid=1000, config=FILE)",
    )
    add_arguments(mount, "mount")
    add_storage_options(mount)
    _MOUNT_PARSER[:] = [mount]

    umount = sub.add_parser(
        "umount",
        help="unmount and wait for the daemon to exit",
        description="Unmount MOUNTPOINT and wait until its daemon has exited. Also cleans up "
        "a mount whose daemon died ('Transport endpoint is not connected').",
        epilog="example:\n  icefs umount /mnt/ice",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    umount.add_argument("mountpoint", metavar="MOUNTPOINT")
    umount.add_argument(
        "--timeout",
        type=_positive,
        default=60.0,
        metavar="SECONDS",
        help="how long to wait for the daemon to exit (default 60)",
    )

    commit = sub.add_parser(
        "commit",
        help="commit a branch of a mount",
        description="Commit the uncommitted changes of the branch holding PATH (a path inside "
        "<mnt>/branches/<b>). Prints the new snapshot id. Exit code 9 means a "
        "conflict with another writer that could not be rebased; the changes stay.",
        epilog="example:\n  icefs commit /mnt/ice/branches/main -m 'add 2026 data'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commit.add_argument("path", metavar="PATH")
    commit.add_argument("-m", "--message", required=True, help="the commit message")
    commit.add_argument(
        "--meta",
        action="append",
        default=[],
        type=_key_value,
        metavar="KEY=VALUE",
        help="record KEY=VALUE in the commit's metadata (repeatable); the user, host, "
        "mountpoint and icefs version are recorded anyway",
    )
    status = sub.add_parser(
        "status",
        help="show a ref's status",
        description="Show the status of the branch, tag or snapshot holding PATH.",
        epilog="example:\n  icefs status /mnt/ice/branches/main --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument("path", metavar="PATH")
    status.add_argument("--json", action="store_true", help="print the JSON document")
    discard = sub.add_parser(
        "discard",
        help="drop a branch's uncommitted changes",
        description="Drop every uncommitted change of the branch holding PATH "
        "(scratch files stay).",
        epilog="example:\n  icefs discard /mnt/ice/branches/main",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    discard.add_argument("path", metavar="PATH")

    stats = sub.add_parser(
        "stats",
        help="show a mount's request statistics",
        description="Print .icefs/stats of the mount holding PATH as a table: requests, "
        "latency and errors by operation, bytes, cache, commits.",
        epilog="example:\n  icefs stats /mnt/ice\n  icefs stats /mnt/ice --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    stats.add_argument("path", metavar="PATH", nargs="?", default=".")
    stats.add_argument("--json", action="store_true", help="print the JSON document")

    target = argparse.ArgumentParser(add_help=False)
    where = target.add_mutually_exclusive_group()
    where.add_argument(
        "--repo", metavar="STORAGE", help="work on this repository directly (a path or URL)"
    )
    where.add_argument(
        "-C",
        "--mount",
        metavar="PATH",
        default=".",
        help="work through the icefs mount holding PATH (default: the current directory)",
    )
    target.add_argument(
        "--default-branch",
        default="main",
        metavar="BRANCH",
        help="with --repo: the branch used when no --from/REF is given",
    )
    target.add_argument("--json", action="store_true", help="print JSON for scripts")
    add_storage_options(target)

    init = sub.add_parser(
        "init",
        help="create a repository",
        description="Create an Icechunk repository at STORAGE (a local path or file:// URL).",
        epilog="examples:\n  icefs init ./repo\n  icefs init ./repo --mode open_or_create",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    init.add_argument("storage", metavar="STORAGE")
    init.add_argument(
        "--mode",
        choices=("create", "open_or_create"),
        default="create",
        help="create (default: refuse if one exists) or open_or_create",
    )
    add_storage_options(init)

    for kind, plural in (("branch", "branches"), ("tag", "tags")):
        example = "dev" if kind == "branch" else "v2"
        cmd = sub.add_parser(
            kind,
            help=f"list, create or delete {plural}",
            description=f"Manage {plural} through a mount (default) or with --repo directly.",
            epilog=f"examples:\n  icefs {kind} list -C /mnt/ice\n"
            f"  icefs {kind} create {example} --from main -C /mnt/ice\n"
            f"  icefs {kind} delete {example} --repo ./repo",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        actions = cmd.add_subparsers(dest="action", metavar="ACTION", required=True)
        actions.add_parser("list", parents=[target], help=f"list {plural} with their snapshots")
        create = actions.add_parser("create", parents=[target], help=f"create a {kind}")
        create.add_argument("name", metavar="NAME")
        create.add_argument(
            "--from",
            dest="source",
            metavar="REF|SNAPSHOT",
            help="a branch, tag or snapshot id (default: the default branch)",
        )
        delete = actions.add_parser("delete", parents=[target], help=f"delete a {kind}")
        delete.add_argument("name", metavar="NAME")
        if kind == "branch":
            reset = actions.add_parser(
                "reset",
                parents=[target],
                help="move a branch to any snapshot",
                description="Move branch NAME to REF (a branch, tag or snapshot id). Through "
                "a mount, refused (exit code 9) while the mount holds uncommitted changes "
                "on NAME, unless --discard. Prints the old tip, to undo with.",
            )
            reset.add_argument("name", metavar="NAME")
            reset.add_argument("--to", required=True, metavar="REF|SNAPSHOT", help="the target")
            reset.add_argument(
                "--discard",
                action="store_true",
                help="drop the mount's uncommitted changes on the branch",
            )

    log_cmd = sub.add_parser(
        "log",
        parents=[target],
        help="show a ref's history",
        description="Show the history of REF (a branch, tag or snapshot id; default: the "
        "default branch), newest first: id, time, message.",
        epilog="examples:\n  icefs log main -C /mnt/ice\n  icefs log v1.0 --repo ./repo --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    log_cmd.add_argument("ref", nargs="?", metavar="REF")
    log_cmd.add_argument(
        "--ops",
        action="store_true",
        help="the repository's operations log instead: commits, resets, ref changes, "
        "expiry and garbage collection, newest first",
    )
    log_cmd.add_argument("-n", "--limit", type=int, metavar="N", help="show at most N entries")
    log_cmd.add_argument(
        "--after",
        metavar="SNAPSHOT",
        help="start after this snapshot (the last one a page showed): the next page",
    )

    diff = sub.add_parser(
        "diff",
        parents=[target],
        help="show what changed between two versions",
        description="Show what changed from FROM to TO (branches, tags or snapshot ids): "
        "new, deleted and updated groups and arrays, their changed metadata and "
        "attributes, and the chunks changed per array. With one REF: what its "
        "snapshot changed against its parent; with none: the default branch's tip.",
        epilog="examples:\n  icefs diff v1.0 main -C /mnt/ice\n"
        "  icefs diff 8NQ2... --repo ./repo --chunks\n  icefs diff main --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    diff.add_argument("refs", nargs="*", metavar="REF", help="[FROM] TO")
    diff.add_argument("--chunks", action="store_true", help="list the changed chunks' coordinates")
    add_upkeep_parsers(sub)

    demo = sub.add_parser(
        "demo",
        help="build a sample repository and mount it",
        description="Build a small sample repository (temperature(time, lat, lon), two "
        "commits, tag v1.0, branch 'experiment') under DIR and mount it at "
        "DIR/mnt until 'icefs umount DIR/mnt'.",
        epilog="example:\n  icefs demo /tmp/icefs-demo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("directory", nargs="?", default="icefs-demo", metavar="DIR")
    demo.add_argument(
        "--foreground", "-f", action="store_true", help="serve in the foreground until Ctrl-C"
    )
    return parser


def _demo(args: argparse.Namespace) -> int:
    from icefs.cli.demo import run_demo

    return run_demo(args.directory, foreground=args.foreground)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the icefs command line with *argv* (default: sys.argv[1:]); return the exit code."""
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "mount":
        # STORAGE and MOUNTPOINT are optional (--config): let options come between them.
        args = _MOUNT_PARSER[0].parse_intermixed_args(argv[1:])
        args.command = "mount"
    else:
        args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return ExitCode.USAGE
    commands = {
        "mount": mount_command,
        "umount": umount_command,
        "demo": _demo,
        "commit": commit_command,
        "status": status_command,
        "discard": discard_command,
        "init": init_command,
        "branch": ref_command,
        "tag": ref_command,
        "log": log_command,
        "diff": diff_command,
        "expire": expire_command,
        "gc": gc_command,
        "stats": stats_command,
    }
    if args.command in ("init", "branch", "tag", "log", "diff", "expire", "gc", "demo"):
        from icefs.store.open import configure_icechunk_logs

        configure_icechunk_logs(logging.WARNING)  # errors only: the command reports failures
    try:
        return commands[args.command](args)
    except (QuietError, SetupError) as err:
        print(f"icefs {args.command}: {redact_message(err.message)}", file=sys.stderr)
        return exit_code(err)
    except KeyboardInterrupt:
        return 130
