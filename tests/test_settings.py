"""Every setting is declared once and accepted wherever settings are taken.

The places: command-line options, ``-o name=value`` (``icefs mount -o``,
mount(8), fstab), ``--config`` files, and the command line of the background
daemon. Each declared setting is tried in each place it may appear, with a value
that is not its default, and must come out as the same value.
"""

from __future__ import annotations

import argparse
from dataclasses import fields

import pytest

from icefs.cli.helper import translate_options
from icefs.cli.main import parse_args
from icefs.cli.mount import resolve
from icefs.daemon import MountConfig
from icefs.fs import MountOptions
from icefs.settings import (
    SETTINGS,
    Setting,
    SettingError,
    WriteBehind,
    from_config,
    from_options,
    parse_size,
    pick,
    to_argv,
)

SAMPLE = {
    "str": "x1",
    "path": "/tmp/x1",
    "int": 7,
    "float": 2.5,
    "bool": True,
    "size": 64 << 20,
    "list": ["allow_other"],
}


def sample(s: Setting):
    if s.kind == "choice":
        choice = next(c for c in s.choices if c != s.default)
        return s.enum(choice) if s.enum else choice
    return SAMPLE[s.kind]


def settings_of(args: argparse.Namespace):
    return resolve(vars(args), args.options)


def parse_mount(argv: list[str]) -> argparse.Namespace:
    return parse_args(["mount", *argv])


@pytest.mark.parametrize("s", [s for s in SETTINGS.values() if s.cli], ids=lambda s: s.name)
def test_every_option_on_the_command_line(s):
    value = sample(s)
    args = parse_mount(
        ["r", "m", s.flag] if s.kind == "bool" else ["r", "m", s.flag, s.show(value)]
    )
    assert getattr(args, s.name) == value
    assert type(getattr(args, s.name)) is type(value)  # a choice's enum member, not its text


def test_a_list_option_repeats():
    args = parse_mount(["r", "m", "--virtual", "s3://a/", "--virtual", "file:///b/,s3://c/=env"])
    assert args.virtual == ["s3://a/", "file:///b/", "s3://c/=env"]


@pytest.mark.parametrize("s", [s for s in SETTINGS.values() if s.option], ids=lambda s: s.name)
def test_every_option_as_name_value(s, tmp_path):
    value = sample(s)
    text = ",".join(value) if s.kind == "list" else str(value).lower()
    if s.name == "config":
        (tmp_path / "c.toml").write_text("")
        text = value = str(tmp_path / "c.toml")
    settings, rest = from_options([f"{s.name}={text}"])
    assert (settings, rest) == ({s.name: value}, [])
    # the same through mount(8)'s helper and icefs mount -o
    argv = translate_options("/r", "/m", f"{s.name}={text}")
    values, _, _ = settings_of(parse_mount(argv[1:]))
    assert values[s.name] == value


@pytest.mark.parametrize("s", [s for s in SETTINGS.values() if s.config], ids=lambda s: s.name)
def test_every_key_in_a_config_file(s, tmp_path):
    value = sample(s)
    assert from_config({s.name: value}) == {s.name: value}
    with pytest.raises(SettingError):
        from_config({s.name: {"a": 1}})


def test_the_daemon_gets_every_mount_setting_back():
    """`to_argv` of values that are not defaults parses back to the same values."""
    given = {
        s.name: sample(s)
        for s in SETTINGS.values()
        if s.group == "mount"
        and s.name not in ("storage", "mountpoint", "options", "foreground", "ready_fd", "config")
    }
    argv = to_argv(given)
    values, _, _ = settings_of(parse_mount(["r", "m", *argv]))
    for name, value in given.items():
        assert values[name] == value, name
        assert type(values[name]) is type(value), name


def test_mount_records_take_each_setting_they_name():
    """MountConfig and MountOptions get every setting named like one of their fields,
    with its parsed type (a choice with an enum comes out as the enum's member)."""
    values = {s.name: sample(s) for s in SETTINGS.values()}
    config = pick(MountConfig, values, storage=None, config_file="/c.toml")
    options = pick(MountOptions, {f.name: getattr(config, f.name) for f in fields(config)})
    for record in (config, options):
        named = [f.name for f in fields(record) if f.name in SETTINGS and f.name != "storage"]
        assert len(named) >= 10
        for name in named:
            expected = values[name]
            assert getattr(record, name) == (
                tuple(expected) if isinstance(expected, list) else expected
            ), name
    assert config.write_behind is WriteBehind.ON  # parsed by the CLI into the enum
    assert config.write_behind is WriteBehind(SETTINGS["write_behind"].parse("on"))
    assert config.config_file == "/c.toml"
    with pytest.raises(TypeError, match="no field"):
        pick(MountOptions, {}, not_a_field=1)


def test_write_behind_follows_the_storage_when_auto():
    assert WriteBehind.AUTO.enabled(remote=True)
    assert not WriteBehind.AUTO.enabled(remote=False)
    assert WriteBehind.ON.enabled(remote=False)
    assert not WriteBehind.OFF.enabled(remote=True)


def test_secrets_are_never_options_nor_daemon_arguments():
    for s in SETTINGS.values():
        if s.secret:
            with pytest.raises(SettingError, match="_file"):
                from_options([f"{s.name}=x"])
            assert s.flag not in to_argv({s.name: "x"})


def test_unknown_names_are_left_to_fuse_and_bad_values_are_refused():
    assert from_options(["allow_other", "max_read=4096"]) == ({}, ["allow_other", "max_read=4096"])
    for bad in (
        "refresh=0",
        "refresh=abc",
        "journal_interval=-1",
        "mode=bogus",
        "write_buffer=0",
        "read_ahead=1.5",
    ):
        with pytest.raises(SettingError):
            from_options([bad])
    with pytest.raises(SettingError, match="unknown key"):
        from_config({"no_such_key": 1})


def test_sizes():
    assert parse_size("256M") == 256 << 20
    assert parse_size("2G") == 2 << 30
    assert parse_size("1048576") == 1 << 20
    assert parse_size(4096) == 4096
    for bad in ("0", "-1M", "lots"):
        with pytest.raises(SettingError):
            parse_size(bad)
