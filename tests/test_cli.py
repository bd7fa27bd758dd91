from __future__ import annotations

import pytest

from icefs.cli.main import main
from icefs.daemon import parse_fuse_options
from icefs.errors import UsageError
from icefs.storage import parse_storage


@pytest.mark.parametrize("command", ["mount", "umount", "demo"])
def test_help_has_examples(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "example" in out


def test_no_command_prints_usage(capsys):
    assert main([]) == 2
    assert "mount" in capsys.readouterr().out


def test_bad_refresh_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["mount", "x", "y", "--refresh", "-1"])
    assert info.value.code == 2


def test_storage_urls(tmp_path):
    assert parse_storage("memory://").kind == "memory"
    spec = parse_storage(f"file://{tmp_path}/r")
    assert (spec.kind, spec.path) == ("local", f"{tmp_path}/r")
    assert parse_storage("relative/repo").path.endswith("/relative/repo")
    for bad in ("", "ftp://x/y", "file://host/x"):
        with pytest.raises(UsageError):
            parse_storage(bad)


def test_fuse_options():
    passed, own = parse_fuse_options(["allow_other,ro", "_netdev,x-systemd.auto"])
    assert passed == ("allow_other",)
    assert own == {"ro": ""}
    with pytest.raises(UsageError):
        parse_fuse_options(["max_read=abc"])
