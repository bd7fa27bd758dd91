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
    cache_dir = "/var/cache/icefs"
    on_unmount = "commit"                # commit | discard
    commit_interval = 600
    journal_interval = 2                 # 0 = no crash journal
    default_branch = "main"
    read_ahead = 1024

Precedence: the command line, then the file, then built-in defaults.
"""

from __future__ import annotations

import os
import stat
import tomllib
from typing import Any, Final

from icefs.errors import ExitCode, QuietError
from icefs.storage import SECRET_KEYS

__all__ = ["KEYS", "load_config"]

#: Keys a config file may hold, with the type each takes.
KEYS: Final[dict[str, tuple[type, ...]]] = {
    "storage": (str,),
    "mountpoint": (str,),
    "mode": (str,),
    "read_only": (bool,),
    "options": (list,),
    "refresh": (int, float),
    "log_level": (str,),
    "log_file": (str,),
    "write_buffer": (str, int),
    "cache_dir": (str,),
    "on_unmount": (str,),
    "commit_interval": (int, float),
    "journal_interval": (int, float),
    "default_branch": (str,),
    "read_ahead": (int,),
    # storage (README: Storage)
    "region": (str,),
    "endpoint_url": (str,),
    "allow_http": (bool,),
    "force_path_style": (bool,),
    "anonymous": (bool,),
    "credential_type": (str,),
    "service_account_file": (str,),
    "gcs_base_url": (str,),
    "connect_timeout": (int, float),
    "operation_timeout": (int, float),
    "max_retries": (int,),
    "max_concurrent_requests": (int,),
    **{key: (str,) for key in SECRET_KEYS},
    **{f"{key}_file": (str,) for key in SECRET_KEYS},
}


def load_config(path: str) -> dict[str, Any]:
    """Read the mount configuration at *path*; raise `QuietError` (USAGE) saying what is wrong."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
        st = os.stat(path)
    except FileNotFoundError:
        raise QuietError(f"config file {path} does not exist", ExitCode.USAGE) from None
    except OSError as exc:
        raise QuietError(f"config file {path}: {exc.strerror}", ExitCode.USAGE) from None
    except tomllib.TOMLDecodeError as exc:
        raise QuietError(f"config file {path} is not valid TOML: {exc}", ExitCode.USAGE) from None
    table = doc.get("mount", doc)
    if not isinstance(table, dict):
        raise QuietError(f"config file {path}: [mount] must be a table", ExitCode.USAGE)
    config: dict[str, Any] = {}
    for key, value in table.items():
        if key not in KEYS:
            raise QuietError(f"config file {path}: unknown key {key!r}", ExitCode.USAGE)
        if not isinstance(value, KEYS[key]) or (isinstance(value, bool)
                                                 and bool not in KEYS[key]):
            raise QuietError(f"config file {path}: {key} has the wrong type", ExitCode.USAGE)
        config[key] = value
    if "options" in config and not all(isinstance(o, str) for o in config["options"]):
        raise QuietError(f"config file {path}: options must be strings", ExitCode.USAGE)
    config["_world_readable"] = bool(st.st_mode & stat.S_IROTH)
    config["_has_secrets"] = any(k in config for k in SECRET_KEYS)
    return config
