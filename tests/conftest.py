"""Shared fixtures: real Icechunk repositories and real `icefs mount` subprocesses."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import icechunk
import pytest
from zarr.core.buffer import default_buffer_prototype

from icefs.store.open import configure_icechunk_logs
from icefs.store.sample import build_sample, sample_storage

configure_icechunk_logs(20)

MOUNT_DEADLINE = 30.0
UMOUNT_DEADLINE = 30.0


def fuse_usable() -> bool:
    return os.path.exists("/dev/fuse") and os.path.exists("/usr/bin/fusermount3")


@pytest.fixture(scope="session")
def sample_repo(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A local repository holding the sample dataset (small), built once per session."""
    path = tmp_path_factory.mktemp("sample") / "repo"
    ids = build_sample(
        icechunk.Repository.create(sample_storage(str(path))), times=6, lat=20, lon=40
    )
    return path, ids


def direct_get(repo_path: Path, snapshot_id: str, key: str) -> bytes | None:
    """Read *key* at *snapshot_id* straight from Icechunk (no icefs involved)."""
    repo = icechunk.Repository.open(sample_storage(str(repo_path)))
    store = repo.readonly_session(snapshot_id=snapshot_id).store

    async def get() -> bytes | None:
        buf = await store.get(key, default_buffer_prototype())
        return None if buf is None else buf.to_bytes()

    return asyncio.run(get())


def direct_keys(repo_path: Path, snapshot_id: str) -> list[str]:
    repo = icechunk.Repository.open(sample_storage(str(repo_path)))
    return sorted(repo.readonly_session(snapshot_id=snapshot_id).store.list())


class Mount:
    """A real ``icefs mount --foreground`` subprocess with a deadline on every step."""

    def __init__(self, storage: str, mountpoint: Path, *args: str, log: Path) -> None:
        self.mountpoint = mountpoint
        self.log = log
        self._log_file = open(log, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "icefs",
                "mount",
                "--foreground",
                str(storage),
                str(mountpoint),
                *args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=self._log_file,
        )

    def wait_ready(self) -> None:
        """Poll until the mount answers (a dead mount left behind does not count)."""
        deadline = time.monotonic() + MOUNT_DEADLINE
        while True:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"icefs exited with {self.proc.returncode} before mounting:\n" + self.log_text()
                )
            if time.monotonic() > deadline:
                pytest.fail("mount not ready within deadline:\n" + self.log_text())
            try:
                if os.path.ismount(self.mountpoint):
                    os.statvfs(self.mountpoint)
                    os.listdir(self.mountpoint / "branches")
                    return
            except OSError:
                pass
            time.sleep(0.05)

    def log_text(self) -> str:
        self._log_file.flush()
        return self.log.read_text(errors="replace")

    def umount(self) -> int:
        """Unmount cleanly and return the daemon's exit code."""
        subprocess.run(
            ["fusermount3", "-u", str(self.mountpoint)], check=True, timeout=UMOUNT_DEADLINE
        )
        return self.proc.wait(timeout=UMOUNT_DEADLINE)

    def stop(self) -> None:
        """Make sure nothing is left: lazy unmount, then terminate, then kill."""
        if os.path.ismount(self.mountpoint) or self._dead_mount():
            subprocess.run(
                ["fusermount3", "-u", "-z", str(self.mountpoint)],
                capture_output=True,
                check=False,
                timeout=UMOUNT_DEADLINE,
            )
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log_file.close()

    def _dead_mount(self) -> bool:
        try:
            os.statvfs(self.mountpoint)
        except OSError:
            return True
        return False


@pytest.fixture
def mount_factory(tmp_path):
    """Start `icefs mount` subprocesses; every one is stopped at teardown, pass or fail."""
    if not fuse_usable():
        pytest.fail("FUSE is required for the mount tests (/dev/fuse, fusermount3)")
    mounts: list[Mount] = []

    def start(storage: str | Path, *args: str, name: str = "mnt", ready: bool = True) -> Mount:
        mnt = tmp_path / name
        mnt.mkdir(exist_ok=True)
        if "--cache-dir" not in args:  # spool and crash journal stay in the test's tmp dir
            args = (*args, "--cache-dir", str(tmp_path / "cache"))
        m = Mount(str(storage), mnt, *args, log=tmp_path / f"{name}.log")
        mounts.append(m)
        if ready:
            m.wait_ready()
        return m

    yield start
    for m in mounts:
        m.stop()


@pytest.fixture
def sample_mount(sample_repo, mount_factory) -> Mount:
    path, _ = sample_repo
    return mount_factory(path)


def run_icefs(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "icefs", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


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
    from tests.servers import start_moto, stop

    server = start_moto()
    yield server
    stop(server.proc)


@pytest.fixture(scope="session")
def azure_server(tmp_path_factory):
    """Azurite's blob service on a free loopback port, for the whole session."""
    from tests.servers import start_azurite, stop

    server = start_azurite(tmp_path_factory.mktemp("azurite"))
    yield server
    stop(server.proc)


@pytest.fixture
def gcs_recorder():
    from tests.servers import start_gcs_recorder

    recorder = start_gcs_recorder()
    yield recorder
    recorder.server.shutdown()


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
