"""What may be stored: metadata checked by zarr's own parser, chunks by the array's codecs.

Icechunk stores any bytes under a chunk key and any JSON that looks like
metadata; zarr then fails to open the array, or reads the fill value in
silence.  Everything here is pure and blocking (JSON parsing, decompression):
callers run it in a worker thread.  Each check raises `InvalidInput` with a
reason a user can act on.
"""

from __future__ import annotations

import copy
import json
import math
from typing import TYPE_CHECKING, Any, Final

from icefs.errors import InvalidInput

if TYPE_CHECKING:
    from collections.abc import Buffer

__all__ = ["ChunkCheck", "check_metadata"]


def _load(raw: Buffer) -> dict[str, Any]:
    try:
        doc = json.loads(bytes(raw))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidInput("not a JSON object")
    return doc


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) < 300 else text[:297] + "..."


def check_metadata(raw: Buffer) -> None:
    """Check that *raw* is a ``zarr.json`` that zarr parses and Icechunk can serve back.

    Groups and arrays go through zarr's own parsers (`GroupMetadata`,
    `ArrayV3Metadata`).  Beyond them, an array needs its chunk key encoding
    spelled out and it must be the ``default`` encoding with ``/``: Icechunk
    keeps chunks only at ``c/i/j`` keys, so with any other encoding zarr would
    read the fill value for every chunk.  Storage transformers are refused
    (Icechunk applies none).  Raises `InvalidInput`.
    """
    doc = _load(raw)
    if doc.get("zarr_format") != 3:
        raise InvalidInput(
            f"zarr_format is {doc.get('zarr_format')!r}; icefs stores Zarr v3 "
            "metadata (zarr_format 3)"
        )
    node_type = doc.get("node_type")
    if node_type == "group":
        from zarr.core.group import GroupMetadata

        try:
            GroupMetadata.from_dict(copy.deepcopy(doc))
        except Exception as exc:  # zarr's parser raises many types; each is a refusal
            raise InvalidInput(f"invalid group metadata: {_reason(exc)}") from None
        return
    if node_type != "array":
        raise InvalidInput(f"node_type is {node_type!r}; it must be 'group' or 'array'")
    _ArrayCheck(doc)


class _ArrayCheck:
    """An array's metadata, parsed and checked (`check_metadata`), with its codecs."""

    def __init__(self, doc: dict[str, Any]) -> None:
        from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding
        from zarr.core.metadata.v3 import ArrayV3Metadata

        if "chunk_key_encoding" not in doc:
            raise InvalidInput("array metadata without chunk_key_encoding")
        try:
            meta = ArrayV3Metadata.from_dict(copy.deepcopy(doc))
        except Exception as exc:  # zarr's parser raises many types; each is a refusal
            raise InvalidInput(f"invalid array metadata: {_reason(exc)}") from None
        encoding = meta.chunk_key_encoding
        if not isinstance(encoding, DefaultChunkKeyEncoding) or encoding.separator != "/":
            raise InvalidInput(
                f"chunk_key_encoding {encoding.to_dict()}: Icechunk keeps chunks at c/i/j "
                "keys only, so use {'name': 'default', 'configuration': {'separator': '/'}}"
            )
        if meta.storage_transformers:
            raise InvalidInput("storage_transformers are not supported by Icechunk")
        self.meta = meta


class ChunkCheck:
    """Checks that bytes are a chunk of one array (its codecs, its chunk shape).

    An array without a bytes-to-bytes codec (no compressor, no checksum) and with a
    fixed-size data type has one exact chunk size: a chunk of any other size is
    refused with both sizes named, without decoding.  A chunk compressed by zstd,
    blosc or gzip alone is checked by the compressor's framing (cheap: headers
    only).  With decoding asked for, the chunk is also decoded with the array's
    codec pipeline (zarr's own codecs); a decoding failure is a refusal.  Codecs
    that zarr can only run under asyncio (none of zarr's own) are not decoded.
    """

    def __init__(self, raw: Buffer) -> None:
        from zarr.core.array_spec import ArrayConfig, ArraySpec
        from zarr.core.buffer import default_buffer_prototype
        from zarr.core.chunk_grids import ChunkGrid
        from zarr.core.chunk_utils import ChunkTransform

        meta = _ArrayCheck(_load(raw)).meta
        self._grid = ChunkGrid.from_metadata(meta)
        self._meta = meta
        self._config = ArrayConfig.from_dict({})
        self._prototype = default_buffer_prototype()
        self._spec_type = ArraySpec
        bytes_to_bytes = [c for c in meta.codecs if _is_bytes_to_bytes(c)]
        native = meta.data_type.to_native_dtype()
        #: bytes per element where every element has the same size, else None
        self.itemsize: int | None = (
            None if native.hasobject or native.itemsize == 0 else int(native.itemsize)
        )
        self.exact = not bytes_to_bytes and self.itemsize is not None
        #: a header-only check of the one compressor the array has (zstd, blosc, gzip)
        self._frame = (
            _frame_check(bytes_to_bytes[0])
            if (len(bytes_to_bytes) == 1 and self.itemsize is not None)
            else None
        )
        #: only checksums to undo: decoding costs about as little as reading the bytes
        self._light = bool(bytes_to_bytes) and all(_is_checksum(c) for c in bytes_to_bytes)
        try:
            self._transform: ChunkTransform | None = ChunkTransform(codecs=tuple(meta.codecs))
        except TypeError:
            self._transform = None

    def exact_size(self, coords: tuple[int, ...]) -> int | None:
        """The one size a chunk at *coords* can have (uncompressed, fixed-size elements);
        None if its size depends on its content, or *coords* lie outside the grid."""
        if not self.exact or self.itemsize is None:
            return None
        try:
            return int(math.prod(self._shape(coords))) * self.itemsize
        except InvalidInput:
            return None

    @property
    def cheap(self) -> bool:
        """Whether `check` without decoding looks at anything (an exact size or a frame)."""
        return self.exact or self._frame is not None or (self._light and self.decodes)

    @property
    def decodes(self) -> bool:
        """Whether `check` with *decode* decodes."""
        return self._transform is not None and not self.exact

    def _shape(self, coords: tuple[int, ...]) -> tuple[int, ...]:
        chunk = self._grid[coords]
        if chunk is None:
            raise InvalidInput(f"chunk {coords} lies outside the array's grid")
        return tuple(chunk.codec_shape)

    def _spec(self, shape: tuple[int, ...]) -> Any:
        return self._spec_type(
            shape=shape,
            dtype=self._meta.data_type,
            fill_value=self._meta.fill_value,
            config=self._config,
            prototype=self._prototype,
        )

    def check(self, data: Buffer, coords: tuple[int, ...], *, decode: bool = True) -> None:
        """Raise `InvalidInput` unless *data* is a valid chunk at *coords*.

        Always: the exact size of an uncompressed chunk; for a chunk compressed with
        zstd, blosc or gzip alone, the compressor's own framing read without
        decompressing (the frame spans the whole chunk and announces the decoded
        size); a chunk protected by checksums alone (crc32c) is decoded, which
        costs about what reading it does.  With *decode*, compressed chunks are
        also decoded.
        """
        shape = self._shape(coords)
        size = memoryview(data).nbytes
        if not size:
            raise InvalidInput(
                "an empty chunk (no codec writes zero bytes; delete the chunk "
                "to make it read as the fill value)"
            )
        if self.exact:
            assert self.itemsize is not None
            expected = math.prod(shape) * self.itemsize
            if size != expected:
                raise InvalidInput(
                    f"{size} bytes; an uncompressed chunk of this array has "
                    f"{expected} ({'x'.join(map(str, shape))} elements of "
                    f"{self.itemsize} bytes)"
                )
            return
        if self._frame is not None:
            assert self.itemsize is not None
            problem = self._frame(memoryview(data).cast("B"), math.prod(shape) * self.itemsize)
            if problem:
                raise InvalidInput(f"not a chunk of this array: {problem}")
        if not (decode or self._light) or self._transform is None:
            return
        from zarr.core.buffer.cpu import Buffer as ZarrBuffer

        try:
            self._transform.decode_chunk(ZarrBuffer.from_bytes(data), self._spec(shape))  # type: ignore[arg-type]
        except Exception as exc:  # a codec's own error type: the bytes are not a chunk
            raise InvalidInput(f"does not decode with the array's codecs: {_reason(exc)}") from None


_ZSTD_MAGIC: Final = 0xFD2FB528


def _zstd_frame(data: memoryview, expected: int) -> str | None:
    """Walk the one zstd frame *data* must be (headers only): None, or what is wrong."""
    if len(data) < 6 or int.from_bytes(data[:4], "little") != _ZSTD_MAGIC:
        return "not a zstd frame"
    descriptor = data[4]
    fcs_flag, single, checksum, dict_flag = (
        descriptor >> 6,
        (descriptor >> 5) & 1,
        (descriptor >> 2) & 1,
        descriptor & 3,
    )
    pos = 5 + (0 if single else 1) + (0, 1, 2, 4)[dict_flag]
    fcs_size = (1 if single else 0, 2, 4, 8)[fcs_flag]
    if fcs_size and pos + fcs_size <= len(data):
        size = int.from_bytes(data[pos : pos + fcs_size], "little") + (256 if fcs_size == 2 else 0)
        if size != expected:
            return f"its zstd frame holds {size} bytes; a chunk of this array decodes to {expected}"
    pos += fcs_size
    while True:
        if pos + 3 > len(data):
            return "its zstd frame is cut short"
        header = int.from_bytes(data[pos : pos + 3], "little")
        last, kind, size = header & 1, (header >> 1) & 3, header >> 3
        if kind == 3:
            return "its zstd frame holds a reserved block type"
        pos += 3 + (1 if kind == 1 else size)
        if last:
            break
    pos += 4 if checksum else 0
    if pos != len(data):
        return (
            f"{len(data) - pos} bytes follow its zstd frame"
            if pos < len(data)
            else "its zstd frame is cut short"
        )
    return None


def _blosc_frame(data: memoryview, expected: int) -> str | None:
    if len(data) < 16:
        return "shorter than a blosc header"
    nbytes, cbytes = (int.from_bytes(data[4:8], "little"), int.from_bytes(data[12:16], "little"))
    if cbytes != len(data):
        return f"its blosc header says {cbytes} bytes, the chunk has {len(data)}"
    if nbytes != expected:
        return f"its blosc header holds {nbytes} bytes; a chunk of this array decodes to {expected}"
    return None


def _gzip_frame(data: memoryview, expected: int) -> str | None:
    if len(data) < 18 or data[0] != 0x1F or data[1] != 0x8B:
        return "not a gzip stream"
    size = int.from_bytes(data[-4:], "little")
    if size != expected % (1 << 32):
        return f"its gzip trailer says {size} bytes; a chunk of this array decodes to {expected}"
    return None


def _frame_check(codec: object) -> Any:
    """The header-only check for the compressor *codec*, or None if there is none."""
    from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

    for kind, check in (
        (ZstdCodec, _zstd_frame),
        (BloscCodec, _blosc_frame),
        (GzipCodec, _gzip_frame),
    ):
        if isinstance(codec, kind):
            return check
    return None


def _is_checksum(codec: object) -> bool:
    from zarr.codecs import Crc32cCodec

    return isinstance(codec, Crc32cCodec)


def _is_bytes_to_bytes(codec: object) -> bool:
    from zarr.abc.codec import BytesBytesCodec

    return isinstance(codec, BytesBytesCodec)
