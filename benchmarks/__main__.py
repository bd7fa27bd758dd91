"""Every benchmark row in one table: ``python -m benchmarks [--smoke] [--repeat N] [--dir DIR]``.

``python -m benchmarks --cloud [--delays 20,50]`` runs benchmarks/cloud.py instead:
icefs and its baselines on the loopback S3 server behind a proxy that adds
latency to every request.

``python -m benchmarks --scale`` runs benchmarks/scale.py and scalewrite.py instead:
arrays of 100k to 16M chunks listed and walked, a long history, many small chunks
written, and the daemon's memory through each (hours at full size; the repositories
are built once and kept under --dir).

Runs benchmarks/read.py, write.py, access.py, floor.py, virtual.py, legacy.py and move.py (each can
also run alone, with more options) and prints one Markdown table: each measure, icefs, its
baseline measured side by side in the same run, the ratio and the target, then the
environment.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import access, cloud, floor, legacy, move, read, scale, scalewrite, virtual, write
from benchmarks.common import Row, report, steady_memory


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny data, one repeat (CI)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default="bench-data", help="where datasets are built and kept")
    parser.add_argument("--cloud", action="store_true", help="object storage with latency")
    parser.add_argument("--delays", default=None, help="with --cloud: ms per request, e.g. 20,50")
    parser.add_argument("--scale", action="store_true", help="the scale table (hours)")
    args = parser.parse_args()
    common = ["--repeat", str(args.repeat), *(["--smoke"] if args.smoke else [])]
    if args.cloud:
        delays = ["--delays", args.delays] if args.delays else []
        return cloud.main([*common, *delays, "--dir", f"{args.dir}/cloud"])
    if args.scale:
        table = scale.collect([*common, "--dir", f"{args.dir}/scale"])[0]
        table += scalewrite.collect([*common, "--dir", f"{args.dir}/scalewrite"])[0]
        report("Scale: millions of chunks, a long history, many small chunks written", table)
        return 0
    started = time.perf_counter()
    rows: list[Row] = []
    with steady_memory(0.25 if args.smoke else 8.0):
        read_rows, _, cold = read.collect([*common, "--dir", f"{args.dir}/read"])
        rows += read_rows
        rows += write.collect([*common, "--dir", f"{args.dir}/write"])[0]
        rows += access.collect([*common, "--dir", f"{args.dir}/access"])[0]
        rows += floor.collect([*common, "--dir", f"{args.dir}/floor"])[0]
        rows += virtual.collect([*common, "--dir", f"{args.dir}/virtual"])[0]
        rows += legacy.collect([*common, "--dir", f"{args.dir}/legacy"])[0]
        rows += move.collect([*common, "--dir", f"{args.dir}/move"])[0]
    repeats = 1 if args.smoke else args.repeat
    report(
        f"icefs benchmarks ({repeats} repeats, min and median; "
        f"{'cold = page cache dropped' if cold else 'page cache NOT dropped'}"
        f"; {time.perf_counter() - started:.0f} s)",
        rows,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
