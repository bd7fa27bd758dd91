"""Checks of what is stored: zarr.json by zarr's parser, chunks by their array's codecs.

Pure tests: real chunk bytes made by zarr itself for each codec, then the same
bytes damaged in the ways users damage them (appending, cutting, garbage).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec, GzipCodec, TransposeCodec, ZstdCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.storage import MemoryStore

from icefs.errors import InvalidInput
from icefs.store.validate import ChunkCheck, check_metadata

CODECS: dict[str, dict[str, Any]] = {
    "none": {"compressors": None},
    "zstd": {"compressors": ZstdCodec()},
    "zstd+checksum": {"compressors": ZstdCodec(checksum=True)},
    "blosc": {"compressors": BloscCodec()},
    "gzip": {"compressors": GzipCodec()},
    "crc32c": {"compressors": Crc32cCodec()},
    "transpose+zstd": {"compressors": ZstdCodec(), "filters": TransposeCodec(order=(1, 0))},
}


def made(codec: str, dtype: str = "<f4") -> tuple[bytes, bytes]:
    """(zarr.json, the bytes of chunk 0/0) of a 2-D array written by zarr with *codec*."""
    store = MemoryStore()
    arr = zarr.create_array(
        store, shape=(64, 32), chunks=(32, 32), dtype=dtype, fill_value=0, **CODECS[codec]
    )
    arr[:] = np.arange(64 * 32).reshape(64, 32).astype(dtype)

    async def get(key: str) -> bytes:
        buf = await store.get(key, default_buffer_prototype())
        assert buf is not None
        return buf.to_bytes()

    return asyncio.run(get("zarr.json")), asyncio.run(get("c/0/0"))


@pytest.mark.parametrize("codec", list(CODECS))
@pytest.mark.parametrize("decode", [False, True])
def test_real_chunks_pass(codec, decode):
    metadata, chunk = made(codec)
    ChunkCheck(metadata).check(chunk, (0, 0), decode=decode)
    ChunkCheck(metadata).check(chunk, (1, 0), decode=decode)


@pytest.mark.parametrize(
    ("codec", "damage"),
    [
        (codec, damage)
        for codec in ("none", "zstd", "zstd+checksum", "blosc", "gzip", "crc32c", "transpose+zstd")
        for damage in ("append", "cut", "garbage")
        # any bytes of the exact size are a valid uncompressed chunk
        if (codec, damage) != ("none", "garbage")
    ],
)
def test_damaged_chunks_are_refused_without_decoding(codec, damage):
    metadata, chunk = made(codec)
    bad = {"append": chunk + b"xyz", "cut": chunk[:-5], "garbage": bytes(len(chunk))}[damage]
    with pytest.raises(InvalidInput):
        ChunkCheck(metadata).check(bad, (0, 0), decode=False)


@pytest.mark.parametrize("codec", list(CODECS))
def test_damaged_chunks_are_refused_when_decoding(codec):
    metadata, chunk = made(codec)
    damaged = [chunk + b"xyz", chunk[:-5]]
    if codec != "none":  # any bytes of the exact size are a valid uncompressed chunk
        damaged.append(bytes(len(chunk)))
    for bad in damaged:
        with pytest.raises(InvalidInput):
            ChunkCheck(metadata).check(bad, (0, 0), decode=True)


def test_messages_name_the_sizes():
    metadata, chunk = made("none")
    with pytest.raises(
        InvalidInput, match="4099 bytes; an uncompressed chunk of this array has 4096"
    ):
        ChunkCheck(metadata).check(chunk + b"xyz", (0, 0))
    metadata, chunk = made("zstd")
    with pytest.raises(InvalidInput, match="3 bytes follow its zstd frame"):
        ChunkCheck(metadata).check(chunk + b"xyz", (0, 0), decode=False)
    with pytest.raises(InvalidInput, match="an empty chunk"):
        ChunkCheck(metadata).check(b"", (0, 0))
    with pytest.raises(InvalidInput, match="outside the array's grid"):
        ChunkCheck(metadata).check(chunk, (5, 0))


def test_variable_length_strings_are_decoded():
    store = MemoryStore()
    arr = zarr.create_array(store, shape=(4,), chunks=(2,), dtype=str)
    arr[:] = ["a", "bb", "ccc", "dddd"]
    metadata = asyncio.run(store.get("zarr.json", default_buffer_prototype())).to_bytes()
    chunk = asyncio.run(store.get("c/0", default_buffer_prototype())).to_bytes()
    check = ChunkCheck(metadata)
    assert not check.exact
    check.check(chunk, (0,), decode=True)
    with pytest.raises(InvalidInput):
        check.check(chunk[:3], (0,), decode=True)


ARRAY = json.loads(made("zstd")[0])


def variant(**changes):
    doc = json.loads(json.dumps(ARRAY))
    for key, value in changes.items():
        if value is None:
            doc.pop(key)
        else:
            doc[key] = value
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        (b"{", "not JSON"),
        (b"[1]", "not a JSON object"),
        (variant(zarr_format=4), "zarr_format is 4"),
        (variant(zarr_format=2), "zarr_format is 2"),
        (variant(node_type="table"), "node_type is 'table'"),
        (variant(data_type="int33"), "invalid array metadata"),
        (variant(codecs=[{"name": "bytes"}, {"name": "nope"}]), "invalid array metadata"),
        (
            variant(chunk_grid={"name": "regular", "configuration": {"chunk_shape": [2]}}),
            "same number of dimensions",
        ),
        (variant(fill_value="x"), "invalid array metadata"),
        (variant(chunk_key_encoding=None), "without chunk_key_encoding"),
        (
            variant(chunk_key_encoding={"name": "v2", "configuration": {"separator": "/"}}),
            "c/i/j keys only",
        ),
        (
            variant(chunk_key_encoding={"name": "default", "configuration": {"separator": "."}}),
            "c/i/j keys only",
        ),
        (variant(shape=[-1, 2]), "invalid array metadata"),
        (b'{"zarr_format": 3, "node_type": "group", "attributes": 5}', "invalid group metadata"),
    ],
)
def test_metadata_refusals(doc, reason):
    with pytest.raises(InvalidInput, match=reason):
        check_metadata(doc)


def test_metadata_that_zarr_writes_passes():
    check_metadata(json.dumps(ARRAY).encode())
    check_metadata(b'{"zarr_format": 3, "node_type": "group", "attributes": {"a": 1}}')
    check_metadata(b'{"zarr_format": 3, "node_type": "group"}')
