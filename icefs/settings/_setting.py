"""One setting: its name, type, default and help, and how its values parse."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

__all__ = ["Setting", "SettingError", "WriteBehind", "parse_size"]

_UNITS: Final = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class SettingError(ValueError):
    """A setting's value, name or place is not valid; the message names the setting."""


def parse_size(value: str | int, *, zero: bool = False) -> int:
    """Return the byte count *value* names: ``512M``, ``2G``, ``1048576`` (> 0, or 0 too
    if *zero*)."""
    if isinstance(value, int):
        size = value
    else:
        text = value.strip().upper().removesuffix("B").removesuffix("I")
        number, unit = (text[:-1], text[-1]) if text and text[-1] in _UNITS else (text, "")
        try:
            size = int(float(number) * _UNITS[unit])
        except ValueError:
            raise SettingError(f"not a size: {value!r} (examples: 512M, 2G)") from None
    if size < 0 or (size == 0 and not zero):
        raise SettingError(f"must be positive: {value!r}")
    return size


class WriteBehind(StrEnum):
    """Whether closes leave the store of a chunk file to the background."""

    AUTO = "auto"  # on for object storage, where each store is a round trip
    ON = "on"
    OFF = "off"

    def enabled(self, remote: bool) -> bool:
        """Whether write-behind is on for a mount whose storage is *remote* or not."""
        return self is WriteBehind.ON or (self is WriteBehind.AUTO and remote)


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
    #: a choice whose values are this enum's: parsed values are its members
    enum: type[StrEnum] | None = None
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
            return parse_size(value, zero=self.minimum == 0)
        if kind in ("int", "float"):
            return self._number(value)
        if not isinstance(value, str):
            raise SettingError(f"{self.name} has the wrong type ({type(value).__name__})")
        if kind == "choice" and value not in self.choices:
            raise SettingError(f"{self.name}: {value!r} is not one of {', '.join(self.choices)}")
        return self.enum(value) if self.enum is not None else value

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
