"""The ``icefs`` command line: mount, umount, demo.

Every failure is one line on stderr and a documented exit code (README.md,
"Exit codes"); a traceback means a bug.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from icefs import __version__
from icefs.cli.exits import ExitCode, QuietError, exit_code
from icefs.cli.storage import (
    add_storage_options,
    install_redaction,
    redact_message,
    spec_to_env,
    storage_from_args,
)
from icefs.errors import InvalidInput, SetupError, UsageError
from icefs.settings import SETTINGS, add_arguments, defaults, from_options, to_argv

if TYPE_CHECKING:
    from collections.abc import Sequence

    from icefs.cli.refs import RefBackend

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


def _setup_logging(level: str, log_file: str | None) -> None:
    """Log at *level* to *log_file* or stderr; Icechunk's own lines join the same log."""
    from icefs.daemon.systemd import JournalFormatter, under_journal
    from icefs.store.open import configure_icechunk_logs
    from icefs.store.rustlog import route_stderr

    numeric = getattr(logging, level.upper())
    journal = not log_file and under_journal()
    stream = route_stderr()
    sys.stderr = stream  # Python's own messages skip the pipe: only Icechunk's go through it
    handler: logging.Handler
    handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(stream)
    if journal:
        handler.setFormatter(JournalFormatter())  # journald adds time, unit and pid itself
    else:
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"
            )
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # errors only until the repository is open (`run_daemon`): a failed start is one line
    configure_icechunk_logs(numeric)


def _default_log_file(mountpoint: str) -> str:
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    name = os.path.abspath(mountpoint).strip("/").replace("/", "_") or "root"
    return os.path.join(state, "icefs", f"{name}.log")


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {value!r}")
    return number


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
        "--repo", metavar="STORAGE", help="work on this repository directly (a path or file:// URL)"
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


def _settings(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Return (settings, those given on the command line, the config file's) of *args*.

    Precedence: options and ``-o name=value`` on the command line, then the
    ``--config`` file (its keys, then ``name=value`` items of its ``options``),
    then the built-in defaults (`icefs.settings`).
    """
    from icefs.config import load_config

    try:
        given, fuse = from_options(
            o.strip() for v in args.options for o in v.split(",") if o.strip()
        )
    except InvalidInput as exc:
        raise UsageError(f"-o: {exc}") from None
    cli = {
        name: value
        for name in SETTINGS
        if (value := given.get(name, getattr(args, name, None))) is not None
    }
    config_path = cli.get("config")
    config = load_config(config_path) if config_path else {}
    try:
        from_file, fuse_from_file = from_options(config.get("options", []))
    except InvalidInput as exc:
        raise UsageError(f"config file {config_path}: options: {exc}") from None
    values = defaults()
    values.update({k: v for k, v in {**from_file, **config}.items() if k in SETTINGS})
    values.update(cli)
    values["options"] = [*fuse_from_file, *fuse]
    if values["storage"] is None or values["mountpoint"] is None:
        raise QuietError(
            "STORAGE and MOUNTPOINT are needed (arguments or --config)", ExitCode.USAGE
        )
    return values, cli, config


def _mount(args: argparse.Namespace) -> int:
    from icefs.daemon import (
        MountConfig,
        Reporter,
        check_fuse,
        check_mountpoint,
        parse_fuse_options,
        run_daemon,
        start_background,
    )

    values, cli, config_values = _settings(args)
    options = values["options"]
    storage = storage_from_args(values["storage"], cli, config_values)
    fuse_options, own = parse_fuse_options(options)
    read_only = bool(values["read_only"]) or "ro" in own
    uid = values["uid"] if values["uid"] is not None else os.getuid()
    gid = values["gid"] if values["gid"] is not None else os.getgid()
    if not values["foreground"]:
        check_fuse()
        mountpoint = check_mountpoint(values["mountpoint"])
        if (
            storage.kind == "local"
            and values["mode"] == "open"
            and not os.path.exists(storage.path)
        ):
            raise QuietError(
                f"no repository at {storage.path} (use --mode create or "
                "open_or_create to make one)",
                ExitCode.REPOSITORY,
            )
        daemon = dict(values, read_only=read_only)
        for key in ("config", "cache_dir"):  # the daemon runs elsewhere: absolute paths
            if daemon[key]:
                daemon[key] = os.path.abspath(daemon[key])
        argv = [
            storage.path if storage.kind == "local" else storage.display(),
            mountpoint,
            *to_argv(daemon),
        ]
        for opt in options:
            argv += ["-o", opt]
        start_background(
            argv, values["log_file"] or _default_log_file(mountpoint), env=spec_to_env(storage)
        )
        return ExitCode.OK
    _setup_logging(values["log_level"], values["log_file"])
    install_redaction(storage.secrets)
    config = MountConfig(
        storage=storage,
        mountpoint=values["mountpoint"],
        mode=values["mode"],
        read_only=read_only,
        refresh=values["refresh"],
        fuse_options=fuse_options,
        uid=uid,
        gid=gid,
        log_level=values["log_level"],
        read_ahead_kb=values["read_ahead"],
        write_buffer=values["write_buffer"],
        default_branch=values["default_branch"],
        xattrs="noxattr" not in own,
        cache_dir=values["cache_dir"] or "",
        on_unmount=values["on_unmount"],
        commit_interval=values["commit_interval"] or 0.0,
        journal_interval=values["journal_interval"],
        verify_chunks=values["verify_chunks"],
        config_file=os.path.abspath(values["config"]) if values["config"] else "",
    )
    return ExitCode.OK if run_daemon(config, Reporter(values["ready_fd"])) else ExitCode.CONFLICT


def _umount(args: argparse.Namespace) -> int:
    from icefs.daemon import unmount

    done, warnings = unmount(args.mountpoint, timeout=args.timeout)
    for warning in warnings:
        print(f"icefs umount: {warning}", file=sys.stderr)
    print(done)
    return ExitCode.OK


def _commit(args: argparse.Namespace) -> int:
    from icefs.cli.client import commit, read_status

    before = read_status(args.path).get("last_commit")
    doc = commit(args.path, args.message)
    after = doc.get("last_commit")
    if after and after != before:
        print(after["snapshot_id"])
    else:
        print(f"nothing to commit on {doc.get('ref')}")
    return ExitCode.OK


def _status(args: argparse.Namespace) -> int:
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


def _discard(args: argparse.Namespace) -> int:
    from icefs.cli.client import discard

    doc = discard(args.path)
    print(f"discarded uncommitted changes of {doc.get('ref')}")
    return ExitCode.OK


def _init(args: argparse.Namespace) -> int:
    from icefs.store.open import open_repository

    spec = storage_from_args(args.storage, args)
    if spec.kind == "memory":
        raise QuietError("memory:// repositories exist only inside a mount", ExitCode.USAGE)
    open_repository(spec, args.mode)
    print(f"repository ready at {spec.display()}")
    return ExitCode.OK


def _refs(args: argparse.Namespace) -> RefBackend:
    from icefs.cli.refs import MountRefs, RepoRefs

    if args.repo:
        return RepoRefs(storage_from_args(args.repo, args), args.default_branch)
    return MountRefs(args.mount)


def _print_refs(refs: dict[str, str], as_json: bool) -> None:
    if as_json:
        print(json.dumps([{"name": n, "snapshot_id": s} for n, s in refs.items()], indent=2))
        return
    width = max((len(n) for n in refs), default=0)
    for name, sid in refs.items():
        print(f"{name:<{width}}  {sid}")


def _ref_command(args: argparse.Namespace) -> int:
    refs = _refs(args)
    kind = args.command
    if args.action == "list":
        _print_refs(refs.branches() if kind == "branch" else refs.tags(), args.json)
        return ExitCode.OK
    if args.action == "create":
        create = refs.create_branch if kind == "branch" else refs.create_tag
        sid = create(args.name, args.source)
        if args.json:
            print(json.dumps({"name": args.name, "snapshot_id": sid}))
        else:
            print(f"{kind} {args.name} created at {sid}")
        return ExitCode.OK
    (refs.delete_branch if kind == "branch" else refs.delete_tag)(args.name)
    if args.json:
        print(json.dumps({"deleted": args.name}))
    else:
        print(f"{kind} {args.name} deleted")
    return ExitCode.OK


def _log(args: argparse.Namespace) -> int:
    history = _refs(args).log(args.ref)
    if args.json:
        print(json.dumps(history, indent=2))
    else:
        for entry in history:
            print(f"{entry['id']}  {entry['time']}  {entry['message']}")
    return ExitCode.OK


def _stats(args: argparse.Namespace) -> int:
    from icefs.cli.refs import MountRefs

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
        f"pending (not yet stored) {doc['pending_bytes']}"
    )
    print(f"tree cache hits {doc['cache']['hits']}, misses {doc['cache']['misses']}")
    ahead = doc["prefetch"]
    print(
        f"prefetched chunks read {ahead['hits']}, fetched at open "
        f"{ahead['started_at_open']}, dropped unread {ahead['unused']}, "
        f"shared by readers {ahead['joined']}, held {ahead['held_bytes']} bytes"
    )
    print(
        f"commits {commits['count']} (failed {commits['failed']}), mean "
        f"{commits['mean_ms']} ms, max {commits['max_ms']} ms; up {doc['uptime_seconds']} s"
    )
    return ExitCode.OK


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
        "mount": _mount,
        "umount": _umount,
        "demo": _demo,
        "commit": _commit,
        "status": _status,
        "discard": _discard,
        "init": _init,
        "branch": _ref_command,
        "tag": _ref_command,
        "log": _log,
        "stats": _stats,
    }
    if args.command in ("init", "branch", "tag", "log", "demo"):
        from icefs.store.open import configure_icechunk_logs

        configure_icechunk_logs(logging.WARNING)  # errors only: the command reports failures
    try:
        return commands[args.command](args)
    except (QuietError, SetupError) as err:
        print(f"icefs {args.command}: {redact_message(err.message)}", file=sys.stderr)
        return exit_code(err)
    except KeyboardInterrupt:
        return 130
