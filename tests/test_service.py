"""Running as a service: systemd units, sd_notify, mount(8) and fstab, SIGHUP, stats."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import icechunk
import pytest
import zarr
from zarr.storage import LocalStore

from harness.mount import run_icefs
from icefs.cli.helper import translate_options
from icefs.daemon.systemd import JournalFormatter, under_journal
from icefs.store.sample import sample_storage

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "systemd"
ICEFS = Path(sys.executable).parent / "icefs"
HELPER = Path(sys.executable).parent / "mount.fuse.icefs"


@pytest.fixture
def repo(fresh_sample):
    return fresh_sample[0]


def unit_for_test(tmp_path, name):
    text = (UNITS / name).read_text().replace("/usr/local/bin/icefs", str(ICEFS))
    target = tmp_path / "units" / name
    target.parent.mkdir(exist_ok=True)
    target.write_text(text)
    return target


@pytest.mark.parametrize("unit", ["icefs@.service", "mnt-ice.mount"])
def test_units_pass_systemd_analyze_verify(tmp_path, unit):
    path = unit_for_test(tmp_path, unit)
    if unit.endswith("@.service"):
        path = path.with_name("icefs@data.service")  # verify an instance of the template
    result = subprocess.run(
        ["systemd-analyze", "verify", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def exec_start(tmp_path, config_dir):
    line = next(
        ln
        for ln in unit_for_test(tmp_path, "icefs@.service").read_text().splitlines()
        if ln.startswith("ExecStart=")
    )
    command = line.removeprefix("ExecStart=").replace("%i", "data")
    return command.replace("/etc/icefs/", f"{config_dir}/").split()


def receive(sock, deadline):
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    return sock.recv(4096).decode()


@pytest.mark.fuse
def test_notify_protocol_with_the_units_exec_start(repo, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    (conf_dir / "data.toml").write_text(
        f'[mount]\nstorage = "{repo}"\nmountpoint = "{mnt}"\nrefresh = 1\n'
    )
    os.chmod(conf_dir / "data.toml", 0o600)
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    env = dict(os.environ, NOTIFY_SOCKET=str(sock_path))
    proc = subprocess.Popen(
        exec_start(tmp_path, conf_dir), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        message = receive(sock, deadline)
        while "READY=1" not in message:
            message = receive(sock, deadline)
        # READY=1 only once the mount answers through the kernel
        assert os.path.ismount(mnt)
        assert "main" in os.listdir(mnt / "branches")
        assert "STATUS=mounted" in message
        zarr.open_group(LocalStore(mnt / "branches/main"), mode="r+").attrs["stop"] = "commit"
        proc.send_signal(signal.SIGTERM)
        messages = ""
        while "STOPPING=1" not in messages:
            messages += receive(sock, deadline)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True, check=False)
        sock.close()
    assert not os.path.ismount(mnt)
    repository = icechunk.Repository.open(sample_storage(str(repo)))
    tip = next(iter(repository.ancestry(branch="main")))
    assert tip.message.startswith("icefs: automatic commit at unmount")
    group = zarr.open_group(repository.readonly_session(branch="main").store, mode="r")
    assert group.attrs["stop"] == "commit"


@pytest.fixture
def helper_installed():
    """Install the helper where mount(8) looks for it (/sbin), as the README says."""
    link = Path("/sbin/mount.fuse.icefs")
    previous = os.readlink(link) if link.is_symlink() else None
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(HELPER)
    yield
    link.unlink()
    if previous is not None:
        link.symlink_to(previous)


def umount_and_wait(mnt):
    pid = int((mnt / ".icefs/pid").read_text())
    subprocess.run(["umount", str(mnt)], check=True, timeout=60)
    deadline = time.monotonic() + 30
    while (
        os.path.exists(f"/proc/{pid}")
        and "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    ):
        assert time.monotonic() < deadline, "daemon still running after umount"
        time.sleep(0.05)


@pytest.mark.fuse
def test_mount_t_fuse_icefs(repo, tmp_path, helper_installed):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    result = subprocess.run(
        [
            "mount",
            "-t",
            "fuse.icefs",
            str(repo),
            str(mnt),
            "-o",
            f"ro,allow_other,refresh=2,_netdev,log_file={tmp_path / 'log'},journal_interval=0,"
            f"verify_chunks=decode,write_buffer=64M,cache_dir={tmp_path / 'cache'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    try:
        assert result.returncode == 0, result.stderr
        assert "main" in os.listdir(mnt / "branches")
        status = json.loads((mnt / ".icefs/status").read_text())
        assert status["read_only"] is True
        assert status["refresh_seconds"] == 2
        with pytest.raises(OSError):
            (mnt / "branches/main/new").write_text("x")
    finally:
        umount_and_wait(mnt)
    assert not os.path.ismount(mnt)


@pytest.mark.fuse
def test_fstab_line_with_config(repo, tmp_path, helper_installed):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    conf = tmp_path / "data.toml"
    conf.write_text(f'storage = "{repo}"\nlog_file = "{tmp_path / "log"}"\n')
    fstab = tmp_path / "fstab"
    fstab.write_text(
        f"icefs {mnt} fuse.icefs _netdev,nofail,config={conf},x-systemd.mount-timeout=600 0 0\n"
    )
    result = subprocess.run(
        ["mount", "--fstab", str(fstab), str(mnt)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    try:
        assert result.returncode == 0, result.stderr
        assert sorted(os.listdir(mnt / "branches")) == ["experiment", "main"]
    finally:
        umount_and_wait(mnt)


def test_mount_helper_translates_options():
    assert translate_options("/r", "/m", "rw,ro,allow_other,refresh=5,_netdev") == [
        "mount",
        "/r",
        "/m",
        "-o",
        "ro,allow_other,refresh=5,_netdev",
    ]
    assert translate_options("/srv/r", "/m", "config=/nonexistent.toml") == [
        "mount",
        "/srv/r",
        "/m",
        "-o",
        "config=/nonexistent.toml",
    ]


def test_config_file_and_sighup_reload(repo, tmp_path, mount_factory):
    conf = tmp_path / "c.toml"
    conf.write_text('[mount]\nrefresh = 3\nlog_level = "info"\non_unmount = "discard"\n')
    m = mount_factory(repo, "--config", str(conf), "--refresh", "2")
    status = json.loads((m.mountpoint / ".icefs/status").read_text())
    assert status["refresh_seconds"] == 2, "the command line wins over the file"
    conf.write_text('[mount]\nrefresh = 0.5\nlog_level = "debug"\n')
    m.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "SIGHUP: reloaded" not in m.log_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert json.loads((m.mountpoint / ".icefs/status").read_text())["refresh_seconds"] == 0.5
    assert m.proc.poll() is None
    # on_unmount=discard came from the file
    zarr.open_group(LocalStore(m.mountpoint / "branches/main"), mode="r+").attrs["x"] = 1
    assert m.umount() == 0
    tip = next(iter(icechunk.Repository.open(sample_storage(str(repo))).ancestry(branch="main")))
    assert not tip.message.startswith("icefs:")


def test_bad_config_files(tmp_path):
    bad = tmp_path / "bad.toml"
    for text, needle in [
        ("storage = ", "not valid TOML"),
        ("nonsense = 1", "unknown key"),
        ("refresh = 'x'", "wrong type"),
    ]:
        bad.write_text(text)
        result = run_icefs("mount", "--config", str(bad))
        assert result.returncode == 2
        assert needle in result.stderr
    assert run_icefs("mount", "--config", str(tmp_path / "missing.toml")).returncode == 2


def test_stats_command(repo, mount_factory):
    m = mount_factory(repo)
    (m.mountpoint / "tags/v1.0/zarr.json").read_bytes()
    result = run_icefs("stats", str(m.mountpoint / "tags"))
    assert result.returncode == 0, result.stderr
    assert re.search(r"^lookup\s+\d+", result.stdout, re.M)
    assert "commits 0" in result.stdout
    doc = json.loads(run_icefs("stats", str(m.mountpoint), "--json").stdout)
    assert doc["bytes_read"] > 0
    assert "getattr" in doc["requests"]


def test_journal_formatter_and_detection(monkeypatch):
    record = logging.LogRecord(
        "icefs.daemon.lifecycle", logging.WARNING, __file__, 1, "disk %s", ("full",), None
    )
    assert JournalFormatter().format(record) == "<4>icefs.daemon.lifecycle: disk full"
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")
    assert under_journal() is False, "stderr is not that stream"
    st = os.fstat(2)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    assert under_journal() is True


def test_second_mount_on_busy_mountpoint(repo, mount_factory, tmp_path):
    m = mount_factory(repo)
    result = run_icefs("mount", str(repo), str(m.mountpoint))
    assert result.returncode == 4
    assert "already mounted" in result.stderr
    shutil.rmtree(tmp_path / "nothing", ignore_errors=True)
