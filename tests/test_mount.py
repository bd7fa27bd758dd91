"""Real mounts: an `icefs mount` subprocess, spoken to through the kernel with plain file calls."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time

import icechunk
import numpy as np
import pytest
import zarr
from zarr.storage import LocalStore

from harness.mount import direct_get, direct_keys, run_icefs
from icefs.store.sample import sample_storage


def process_gone(pid: int) -> bool:
    """True once *pid* has exited (a zombie not yet reaped by its new parent counts)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_namespace_listing(sample_mount, sample_repo):
    mnt = sample_mount.mountpoint
    _, ids = sample_repo
    assert sorted(os.listdir(mnt)) == ["branches", "snapshots", "tags", "zarr2", "zarr2-decoded"]
    assert sorted(os.listdir(mnt / "branches")) == ["experiment", "main"]
    assert os.listdir(mnt / "tags") == ["v1.0"]
    assert set(os.listdir(mnt / "snapshots")) == {*ids.values(), "1CECHNKREP0F1RSTCMT0"}
    assert sorted(os.listdir(mnt / "branches" / "main")) == [
        "lat",
        "lon",
        "temperature",
        "time",
        "zarr.json",
    ]
    assert sorted(os.listdir(mnt / "branches" / "experiment")) == [
        "humidity",
        "lat",
        "lon",
        "temperature",
        "time",
        "zarr.json",
    ]
    assert os.path.isdir(mnt / ".icefs")
    assert ".icefs" not in os.listdir(mnt / "tags" / "v1.0")


@pytest.mark.parametrize("ref", ["branches/main", "tags/v1.0", "branches/experiment"])
def test_every_file_equals_icechunk(sample_mount, sample_repo, ref):
    path, ids = sample_repo
    sid = ids[ref.split("/")[1]]
    root = sample_mount.mountpoint / ref
    keys = direct_keys(path, sid)
    seen = sorted(
        os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files
    )
    assert seen == keys
    for key in keys:
        expected = direct_get(path, sid, key)
        assert expected is not None
        assert os.stat(root / key).st_size == len(expected)
        with open(root / key, "rb") as f:
            assert f.read() == expected, key
            f.seek(3)
            assert f.read(10) == expected[3:13]


def test_stat_attributes(sample_mount, sample_repo):
    path, ids = sample_repo
    mnt = sample_mount.mountpoint
    st = os.stat(mnt / "tags" / "v1.0" / "zarr.json")
    written = (
        icechunk.Repository.open(sample_storage(str(path)))
        .lookup_snapshot(ids["v1.0"])
        .written_at.timestamp()
    )
    assert abs(st.st_mtime - written) < 1e-3
    assert st.st_mode & 0o777 == 0o444
    assert st.st_uid == os.getuid()
    # cp reads st_blksize at a time (the kernel reads ahead meanwhile), and takes a file
    # with no blocks for sparse
    assert st.st_blksize == 128 << 10
    assert st.st_blocks == -(-st.st_size // 512) > 0
    d = os.stat(mnt / "tags" / "v1.0" / "temperature")
    assert d.st_mode == stat.S_IFDIR | 0o555
    assert d.st_nlink == 2
    # the attributes readdirplus hands the kernel (what `ls -l` shows) are the same
    for entry in os.scandir(mnt / "tags" / "v1.0" / "temperature"):
        got = entry.stat(follow_symlinks=False)
        want = 0o555 | stat.S_IFDIR if entry.is_dir() else 0o444 | stat.S_IFREG
        assert got.st_mode == want, entry.name
        assert abs(got.st_mtime - written) < 1e-3
        assert (got.st_blksize, got.st_blocks) == (128 << 10, -(-got.st_size // 512))
    assert os.stat(mnt / "branches" / "main" / "zarr.json").st_mode & 0o777 == 0o644
    assert os.stat(mnt / "tags" / "v1.0").st_ino == os.stat(mnt / "tags" / "v1.0").st_ino
    vfs = os.statvfs(mnt)
    assert vfs.f_namemax == 255


def test_big_tag_listing_replies_are_exact(tmp_path, mount_factory):
    """A tag directory of 300 chunk files is answered from replies built once (see
    `FuseOperations._readdir_fixed`): names, inode numbers and sizes must match."""
    path = tmp_path / "repo"
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(path)))
    session = repo.writable_session("main")
    rng = np.random.default_rng(1)
    data = np.concatenate([rng.integers(0, 2 + i % 9, 64, dtype="u1") for i in range(300)])
    zarr.group(store=session.store).create_array("a", shape=data.shape, chunks=(64,), dtype="u1")[
        :
    ] = data
    repo.create_tag("t", session.commit("300 chunks"))
    sizes = {
        key.rsplit("/", 1)[1]: len(direct_get(path, repo.lookup_tag("t"), key) or b"")
        for key in direct_keys(path, repo.lookup_tag("t"))
        if key.startswith("a/c/")
    }
    assert len(sizes) == 300
    assert len(set(sizes.values())) > 3
    chunks = mount_factory(path).mountpoint / "tags" / "t" / "a" / "c"
    for _ in range(2):  # the second walk reuses the replies the first one built
        seen = {}
        for entry in os.scandir(chunks):
            st = os.stat(chunks / entry.name)
            assert entry.inode() == st.st_ino, entry.name
            assert st.st_mode == stat.S_IFREG | 0o444
            seen[entry.name] = st.st_size
        assert seen == sizes
        assert len({os.stat(chunks / n).st_ino for n in seen}) == 300


def test_zarr_reads_through_localstore(sample_mount, sample_repo):
    path, ids = sample_repo
    repo = icechunk.Repository.open(sample_storage(str(path)))
    for ref, sid in (("tags/v1.0", ids["v1.0"]), ("branches/main", ids["main"])):
        direct = zarr.open_group(repo.readonly_session(snapshot_id=sid).store, mode="r")
        mounted = zarr.open_group(
            LocalStore(sample_mount.mountpoint / ref, read_only=True), mode="r"
        )
        assert dict(mounted.attrs) == dict(direct.attrs)
        for name in ("temperature", "lat", "lon", "time"):
            np.testing.assert_array_equal(mounted[name][:], direct[name][:])
        assert dict(mounted["temperature"].attrs) == dict(direct["temperature"].attrs)


def test_xarray_open_zarr_on_tag(sample_mount, sample_repo):
    xr = pytest.importorskip("xarray")
    path, _ids = sample_repo
    repo = icechunk.Repository.open(sample_storage(str(path)))
    direct = xr.open_zarr(repo.readonly_session(tag="v1.0").store, consolidated=False)
    mounted = xr.open_zarr(str(sample_mount.mountpoint / "tags" / "v1.0"), consolidated=False)
    xr.testing.assert_identical(mounted.load(), direct.load())
    assert mounted.temperature.dims == ("time", "lat", "lon")


WRITES = [
    ("create", lambda p: open(p / "new.txt", "w")),
    ("overwrite", lambda p: open(p / "zarr.json", "w")),
    ("append", lambda p: open(p / "zarr.json", "a")),
    ("rdwr", lambda p: os.open(p / "zarr.json", os.O_RDWR)),
    ("mkdir", lambda p: os.mkdir(p / "d")),
    ("rmdir", lambda p: os.rmdir(p / "lat")),
    ("unlink", lambda p: os.unlink(p / "zarr.json")),
    ("rename", lambda p: os.rename(p / "zarr.json", p / "x.json")),
    ("link", lambda p: os.link(p / "zarr.json", p / "x.json")),
    ("symlink", lambda p: os.symlink("zarr.json", p / "x.json")),
    ("truncate", lambda p: os.truncate(p / "zarr.json", 0)),
    ("chmod", lambda p: os.chmod(p / "zarr.json", 0o600)),
    ("utime", lambda p: os.utime(p / "zarr.json", (0, 0))),
    ("setxattr", lambda p: os.setxattr(p / "zarr.json", "user.x", b"1")),
]


@pytest.mark.parametrize("ref", ["tags/v1.0", "snapshots/1CECHNKREP0F1RSTCMT0"])
@pytest.mark.parametrize(("what", "op"), WRITES, ids=[w for w, _ in WRITES])
def test_every_write_is_erofs(sample_mount, ref, what, op):
    root = sample_mount.mountpoint / ref
    if ref.startswith("snapshots") and what not in ("create", "mkdir", "symlink"):
        root = sample_mount.mountpoint / "tags" / "v1.0"
    with pytest.raises(OSError) as info:
        op(root)
    assert info.value.errno == errno.EROFS, what


def test_unknown_refs_are_enoent(sample_mount):
    mnt = sample_mount.mountpoint
    for path in (
        "branches/nope",
        "tags/nope",
        "snapshots/0000000000000000000X",
        "snapshots/bad",
        "nothing",
        "tags/v1.0/nope",
        "tags/v1.0/temperature/c/99",
    ):
        with pytest.raises(FileNotFoundError):
            os.stat(mnt / path)


def test_control_files_and_xattrs(sample_mount, sample_repo):
    _, ids = sample_repo
    mnt = sample_mount.mountpoint
    assert (mnt / "tags/v1.0/.icefs/snapshot_id").read_text().strip() == ids["v1.0"]
    status = json.loads((mnt / "branches/main/.icefs/status").read_text())
    assert status["snapshot_id"] == ids["main"]
    assert status["kind"] == "branch"
    log = (mnt / "branches/experiment/.icefs/log").read_text().splitlines()
    assert log[0].split()[0] == ids["experiment"]
    assert log[0].endswith("experiment: add humidity")
    assert int((mnt / ".icefs/pid").read_text()) == sample_mount.proc.pid
    assert (mnt / ".icefs/version").read_text().strip()
    stats = json.loads((mnt / ".icefs/stats").read_text())
    assert stats["requests"]["lookup"]["count"] > 0
    assert stats["bytes_read"] > 0
    assert os.getxattr(mnt / "tags/v1.0", "user.icefs.snapshot_id") == ids["v1.0"].encode()
    assert "user.icefs.snapshot_id" in os.listxattr(mnt / "branches/main")
    with pytest.raises(OSError) as info:
        os.getxattr(mnt / "tags/v1.0", "user.nothing")
    assert info.value.errno == errno.ENODATA
    with pytest.raises(PermissionError):
        open(mnt / "branches/main/.icefs/status", "w")
    with pytest.raises(OSError) as info:
        open(mnt / "tags/v1.0/.icefs/commit", "w")
    assert info.value.errno == errno.EROFS, "commit exists on writable branches only"


def test_sequential_scan_is_read_ahead(sample_mount):
    mnt = sample_mount.mountpoint
    chunks = sorted(
        (mnt / "tags/v1.0/temperature/c").glob("*/*/*"),
        key=lambda p: tuple(int(n) for n in p.parts[-3:]),
    )
    assert len(chunks) == 6
    for chunk in chunks:  # C order: read-ahead fetches the next chunks
        chunk.read_bytes()
    prefetch = json.loads((mnt / ".icefs/stats").read_text())["prefetch"]
    assert prefetch["hits"] >= len(chunks) - 2, prefetch
    text = subprocess.run(
        [sys.executable, "-m", "icefs", "stats", str(mnt)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "prefetched chunks read" in text


def test_ls_l_asks_for_foreign_xattrs_once(sample_mount, sample_repo):
    """security.* and system.* answer ENOTSUP: `ls -l` stops asking on this filesystem
    (with ENODATA it asked twice per file), while user.icefs.* stays readable."""
    _, ids = sample_repo
    mnt = sample_mount.mountpoint
    for name in ("security.selinux", "system.posix_acl_access"):
        with pytest.raises(OSError) as info:
            os.getxattr(mnt / "tags/v1.0/zarr.json", name)
        assert info.value.errno == errno.EOPNOTSUPP, name

    def getxattrs() -> int:
        stats = json.loads((mnt / ".icefs/stats").read_text())
        return int(stats["requests"].get("getxattr", {}).get("count", 0))

    before = getxattrs()
    listing = subprocess.run(
        ["ls", "-lR", str(mnt / "tags/v1.0")],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    files = sum(1 for line in listing.splitlines() if line[:1] in "-d")
    assert files > 20
    assert getxattrs() - before <= 4, "asked per file"
    assert os.getxattr(mnt / "tags/v1.0", "user.icefs.snapshot_id") == ids["v1.0"].encode()


def test_noxattr_stops_the_kernel_asking(sample_repo, mount_factory):
    path, _ = sample_repo
    mnt = mount_factory(path, "-o", "noxattr").mountpoint
    for name in ("user.icefs.snapshot_id", "security.selinux"):
        with pytest.raises(OSError) as info:
            os.getxattr(mnt / "tags/v1.0", name)
        assert info.value.errno == errno.EOPNOTSUPP
    with pytest.raises(OSError) as info:  # the kernel's own answer: no ACL
        os.getxattr(mnt / "tags/v1.0", "system.posix_acl_access")
    assert info.value.errno == errno.ENODATA
    with pytest.raises(OSError) as info:
        os.listxattr(mnt / "tags/v1.0")
    assert info.value.errno == errno.EOPNOTSUPP
    listing = subprocess.run(
        ["ls", "-lR", str(mnt / "tags/v1.0")],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "zarr.json" in listing
    requests = json.loads((mnt / ".icefs/stats").read_text())["requests"]
    assert requests["getxattr"]["count"] == 1, "ENOSYS once, then the kernel answers itself"
    assert requests["listxattr"]["count"] == 1


def test_new_branch_appears_within_refresh(sample_repo, mount_factory, tmp_path):
    path, ids = sample_repo
    m = mount_factory(path, "--refresh", "0.2")
    repo = icechunk.Repository.open(sample_storage(str(path)))
    name = f"side-{os.getpid()}-{time.monotonic_ns()}"
    repo.create_branch(name, ids["v1.0"])
    try:
        deadline = time.monotonic() + 10
        while name not in os.listdir(m.mountpoint / "branches"):
            assert time.monotonic() < deadline, "branch did not appear"
            time.sleep(0.05)
        assert (m.mountpoint / "branches" / name / ".icefs/snapshot_id").read_text().strip() == ids[
            "v1.0"
        ]
    finally:
        repo.delete_branch(name)
    deadline = time.monotonic() + 10
    while name in os.listdir(m.mountpoint / "branches"):
        assert time.monotonic() < deadline, "deleted branch did not disappear"
        time.sleep(0.05)


def test_concurrent_readers(sample_mount, sample_repo):
    path, ids = sample_repo
    root = sample_mount.mountpoint / "tags" / "v1.0"
    keys = direct_keys(path, ids["v1.0"])
    expected = {k: direct_get(path, ids["v1.0"], k) for k in keys}
    failures: list[str] = []

    def reader(n):
        for key in keys[n % len(keys) :] + keys[: n % len(keys)]:
            if (root / key).read_bytes() != expected[key]:
                failures.append(key)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not failures


def test_memory_repository(mount_factory):
    m = mount_factory("memory://")
    assert os.listdir(m.mountpoint / "branches") == ["main"]
    assert os.listdir(m.mountpoint / "branches" / "main") == []
    assert m.umount() == 0


def test_read_only_option(sample_repo, mount_factory):
    path, _ = sample_repo
    m = mount_factory(path, "--read-only")
    assert os.stat(m.mountpoint / "branches/main/zarr.json").st_mode & 0o777 == 0o444
    with pytest.raises(OSError) as info:
        open(m.mountpoint / "branches/main/zarr.json", "w")
    assert info.value.errno == errno.EROFS


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_unmounts_cleanly(sample_repo, mount_factory, sig):
    path, _ = sample_repo
    m = mount_factory(path)
    m.proc.send_signal(sig)
    assert m.proc.wait(timeout=30) == 0
    assert not os.path.ismount(m.mountpoint)


def test_fusermount_unmount_ends_daemon(sample_mount):
    assert sample_mount.umount() == 0


# -- the background mode, umount and start-up errors ------------------------------------------


@pytest.mark.fuse
def test_background_mount_and_umount(sample_repo, tmp_path, stop_later):
    path, _ = sample_repo
    mnt = tmp_path / "bg"
    mnt.mkdir()
    stop_later(mnt)
    result = run_icefs("mount", str(path), str(mnt), "--log-file", str(tmp_path / "bg.log"))
    assert result.returncode == 0, result.stderr
    assert os.path.ismount(mnt), "mounted when the command returns"
    pid = int((mnt / ".icefs/pid").read_text())
    assert "main" in os.listdir(mnt / "branches")
    again = run_icefs("mount", str(path), str(mnt))
    assert again.returncode == 4
    assert "already mounted" in again.stderr
    result = run_icefs("umount", str(mnt))
    assert result.returncode == 0, result.stderr
    assert not os.path.ismount(mnt)
    assert process_gone(pid), "umount waits for the daemon to exit"
    assert run_icefs("umount", str(mnt)).returncode == 7


def test_umount_cleans_a_dead_mount(sample_repo, mount_factory):
    path, _ = sample_repo
    m = mount_factory(path)
    m.proc.kill()
    m.proc.wait(timeout=10)
    with pytest.raises(OSError) as info:
        os.listdir(m.mountpoint)
    assert info.value.errno == errno.ENOTCONN
    result = run_icefs("umount", str(m.mountpoint))
    assert result.returncode == 0, result.stderr
    assert "dead mount" in result.stdout
    assert os.listdir(m.mountpoint) == []


def test_new_mount_cleans_a_dead_mount(sample_repo, mount_factory):
    path, _ = sample_repo
    m = mount_factory(path)
    m.proc.kill()
    m.proc.wait(timeout=10)
    again = mount_factory(path)
    assert "main" in os.listdir(again.mountpoint / "branches")


@pytest.mark.parametrize(
    "case",
    [
        "missing-repo",
        "not-a-repo",
        "file-as-repo",
        "missing-mnt",
        "mnt-is-file",
        "bad-option",
        "bad-scheme",
    ],
)
def test_startup_errors(case, sample_repo, tmp_path):
    path, _ = sample_repo
    mnt = tmp_path / "m"
    mnt.mkdir()
    storage, mountpoint, extra = str(path), str(mnt), []
    if case == "missing-repo":
        storage = str(tmp_path / "nothing-here")
    elif case == "not-a-repo":
        (tmp_path / "plain").mkdir()
        (tmp_path / "plain" / "f").write_text("x")
        storage = str(tmp_path / "plain")
    elif case == "file-as-repo":
        (tmp_path / "afile").write_text("x")
        storage = str(tmp_path / "afile")
    elif case == "missing-mnt":
        mountpoint = str(tmp_path / "nope")
    elif case == "mnt-is-file":
        (tmp_path / "f").write_text("x")
        mountpoint = str(tmp_path / "f")
    elif case == "bad-option":
        extra = ["-o", "frobnicate"]
    elif case == "bad-scheme":
        storage = "ftp://host/repo"
    expected_code = {
        "missing-repo": 3,
        "not-a-repo": 3,
        "file-as-repo": 3,
        "missing-mnt": 4,
        "mnt-is-file": 4,
        "bad-option": 2,
        "bad-scheme": 2,
    }[case]
    for mode in ([], ["--foreground"]):
        result = run_icefs("mount", storage, mountpoint, *mode, *extra, timeout=60)
        assert result.returncode == expected_code, (case, mode, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr
        assert not os.path.ismount(mnt)


def test_mode_create_and_open_or_create(tmp_path, mount_factory):
    repo = tmp_path / "fresh"
    m = mount_factory(repo, "--mode", "create", name="a")
    assert os.listdir(m.mountpoint / "branches") == ["main"]
    assert m.umount() == 0
    assert icechunk.Repository.exists(sample_storage(str(repo)))
    result = run_icefs("mount", str(repo), str(tmp_path / "a"), "--mode", "create")
    assert result.returncode == 3
    assert "already exists" in result.stderr
    m = mount_factory(repo, "--mode", "open_or_create", name="b")
    assert os.listdir(m.mountpoint / "branches") == ["main"]


def test_fuse_unavailable_is_a_clear_error(sample_repo, tmp_path):
    path, _ = sample_repo
    env = dict(os.environ, PATH="/nonexistent")
    result = subprocess.run(
        [sys.executable, "-m", "icefs", "mount", str(path), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 5
    assert "fusermount3" in result.stderr


def test_odd_names(sample_mount):
    mnt = sample_mount.mountpoint
    with pytest.raises(FileNotFoundError):
        os.stat(os.fsencode(mnt / "tags" / "v1.0") + b"/\xff\xfe")
    with pytest.raises(OSError) as info:
        os.stat(mnt / "tags" / ("x" * 256))
    assert info.value.errno == errno.ENAMETOOLONG
    assert os.stat(mnt / "tags/v1.0/./temperature/../zarr.json").st_size > 0


@pytest.mark.fuse
def test_demo_builds_mounts_and_umounts(tmp_path, stop_later):
    base = tmp_path / "demo"
    stop_later(base / "mnt")
    result = run_icefs("demo", str(base), timeout=180)
    assert result.returncode == 0, result.stderr
    assert "icefs umount" in result.stdout
    mnt = base / "mnt"
    assert sorted(os.listdir(mnt / "branches")) == ["experiment", "main"]
    assert os.listdir(mnt / "tags") == ["v1.0"]
    log = (mnt / "branches/main/.icefs/log").read_text().splitlines()
    assert len(log) == 3, "initial commit + two commits"
    temp = zarr.open_array(
        LocalStore(mnt / "tags/v1.0", read_only=True), path="temperature", mode="r"
    )
    assert temp.shape == (8, 45, 90)
    assert run_icefs("umount", str(mnt)).returncode == 0
    again = run_icefs("demo", str(base), timeout=180)
    assert again.returncode == 0, again.stderr
    assert "reusing" in again.stdout
    assert run_icefs("umount", str(mnt)).returncode == 0


def test_read_ahead_is_raised(sample_mount):
    dev = os.stat(sample_mount.mountpoint).st_dev
    path = f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb"
    if os.geteuid() != 0:
        pytest.fail("the mount tests run as root here; read-ahead needs it")
    with open(path) as f:
        assert int(f.read()) == 1024
