"""Model-based test: random file operations on a branch, checked against a model.

Hypothesis drives create/write at offsets/truncate/rename/link/unlink/mkdir/rmdir/
read/stat/listing/commit/discard/remount on a branch. After every step the
branch must agree with an in-memory model (contents, sizes, errno of failures);
after every commit, the repository must hold exactly the model's chunk files.

The same rules run two ways: through a real mount (`MountFiles`: system calls
on a local repository, the kernel in between), and straight on the filesystem
core (`CoreFiles`: its requests, an in-memory repository, no FUSE), which runs
many more examples per second.

``pytest tests/test_model.py`` runs the quick profiles (CI); ``--long`` runs at
least 100k operations through the mount (docs/reliability.md); ``--long
--long-share N`` runs 1/N of them, so N processes with their own random seeds
can share the work.
"""

from __future__ import annotations

import errno
import functools
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from tests.modelfiles import CHUNKS, CoreFiles, MountFiles, chunk_at_tip

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
        try:
            return fn(self, **kwargs)
        except OSError as exc:  # an errno no rule expected: say what led to it
            raise AssertionError(self._story(f"{fn.__name__}: {exc!r}")) from exc

    return run


class BranchModel(RuleBasedStateMachine):
    """One fresh repository per example, through `files`; the model is plain dicts."""

    ops_total = 0
    #: how the branch is reached: `MountFiles` or `CoreFiles`
    files_class: type[MountFiles] | type[CoreFiles] = MountFiles

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="icefs-model-"))
        self.fs: Any = None  # the files object of the example, once started
        self.committed: dict[str, bytes] = {}
        self.files: dict[str, bytes] = {}
        self.dirs: set[str] = set()
        self.ops = 0
        self.history: list[str] = []

    def _chunks(self) -> dict[str, bytes]:
        return {k: v for k, v in self.files.items() if k in CHUNKS}

    def teardown(self) -> None:
        type(self).ops_total += self.ops
        if self.fs is not None:
            self.fs.close()
        subprocess.run(["rm", "-rf", str(self.tmp)], check=False)

    @initialize()
    def start(self) -> None:
        self.fs = self.files_class(self.tmp)
        self.committed = dict(self.fs.committed)
        self.files = dict(self.committed)

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
        got = self.fs.write(name, offset, data)
        new = self.files.get(name, b"")
        if data:
            new = new.ljust(offset, b"\0")
            new = new[:offset] + data + new[offset + len(data) :]
        self._expect_store(name, new, got)
        self.ops += 1

    @rule(name=names, data=payload)
    @_step
    def create_truncating(self, name: str, data: bytes) -> None:
        got = self.fs.create_truncating(name, data)
        self._expect_store(name, data, got)
        self.ops += 1

    @rule(name=names, size=st.integers(0, 30))
    @_step
    def truncate(self, name: str, size: int) -> None:
        got = self.fs.truncate(name, size)
        if name not in self.files:
            assert got == errno.ENOENT
        else:
            self._expect_store(name, self.files[name][:size].ljust(size, b"\0"), got)
        self.ops += 1

    @rule(name=names)
    @_step
    def unlink(self, name: str) -> None:
        got = self.fs.unlink(name)
        assert got == (0 if name in self.files else errno.ENOENT)
        self.files.pop(name, None)
        self.ops += 1

    @rule(src=names, dst=names)
    @_step
    def rename(self, src: str, dst: str) -> None:
        got = self.fs.rename(src, dst)
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
        got = self.fs.link(src, dst)
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
        got = self.fs.mkdir(name)
        assert got == (errno.EEXIST if name in self.dirs else 0)
        self.dirs.add(name)
        self.ops += 1

    @rule(name=st.sampled_from(DIRS))
    @_step
    def rmdir(self, name: str) -> None:
        got = self.fs.rmdir(name)
        assert got == (0 if name in self.dirs else errno.ENOENT)
        self.dirs.discard(name)
        self.ops += 1

    @rule(name=names)
    @_step
    def read(self, name: str) -> None:
        got = self.fs.read(name)
        assert got == self.files.get(name, errno.ENOENT), name
        self.ops += 1

    @rule(name=names, offset=st.integers(0, 30), size=st.integers(0, 30))
    @_step
    def pread(self, name: str, offset: int, size: int) -> None:
        if name not in self.files:
            return
        assert self.fs.pread(name, offset, size) == self.files[name][offset : offset + size]
        self.ops += 1

    @rule(
        message=st.text(
            st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1, max_size=20
        ).filter(str.strip)
    )
    @_step
    def commit(self, message: str) -> None:
        self.fs.commit(message)
        self.committed = self._chunks()
        self._check_repository()
        self.ops += 1

    @rule()
    @_step
    def discard(self) -> None:
        self.fs.discard()
        self.files = {**self.committed, **{k: v for k, v in self.files.items() if k in SCRATCH}}
        self.ops += 1

    @rule()
    @_step
    def remount(self) -> None:
        self.fs.remount()  # commits at unmount
        self.committed = self._chunks()
        self.files = dict(self.committed)  # scratch files and empty dirs live in the mount
        self.dirs.clear()
        self._check_repository()
        self.ops += 1

    # -- checks ------------------------------------------------------------------------------

    def _check_repository(self) -> None:
        for name in CHUNKS:
            assert chunk_at_tip(self.fs.repo, name) == self.committed.get(name), name

    @invariant()
    def tree_matches(self) -> None:
        if self.fs is None:
            return
        root = self.fs.listing()
        assert root & set(SCRATCH + DIRS) == {n for n in self.files if n in SCRATCH} | self.dirs
        for name in FILES:
            size = self.fs.size(name)
            if size is None:
                assert name not in self.files, self._story(f"{name} is missing")
            else:
                assert size == len(self.files.get(name, b"")), self._story(f"{name}: size {size}")

    def _story(self, what: str) -> str:
        return what + "; the steps before it:\n  " + "\n  ".join(self.history[-15:])


class CoreModel(BranchModel):
    """The same rules on the filesystem core, without FUSE."""

    files_class = CoreFiles


#: Operations the long profile runs, over all its shares.
LONG_OPS = 100_000


def test_model_on_the_core() -> None:
    """Many more examples per second than through the kernel (no mount, memory storage)."""
    profile = settings(
        max_examples=150,
        stateful_step_count=60,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        print_blob=True,
    )
    started = time.monotonic()
    run_state_machine_as_test(CoreModel, settings=profile)
    print(
        f"core model: {CoreModel.ops_total} operations in {time.monotonic() - started:.0f} s",
        file=sys.stderr,
    )


@pytest.mark.fuse
def test_model(request) -> None:
    """Through a real mount."""
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
