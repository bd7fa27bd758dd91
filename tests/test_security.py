"""Security: who can see and use a mount, control files, secrets in config files.

Runs commands as the unprivileged user ``nobody`` against real mounts made by root.
"""

from __future__ import annotations

import errno
import os
import subprocess
import tempfile
from pathlib import Path

import icechunk
import pytest
import zarr

from harness.mount import Mount, fuse_usable, run_icefs
from icefs.store.sample import sample_storage

NOBODY = 65534


@pytest.fixture
def open_dir():
    """A directory every user can traverse (pytest's tmp dirs are root-only)."""
    if not fuse_usable():
        pytest.fail("FUSE is required")
    path = Path(tempfile.mkdtemp(prefix="icefs-security-"))
    path.chmod(0o755)
    mounts: list[Mount] = []
    yield path, mounts
    for m in mounts:
        m.stop()
    subprocess.run(["rm", "-rf", str(path)], check=False)


def mount(open_dir, *options: str) -> Mount:
    path, mounts = open_dir
    repo_path = path / "repo"
    if not repo_path.exists():
        repo = icechunk.Repository.create(sample_storage(str(repo_path)))
        session = repo.writable_session("main")
        zarr.group(store=session.store).create_array("a", shape=(2,), chunks=(1,), dtype="i1")[
            :
        ] = 1
        session.commit("base")
    mnt = path / "mnt"
    mnt.mkdir(exist_ok=True)
    m = Mount(
        str(repo_path), mnt, "--cache-dir", str(path / "cache"), *options, log=path / "mount.log"
    )
    mounts.append(m)
    m.wait_ready()
    return m


def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def sh_as_nobody(script: str) -> subprocess.CompletedProcess[str]:
    return as_nobody("/bin/sh", "-c", script)


@pytest.mark.fuse
def test_without_allow_other_no_other_user_sees_the_mount(open_dir):
    m = mount(open_dir)
    main = m.mountpoint / "branches" / "main"
    assert os.listdir(main), "root, who mounted, sees it"
    for argv in (["ls", str(m.mountpoint)], ["cat", str(main / "zarr.json")], ["stat", str(main)]):
        result = as_nobody(*argv)
        assert result.returncode != 0, argv
        assert "Permission denied" in result.stderr, result.stderr


@pytest.mark.fuse
def test_with_allow_other_permissions_follow_the_modes(open_dir):
    m = mount(open_dir, "-o", "allow_other")
    main = m.mountpoint / "branches" / "main"
    ok = sh_as_nobody(f"cat {main / 'zarr.json'} > /dev/null && ls {main / 'a'}")
    assert ok.returncode == 0, ok.stderr  # 0644 files, 0755 directories: readable
    for script in (
        f"echo x > {main / 'new.tmp'}",  # a directory owned by root, 0755
        f"echo x >> {main / 'zarr.json'}",  # a file owned by root, 0644
        f"rm {main / 'a' / 'zarr.json'}",
        f"mkdir {m.mountpoint / 'branches' / 'mine'}",
    ):
        result = sh_as_nobody(script)
        assert result.returncode != 0, script
        assert "Permission denied" in result.stderr, (script, result.stderr)
    assert (main / "a" / "zarr.json").exists()
    assert os.listdir(m.mountpoint / "branches") == ["main"]


@pytest.mark.fuse
def test_control_files_belong_to_the_mounting_user(open_dir):
    m = mount(open_dir, "-o", "allow_other")
    main = m.mountpoint / "branches" / "main"
    for script in (
        f"cat {main / '.icefs' / 'status'}",
        f"echo sneaky > {main / '.icefs' / 'commit'}",
        f"echo 1 > {main / '.icefs' / 'discard'}",
        f"ls {m.mountpoint / '.icefs'}",
    ):
        result = sh_as_nobody(script)
        assert result.returncode != 0, script
        assert "Permission denied" in result.stderr, (script, result.stderr)
    assert run_icefs("status", str(main)).returncode == 0, "the owner (root) can"
    repo = icechunk.Repository.open(sample_storage(str(m.mountpoint.parent / "repo")))
    assert next(s.message for s in repo.ancestry(branch="main")) == "base", "nothing committed"


@pytest.mark.fuse
def test_uid_option_hands_the_files_to_that_user(open_dir):
    m = mount(open_dir, "-o", f"allow_other,uid={NOBODY},gid={NOBODY}")
    main = m.mountpoint / "branches" / "main"
    assert os.stat(main / "zarr.json").st_uid == NOBODY
    result = sh_as_nobody(
        f"printf abc > {main / 'mine.tmp'} && cat {main / 'mine.tmp'} && "
        f"cat {main / '.icefs' / 'status'} > /dev/null"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "abc"


def test_world_readable_config_with_secrets_is_warned(tmp_path):
    config = tmp_path / "m.toml"
    config.write_text(
        f'storage = "{tmp_path / "nothing"}"\nmountpoint = "{tmp_path}"\n'
        'secret_access_key = "hunter2-secret"\n'
    )
    config.chmod(0o644)
    result = run_icefs("mount", "--config", str(config))
    assert "holds secrets and every user can read it" in result.stderr
    assert "hunter2-secret" not in result.stderr + result.stdout
    config.chmod(0o600)
    result = run_icefs("mount", "--config", str(config))
    assert "every user can read it" not in result.stderr


@pytest.mark.fuse
def test_new_files_belong_to_their_maker_on_a_shared_mount(open_dir):
    """create and mkdir honour the caller and the mode it asked for (after its umask)."""
    m = mount(open_dir, "-o", "allow_other")
    shared = m.mountpoint / "branches" / "main" / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    made = sh_as_nobody(
        f"umask 022 && echo x > {shared / 'f.txt'} && touch {shared / 'f.txt'} && "
        f"echo y >> {shared / 'f.txt'} && chmod 600 {shared / 'f.txt'} && "
        f"umask 077 && mkdir {shared / 'd'} && echo z > {shared / 'd' / 'g.txt'} && "
        f"cat {shared / 'f.txt'}"
    )
    assert made.returncode == 0, made.stderr
    assert made.stdout == "x\ny\n"
    f = os.stat(shared / "f.txt")
    assert (f.st_uid, f.st_gid, f.st_mode & 0o7777) == (NOBODY, NOBODY, 0o600)
    d = os.stat(shared / "d")
    assert (d.st_uid, d.st_mode & 0o7777) == (NOBODY, 0o700), "mkdir's mode after umask 077"
    g = os.stat(shared / "d" / "g.txt")
    assert (g.st_uid, g.st_mode & 0o7777) == (NOBODY, 0o600)
    # root's own files keep the mount's defaults
    (shared / "root.txt").write_text("r")
    assert os.stat(shared / "root.txt").st_uid == 0
    # the sticky directory: nobody may not remove root's file
    refused = sh_as_nobody(f"rm -f {shared / 'root.txt'}")
    assert refused.returncode != 0, "sticky bit"
    assert (shared / "root.txt").exists()


@pytest.mark.fuse
def test_special_files_are_refused_with_eperm(open_dir):
    m = mount(open_dir)
    main = m.mountpoint / "branches" / "main"
    import socket

    with socket.socket(socket.AF_UNIX) as sock, pytest.raises(OSError) as info:
        sock.bind(str(main / "sock"))
    assert info.value.errno == errno.EPERM
    with pytest.raises(OSError) as info:
        os.mkfifo(main / "fifo")
    assert info.value.errno == errno.EPERM
