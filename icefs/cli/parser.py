"""The ``icefs`` argument parser: every subcommand, its help and its examples.

Each subcommand is declared through :func:`add_command`, so help layout and
examples look the same everywhere; mount settings come from the SETTINGS
table through :func:`icefs.cli.options.add_arguments`.
"""

from __future__ import annotations

import argparse
from typing import Any

from icefs import __version__
from icefs.cli.cache import add_cache_parser
from icefs.cli.options import add_arguments
from icefs.cli.storage import add_storage_options
from icefs.cli.upkeep import add_upkeep_parsers

__all__ = ["Parsers", "add_command", "build_parsers"]

MOUNT_EXAMPLES = """\
icefs mount ./repo /mnt/ice                 mount a local repository
icefs mount file:///data/repo /mnt/ice --read-only
icefs mount memory:// /mnt/ice              an empty in-memory repository
icefs mount ./new /mnt/ice --mode create    create the repository first
icefs mount ./repo /mnt/ice -o allow_other --refresh 5

then: ls /mnt/ice/branches/main, cat /mnt/ice/tags/v1/.icefs/log, icefs umount /mnt/ice"""


class Parsers:
    """The root parser and the ``mount`` parser (parsed on its own, options intermixed)."""

    def __init__(self, root: argparse.ArgumentParser, mount: argparse.ArgumentParser) -> None:
        self.root = root
        self.mount = mount


def add_command(
    sub: Any,
    name: str,
    *,
    help: str,
    description: str,
    examples: str,
    parents: tuple[argparse.ArgumentParser, ...] = (),
) -> argparse.ArgumentParser:
    """Add subcommand *name* to *sub* with its help, description and *examples*.

    *examples* holds one command line per line; other lines are printed as they are.
    """
    lines = examples.splitlines()
    commands = [line for line in lines if line.startswith("icefs")]
    heading = "examples" if len(commands) > 1 else "example"
    return sub.add_parser(  # type: ignore[no-any-return]
        name,
        parents=list(parents),
        help=help,
        description=description,
        epilog="\n".join(
            [f"{heading}:", *(f"  {line}" if line in commands else line for line in lines)]
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


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


def _add_mount(sub: Any) -> argparse.ArgumentParser:
    mount = add_command(
        sub,
        "mount",
        help="mount a repository",
        description="Mount the Icechunk repository at STORAGE (s3://bucket/prefix, "
        "gs://bucket/prefix, az://account/container/prefix, a local path, a "
        "file:// URL or memory://) on MOUNTPOINT. Returns once the mount is ready.",
        examples=MOUNT_EXAMPLES,
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
    umount = add_command(
        sub,
        "umount",
        help="unmount and wait for the daemon to exit",
        description="Unmount MOUNTPOINT and wait until its daemon has exited. Also cleans up "
        "a mount whose daemon died ('Transport endpoint is not connected').",
        examples="icefs umount /mnt/ice",
    )
    umount.add_argument("mountpoint", metavar="MOUNTPOINT")
    umount.add_argument(
        "--timeout",
        type=_positive,
        default=60.0,
        metavar="SECONDS",
        help="how long to wait for the daemon to exit (default 60)",
    )
    return mount


def _add_branch_commands(sub: Any) -> None:
    """commit, status, discard and stats: each takes a PATH inside a mount."""
    commit = add_command(
        sub,
        "commit",
        help="commit a branch of a mount",
        description="Commit the uncommitted changes of the branch holding PATH (a path inside "
        "<mnt>/branches/<b>). Prints the new snapshot id. Exit code 9 means a "
        "conflict with another writer that could not be rebased; the changes stay.",
        examples="icefs commit /mnt/ice/branches/main -m 'add 2026 data'",
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
    status = add_command(
        sub,
        "status",
        help="show a ref's status",
        description="Show the status of the branch, tag or snapshot holding PATH.",
        examples="icefs status /mnt/ice/branches/main --json",
    )
    status.add_argument("path", metavar="PATH")
    status.add_argument("--json", action="store_true", help="print the JSON document")
    discard = add_command(
        sub,
        "discard",
        help="drop a branch's uncommitted changes",
        description="Drop every uncommitted change of the branch holding PATH "
        "(scratch files stay).",
        examples="icefs discard /mnt/ice/branches/main",
    )
    discard.add_argument("path", metavar="PATH")
    stats = add_command(
        sub,
        "stats",
        help="show a mount's request statistics",
        description="Print .icefs/stats of the mount holding PATH as a table: requests, "
        "latency and errors by operation, bytes, cache, commits.",
        examples="icefs stats /mnt/ice\nicefs stats /mnt/ice --json",
    )
    stats.add_argument("path", metavar="PATH", nargs="?", default=".")
    stats.add_argument("--json", action="store_true", help="print the JSON document")


def _target() -> argparse.ArgumentParser:
    """Options shared by the ref commands: a mount (default) or --repo directly."""
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
    return target


def _add_ref_commands(sub: Any, target: argparse.ArgumentParser) -> None:
    """init, branch and tag."""
    init = add_command(
        sub,
        "init",
        help="create a repository",
        description="Create an Icechunk repository at STORAGE (a local path or file:// URL).",
        examples="icefs init ./repo\nicefs init ./repo --mode open_or_create",
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
        cmd = add_command(
            sub,
            kind,
            help=f"list, create or delete {plural}",
            description=f"Manage {plural} through a mount (default) or with --repo directly.",
            examples=f"icefs {kind} list -C /mnt/ice\n"
            f"icefs {kind} create {example} --from main -C /mnt/ice\n"
            f"icefs {kind} delete {example} --repo ./repo",
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


def _add_history_commands(sub: Any, target: argparse.ArgumentParser) -> None:
    """log and diff."""
    log_cmd = add_command(
        sub,
        "log",
        parents=(target,),
        help="show a ref's history",
        description="Show the history of REF (a branch, tag or snapshot id; default: the "
        "default branch), newest first: id, time, message.",
        examples="icefs log main -C /mnt/ice\nicefs log v1.0 --repo ./repo --json",
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
    diff = add_command(
        sub,
        "diff",
        parents=(target,),
        help="show what changed between two versions",
        description="Show what changed from FROM to TO (branches, tags or snapshot ids): "
        "new, deleted and updated groups and arrays, their changed metadata and "
        "attributes, and the chunks changed per array. With one REF: what its "
        "snapshot changed against its parent; with none: the default branch's tip.",
        examples="icefs diff v1.0 main -C /mnt/ice\n"
        "icefs diff 8NQ2... --repo ./repo --chunks\nicefs diff main --json",
    )
    diff.add_argument("refs", nargs="*", metavar="REF", help="[FROM] TO")
    diff.add_argument("--chunks", action="store_true", help="list the changed chunks' coordinates")


def build_parsers() -> Parsers:
    """Build the ``icefs`` parser with every subcommand."""
    root = argparse.ArgumentParser(
        prog="icefs",
        description="Mount Icechunk repositories as a filesystem: "
        "branches/, tags/ and snapshots/ as directories.",
    )
    root.add_argument("--version", action="version", version=f"icefs {__version__}")
    sub = root.add_subparsers(dest="command", metavar="COMMAND")
    mount = _add_mount(sub)
    _add_branch_commands(sub)
    target = _target()
    _add_ref_commands(sub, target)
    _add_history_commands(sub, target)
    add_upkeep_parsers(sub, add_command)
    add_cache_parser(sub, add_command)
    demo = add_command(
        sub,
        "demo",
        help="build a sample repository and mount it",
        description="Build a small sample repository (temperature(time, lat, lon), two "
        "commits, tag v1.0, branch 'experiment') under DIR and mount it at "
        "DIR/mnt until 'icefs umount DIR/mnt'.",
        examples="icefs demo /tmp/icefs-demo",
    )
    demo.add_argument("directory", nargs="?", default="icefs-demo", metavar="DIR")
    demo.add_argument(
        "--foreground", "-f", action="store_true", help="serve in the foreground until Ctrl-C"
    )
    return Parsers(root, mount)
