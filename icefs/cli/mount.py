"""``icefs mount`` and ``icefs umount``: settings resolved, the daemon started or served.

`resolve` merges the settings of a mount (given, ``-o``, config file,
defaults); `launch` starts its daemon in the background and returns once the
mount answers (also what `icefs.mount` does); `serve` runs the daemon here.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from icefs.cli.exits import ExitCode
from icefs.cli.storage import install_redaction, spec_to_env, storage_from_args
from icefs.errors import RepositoryError, UsageError
from icefs.settings import SETTINGS, SettingError, defaults, from_options, pick, to_argv

if TYPE_CHECKING:
    import argparse

__all__ = ["launch", "mount_command", "resolve", "serve", "umount_command"]

log = logging.getLogger(__name__)


def setup_logging(level: str, log_file: str | None) -> None:
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


def default_log_file(mountpoint: str) -> str:
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    name = os.path.abspath(mountpoint).strip("/").replace("/", "_") or "root"
    return os.path.join(state, "icefs", f"{name}.log")


def resolve(
    given: dict[str, Any], options: list[str]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Return (settings, those given directly, the config file's) of a mount.

    *given*: settings given by name (command-line options, the Python API);
    *options*: ``-o`` values. Precedence: *given* and ``-o name=value``, then the
    ``--config`` file (its keys, then ``name=value`` items of its ``options``),
    then the built-in defaults (`icefs.settings`).
    """
    from icefs.config import load_config

    try:
        named, fuse = from_options(o.strip() for v in options for o in v.split(",") if o.strip())
    except SettingError as exc:
        raise UsageError(f"-o: {exc}") from None
    cli = {
        name: value for name in SETTINGS if (value := named.get(name, given.get(name))) is not None
    }
    config_path = cli.get("config")
    config = load_config(config_path) if config_path else {}
    try:
        from_file, fuse_from_file = from_options(config.get("options", []))
    except SettingError as exc:
        raise UsageError(f"config file {config_path}: options: {exc}") from None
    values = defaults()
    values.update({k: v for k, v in {**from_file, **config}.items() if k in SETTINGS})
    values.update(cli)
    values["options"] = [*fuse_from_file, *fuse]
    if values["storage"] is None or values["mountpoint"] is None:
        raise UsageError("STORAGE and MOUNTPOINT are needed (arguments or --config)")
    return values, cli, config


def launch(values: dict[str, Any], cli: dict[str, Any], config: dict[str, Any]) -> str:
    """Start the daemon of the mount *values* describe in the background; return the
    mountpoint once the mount answers.  Raises a `SetupError` if it cannot start."""
    from icefs.daemon import check_fuse, check_mountpoint, parse_fuse_options, start_background

    storage = storage_from_args(values["storage"], cli, config)
    passed, own = parse_fuse_options(values["options"])
    check_fuse()
    mountpoint = check_mountpoint(values["mountpoint"])
    _check_virtual(values, passed)
    if values["metrics"]:  # refused here, before the daemon starts (it binds it)
        from icefs.daemon.metrics import parse_address

        parse_address(values["metrics"])
    if storage.kind == "local" and values["mode"] == "open" and not os.path.exists(storage.path):
        raise RepositoryError(
            f"no repository at {storage.path} (use --mode create or open_or_create to make one)"
        )
    daemon = dict(values, read_only=bool(values["read_only"]) or "ro" in own)
    daemon["virtual"] = [_absolute_key_file(item) for item in values["virtual"]]
    for key in ("config", "cache_dir"):  # the daemon runs elsewhere: absolute paths
        if daemon[key]:
            daemon[key] = os.path.abspath(daemon[key])
    argv = [
        storage.path if storage.kind == "local" else storage.display(),
        mountpoint,
        *to_argv(daemon),
    ]
    for opt in values["options"]:
        argv += ["-o", opt]
    start_background(
        argv, values["log_file"] or default_log_file(mountpoint), env=spec_to_env(storage)
    )
    return mountpoint


def _check_virtual(values: dict[str, Any], fuse_options: tuple[str, ...]) -> None:
    """Refuse bad ``--virtual`` items before the daemon starts (the daemon checks again)."""
    from icefs.store.virtual import check_allow_other, parse_grants

    grants = parse_grants(values["virtual"])
    allow_other = "allow_other" in fuse_options
    check_allow_other(grants, allow_other, bool(values["allow_other_file_access"]))


def _absolute_key_file(item: str) -> str:
    """*item* with its ``static:`` key file made absolute (the daemon runs elsewhere)."""
    head, sep, path = item.rpartition("=static:")
    return f"{head}{sep}{os.path.abspath(path)}" if sep and path else item


def serve(values: dict[str, Any], cli: dict[str, Any], config: dict[str, Any]) -> int:
    """Run the daemon of the mount *values* describe, here, until it is unmounted."""
    from icefs.daemon import MountConfig, Reporter, parse_fuse_options, run_daemon

    storage = storage_from_args(values["storage"], cli, config)
    fuse_options, own = parse_fuse_options(values["options"])
    setup_logging(values["log_level"], values["log_file"])
    install_redaction(storage.secrets)
    mount_config = pick(
        MountConfig,
        values,
        storage=storage,
        read_only=bool(values["read_only"]) or "ro" in own,
        fuse_options=fuse_options,
        xattrs="noxattr" not in own,
        config_file=os.path.abspath(values["config"]) if values["config"] else "",
    )
    ok = run_daemon(mount_config, Reporter(values["ready_fd"]))
    return ExitCode.OK if ok else ExitCode.CONFLICT


def mount_command(args: argparse.Namespace) -> int:
    """``icefs mount``."""
    values, cli, config = resolve(vars(args), args.options)
    if values["foreground"]:
        return serve(values, cli, config)
    launch(values, cli, config)
    return ExitCode.OK


def umount_command(args: argparse.Namespace) -> int:
    """``icefs umount``."""
    from icefs.daemon import unmount

    done, warnings = unmount(args.mountpoint, timeout=args.timeout)
    for warning in warnings:
        print(f"icefs umount: {warning}", file=sys.stderr)
    print(done)
    return ExitCode.OK
