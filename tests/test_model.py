"""Model-based test: random file operations on a real branch mount against a model.

Hypothesis drives create/write at offsets/truncate/rename/link/unlink/mkdir/rmdir/
read/stat/listing/commit/discard/remount on a mounted branch. After every step the
mount must agree with an in-memory model (contents, sizes, errno of failures);
after every commit, a fresh read-only Icechunk session must hold exactly the
model's chunk files.

``pytest tests/test_model.py`` runs the quick profile (CI); ``--long`` runs at
least 100k operations (README: Reliability); ``--long --long-share N`` runs
1/N of them, so N processes with their own random seeds can share the work.
"""

from __future__ import annotations

import errno
import functools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import icechunk
import zarr
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from icefs.store.sample import sample_storage
from tests.conftest import Mount, direct_get

CHUNKS = [f"a/c/{i}" for i in range(4)]  # of a 1-d array of 8 chunks (4-7 stay)
SCRATCH = ["s0", "s1.tmp"]  # names that are not Zarr keys
FILES = CHUNKS + SCRATCH
DIRS = ["d0", "d1"]

names = st.sampled_from(FILES)
payload = st.binary(max_size=24)


def _step(fn):
    """Record each operation, so that a failure names the steps before it."""

    @functools.wraps(fn)
    def run(self, **kwargs):
        self.history.append(f"{fn.__name__}({kwargs})")
        return fn(self, **kwargs)

    return run


def _errno(fn, *args) -> int:
    try:
        fn(*args)
    except OSError as exc:
        return exc.errno or -1
    return 0


class BranchModel(RuleBasedStateMachine):
    """One fresh repository and mount per example; the model is plain dicts."""

    ops_total = 0

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="icefs-model-"))
        self.repo_path = self.tmp / "repo"
        repo = icechunk.Repository.create(sample_storage(str(self.repo_path)))
        session = repo.writable_session("main")
        # Variable-length strings: their chunks have no fixed size and no compressor's
        # framing, so the mount's default checks (verify_chunks=frame) take any bytes as
        # a chunk and the model can treat chunk files as opaque bytes.
        array = zarr.group(store=session.store).create_array(
            "a", shape=(8,), chunks=(1,), dtype=str, compressors=None
        )
        array[:] = [str(i) for i in range(1, 9)]  # every chunk stored: a/c exists
        base = session.commit("base")
        self.mount: Mount | None = None
        self.committed = {k: direct_get(self.repo_path, base, k) or b"" for k in CHUNKS}
        self.files: dict[str, bytes] = dict(self.committed)
        self.dirs: set[str] = set()
        self.ops = 0
        self.history: list[str] = []

    # -- plumbing ----------------------------------------------------------------------------

    def _mount(self) -> None:
        mnt = self.tmp / "mnt"
        mnt.mkdir(exist_ok=True)
        self.mount = Mount(
            str(self.repo_path),
            mnt,
            "--cache-dir",
            str(self.tmp / "cache"),
            log=self.tmp / "mount.log",
        )
        self.mount.wait_ready()

    def _path(self, name: str) -> Path:
        assert self.mount is not None
        return self.mount.mountpoint / "branches" / "main" / name

    def _chunks(self) -> dict[str, bytes]:
        return {k: v for k, v in self.files.items() if k in CHUNKS}

    def teardown(self) -> None:
        BranchModel.ops_total += self.ops
        if self.mount is not None:
            self.mount.stop()
        subprocess.run(["rm", "-rf", str(self.tmp)], check=False)

    @initialize()
    def start(self) -> None:
        self._mount()

    # -- operations --------------------------------------------------------------------------

    def _expect_store(self, name: str, new: bytes, got: int) -> None:
        """Check *got* (errno of the close) for storing *new* at *name*; update the model.

        Icechunk refuses a zero-length chunk (no codec output is empty): EINVAL at
        close, and the previous content stays.
        """
        if name in CHUNKS and not new:
            assert got == errno.EINVAL, (name, got)
            return
        assert got == 0, (name, got)
        self.files[name] = new

    @rule(name=names, offset=st.integers(0, 20), data=payload)
    @_step
    def write(self, name: str, offset: int, data: bytes) -> None:
        fd = os.open(self._path(name), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, data, offset)
        finally:
            got = _errno(os.close, fd)
        new = self.files.get(name, b"")
        if data:
            new = new.ljust(offset, b"\0")
            new = new[:offset] + data + new[offset + len(data) :]
        self._expect_store(name, new, got)
        self.ops += 1

    @rule(name=names, data=payload)
    @_step
    def create_truncating(self, name: str, data: bytes) -> None:
        fd = os.open(self._path(name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
        finally:
            got = _errno(os.close, fd)
        self._expect_store(name, data, got)
        self.ops += 1

    @rule(name=names, size=st.integers(0, 30))
    @_step
    def truncate(self, name: str, size: int) -> None:
        got = _errno(os.truncate, self._path(name), size)
        if name not in self.files:
            assert got == errno.ENOENT
        else:
            self._expect_store(name, self.files[name][:size].ljust(size, b"\0"), got)
        self.ops += 1

    @rule(name=names)
    @_step
    def unlink(self, name: str) -> None:
        got = _errno(os.unlink, self._path(name))
        assert got == (0 if name in self.files else errno.ENOENT)
        self.files.pop(name, None)
        self.ops += 1

    @rule(src=names, dst=names)
    @_step
    def rename(self, src: str, dst: str) -> None:
        got = _errno(os.rename, self._path(src), self._path(dst))
        if src not in self.files:
            assert got == errno.ENOENT
        elif src != dst and dst in CHUNKS and not self.files[src]:
            assert got == errno.EINVAL  # an empty chunk is refused; both names stay
        else:
            assert got == 0
            if src != dst:
                self.files[dst] = self.files.pop(src)
        self.ops += 1

    @rule(src=names, dst=names)
    @_step
    def link(self, src: str, dst: str) -> None:
        got = _errno(os.link, self._path(src), self._path(dst))
        if src not in self.files:
            assert got == errno.ENOENT
        elif dst in self.files:
            assert got == errno.EEXIST
        elif dst in CHUNKS and not self.files[src]:
            assert got == errno.EINVAL  # an empty chunk is refused
        else:
            assert got == 0
            self.files[dst] = self.files[src]  # a copy: Icechunk has no hard links
        self.ops += 1

    @rule(name=st.sampled_from(DIRS))
    @_step
    def mkdir(self, name: str) -> None:
        got = _errno(os.mkdir, self._path(name))
        assert got == (errno.EEXIST if name in self.dirs else 0)
        self.dirs.add(name)
        self.ops += 1

    @rule(name=st.sampled_from(DIRS))
    @_step
    def rmdir(self, name: str) -> None:
        got = _errno(os.rmdir, self._path(name))
        assert got == (0 if name in self.dirs else errno.ENOENT)
        self.dirs.discard(name)
        self.ops += 1

    @rule(name=names)
    @_step
    def read(self, name: str) -> None:
        if name not in self.files:
            assert _errno(self._path(name).read_bytes) == errno.ENOENT
        else:
            assert self._path(name).read_bytes() == self.files[name], name
        self.ops += 1

    @rule(name=names, offset=st.integers(0, 30), size=st.integers(0, 30))
    @_step
    def pread(self, name: str, offset: int, size: int) -> None:
        if name not in self.files:
            return
        fd = os.open(self._path(name), os.O_RDONLY)
        try:
            assert os.pread(fd, size, offset) == self.files[name][offset : offset + size]
        finally:
            os.close(fd)
        self.ops += 1

    @rule(
        message=st.text(
            st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1, max_size=20
        ).filter(str.strip)
    )
    @_step
    def commit(self, message: str) -> None:
        (self._path(".icefs") / "commit").write_text(message)
        self.committed = self._chunks()
        self._check_repository()
        self.ops += 1

    @rule()
    @_step
    def discard(self) -> None:
        (self._path(".icefs") / "discard").write_text("1")
        self.files = {**self.committed, **{k: v for k, v in self.files.items() if k in SCRATCH}}
        self.ops += 1

    @rule()
    @_step
    def remount(self) -> None:
        assert self.mount is not None
        assert self.mount.umount() == 0  # commits at unmount
        self.committed = self._chunks()
        self.files = dict(self.committed)  # scratch files and empty dirs live in the mount
        self.dirs.clear()
        self._check_repository()
        self._mount()
        self.ops += 1

    # -- checks ------------------------------------------------------------------------------

    def _check_repository(self) -> None:
        repo = icechunk.Repository.open(sample_storage(str(self.repo_path)))
        tip = repo.lookup_branch("main")
        for name in CHUNKS:
            assert direct_get(self.repo_path, tip, name) == self.committed.get(name), name

    @invariant()
    def tree_matches(self) -> None:
        if self.mount is None:
            return
        root = set(os.listdir(self._path("")))
        assert root & set(SCRATCH + DIRS) == {n for n in self.files if n in SCRATCH} | self.dirs
        for name in FILES:
            try:
                size = os.stat(self._path(name)).st_size
            except FileNotFoundError:
                assert name not in self.files, self._story(f"{name} is missing")
            else:
                assert size == len(self.files.get(name, b"")), self._story(f"{name}: size {size}")

    def _story(self, what: str) -> str:
        return what + "; the steps before it:\n  " + "\n  ".join(self.history[-15:])


#: Operations the long profile runs, over all its shares.
LONG_OPS = 100_000


def test_model(request) -> None:
    long = request.config.getoption("--long")
    share = request.config.getoption("--long-share")
    profile = settings(
        max_examples=200 if long else 15,
        stateful_step_count=50 if long else 40,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=not long,
        print_blob=True,
    )
    started = time.monotonic()
    run_state_machine_as_test(BranchModel, settings=profile)
    # Long: batches of random examples until this share's operations are done (how
    # many steps an example takes varies, so a fixed number of examples fell short).
    while long and BranchModel.ops_total < LONG_OPS / share:
        run_state_machine_as_test(BranchModel, settings=profile)
    print(
        f"model: {BranchModel.ops_total} operations in {time.monotonic() - started:.0f} s",
        file=sys.stderr,
    )
