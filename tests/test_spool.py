from __future__ import annotations

import os

import pytest

from icefs.spool import SpoolBudget, SpoolFile


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
