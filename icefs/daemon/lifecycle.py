"""The daemon's lifecycle: start-up, serving, signals, periodic jobs, shutdown.

`run_daemon` opens the repository, builds the `Filesystem`, mounts it and
serves until unmounted or signalled.  Then every branch with uncommitted
changes is committed (or discarded, as asked) before the daemon exits, and the
mountpoint is unmounted only after a clean exit: after a crash it must not
suddenly look empty to a program still using it.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Final

import trio

from icefs.daemon.mountpoint import check_fuse, check_mountpoint, source_name
from icefs.daemon.systemd import notify
from icefs.errors import (
    FuseUnavailable,
    IcefsError,
    SetupError,
    StorageUnreachable,
    UsageError,
)
from icefs.fuse import fallocate  # at import, before run_daemon imports pyfuse3 (it says why)
from icefs.settings import WriteBehind, pick, setting_field

if TYPE_CHECKING:
    from icefs.cache import ReadCache
    from icefs.daemon.background import Reporter
    from icefs.fs.filesystem import Filesystem
    from icefs.storage import StorageSpec

__all__ = ["MountConfig", "run_daemon"]

log = logging.getLogger(__name__)

#: Requests the daemon serves at once.
MAX_TASKS: Final = 64


@dataclass(frozen=True, slots=True)
class MountConfig:
    """Everything `run_daemon` needs, validated by the CLI.

    Fields named like a setting hold that setting (`icefs.settings.pick` fills them);
    the others are derived from several settings and the FUSE options.
    """

    storage: StorageSpec
    mountpoint: str
    mode: str = setting_field("mode")
    read_only: bool = setting_field("read_only")
    refresh: float = setting_field("refresh")
    fuse_options: tuple[str, ...] = ()
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)
    log_level: str = setting_field("log_level")
    #: KiB the kernel reads ahead in a file of this mount
    read_ahead: int = setting_field("read_ahead")
    write_buffer: int = setting_field("write_buffer")
    read_ahead_memory: int = setting_field("read_ahead_memory")
    metadata_memory: int = setting_field("metadata_memory")
    request_timeout: float = setting_field("request_timeout")
    commit_timeout: float = setting_field("commit_timeout")
    #: HOST:PORT of the Prometheus endpoint ("": none)
    metrics: str = ""
    metrics_branches: bool = setting_field("metrics_branches")
    write_behind: WriteBehind = setting_field("write_behind")
    cache_dir: str = ""
    #: bytes of the persistent read cache; None: the default for the cache's disk; 0: off
    read_cache_size: int | None = setting_field("read_cache_size")
    on_unmount: str = setting_field("on_unmount")
    commit_interval: float = 0.0
    #: how often uncommitted sessions go to the crash journal; 0 = no journal
    journal_interval: float = setting_field("journal_interval")
    default_branch: str = setting_field("default_branch")
    #: "decode": each compressed chunk is decoded before it is stored
    verify_chunks: str = setting_field("verify_chunks")
    #: False (``-o noxattr``): no extended attributes at all, for fast `ls -l` of huge trees
    xattrs: bool = True
    #: ``--virtual`` items: the virtual chunk containers authorized
    virtual: tuple[str, ...] = setting_field("virtual")
    allow_other_file_access: bool = setting_field("allow_other_file_access")
    #: The --config file, re-read on SIGHUP for what can change while mounted.
    config_file: str = ""


def run_daemon(config: MountConfig, reporter: Reporter) -> bool:
    """Open the repository, mount, serve until unmounted or signalled.

    Returns whether every branch was committed (or discarded) at unmount as asked;
    raises a `SetupError` if nothing could be mounted.
    """
    import pyfuse3

    from icefs.daemon.journal import Journal
    from icefs.fs import Filesystem, MountOptions, default_cache_dir
    from icefs.fuse.kernel import KernelCaches
    from icefs.fuse.ops import FuseOperations
    from icefs.store import Bridge, Repo, virtual
    from icefs.store.open import configure_icechunk_logs, make_storage, open_repository, ref_lock

    try:
        check_fuse()
        mountpoint = check_mountpoint(config.mountpoint)
        grants = virtual.parse_grants(config.virtual)
        virtual.check_allow_other(
            grants, "allow_other" in config.fuse_options, config.allow_other_file_access
        )
        repository = open_repository(
            config.storage, config.mode, virtual.authorization(grants) or None
        )
        containers = virtual.containers(repository, grants)
    except SetupError as err:
        reporter.error(err)
        notify(f"STATUS=failed: {err.message}")
        raise
    # Icechunk states what it warns about a storage (local disk: concurrent commits) when
    # the storage is made: made again now that the start cannot fail on it, each warning
    # reaches the log once, without adding to the one line a failed start prints.
    configure_icechunk_logs(getattr(logging, config.log_level.upper()), routed=True)
    make_storage(config.storage)
    for c in containers:
        log.info(
            "virtual chunk container %s (named %s, %s): %s",
            c["prefix"],
            c["name"],
            c["store"],
            f"authorized ({c['access']})" if c["authorized"] else "not authorized (--virtual)",
        )
    bridge = Bridge(deadline=config.request_timeout)
    cache_dir = config.cache_dir or default_cache_dir()
    repo = Repo(
        repository,
        bridge,
        config.storage.display(),
        ref_lock(config.storage),
        open_read_cache(config, cache_dir),
    )
    keeps_journal = config.journal_interval > 0 and config.storage.kind != "memory"
    # one journal per repository *and* mountpoint: two live mounts of a repository
    # must not overwrite (or later restore) each other's sessions
    journal = Journal(
        cache_dir if keeps_journal else "", f"{config.storage.display()} at {mountpoint}"
    )
    filesystem = Filesystem.build(
        repo,
        pick(
            MountOptions,
            {f.name: getattr(config, f.name) for f in fields(config)},
            mountpoint=mountpoint,
            storage=config.storage.display(),
            remote=config.storage.remote,
            cache_dir=cache_dir,
            virtual_containers=tuple(containers),
        ),
        journal=journal,
        kernel=KernelCaches(),
    )
    options = {
        f"fsname={source_name(config.storage.display())}",
        "subtype=icefs",
        "default_permissions",
        *config.fuse_options,
    }
    if config.read_only:
        options.add("ro")
    ops = FuseOperations(filesystem.core, xattrs=config.xattrs)
    state = _State()
    try:
        trio.run(_serve, filesystem, ops, mountpoint, options, config, reporter, state, bridge)
    except SetupError as err:
        reporter.error(err)
        raise
    finally:
        if state.initialized:
            # Unmount only on a clean exit: after a crash the mountpoint must not
            # suddenly look empty to a program (rsync --delete) still using it.
            pyfuse3.close(unmount=state.clean)
        filesystem.close()
        bridge.close()
    log.info("unmounted %s", mountpoint)
    if filesystem.unmount_failures:
        log.error("not committed at unmount: %s", ", ".join(filesystem.unmount_failures))
        return False
    return True


def open_read_cache(config: MountConfig, cache_dir: str) -> ReadCache | None:
    """The persistent read cache of *config*'s repository in *cache_dir*, or None where
    it is off: asked to be, or a repository on local disk or in memory, where reading
    again costs what reading the cache would."""
    from icefs.cache import EntryStore, ReadCache, default_size

    directory = os.path.join(cache_dir, "read")
    size = config.read_cache_size
    if size is None:
        size = default_size(directory)
    if not config.storage.remote or size == 0:
        log.info("read cache: off (%s)", "asked" if size == 0 else "not object storage")
        return None
    try:
        entries = EntryStore(directory, size)
    except OSError as exc:
        log.warning("read cache: off: %s: %s", directory, os.strerror(exc.errno or 0))
        return None
    log.info("read cache: %s, at most %d MiB", directory, size >> 20)
    return ReadCache(entries, config.storage.identity())


def _tune_gc() -> None:
    """Make Python's cycle collector rare.

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
    filesystem: Filesystem,
    ops: object,
    mountpoint: str,
    options: set[str],
    config: MountConfig,
    reporter: Reporter,
    state: _State,
    bridge: object,
) -> None:
    import pyfuse3

    from icefs.daemon.metrics import MountCollector, open_listeners, registry
    from icefs.daemon.metrics import serve as serve_metrics
    from icefs.store import Bridge
    from icefs.store.reader import direct_probe

    assert isinstance(bridge, Bridge)
    if os.environ.get("ICEFS_DIRECT_CALLS", "1") != "0":  # "0": the escape hatch (docs)
        await bridge.enable_direct(direct_probe)
    log.info("Icechunk calls: %s", "direct" if bridge.direct else "loop thread")
    try:
        await filesystem.start(recover=False)
    except IcefsError as exc:  # what the storage answered (anything else is a bug: raised)
        raise StorageUnreachable(f"cannot read refs of {config.storage.display()}: {exc}") from exc
    listeners = await open_listeners(config.metrics) if config.metrics else []
    try:
        pyfuse3.init(ops, mountpoint, options)  # type: ignore[arg-type]
    except RuntimeError as exc:
        raise FuseUnavailable(f"cannot mount at {mountpoint}: {exc}") from None
    log.debug("fallocate: %s", "supported" if fallocate.installed() else "not supported")
    if not config.read_only:
        await filesystem.start(recover=True)
    state.initialized = True
    _tune_gc()
    summary = filesystem.summary()
    log.info(
        "mounted %s at %s (%d branches, %d tags)",
        config.storage.display(),
        mountpoint,
        summary.branches,
        summary.tags,
    )
    async with filesystem.background_stores():  # outlives the request loop: see its doc
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: filesystem.run(
                    journal_interval=config.journal_interval, commit_interval=config.commit_interval
                )
            )
            nursery.start_soon(_handle_signals, filesystem, config)
            if listeners:
                collector = MountCollector(
                    filesystem.core.controls.status.current_stats,
                    branch_labels=config.metrics_branches,
                )
                nursery.start_soon(serve_metrics, listeners, registry(collector))
                log.info("metrics at http://%s/metrics", config.metrics)
            nursery.start_soon(_announce_ready, mountpoint, reporter, config)
            await pyfuse3.main(max_tasks=MAX_TASKS)
            nursery.cancel_scope.cancel()
        # Commit point: every branch with uncommitted changes, before the daemon exits.
        dirty = len(filesystem.summary().dirty)
        notify(f"STOPPING=1\nSTATUS=unmounting: {config.on_unmount} {dirty} dirty branch(es)")
        committed = await filesystem.shutdown(config.on_unmount, mountpoint)
        for branch, sid in committed.items():
            log.info("committed branch %s at unmount: %s", branch, sid)
    state.clean = True


async def _handle_signals(filesystem: Filesystem, config: MountConfig) -> None:
    import pyfuse3

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                _reload(filesystem, config)
                continue
            log.info("%s: unmounting", signal.Signals(signum).name)
            notify("STOPPING=1\nSTATUS=stopping: committing, then unmounting")
            pyfuse3.terminate()
            return


def _reload(filesystem: Filesystem, config: MountConfig) -> None:
    """SIGHUP: re-read the config file's settings that may change while mounted."""
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
        level = getattr(logging, str(fresh["log_level"]).upper())
        logging.getLogger().setLevel(level)
        configure_icechunk_logs(level, routed=True)
    if "refresh" in fresh:
        filesystem.reconfigure(refresh=float(fresh["refresh"]))
    log.info(
        "SIGHUP: reloaded %s from %s",
        ", ".join(f"{k}={fresh[k]}" for k in ("log_level", "refresh") if k in fresh) or "nothing",
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
    _tune_read_ahead(mountpoint, config.read_ahead)
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
