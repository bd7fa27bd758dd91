"""The command-line options of every setting (`icefs.settings`), for argparse."""

from __future__ import annotations

import argparse
from typing import Any

from icefs.settings import SETTINGS, Setting, SettingError

__all__ = ["add_arguments", "add_setting_arguments"]


def add_arguments(parser: argparse.ArgumentParser | Any, group: str) -> None:
    """Add the command-line options of the settings of *group* to *parser*.

    Every option defaults to None: whether it was given decides precedence.
    """
    add_setting_arguments(parser, [s.name for s in SETTINGS.values() if s.group == group])


def add_setting_arguments(parser: argparse.ArgumentParser | Any, names: list[str]) -> None:
    """Add the command-line options of the settings *names* to *parser* (default None)."""
    for s in (SETTINGS[name] for name in names):
        if not s.cli:
            continue
        flags = [s.flag, *([s.short] if s.short else [])]
        helptext = argparse.SUPPRESS if s.hidden else _help(s)
        if s.kind == "bool":
            parser.add_argument(
                *flags, dest=s.name, action="store_true", default=None, help=helptext
            )
            continue
        if s.kind == "list":  # repeatable, and each may hold several, comma-separated
            parser.add_argument(
                *flags,
                dest=s.name,
                type=_argparse_type(s),
                action="extend",
                default=None,
                metavar=s.metavar or None,
                help=helptext,
            )
            continue
        parser.add_argument(
            *flags,
            dest=s.name,
            type=_argparse_type(s),
            default=None,
            metavar=s.metavar or None,
            help=helptext,
            choices=s.choices or None,
        )


def _help(s: Setting) -> str:
    if s.default in (None, [], False) or s.kind == "bool":
        return s.help
    shown = s.default
    if s.kind == "size":
        shown = f"{s.default >> 20}M"
    return (
        f"{s.help} (default {shown:g})"
        if isinstance(shown, float)
        else (f"{s.help} (default {shown})")
    )


def _argparse_type(s: Setting) -> Any:
    if s.kind == "choice":
        enum = s.enum

        def choose(text: str) -> Any:
            # argparse checks the choices (and names them) after this conversion
            return enum(text) if enum is not None and text in s.choices else text

        choose.__name__ = "choice"
        return choose

    def parse(text: str) -> Any:
        try:
            return s.parse(text)
        except SettingError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"{s.name}: ")) from None

    parse.__name__ = s.kind  # argparse names the type in its messages
    return parse
