"""The Zarr layout inside a ref: positions, resolved entries, and what a key is.

Pure values and parsing, shared by the snapshot trees (`icefs.store.tree`,
`icefs.store.zarr2tree`) and the core: no I/O here.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

__all__ = ["CHUNK_DIR", "DirPos", "KeyClass", "KeyKind", "TreeEntry", "chunk_key"]

log = logging.getLogger(__name__)

#: The directory below an array that holds its chunks.
CHUNK_DIR: Final = "c"


@dataclass(frozen=True, slots=True)
class DirPos:
    """Where a directory sits: a node path, or a chunk prefix of an array (array set)."""

    node: str
    array: str | None = None
    coords: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class TreeEntry:
    """One resolved path: a directory (with its position) or a file (with key and size)."""

    is_dir: bool
    key: str = ""
    size: int = 0
    pos: DirPos | None = None
    #: For a chunk file: its array's path and coordinates.
    array: str | None = None
    coords: tuple[int, ...] = ()


class KeyKind(Enum):
    """What a key inside a ref holds."""

    METADATA = "metadata"  # a node's zarr.json
    CHUNK = "chunk"  # a chunk of an array
    SCRATCH = "scratch"  # any other file: kept in the session, never committed


@dataclass(frozen=True, slots=True)
class KeyClass:
    """What a file path inside a ref is: a node's metadata, a chunk, or a scratch file."""

    kind: KeyKind
    node: str = ""  # the node (metadata) or array (chunk) path
    coords: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class NodeInfo:
    metadata: bytes | None
    is_array: bool
    ndim: int
    #: an array's chunk grid (chunks along each dimension); None if not regular
    grid: tuple[int, ...] | None = None


def parse_node(metadata: bytes | None) -> NodeInfo:
    if metadata is None:
        return NodeInfo(None, False, 0)
    try:
        doc = json.loads(metadata)
        if isinstance(doc, dict) and doc.get("node_type") == "array":
            shape = doc.get("shape", ())
            return NodeInfo(metadata, True, len(shape), _grid(doc, shape))
    except (ValueError, TypeError):
        log.warning("unreadable zarr.json (%d bytes) treated as a group", len(metadata))
    return NodeInfo(metadata, False, 0)


def _grid(doc: dict[str, Any], shape: Any) -> tuple[int, ...] | None:
    """The chunk grid of the array document *doc* (chunks along each dimension); None if
    it is not a regular grid, or not one this can read (the index then sizes itself)."""
    grid: Any = doc.get("chunk_grid")
    try:
        if grid["name"] != "regular":
            return None
        chunks = grid["configuration"]["chunk_shape"]
        return tuple(max(1, math.ceil(int(n) / int(c))) for n, c in zip(shape, chunks, strict=True))
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


#: A name that a user or tool meant as a chunk coordinate: a digit, maybe signed or suffixed.
COORDINATE_LIKE: Final = re.compile(r"[+-]?[0-9][0-9A-Za-z_]*")


def chunk_name(coord: str) -> int | None:
    """Return the integer a chunk path component names, or None ('01', '-1', 'x' name none)."""
    if not coord.isdigit() or not coord.isascii() or (len(coord) > 1 and coord[0] == "0"):
        return None
    return int(coord)


def chunk_key(array: str, coords: tuple[int, ...]) -> str:
    """The key of the chunk at *coords* of *array* ('' is the root array)."""
    return "/".join(
        (array, CHUNK_DIR, *map(str, coords)) if array else (CHUNK_DIR, *map(str, coords))
    )


def chunk_entry(array: str, coords: tuple[int, ...], length: int) -> TreeEntry:
    return TreeEntry(False, chunk_key(array, coords), length, array=array, coords=coords)
