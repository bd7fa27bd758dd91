"""POSIX conformance and the bad-input matrix, on a real mount.

No established conformance suite (pjdfstest, xfstests) is in the package
registries this project may install from, so these cases follow their
categories: open/create flags, truncate, rename, unlink, mkdir/rmdir, link,
chmod/chown/utimens, special files, xattrs, and the errno of each failure path.
Then the bad-input matrix of docs/reliability.md. Each case is one row: what is
done, and the errno expected (0: success). Intended deviations from POSIX are
rows too (marked "deviation"), mirroring docs/semantics.md.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import icechunk
import pytest
import zarr

from harness.mount import Mount, fuse_usable
from icefs.store.sample import sample_storage

pytestmark = pytest.mark.fuse


@dataclass(frozen=True)
class Env:
    root: Path  # the mountpoint
    main: Path  # branches/main
    dev: Path  # branches/dev
    tag: Path  # tags/v1
    snap: Path  # snapshots/<base>
    log: Callable[[], str]


@pytest.fixture(scope="module")
def env():
    if not fuse_usable():
        pytest.fail("FUSE is required")
    tmp = Path(tempfile.mkdtemp(prefix="icefs-conformance-"))
    repo = icechunk.Repository.create(sample_storage(str(tmp / "repo")))
    session = repo.writable_session("main")
    group = zarr.group(store=session.store)
    group.create_array("a", shape=(4, 4), chunks=(2, 2), dtype="i4")[:] = 1
    group.create_array("u", shape=(4, 4), chunks=(2, 2), dtype="i4", compressors=None)[:] = 1
    base = session.commit("base")
    repo.create_tag("v1", base)
    repo.create_branch("dev", base)
    (tmp / "mnt").mkdir()
    mount = Mount(
        str(tmp / "repo"), tmp / "mnt", "--cache-dir", str(tmp / "cache"), log=tmp / "mount.log"
    )
    mount.wait_ready()
    m = tmp / "mnt"
    yield Env(
        m,
        m / "branches" / "main",
        m / "branches" / "dev",
        m / "tags" / "v1",
        m / "snapshots" / base,
        mount.log_text,
    )
    mount.stop()
    subprocess.run(["rm", "-rf", str(tmp)], check=False)


def _create(path: Path | bytes, flags: int = os.O_WRONLY | os.O_CREAT, data: bytes = b"") -> None:
    fd = os.open(path, flags, 0o644)
    try:
        if data:
            os.write(fd, data)
    finally:
        os.close(fd)


def _ftruncate(path: Path, size: int) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def _pwrite(path: Path, data: bytes, offset: int) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _metadata(e: Env, **changes: object) -> None:
    """Write array a's zarr.json with *changes* (None removes a key)."""
    doc = json.loads((e.tag / "a" / "zarr.json").read_bytes())
    for key, value in changes.items():
        if value is None:
            doc.pop(key)
        else:
            doc[key] = value
    (e.main / "a" / "zarr.json").write_text(json.dumps(doc))


def _unchanged(e: Env, key: str) -> bool:
    """*key* in main still holds what the tag holds (a refused store changed nothing)."""
    return (e.main / key).read_bytes() == (e.tag / key).read_bytes()


def _append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def _huge_sparse(e: Env) -> bool:
    """truncate -s 64G of a new file: instant, no RAM, no disk for the hole; reads zeros."""
    path = e.main / "huge.tmp"
    _create(path)
    os.truncate(path, 64 << 30)
    with open(path, "rb") as f:
        f.seek((64 << 30) - 4)
        tail = f.read()
    return os.stat(path).st_size == 64 << 30 and tail == b"\0" * 4


def _unlinked_open(e: Env) -> bool:
    """open, write, unlink: fstat says nlink 0 and the size, pread gives the bytes, writes go on."""
    path = e.main / "gone.tmp"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"still here")
        os.unlink(path)
        st = os.fstat(fd)
        ok = (st.st_nlink, st.st_size) == (0, 10) and os.pread(fd, 100, 0) == b"still here"
        os.pwrite(fd, b"!", 10)
        ok = ok and os.pread(fd, 100, 0) == b"still here!" and os.fstat(fd).st_size == 11
        os.ftruncate(fd, 5)
        ok = ok and os.pread(fd, 100, 0) == b"still"
    finally:
        os.close(fd)
    return ok and not path.exists()


def _unlinked_committed_chunk(e: Env) -> bool:
    """A committed chunk opened for reading, then unlinked: the descriptor reads its bytes."""
    path = e.main / "u" / "c" / "0" / "1"
    before = (e.tag / "u" / "c" / "0" / "1").read_bytes()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.unlink(path)
        ok = os.pread(fd, 1 << 20, 0) == before and os.fstat(fd).st_nlink == 0
    finally:
        os.close(fd)
    return ok and not path.exists()


def _replaced_while_open(e: Env) -> bool:
    """rename over an open file: the descriptor keeps the old bytes; the name has the new."""
    old, new = e.main / "rep.tmp", e.main / "rep.new.tmp"
    _create(old, data=b"old bytes")
    _create(new, data=b"new")
    fd = os.open(old, os.O_RDONLY)
    try:
        os.rename(new, old)
        ok = os.pread(fd, 100, 0) == b"old bytes" and os.fstat(fd).st_nlink == 0
    finally:
        os.close(fd)
    return ok and old.read_bytes() == b"new"


def _renamed_while_writing(e: Env) -> bool:
    """A file renamed while open for writing: later writes land at the new name (a log)."""
    first, second = e.main / "app.log", e.main / "app.log.1"
    fd = os.open(first, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"one ")
        os.rename(first, second)
        os.write(fd, b"two")
    finally:
        os.close(fd)
    return second.read_bytes() == b"one two" and not first.exists()


def _later(path: Path, action: Callable[[], object], fields: tuple[str, ...]) -> bool:
    """*action* moves each of *fields* (st_mtime_ns, st_ctime_ns) of *path* forward."""
    before = os.stat(path)
    time.sleep(0.01)
    action()
    after = os.stat(path)
    return all(getattr(after, f) > getattr(before, f) for f in fields)


def _parent_times(e: Env) -> bool:
    """create, mkdir, unlink, rmdir and rename move the parent directory's mtime and ctime."""
    d = e.main / "times"
    os.mkdir(d)
    both = ("st_mtime_ns", "st_ctime_ns")
    return all(
        [
            _later(d, lambda: _create(d / "f.tmp"), both),
            _later(d, lambda: os.mkdir(d / "sub"), both),
            _later(d, lambda: os.rename(d / "f.tmp", d / "g.tmp"), both),
            _later(d, lambda: os.unlink(d / "g.tmp"), both),
            _later(d, lambda: os.rmdir(d / "sub"), both),
            _later(e.main, lambda: _create(e.main / "in-root.tmp"), both),
        ]
    )


def _kept_attributes(e: Env) -> bool:
    """chmod, chown and utime on files and directories hold for as long as the mount lives."""
    f, d = e.main / "attrs.tmp", e.main / "attrs-dir"
    _create(f, data=b"x")
    os.mkdir(d)
    for path in (f, d, e.main / "zarr.json"):
        os.chmod(path, 0o640)
        os.chown(path, 1234, 5678)
        os.utime(path, ns=(1_000_000_000, 2_000_000_000))
    return all(
        (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_atime_ns, st.st_mtime_ns)
        == (0o640, 1234, 5678, 1_000_000_000, 2_000_000_000)
        and st.st_ctime_ns > 2_000_000_000
        for st in (os.stat(f), os.stat(d), os.stat(e.main / "zarr.json"))
    )


@dataclass(frozen=True)
class Case:
    category: str
    what: str
    run: Callable[[Env], object]
    expect: int = 0  # errno, 0 for success
    check: Callable[[Env], bool] | None = None  # a postcondition


CASES = [
    # -- open / create -----------------------------------------------------------------------
    Case(
        "open",
        "O_RDONLY of a missing file",
        lambda e: os.open(e.main / "nope", os.O_RDONLY),
        errno.ENOENT,
    ),
    Case(
        "open",
        "O_CREAT|O_EXCL of an existing file",
        lambda e: os.open(e.main / "zarr.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL),
        errno.EEXIST,
    ),
    Case(
        "open",
        "O_CREAT|O_EXCL of a new scratch file",
        lambda e: _create(e.main / "new.tmp", os.O_WRONLY | os.O_CREAT | os.O_EXCL, b"x"),
        check=lambda e: (e.main / "new.tmp").read_bytes() == b"x",
    ),
    Case(
        "open",
        "O_DIRECTORY of a file",
        lambda e: os.open(e.main / "zarr.json", os.O_DIRECTORY),
        errno.ENOTDIR,
    ),
    Case(
        "open",
        "O_WRONLY of a directory",
        lambda e: os.open(e.main / "a", os.O_WRONLY),
        errno.EISDIR,
    ),
    Case(
        "open",
        "O_CREAT in a missing directory",
        lambda e: _create(e.main / "no" / "f"),
        errno.ENOENT,
    ),
    Case(
        "open",
        "O_APPEND appends",
        lambda e: (
            _create(e.main / "ap.tmp", data=b"ab"),
            _create(e.main / "ap.tmp", os.O_WRONLY | os.O_APPEND, b"cd"),
        ),
        check=lambda e: (e.main / "ap.tmp").read_bytes() == b"abcd",
    ),
    Case(
        "open",
        "O_TRUNC with no write empties the file",
        lambda e: (
            _create(e.main / "tr.tmp", data=b"abc"),
            _create(e.main / "tr.tmp", os.O_WRONLY | os.O_TRUNC),
        ),
        check=lambda e: (e.main / "tr.tmp").read_bytes() == b"",
    ),
    Case("open", "a name of 255 bytes", lambda e: _create(e.main / ("n" * 255))),
    # -- truncate ----------------------------------------------------------------------------
    Case(
        "truncate",
        "extend fills with zeros",
        lambda e: (_create(e.main / "t1.tmp", data=b"ab"), os.truncate(e.main / "t1.tmp", 4)),
        check=lambda e: (e.main / "t1.tmp").read_bytes() == b"ab\0\0",
    ),
    Case(
        "truncate",
        "shrink",
        lambda e: (_create(e.main / "t2.tmp", data=b"abcd"), os.truncate(e.main / "t2.tmp", 1)),
        check=lambda e: (e.main / "t2.tmp").read_bytes() == b"a",
    ),
    Case("truncate", "a directory", lambda e: os.truncate(e.main / "a", 0), errno.EISDIR),
    Case(
        "truncate",
        "to 64 GiB: sparse and cheap (no RAM, no disk for the hole)",
        lambda e: None,
        check=_huge_sparse,
    ),
    Case(
        "truncate",
        "beyond what icefs holds (1 TiB)",
        lambda e: (_create(e.main / "big.tmp"), os.truncate(e.main / "big.tmp", 999999999999999)),
        errno.EFBIG,
    ),
    Case(
        "truncate",
        "ftruncate beyond what icefs holds",
        lambda e: _ftruncate(e.main / "big2.tmp", 2 << 40),
        errno.EFBIG,
    ),
    Case(
        "truncate",
        "a write far past the end stays sparse",
        lambda e: _pwrite(e.main / "far.tmp", b"end", 8 << 30),
        check=lambda e: os.stat(e.main / "far.tmp").st_size == (8 << 30) + 3,
    ),
    Case(
        "open files",
        "unlinked while open: fstat, pread, pwrite, ftruncate go on",
        lambda e: None,
        check=_unlinked_open,
    ),
    Case(
        "open files",
        "a committed chunk unlinked while open for reading",
        lambda e: None,
        check=_unlinked_committed_chunk,
    ),
    Case(
        "open files", "replaced by a rename while open", lambda e: None, check=_replaced_while_open
    ),
    Case(
        "open files", "renamed while open for writing", lambda e: None, check=_renamed_while_writing
    ),
    Case(
        "times",
        "O_TRUNC of an existing file moves its mtime and ctime",
        lambda e: _create(e.main / "otrunc.tmp", data=b"abc"),
        check=lambda e: _later(
            e.main / "otrunc.tmp",
            lambda: _create(e.main / "otrunc.tmp", os.O_WRONLY | os.O_TRUNC),
            ("st_mtime_ns", "st_ctime_ns"),
        ),
    ),
    Case(
        "times",
        "create, mkdir, unlink, rmdir, rename move the parent's mtime and ctime",
        lambda e: None,
        check=_parent_times,
    ),
    Case(
        "times",
        "a write moves mtime past a time set by utime",
        lambda e: (
            _create(e.main / "wt.tmp", data=b"a"),
            os.utime(e.main / "wt.tmp", (1, 1)),
            _create(e.main / "wt.tmp", os.O_WRONLY | os.O_APPEND, b"b"),
        ),
        check=lambda e: os.stat(e.main / "wt.tmp").st_mtime > 1000,
    ),
    Case("truncate", "a missing file", lambda e: os.truncate(e.main / "nope", 0), errno.ENOENT),
    Case(
        "truncate",
        "a negative length",
        lambda e: os.truncate(e.main / "zarr.json", -1),
        errno.EINVAL,
    ),
    # -- rename ------------------------------------------------------------------------------
    Case(
        "rename",
        "a file over an existing file replaces it",
        lambda e: (
            _create(e.main / "r1.tmp", data=b"1"),
            _create(e.main / "r2.tmp", data=b"2"),
            os.rename(e.main / "r1.tmp", e.main / "r2.tmp"),
        ),
        check=lambda e: (
            (e.main / "r2.tmp").read_bytes() == b"1" and not (e.main / "r1.tmp").exists()
        ),
    ),
    Case(
        "rename",
        "a scratch file onto a chunk key stores the chunk",
        lambda e: (
            _create(e.main / "c.partial", data=(e.tag / "a/c/0/0").read_bytes()),
            os.rename(e.main / "c.partial", e.main / "a" / "c" / "1" / "1"),
        ),
        check=lambda e: (e.main / "a/c/1/1").read_bytes() == (e.tag / "a/c/0/0").read_bytes(),
    ),
    Case(
        "rename",
        "a missing source",
        lambda e: os.rename(e.main / "nope", e.main / "x"),
        errno.ENOENT,
    ),
    Case(
        "rename",
        "a file onto a directory",
        lambda e: os.rename(e.main / "zarr.json", e.main / "a"),
        errno.EISDIR,
    ),
    Case(
        "rename",
        "a file onto itself",
        lambda e: os.rename(e.main / "zarr.json", e.main / "zarr.json"),
    ),
    Case(
        "rename",
        "a chunk directory (deviation: not a node, mv copies instead)",
        lambda e: os.rename(e.main / "a" / "c" / "0", e.main / "a" / "c" / "7"),
        errno.EXDEV,
    ),
    Case(
        "rename",
        "an array onto another array (a directory that is not empty)",
        lambda e: os.rename(e.main / "a", e.main / "u"),
        errno.ENOTEMPTY,
    ),
    Case(
        "rename",
        "across branches",
        lambda e: os.rename(e.main / "a" / "c" / "0" / "0", e.dev / "a" / "c" / "0" / "0"),
        errno.EXDEV,
    ),
    Case(
        "rename",
        "a branch directory (deviation)",
        lambda e: os.rename(e.root / "branches" / "dev", e.root / "branches" / "dev2"),
        errno.EXDEV,
    ),
    # -- unlink ------------------------------------------------------------------------------
    Case("unlink", "a missing file", lambda e: os.unlink(e.main / "nope"), errno.ENOENT),
    Case("unlink", "a directory", lambda e: os.unlink(e.main / "a"), errno.EISDIR),
    Case(
        "unlink",
        "a chunk deletes it",
        lambda e: os.unlink(e.main / "a" / "c" / "1" / "0"),
        check=lambda e: not (e.main / "a" / "c" / "1" / "0").exists(),
    ),
    # -- mkdir / rmdir -----------------------------------------------------------------------
    Case("mkdir", "an existing directory", lambda e: os.mkdir(e.main / "a"), errno.EEXIST),
    Case("mkdir", "over an existing file", lambda e: os.mkdir(e.main / "zarr.json"), errno.EEXIST),
    Case("mkdir", "in a missing parent", lambda e: os.mkdir(e.main / "no" / "d"), errno.ENOENT),
    Case(
        "mkdir",
        "then rmdir an empty directory",
        lambda e: (os.mkdir(e.main / "empty"), os.rmdir(e.main / "empty")),
        check=lambda e: not (e.main / "empty").exists(),
    ),
    Case("rmdir", "a non-empty directory", lambda e: os.rmdir(e.main / "a"), errno.ENOTEMPTY),
    Case("rmdir", "a file", lambda e: os.rmdir(e.main / "zarr.json"), errno.ENOTDIR),
    Case("rmdir", "a missing directory", lambda e: os.rmdir(e.main / "nope"), errno.ENOENT),
    # -- link --------------------------------------------------------------------------------
    Case(
        "link",
        "a new name gets the bytes (deviation: a copy, nlink stays 1)",
        lambda e: (
            _create(e.main / "l1.tmp", data=b"L"),
            os.link(e.main / "l1.tmp", e.main / "l2.tmp"),
        ),
        check=lambda e: (e.main / "l2.tmp").read_bytes() == b"L",
    ),
    Case(
        "link",
        "onto an existing name",
        lambda e: os.link(e.main / "zarr.json", e.main / "a" / "zarr.json"),
        errno.EEXIST,
    ),
    Case("link", "a directory", lambda e: os.link(e.main / "a", e.main / "a2"), errno.EPERM),
    Case(
        "link",
        "across branches",
        lambda e: os.link(e.main / "zarr.json", e.dev / "x.tmp"),
        errno.EXDEV,
    ),
    # -- attributes --------------------------------------------------------------------------
    Case(
        "attributes",
        "chmod, chown and utime are kept while mounted (not in Icechunk)",
        lambda e: None,
        check=_kept_attributes,
    ),
    Case(
        "attributes", "chmod in a tag", lambda e: os.chmod(e.tag / "zarr.json", 0o600), errno.EROFS
    ),
    Case("special", "symlink", lambda e: os.symlink("x", e.main / "sl"), errno.EPERM),
    Case(
        "special",
        "mknod of a regular file makes an empty file",
        lambda e: os.mknod(e.main / "nod.tmp", 0o644 | stat.S_IFREG),
        check=lambda e: (e.main / "nod.tmp").read_bytes() == b"",
    ),
    Case(
        "special",
        "mknod of a device",
        lambda e: os.mknod(e.main / "dev", 0o644 | stat.S_IFCHR, os.makedev(1, 3)),
        errno.EPERM,
    ),
    Case("special", "mkfifo", lambda e: os.mkfifo(e.main / "fifo"), errno.EPERM),
    Case(
        "special", "readlink of a file", lambda e: os.readlink(e.main / "zarr.json"), errno.EINVAL
    ),
    Case(
        "xattr",
        "setxattr (deviation)",
        lambda e: os.setxattr(e.main / "zarr.json", "user.x", b"1"),
        errno.ENOTSUP,
    ),
    Case(
        "xattr",
        "getxattr of an unknown name",
        lambda e: os.getxattr(e.main / "zarr.json", "user.x"),
        errno.ENODATA,
    ),
    Case(
        "xattr",
        "getxattr outside user.* (no SELinux labels, no ACLs)",
        lambda e: os.getxattr(e.main / "zarr.json", "security.selinux"),
        errno.ENOTSUP,
    ),
    Case(
        "statfs",
        "statvfs",
        lambda e: os.statvfs(e.main),
        check=lambda e: os.statvfs(e.main).f_namemax == 255,
    ),
    # -- bad input ---------------------------------------------------------------------------
    Case(
        "bad input",
        "a name of 256 bytes",
        lambda e: _create(e.main / ("n" * 256)),
        errno.ENAMETOOLONG,
    ),
    Case(
        "bad input",
        "lookup of a name that is not UTF-8",
        lambda e: os.stat(bytes(e.main) + b"/\xff\xfe"),
        errno.ENOENT,
    ),
    Case(
        "bad input",
        "create of a name that is not UTF-8",
        lambda e: _create(bytes(e.main) + b"/\xff\xfe"),
        errno.EINVAL,
    ),
    Case(
        "bad input",
        "mkdir of a branch named with bytes that are not UTF-8",
        lambda e: os.mkdir(bytes(e.root) + b"/branches/\xff"),
        errno.EINVAL,
    ),
    Case(
        "bad input",
        "'..' out of a branch into a tag, for writing",
        lambda e: _create(Path(str(e.main) + "/../../tags/v1/zarr.json")),
        errno.EROFS,
    ),
    Case(
        "bad input",
        "'.' and '..' as ref names",
        lambda e: os.mkdir(e.root / "branches" / "."),
        errno.EEXIST,
    ),
    Case("bad input", "a write in a tag", lambda e: _create(e.tag / "zarr.json"), errno.EROFS),
    Case(
        "bad input",
        "a truncate in a snapshot",
        lambda e: os.truncate(e.snap / "zarr.json", 0),
        errno.EROFS,
    ),
    Case(
        "bad input",
        "a rename in a tag",
        lambda e: os.rename(e.tag / "zarr.json", e.tag / "x"),
        errno.EROFS,
    ),
    Case(
        "bad input",
        "an unlink in a snapshot",
        lambda e: os.unlink(e.snap / "zarr.json"),
        errno.EROFS,
    ),
    Case(
        "bad input",
        "a file at the root or in branches/",
        lambda e: _create(e.root / "branches" / "x"),
        errno.EROFS,
    ),
    Case(
        "bad input",
        "a commit message that is not UTF-8",
        lambda e: (e.main / ".icefs" / "commit").write_bytes(b"\xff\xfe"),
        errno.EINVAL,
    ),
    Case(
        "bad input",
        "an empty or blank commit message",
        lambda e: (e.main / ".icefs" / "commit").write_text(" \n"),
        errno.EINVAL,
    ),
    Case(
        "bad input",
        "a write to a read-only control file",
        lambda e: (e.main / ".icefs" / "status").write_text("x"),
        errno.EACCES,
    ),
    Case(
        "bad input",
        "a new file in a control directory",
        lambda e: _create(e.main / ".icefs" / "x"),
        errno.EROFS,
    ),
    Case(
        "bad input",
        "a commit on a tag",
        lambda e: (e.tag / ".icefs" / "commit").write_text("m"),
        errno.EROFS,
    ),
    Case(
        "bad input",
        "a zarr.json that is not JSON",
        lambda e: _write(e.main / "g1" / "zarr.json", b"{"),
        errno.EINVAL,
    ),
    Case(
        "bad input",
        "a zarr.json that is JSON but not Zarr v3 metadata",
        lambda e: _write(e.main / "g2" / "zarr.json", b'{"zarr_format": 2}'),
        errno.EINVAL,
    ),
    Case(
        "bad input",
        "a zarr.json over 16 MiB",
        lambda e: _write(
            e.main / "g3" / "zarr.json",
            b'{"zarr_format": 3, "node_type": "group", "attributes": {"x": "'
            + b"y" * (17 << 20)
            + b'"}}',
        ),
        errno.EFBIG,
    ),
    Case(
        "bad input",
        "a chunk key with too few coordinates",
        lambda e: _write(e.main / "a" / "c" / "5", b"x"),
        errno.EINVAL,
    ),
    Case(
        "bad input",
        "a chunk outside the array's grid",
        lambda e: _write(e.main / "a" / "c" / "9" / "9", b"x"),
        errno.EINVAL,
    ),
    Case(
        "bad input",
        "an empty chunk (no codec output is empty)",
        lambda e: _write(e.main / "a" / "c" / "0" / "1", b""),
        errno.EINVAL,
    ),
    # -- bad metadata: zarr's own parser decides; the previous document stays ----------------
    Case(
        "bad metadata",
        "zarr_format 4",
        lambda e: _metadata(e, zarr_format=4),
        errno.EINVAL,
        check=lambda e: _unchanged(e, "a/zarr.json"),
    ),
    Case(
        "bad metadata",
        "an unknown data_type",
        lambda e: _metadata(e, data_type="int33"),
        errno.EINVAL,
        check=lambda e: _unchanged(e, "a/zarr.json"),
    ),
    Case(
        "bad metadata",
        "an unknown codec",
        lambda e: _metadata(
            e,
            codecs=[
                {"name": "bytes", "configuration": {"endian": "little"}},
                {"name": "no-such-codec"},
            ],
        ),
        errno.EINVAL,
        check=lambda e: _unchanged(e, "a/zarr.json"),
    ),
    Case(
        "bad metadata",
        "shape and chunk grid of different rank",
        lambda e: _metadata(
            e, chunk_grid={"name": "regular", "configuration": {"chunk_shape": [2]}}
        ),
        errno.EINVAL,
        check=lambda e: _unchanged(e, "a/zarr.json"),
    ),
    Case(
        "bad metadata",
        "a fill_value of the wrong type",
        lambda e: _metadata(e, fill_value="x"),
        errno.EINVAL,
        check=lambda e: _unchanged(e, "a/zarr.json"),
    ),
    Case(
        "bad metadata",
        "no chunk_key_encoding",
        lambda e: _metadata(e, chunk_key_encoding=None),
        errno.EINVAL,
        check=lambda e: _unchanged(e, "a/zarr.json"),
    ),
    Case(
        "bad metadata",
        "chunk_key_encoding v2 with '.' (readers would get the fill value)",
        lambda e: _metadata(
            e, chunk_key_encoding={"name": "v2", "configuration": {"separator": "."}}
        ),
        errno.EINVAL,
        check=lambda e: _unchanged(e, "a/zarr.json"),
    ),
    Case(
        "bad metadata",
        "storage transformers",
        lambda e: _metadata(e, storage_transformers=[{"name": "x", "configuration": {}}]),
        errno.EINVAL,
        check=lambda e: _unchanged(e, "a/zarr.json"),
    ),
    Case(
        "bad metadata",
        "an extra field zarr does not allow",
        lambda e: _metadata(e, extra=1),
        errno.EINVAL,
        check=lambda e: _unchanged(e, "a/zarr.json"),
    ),
    # -- bad chunks: checked against the array's codecs; the previous chunk stays -------------
    Case(
        "bad chunk",
        "append to an uncompressed chunk (its size is exact: the write fails)",
        lambda e: _append(e.main / "u/c/0/0", b"xyz"),
        errno.EFBIG,
        check=lambda e: _unchanged(e, "u/c/0/0"),
    ),
    Case(
        "bad chunk",
        "append to a compressed chunk (it no longer decodes)",
        lambda e: _append(e.main / "a/c/0/0", b"xyz"),
        errno.EINVAL,
        check=lambda e: _unchanged(e, "a/c/0/0"),
    ),
    Case(
        "bad chunk",
        "garbage of a valid size in a compressed array",
        lambda e: (e.main / "a/c/0/1").write_bytes(b"\0" * 16),
        errno.EINVAL,
        check=lambda e: _unchanged(e, "a/c/0/1"),
    ),
    Case(
        "bad chunk",
        "a valid uncompressed chunk is stored",
        lambda e: (e.main / "u/c/1/1").write_bytes(bytes(16)),
        check=lambda e: (e.main / "u/c/1/1").read_bytes() == bytes(16),
    ),
    # -- names under an array's c/: miswritten coordinates are refused, temp names are not -----
    Case(
        "chunk names",
        "a leading zero (c/0/01)",
        lambda e: _create(e.main / "a/c/0/01"),
        errno.EINVAL,
    ),
    Case("chunk names", "a sign (mkdir c/-1)", lambda e: os.mkdir(e.main / "a/c/-1"), errno.EINVAL),
    Case(
        "chunk names",
        "a suffix (mkdir c/1/0x)",
        lambda e: os.mkdir(e.main / "a/c/1/0x"),
        errno.EINVAL,
    ),
    Case(
        "chunk names",
        "zarr's temporary name (c/0/0.<hex>.partial) is a scratch file",
        lambda e: _create(e.main / "a/c/0/0.3f2a.partial", data=b"x"),
        check=lambda e: (e.main / "a/c/0/0.3f2a.partial").read_bytes() == b"x",
    ),
    Case(
        "chunk names",
        "rsync's temporary name (c/0/.0.XXXXXX) is a scratch file",
        lambda e: _create(e.main / "a/c/0/.0.Ab12Cd", data=b"x"),
        check=lambda e: (e.main / "a/c/0/.0.Ab12Cd").read_bytes() == b"x",
    ),
    Case(
        "bad input",
        "a branch name with white space at the ends",
        lambda e: os.mkdir(e.root / "branches" / " x"),
        errno.EINVAL,
    ),
    Case(
        "bad input",
        "a branch name with a control character",
        lambda e: os.mkdir(e.root / "branches" / "a\x01"),
        errno.EINVAL,
    ),
    Case(
        "bad input", "a tag made by mkdir", lambda e: os.mkdir(e.root / "tags" / "t"), errno.EPERM
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c.category}: {c.what}" for c in CASES])
def test_case(env, case):
    try:
        case.run(env)
        got = 0
    except OSError as exc:
        got = exc.errno or -1
    assert errno.errorcode.get(got, "success") == errno.errorcode.get(case.expect, "success")
    if case.check is not None:
        assert case.check(env), "the postcondition does not hold"


def test_failures_are_logged_and_nothing_is_lost(env):
    """After the whole matrix: the committed data is intact and the refusals were logged."""
    log = env.log()
    for reason in (
        "g1/zarr.json failed: not JSON",
        "zarr_format is 2",
        "the limit is 16777216",
        "lies outside the array's grid",
        "has 1 coordinates",
        "an empty chunk",
        "empty commit message",
        "invalid array metadata",
        "without chunk_key_encoding",
        "Icechunk keeps chunks at c/i/j",
        "a chunk of this uncompressed array has exactly 16 bytes",
        "3 bytes follow its zstd frame",
        "not a zstd frame",
        "is not a chunk coordinate",
    ):
        assert reason.lower() in log.lower(), f"{reason}:\n{log[-4000:]}"
    assert (env.tag / "a" / "c" / "0" / "0").read_bytes()
    assert os.listdir(env.root / "branches") == ["dev", "main"]
    assert os.listdir(env.root / "tags") == ["v1"]
