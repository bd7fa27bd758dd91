"""Every setting of a mount, declared once.

Each `Setting` says its name, type, default, help and where it may be given.
From `SETTINGS` come the command-line options (`icefs.cli.options`), the checks of
``--config`` files (`from_config`), the ``-o name=value`` options that
``icefs mount -o``, mount(8) and fstab take (`from_options`), and the command
line of the background daemon (`to_argv`).  Precedence: the command line
(options and ``-o``), then the config file, then the defaults here.

Secrets are never ``-o`` options (they would show in ``ps`` and in mtab) and
never reach the daemon's command line; `icefs.cli.storage` hands them over in
its environment.  Pure: nothing here imports more than the standard library,
so ``icefs --help`` stays fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "SETTINGS",
    "Setting",
    "SettingError",
    "defaults",
    "from_config",
    "from_options",
    "parse_size",
    "to_argv",
]

_UNITS: Final = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class SettingError(ValueError):
    """A setting's value, name or place is not valid; the message names the setting."""


def parse_size(value: str | int) -> int:
    """Return the byte count *value* names: ``512M``, ``2G``, ``1048576`` (> 0)."""
    if isinstance(value, int):
        size = value
    else:
        text = value.strip().upper().removesuffix("B").removesuffix("I")
        number, unit = (text[:-1], text[-1]) if text and text[-1] in _UNITS else (text, "")
        try:
            size = int(float(number) * _UNITS[unit])
        except ValueError:
            raise SettingError(f"not a size: {value!r} (examples: 512M, 2G)") from None
    if size <= 0:
        raise SettingError(f"must be positive: {value!r}")
    return size


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting: how it is spelled, parsed and shown, and where it may be given."""

    name: str
    #: str, path, int, float, bool, size, choice or list
    kind: str
    default: Any
    help: str
    group: str = "mount"  # mount or storage
    choices: tuple[str, ...] = ()
    #: numbers: the smallest value allowed, and whether it is allowed itself
    minimum: float | None = None
    above_minimum: bool = False
    metavar: str = ""
    #: its value is a credential: no -o option, no daemon argv, hidden in --help
    secret: bool = False
    cli: bool = True
    short: str = ""
    config: bool = True
    option: bool = True
    #: re-read from the --config file on SIGHUP
    reload: bool = False
    hidden: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def parse(self, value: object) -> Any:
        """Return *value* (text, or a TOML value) as this setting's type; `SettingError` if not."""
        kind = self.kind
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("", "1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise SettingError(f"{self.name}: not true or false: {value!r}")
        if kind == "list":
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return value
            if isinstance(value, str):
                return [v for v in value.split(",") if v]
            raise SettingError(f"{self.name}: a list of strings is needed")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise SettingError(f"{self.name} has the wrong type ({type(value).__name__})")
        if kind == "size":
            if isinstance(value, float):
                raise SettingError(f"{self.name}: not a size: {value!r}")
            return parse_size(value)
        if kind in ("int", "float"):
            return self._number(value)
        if not isinstance(value, str):
            raise SettingError(f"{self.name} has the wrong type ({type(value).__name__})")
        if kind == "choice" and value not in self.choices:
            raise SettingError(f"{self.name}: {value!r} is not one of {', '.join(self.choices)}")
        return value

    def _number(self, value: str | int | float) -> int | float:
        try:
            number: int | float = int(value) if self.kind == "int" else float(value)
        except ValueError:
            what = "an integer" if self.kind == "int" else "a number"
            raise SettingError(f"{self.name}: not {what}: {value!r}") from None
        if isinstance(number, float) and not math.isfinite(number):
            raise SettingError(f"{self.name}: not a finite number: {value!r}")
        if self.minimum is not None and (
            number < self.minimum or (self.above_minimum and number == self.minimum)
        ):
            relation = "greater than" if self.above_minimum else "at least"
            raise SettingError(f"{self.name}: must be {relation} {self.minimum:g}: {value!r}")
        return number

    def show(self, value: Any) -> str:
        """Return *value* as text this setting parses back (for the daemon's argv)."""
        if self.kind == "list":
            return ",".join(value)
        return str(value)


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
        "auto",
        "store chunk files in the background once closed or renamed into place: 'on', "
        "'off', or 'auto' (on for s3, gcs and azure storage, where each store is a round "
        "trip; off for local and memory storage, where it measured no faster and a close "
        "then reports its own storage errors)",
        choices=("auto", "on", "off"),
    ),
    _mount(
        "cache_dir",
        "path",
        None,
        "where write buffers spool (cleaned at unmount) and the "
        "crash journal lives (default ~/.cache/icefs)",
        metavar="DIR",
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


def defaults() -> dict[str, Any]:
    """Return every setting's default value."""
    return {s.name: s.default for s in _DECLARED}


def from_config(table: dict[str, Any]) -> dict[str, Any]:
    """Return the settings a config file's *table* holds, parsed; `SettingError` names a bad one."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        s = SETTINGS.get(key)
        if s is None or not s.config:
            raise SettingError(f"unknown key {key!r}")
        if not isinstance(value, _TOML_TYPES[s.kind]) or (
            isinstance(value, bool) and s.kind != "bool"
        ):
            raise SettingError(
                f"{key} has the wrong type ({type(value).__name__}; a {s.kind} is needed)"
            )
        out[key] = s.parse(value)
    return out


#: The TOML value types each kind of setting takes in a config file.
_TOML_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "str": (str,),
    "path": (str,),
    "choice": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "size": (str, int),
    "list": (list,),
}


def from_options(items: Iterable[str]) -> tuple[dict[str, Any], list[str]]:
    """Split ``-o`` *items* into settings (``name=value``) and the rest (FUSE options).

    `SettingError` for a secret given as an option, or a value that does not parse.
    """
    settings: dict[str, Any] = {}
    rest: list[str] = []
    for item in items:
        name, sep, value = item.partition("=")
        s = SETTINGS.get(name.replace("-", "_"))
        if s is None or (not sep and s.kind != "bool"):
            rest.append(item)
            continue
        if s.secret:
            raise SettingError(
                f"{name} cannot be a mount option (it would show in ps and "
                f"mtab): use {name}_file=PATH, the config file or the environment"
            )
        if not s.option:
            raise SettingError(f"{name} cannot be a mount option")
        settings[s.name] = s.parse(value)
    return settings, rest


def to_argv(values: dict[str, Any]) -> list[str]:
    """Return the command-line options that give the daemon *values* (no secrets, no defaults).

    Settings that are not command-line options (uid, gid) travel as ``-o name=value``.
    """
    argv: list[str] = []
    for s in _DECLARED:
        value = values.get(s.name)
        if (
            s.secret
            or s.group != "mount"
            or value is None
            or value == s.default
            or (s.name in ("storage", "mountpoint", "options", "foreground", "ready_fd"))
        ):
            continue
        if s.kind == "bool":
            argv.append(s.flag)
        elif s.cli:
            argv += [s.flag, s.show(value)]
        else:
            argv += ["-o", f"{s.name}={s.show(value)}"]
    return argv
