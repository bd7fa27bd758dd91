"""The table of every setting: `SETTINGS`, and the names of the credentials."""

from __future__ import annotations

from typing import Any, Final

from icefs.settings._setting import Setting, WriteBehind

__all__ = ["SECRET_NAMES", "SETTINGS"]


def _mount(name: str, kind: str, default: Any, help: str, **more: Any) -> Setting:
    return Setting(name, kind, default, help, **more)


def _storage(name: str, kind: str, default: Any, help: str, **more: Any) -> Setting:
    return Setting(name, kind, default, help, group="storage", **more)


#: Credentials: each may also be given as <name>_file, a path to a file holding it.
SECRET_NAMES: Final = (
    "access_key_id",
    "secret_access_key",
    "session_token",
    "service_account_key",
    "bearer_token",
    "access_key",
    "sas_token",
)
_CREDENTIAL_TYPES: Final = (
    "env",
    "static",
    "anonymous",
    "service-account-file",
    "service-account-key",
    "bearer-token",
    "access-key",
    "sas-token",
)

_DECLARED: Final = (
    # -- where -------------------------------------------------------------------------------
    _mount(
        "storage",
        "str",
        None,
        "the repository (a positional argument on the command line)",
        cli=False,
        option=False,
    ),
    _mount(
        "mountpoint",
        "path",
        None,
        "where to mount (a positional argument)",
        cli=False,
        option=False,
    ),
    _mount(
        "config",
        "path",
        None,
        "read the mount's settings from this TOML file; options "
        "given on the command line win over it",
        metavar="FILE",
        config=False,
    ),
    _mount(
        "mode",
        "choice",
        "open",
        "open an existing repository, create a new one, or either",
        choices=("open", "create", "open_or_create"),
    ),
    _mount(
        "read_only",
        "bool",
        False,
        "refuse every write, branches included (EROFS); -o ro says the same",
    ),
    # -- the daemon ----------------------------------------------------------------------------
    _mount(
        "foreground",
        "bool",
        False,
        "stay in the foreground and log to stderr",
        short="-f",
        config=False,
        option=False,
    ),
    _mount(
        "log_level",
        "choice",
        "info",
        "how much the daemon logs",
        choices=("debug", "info", "warning", "error"),
        reload=True,
    ),
    _mount(
        "log_file",
        "path",
        None,
        "where the daemon logs (default in the background: ~/.local/state/icefs/<mountpoint>.log)",
        metavar="FILE",
    ),
    _mount(
        "refresh",
        "float",
        1.0,
        "seconds within which branch and tag listings and branch tips follow the repository",
        minimum=0,
        above_minimum=True,
        metavar="SECONDS",
        reload=True,
    ),
    _mount(
        "read_ahead",
        "int",
        1024,
        "the kernel's read-ahead for the mount in KiB (needs root; 0 leaves the kernel's 128)",
        minimum=0,
        metavar="KiB",
    ),
    _mount(
        "read_ahead_memory",
        "size",
        256 << 20,
        "RAM for chunks fetched ahead of programs reading chunk files in order, for the "
        "whole mount (0: no read-ahead across files)",
        metavar="SIZE",
        minimum=0,
    ),
    _mount(
        "metadata_memory",
        "size",
        256 << 20,
        "RAM for what the mount keeps to answer lookups and listings without asking "
        "Icechunk again (chunk indexes, node metadata, listings, resolved paths), for the "
        "whole mount; least recently used first out when full (docs/performance.md, "
        "sizing the memory budget)",
        metavar="SIZE",
    ),
    _mount(
        "request_timeout",
        "float",
        60.0,
        "seconds a read, listing, lookup or store may wait for the storage before it fails "
        "with ETIMEDOUT (commits: --commit-timeout)",
        minimum=0,
        above_minimum=True,
        metavar="SECONDS",
    ),
    _mount(
        "metrics",
        "str",
        None,
        "serve Prometheus metrics over HTTP at this address, such as 127.0.0.1:9464 "
        "(docs/operations.md, metrics)",
        metavar="HOST:PORT",
    ),
    _mount(
        "metrics_branches",
        "bool",
        True,
        "label the per-branch metrics with branch names (false: one total for all branches)",
    ),
    # -- writes --------------------------------------------------------------------------------
    _mount(
        "write_buffer",
        "size",
        256 << 20,
        "RAM for data being written, for the whole "
        "mount; past it, write buffers spool to the cache directory",
        metavar="SIZE",
    ),
    _mount(
        "write_behind",
        "choice",
        WriteBehind.AUTO,
        "store chunk files in the background once closed or renamed into place: 'on', "
        "'off', or 'auto' (on for s3, gcs and azure storage, where each store is a round "
        "trip; off for local and memory storage, where a close then reports its own "
        "storage errors)",
        choices=tuple(WriteBehind),
        enum=WriteBehind,
    ),
    _mount(
        "cache_dir",
        "path",
        None,
        "where write buffers spool (cleaned at unmount), the crash journal and the "
        "persistent read cache live (default ~/.cache/icefs)",
        metavar="DIR",
    ),
    _mount(
        "read_cache_size",
        "size",
        None,
        "disk for the persistent read cache of snapshot data under --cache-dir, shared "
        "by every mount using that directory (object storage only; default: the smaller "
        "of 10G and a tenth of the free space there; 0: off; docs/cache.md)",
        metavar="SIZE",
        minimum=0,
    ),
    _mount(
        "journal_interval",
        "float",
        2.0,
        "save uncommitted sessions to the crash journal "
        "at most every SECONDS, and at every fsync (0 turns the journal off)",
        minimum=0,
        metavar="SECONDS",
    ),
    _mount(
        "commit_timeout",
        "float",
        120.0,
        "seconds a commit may take before it fails with ETIMEDOUT, its changes kept; a "
        "commit that lands later is said in status and the log",
        minimum=0,
        above_minimum=True,
        metavar="SECONDS",
    ),
    _mount(
        "on_unmount",
        "choice",
        "commit",
        "what happens to uncommitted changes at unmount",
        choices=("commit", "discard"),
    ),
    _mount(
        "commit_interval",
        "float",
        None,
        "also commit branches with changes every SECONDS",
        minimum=0,
        above_minimum=True,
        metavar="SECONDS",
    ),
    _mount(
        "default_branch",
        "str",
        "main",
        "the branch `mkdir branches/<new>` starts from, and that rmdir never deletes",
        metavar="BRANCH",
    ),
    _mount(
        "verify_chunks",
        "choice",
        "frame",
        "how chunks are checked before they are "
        "stored: 'frame' checks the exact size of uncompressed chunks and the framing of "
        "zstd, blosc and gzip ones without decompressing; 'decode' also decodes each "
        "compressed chunk with its array's codecs",
        choices=("frame", "decode"),
    ),
    # -- virtual chunks (docs/virtual.md) -------------------------------------------------------
    _mount(
        "virtual",
        "list",
        [],
        "authorize reading the virtual chunks under this container URL prefix; ACCESS is "
        "anonymous, env (default for clouds) or static:KEYFILE (repeatable)",
        metavar="PREFIX[=ACCESS]",
    ),
    _mount(
        "allow_other_file_access",
        "bool",
        False,
        "with -o allow_other, accept file:// containers: every user of the mount then "
        "reads those files with the daemon's rights",
    ),
    # -- FUSE ------------------------------------------------------------------------------------
    _mount(
        "options",
        "list",
        [],
        "FUSE options, as for -o (a list in the config file)",
        cli=False,
        option=False,
    ),
    _mount(
        "uid",
        "int",
        None,
        "the owner shown on every file (default: the mounting user)",
        minimum=0,
        cli=False,
    ),
    _mount(
        "gid",
        "int",
        None,
        "the group shown on every file (default: the mounting user's)",
        minimum=0,
        cli=False,
    ),
    _mount(
        "ready_fd",
        "int",
        None,
        "(internal) report readiness on this descriptor",
        config=False,
        option=False,
        hidden=True,
    ),
    # -- storage (docs/configuration.md) -------------------------------------------------------
    _storage(
        "credential_type",
        "choice",
        None,
        "how to authenticate (default: inferred from what is given, else the cloud's environment)",
        choices=_CREDENTIAL_TYPES,
    ),
    _storage("anonymous", "bool", None, "no credentials (public data)"),
    _storage("region", "str", None, "S3 region (or AWS_REGION)"),
    _storage(
        "endpoint_url",
        "str",
        None,
        "an S3-compatible endpoint (MinIO, ...) or an Azure endpoint or emulator",
        metavar="URL",
    ),
    _storage("allow_http", "bool", None, "allow plain http endpoints"),
    _storage(
        "force_path_style", "bool", None, "S3 path-style addressing (most S3-compatible servers)"
    ),
    _storage("service_account_file", "path", None, "GCS service-account JSON file", metavar="PATH"),
    _storage("gcs_base_url", "str", None, "GCS endpoint (emulators)", metavar="URL"),
    *(
        _storage(
            name,
            "str",
            None,
            f"the {name.replace('_', ' ')} (shows in ps: prefer "
            f"--{name.replace('_', '-')}-file, the config file or the environment)",
            secret=True,
            option=False,
            hidden=True,
            metavar="SECRET",
        )
        for name in SECRET_NAMES
    ),
    *(
        _storage(
            f"{name}_file",
            "path",
            None,
            f"read the {name.replace('_', ' ')} from PATH",
            metavar="PATH",
        )
        for name in SECRET_NAMES
    ),
    _storage(
        "connect_timeout",
        "float",
        10.0,
        "storage connect timeout",
        minimum=0,
        above_minimum=True,
        metavar="SECONDS",
    ),
    _storage(
        "operation_timeout",
        "float",
        60.0,
        "storage request timeout",
        minimum=0,
        above_minimum=True,
        metavar="SECONDS",
    ),
    _storage(
        "max_retries", "int", 3, "retries of a failed storage request", minimum=0, metavar="N"
    ),
    _storage(
        "max_concurrent_requests",
        "int",
        None,
        "parallel requests per object to the storage",
        minimum=1,
        metavar="N",
    ),
)

#: Every setting by name.
SETTINGS: Final = {s.name: s for s in _DECLARED}
