"""The persistent read cache through real mounts of an S3 repository (moto on loopback):
a remount reads and lists without chunk or manifest GETs, two daemons share one
fetch, damaged entries, a daemon killed mid-fill and a full cache disk."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import urllib.request
from pathlib import Path

import icechunk
import numpy as np
import pytest
import zarr

from harness.mount import run_icefs
from harness.servers import free_port
from tests.test_backends import unique

pytestmark = pytest.mark.fuse

#: 16 chunks of 8000 bytes (native: above Icechunk's inline threshold)
SHAPE, CHUNK = (16_000,), (1000,)


@pytest.fixture
def s3_repo(s3_server, tmp_path):
    """An S3 repository with array ``a`` on main and tag v1; (url, config file, values)."""
    bucket = s3_server.create_bucket(unique("rc"))
    repo = icechunk.Repository.create(s3_server.storage(bucket, "r"))
    session = repo.writable_session("main")
    values = np.arange(SHAPE[0], dtype="f8")
    group = zarr.group(store=session.store)
    group.create_array("a", shape=SHAPE, chunks=CHUNK, dtype="f8", compressors=None)[:] = values
    repo.create_tag("v1", session.commit("data"))
    conf = tmp_path / "s3.toml"
    conf.write_text(
        f'[mount]\nregion = "us-east-1"\nendpoint_url = "{s3_server.endpoint}"\n'
        f'allow_http = true\nforce_path_style = true\naccess_key_id = "{s3_server.key_id}"\n'
        f'secret_access_key = "{s3_server.secret}"\n'
    )
    return f"s3://{bucket}/r", str(conf), values


def _read_chunks(tree: Path) -> bytes:
    """Every chunk file of ``a`` below *tree*, read one after another, joined in C order."""
    return b"".join((tree / "a" / "c" / str(i)).read_bytes() for i in range(16))


def _entries(cache: Path) -> list[Path]:
    return [p for p in (cache / "read").glob("[0-9a-f]/[!.]*") if p.is_file()]


def test_remount_reads_and_lists_without_gets(s3_repo, mount_factory, tmp_path):
    url, conf, values = s3_repo
    cache = tmp_path / "shared-cache"
    args = ("--config", conf, "--cache-dir", str(cache))
    m = mount_factory(url, *args)
    v1 = m.mountpoint / "tags" / "v1"
    assert _read_chunks(v1) == values.tobytes()
    first = m.stats()
    assert first["read_cache"]["enabled"]
    assert first["read_cache"]["misses"] >= 16
    assert m.storage_requests("chunk") == 16
    m.umount()
    assert len(_entries(cache)) >= 16 + 1  # the chunks, the node list, the chunk index

    port = free_port()
    again = mount_factory(url, *args, "--metrics", f"127.0.0.1:{port}", name="again")
    root = again.mountpoint
    listed = subprocess.run(["find", str(root / "tags" / "v1")], capture_output=True, check=True)
    assert listed.stdout.count(b"/a/c/") == 16
    assert _read_chunks(root / "tags" / "v1") == values.tobytes()
    snapshot = (root / "tags" / "v1" / ".icefs" / "snapshot_id").read_text().strip()
    # the same snapshot under snapshots/ and as main's committed base: the same entries
    assert _read_chunks(root / "snapshots" / snapshot) == values.tobytes()
    assert _read_chunks(root / "branches" / "main") == values.tobytes()
    stats = again.stats()
    assert again.storage_requests("chunk") == 0
    assert again.storage_requests("manifest") == 0
    assert stats["read_cache"]["hits"] >= 16
    assert stats["read_cache"]["damaged"] == 0
    assert stats["read_cache"]["bytes_served"] >= values.nbytes
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        scraped = r.read().decode()
    hits = re.search(r"^icefs_read_cache_hits_total (\S+)$", scraped, re.M)
    assert hits is not None
    assert float(hits.group(1)) == stats["read_cache"]["hits"]
    assert re.search(r"^icefs_read_cache_damaged_total 0\.0$", scraped, re.M)
    status = run_icefs("cache", "stats", "--cache-dir", str(cache), "--json")
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    assert doc["entries"] == len(_entries(cache))
    assert doc["bytes"] == sum(p.stat().st_size for p in _entries(cache))


def test_two_daemons_fetch_each_chunk_once(s3_repo, mount_factory, tmp_path):
    url, conf, values = s3_repo
    args = ("--config", conf, "--cache-dir", str(tmp_path / "shared-cache"))
    mounts = [mount_factory(url, *args, name=n) for n in ("one", "two")]
    results: dict[str, bytes] = {}

    def read(m) -> None:
        results[m.mountpoint.name] = _read_chunks(m.mountpoint / "tags" / "v1")

    threads = [threading.Thread(target=read, args=(m,)) for m in mounts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {"one": values.tobytes(), "two": values.tobytes()}
    assert sum(m.storage_requests("chunk") for m in mounts) == 16
    assert sum(m.storage_requests("manifest") for m in mounts) == 1
    counters = [m.stats()["read_cache"] for m in mounts]
    assert sum(c["hits"] for c in counters) >= 16


def test_damaged_entries_are_fetched_again(s3_repo, mount_factory, tmp_path):
    url, conf, values = s3_repo
    cache = tmp_path / "shared-cache"
    args = ("--config", conf, "--cache-dir", str(cache))
    m = mount_factory(url, *args)
    assert _read_chunks(m.mountpoint / "tags" / "v1") == values.tobytes()
    m.umount()
    damaged = _entries(cache)
    for path in damaged:  # one bit of each entry's last byte: a bad disk
        blob = bytearray(path.read_bytes())
        blob[-1] ^= 0x10
        path.write_bytes(blob)
    again = mount_factory(url, *args, name="again")
    assert _read_chunks(again.mountpoint / "tags" / "v1") == values.tobytes()
    stats = again.stats()
    assert stats["read_cache"]["damaged"] == len(damaged)
    assert again.storage_requests("chunk") == 16
    assert "dropped a damaged entry" in again.log_text()
    prune = run_icefs("cache", "prune", "--cache-dir", str(cache), "--json")
    assert json.loads(prune.stdout)["damaged"] == 0


def test_daemon_killed_mid_fill_leaves_only_whole_entries(s3_repo, mount_factory, tmp_path):
    url, conf, values = s3_repo
    cache = tmp_path / "shared-cache"
    args = ("--config", conf, "--cache-dir", str(cache))
    m = mount_factory(url, *args)
    tree = m.mountpoint / "tags" / "v1" / "a" / "c"
    for i in range(8):
        assert (tree / str(i)).read_bytes() == values[i * 1000 : (i + 1) * 1000].tobytes()
    os.kill(m.proc.pid, signal.SIGKILL)
    m.stop()
    prune = run_icefs("cache", "prune", "--cache-dir", str(cache), "--json")
    assert prune.returncode == 0, prune.stderr
    doc = json.loads(prune.stdout)
    assert doc["damaged"] == 0
    assert doc["entries"] == len(_entries(cache)) >= 8
    assert not list((cache / "read" / "tmp").iterdir())
    again = mount_factory(url, *args, name="again")
    assert _read_chunks(again.mountpoint / "tags" / "v1") == values.tobytes()


@pytest.fixture
def tiny_cache_disk(tmp_path):
    """A cache directory whose read cache sits on a 64 KiB tmpfs."""
    read = tmp_path / "tiny-cache" / "read"
    read.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(read)], check=True)
    try:
        yield read.parent
    finally:
        subprocess.run(["umount", "-l", str(read)], check=True)


def test_full_cache_disk_never_fails_a_read(s3_repo, mount_factory, tiny_cache_disk, log_allows):
    url, conf, values = s3_repo
    m = mount_factory(
        url, "--config", conf, "--cache-dir", str(tiny_cache_disk), "--read-cache-size", "1G"
    )
    for _ in range(2):
        assert _read_chunks(m.mountpoint / "tags" / "v1") == values.tobytes()
    stats = m.stats()["read_cache"]
    assert stats["not_filled"] >= 1
    assert "is full" in m.log_text()
    assert m.stats()["errors"] == 0


def test_cache_off_and_local_repositories_have_none(s3_repo, mount_factory, tmp_path, sample_repo):
    url, conf, values = s3_repo
    m = mount_factory(url, "--config", conf, "--read-cache-size", "0")
    assert _read_chunks(m.mountpoint / "tags" / "v1") == values.tobytes()
    assert m.stats()["read_cache"] == {"enabled": False}
    local = mount_factory(sample_repo[0], name="local")
    assert local.stats()["read_cache"] == {"enabled": False}
