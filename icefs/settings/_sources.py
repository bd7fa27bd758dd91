"""Where settings come from and go to: defaults, config files, ``-o`` options, argv.

Also how a typed record (`icefs.daemon.MountConfig`, `icefs.fs.MountOptions`)
takes its fields from the settings: a field named like a setting gets that
setting's default (`setting_field`) and its value (`pick`), so a new setting is
declared once, in the table, and named once in each record that uses it.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Final

from icefs.settings._setting import SettingError
from icefs.settings._table import _DECLARED, SETTINGS

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = ["defaults", "from_config", "from_options", "pick", "setting_field", "to_argv"]


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


def setting_field(name: str) -> Any:
    """A dataclass field for setting *name*, with the setting's default."""
    default = SETTINGS[name].default
    if isinstance(default, list):
        return dataclasses.field(default=tuple(default))
    return dataclasses.field(default=default)


def pick[T](record: type[T], values: Mapping[str, Any], **derived: Any) -> T:
    """Build the dataclass *record*: each field named like a setting takes its value from
    *values* (a setting left at None keeps the field's default); *derived* gives the rest.
    """
    given: dict[str, Any] = {}
    for f in dataclasses.fields(record):  # type: ignore[arg-type]
        if f.name in derived:
            given[f.name] = derived[f.name]
        elif f.name in SETTINGS and values.get(f.name) is not None:
            value = values[f.name]
            given[f.name] = tuple(value) if isinstance(value, list) else value
    unknown = set(derived) - {f.name for f in dataclasses.fields(record)}  # type: ignore[arg-type]
    if unknown:
        raise TypeError(f"{record.__name__} has no field {', '.join(sorted(unknown))}")
    return record(**given)
