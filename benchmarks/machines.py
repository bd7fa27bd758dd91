"""Many machines, one repository: several daemons on one S3 repository commit at once.

    python benchmarks/machines.py [--seconds 60] [--daemons 4] [--refresh 1] [--dir DIR]

Starts the loopback S3 server (moto), a repository with an array ``grid`` of one
row per daemon, and ``--daemons`` icefs mounts of it, each with its own cache
directory (as separate machines would have), plus one read-only mount.  Every
second each daemon writes the next chunk of its own row and commits.  The reading
mount polls its branch's snapshot id.  At the end two daemons write the same
chunk and commit at the same instant: one must get EBUSY naming the conflict.

Then it checks the repository: every acknowledged commit is on the branch's
ancestry and every chunk written is in the final snapshot, and prints commits,
rebases and how long the reader took to see each new tip.  Exits 1 on a lost
commit or chunk.  tests/test_machines.py runs a short profile of this.
"""

from __future__ import annotations

import argparse
import errno
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from typing import TYPE_CHECKING

import icechunk
import numpy as np
import zarr

from harness.mount import Mount

if TYPE_CHECKING:
    from harness.servers import S3Server

#: Elements per chunk of ``grid`` (int32: 1 KiB chunks, stored as objects, not inline).
CHUNK = 256


@dataclass
class Result:
    daemons: int
    seconds: float
    acknowledged: list[tuple[str, float]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    missing: list[tuple[int, int]] = field(default_factory=list)
    #: seconds from each acknowledged commit to the reader seeing it (or a later tip)
    latencies: list[float] = field(default_factory=list)
    unseen: int = 0
    conflict: str = ""

    def table(self) -> str:
        lat = sorted(self.latencies) or [float("nan")]
        rows = [
            ("daemons writing / seconds", f"{self.daemons} / {self.seconds:g}"),
            (
                "commits acknowledged",
                f"{len(self.acknowledged)} ({len(self.acknowledged) / self.seconds:.1f}/s)",
            ),
            ("acknowledged commits lost", str(len(self.lost))),
            ("chunks written but missing", str(len(self.missing))),
            ("failed writes or commits", str(len(self.failures))),
            (
                "reader: seconds to see a new tip, median / p95 / max",
                f"{statistics.median(lat):.2f} / {lat[int(0.95 * (len(lat) - 1))]:.2f} / "
                f"{lat[-1]:.2f}",
            ),
            ("commits the reader never saw", str(self.unseen)),
            ("overlapping chunks", self.conflict or "no conflict reported"),
        ]
        return "\n".join(f"| {a} | {b} |" for a, b in rows)


def _seed(storage: icechunk.Storage, daemons: int, ticks: int) -> icechunk.Repository:
    repo = icechunk.Repository.create(storage)
    session = repo.writable_session("main")
    group = zarr.group(store=session.store)
    group.create_array(
        "grid",
        shape=(daemons, ticks * CHUNK),
        chunks=(1, CHUNK),
        dtype="<i4",
        compressors=None,
        fill_value=0,
    )
    group.create_array(
        "shared", shape=(CHUNK,), chunks=(CHUNK,), dtype="<i4", compressors=None, fill_value=0
    )
    session.commit("machines: seed")
    return repo


def _commit(branch: Path, message: str) -> str:
    with open(branch / ".icefs" / "commit", "w") as f:
        f.write(message)
    status = json.loads((branch / ".icefs" / "status").read_text())
    return str(status["last_commit"]["snapshot_id"])


def run(s3: S3Server, base: Path, seconds: float, daemons: int = 4, refresh: float = 1.0) -> Result:
    """Run the scenario against the S3 server *s3* (harness/servers.py) in *base*."""
    ticks = int(seconds)
    bucket = s3.create_bucket(f"machines-{uuid.uuid4().hex[:8]}")
    repo = _seed(s3.storage(bucket, "repo"), daemons, ticks)
    conf = base / "s3.toml"
    conf.write_text(
        f'region = "us-east-1"\nendpoint_url = "{s3.endpoint}"\n'
        "allow_http = true\nforce_path_style = true\n"
        f'access_key_id = "{s3.key_id}"\nsecret_access_key = "{s3.secret}"\n'
    )
    conf.chmod(0o600)
    url = f"s3://{bucket}/repo"
    result = Result(daemons, float(ticks))
    mounts: list[Mount] = []
    try:
        for d in range(daemons):
            mounts.append(
                Mount(
                    url,
                    base / f"m{d}",
                    "--config",
                    str(conf),
                    "--cache-dir",
                    str(base / f"cache{d}"),
                    "--refresh",
                    str(refresh),
                )
            )
        reader = Mount(
            url,
            base / "reader",
            "--config",
            str(conf),
            "--cache-dir",
            str(base / "cache-reader"),
            "--refresh",
            str(refresh),
            "--read-only",
        )
        mounts.append(reader)
        seen, done = _write_and_watch(result, mounts[:daemons], reader, ticks)
        result.conflict = _overlap(mounts[0], mounts[1])
    finally:
        for m in mounts:
            m.close()
    _check(result, repo, seen, done)
    return result


def _write_and_watch(
    result: Result, writers: list[Mount], reader: Mount, ticks: int
) -> tuple[list[tuple[float, str]], list[int]]:
    """Run the writers and the watching reader; return what the reader saw (time, tip)
    and how many ticks each writer wrote."""
    seen: list[tuple[float, str]] = []
    done = [0] * len(writers)
    stop = threading.Event()
    lock = threading.Lock()
    start = time.monotonic() + 0.5

    def watch() -> None:
        path = reader.mountpoint / "branches" / "main" / ".icefs" / "snapshot_id"
        while not stop.is_set():
            sid = path.read_text().strip()
            if not seen or seen[-1][1] != sid:
                seen.append((time.monotonic(), sid))
            time.sleep(0.02)

    def write(d: int, m: Mount) -> None:
        main = m.mountpoint / "branches" / "main"
        for t in range(ticks):
            time.sleep(max(0.0, start + t - time.monotonic()))
            chunk = main / "grid" / "c" / str(d) / str(t)
            try:
                chunk.parent.mkdir(parents=True, exist_ok=True)
                chunk.write_bytes(np.full(CHUNK, t + 1, "<i4").tobytes())
                sid = _commit(main, f"daemon {d} tick {t}")
            except OSError as exc:
                with lock:
                    result.failures.append(f"daemon {d} tick {t}: {exc}")
                continue
            with lock:
                result.acknowledged.append((sid, time.monotonic()))
            done[d] = t + 1

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    threads = [threading.Thread(target=write, args=(d, m)) for d, m in enumerate(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    status = json.loads((reader.mountpoint / ".icefs" / "status").read_text())
    time.sleep(3 * float(status["refresh_seconds"]) + 1)  # let the reader catch up
    stop.set()
    watcher.join()
    return seen, done


def _overlap(one: Mount, two: Mount) -> str:
    """Both write the same chunk and commit at once: one lands, the other gets EBUSY."""
    barrier = threading.Barrier(2)
    outcome: dict[int, str] = {}

    def go(i: int, m: Mount) -> None:
        main = m.mountpoint / "branches" / "main"
        (main / "shared" / "c").mkdir(parents=True, exist_ok=True)
        (main / "shared" / "c" / "0").write_bytes(np.full(CHUNK, 100 + i, "<i4").tobytes())
        barrier.wait(timeout=60)
        try:
            _commit(main, f"overlap {i}")
            outcome[i] = "committed"
        except OSError as exc:
            status = json.loads((main / ".icefs" / "status").read_text())
            outcome[i] = (
                f"{errno.errorcode.get(exc.errno or 0, exc.errno)}: "
                f"{'; '.join(status['conflicts'])}"
            )
            (main / ".icefs" / "discard").write_text("x")

    threads = [threading.Thread(target=go, args=(i, m)) for i, m in enumerate((one, two))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return " / ".join(outcome[i] for i in sorted(outcome))


def _check(
    result: Result, repo: icechunk.Repository, seen: list[tuple[float, str]], done: list[int]
) -> None:
    history = [info.id for info in repo.ancestry(branch="main")]
    position = {sid: i for i, sid in enumerate(history)}  # 0 = the tip
    result.lost = [sid for sid, _ in result.acknowledged if sid not in position]
    grid = zarr.open_array(repo.readonly_session(branch="main").store, path="grid")[:]
    for d, ticks in enumerate(done):
        for t in range(ticks):
            if not (grid[d, t * CHUNK : (t + 1) * CHUNK] == t + 1).all():
                result.missing.append((d, t))
    for sid, acked in result.acknowledged:
        if sid not in position:
            continue
        # the first tip the reader saw that is this commit or one after it
        later = [when for when, tip in seen if tip in position and position[tip] <= position[sid]]
        if later:
            result.latencies.append(max(0.0, later[0] - acked))
        else:
            result.unseen += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--daemons", type=int, default=4)
    parser.add_argument("--refresh", type=float, default=1.0)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    from harness.servers import start_moto, stop

    base = Path(args.dir or tempfile.mkdtemp(prefix="icefs-machines-"))
    base.mkdir(parents=True, exist_ok=True)
    s3 = start_moto()
    try:
        result = run(s3, base, args.seconds, args.daemons, args.refresh)
    finally:
        stop(s3.proc)
    print(
        f"icefs many machines on one S3 repository (moto on 127.0.0.1; refresh "
        f"{args.refresh:g} s)\n"
    )
    print(result.table())
    return 1 if result.lost or result.missing or result.failures else 0


if __name__ == "__main__":
    sys.exit(main())
