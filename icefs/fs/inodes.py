"""Stable inode numbers for namespace paths, with the kernel's lookup counts.

An inode stands for a path of the mount (a tuple of names, ``()`` for the
root).  The number stays the same for as long as the kernel holds a lookup
count on it; once `forget` brings the count to zero the number is dropped and
never reused while the mount lives.
"""

from __future__ import annotations

from typing import Final

from icefs.errors import Stale

__all__ = ["ROOT_INODE", "InodeTable", "Path"]

#: FUSE's root inode number.
ROOT_INODE: Final = 1

Path = tuple[str, ...]

#: First component of the path of an inode whose object is gone (no name can hold NUL).
_GONE: Final = "\0gone"


class InodeTable:
    """Maps paths to inode numbers and back, counting kernel lookups."""

    def __init__(self) -> None:
        self._by_path: dict[Path, int] = {(): ROOT_INODE}
        self._by_ino: dict[int, Path] = {ROOT_INODE: ()}
        self._lookups: dict[int, int] = {}
        self._next = ROOT_INODE + 1

    def __len__(self) -> int:
        return len(self._by_ino)

    def ino(self, path: Path) -> int:
        """Return the inode of *path*, allocating one if needed (no lookup counted)."""
        ino = self._by_path.get(path)
        if ino is None:
            ino = self._next
            self._next += 1
            self._by_path[path] = ino
            self._by_ino[ino] = path
        return ino

    def find(self, path: Path) -> int | None:
        """Return the inode of *path* if it has one (nothing is allocated)."""
        return self._by_path.get(path)

    def lookup(self, path: Path) -> int:
        """Return the inode of *path* and count one kernel lookup on it."""
        ino = self.ino(path)
        self.count_lookup(ino)
        return ino

    def count_lookup(self, ino: int) -> None:
        """Count one kernel lookup on *ino*, a number `ino` just gave out."""
        self._lookups[ino] = self._lookups.get(ino, 0) + 1

    def path(self, ino: int) -> Path:
        """Return the path of *ino*; raise `Stale` if the kernel forgot it."""
        try:
            return self._by_ino[ino]
        except KeyError:
            raise Stale(f"inode {ino} is unknown") from None

    def forget(self, ino: int, nlookup: int) -> None:
        """Drop *nlookup* kernel lookups of *ino*; free the number when none remain."""
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

    def below(self, prefix: Path) -> list[tuple[Path, int]]:
        """Return (path, inode) of every known path strictly below *prefix*."""
        n = len(prefix)
        return [(p, i) for p, i in self._by_path.items() if len(p) > n and p[:n] == prefix]

    def known(self, path: Path) -> bool:
        """True if *path* has an inode number the kernel may still use."""
        return path in self._by_path

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
        return self._lookups.get(ino, 0)
