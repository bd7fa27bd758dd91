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
                "--read-ahead", str(args.read_ahead)]
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
        log_level=args.log_level, read_ahead_kb=args.read_ahead,
    )
    return run_daemon(config, Reporter(args.ready_fd))


def _umount(args: argparse.Namespace) -> int:
    from icefs.mount import unmount

    print(unmount(args.mountpoint, timeout=args.timeout))
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
    commands = {"mount": _mount, "umount": _umount, "demo": _demo}
    try:
        return commands[args.command](args)
    except QuietError as err:
        print(f"icefs {args.command}: {err.message}", file=sys.stderr)
        return err.exitcode
    except KeyboardInterrupt:
        return 130
