"""Soak: many threads and processes reading and writing one branch, two mounts at once.

    python benchmarks/soak.py --seconds 60 [--threads 8] [--procs 4] [--dir DIR]

Builds a local repository with arrays ``a`` (written through mount A) and ``b``
(through mount B, the same branch), then for the given time:

* writer threads and processes each own some chunks of ``a`` and also write the
  *shared* chunks 0-3 that every writer fights over;
* reader threads read random chunks and check every read is one whole record
  (a record carries its own checksum: a torn or mixed read is an error);
* a committer commits through A's control file every second, B's writer
  commits on its own;

then unmounts both (commit at unmount) and checks the repository: every owned
chunk holds its writer's last record, each shared chunk holds a whole record.
Prints operations/s and errors; exits 1 on any error or lost write.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import icechunk
import zarr

from harness.mount import Mount
from icefs.store.sample import sample_storage

CHUNKS = 64
SHARED = range(4)


def record(writer: str, seq: int) -> bytes:
    body = f"{writer}:{seq}:".encode().ljust(48, b".")
    return hashlib.sha256(body).hexdigest()[:16].encode() + body


def is_record(data: bytes) -> bool:
    return len(data) == 64 and hashlib.sha256(data[16:]).hexdigest()[:16].encode() == data[:16]


def chunk(branch: Path, array: str, i: int) -> Path:
    return branch / array / "c" / str(i)


def write_file(path: Path, data: bytes) -> None:
    # zarr-style: a scratch file renamed onto the key (atomic replace)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def writer_loop(
    branch: Path, array: str, name: str, owned: list[int], stop_at: float, out: dict[str, object]
) -> None:
    ops = errors = 0
    last: dict[int, bytes] = {}
    seq = 0
    rng = random.Random(name)
    while time.monotonic() < stop_at:
        seq += 1
        i = rng.choice(owned) if rng.random() < 0.7 or array != "a" else rng.choice(SHARED)
        data = record(name, seq)
        try:
            write_file(chunk(branch, array, i), data)
            if i in owned:
                last[i] = data
        except OSError as exc:
            errors += 1
            print(f"{name}: write {array}/{i}: {exc}", file=sys.stderr)
        ops += 1
    out.update(ops=ops, errors=errors, last={str(k): v.hex() for k, v in last.items()})


def _proc_main(
    branch: str,
    array: str,
    name: str,
    owned: list[int],
    stop_at_wall: float,
    queue: multiprocessing.Queue,  # type: ignore[type-arg]  # of result dicts
) -> None:
    out: dict[str, object] = {}
    writer_loop(
        Path(branch), array, name, owned, time.monotonic() + stop_at_wall - time.time(), out
    )
    queue.put((name, out))


def reader_loop(branch: Path, stop_at: float, out: dict[str, int]) -> None:
    ops = errors = 0
    rng = random.Random()
    while time.monotonic() < stop_at:
        i = rng.randrange(CHUNKS)
        try:
            data = chunk(branch, "a", i).read_bytes()
            if not is_record(data):
                errors += 1
                print(f"reader: a/{i} is not a whole record: {data[:40]!r}", file=sys.stderr)
        except OSError as exc:
            errors += 1
            print(f"reader: a/{i}: {exc}", file=sys.stderr)
        ops += 1
    out.update(ops=ops, errors=errors)


def committer_loop(branch: Path, stop_at: float, every: float, out: dict[str, int]) -> None:
    ops = errors = 0
    while every and time.monotonic() < stop_at:
        time.sleep(every)
        try:
            (branch / ".icefs" / "commit").write_text(f"soak commit {ops}")
        except OSError as exc:  # EBUSY on an overlapping commit elsewhere is possible
            errors += 1
            print(f"committer: {exc}", file=sys.stderr)
        ops += 1
    out.update(ops=ops, errors=errors)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--threads", type=int, default=8, help="writer threads (mount A)")
    parser.add_argument("--readers", type=int, default=4)
    parser.add_argument("--procs", type=int, default=2, help="writer processes (mount A)")
    parser.add_argument(
        "--commit-every",
        type=float,
        default=1.0,
        help="seconds between commits on each mount (0: only at unmount)",
    )
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    base = Path(args.dir or tempfile.mkdtemp(prefix="icefs-soak-"))
    base.mkdir(parents=True, exist_ok=True)
    repo_path = base / "repo"
    repo = icechunk.Repository.create(sample_storage(str(repo_path)))
    session = repo.writable_session("main")
    group = zarr.group(store=session.store)
    import numpy as np

    for name in ("a", "b"):  # every chunk starts as a whole record
        array = group.create_array(
            name, shape=(CHUNKS * 64,), chunks=(64,), dtype="u1", fill_value=0, compressors=None
        )
        array[:] = np.frombuffer(b"".join(record("init", i) for i in range(CHUNKS)), "u1")
    session.commit("soak base")

    writers = args.threads + args.procs
    owned = {w: [i for i in range(len(SHARED), CHUNKS) if i % writers == w] for w in range(writers)}
    results: dict[str, dict[str, object]] = {}
    started = time.monotonic()
    with (
        Mount(str(repo_path), base / "mnt-a") as mount_a,
        Mount(str(repo_path), base / "mnt-b") as mount_b,
    ):
        branch_a = mount_a.mountpoint / "branches" / "main"
        branch_b = mount_b.mountpoint / "branches" / "main"
        stop_at = time.monotonic() + args.seconds
        threads = []
        for w in range(args.threads):
            results[f"t{w}"] = {}
            threads.append(
                threading.Thread(
                    target=writer_loop,
                    args=(branch_a, "a", f"t{w}", owned[w], stop_at, results[f"t{w}"]),
                )
            )
        for r in range(args.readers):
            results[f"r{r}"] = {}
            threads.append(
                threading.Thread(target=reader_loop, args=(branch_a, stop_at, results[f"r{r}"]))
            )
        results["b"] = {}
        threads.append(
            threading.Thread(
                target=writer_loop,
                args=(branch_b, "b", "b", list(range(CHUNKS)), stop_at, results["b"]),
            )
        )
        results["commit-a"] = {}
        threads.append(
            threading.Thread(
                target=committer_loop,
                args=(branch_a, stop_at, args.commit_every, results["commit-a"]),
            )
        )
        results["commit-b"] = {}
        threads.append(
            threading.Thread(
                target=committer_loop,
                args=(branch_b, stop_at, args.commit_every, results["commit-b"]),
            )
        )
        queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
        procs = [
            multiprocessing.Process(
                target=_proc_main,
                args=(
                    str(branch_a),
                    "a",
                    f"p{p}",
                    owned[args.threads + p],
                    time.time() + args.seconds,
                    queue,
                ),
            )
            for p in range(args.procs)
        ]
        for t in threads:
            t.start()
        for p in procs:
            p.start()
        for _ in procs:
            name, out = queue.get(timeout=args.seconds + 120)
            results[name] = out
        for p in procs:
            p.join(timeout=30)
        for t in threads:
            t.join(timeout=args.seconds + 120)
        hung = [t.name for t in threads if t.is_alive()]
    elapsed = time.monotonic() - started

    lost = check_repository(repo_path, results)
    ops = sum(int(r.get("ops", 0)) for r in results.values())
    errors = sum(int(r.get("errors", 0)) for r in results.values())
    commits = len(
        list(icechunk.Repository.open(sample_storage(str(repo_path))).ancestry(branch="main"))
    )
    print(
        f"soak: {args.seconds:g} s, {args.threads} writer threads + {args.procs} writer "
        f"processes + {args.readers} readers on mount A, 1 writer on mount B"
    )
    print(
        f"operations: {ops} ({ops / args.seconds:.0f}/s), errors: {errors}, "
        f"lost or torn chunks: {lost}, hung workers: {len(hung)}, commits: {commits}, "
        f"wall {elapsed:.0f} s"
    )
    return 1 if errors or lost or hung else 0


def check_repository(repo_path: Path, results: dict[str, dict[str, object]]) -> int:
    store = (
        icechunk.Repository.open(sample_storage(str(repo_path)))
        .readonly_session(branch="main")
        .store
    )
    import asyncio

    from zarr.core.buffer import default_buffer_prototype

    async def get(key: str) -> bytes:
        buf = await store.get(key, default_buffer_prototype())
        return b"" if buf is None else buf.to_bytes()

    lost = 0
    for name, out in results.items():
        for i, data in dict(out.get("last", {})).items():
            array = "b" if name == "b" else "a"
            got = asyncio.run(get(f"{array}/c/{i}"))
            if got != bytes.fromhex(data):
                lost += 1
                print(
                    f"{array}/c/{i}: last write of {name} lost (found {got[:40]!r})",
                    file=sys.stderr,
                )
    for i in SHARED:
        got = asyncio.run(get(f"a/c/{i}"))
        if got and not is_record(got):
            lost += 1
            print(f"a/c/{i}: shared chunk torn: {got[:40]!r}", file=sys.stderr)
    return lost


if __name__ == "__main__":
    sys.exit(main())
