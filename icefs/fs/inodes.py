"""Stable inode numbers for namespace paths, with the kernel's lookup counts.

An inode stands for a path of the mount (a tuple of names, ``()`` for the
root).  The number stays the same for as long as the kernel holds a lookup
count on it; once `forget` brings the count to zero the number is dropped and
never reused while the mount lives.

A walk of a tag makes the kernel hold every chunk file it listed (millions, for
big arrays).  The files of such a directory, whose names are integers that
never change, are numbered as one *range* (`number`): consecutive inode numbers
in the order of their names, held as two NumPy arrays (the names and the lookup
counts, 12 bytes a file) instead of a path and three dict entries (about 300).
A range goes once the kernel has forgotten every file of it.
"""

from __future__ import annotations

import bisect
from typing import Any, Final

import numpy as np

from icefs.errors import Stale

__all__ = ["ROOT_INODE", "InodeTable", "Path"]

#: FUSE's root inode number.
ROOT_INODE: Final = 1

Path = tuple[str, ...]

#: First component of the path of an inode whose object is gone (no name can hold NUL).
_GONE: Final = "\0gone"


class _Range:
    """The files of one directory, numbered from *base* in the order of their names."""

    __slots__ = ("base", "counts", "held", "names", "parent")

    def __init__(self, base: int, parent: Path, names: np.ndarray[Any, Any]) -> None:
        self.base = base
        self.parent = parent
        #: the files' names as integers, sorted
        self.names = names
        #: the kernel's lookups of each
        self.counts = np.zeros(len(names), dtype=np.int32)
        #: how many have a lookup
        self.held = 0

    def position(self, name: str) -> int:
        """Where the file *name* stands, or -1."""
        if not name.isdigit() or not name.isascii() or (len(name) > 1 and name[0] == "0"):
            return -1
        value = int(name)
        i = int(np.searchsorted(self.names, value))
        return i if i < len(self.names) and int(self.names[i]) == value else -1


class InodeTable:
    """Maps paths to inode numbers and back, counting kernel lookups."""

    def __init__(self) -> None:
        self._by_path: dict[Path, int] = {(): ROOT_INODE}
        self._by_ino: dict[int, Path] = {ROOT_INODE: ()}
        self._lookups: dict[int, int] = {}
        self._next = ROOT_INODE + 1
        #: numbered directories (`number`): by path, and their bases in order
        self._ranges: dict[Path, _Range] = {}
        self._bases: list[int] = []
        self._by_base: dict[int, _Range] = {}

    def __len__(self) -> int:
        return len(self._by_ino) + sum(int(r.held) for r in self._by_base.values())

    def number(self, parent: Path, names: np.ndarray[Any, Any]) -> int:
        """Number the files of the directory *parent* as one range, and return the first
        number: *names* are their names as integers, sorted, and never change (a tag's
        or snapshot's chunk files).  From then on a file there has the number of its
        place in the range, also if it had another before (the kernel drops that one)."""
        found = self._ranges.get(parent)
        if found is not None:
            return found.base
        found = _Range(self._next, parent, names)
        self._next += len(names)
        self._ranges[parent] = found
        bisect.insort(self._bases, found.base)
        self._by_base[found.base] = found
        return found.base

    def _ranged(self, path: Path) -> tuple[_Range, int] | None:
        """The range and position of *path*, if a range numbers it."""
        if not self._ranges or len(path) < 2:
            return None
        found = self._ranges.get(path[:-1])
        if found is None:
            return None
        i = found.position(path[-1])
        return None if i < 0 else (found, i)

    def _numbered(self, ino: int) -> tuple[_Range, int] | None:
        """The range and position of the inode *ino*, if a range numbers it (and it is not
        a number given to a path of its own)."""
        if not self._bases or ino in self._by_ino:
            return None
        at = bisect.bisect_right(self._bases, ino) - 1
        if at < 0:
            return None
        found = self._by_base[self._bases[at]]
        i = ino - found.base
        return (found, i) if i < len(found.names) else None

    def ino(self, path: Path) -> int:
        """Return the inode of *path*, allocating one if needed (no lookup counted)."""
        ino = self.find(path)
        if ino is None:
            ino = self._next
            self._next += 1
            self._by_path[path] = ino
            self._by_ino[ino] = path
        return ino

    def find(self, path: Path) -> int | None:
        """Return the inode of *path* if it has one (nothing is allocated)."""
        ranged = self._ranged(path)
        if ranged is not None:
            return ranged[0].base + ranged[1]
        return self._by_path.get(path)

    def lookup(self, path: Path) -> int:
        """Return the inode of *path* and count one kernel lookup on it."""
        ino = self.ino(path)
        self.count_lookup(ino)
        return ino

    def count_lookup(self, ino: int) -> None:
        """Count one kernel lookup on *ino*, a number `ino` just gave out."""
        if self._numbered(ino) is not None:
            self.count_run(ino, 1)
            return
        self._lookups[ino] = self._lookups.get(ino, 0) + 1

    def count_run(self, first: int, count: int) -> None:
        """Count one kernel lookup on each of the *count* numbers from *first*, all of one
        range (the files a readdir of a numbered directory handed out)."""
        ranged = self._numbered(first) if count > 0 else None
        if ranged is None:
            for ino in range(first, first + count):
                self.count_lookup(ino)
            return
        found, i = ranged
        run = found.counts[i : i + count]
        found.held += int(np.count_nonzero(run == 0))
        run += 1

    def path(self, ino: int) -> Path:
        """Return the path of *ino*; raise `Stale` if the kernel forgot it."""
        try:
            return self._by_ino[ino]
        except KeyError:
            ranged = self._numbered(ino)
            if ranged is not None:
                return (*ranged[0].parent, str(int(ranged[0].names[ranged[1]])))
            raise Stale(f"inode {ino} is unknown") from None

    def forget(self, ino: int, nlookup: int) -> None:
        """Drop *nlookup* kernel lookups of *ino*; free the number when none remain."""
        ranged = self._numbered(ino)
        if ranged is not None:
            self._forget_ranged(*ranged, nlookup)
            return
        left = self._lookups.get(ino, 0) - nlookup
        if left > 0:
            self._lookups[ino] = left
            return
        self._lookups.pop(ino, None)
        if ino == ROOT_INODE:
            return
        path = self._by_ino.pop(ino, None)
        if path is not None and self._by_path.get(path) == ino:
            del self._by_path[path]

    def _forget_ranged(self, found: _Range, i: int, nlookup: int) -> None:
        count = int(found.counts[i])
        left = max(0, count - nlookup)
        found.counts[i] = left
        if count and not left:
            found.held -= 1
            if not found.held:  # the kernel holds none of them: the numbers go
                del self._ranges[found.parent]
                del self._by_base[found.base]
                self._bases.remove(found.base)

    def below(self, prefix: Path) -> list[tuple[Path, int]]:
        """Return (path, inode) of every known path strictly below *prefix*."""
        n = len(prefix)
        return [(p, i) for p, i in self._by_path.items() if len(p) > n and p[:n] == prefix]

    def known(self, path: Path) -> bool:
        """True if *path* has an inode number the kernel may still use."""
        return path in self._by_path or self._ranged(path) is not None

    def forget_path(self, path: Path) -> None:
        """Detach *path* from its inode (the object is gone): a new object there gets a new one.

        The old number stays valid for the kernel until it forgets it, but resolves
        to nothing.
        """
        ino = self._by_path.pop(path, None)
        if ino is not None and ino != ROOT_INODE:
            self._by_ino[ino] = (_GONE, str(ino))

    def rename(self, old: Path, new: Path) -> None:
        """Move the inode of *old* to *new*.

        An inode that was at *new* becomes an alias of *new*: a reader that looked the
        name up just before the rename replaced it opens the new file, as it would
        through the name, instead of failing with ENOENT (renaming a finished file
        onto its name is how zarr and rsync publish).
        """
        replaced = self._by_path.pop(new, None)
        ino = self._by_path.pop(old, None)
        if ino is not None:
            self._by_path[new] = ino
            self._by_ino[ino] = new
        if replaced is not None and replaced != ino and replaced != ROOT_INODE:
            self._by_ino[replaced] = new

    def lookup_count(self, ino: int) -> int:
        """Return how many lookups the kernel holds on *ino*."""
        ranged = self._numbered(ino)
        if ranged is not None:
            return int(ranged[0].counts[ranged[1]])
        return self._lookups.get(ino, 0)
