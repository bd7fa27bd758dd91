from __future__ import annotations

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
