from __future__ import annotations

import pytest

from icefs.errors import Stale
from icefs.inodes import ROOT_INODE, InodeTable


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
