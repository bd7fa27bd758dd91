from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from icefs.fs.spool import KEEP_PARTS_UP_TO, SpoolBudget, SpoolFile


@pytest.fixture
def budget(tmp_path):
    b = SpoolBudget(1000, str(tmp_path / "cache"))
    yield b
    b.cleanup()
    assert not os.path.exists(b.directory)


def test_small_files_stay_in_memory(budget):
    f = SpoolFile(budget, b"hello")
    f.write(10, b"world")  # a gap is zero-filled
    assert f.read(0, 100) == b"hello\0\0\0\0\0world"
    assert f.size == 15
    assert not f.on_disk
    assert budget.in_memory == 15
    f.truncate(3)
    assert f.read(0, 100) == b"hel"
    assert budget.in_memory == 3
    f.close()
    assert budget.in_memory == 0


def test_spills_to_disk_past_the_budget_and_reads_back(budget):
    a = SpoolFile(budget, b"a" * 600)
    b = SpoolFile(budget, b"b" * 300)
    b.write(300, b"c" * 500)  # 600 + 800 > 1000: b moves to disk
    assert b.on_disk
    assert not a.on_disk
    assert budget.in_memory == 600
    assert b.read(0, 1000) == b"b" * 300 + b"c" * 500
    assert bytes(b.contents()) == b"b" * 300 + b"c" * 500
    b.truncate(100)
    assert b.read(0, 1000) == b"b" * 100
    b.truncate(200)
    assert b.read(0, 1000) == b"b" * 100 + b"\0" * 100
    assert os.listdir(budget.directory) == [], "spool files are unlinked at creation"
    a.close()
    b.close()
    assert budget.in_memory == 0


def test_huge_offsets_are_refused(budget):
    f = SpoolFile(budget)
    with pytest.raises(OverflowError):
        f.write(1 << 41, b"x")


def test_appends_are_kept_without_copies_until_another_access(budget):
    first, second = b"x" * 100, b"y" * 50
    f = SpoolFile(budget)
    f.write(0, first)
    assert f.contents() is first, "a file written in one go is handed on as it came"
    f.write(100, second)
    assert budget.in_memory == 150
    joined = f.contents()
    assert joined == first + second
    assert f.contents() is joined, "joined once, not at every call"
    f.write(10, b"zz")  # not an append: the parts become one buffer
    f.write(150, b"end")
    assert f.read(0, 200) == b"x" * 10 + b"zz" + b"x" * 88 + second + b"end"
    assert f.size == budget.in_memory == 153
    f.write(200, b"!")  # past the end: the gap is zero-filled
    assert f.read(150, 100) == b"end" + b"\0" * 47 + b"!"
    f.truncate(2)
    assert f.contents() == b"xx"
    assert budget.in_memory == 2
    f.close()
    assert budget.in_memory == 0


def test_appended_parts_move_to_disk_whole(budget):
    f = SpoolFile(budget)
    for i in range(11):  # the 11th append of 100 bytes passes the 1000-byte budget
        f.write(i * 100, bytes([65 + i]) * 100)
    assert f.on_disk
    assert budget.in_memory == 0
    assert bytes(f.contents()) == b"".join(bytes([65 + i]) * 100 for i in range(11))
    f.close()


def test_a_large_file_is_never_held_twice(tmp_path):
    """Kept appends are joined before they add up to much: memory stays near the budget."""
    budget = SpoolBudget(32 << 20, str(tmp_path / "cache"))
    f = SpoolFile(budget)
    tracemalloc.start()
    try:
        for i in range(48):  # 48 MiB in 1 MiB appends, as dd writes: spills at 32 MiB
            f.write(i << 20, os.urandom(1 << 20))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert f.on_disk
    assert peak < (32 << 20) + KEEP_PARTS_UP_TO + (4 << 20), peak >> 20
    f.close()
    budget.cleanup()


def test_cutting_a_file_whose_map_is_held_keeps_the_map_readable(tmp_path):
    """A file on disk handed to storage as a map (an Icechunk store in flight) and then
    cut short: the map still reads the old bytes instead of killing the process with
    SIGBUS, and the file reads the new ones. Run in a child: a regression kills it."""
    code = """
import sys
from icefs.fs.spool import COPY_FROM_DISK_UP_TO, SpoolBudget, SpoolFile
f = SpoolFile(SpoolBudget(0, sys.argv[1]), b"x" * (COPY_FROM_DISK_UP_TO + 4096))
assert f.on_disk
held = f.contents()
f.truncate(10)
assert held[-1] == ord("x") and len(held) == COPY_FROM_DISK_UP_TO + 4096
f.write(10, b"y")
assert f.size == 11 and f.read(0, 100) == b"x" * 10 + b"y"
del held
f.write(11, b"z" * (COPY_FROM_DISK_UP_TO + 10))
dropped = f.contents()
del dropped  # nobody holds the map: cut in place
f.truncate(5)
assert f.read(0, 100) == b"xxxxx"
f.close()
"""
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "cache")],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
