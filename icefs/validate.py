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
from typing import TYPE_CHECKING, Any

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
        raise InvalidInput(f"zarr_format is {doc.get('zarr_format')!r}; icefs stores Zarr v3 "
                           "metadata (zarr_format 3)")
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
                "keys only, so use {'name': 'default', 'configuration': {'separator': '/'}}")
        if meta.storage_transformers:
            raise InvalidInput("storage_transformers are not supported by Icechunk")
        self.meta = meta


class ChunkCheck:
    """Checks that bytes decode as a chunk of one array (its codecs, its chunk shape).

    An array without a bytes-to-bytes codec (no compressor, no checksum) and with a
    fixed-size data type has one exact chunk size: a chunk of any other size is
    refused with both sizes named, without decoding.  Otherwise the chunk is decoded
    with the array's codec pipeline (zarr's own codecs); a decoding failure is a
    refusal.  Codecs that zarr can only run under asyncio (none of zarr's own) are
    not decoded: such arrays get the size check only, where it applies.
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
        self.itemsize: int | None = None if native.hasobject or native.itemsize == 0 \
            else int(native.itemsize)
        self.exact = not bytes_to_bytes and self.itemsize is not None
        try:
            self._transform: ChunkTransform | None = ChunkTransform(codecs=tuple(meta.codecs))
        except TypeError:
            self._transform = None

    @property
    def decodes(self) -> bool:
        """Whether `check` decodes (False: the size check only, or nothing)."""
        return self._transform is not None and not self.exact

    def _spec(self, coords: tuple[int, ...]) -> Any:
        chunk = self._grid[coords]
        if chunk is None:
            raise InvalidInput(f"chunk {coords} lies outside the array's grid")
        return self._spec_type(shape=chunk.codec_shape, dtype=self._meta.data_type,
                               fill_value=self._meta.fill_value, config=self._config,
                               prototype=self._prototype)

    def check(self, data: Buffer, coords: tuple[int, ...], *, decode: bool = True) -> None:
        """Raise `InvalidInput` unless *data* is a valid chunk at *coords*.

        *decode* False skips decoding compressed chunks (the exact-size check of
        uncompressed ones always runs).
        """
        spec = self._spec(coords)
        size = memoryview(data).nbytes
        if not size:
            raise InvalidInput("an empty chunk (no codec writes zero bytes; delete the chunk "
                               "to make it read as the fill value)")
        if self.exact:
            assert self.itemsize is not None
            expected = math.prod(spec.shape) * self.itemsize
            if size != expected:
                raise InvalidInput(f"{size} bytes; an uncompressed chunk of this array has "
                                   f"{expected} ({'x'.join(map(str, spec.shape))} elements of "
                                   f"{self.itemsize} bytes)")
            return
        if not decode or self._transform is None:
            return
        from zarr.core.buffer.cpu import Buffer as ZarrBuffer

        try:
            self._transform.decode_chunk(ZarrBuffer.from_bytes(data), spec)  # type: ignore[arg-type]
        except Exception as exc:  # a codec's own error type: the bytes are not a chunk
            raise InvalidInput(f"does not decode with the array's codecs: {_reason(exc)}"
                               ) from None


def _is_bytes_to_bytes(codec: object) -> bool:
    from zarr.abc.codec import BytesBytesCodec

    return isinstance(codec, BytesBytesCodec)
