"""The ``icefs`` command line: mount, umount, demo.

Every failure is one line on stderr and a documented exit code (README.md,
"Exit codes"); a traceback means a bug.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING

from icefs import __version__
from icefs.errors import ExitCode, QuietError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["main"]

log = logging.getLogger(__name__)

LOG_LEVELS = ("debug", "info", "warning", "error")

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
    from icefs.repo import configure_icechunk_logs

    numeric = getattr(logging, level.upper())
    handler: logging.Handler
    handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
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


def _size(value: str) -> int:
    """Parse a size such as 512M, 2G or 1048576."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = value.strip().upper().removesuffix("B").removesuffix("I")
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "")
    try:
        size = int(float(number) * units[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {value!r}") from None
    if size <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {value!r}")
    return size


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="icefs",
        description="Mount Icechunk repositories as a filesystem: "
                    "branches/, tags/ and snapshots/ as directories.",
    )
    parser.add_argument("--version", action="version", version=f"icefs {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    mount = sub.add_parser(
        "mount", help="mount a repository", epilog=MOUNT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Mount the Icechunk repository at STORAGE (a local path, file:// URL "
                    "or memory://) on MOUNTPOINT. Returns once the mount is ready.")
    mount.add_argument("storage", metavar="STORAGE")
    mount.add_argument("mountpoint", metavar="MOUNTPOINT")
    mount.add_argument("--read-only", action="store_true",
                       help="refuse every write, branches included (EROFS)")
    mount.add_argument("--mode", choices=("open", "create", "open_or_create"), default="open",
                       help="open an existing repository (default), create a new one, or either")
    mount.add_argument("--foreground", "-f", action="store_true",
                       help="stay in the foreground and log to stderr")
    mount.add_argument("-o", dest="options", action="append", default=[], metavar="OPT[,OPT]",
                       help="FUSE options: allow_other, allow_root, default_permissions, ro, "
                            "uid=N, gid=N, auto_unmount, nosuid, nodev, noexec, noatime")
    mount.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    mount.add_argument("--log-file", metavar="FILE",
                       help="log here (default in the background: "
                            "~/.local/state/icefs/<mountpoint>.log)")
    mount.add_argument("--refresh", type=_positive, default=1.0, metavar="SECONDS",
                       help="how fast branch and tag listings follow the repository (default 1)")
    mount.add_argument("--read-ahead", type=int, default=1024, metavar="KiB",
                       help="kernel read-ahead for the mount in KiB (default 1024; needs root, "
                            "0 keeps the kernel's 128)")
    mount.add_argument("--write-buffer", type=_size, default="256M", metavar="SIZE",
                       help="RAM for data being written, for the whole mount; past it, "
                            "write buffers spool to --cache-dir (default 256M)")
    mount.add_argument("--cache-dir", metavar="DIR",
                       help="where write buffers spool (default ~/.cache/icefs; "
                            "cleaned at unmount)")
    mount.add_argument("--on-unmount", choices=("commit", "discard"), default="commit",
                       help="what happens to uncommitted changes at unmount (default commit)")
    mount.add_argument("--commit-interval", type=_positive, metavar="SECONDS",
                       help="also commit branches with changes every SECONDS")
    mount.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)

    umount = sub.add_parser(
        "umount", help="unmount and wait for the daemon to exit",
        description="Unmount MOUNTPOINT and wait until its daemon has exited. Also cleans up "
                    "a mount whose daemon died ('Transport endpoint is not connected').",
        epilog="example:\n  icefs umount /mnt/ice",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    umount.add_argument("mountpoint", metavar="MOUNTPOINT")
    umount.add_argument("--timeout", type=_positive, default=60.0, metavar="SECONDS",
                        help="how long to wait for the daemon to exit (default 60)")

    commit = sub.add_parser(
        "commit", help="commit a branch of a mount",
        description="Commit the uncommitted changes of the branch holding PATH (a path inside "
                    "<mnt>/branches/<b>). Prints the new snapshot id. Exit code 9 means a "
                    "conflict with another writer that could not be rebased; the changes stay.",
        epilog="example:\n  icefs commit /mnt/ice/branches/main -m 'add 2026 data'",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    commit.add_argument("path", metavar="PATH")
    commit.add_argument("-m", "--message", required=True, help="the commit message")
    status = sub.add_parser(
        "status", help="show a ref's status",
        description="Show the status of the branch, tag or snapshot holding PATH.",
        epilog="example:\n  icefs status /mnt/ice/branches/main --json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    status.add_argument("path", metavar="PATH")
    status.add_argument("--json", action="store_true", help="print the JSON document")
    discard = sub.add_parser(
        "discard", help="drop a branch's uncommitted changes",
        description="Drop every uncommitted change of the branch holding PATH "
                    "(scratch files stay).",
        epilog="example:\n  icefs discard /mnt/ice/branches/main",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    discard.add_argument("path", metavar="PATH")

    demo = sub.add_parser(
        "demo", help="build a sample repository and mount it",
        description="Build a small sample repository (temperature(time, lat, lon), two "
                    "commits, tag v1.0, branch 'experiment') under DIR and mount it at "
                    "DIR/mnt until 'icefs umount DIR/mnt'.",
        epilog="example:\n  icefs demo /tmp/icefs-demo",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    demo.add_argument("directory", nargs="?", default="icefs-demo", metavar="DIR")
    demo.add_argument("--foreground", "-f", action="store_true",
                      help="serve in the foreground until Ctrl-C")
    return parser


def _mount(args: argparse.Namespace) -> int:
    from icefs.mount import (
        MountConfig,
        Reporter,
        check_fuse,
        check_mountpoint,
        parse_fuse_options,
        run_daemon,
        start_background,
    )
    from icefs.storage import parse_storage

    storage = parse_storage(args.storage)
    fuse_options, own = parse_fuse_options(args.options)
    try:
        uid = int(own["uid"]) if "uid" in own else os.getuid()
        gid = int(own["gid"]) if "gid" in own else os.getgid()
    except ValueError:
        raise QuietError("uid= and gid= take numbers", ExitCode.USAGE) from None
    read_only = args.read_only or "ro" in own
    if not args.foreground:
        check_fuse()
        mountpoint = check_mountpoint(args.mountpoint)
        if storage.kind == "local" and args.mode == "open" and not os.path.exists(storage.path):
            raise QuietError(f"no repository at {storage.path} (use --mode create or "
                             "open_or_create to make one)", ExitCode.REPOSITORY)
        argv = [args.storage if storage.kind == "memory" else storage.path, mountpoint,
                "--mode", args.mode, "--log-level", args.log_level, "--refresh", str(args.refresh),
                "--read-ahead", str(args.read_ahead), "--write-buffer", str(args.write_buffer),
                "--on-unmount", args.on_unmount]
        if args.cache_dir:
            argv += ["--cache-dir", os.path.abspath(args.cache_dir)]
        if args.commit_interval:
            argv += ["--commit-interval", str(args.commit_interval)]
        if read_only:
            argv.append("--read-only")
        for opt in args.options:
            argv += ["-o", opt]
        start_background(argv, args.log_file or _default_log_file(mountpoint))
        return ExitCode.OK
    _setup_logging(args.log_level, args.log_file)
    config = MountConfig(
        storage=storage, mountpoint=args.mountpoint, mode=args.mode, read_only=read_only,
        refresh=args.refresh, fuse_options=fuse_options, uid=uid, gid=gid,
        log_level=args.log_level, read_ahead_kb=args.read_ahead, write_buffer=args.write_buffer,
        cache_dir=args.cache_dir or "", on_unmount=args.on_unmount,
        commit_interval=args.commit_interval or 0.0,
    )
    return run_daemon(config, Reporter(args.ready_fd))


def _umount(args: argparse.Namespace) -> int:
    from icefs.mount import unmount

    print(unmount(args.mountpoint, timeout=args.timeout))
    return ExitCode.OK


def _commit(args: argparse.Namespace) -> int:
    from icefs.client import commit, read_status

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

    from icefs.client import read_status

    doc = read_status(args.path)
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
        return ExitCode.OK
    print(f"{doc['kind']} {doc['ref']} at {doc['snapshot_id']}"
          + (" (read-only)" if doc.get("read_only") else ""))
    if doc.get("has_uncommitted_changes"):
        print(f"uncommitted: {doc['changed_nodes']} nodes, {doc['changed_chunks']} chunks")
        for path in doc.get("changed_paths", []):
            print(f"  {path}")
    else:
        print("no uncommitted changes")
    for label, key in (("scratch files (never committed)", "scratch_files"),
                       ("files being written", "files_being_written"),
                       ("empty directories", "empty_directories")):
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
    from icefs.client import discard

    doc = discard(args.path)
    print(f"discarded uncommitted changes of {doc.get('ref')}")
    return ExitCode.OK


def _demo(args: argparse.Namespace) -> int:
    from icefs.demo import run_demo

    return run_demo(args.directory, foreground=args.foreground)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the icefs command line with *argv* (default: sys.argv[1:]); return the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return ExitCode.USAGE
    commands = {"mount": _mount, "umount": _umount, "demo": _demo, "commit": _commit,
                "status": _status, "discard": _discard}
    try:
        return commands[args.command](args)
    except QuietError as err:
        print(f"icefs {args.command}: {err.message}", file=sys.stderr)
        return err.exitcode
    except KeyboardInterrupt:
        return 130
