"""Prometheus metrics: a mount's scrape after a read and a commit, and a real Prometheus
server (Debian's) scraping it, queried through its HTTP API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import icechunk
import numpy as np
import pytest
import zarr
from prometheus_client.parser import text_string_to_metric_families

from harness.mount import run_icefs
from harness.servers import free_port, stop, wait_port


def make_repo(path):
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(path)))
    session = repo.writable_session("main")
    arr = zarr.group(store=session.store).create_array(
        "secret_name", shape=(8000,), chunks=(4000,), dtype="i4", compressors=None
    )
    arr[:] = np.arange(8000)
    session.commit("seed")
    return repo


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], Any]:
    """{(sample name, sorted labels): value} of the mount's metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    out[("__text__", ())] = text
    return out


def test_scrape_counts_reads_commits_and_branches(tmp_path, mount_factory):
    make_repo(tmp_path / "repo")
    port = free_port()
    m = mount_factory(tmp_path / "repo", "--metrics", f"127.0.0.1:{port}")
    main = m.mountpoint / "branches" / "main"
    data = (main / "secret_name" / "c" / "1").read_bytes()
    assert len(data) == 16000
    (main / "secret_name" / "c" / "0").write_bytes(np.full(4000, 3, dtype="i4").tobytes())
    with pytest.raises(OSError):
        os.rmdir(main / "secret_name")

    before = scrape(port)
    assert before[("icefs_read_bytes_total", ())] >= 16000
    assert before[("icefs_written_bytes_total", ())] >= 16000
    assert before[("icefs_fuse_requests_total", (("errno", "none"), ("operation", "read")))] >= 1
    assert before[("icefs_fuse_requests_total", (("errno", "ENOTEMPTY"), ("operation", "rmdir")))]
    assert before[("icefs_storage_requests_total", (("kind", "chunk"), ("outcome", "ok")))] >= 2
    assert before[("icefs_uncommitted_bytes", (("branch", "main"),))] == 16000
    assert before[("icefs_uncommitted_files", (("branch", "main"),))] == 1
    assert before[("icefs_commits_total", ())] == 0
    assert before[("icefs_errors_total", (("class", "NotEmpty"),))] == 1
    count = ("icefs_fuse_request_duration_seconds_count", (("operation", "read"),))
    inf = ("icefs_fuse_request_duration_seconds_bucket", (("le", "+Inf"), ("operation", "read")))
    assert before[count] == before[inf] >= 1
    assert before[("process_resident_memory_bytes", ())] > 0

    (main / ".icefs" / "commit").write_text("via metrics")
    after = scrape(port)
    assert after[("icefs_commits_total", ())] == 1
    assert after[("icefs_commit_duration_seconds_count", ())] == 1
    assert after[("icefs_storage_requests_total", (("kind", "commit"), ("outcome", "ok")))] == 1
    assert ("icefs_uncommitted_bytes", (("branch", "main"),)) not in after
    assert after[("icefs_fuse_requests_total", (("errno", "none"), ("operation", "read")))] > 0
    text = after[("__text__", ())]
    assert "secret_name" not in text, "no data path in a label"
    assert "via metrics" not in text
    # the .icefs/stats document counts the same
    stats = json.loads((m.mountpoint / ".icefs" / "stats").read_text())
    assert stats["commits"]["count"] == 1
    assert stats["storage_requests"]["commit ok"] == 1


def test_branch_labels_can_be_turned_off_and_bad_addresses_refused(tmp_path, mount_factory):
    make_repo(tmp_path / "repo")
    port = free_port()
    m = mount_factory(tmp_path / "repo", "-o", f"metrics=127.0.0.1:{port},metrics_branches=false")
    (m.mountpoint / "branches" / "main" / "secret_name" / "c" / "0").write_bytes(b"\0" * 16000)
    got = scrape(port)
    assert got[("icefs_uncommitted_bytes", ())] == 16000
    assert "branch=" not in got[("__text__", ())]
    with pytest.raises(urllib.error.HTTPError, match="404"):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/nothing", timeout=10)
    # the port is taken: the mount fails before mounting, saying why
    (tmp_path / "other").mkdir()
    result = run_icefs(
        "mount", str(tmp_path / "repo"), str(tmp_path / "other"), "--metrics", f"127.0.0.1:{port}"
    )
    assert result.returncode != 0
    assert "--metrics" in result.stderr
    assert "cannot listen" in result.stderr
    result = run_icefs(
        "mount", str(tmp_path / "repo"), str(tmp_path / "other"), "--metrics", "nowhere"
    )
    assert result.returncode != 0
    assert "HOST:PORT" in result.stderr


@pytest.fixture
def prometheus(tmp_path):
    """Start Debian's Prometheus on 127.0.0.1; return (start(targets), its port)."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is required (Debian package; scripts/bootstrap.sh test)")
    procs = []
    port = free_port()

    def start(target: str) -> int:
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n"
            "scrape_configs:\n  - job_name: icefs\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / "prometheus.log", "wb"),
        )
        procs.append(proc)
        wait_port(port, proc)
        return port

    yield start
    for proc in procs:
        stop(proc)


def query(port: int, expr: str) -> float | None:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        doc = json.load(r)
    assert doc["status"] == "success", doc
    result = doc["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def test_prometheus_scrapes_the_mount(tmp_path, mount_factory, prometheus):
    make_repo(tmp_path / "repo")
    metrics_port = free_port()
    m = mount_factory(tmp_path / "repo", "--metrics", f"127.0.0.1:{metrics_port}")
    main = m.mountpoint / "branches" / "main"
    assert len((main / "secret_name" / "c" / "1").read_bytes()) == 16000
    (main / "secret_name" / "c" / "0").write_bytes(b"\1" * 16000)
    (main / ".icefs" / "commit").write_text("scraped")
    port = prometheus(f"127.0.0.1:{metrics_port}")
    wanted = {
        'icefs_commits_total{job="icefs"}': 1.0,
        'icefs_read_bytes_total{job="icefs"} >= 16000': None,
        'sum(icefs_storage_requests_total{kind="chunk",outcome="ok"}) > 0': None,
        'up{job="icefs"}': 1.0,
    }
    deadline = time.monotonic() + 60
    got: dict[str, float | None] = {}
    while time.monotonic() < deadline:
        got = {expr: query(port, expr) for expr in wanted}
        if all(v is not None for v in got.values()):
            break
        time.sleep(0.5)
    for expr, value in wanted.items():
        assert got[expr] is not None, (expr, got)
        if value is not None:
            assert got[expr] == value, (expr, got)
