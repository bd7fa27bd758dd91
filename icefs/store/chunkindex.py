"""The stored chunks of one array in one snapshot, in about 13 bytes a chunk.

`ChunkIndex` keeps each chunk as one integer, its coordinates read as digits of a
mixed radix (the array's chunk grid, so C order of the coordinates is the order of
the integers), beside its stored length and kind in NumPy arrays.  So it answers,
without a listing and without Python objects per chunk:

* whether a chunk exists and its length (a binary search): a lookup or stat of
  ``c/123/456`` costs the same in an array of 100 chunks or of 100 million;
* the entries of one chunk directory (a binary search for the range of its
  prefix, then that range): a listing costs what the directory holds;
* the position of a chunk in C order, or in the order a directory walk meets
  the files (names sorted as text), for the read-ahead (`positions`).

A writable session's tree changes its index as chunks are stored and deleted: those
changes are kept beside the arrays and folded into them once they grow past a share
of the index (`_merge`), so stores and deletes cost no copy of the whole index.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from icefs.errors import InvalidInput

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["VIRTUAL", "ChunkIndex"]

#: `icechunk.ChunkType.virtual`: a reference into another file.
VIRTUAL: Final = 2
#: `icechunk.ChunkType.native`: what a store through the mount makes.
NATIVE: Final = 1
#: Changes kept beside the arrays before they are folded in, at least; and as a share.
_DELTA_MIN: Final = 4096
_DELTA_SHARE: Final = 16
#: The largest chunk key: keys are int64, with room to add one to a prefix's last key.
_KEY_LIMIT: Final = 1 << 62

Coords = tuple[int, ...]


class ChunkIndex:
    """The chunks of one array: key, length and kind per chunk, sorted by key."""

    __slots__ = (
        "_added",
        "_gone",
        "_keys",
        "_kinds",
        "_lengths",
        "_names",
        "_steps",
        "_walk",
        "ndim",
        "radix",
    )

    def __init__(
        self,
        ndim: int,
        radix: tuple[int, ...],
        keys: np.ndarray[Any, Any],
        lengths: np.ndarray[Any, Any],
        kinds: np.ndarray[Any, Any],
    ) -> None:
        self.ndim = ndim
        #: per dimension, one more than the largest coordinate a key can hold
        self.radix = radix
        #: what one step of each coordinate adds to a key
        self._steps = [int(s) for s in _strides(radix)]
        self._keys = keys
        self._lengths = lengths
        self._kinds = kinds
        #: stores since the last merge: key -> length (native chunks)
        self._added: dict[int, int] = {}
        #: deletes of chunks in the arrays since the last merge
        self._gone: set[int] = set()
        #: the keys sorted in walk order, as digits of the text ranks (made on first use)
        self._walk: np.ndarray[Any, Any] | None = None
        #: per dimension, the coordinates in name order and each one's place in it
        self._names: list[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]] | None = None

    # -- building -------------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        ndim: int,
        grid: tuple[int, ...] | None,
        batches: Iterable[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]],
    ) -> ChunkIndex:
        """Index the chunks Icechunk lists in *batches* of (coordinates (n, ndim), kinds,
        lengths); *grid* is the array's chunk grid (None if not regular).  Chunks whose
        coordinates are not *ndim* long (no path can show them) are left out."""
        coords_parts: list[np.ndarray[Any, Any]] = []
        length_parts: list[np.ndarray[Any, Any]] = []
        kind_parts: list[np.ndarray[Any, Any]] = []
        for coords, kinds, lengths in batches:
            if coords.ndim != 2 or coords.shape[1] != ndim or not len(coords):
                continue
            coords_parts.append(np.asarray(coords, dtype=np.int64))
            length_parts.append(np.asarray(lengths, dtype=np.int64))
            kind_parts.append(np.asarray(kinds, dtype=np.uint8))
        if not coords_parts:
            empty = np.empty(0, dtype=np.int64)
            return cls(ndim, tuple(max(1, g) for g in grid or (1,) * ndim), empty, empty,
                       np.empty(0, dtype=np.uint8))  # fmt: skip
        observed: tuple[int, ...] = ()
        if ndim:
            seen = np.stack([c.max(axis=0) + 1 for c in coords_parts])
            observed = tuple(int(v) for v in seen.max(axis=0))
        radix = tuple(max(1, g, o) for g, o in zip(grid or (0,) * ndim, observed, strict=True))
        if math.prod(radix) >= _KEY_LIMIT:
            radix = tuple(max(1, o) for o in observed)
        if math.prod(radix) >= _KEY_LIMIT:
            raise InvalidInput(f"an array of {math.prod(radix)} chunks is too large to index")
        strides = _strides(radix)
        keys = np.concatenate([c @ strides for c in coords_parts])
        lengths = np.concatenate(length_parts)
        kinds = np.concatenate(kind_parts)
        # sorted, each key once (a manifest may list a coordinate twice: the last wins)
        order = np.argsort(keys, kind="stable")
        keys, lengths, kinds = keys[order], lengths[order], kinds[order]
        last = np.ones(len(keys), dtype=bool)
        last[:-1] = keys[1:] != keys[:-1]
        keys, lengths, kinds = keys[last], lengths[last], kinds[last]
        if len(lengths) and int(lengths.max()) < (1 << 32):
            lengths = lengths.astype(np.uint32)
        return cls(ndim, radix, keys, lengths, kinds)

    @property
    def nbytes(self) -> int:
        """Memory it holds (arrays, and about 100 bytes a pending change)."""
        walk = 0 if self._walk is None else self._walk.nbytes
        return (
            self._keys.nbytes
            + self._lengths.nbytes
            + self._kinds.nbytes
            + walk
            + 100 * (len(self._added) + len(self._gone))
            + 200
        )

    # -- on disk (the read cache) ---------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The index as bytes for `from_bytes` (an index with no pending changes)."""
        self._merge(force=True)
        head = json.dumps(
            {
                "ndim": self.ndim,
                "radix": self.radix,
                "n": len(self._keys),
                "lengths": self._lengths.dtype.str,
            }
        ).encode()
        parts = [self._keys.astype("<i8"), self._lengths, self._kinds.astype("u1")]
        return b"".join([len(head).to_bytes(4, "little"), head, *(p.tobytes() for p in parts)])

    @classmethod
    def from_bytes(cls, blob: bytes | memoryview) -> ChunkIndex:
        """The index `to_bytes` gave; `ValueError` if *blob* is not one."""
        size = int.from_bytes(blob[:4], "little")
        head = json.loads(bytes(blob[4 : 4 + size]))
        n, at = int(head["n"]), 4 + size
        lengths_dtype = np.dtype(head["lengths"])
        keys = np.frombuffer(blob, "<i8", n, at).copy()
        at += 8 * n
        lengths = np.frombuffer(blob, lengths_dtype, n, at).copy()
        at += lengths_dtype.itemsize * n
        kinds = np.frombuffer(blob, "u1", n, at).copy()
        if at + n != len(blob):
            raise ValueError("not a chunk index")
        return cls(int(head["ndim"]), tuple(int(r) for r in head["radix"]), keys, lengths, kinds)

    # -- keys -----------------------------------------------------------------------------------

    def _key(self, coords: Coords) -> int | None:
        """The key of *coords*; None if no chunk can have them (outside the radix)."""
        if len(coords) != self.ndim:
            return None
        key = 0
        for c, r in zip(coords, self.radix, strict=True):
            if c < 0 or c >= r:
                return None
            key = key * r + c
        return key

    def _coords(self, keys: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """The coordinates (n, ndim) of *keys*."""
        out = np.empty((len(keys), self.ndim), dtype=np.int64)
        rest = keys.astype(np.int64, copy=True)
        for d in range(self.ndim - 1, -1, -1):
            rest, out[:, d] = np.divmod(rest, self.radix[d])
        return out

    def _span(self, prefix: Coords) -> tuple[int, int]:
        """The keys [lo, hi) of every chunk whose coordinates start with *prefix*."""
        width = math.prod(self.radix[len(prefix) :])
        lo = 0
        for c, r in zip(prefix, self.radix, strict=False):
            lo = lo * r + c
        return lo * width, (lo + 1) * width

    def _in_base(self, key: int) -> int:
        """The position of *key* in the arrays, or -1."""
        i = int(np.searchsorted(self._keys, key))
        return i if i < len(self._keys) and int(self._keys[i]) == key else -1

    # -- questions ------------------------------------------------------------------------------

    def __len__(self) -> int:
        new = sum(1 for k in self._added if self._in_base(k) < 0)
        return len(self._keys) - len(self._gone) + new

    def length(self, coords: Coords) -> int | None:
        """The stored length of the chunk at *coords*; None if there is none."""
        key = self._key(coords)
        if key is None:
            return None
        if key in self._added:
            return self._added[key]
        if key in self._gone:
            return None
        i = self._in_base(key)
        return None if i < 0 else int(self._lengths[i])

    def is_virtual(self, coords: Coords) -> bool:
        """Whether the chunk at *coords* is a reference into another file."""
        key = self._key(coords)
        if key is None or key in self._added or key in self._gone:
            return False
        i = self._in_base(key)
        return i >= 0 and int(self._kinds[i]) == VIRTUAL

    def has_prefix(self, prefix: Coords) -> bool:
        """Whether any chunk's coordinates start with *prefix* (a chunk directory)."""
        if len(prefix) >= self.ndim or any(
            c < 0 or c >= r for c, r in zip(prefix, self.radix, strict=False)
        ):
            return False
        lo, hi = self._span(prefix)
        if any(lo <= k < hi for k in self._added):
            return True
        start, stop = np.searchsorted(self._keys, [lo, hi])
        if stop - start > len(self._gone):
            return True
        return any(int(k) not in self._gone for k in self._keys[start:stop])

    def below(self, prefix: Coords) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """The chunks below *prefix*: their next coordinate (sorted, each once) and, where
        that is the last coordinate, their lengths (else an empty array)."""
        if any(c < 0 or c >= r for c, r in zip(prefix, self.radix, strict=False)):
            empty = np.empty(0, dtype=np.int64)
            return empty, empty
        lo, hi = self._span(prefix)
        start, stop = np.searchsorted(self._keys, [lo, hi])
        keys, lengths = self._keys[start:stop], self._lengths[start:stop]
        if self._gone or self._added:
            keep = np.fromiter(
                (int(k) not in self._gone for k in keys), dtype=bool, count=len(keys)
            )
            extra = sorted(k for k in self._added if lo <= k < hi)
            if extra:
                keep &= ~np.isin(keys, extra)
                add_lengths = [self._added[k] for k in extra]
                keys = np.concatenate([keys[keep], np.asarray(extra, dtype=np.int64)])
                lengths = np.concatenate(
                    [lengths[keep].astype(np.int64), np.asarray(add_lengths, np.int64)]
                )
                order = np.argsort(keys, kind="stable")
                keys, lengths = keys[order], lengths[order]
            else:
                keys, lengths = keys[keep], lengths[keep]
        depth = len(prefix)
        width = math.prod(self.radix[depth + 1 :])
        nxt = (keys // width) % self.radix[depth]
        if depth + 1 == self.ndim:
            return nxt, lengths
        return np.unique(nxt), np.empty(0, dtype=np.int64)

    # -- the read-ahead's orders (immutable snapshots: nothing pending) ------------------------

    def _ranks(self) -> list[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]]:
        """Per dimension: the coordinates in the order their names sort as text, and the
        place of each coordinate in that order."""
        if self._names is None:
            self._names = []
            for r in self.radix:
                order = np.argsort(np.arange(r).astype(str), kind="stable")
                rank = np.empty(r, dtype=np.int64)
                rank[order] = np.arange(r)
                self._names.append((order, rank))
        return self._names

    def walk_order(self) -> None:
        """Make the walk order's keys (a second of work a million chunks: off the loop)."""
        if self._walk is None:
            self._merge(force=True)
            coords = self._coords(self._keys)
            ranked = np.zeros(len(self._keys), dtype=np.int64)
            for d, (_, rank) in enumerate(self._ranks()):
                ranked += rank[coords[:, d]] * self._steps[d]
            self._walk = np.sort(ranked)

    def position(self, coords: Coords, by_name: bool) -> int:
        """Where the chunk at *coords* stands in C order, or with *by_name* in walk order
        (after `walk_order`); -1 if it is not here or the order is not made."""
        key = self._key(coords)
        if key is None or self._added or self._gone:
            return -1
        if not by_name:
            return self._in_base(key)
        if self._walk is None:
            return -1
        ranked = 0
        for d, (_, rank) in enumerate(self._ranks()):
            ranked += int(rank[coords[d]]) * self._steps[d]
        i = int(np.searchsorted(self._walk, ranked))
        return i if i < len(self._walk) and int(self._walk[i]) == ranked else -1

    def between(self, by_name: bool, start: int, stop: int) -> list[tuple[Coords, int]]:
        """The chunks (coordinates, length) at positions [*start*, *stop*) of an order."""
        if self._added or self._gone or (by_name and self._walk is None):
            return []
        if not by_name:
            keys = self._keys[start:stop]
            lengths = self._lengths[start:stop].tolist()
            return list(zip(map(tuple, self._coords(keys).tolist()), lengths, strict=True))
        assert self._walk is not None
        ranked = self._walk[start:stop]
        coords = np.empty((len(ranked), self.ndim), dtype=np.int64)
        rest = ranked.copy()
        names = self._ranks()
        for d in range(self.ndim - 1, -1, -1):
            rest, digit = np.divmod(rest, self.radix[d])
            coords[:, d] = names[d][0][digit]
        out = []
        for row in map(tuple, coords.tolist()):
            length = self.length(row)
            if length is not None:
                out.append((row, length))
        return out

    # -- changes (a writable session's) --------------------------------------------------------

    def stored(self, coords: Coords, length: int) -> bool:
        """Note a chunk stored at *coords*; False if it does not fit (index it anew)."""
        key = self._key(coords)
        if key is None:
            return False
        self._gone.discard(key)
        self._added[key] = length
        self._walk = None
        self._merge()
        return True

    def deleted(self, coords: Coords) -> None:
        """Note the chunk at *coords* deleted."""
        key = self._key(coords)
        if key is None:
            return
        self._added.pop(key, None)
        if self._in_base(key) >= 0:
            self._gone.add(key)
        self._walk = None
        self._merge()

    def _merge(self, force: bool = False) -> None:
        """Fold the pending changes into the arrays once they are a share of them."""
        pending = len(self._added) + len(self._gone)
        if not pending or (
            not force and pending < max(_DELTA_MIN, len(self._keys) // _DELTA_SHARE)
        ):
            return
        drop = np.asarray(sorted(self._gone | set(self._added)), dtype=np.int64)
        keep = ~np.isin(self._keys, drop)
        added = sorted(self._added.items())
        keys = np.concatenate([self._keys[keep], np.asarray([k for k, _ in added], np.int64)])
        lengths = np.concatenate(
            [self._lengths[keep].astype(np.int64), np.asarray([n for _, n in added], np.int64)]
        )
        kinds = np.concatenate([self._kinds[keep], np.full(len(added), NATIVE, dtype=np.uint8)])
        order = np.argsort(keys, kind="stable")
        self._keys, self._lengths, self._kinds = keys[order], lengths[order], kinds[order]
        self._added, self._gone = {}, set()


def _strides(radix: tuple[int, ...]) -> np.ndarray[Any, Any]:
    """How much one step of each coordinate adds to a key (C order)."""
    strides = np.ones(len(radix), dtype=np.int64)
    for d in range(len(radix) - 2, -1, -1):
        strides[d] = strides[d + 1] * radix[d + 1]
    return strides
