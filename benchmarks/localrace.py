"""Plain Icechunk on local disk, two processes committing at the same instant: how many lost.

``python benchmarks/localrace.py [--rounds N] [--runs R]`` makes a local repository, then
for each round starts two processes that each commit one chunk to ``main`` at the same
instant (a shared start time), and counts the snapshot ids a commit returned that are
not on the branch's ancestry at the end: commits Icechunk acknowledged and lost.  No
icefs is involved: this is the floor the `RefLock` of local repositories exists for
(docs/reliability.md, "Local disk").
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

_COMMITTER = textwrap.dedent(
    """
    import json, sys, time
    import icechunk, numpy as np, zarr
    path, row, start = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    repo = icechunk.Repository.open(icechunk.local_filesystem_storage(path))
    session = repo.writable_session("main")
    zarr.open_array(session.store, path="a", mode="r+")[row] = np.full(4, row, "i4")
    time.sleep(max(0.0, start - time.time()))
    print(json.dumps(session.commit(f"row {row}")))
    """
)


def run(rounds: int) -> tuple[int, int]:
    """Return (acknowledged, lost) over *rounds* rounds of two racing committers."""
    import icechunk
    import zarr

    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "repo")
        repo = icechunk.Repository.create(icechunk.local_filesystem_storage(path))
        session = repo.writable_session("main")
        zarr.create_array(
            session.store, name="a", shape=(2, 4), chunks=(1, 4), dtype="i4", fill_value=0
        )
        session.commit("array")
        acknowledged: list[str] = []
        for _ in range(rounds):
            start = time.time() + 1.0  # both are waiting, sessions open, when it comes
            procs = [
                subprocess.Popen(
                    [sys.executable, "-c", _COMMITTER, path, str(row), str(start)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
                for row in (0, 1)
            ]
            for proc in procs:
                out, _ = proc.communicate(timeout=120)
                if proc.returncode == 0:  # a conflict error is no loss: it was not acknowledged
                    acknowledged.append(json.loads(out))
        on_branch = {
            s.id
            for s in icechunk.Repository.open(icechunk.local_filesystem_storage(path)).ancestry(
                branch="main"
            )
        }
        return len(acknowledged), sum(1 for sid in acknowledged if sid not in on_branch)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    for i in range(args.runs):
        acknowledged, lost = run(args.rounds)
        print(f"run {i + 1}: {lost} of {acknowledged} acknowledged commits lost", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
