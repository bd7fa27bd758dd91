"""``mv`` of an array inside a branch: Icechunk's move, against the copy it replaced.

    python benchmarks/move.py [--dir DIR] [--chunks 100000] [--copied 2000] [--repeat 3]
    python benchmarks/move.py --smoke

A local repository holds an array of --chunks native chunks of 1 KiB (objects,
not inline: Icechunk inlines chunks under 512 bytes), built once and kept in
--dir. Each repeat mounts it, renames the array within ``branches/main``
(``os.rename``: Icechunk's move, one commit) and back, and counts the storage
objects written under ``chunks/``. Beside it, ``mv`` of an array of --copied
chunks across branches, where rename(2) answers EXDEV and ``mv`` copies and
deletes every file: what every directory rename cost before.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Row, parse_args, report
from harness.mount import Mount

CHUNK = 256  # int32 elements: 1 KiB chunks


def build(path: Path, chunks: int) -> None:
    """A repository whose ``main`` holds ``big``: *chunks* chunks of 1 KiB (kept)."""
    if (path / "done").exists():
        return
    import icechunk
    import numpy as np
    import zarr

    shutil.rmtree(path, ignore_errors=True)
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(path / "repo")))
    session = repo.writable_session("main")
    root = zarr.group(store=session.store)
    rows = max(1, chunks // 1000)
    big = root.create_array(
        "big",
        shape=(rows, (chunks // rows) * CHUNK),
        chunks=(1, CHUNK),
        dtype="<i4",
        compressors=None,
    )
    for r in range(rows):
        big[r] = np.arange(big.shape[1], dtype="<i4") + r
    root.create_array("small", shape=(0,), chunks=(1,), dtype="<i4")
    session.commit("an array to move")
    (path / "done").touch()


def objects(repo: Path) -> int:
    return sum(1 for _ in (repo / "chunks").iterdir())


def collect(argv: list[str] | None = None) -> tuple[list[Row], int]:
    args = parse_args(
        __doc__,
        "move",
        argv,
        chunks=(100_000, 2_000, "chunks of the array moved"),
        copied=(2_000, 200, "chunks of the array mv copies across branches"),
    )
    base = Path(args.dir)
    build(base / f"moved-{args.chunks}", args.chunks)
    build(base / f"copied-{args.copied}", args.copied)
    rows: list[Row] = []
    repo = base / f"moved-{args.chunks}" / "repo"
    times, written = [], 0
    mnt = base / "mnt"
    with Mount(str(repo), mnt, "--cache-dir", str(base / "cache")) as m:
        main = m.mountpoint / "branches" / "main"
        for _ in range(args.repeat):
            before = objects(repo)
            for old, new in (("big", "moved"), ("moved", "big")):
                started = time.perf_counter()
                (main / old).rename(main / new)
                times.append(time.perf_counter() - started)
            written += objects(repo) - before
    rows.append(
        (
            f"rename(2) of an array of {args.chunks:,} chunks in a branch",
            f"{min(times) * 1000:.0f} ms (median {sorted(times)[len(times) // 2] * 1000:.0f})",
            "-",
            f"{written} chunk objects written",
            "well under 1 s, 0 chunks written",
        )
    )
    # the copy it replaced: mv across branches (EXDEV), a fresh copy of the repository
    work = base / "copy-run"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(base / f"copied-{args.copied}" / "repo", work / "repo")
    with Mount(str(work / "repo"), work / "mnt", "--cache-dir", str(work / "cache")) as m:
        (m.mountpoint / "branches" / "dev").mkdir()
        before = objects(work / "repo")
        started = time.perf_counter()
        subprocess.run(
            ["mv", str(m.mountpoint / "branches/main/big"), str(m.mountpoint / "branches/dev/big")],
            check=True,
        )
        copy_seconds = time.perf_counter() - started
        for branch in ("main", "dev"):
            (m.mountpoint / "branches" / branch / ".icefs" / "commit").write_text("mv")
        copied_objects = objects(work / "repo") - before
    shutil.rmtree(work, ignore_errors=True)
    rows.append(
        (
            f"mv of an array of {args.copied:,} chunks across branches (EXDEV: copy + delete)",
            f"{copy_seconds:.2f} s",
            "-",
            f"{copied_objects} chunk objects written",
            "(what a rename cost before)",
        )
    )
    return rows, args.repeat


def main(argv: list[str] | None = None) -> int:
    rows, _ = collect(argv)
    report("Moving arrays", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
