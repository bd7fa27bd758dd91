"""Writes through real mounts: zarr, xarray and shell tools into branches, commits, conflicts."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess

import icechunk
import numpy as np
import pytest
import zarr
from zarr.storage import LocalStore

from harness.mount import run_icefs
from icefs.store.sample import sample_storage


@pytest.fixture
def repo_path(tmp_path):
    """An empty local repository (only its root snapshot)."""
    path = tmp_path / "repo"
    icechunk.Repository.create(sample_storage(str(path)))
    return path


def readonly_store(repo_path, branch="main"):
    repo = icechunk.Repository.open(sample_storage(str(repo_path)))
    return repo.readonly_session(branch=branch).store


def tip_message(repo_path, branch="main"):
    repo = icechunk.Repository.open(sample_storage(str(repo_path)))
    return next(iter(repo.ancestry(branch=branch))).message


def commit(ref_dir, message):
    with open(ref_dir / ".icefs" / "commit", "w") as f:
        f.write(message)


def status(ref_dir):
    return json.loads((ref_dir / ".icefs" / "status").read_text())


@pytest.mark.parametrize("calls", ["direct", "loop thread"])
def test_zarr_write_commit_and_read_directly(repo_path, mount_factory, monkeypatch, calls):
    """Both ways Icechunk's calls reach trio (see `Bridge.run`) carry the whole path."""
    if calls == "loop thread":
        monkeypatch.setenv("ICEFS_DIRECT_CALLS", "0")
    m = mount_factory(repo_path)
    assert json.loads((m.mountpoint / ".icefs/status").read_text())["icechunk_calls"] == calls
    main = m.mountpoint / "branches" / "main"
    g = zarr.open_group(LocalStore(main), mode="w", attributes={"title": "via icefs"})
    a = g.create_array("temp", shape=(20, 30), chunks=(10, 10), dtype="f4", fill_value=0)
    b = g.create_array("flags", shape=(7,), chunks=(3,), dtype="u1")
    expected = np.arange(600, dtype="f4").reshape(20, 30)
    a[:] = expected
    a[5:15, 2:4] = -1  # overwrite a slice across chunks
    expected[5:15, 2:4] = -1
    b[:] = np.arange(7, dtype="u1")
    # read-your-writes before the commit, listed and stat'ed too
    np.testing.assert_array_equal(
        zarr.open_array(LocalStore(main), path="temp", mode="r")[:], expected
    )
    assert sorted(os.listdir(main / "temp" / "c")) == ["0", "1"]
    assert os.stat(main / "temp" / "c" / "0" / "0").st_size > 0
    st = status(main)
    assert st["has_uncommitted_changes"] is True
    assert st["changed_chunks"] == 6 + 3
    assert os.getxattr(main, "user.icefs.uncommitted") == b"1"
    commit(main, "write through icefs")
    st = status(main)
    assert st["has_uncommitted_changes"] is False
    assert st["last_commit"]["message"] == "write through icefs"
    assert st["snapshot_id"] == st["last_commit"]["snapshot_id"]
    direct = zarr.open_group(readonly_store(repo_path), mode="r")
    np.testing.assert_array_equal(direct["temp"][:], expected)
    np.testing.assert_array_equal(direct["flags"][:], np.arange(7, dtype="u1"))
    assert direct.attrs["title"] == "via icefs"
    assert tip_message(repo_path) == "write through icefs"


def test_xarray_to_zarr_round_trip(repo_path, mount_factory):
    xr = pytest.importorskip("xarray")
    ds = xr.Dataset(
        {"t": (("time", "x"), np.random.default_rng(0).random((6, 40)).astype("f4"))},
        coords={"time": np.arange(6), "x": np.linspace(0, 1, 40)},
        attrs={"source": "test"},
    )
    m = mount_factory(repo_path, name="a")
    target = m.mountpoint / "branches" / "main" / "ds"
    ds.to_zarr(str(target), zarr_format=3, consolidated=False)
    commit(m.mountpoint / "branches" / "main", "xarray dataset")
    assert m.umount() == 0
    again = mount_factory(repo_path, name="b")
    via_mount = xr.open_zarr(str(again.mountpoint / "branches/main/ds"), consolidated=False)
    xr.testing.assert_identical(via_mount.load(), ds)
    direct = xr.open_zarr(readonly_store(repo_path), group="ds", consolidated=False)
    xr.testing.assert_identical(direct.load(), ds)


def _native_zarr(path):
    g = zarr.open_group(LocalStore(path), mode="w")
    a = g.create_array("v", shape=(8, 8), chunks=(4, 4), dtype="i4")
    a[:] = np.arange(64, dtype="i4").reshape(8, 8)
    return np.arange(64, dtype="i4").reshape(8, 8)


def test_shell_tools(repo_path, mount_factory, tmp_path):
    m = mount_factory(repo_path)
    main = m.mountpoint / "branches" / "main"
    expected = _native_zarr(tmp_path / "native.zarr")
    # cp -r of a native Zarr directory into the branch
    subprocess.run(["cp", "-r", str(tmp_path / "native.zarr"), str(main / "copied")], check=True)
    np.testing.assert_array_equal(
        zarr.open_array(LocalStore(main / "copied"), path="v")[:], expected
    )
    # rsync -a with its temporaries (dot-files renamed into place)
    subprocess.run(
        ["rsync", "-a", f"{tmp_path / 'native.zarr'}/", str(main / "synced")], check=True
    )
    np.testing.assert_array_equal(
        zarr.open_array(LocalStore(main / "synced"), path="v")[:], expected
    )
    # sed -i on a zarr.json (temp file + rename)
    subprocess.run(
        [
            "sed",
            "-i",
            's/"attributes": {}/"attributes": {"edited": true}/',
            str(main / "copied" / "v" / "zarr.json"),
        ],
        check=True,
    )
    assert zarr.open_array(LocalStore(main / "copied"), path="v").attrs["edited"] is True
    # dd conv=notrunc random write, then truncate, on a scratch file
    scratch = main / "notes.bin"
    scratch.write_bytes(b"a" * 100)
    subprocess.run(
        [
            "dd",
            "if=/dev/zero",
            f"of={scratch}",
            "bs=1",
            "seek=10",
            "count=5",
            "conv=notrunc",
            "status=none",
        ],
        check=True,
    )
    data = scratch.read_bytes()
    assert data[:10] == b"a" * 10
    assert data[10:15] == b"\0" * 5
    assert len(data) == 100
    subprocess.run(["truncate", "-s", "20", str(scratch)], check=True)
    assert scratch.read_bytes() == b"a" * 10 + b"\0" * 5 + b"a" * 5
    # dd conv=notrunc on a chunk: same length, so zarr can still decode it... rewrite it whole
    chunk = main / "copied" / "v" / "c" / "0" / "0"
    original = chunk.read_bytes()
    subprocess.run(["dd", f"if={chunk}", f"of={main / 'chunk.bak'}", "status=none"], check=True)
    subprocess.run(
        ["dd", f"if={main / 'chunk.bak'}", f"of={chunk}", "conv=notrunc", "status=none"], check=True
    )
    assert chunk.read_bytes() == original
    # mv of a file (key to key) and of a scratch file onto a key
    os.rename(main / "copied" / "v" / "c" / "1" / "1", main / "copied" / "v" / "c" / "0" / "1")
    assert not (main / "copied" / "v" / "c" / "1" / "1").exists()
    # mv of a directory: EXDEV (mv falls back to copying)
    with pytest.raises(OSError) as info:
        os.rename(main / "synced", main / "moved")
    assert info.value.errno == errno.EXDEV
    subprocess.run(["mv", str(main / "synced"), str(main / "moved")], check=True)
    np.testing.assert_array_equal(
        zarr.open_array(LocalStore(main / "moved"), path="v")[:], expected
    )
    # rm -r of a whole node
    subprocess.run(["rm", "-r", str(main / "copied")], check=True)
    assert not (main / "copied").exists()
    st = status(main)
    assert "notes.bin" in st["scratch_files"]
    assert "chunk.bak" in st["scratch_files"]
    commit(main, "shell tools")
    keys = sorted(readonly_store(repo_path).list())
    assert not any(k.startswith("copied/") or k.startswith("synced/") for k in keys)
    assert "moved/v/zarr.json" in keys
    assert "notes.bin" not in keys, "scratch files are never committed"
    assert scratch.exists(), "scratch files stay in the mount"


def test_validation_errors_keep_previous_content(repo_path, mount_factory):
    m = mount_factory(repo_path)
    main = m.mountpoint / "branches" / "main"
    g = zarr.open_group(LocalStore(main), mode="w")
    a = g.create_array("a", shape=(4,), chunks=(2,), dtype="i4")
    a[:] = [1, 2, 3, 4]
    commit(main, "base")
    before = (main / "a" / "zarr.json").read_bytes()

    def write(path, data):
        with open(path, "wb") as f:
            f.write(data)

    cases = [
        (main / "a" / "zarr.json", b"{not json", errno.EINVAL),
        (main / "a" / "c" / "7", b"x" * 8, errno.EINVAL),  # outside the grid
        (main / "m" / "c" / "0", b"x" * 8, errno.EINVAL),  # wrong dimensionality
    ]
    g.create_array("m", shape=(2, 2), chunks=(1, 1), dtype="i4")
    os.makedirs(main / "m" / "c")
    for path, data, code in cases:
        with pytest.raises(OSError) as info:
            write(path, data)
        assert info.value.errno == code, path
        assert str(path.relative_to(main)) in status(main)["last_error"]
    assert (main / "a" / "zarr.json").read_bytes() == before
    np.testing.assert_array_equal(zarr.open_array(LocalStore(main), path="a")[:], [1, 2, 3, 4])
    # a scratch file renamed onto a key is validated at the rename
    (main / "a" / "bad.tmp").write_bytes(b"[]")
    with pytest.raises(OSError) as info:
        os.rename(main / "a" / "bad.tmp", main / "a" / "zarr.json")
    assert info.value.errno == errno.EINVAL
    assert (main / "a" / "bad.tmp").exists()
    assert (main / "a" / "zarr.json").read_bytes() == before


def test_writes_past_an_uncompressed_chunk_fail_at_the_write(repo_path, mount_factory):
    """EFBIG at the write() that passes the exact size: shells ignore errors of close."""
    m = mount_factory(repo_path)
    main = m.mountpoint / "branches" / "main"
    g = zarr.open_group(LocalStore(main), mode="w")
    g.create_array("raw", shape=(8,), chunks=(4,), dtype="i4", compressors=None)[:] = 7
    g.create_array("packed", shape=(8,), chunks=(4,), dtype="i4")[:] = 7
    commit(main, "base")
    chunk = main / "raw" / "c" / "1"
    before = chunk.read_bytes()
    assert len(before) == 16
    appended = subprocess.run(
        ["bash", "-c", f"echo x >> {chunk}"], capture_output=True, text=True, check=False
    )
    assert appended.returncode != 0, "bash sees the failed write"
    assert "File too large" in appended.stderr
    assert chunk.read_bytes() == before
    assert "exactly 16 bytes" in status(main)["last_error"]
    fd = os.open(chunk, os.O_WRONLY)
    try:
        assert os.write(fd, b"\1" * 16) == 16, "within the size: fine"
        with pytest.raises(OSError) as info:
            os.pwrite(fd, b"\2", 16)
        assert info.value.errno == errno.EFBIG
        with pytest.raises(OSError) as info:
            os.ftruncate(fd, 17)
        assert info.value.errno == errno.EFBIG
    finally:
        os.close(fd)
    assert chunk.read_bytes() == b"\1" * 16
    # a compressed chunk has no size known before its bytes: refused at close, as before
    with pytest.raises(OSError) as info, open(main / "packed" / "c" / "0", "ab") as f:
        f.write(b"x")
    assert info.value.errno == errno.EINVAL


def _fallocate(path, mode: int, offset: int, length: int) -> int:
    """fallocate(2) itself (glibc's posix_fallocate would fall back to writing zeros):
    0, or the errno."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        return 0 if libc.fallocate(fd, mode, offset, length) == 0 else ctypes.get_errno()
    finally:
        os.close(fd)


KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE = 0x01, 0x02, 0x10


def test_fallocate_on_scratch_files_and_chunks(repo_path, mount_factory):
    """Mode 0 and FALLOC_FL_KEEP_SIZE work; the other modes are EOPNOTSUPP."""
    m = mount_factory(repo_path)
    main = m.mountpoint / "branches" / "main"
    scratch = main / "reserve.tmp"
    assert _fallocate(scratch, 0, 0, 1 << 20) == 0
    assert scratch.stat().st_size == 1 << 20
    assert scratch.read_bytes() == bytes(1 << 20)
    assert _fallocate(scratch, KEEP_SIZE, 0, 4 << 20) == 0
    assert scratch.stat().st_size == 1 << 20, "KEEP_SIZE keeps it"
    assert _fallocate(scratch, 0, 0, 1000) == 0, "shorter than the file: nothing changes"
    assert scratch.stat().st_size == 1 << 20
    for mode in (PUNCH_HOLE | KEEP_SIZE, ZERO_RANGE):
        assert _fallocate(scratch, mode, 0, 10) == errno.EOPNOTSUPP, mode
    # a chunk of an uncompressed array: reserved up to its exact size, then written
    g = zarr.open_group(LocalStore(main), mode="w")
    g.create_array("raw", shape=(8,), chunks=(4,), dtype="i4", compressors=None)
    commit(main, "array")
    (main / "raw" / "c").mkdir()
    chunk = main / "raw" / "c" / "1"
    assert _fallocate(chunk, 0, 0, 16) == 0, "a new chunk, reserved: 16 zero bytes stored"
    assert chunk.read_bytes() == bytes(16)
    assert _fallocate(chunk, 0, 0, 17) == errno.EFBIG, "past its exact 16 bytes"
    with open(chunk, "r+b") as f:
        f.write(np.arange(4, dtype="<i4").tobytes())
    commit(main, "chunk")
    stored = zarr.open_array(readonly_store(repo_path), path="raw", mode="r")
    np.testing.assert_array_equal(stored[4:], np.arange(4))


def test_chunks_before_their_array_wait_in_the_mount(repo_path, mount_factory):
    m = mount_factory(repo_path)
    main = m.mountpoint / "branches" / "main"
    zarr.open_group(LocalStore(main), mode="w")
    os.makedirs(main / "later" / "c")
    (main / "later" / "c" / "1").write_bytes(np.array([7, 8], dtype="i4").tobytes())
    assert status(main)["pending_chunks"] == ["later/c/1"]
    fd = os.open(main / "later" / "c" / "1", os.O_WRONLY)
    try:
        with pytest.raises(OSError) as info:
            os.fsync(fd)
        assert info.value.errno == errno.ENOENT, "fsync cannot make a chunk of no array durable"
    finally:
        os.close(fd)
    commit(main, "without the pending chunk")
    assert "later/c/1" not in list(readonly_store(repo_path).list())
    # the array's metadata arrives: the waiting chunk is stored with it
    g = zarr.open_group(LocalStore(main), mode="r+")
    g.create_array("later", shape=(4,), chunks=(2,), dtype="i4", compressors=None, fill_value=0)
    assert status(main)["pending_chunks"] == []
    np.testing.assert_array_equal(zarr.open_array(LocalStore(main), path="later")[:], [0, 0, 7, 8])


@pytest.mark.parametrize("how", ["fusermount", "icefs-umount", "SIGTERM", "SIGINT"])
def test_commit_at_unmount(repo_path, mount_factory, how):
    m = mount_factory(repo_path)
    main = m.mountpoint / "branches" / "main"
    zarr.open_group(LocalStore(main), mode="w", attributes={"how": how})
    if how == "fusermount":
        assert m.umount() == 0
    elif how == "icefs-umount":
        assert run_icefs("umount", str(m.mountpoint)).returncode == 0
        assert m.proc.wait(timeout=30) == 0
    else:
        m.proc.send_signal(getattr(signal, how))
        assert m.proc.wait(timeout=30) == 0
    assert tip_message(repo_path).startswith("icefs: automatic commit at unmount of ")
    assert str(m.mountpoint) in tip_message(repo_path)
    assert zarr.open_group(readonly_store(repo_path), mode="r").attrs["how"] == how
    assert "committed branch main at unmount" in m.log_text()


def test_discard_at_unmount(repo_path, mount_factory):
    m = mount_factory(repo_path, "--on-unmount", "discard")
    zarr.open_group(LocalStore(m.mountpoint / "branches" / "main"), mode="w")
    assert m.umount() == 0
    assert tip_message(repo_path) == "Repository initialized"


def test_discard_and_cli(repo_path, mount_factory):
    m = mount_factory(repo_path)
    main = m.mountpoint / "branches" / "main"
    zarr.open_group(LocalStore(main), mode="w", attributes={"x": 1})
    result = run_icefs("status", str(main / "zarr.json"))
    assert result.returncode == 0
    assert "uncommitted" in result.stdout
    result = run_icefs("discard", str(main))
    assert result.returncode == 0, result.stderr
    assert not (main / "zarr.json").exists()
    assert run_icefs("commit", str(main), "-m", "nothing").stdout.startswith("nothing to commit")
    zarr.open_group(LocalStore(main), mode="w", attributes={"x": 2})
    result = run_icefs("commit", str(main), "-m", "from the cli")
    assert result.returncode == 0, result.stderr
    sid = result.stdout.strip()
    assert json.loads(run_icefs("status", str(main), "--json").stdout)["snapshot_id"] == sid
    assert tip_message(repo_path) == "from the cli"
    assert run_icefs("commit", str(main), "-m", "  ").returncode == 10
    assert run_icefs("commit", str(m.mountpoint / "tags"), "-m", "x").returncode == 7
    commit(main, "")  # closed with nothing written: no errno can tell it (docs/semantics.md)
    assert "nothing was written" in status(main)["last_error"]
    assert tip_message(repo_path) == "from the cli"


def test_spooling_past_the_write_buffer(repo_path, mount_factory, tmp_path):
    cache = tmp_path / "cache"
    m = mount_factory(repo_path, "--write-buffer", "1M", "--cache-dir", str(cache))
    main = m.mountpoint / "branches" / "main"
    big = os.urandom(3 * 1024 * 1024 + 123)
    with open(main / "big.bin", "wb") as f:
        for i in range(0, len(big), 65536):
            f.write(big[i : i + 65536])
        assert any(cache.iterdir()), "a spool directory exists while writing"
    assert (main / "big.bin").read_bytes() == big
    g = zarr.open_group(LocalStore(main), mode="w")
    a = g.create_array("z", shape=(1024, 1024), chunks=(1024, 1024), dtype="f4", compressors=None)
    values = np.random.default_rng(1).random((1024, 1024), dtype="f4")
    a[:] = values  # one 4 MiB chunk through a 1 MiB buffer
    commit(main, "big chunk")
    np.testing.assert_array_equal(zarr.open_array(readonly_store(repo_path), path="z")[:], values)
    assert m.umount() == 0
    assert not any(cache.iterdir()), "the spool is removed at unmount"


def test_branch_view_follows_tip_when_clean(repo_path, mount_factory):
    m = mount_factory(repo_path, "--refresh", "0.2")
    main = m.mountpoint / "branches" / "main"
    repo = icechunk.Repository.open(sample_storage(str(repo_path)))
    session = repo.writable_session("main")
    zarr.open_group(session.store, mode="w", attributes={"from": "outside"})
    sid = session.commit("outside commit")
    import time

    deadline = time.monotonic() + 10
    while (main / ".icefs/snapshot_id").read_text().strip() != sid:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert json.loads((main / "zarr.json").read_text())["attributes"] == {"from": "outside"}


def test_two_mounts_rebase_and_conflict(repo_path, mount_factory):
    first = mount_factory(repo_path, name="one")
    base = zarr.open_group(LocalStore(first.mountpoint / "branches/main"), mode="w")
    arr = base.create_array("a", shape=(4,), chunks=(1,), dtype="i4", fill_value=0)
    arr[:] = 0
    commit(first.mountpoint / "branches/main", "base")
    second = mount_factory(repo_path, name="two")
    one = first.mountpoint / "branches/main"
    two = second.mountpoint / "branches/main"
    # disjoint chunks: both land, the second by rebasing
    zarr.open_array(LocalStore(one), path="a", mode="r+")[0] = 10
    zarr.open_array(LocalStore(two), path="a", mode="r+")[1] = 20
    commit(one, "one writes chunk 0")
    commit(two, "two writes chunk 1")
    np.testing.assert_array_equal(
        zarr.open_array(readonly_store(repo_path), path="a")[:], [10, 20, 0, 0]
    )
    # the same chunk: the second commit fails with EBUSY and keeps its changes
    zarr.open_array(LocalStore(one), path="a", mode="r+")[2] = 30
    zarr.open_array(LocalStore(two), path="a", mode="r+")[2] = 31
    commit(one, "one writes chunk 2")
    with pytest.raises(OSError) as info:
        commit(two, "two writes chunk 2")
    assert info.value.errno == errno.EBUSY
    st = status(two)
    assert st["has_uncommitted_changes"] is True
    assert st["conflicts"]
    assert run_icefs("commit", str(two), "-m", "again").returncode == 9
    np.testing.assert_array_equal(
        zarr.open_array(readonly_store(repo_path), path="a")[:], [10, 20, 30, 0]
    )
    # resolve by discarding: the view follows the tip again
    assert run_icefs("discard", str(two)).returncode == 0
    np.testing.assert_array_equal(zarr.open_array(LocalStore(two), path="a")[:], [10, 20, 30, 0])


def test_exclusive_create_link_unlink_and_mkdir(repo_path, mount_factory):
    m = mount_factory(repo_path)
    main = m.mountpoint / "branches" / "main"
    zarr.open_group(LocalStore(main), mode="w")
    (main / "tmp.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": {}}')
    os.link(main / "tmp.json", main / "g" / "zarr.json") if (main / "g").exists() else None
    os.mkdir(main / "g")
    assert sorted(os.listdir(main)) == ["g", "tmp.json", "zarr.json"]
    assert status(main)["empty_directories"] == ["g"]
    os.link(main / "tmp.json", main / "g" / "zarr.json")
    os.unlink(main / "tmp.json")
    assert zarr.open_group(LocalStore(main / "g"), mode="r").attrs == {}
    assert status(main)["empty_directories"] == []
    with pytest.raises(FileExistsError):
        os.mkdir(main / "g")
    os.mkdir(main / "empty")
    os.rmdir(main / "empty")
    with pytest.raises(OSError) as info:
        os.rmdir(main / "g")
    assert info.value.errno == errno.ENOTEMPTY
    commit(main, "group g")
    assert "g/zarr.json" in list(readonly_store(repo_path).list())


def test_writes_on_read_only_views_and_across_refs(repo_path, mount_factory):
    m = mount_factory(repo_path)
    main = m.mountpoint / "branches" / "main"
    zarr.open_group(LocalStore(main), mode="w")
    commit(main, "x")
    repo = icechunk.Repository.open(sample_storage(str(repo_path)))
    repo.create_branch("other", repo.lookup_branch("main"))
    repo.create_tag("t1", repo.lookup_branch("main"))
    other = m.mountpoint / "branches" / "other"
    with pytest.raises(OSError) as info:
        os.rename(main / "zarr.json", other / "zarr.json")
    assert info.value.errno == errno.EXDEV
    with pytest.raises(OSError) as info:
        (m.mountpoint / "tags/t1/new").write_text("x")
    assert info.value.errno == errno.EROFS
    with pytest.raises(OSError) as info:
        os.symlink("zarr.json", main / "link")
    assert info.value.errno == errno.EPERM
    ro = mount_factory(repo_path, "--read-only", name="ro")
    with pytest.raises(OSError) as info:
        (ro.mountpoint / "branches/main/new").write_text("x")
    assert info.value.errno == errno.EROFS


def test_commit_interval(repo_path, mount_factory):
    m = mount_factory(repo_path, "--commit-interval", "0.5")
    zarr.open_group(LocalStore(m.mountpoint / "branches/main"), mode="w", attributes={"p": 1})
    import time

    deadline = time.monotonic() + 20
    while not tip_message(repo_path).startswith("icefs: periodic commit"):
        assert time.monotonic() < deadline, "no periodic commit"
        time.sleep(0.1)


def test_dirty_branch_survives_shutil_rmtree_of_a_subtree(repo_path, mount_factory):
    m = mount_factory(repo_path)
    main = m.mountpoint / "branches" / "main"
    g = zarr.open_group(LocalStore(main), mode="w")
    for name in ("a", "b"):
        g.create_array(name, shape=(6, 6), chunks=(2, 2), dtype="i2")[:] = 1
    shutil.rmtree(main / "a")
    assert sorted(os.listdir(main)) == ["b", "zarr.json"]
    commit(main, "only b")
    keys = list(readonly_store(repo_path).list())
    assert not any(k.startswith("a/") for k in keys)
    assert "b/zarr.json" in keys


def test_failed_commit_at_unmount_exits_nonzero(repo_path, mount_factory, log_allows):
    log_allows += ["commit at unmount failed", "not committed at unmount"]
    first = mount_factory(repo_path, name="one")
    arr = zarr.open_group(LocalStore(first.mountpoint / "branches/main"), mode="w").create_array(
        "a", shape=(2,), chunks=(1,), dtype="i4", fill_value=0
    )
    arr[:] = 0
    commit(first.mountpoint / "branches/main", "base")
    second = mount_factory(repo_path, name="two")
    zarr.open_array(LocalStore(first.mountpoint / "branches/main"), path="a", mode="r+")[0] = 1
    zarr.open_array(LocalStore(second.mountpoint / "branches/main"), path="a", mode="r+")[0] = 2
    commit(first.mountpoint / "branches/main", "first wins")
    assert second.umount() == 9, "the conflicting commit at unmount is reported"
    assert "commit at unmount failed" in second.log_text()
    np.testing.assert_array_equal(zarr.open_array(readonly_store(repo_path), path="a")[:], [1, 0])


def test_concurrent_first_writes_all_land(repo_path, mount_factory):
    """Regression: writes racing to open the branch's session each opened one, and the
    chunks stored into the replaced session were silently lost."""
    repo = icechunk.Repository.open(sample_storage(str(repo_path)))
    session = repo.writable_session("main")
    zarr.group(store=session.store).create_array("a", shape=(64, 64), chunks=(4, 64), dtype="f8")[
        :
    ] = 0.0
    session.commit("base")
    m = mount_factory(repo_path)
    main = m.mountpoint / "branches" / "main"
    for round_ in range(1, 6):  # every commit closes the session: the race starts again
        zarr.open_array(LocalStore(main), path="a", mode="r+")[:] = float(round_)
        commit(main, f"round {round_}")
        values = zarr.open_array(readonly_store(repo_path), path="a")[:]
        assert (values == round_).all(), f"round {round_}: {np.unique(values)}"


def test_discard_brings_back_deleted_names_at_once(repo_path, mount_factory):
    """Regression: the kernel cached the absence of a deleted chunk (negative entry) and
    kept answering ENOENT for up to --refresh seconds after a discard restored it."""
    repo = icechunk.Repository.open(sample_storage(str(repo_path)))
    session = repo.writable_session("main")
    zarr.group(store=session.store).create_array("a", shape=(4,), chunks=(1,), dtype="i1")[:] = 1
    session.commit("base")
    m = mount_factory(repo_path, "--refresh", "30")  # a long TTL makes the bug certain
    chunk = m.mountpoint / "branches" / "main" / "a" / "c" / "2"
    before = chunk.read_bytes()
    chunk.unlink()
    assert not chunk.exists()  # the kernel may now cache the absence
    (m.mountpoint / "branches" / "main" / ".icefs" / "discard").write_text("1")
    assert chunk.read_bytes() == before
    os.rename(chunk, chunk.with_name("3"))  # rename away, then discard: both names right
    (m.mountpoint / "branches" / "main" / ".icefs" / "discard").write_text("1")
    assert chunk.read_bytes() == before


def _rsync(src, dst, *flags):
    result = subprocess.run(
        ["rsync", "-a", "--stats", *flags, f"{src}/", str(dst)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    line = next(
        ln
        for ln in result.stdout.splitlines()
        if ln.startswith("Number of regular files transferred")
    )
    return int(line.split(":")[1].replace(",", ""))


def test_rsync_again_changes_nothing(repo_path, mount_factory, tmp_path):
    """A second rsync transfers nothing in the same mount (times and modes are kept); after a
    remount it transfers again (or with -c it only reads), yet identical bytes are no change."""
    native = tmp_path / "native.zarr"
    group = zarr.open_group(LocalStore(native), mode="w", attributes={"a": 1})
    for name in ("x", "y", "z"):
        group.create_array(name, shape=(9,), chunks=(3,), dtype="i4")[:] = np.arange(9)
    files = 0
    for top, _, names in os.walk(native):
        for name in names:  # rsync compares whole seconds: keep the commit's second apart
            os.utime(os.path.join(top, name), ns=(1_000_000_000 * 10**9,) * 2)
            files += 1
    assert files == 13
    m = mount_factory(repo_path, name="first")
    main = m.mountpoint / "branches" / "main"
    os.mkdir(main / "synced")
    assert _rsync(native, main / "synced") == files
    commit(main, "synced")
    assert _rsync(native, main / "synced") == 0
    assert status(main)["has_uncommitted_changes"] is False
    assert m.umount() == 0
    commits = len(
        list(icechunk.Repository.open(sample_storage(str(repo_path))).ancestry(branch="main"))
    )
    m = mount_factory(repo_path, name="second")
    main = m.mountpoint / "branches" / "main"
    assert _rsync(native, main / "synced") == files  # the commit's time is not the source's
    assert status(main)["has_uncommitted_changes"] is False, "identical bytes are no change"
    assert _rsync(native, main / "synced") == 0
    assert _rsync(native, main / "synced", "-c") == 0
    assert m.umount() == 0
    after = len(
        list(icechunk.Repository.open(sample_storage(str(repo_path))).ancestry(branch="main"))
    )
    assert after == commits, "the unmount committed nothing"
