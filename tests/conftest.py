"""Shared fixtures: real Icechunk repositories and real `icefs mount` subprocesses."""

from __future__ import annotations

import contextlib
import logging
import subprocess
from pathlib import Path

import icechunk
import pytest
import zarr

from harness.mount import (
    LogProblems,
    Mount,
    MountFailed,
    direct_get,
    direct_keys,
    fuse_usable,
    run_icefs,
)
from icefs.store.open import configure_icechunk_logs
from icefs.store.sample import build_sample, sample_storage

configure_icechunk_logs(20)

__all__ = ["Mount", "direct_get", "direct_keys", "fuse_usable", "run_icefs"]


@pytest.fixture(scope="session")
def sample_repo(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A local repository holding the sample dataset (small), built once per session."""
    path = tmp_path_factory.mktemp("sample") / "repo"
    ids = build_sample(
        icechunk.Repository.create(sample_storage(str(path))), times=6, lat=20, lon=40
    )
    return path, ids


@pytest.fixture
def fresh_sample(tmp_path) -> tuple[Path, dict[str, str]]:
    """A tiny sample repository of this test's own (for tests that change refs), and its ids."""
    path = tmp_path / "repo"
    ids = build_sample(icechunk.Repository.create(sample_storage(str(path))), times=2, lat=4, lon=4)
    return path, ids


@pytest.fixture
def one_array_repo(tmp_path) -> Path:
    """A local repository whose main holds ``a``: 4 x int32 of 1 in 2 uncompressed chunks.

    Committed as "base" and tagged ``v1``.
    """
    path = tmp_path / "repo"
    repo = icechunk.Repository.create(sample_storage(str(path)))
    session = repo.writable_session("main")
    zarr.group(store=session.store).create_array(
        "a", shape=(4,), chunks=(2,), dtype="<i4", compressors=None
    )[:] = 1
    repo.create_tag("v1", session.commit("base"))
    return path


@pytest.fixture
def log_allows():
    """Patterns of log lines a test expects (errors it provokes on purpose).

    Append to it; a test fails if a daemon it mounted (`mount_factory`), or the
    code it ran in this process (`_log_check`), logged any other error line or
    traceback (S3QL's checklogs, for icefs).
    """
    return []


@pytest.fixture(autouse=True)
def _log_check(log_allows):
    """Fail a test whose code logged, in this process, an error or a traceback it did
    not declare in `log_allows` (the core tests' half of the daemons' log check)."""
    handler = LogProblems()
    root = logging.getLogger()
    root.addHandler(handler)
    yield
    root.removeHandler(handler)
    problems = handler.unexpected(log_allows)
    if problems:
        pytest.fail("the test logged errors it did not expect:\n" + "\n".join(problems))


@pytest.fixture
def mount_factory(tmp_path, log_allows):
    """Start `icefs mount` subprocesses; every one is stopped at teardown, pass or fail."""
    if not fuse_usable():
        pytest.fail("FUSE is required for the mount tests (/dev/fuse, fusermount3)")
    mounts: list[Mount] = []

    def start(
        storage: str | Path,
        *args: str,
        name: str = "mnt",
        ready: bool = True,
        wrap: tuple[str, ...] | list[str] = (),
    ) -> Mount:
        mnt = tmp_path / name
        if "--cache-dir" not in args:  # spool and crash journal stay in the test's tmp dir
            args = (*args, "--cache-dir", str(tmp_path / "cache"))
        m = Mount(str(storage), mnt, *args, log=tmp_path / f"{name}.log", ready=False, wrap=wrap)
        mounts.append(m)
        if ready:
            try:
                m.wait_ready()
            except MountFailed as exc:
                pytest.fail(str(exc))
        return m

    yield start
    for m in mounts:  # all of them first: nothing stays mounted whatever the logs say
        m.stop()
    problems = []
    for m in mounts:
        problems += [f"{m.log.name}: {line}" for line in m.log_problems(log_allows)]
    if problems:
        pytest.fail("the daemon logged errors the test did not expect:\n" + "\n".join(problems))


@pytest.fixture
def sample_mount(sample_repo, mount_factory) -> Mount:
    path, _ = sample_repo
    return mount_factory(path)


@pytest.fixture
def icefs_cli():
    return run_icefs


@pytest.fixture
def stop_later():
    """Collect mountpoints mounted in the background; clean them at teardown."""
    mounted: list[Path] = []
    yield mounted.append
    for mnt in mounted:
        with contextlib.suppress(Exception):
            run_icefs("umount", str(mnt), timeout=30)
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True, check=False)


@pytest.fixture(scope="session")
def s3_server():
    """moto in server mode on a free loopback port, for the whole session."""
    from harness.servers import start_moto, stop

    server = start_moto()
    yield server
    stop(server.proc)


@pytest.fixture(scope="session")
def azure_server(tmp_path_factory):
    """Azurite's blob service on a free loopback port, for the whole session."""
    from harness.servers import start_azurite, stop

    server = start_azurite(tmp_path_factory.mktemp("azurite"))
    yield server
    stop(server.proc)


@pytest.fixture
def gcs_recorder():
    from harness.servers import start_gcs_recorder

    recorder = start_gcs_recorder()
    yield recorder
    recorder.server.shutdown()


@pytest.fixture
def bridge():
    """A trio<->asyncio bridge for tests that build the core without a mount."""
    from icefs.store import Bridge

    b = Bridge()
    yield b
    b.close()


def pytest_addoption(parser):
    parser.addoption(
        "--long",
        action="store_true",
        help="long profiles: the model-based test runs >= 100k operations",
    )
    parser.addoption(
        "--long-share",
        type=int,
        default=1,
        metavar="N",
        help="with --long: run 1/N of the model-based test's operations",
    )


def pytest_collection_modifyitems(items):
    """Mark every test that mounts through `mount_factory` as `fuse`.

    Tests that start a mount another way carry the mark themselves, so
    `pytest -m "not fuse"` is the tier that needs no kernel.
    """
    for item in items:
        if "mount_factory" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.fuse)
