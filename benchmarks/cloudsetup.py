"""The object-storage harness of benchmarks/cloud.py: the loopback S3 server, the
proxy in front of it, the repository the rows read, and where their processes run."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import icechunk
import numpy as np
import zarr
from zarr.storage import LocalStore

from benchmarks.fetchfloor import Where
from benchmarks.proxy import Proxy, summary
from benchmarks.read import BIG_CHUNK
from harness.mount import Mount

if TYPE_CHECKING:
    from collections.abc import Iterator

    from benchmarks.common import Row
    from harness.servers import S3Server

GRID_CHUNK = (1, 1, 16)
Counts = dict[str, dict[str, int]]


class Cloud:
    """The S3 server, the proxy in front of it, and a repository reached through both."""

    def __init__(self, s3: S3Server, proxy: Proxy, base: Path) -> None:
        self.s3, self.proxy, self.base = s3, proxy, base
        self.bucket = s3.create_bucket(f"cloud-{uuid.uuid4().hex[:8]}")
        self.config = base / "s3.toml"
        self.config.write_text(
            f'region = "us-east-1"\nendpoint_url = "{proxy.endpoint}"\n'
            "allow_http = true\nforce_path_style = true\n"
            f'access_key_id = "{s3.key_id}"\nsecret_access_key = "{s3.secret}"\n'
        )
        self.config.chmod(0o600)

    def storage(self, prefix: str) -> icechunk.Storage:
        return icechunk.s3_storage(
            bucket=self.bucket,
            prefix=prefix,
            region="us-east-1",
            endpoint_url=self.proxy.endpoint,
            allow_http=True,
            force_path_style=True,
            access_key_id=self.s3.key_id,
            secret_access_key=self.s3.secret,
        )

    def where(self, prefix: str, tag: str, array: str) -> Where:
        """*array* of *tag* of the repository at *prefix*, for the fetching floor."""
        return Where(
            bucket=self.bucket,
            prefix=prefix,
            endpoint=self.proxy.endpoint,
            key_id=self.s3.key_id,
            secret=self.s3.secret,
            tag=tag,
            array=array,
        )

    @contextlib.contextmanager
    def mount(self, prefix: str, *args: str, cache: Path | None = None) -> Iterator[Mount]:
        """A mount of the repository at *prefix*, with its own new cache directory (removed
        after: its read cache starts empty) unless *cache* names one to keep."""
        where = cache or self.base / f"cache-{uuid.uuid4().hex[:6]}"
        try:
            with Mount(
                f"s3://{self.bucket}/{prefix}",
                self.base / "mnt",
                "--config",
                str(self.config),
                "--cache-dir",
                str(where),
                *args,
            ) as m:
                yield m
        finally:
            if cache is None:
                shutil.rmtree(where, ignore_errors=True)

    def forget(self, prefix: str) -> None:
        """Delete every object under *prefix* (the server keeps them in memory)."""
        client = self.s3.client()
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix + "/"
        )
        for page in pages:
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})

    @contextlib.contextmanager
    def counted(self, into: dict[str, Counts], side: str) -> Iterator[None]:
        """Count the requests made inside the block into *into[side]* (the last repeat's)."""
        self.proxy.reset()
        yield
        into[side] = self.proxy.counts()


def build(
    cloud: Cloud, size_mib: int, grid: tuple[int, int, int], few: tuple[int, ...] = (1, 4, 25)
) -> None:
    """The read repository (tag ``v1``: ``big``, ``grid`` and ``few``) at zero delay, the
    native copy of ``grid`` (``native/``) and a plain-Zarr copy of ``big`` and ``few``
    (``plain/``, for benchmarks/peers.py)."""
    repo = icechunk.Repository.create(cloud.storage("read"))
    session = repo.writable_session("main")
    plain = LocalStore(cloud.base / "plain")
    big_values = np.random.default_rng(0).random((max(1, size_mib // 2), 512, 1024), "f4")
    native = LocalStore(cloud.base / "native")
    arrays = {
        "big": (big_values, BIG_CHUNK, (session.store, plain)),
        "grid": (_grid_values(grid, 1), GRID_CHUNK, (session.store, native)),
        "few": (_grid_values(few, 2), GRID_CHUNK, (session.store, plain)),
    }
    for name, (values, chunks, stores) in arrays.items():
        for store in stores:
            zarr.open_group(store=store).create_array(
                name, shape=values.shape, chunks=chunks, dtype=values.dtype, compressors=None
            )[:] = values
    repo.create_tag("v1", session.commit("cloud benchmark data"))


def _grid_values(grid: tuple[int, ...], seed: int) -> np.ndarray:
    shape = tuple(n * c for n, c in zip(grid, GRID_CHUNK, strict=True))
    return np.random.default_rng(seed).integers(0, 255, shape, dtype="u1")


def requests_row(a: str, ca: Counts, b: str, cb: Counts) -> Row:
    return ("  requests (last repeat)", f"{a}: {summary(ca)}", f"{b}: {summary(cb)}", "", "-")


@contextlib.contextmanager
def server_apart(cloud: Cloud) -> Iterator[int]:
    """Run the block with the S3 server and the proxy on the first CPU and this process,
    and every process it starts, on the others: a cloud's servers never take the
    reader's CPUs, as the loopback ones otherwise do. Yields how many CPUs the readers
    have; 0 on a machine with one CPU, where nothing moves."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        yield 0
        return
    servers = (cloud.s3.proc.pid, cloud.proxy.proc.pid)
    for pid in servers:
        _pin(pid, set(cpus[:1]))
    _pin(os.getpid(), set(cpus[1:]))
    try:
        yield len(cpus) - 1
    finally:
        for pid in (*servers, os.getpid()):
            _pin(pid, set(cpus))


def _pin(pid: int, cpus: set[int]) -> None:
    """Move every thread of process *pid* to *cpus*; threads it starts later inherit it."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            os.sched_setaffinity(int(task.name), cpus)
