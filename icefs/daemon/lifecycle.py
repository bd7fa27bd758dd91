"""The daemon's lifecycle: checks, start-up, readiness, serving, signals, shutdown.

``icefs mount`` without ``--foreground`` re-executes itself in the foreground
in a new session, with the write end of a pipe (``--ready-fd``).  The daemon
writes one line there: ``ready`` once the mount answers a request through the
kernel, or ``error <exitcode> <message>`` if it cannot start; the invoking
command prints the message and exits with that code.  Re-executing (instead of
forking) keeps Icechunk's runtime threads out of the child.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import trio

from icefs.daemon.systemd import notify
from icefs.errors import (
    SETUP_ERRORS,
    FuseUnavailable,
    MountpointError,
    NotMounted,
    SetupError,
    StorageUnreachable,
    Timeout,
    UsageError,
)
from icefs.settings import SETTINGS

if TYPE_CHECKING:
    from collections.abc import Callable

    from icefs.fs.core import IcefsCore
    from icefs.storage import StorageSpec

__all__ = [
    "MountConfig",
    "check_fuse",
    "check_mountpoint",
    "parse_fuse_options",
    "run_daemon",
    "start_background",
    "unmount",
]

log = logging.getLogger(__name__)

#: Seconds `icefs mount` waits for the daemon to report that the mount is ready.
READY_TIMEOUT: Final = 120.0
#: FUSE options passed to the kernel as given.
PASSED_OPTIONS: Final = frozenset(
    {
        "allow_other",
        "allow_root",
        "auto_unmount",
        "default_permissions",
        "nosuid",
        "suid",
        "nodev",
        "dev",
        "noexec",
        "exec",
        "noatime",
        "atime",
        "relatime",
    }
)
#: FUSE options icefs reads itself.
OWN_OPTIONS: Final = frozenset({"ro", "rw", "noxattr"})
#: Options mount(8) and systemd pass that mean nothing to the daemon.
IGNORED_OPTIONS: Final = frozenset(
    {"_netdev", "nofail", "noauto", "auto", "user", "users", "nouser", "defaults"}
)


@dataclass(frozen=True, slots=True)
class MountConfig:
    """Everything `run_daemon` needs, validated by the CLI."""

    storage: StorageSpec
    mountpoint: str
    mode: str = "open"
    read_only: bool = False
    refresh: float = SETTINGS["refresh"].default
    fuse_options: tuple[str, ...] = ()
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)
    log_level: str = SETTINGS["log_level"].default
    max_tasks: int = 64
    read_ahead_kb: int = SETTINGS["read_ahead"].default
    write_buffer: int = SETTINGS["write_buffer"].default
    cache_dir: str = ""
    on_unmount: str = SETTINGS["on_unmount"].default
    commit_interval: float = 0.0
    #: how often uncommitted sessions go to the crash journal; 0 = no journal
    journal_interval: float = SETTINGS["journal_interval"].default
    default_branch: str = SETTINGS["default_branch"].default
    #: "decode": each compressed chunk is decoded before it is stored
    verify_chunks: str = SETTINGS["verify_chunks"].default
    #: False (``-o noxattr``): no extended attributes at all, for fast `ls -l` of huge trees
    xattrs: bool = True
    #: The --config file, re-read on SIGHUP for what can change while mounted.
    config_file: str = ""


def parse_fuse_options(values: list[str]) -> tuple[tuple[str, ...], dict[str, str]]:
    """Split ``-o`` *values* into options for the kernel and options icefs reads itself.

    Raises `UsageError` for an option icefs does not know.
    """
    passed: list[str] = []
    own: dict[str, str] = {}
    for value in values:
        for item in filter(None, (v.strip() for v in value.split(","))):
            name, _, arg = item.partition("=")
            if name in PASSED_OPTIONS and not arg:
                passed.append(name)
            elif name in OWN_OPTIONS:
                own[name] = arg
            elif name in IGNORED_OPTIONS or name.startswith(("x-systemd.", "x-")):
                continue
            else:
                raise UsageError(f"unknown mount option {item!r}")
    return tuple(dict.fromkeys(passed)), own


def check_fuse() -> None:
    """Raise `FuseUnavailable` when this machine cannot mount FUSE filesystems."""
    if not os.path.exists("/dev/fuse"):
        raise FuseUnavailable("FUSE is not available: /dev/fuse is missing (modprobe fuse?)")
    if shutil.which("fusermount3") is None:
        raise FuseUnavailable("FUSE is not available: fusermount3 not found (install fuse3)")


def _lazy_unmount(path: str) -> bool:
    result = subprocess.run(
        ["fusermount3", "-u", "-z", path], capture_output=True, text=True, check=False
    )
    return result.returncode == 0


def check_mountpoint(path: str) -> str:
    """Return the absolute *path* if a filesystem can be mounted there.

    A mount whose daemon died ("Transport endpoint is not connected") is cleaned
    up.  Raises `MountpointError` if the path is missing, not a directory
    or already mounted.
    """
    path = os.path.abspath(path)
    _probe_or_clean(path, MountpointError(f"mountpoint {path} does not exist"))
    if not os.path.isdir(path):
        raise MountpointError(f"mountpoint {path} is not a directory")
    if os.path.ismount(path):
        raise MountpointError(f"mountpoint {path} is already mounted")
    return path


def _probe_or_clean(path: str, missing: SetupError) -> bool:
    """Check that *path* can be used, removing a dead mount there; True if one was removed.

    Raises *missing* if the path does not exist, and `MountpointError`
    for any other failure.
    """
    try:
        _probe(path)
    except FileNotFoundError:
        raise missing from None
    except OSError as exc:
        if exc.errno != errno.ENOTCONN:
            raise MountpointError(f"{path}: {exc.strerror}") from None
        log.warning("cleaning up the dead mount at %s", path)
        if not _lazy_unmount(path):
            raise MountpointError(f"{path} holds a dead mount that cannot be removed") from None
        return True
    return False


def _probe(path: str) -> None:
    """Raise the OSError that using *path* gives (ENOTCONN for a dead FUSE mount).

    stat() alone can be answered from the kernel's attribute cache even when the
    daemon is gone; statfs() always reaches the filesystem.
    """
    os.stat(path)
    os.statvfs(path)


# -- background start ---------------------------------------------------------------------------


def start_background(
    argv: list[str],
    log_file: str,
    timeout: float = READY_TIMEOUT,
    env: dict[str, str] | None = None,
) -> None:
    """Start ``icefs mount --foreground`` with *argv* detached; return once the mount is ready.

    Raises the daemon's own `SetupError` (its class and message) if it fails.
    """
    read_fd, write_fd = os.pipe()
    os.makedirs(os.path.dirname(log_file) or ".", exist_ok=True)
    with open(log_file, "ab") as log_out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "icefs",
                "mount",
                "--foreground",
                "--ready-fd",
                str(write_fd),
                "--log-file",
                log_file,
                *argv,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_out,
            stderr=log_out,
            pass_fds=(write_fd,),
            start_new_session=True,
            close_fds=True,
            env={**os.environ, **(env or {})},
        )
    os.close(write_fd)
    try:
        line = _read_line(read_fd, timeout)
    finally:
        os.close(read_fd)
    if line == "ready":
        return
    if line.startswith("error "):
        _, kind, message = line.split(" ", 2)
        raise SETUP_ERRORS.get(kind, SetupError)(message)
    if not line:
        if proc.poll() is None:
            proc.terminate()
            raise Timeout(f"the daemon did not report ready within {timeout:g} s (see {log_file})")
        raise SetupError(f"the daemon exited during start-up (see {log_file})")
    raise SetupError(f"unexpected start-up report {line!r}")


def _read_line(fd: int, timeout: float) -> str:
    import select

    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()


class Reporter:
    """Tells whoever started the daemon how start-up went, once (no-op without a pipe)."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def _send(self, line: str) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.write(self._fd, (line + "\n").encode())
            os.close(self._fd)
        self._fd = None

    def ready(self) -> None:
        self._send("ready")

    def error(self, err: SetupError) -> None:
        self._send(f"error {type(err).__name__} {err.message}")


# -- the daemon -----------------------------------------------------------------------------------


def run_daemon(config: MountConfig, reporter: Reporter) -> bool:
    """Open the repository, mount, serve until unmounted or signalled.

    Returns whether every branch was committed (or discarded) at unmount as asked;
    raises a `SetupError` if nothing could be mounted.
    """
    import pyfuse3

    from icefs.fs.core import IcefsCore, MountOptions
    from icefs.fuse.ops import FuseOperations
    from icefs.store.bridge import Bridge
    from icefs.store.open import configure_icechunk_logs, make_storage, open_repository, ref_lock
    from icefs.store.repo import Repo

    try:
        check_fuse()
        mountpoint = check_mountpoint(config.mountpoint)
        repository = open_repository(config.storage, config.mode)
    except SetupError as err:
        reporter.error(err)
        notify(f"STATUS=failed: {err.message}")
        raise
    # Icechunk states what it warns about a storage (local disk: concurrent commits) when
    # the storage is made: made again now that the start cannot fail on it, each warning
    # reaches the log once, without adding to the one line a failed start prints.
    configure_icechunk_logs(getattr(logging, config.log_level.upper()), routed=True)
    make_storage(config.storage)
    bridge = Bridge()
    repo = Repo(repository, bridge, config.storage.display(), ref_lock(config.storage))
    core = IcefsCore(
        repo,
        MountOptions(
            read_only=config.read_only,
            refresh=config.refresh,
            uid=config.uid,
            gid=config.gid,
            mountpoint=mountpoint,
            storage=config.storage.display(),
            write_buffer=config.write_buffer,
            cache_dir=config.cache_dir,
            default_branch=config.default_branch,
            journal=config.journal_interval > 0 and config.storage.kind != "memory",
            verify_chunks=config.verify_chunks,
        ),
    )
    options = {
        f"fsname=icefs#{config.storage.display()}"[:200],
        "subtype=icefs",
        "default_permissions",
        *config.fuse_options,
    }
    if config.read_only:
        options.add("ro")
    ops = FuseOperations(core, xattrs=config.xattrs)
    state = _State()
    try:
        trio.run(_serve, core, ops, mountpoint, options, config, reporter, state)
    except SetupError as err:
        reporter.error(err)
        raise
    finally:
        if state.initialized:
            # Unmount only on a clean exit: after a crash the mountpoint must not
            # suddenly look empty to a program (rsync --delete) still using it.
            pyfuse3.close(unmount=state.clean)
        core.close()
        bridge.close()
    log.info("unmounted %s", mountpoint)
    if core.unmount_failures:
        log.error("not committed at unmount: %s", ", ".join(core.unmount_failures))
        return False
    return True


def _tune_gc() -> None:
    """Make Python's cycle collector rare: it cost 40% of the daemon's time in `find`.

    Listings, nodes and entries are many small objects that are not cycles; with the
    default thresholds each big listing set off collections that walked the whole
    heap (the inode table, cached trees). Objects alive at start-up are frozen out
    of collection; younger ones are looked at every 50k allocations instead of 700.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


@dataclass(slots=True)
class _State:
    initialized: bool = False
    clean: bool = False


async def _serve(
    core: IcefsCore,
    ops: object,
    mountpoint: str,
    options: set[str],
    config: MountConfig,
    reporter: Reporter,
    state: _State,
) -> None:
    import pyfuse3

    from icefs.store.reader import direct_probe

    if os.environ.get("ICEFS_DIRECT_CALLS", "1") != "0":  # "0": the escape hatch (README)
        await core.repo.bridge.enable_direct(direct_probe)
    log.info("Icechunk calls: %s", "direct" if core.repo.bridge.direct else "loop thread")
    try:
        await core.refresh_refs()
    except Exception as exc:
        raise StorageUnreachable(f"cannot read refs of {config.storage.display()}: {exc}") from None
    try:
        pyfuse3.init(ops, mountpoint, options)  # type: ignore[arg-type]
    except RuntimeError as exc:
        raise FuseUnavailable(f"cannot mount at {mountpoint}: {exc}") from None
    if not config.read_only:
        await core.recover_journal()
    state.initialized = True
    _tune_gc()
    log.info(
        "mounted %s at %s (%d branches, %d tags)",
        config.storage.display(),
        mountpoint,
        len(core.branches),
        len(core.tags),
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(core.run_refresher)
        nursery.start_soon(core.prefetcher.run)
        nursery.start_soon(_handle_signals, core, config)
        nursery.start_soon(_announce_ready, mountpoint, reporter, config)
        if config.commit_interval > 0:
            nursery.start_soon(_commit_every, core, config.commit_interval)
        if core.journal.enabled:
            nursery.start_soon(_journal_every, core, config.journal_interval)
        await pyfuse3.main(max_tasks=config.max_tasks)
        nursery.cancel_scope.cancel()
    # Commit point: every branch with uncommitted changes, before the daemon exits.
    dirty = sum(1 for state in core.branch_states.values() if state.dirty)
    notify(f"STOPPING=1\nSTATUS=unmounting: {config.on_unmount} {dirty} dirty branch(es)")
    committed = await core.shutdown(config.on_unmount)
    for branch, sid in committed.items():
        log.info("committed branch %s at unmount: %s", branch, sid)
    state.clean = True


async def _journal_every(core: IcefsCore, seconds: float) -> None:
    while True:
        await trio.sleep(seconds)
        await core.save_journals()


async def _commit_every(core: IcefsCore, seconds: float) -> None:
    while True:
        await trio.sleep(seconds)
        await core.commit_dirty(f"icefs: periodic commit ({seconds:g} s)")


async def _handle_signals(core: IcefsCore, config: MountConfig) -> None:
    import pyfuse3

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                _reload(core, config)
                continue
            log.info("%s: unmounting", signal.Signals(signum).name)
            notify("STOPPING=1\nSTATUS=stopping: committing, then unmounting")
            pyfuse3.terminate()
            return


def _reload(core: IcefsCore, config: MountConfig) -> None:
    """SIGHUP: re-read the config file's log_level and refresh; the rest needs a remount."""
    import dataclasses

    from icefs.config import load_config
    from icefs.store.open import configure_icechunk_logs

    if not config.config_file:
        log.info("SIGHUP: no --config file to reload")
        return
    try:
        fresh = load_config(config.config_file)
    except UsageError as err:
        log.error("SIGHUP: %s; keeping the current settings", err.message)
        return
    if "log_level" in fresh:
        level = getattr(logging, str(fresh["log_level"]).upper(), None)
        if isinstance(level, int):
            logging.getLogger().setLevel(level)
            configure_icechunk_logs(level, routed=True)
    if "refresh" in fresh and fresh["refresh"] > 0:
        core.options = dataclasses.replace(core.options, refresh=float(fresh["refresh"]))
    log.info(
        "SIGHUP: reloaded log_level=%s refresh=%s from %s",
        logging.getLevelName(logging.getLogger().level),
        core.options.refresh,
        config.config_file,
    )


async def _announce_ready(mountpoint: str, reporter: Reporter, config: MountConfig) -> None:
    """Report ready once a request through the kernel has been answered."""
    import pyfuse3

    try:
        await trio.to_thread.run_sync(os.stat, os.path.join(mountpoint, "branches"))
    except OSError as exc:
        log.error("the mount does not answer: %s", exc)
        reporter.error(
            FuseUnavailable(f"the mount at {mountpoint} does not answer: {exc.strerror}")
        )
        pyfuse3.terminate()
        return
    _tune_read_ahead(mountpoint, config.read_ahead_kb)
    log.info("ready")
    reporter.ready()
    notify(f"READY=1\nSTATUS=mounted {config.storage.display()} at {mountpoint}")


def _tune_read_ahead(mountpoint: str, kb: int) -> None:
    """Let the kernel read ahead *kb* KiB (FUSE mounts start at 128): fewer, larger reads.

    Needs write access to /sys/class/bdi (root); otherwise the kernel default stays.
    """
    if kb <= 0:
        return
    dev = os.stat(mountpoint).st_dev
    path = f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb"
    try:
        with open(path, "w") as f:
            f.write(f"{kb}\n")
    except OSError as exc:
        log.debug("cannot set %s: %s (kernel default read-ahead stays)", path, exc)
    else:
        log.debug("read-ahead set to %d KiB", kb)


# -- unmount --------------------------------------------------------------------------------------


def _process_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True


def unmount(
    mountpoint: str,
    timeout: float = 60.0,
    wait: Callable[[float], None] = time.sleep,
) -> tuple[str, list[str]]:
    """Unmount the icefs mount at *mountpoint* and wait for its daemon to exit.

    Cleans up a dead mount.  Returns what was done and warnings about what the
    unmount dropped (scratch files, pending chunks); raises a `SetupError`.
    """
    path = os.path.abspath(mountpoint)
    if _probe_or_clean(path, NotMounted(f"{path} does not exist")):
        return f"cleaned up the dead mount at {path}", []
    if not os.path.ismount(path):
        raise NotMounted(f"{path} is not mounted")
    pid: int | None = None
    try:
        with open(os.path.join(path, ".icefs", "pid")) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        raise NotMounted(f"{path} is not an icefs mount") from None
    dropped = _dropped_at_unmount(path)
    result = subprocess.run(
        ["fusermount3", "-u", path], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        reason = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"
        raise MountpointError(f"cannot unmount {path}: {reason}")
    deadline = time.monotonic() + timeout
    while not _process_gone(pid):
        if time.monotonic() > deadline:
            raise Timeout(f"unmounted {path}, but daemon {pid} is still running")
        wait(0.05)
    return f"unmounted {path}", dropped


def _dropped_at_unmount(path: str) -> list[str]:
    """Warnings naming the scratch files and pending chunks the unmount of *path* drops."""
    from icefs.fs.branch import describe_leftovers

    try:
        with open(os.path.join(path, ".icefs", "status")) as f:
            leftovers = json.load(f).get("dropped_at_unmount") or {}
    except (OSError, ValueError):
        return []
    return [
        f"warning: branches/{branch}: dropped, never committed: {describe_leftovers(files)}"
        for branch, files in sorted(leftovers.items())
    ]
