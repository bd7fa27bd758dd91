"""Shared benchmark plumbing: timing with repeats, mounts, cache dropping, the report table."""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


def drop_caches() -> bool:
    """Drop the kernel page cache (root only); return whether it was done."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


#: Free page reporting (a virtual machine handing freed memory back to its host), where
#: the guest kernel lets it be tuned. On this project's machine it reports memory as soon
#: as it is freed, and the next phase that touches as much memory pays the host for it:
#: writing 1 GiB into the page cache took 1.59 s then, 0.18 s when the memory had been
#: touched recently. A timed phase therefore ran slower the longer it lasted (icefs's
#: longer than the direct side's), or after a pause.
PAGE_REPORTING: Final = "/sys/module/page_reporting/parameters"
#: How it is held off during a run: pages are reported after 5 minutes free, not at once.
_HELD_OFF: Final = {"min_free_ms": ("300000", "60000"), "max_waiting_mib": ("1000000",)}
#: What `steady_memory` did, for the environment section.
_memory_note = "free page reporting: not found (no VM knob), left alone"


@contextlib.contextmanager
def steady_memory(touch_gib: float = 8.0) -> Iterator[None]:
    """Hold off free page reporting for the run, and touch *touch_gib* GiB of RAM once
    (bounded by a third of what is available), so that no timed phase pays the host
    for memory. Restores the settings on the way out; without the knobs, or without
    root, it does nothing and says so in the environment section."""
    global _memory_note
    saved: dict[str, str] = {}
    try:
        for name, values in _HELD_OFF.items():
            path = os.path.join(PAGE_REPORTING, name)
            with open(path) as f:
                old = f.read().strip()
            for value in values:  # the largest value the kernel accepts
                try:
                    with open(path, "w") as f:
                        f.write(value)
                except OSError:
                    continue
                saved[name] = old
                break
    except OSError:
        pass
    try:
        if saved:
            import numpy as np

            with open("/proc/meminfo") as f:
                avail = next(
                    int(line.split()[1]) << 10 for line in f if line.startswith("MemAvailable:")
                )
            size = int(min(touch_gib * 2**30, avail / 3))
            np.ones(size, dtype=np.uint8)  # touched, then freed: backed by the host now
            settings = ", ".join(f"{k} {v} -> {_current(k)}" for k, v in saved.items())
            _memory_note = (
                f"free page reporting held off during the run ({settings}); "
                f"{size / 2**30:.1f} GiB of RAM touched first"
            )
        yield
    finally:
        for name, old in saved.items():
            with contextlib.suppress(OSError), open(os.path.join(PAGE_REPORTING, name), "w") as f:
                f.write(old)


def _current(name: str) -> str:
    with open(os.path.join(PAGE_REPORTING, name)) as f:
        return f.read().strip()


def parse_args(
    doc: str, name: str, argv: list[str] | None, **sizes: tuple[Any, ...]
) -> argparse.Namespace:
    """Parse a benchmark's options: ``--dir`` (default ``bench-data/<name>``),
    ``--repeat``, ``--smoke``, and one ``--<size>`` per *sizes* entry given as
    (default, value under --smoke[, help]); --smoke also means one repeat."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--dir", default=f"bench-data/{name}")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny data, one repeat")
    for key, (default, _, *text) in sizes.items():
        parser.add_argument(
            f"--{key.replace('_', '-')}",
            type=type(default),
            default=default,
            help=text[0] if text else None,
        )
    args = parser.parse_args(argv)
    if args.smoke:
        args.repeat = 1
        for key, (_, small, *_text) in sizes.items():
            setattr(args, key, small)
    return args


class CpuMeter:
    """How many CPUs the whole machine kept busy since it was made (from /proc/stat)."""

    def __init__(self) -> None:
        self._ticks, self._started = self._busy_ticks(), time.perf_counter()

    @staticmethod
    def _busy_ticks() -> int:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        return sum(fields) - fields[3] - fields[4]  # all but idle and iowait

    def cpu_seconds(self) -> float:
        """CPU-seconds spent by the whole machine since it was made."""
        return (self._busy_ticks() - self._ticks) / os.sysconf("SC_CLK_TCK")

    def busy(self) -> float:
        return self.cpu_seconds() / (time.perf_counter() - self._started)


@dataclass
class Timing:
    name: str
    seconds: list[float] = field(default_factory=list)
    nbytes: int = 0
    #: CPU-seconds the whole machine spent during each repeat (`CpuMeter`)
    cpu: list[float] = field(default_factory=list)

    @property
    def best(self) -> float:
        return min(self.seconds)

    def timed(self, fn: Callable[[], int]) -> None:
        """Run *fn* (returns bytes handled) once; record its time and the machine's CPU."""
        meter, started = CpuMeter(), time.perf_counter()
        self.nbytes = fn()
        self.seconds.append(time.perf_counter() - started)
        self.cpu.append(meter.cpu_seconds())

    def cpu_per_gib(self) -> float:
        """The machine's median CPU-seconds per GiB handled."""
        return statistics.median(self.cpu) * (1 << 30) / self.nbytes if self.nbytes else 0.0

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def mib_s(self, seconds: float) -> float:
        return self.nbytes / (1 << 20) / seconds if seconds else float("inf")


def measure(
    name: str, fn: Callable[[], int], repeat: int, before: Callable[[], object] = lambda: None
) -> Timing:
    """Run *fn* (returns bytes handled) *repeat* times, calling *before* untimed each time."""
    timing = Timing(name)
    for _ in range(repeat):
        before()
        timing.timed(fn)
    return timing


def wait_for_cue() -> None:
    """In a process started by `at_once`: say ``ready``, then wait for the go."""
    print("ready", flush=True)
    sys.stdin.readline()


def on_cue(argv: list[str]) -> list[str]:
    """The command of a process for `at_once` that runs the program *argv* (its output
    kept from the report) once cued."""
    return [sys.executable, __file__, "--run-on-cue", *argv]


def at_once(
    argv: list[str], fn: Callable[[], int], before: Callable[[], object]
) -> Callable[[], int]:
    """Start *argv*, a process that calls `wait_for_cue` and then does its half of the
    work; once it is ready, call *before*. Return the timed part: it lets the process
    go, runs *fn* meanwhile and returns *fn*'s result when both are done."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None
    assert proc.stdout is not None
    stdin = proc.stdin
    proc.stdout.readline()  # "ready"
    before()

    def both() -> int:
        try:
            stdin.write("go\n")
            stdin.flush()
            nbytes = fn()
            proc.communicate(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode:
            raise RuntimeError(f"{' '.join(argv[1:3])} exited with {proc.returncode}")
        return nbytes

    return both


def environment() -> list[str]:
    import icechunk
    import numpy
    import pyfuse3
    import zarr

    kernel = platform.release()
    return [
        f"- python {platform.python_version()}, icechunk {icechunk.__version__}, "
        f"zarr {zarr.__version__}, numpy {numpy.__version__}, pyfuse3 {pyfuse3.__version__}",
        f"- kernel {kernel}, {os.cpu_count()} CPUs",
        "- FUSE options: default_permissions, fsname=icefs#..., subtype=icefs; "
        "tags mounted with keep_cache and 24 h entry/attr timeouts",
        f"- {_memory_note}",
    ]


#: One table row: measure, icefs, baseline, ratio, target.
Row = tuple[str, str, str, str, str]


def table(rows: list[Row]) -> str:
    head = ("measure", "icefs", "baseline", "ratio", "target")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def report(title: str, rows: list[Row]) -> None:
    """Print a benchmark's Markdown heading, its table and the environment."""
    print(f"\n## {title}\n")
    print(table(rows))
    print()
    print("\n".join(environment()))


if __name__ == "__main__" and sys.argv[1:2] == ["--run-on-cue"]:
    wait_for_cue()
    subprocess.run(sys.argv[2:], check=True, capture_output=True)
