from __future__ import annotations

import numpy as np
import pytest

from icefs.errors import Stale
from icefs.fs.inodes import ROOT_INODE, InodeTable


def test_inodes_are_stable_and_freed_after_forget():
    table = InodeTable()
    a = table.lookup(("branches", "main"))
    assert table.lookup(("branches", "main")) == a
    assert table.lookup_count(a) == 2
    table.forget(a, 1)
    assert table.path(a) == ("branches", "main")
    table.forget(a, 1)
    with pytest.raises(Stale):
        table.path(a)
    b = table.lookup(("branches", "main"))
    assert b != a, "a forgotten number is never reused"


def test_root_is_never_forgotten():
    table = InodeTable()
    table.forget(ROOT_INODE, 5)
    assert table.path(ROOT_INODE) == ()


def test_rename_over_a_name_keeps_the_replaced_inode_usable():
    table = InodeTable()
    old = table.lookup(("b", "x.partial"))
    replaced = table.lookup(("b", "x"))
    table.rename(("b", "x.partial"), ("b", "x"))
    assert table.ino(("b", "x")) == old
    assert table.path(replaced) == ("b", "x"), "a reader holding it opens the new file"
    table.forget(replaced, 1)  # forgetting the alias leaves the name's inode alone
    assert table.ino(("b", "x")) == old
    assert table.path(old) == ("b", "x")


def test_numbered_chunk_files_take_a_range_and_go_when_forgotten():
    table = InodeTable()
    folder = ("tags", "v1", "a", "c", "3")
    before = table.lookup(("tags", "v1", "a", "c", "3", "7"))  # numbered before the range
    first = table.number(folder, np.array([0, 2, 7, 10, 11]))
    assert table.ino((*folder, "0")) == first
    assert table.ino((*folder, "2")) == first + 1
    assert table.ino((*folder, "7")) == first + 2, "the range's number from now on"
    assert table.path(before) == (*folder, "7"), "the old number lives until forgotten"
    assert table.ino((*folder, "11")) == first + 4
    assert table.find((*folder, "5")) is None
    assert table.find((*folder, "010")) is None
    assert table.path(first + 3) == (*folder, "10")
    for name in ("0", "10"):
        ino = table.lookup((*folder, name))
        assert table.lookup_count(ino) == 1
    assert table.known((*folder, "2"))
    table.forget(first, 1)
    assert table.path(first + 3) == (*folder, "10"), "one file still held: the range stays"
    table.forget(first + 3, 1)
    with pytest.raises(Stale):
        table.path(first + 3)  # all forgotten: the numbers go, never to come back
    again = table.lookup((*folder, "10"))
    assert again > first + 4


def test_a_run_of_numbered_files_counts_at_once():
    table = InodeTable()
    first = table.number(("t", "v", "a", "c", "0"), np.arange(10))
    table.count_run(first + 2, 5)
    table.count_run(first + 4, 2)
    assert [table.lookup_count(first + i) for i in range(10)] == [0, 0, 1, 1, 2, 2, 1, 0, 0, 0]
    for i, n in ((2, 1), (3, 1), (4, 2), (5, 2)):
        table.forget(first + i, n)
    assert table.path(first + 6) == ("t", "v", "a", "c", "0", "6")
    table.forget(first + 6, 1)
    with pytest.raises(Stale):
        table.path(first + 6)
