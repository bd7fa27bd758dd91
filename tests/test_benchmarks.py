"""A smoke run of the benchmark command on tiny data, so it cannot rot (no timing asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_benchmarks(*args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run ``python -m benchmarks --smoke *args*``; return it and its table's lines."""
    return run_python("-m", "benchmarks", "--smoke", *args)


def run_python(*args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run ``python *args*`` in the checkout; return it and its table's lines."""
    result = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result, [line for line in result.stdout.splitlines() if line.startswith("| ")]


@pytest.mark.fuse
def test_benchmark_command_smoke(tmp_path):
    result, table = run_benchmarks("--dir", str(tmp_path / "bench"))
    for row in (
        "warm read big",
        "cold read big",
        "write ",
        "daemon RSS",
        "concurrent readers",
        "`find`",
        "`ls -lR`",
        "chunks in 10 directories, cold",
        "chunks in 10 directories, warm",
        "per directory, cold",
        "random 1 KiB chunk reads",
        "fio sequential read",
        "floor: write",
        "floor: read",
        "floor: one request round trip",
        "(floor) the same zarr write",
        "(floor) `find`",
        "(floor) the same reads",
        "(floor) both halves at once: direct read",
        "(reference) the direct write + commit",
        "(floor) warm plain reads",
        "CPU-seconds per GiB",
        "cold read of a virtual array",
        "(floor) both halves at once: the direct virtual read",
        "through zarr2/ vs the v3 tree, same reader",
        "the same through zarr2-decoded/",
        "of zarr2/ vs the v3 tree",
        "rename(2) of an array of",
        "across branches (EXDEV: copy + delete)",
    ):
        assert any(row in line for line in table), row
    assert "fio not installed" not in result.stdout, "bootstrap installs fio"
    assert "icechunk" in result.stdout  # the environment block
    assert "- free page reporting" in result.stdout  # whether the run held it off


def test_latency_proxy_replies_without_nagle(s3_server):
    """The proxy sends each reply as soon as it is written: no small reply waits for the
    client's delayed ACK (its sockets to clients have TCP_NODELAY set)."""
    import socket

    import boto3

    from benchmarks.proxy import serve

    server = serve(s3_server.endpoint, 0)
    accepted = []
    get_request = server.get_request

    def recorded():
        conn, address = get_request()
        accepted.append(conn)
        return conn, address

    setattr(server, "get_request", recorded)  # noqa: B010 (a method replaced on one object)
    try:
        bucket = s3_server.create_bucket("proxy-nodelay")
        client = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{server.server_address[1]}",
            region_name="us-east-1",
            aws_access_key_id=s3_server.key_id,
            aws_secret_access_key=s3_server.secret,
        )
        client.put_object(Bucket=bucket, Key="small", Body=b"x" * 10)
        assert client.get_object(Bucket=bucket, Key="small")["Body"].read() == b"x" * 10
        assert accepted
        assert all(c.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for c in accepted)
    finally:
        server.shutdown()
        server.server_close()


def test_steady_memory_restores_the_knobs(tmp_path, monkeypatch):
    """`steady_memory` holds free page reporting off and puts every setting back."""
    from benchmarks import common

    knobs = tmp_path / "parameters"
    knobs.mkdir()
    (knobs / "min_free_ms").write_text("0\n")
    (knobs / "max_waiting_mib").write_text("1024\n")
    monkeypatch.setattr(common, "PAGE_REPORTING", str(knobs))
    with common.steady_memory(0.001):
        assert (knobs / "min_free_ms").read_text() == "300000"
        assert (knobs / "max_waiting_mib").read_text() == "1000000"
        assert "held off" in common.environment()[-1]
    assert (knobs / "min_free_ms").read_text() == "0"
    assert (knobs / "max_waiting_mib").read_text() == "1024"


def test_latency_proxy_counts_requests_by_kind(s3_server):
    """benchmarks/proxy.py forwards every request and counts it by kind, with bytes."""
    from benchmarks.proxy import Proxy, kind

    assert kind("GET", "/bucket?list-type=2&prefix=a") == "LIST"
    assert kind("GET", "/bucket/") == "LIST"
    assert kind("GET", "/bucket/repo/chunks/X") == "GET"
    bucket = s3_server.create_bucket("proxy-counts")
    with Proxy(s3_server.endpoint, 0) as proxy:
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=proxy.endpoint,
            region_name="us-east-1",
            aws_access_key_id=s3_server.key_id,
            aws_secret_access_key=s3_server.secret,
        )
        client.put_object(Bucket=bucket, Key="a/one", Body=b"x" * 1000)
        assert client.get_object(Bucket=bucket, Key="a/one")["Body"].read() == b"x" * 1000
        client.head_object(Bucket=bucket, Key="a/one")
        assert [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]] == ["a/one"]
        counts = proxy.counts()
        assert {k: v["requests"] for k, v in counts.items()} == {
            "GET": 1,
            "HEAD": 1,
            "LIST": 1,
            "PUT": 1,
        }
        assert counts["PUT"]["sent"] == 1000
        assert counts["GET"]["received"] == 1000
        proxy.set_delay(5)
        proxy.reset()
        assert proxy.counts() == {}
        client.get_object(Bucket=bucket, Key="a/one")
        assert proxy.counts()["GET"]["requests"] == 1


@pytest.mark.fuse
def test_cloud_benchmark_smoke(tmp_path):
    """``python -m benchmarks --cloud --smoke`` prints every row with its request counts
    (and the floors beside them), and walking a tag's chunk directories makes no request
    per chunk file."""
    result, table = run_benchmarks("--cloud", "--dir", str(tmp_path))
    for row in (
        "20 ms per request",
        "cold read 8 MiB",
        "cold cp -r",
        "cold fio",
        "time to first byte",
        "find over 400 chunks",
        "ls -lR over 400 chunks",
        "write 8 MiB with zarr + commit",
        "commit of 200 changed",
        "daemon RSS writing",
        "read cache: remount cold read",
        "chunk / manifest requests of that read | 0 / 0",
        "read cache: remount find of grid",
        "read cache: second pass",
        "read cache: first fill against the cache off",
        "read cache: remount read against direct Icechunk",
        "cp -r of big under snapshots/",
        "cp -r of big under branches/",
        "rclone off: cold read",
        "rclone full: cold read",
        "s3fs: cold read",
    ):
        assert any(row in line for line in table), row
    # a remount's find reads no manifest; a second pass fetches no chunk
    assert any("0 manifest requests" in x for x in table if "remount find" in x)
    assert any("| 0 chunk requests |" in x for x in table if "second pass" in x)
    assert sum("requests (last repeat)" in line for line in table) == 7
    # the floors measured in the same run: find on the null fs, cold and warm; reads of
    # both halves at once; beside them, Icechunk listing the keys itself
    assert sum("find over" in x and "null pyfuse3 fs" in x for x in table) == 2
    assert any("(reference) direct: open the repository" in x for x in table)
    assert any("(floor) both halves at once" in x for x in table)
    # cp -r and fio beside the cold read; cp -r beside the read cache's cp -r rows
    assert sum("(floor) one reader" in x for x in table) == 3
    # each reader of the mount from a filesystem that only fetches through Icechunk
    assert sum("only fetches through Icechunk" in x for x in table) == 3
    assert any("CPU-seconds per GiB, whole machine" in x for x in table)
    # every reader again with no latency, and with the server on its own CPU
    again = ["no latency added", *(["server and proxy apart"] * (len(os.sched_getaffinity(0)) > 1))]
    for what in again:
        rows = [x for x in table if what in x]
        readers = [r for r in ("icefs", "cp -r", "fio") if any(f": {r}," in x for x in rows)]
        assert readers == ["icefs", "cp -r", "fio"], rows
    apart_writes = [x for x in table if "apart" in x and ": write + commit," in x]
    assert len(apart_writes) == (len(os.sched_getaffinity(0)) > 1)
    [line] = [x for x in result.stderr.splitlines() if x.startswith('{"delay"')]
    counts = json.loads(line)["counts"]
    for walk in ("find cold", "ls -lR cold"):
        made = sum(c["requests"] for c in counts[walk].values())
        assert 0 < made < 20, (walk, counts[walk])  # 400 chunk files, a handful of gets
    assert counts["find warm"] == {}
    assert counts["icefs read"]["GET"]["received"] >= 8 << 20
    assert counts["cp -r read"]["GET"]["received"] >= 8 << 20


@pytest.mark.fuse
def test_fetching_floor_serves_the_tags_bytes(s3_server, tmp_path):
    """The fetching floor (benchmarks/fetchfloor.py) serves each chunk file of the array
    byte for byte as Icechunk holds it at the tag, read in order, out of order and
    again after it was dropped; a floor that served anything else would measure
    nothing."""
    import icechunk
    import numpy as np
    import zarr

    from benchmarks.cloudsetup import Cloud
    from benchmarks.common import drop_caches
    from benchmarks.fetchfloor import WINDOW, FetchMount
    from benchmarks.proxy import Proxy

    with Proxy(s3_server.endpoint, 0) as proxy:
        cloud = Cloud(s3_server, proxy, tmp_path)
        repo = icechunk.Repository.create(cloud.storage("floor"))
        session = repo.writable_session("main")
        rows = WINDOW + 8  # past one window: the scan must move on as reads do
        a = zarr.create_array(
            session.store, name="a", shape=(rows, 256), chunks=(1, 256), dtype="u4"
        )
        a[:] = np.arange(rows * 256, dtype="u4").reshape(rows, 256)
        repo.create_tag("t", session.commit("rows"))
        direct = repo.readonly_session(tag="t").store

        def want(i: int) -> bytes:
            import asyncio

            from zarr.core.buffer import default_buffer_prototype

            got = asyncio.run(direct.get(f"a/c/{i}/0", default_buffer_prototype()))
            assert got is not None
            return got.to_bytes()

        with FetchMount(tmp_path / "mnt", cloud.where("floor", "t", "a")) as f:
            root = f.mountpoint / "a"
            assert json.loads((root / "zarr.json").read_text())["shape"] == [rows, 256]
            assert sorted(os.listdir(root / "c"), key=int) == [str(i) for i in range(rows)]
            for i in range(rows):
                assert (root / "c" / str(i) / "0").read_bytes() == want(i), i
            for i in (rows - 1, 3, 0):  # dropped once read: fetched again, out of order
                assert drop_caches()  # else the kernel answers from its pages
                assert (root / "c" / str(i) / "0").read_bytes() == want(i), i


@pytest.mark.fuse
def test_scale_table_smoke(tmp_path):
    """``python -m benchmarks --scale --smoke``: every scale row, from the virtual arrays,
    the array of real chunks, the long history and the small-chunk writes."""
    _, table = run_benchmarks("--scale", "--dir", str(tmp_path / "bench"))
    for row in (
        "scale 20,000 chunks (141 dirs): `ls` of one chunk dir",
        "scale 20,000 chunks (141 dirs): `find` cold (",
        "scale 20,000 real chunks (141 dirs): `find` warm (",
        "history of 2,000 snapshots: `ls snapshots/` first / again",
        "history of 2,000 snapshots: read `.icefs/log` (first page)",
        "write 2,000 chunks of 1 KiB with zarr + commit",
    ):
        assert any(row in line for line in table), (row, table)
    (listed,) = [r for r in table if "`ls snapshots/` first" in r]
    assert "(2,001 entries)" in listed, listed  # every snapshot and the root
    (page,) = [r for r in table if "`.icefs/log` (first page)" in r]
    assert "(1,001 lines)" in page, page  # a page of 1,000 and where the next starts


@pytest.mark.fuse
def test_scale_write_benchmark_smoke(tmp_path):
    _, table = run_python("benchmarks/scalewrite.py", "--smoke", "--dir", str(tmp_path / "sw"))
    (row,) = [r for r in table if "write 2,000 chunks of 1 KiB with zarr + commit" in r]
    for side in ("direct", "null fs", "Icechunk alone", "native", "floor (null fs + Icechunk"):
        assert side in row, (side, row)
    assert "x floor" in row, row
    (rss,) = [r for r in table if "daemon RSS writing 2,000 chunks" in r]
    assert "(peak)" in rss, rss
