"""Mount configuration files (TOML), as ``--config FILE`` and the systemd unit read them.

A file describes one mount, as top-level keys or in a ``[mount]`` table::

    storage = "/srv/icechunk/data"       # or file://, memory://
    mountpoint = "/mnt/data"
    mode = "open"                        # open | create | open_or_create
    read_only = false
    options = ["allow_other"]            # FUSE options, as for -o
    refresh = 1.0
    log_level = "info"
    log_file = "/var/log/icefs/data.log"
    write_buffer = "256M"
    write_behind = "auto"                # auto | on | off
    cache_dir = "/var/cache/icefs"
    on_unmount = "commit"                # commit | discard
    commit_interval = 600
    journal_interval = 2                 # 0 = no crash journal
    default_branch = "main"
    read_ahead = 1024
    read_ahead_memory = "256M"
    metadata_memory = "256M"
    request_timeout = 60
    commit_timeout = 120
    metrics = "127.0.0.1:9464"           # Prometheus; off unless given

Precedence: the command line, then the file, then built-in defaults.
"""

from __future__ import annotations

import os
import stat
import tomllib
from typing import Any

from icefs.errors import UsageError
from icefs.settings import SECRET_NAMES, SettingError, from_config

__all__ = ["load_config"]


def load_config(path: str) -> dict[str, Any]:
    """Read the mount configuration at *path*; raise `UsageError` saying what is wrong.

    The keys and their types are those of `icefs.settings`.
    """
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
        st = os.stat(path)
    except FileNotFoundError:
        raise UsageError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise UsageError(f"config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}") from None
    table = doc.get("mount", doc)
    if not isinstance(table, dict):
        raise UsageError(f"config file {path}: [mount] must be a table")
    try:
        config = from_config(table)
    except SettingError as exc:
        raise UsageError(f"config file {path}: {exc}") from None
    config["_path"] = path
    config["_world_readable"] = bool(st.st_mode & stat.S_IROTH)
    config["_has_secrets"] = any(k in config for k in SECRET_NAMES)
    return config
