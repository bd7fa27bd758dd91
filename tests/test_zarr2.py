"""The Zarr v2 renderings: the translation table row by row, and the views on a real mount.

The table's rows (docs/legacy.md) are checked on documents zarr 3 writes, and
every `.zarray` rendered is read back with zarr's own v2 metadata parser.
"""

from __future__ import annotations

import errno
import json
import math
import os
import time
from typing import Any

import icechunk
import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec, GzipCodec, TransposeCodec, ZstdCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.metadata.v2 import ArrayV2Metadata
from zarr.storage import LocalStore, MemoryStore

from icefs.store.sample import sample_storage
from icefs.store.zarr2 import Untranslatable, decode_chunk, translate_array, without_fill


def _document(**kwargs) -> bytes:
    """The zarr.json zarr 3 writes for an array made with *kwargs*."""
    store = MemoryStore()
    kwargs.setdefault("shape", (6, 4))
    kwargs.setdefault("chunks", (3, 2))
    kwargs.setdefault("dtype", "f4")
    zarr.create_array(store, name="a", **kwargs)
    import asyncio

    buf = asyncio.run(store.get("a/zarr.json", default_buffer_prototype()))
    assert buf is not None
    return buf.to_bytes()


def _zarray(metadata: bytes) -> dict[str, Any]:
    form = translate_array(metadata)
    doc = json.loads(form.zarray)
    ArrayV2Metadata.from_dict(dict(doc))  # zarr's own v2 parser accepts it
    return doc


@pytest.mark.parametrize(
    ("dtype", "v2"),
    [
        ("bool", "|b1"),
        ("i1", "|i1"),
        ("u1", "|u1"),
        ("i2", "<i2"),
        ("u4", "<u4"),
        ("i8", "<i8"),
        ("f2", "<f2"),
        ("f4", "<f4"),
        ("f8", "<f8"),
        ("c8", "<c8"),
        ("c16", "<c16"),
    ],
)
def test_data_types_little_endian(dtype, v2):
    assert _zarray(_document(dtype=dtype))["dtype"] == v2


def test_big_endian_from_the_bytes_codec():
    doc = json.loads(_document(dtype="f8", compressors=None))
    doc["codecs"] = [{"name": "bytes", "configuration": {"endian": "big"}}]
    assert _zarray(json.dumps(doc).encode())["dtype"] == ">f8"


@pytest.mark.parametrize(
    ("compressors", "expected"),
    [
        (None, None),
        (GzipCodec(level=3), {"id": "gzip", "level": 3}),
        (ZstdCodec(level=5), {"id": "zstd", "level": 5}),
        (ZstdCodec(level=1, checksum=True), {"id": "zstd", "level": 1, "checksum": True}),
        (
            BloscCodec(cname="lz4", clevel=4, shuffle="bitshuffle"),
            {"id": "blosc", "cname": "lz4", "clevel": 4, "shuffle": 2, "blocksize": 0},
        ),
        (
            BloscCodec(cname="zstd", clevel=1, shuffle="noshuffle"),
            {"id": "blosc", "cname": "zstd", "clevel": 1, "shuffle": 0, "blocksize": 0},
        ),
        (
            BloscCodec(cname="blosclz", clevel=9, shuffle="shuffle", typesize=4),
            {"id": "blosc", "cname": "blosclz", "clevel": 9, "shuffle": 1, "blocksize": 0},
        ),
    ],
)
def test_compressors(compressors, expected):
    zarray = _zarray(_document(compressors=compressors))
    assert zarray["compressor"] == expected
    assert zarray["filters"] is None
    assert zarray["dimension_separator"] == "/"


@pytest.mark.parametrize(
    ("order", "expected"), [((0, 1), "C"), ((1, 0), "F")], ids=["identity", "reversed"]
)
def test_transpose_to_order(order, expected):
    doc = _document(filters=[TransposeCodec(order=order)], compressors=None)
    assert _zarray(doc)["order"] == expected


def test_transpose_neither_c_nor_f_is_left_out():
    doc = _document(shape=(2, 3, 4), chunks=(1, 1, 1), filters=[TransposeCodec(order=(1, 0, 2))])
    with pytest.raises(Untranslatable, match="neither C nor F"):
        translate_array(doc)


@pytest.mark.parametrize(
    ("fill", "expected"),
    [(float("nan"), "NaN"), (float("inf"), "Infinity"), (float("-inf"), "-Infinity"), (2.5, 2.5)],
)
def test_fill_values_as_v2_writes_them(fill, expected):
    assert _zarray(_document(fill_value=fill))["fill_value"] == expected


def test_fill_value_attribute_becomes_the_fill_value():
    form = translate_array(_document(fill_value=0.0, attributes={"_FillValue": "NaN", "u": 1}))
    assert json.loads(form.zarray)["fill_value"] == "NaN"
    assert form.fill_from_attribute
    zattrs = json.loads(form.zattrs)
    assert zattrs["u"] == 1
    assert math.isnan(zattrs["_FillValue"]), "netCDF-C reads the marker from .zattrs only"
    assert b'"_FillValue": NaN' in form.zattrs, "as zarr 2 writes it: a bare NaN"


@pytest.mark.parametrize(
    ("dtype", "value", "zarray_fill", "attribute"),
    [
        ("f8", float("nan"), "NaN", math.nan),
        ("f4", float("nan"), "NaN", math.nan),
        ("f4", -9999.0, -9999.0, -9999.0),
        ("f8", float("inf"), "Infinity", math.inf),
        ("i2", -1, -1, -1),
        ("u1", 255, 255, 255),
    ],
)
def test_xarray_fill_value_encoding(dtype, value, zarray_fill, attribute):
    """What xarray's to_zarr(zarr_format=3) writes: floats as base64 of a float64."""
    from xarray.backends.zarr import FillValueCoder

    encoded = FillValueCoder.encode(value, np.dtype(dtype))
    form = translate_array(_document(dtype=dtype, attributes={"_FillValue": encoded}))
    assert json.loads(form.zarray)["fill_value"] == zarray_fill
    shown = json.loads(form.zattrs)["_FillValue"]
    assert shown == attribute or (math.isnan(shown) and math.isnan(attribute))
    assert form.decoded_zarray is not None
    assert json.loads(form.decoded_zarray)["fill_value"] == zarray_fill


def test_fill_value_attribute_that_fits_nothing_is_refused():
    with pytest.raises(Untranslatable, match="_FillValue"):
        translate_array(_document(dtype="f4", attributes={"_FillValue": "not a number"}))
    with pytest.raises(Untranslatable, match="_FillValue"):
        translate_array(_document(dtype="i4", attributes={"_FillValue": "AAAAAAAA+H8="}))


def test_without_fill_keeps_the_rest():
    form = translate_array(_document(fill_value=3.0))
    doc = json.loads(without_fill(form.zarray))
    assert doc["fill_value"] is None
    assert doc == {**json.loads(form.zarray), "fill_value": None}
    assert form.grid_chunks == 2 * 2


def test_attributes_and_dimension_names():
    form = translate_array(
        _document(attributes={"units": "K", "scale": 0.5}, dimension_names=["y", "x"])
    )
    assert json.loads(form.zattrs) == {"units": "K", "scale": 0.5, "_ARRAY_DIMENSIONS": ["y", "x"]}
    partial = translate_array(_document(dimension_names=["y", None]))
    assert json.loads(partial.zattrs) == {}, "xarray needs every name or none"


def test_variable_length_strings():
    form = translate_array(_document(dtype=str, shape=(4,), chunks=(2,)))
    zarray = json.loads(form.zarray)
    ArrayV2Metadata.from_dict(dict(zarray))
    assert zarray["dtype"] == "|O"
    assert zarray["filters"] == [{"id": "vlen-utf8"}]
    assert form.decoded_zarray is None
    assert "variable-length" in form.why_not


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"shards": (6, 4)}, "sharding_indexed"),
        ({"chunk_key_encoding": {"name": "default", "separator": "."}}, "key encoding"),
        ({"chunk_key_encoding": {"name": "v2", "separator": "/"}}, "key encoding"),
    ],
)
def test_what_v2_cannot_express(kwargs, reason):
    with pytest.raises(Untranslatable, match=reason):
        translate_array(_document(**kwargs))


def test_codec_chains_become_filters_and_a_compressor():
    """netCDF-4's shuffle + zlib (as VirtualiZarr records it), and other chains."""
    from zarr.codecs.numcodecs import Shuffle, Zlib

    zarray = _zarray(_document(compressors=[Shuffle(elementsize=4), Zlib(level=4)]))
    assert zarray["filters"] == [{"id": "shuffle", "elementsize": 4}]
    assert zarray["compressor"] == {"id": "zlib", "level": 4}
    zarray = _zarray(_document(compressors=[GzipCodec(level=2), Crc32cCodec()]))
    assert zarray["filters"] == [{"id": "gzip", "level": 2}]
    assert zarray["compressor"]["id"] == "crc32c"


def test_a_codec_no_numcodecs_decodes_is_left_out():
    doc = json.loads(_document(compressors=None))
    doc["codecs"].append({"name": "numcodecs.made-up", "configuration": {}})
    with pytest.raises(Untranslatable, match=r"numcodecs\.made-up|cannot read"):
        translate_array(json.dumps(doc).encode())


def test_unknown_codec_and_data_type():
    doc = json.loads(_document(compressors=None))
    doc["codecs"].append({"name": "made-up", "configuration": {}})
    with pytest.raises(Untranslatable, match="cannot read"):
        translate_array(json.dumps(doc).encode())
    doc = json.loads(_document(compressors=None))
    doc["data_type"] = "float1024"
    with pytest.raises(Untranslatable, match="cannot read"):
        translate_array(json.dumps(doc).encode())


def _chains():
    from zarr.codecs.numcodecs import Shuffle, Zlib

    return [
        None,
        GzipCodec(),
        ZstdCodec(),
        BloscCodec(shuffle="shuffle"),
        [Shuffle(elementsize=4), Zlib(level=4)],
        [ZstdCodec(), Crc32cCodec()],
        [Shuffle(elementsize=4), GzipCodec(), Crc32cCodec()],
    ]


@pytest.mark.parametrize("compressors", _chains())
def test_decode_chunk_round_trip(tmp_path, compressors):
    store = LocalStore(tmp_path / "z")
    values = np.arange(24, dtype="<f4").reshape(6, 4)
    array = zarr.create_array(
        store, shape=(6, 4), chunks=(3, 2), dtype="f4", compressors=compressors
    )
    array[:] = values
    form = translate_array((tmp_path / "z" / "zarr.json").read_bytes())
    raw = (tmp_path / "z" / "c" / "1" / "0").read_bytes()
    assert decode_chunk(form, raw) == values[3:6, 0:2].tobytes()
    assert form.chunk_bytes == 3 * 2 * 4
    with pytest.raises(ValueError):
        decode_chunk(form, raw[:-1] if compressors is None else b"\0" * 8)


@pytest.mark.parametrize("compressors", _chains())
def test_zarr2_reads_the_raw_rendering(tmp_path, compressors):
    """The raw `.zarray` with the v3 chunk bytes is a v2 array zarr 2 reads (zarr 3's
    v2 reader: the same numcodecs pipeline)."""
    values = np.arange(24, dtype="<f4").reshape(6, 4)
    v3 = zarr.create_array(
        LocalStore(tmp_path / "v3"),
        shape=(6, 4),
        chunks=(3, 2),
        dtype="f4",
        compressors=compressors,
    )
    v3[:] = values
    form = translate_array((tmp_path / "v3" / "zarr.json").read_bytes())
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / ".zarray").write_bytes(form.zarray)
    for chunk in (tmp_path / "v3" / "c").rglob("*"):
        if chunk.is_file():
            target = v2 / chunk.relative_to(tmp_path / "v3" / "c")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(chunk.read_bytes())
    read = zarr.open_array(LocalStore(v2), mode="r", zarr_format=2)
    assert np.array_equal(read[...], values)


# -- the views on a real mount -----------------------------------------------------------------


def build_legacy_repo(path) -> str:
    """A repository on *path* with what legacy readers meet; returns the tag "v1"'s id.

    Root attributes of three types; a coordinate `x` and `y`; `t` uncompressed with
    attributes; `z` zstd 2-D; `g` gzip; `b` blosc; `sparse` with a missing chunk
    and a fill value (all tagged "nc"); then `names` strings, `scalar` 0-d, `sharded`
    and `crc` (crc32c: a v2 compressor numcodecs decodes), tagged "v1".
    """
    repo = icechunk.Repository.create(sample_storage(str(path)))
    session = repo.writable_session("main")
    root = zarr.group(session.store, attributes={"title": "legacy", "version": 3, "scale": 0.5})

    def array(name, data, chunks, **kwargs):
        kwargs.setdefault("compressors", None)
        created = root.create_array(
            name, shape=data.shape, chunks=chunks, dtype=data.dtype, **kwargs
        )
        created[...] = data
        return created

    array("x", np.arange(6, dtype="i4"), (3,), dimension_names=["x"])
    array("y", np.linspace(-1.5, 1.5, 4), (4,), dimension_names=["y"])
    t = np.array([1.5, -2.25, 3.0, 4.125, 0.0, 6.5], dtype="f4")
    array("t", t, (3,), dimension_names=["x"], attributes={"units": "K", "count": 7})
    z = (np.arange(24, dtype="f8").reshape(4, 6) * 1.25) - 3
    array("z", z, (2, 3), dimension_names=["y", "x"], compressors=ZstdCodec(level=3))
    g = np.arange(24, dtype="u2").reshape(4, 6) * 100
    array("g", g, (2, 3), dimension_names=["y", "x"], compressors=GzipCodec())
    b = np.arange(24, dtype="i8").reshape(4, 6) - 12
    array("b", b, (2, 3), dimension_names=["y", "x"], compressors=BloscCodec(shuffle="shuffle"))
    sparse = root.create_array(
        "sparse",
        shape=(6,),
        chunks=(3,),
        dtype="f4",
        fill_value=-9.0,
        compressors=None,
        dimension_names=["x"],
    )
    sparse[:3] = [1.0, 2.0, 3.0]
    repo.create_tag("nc", session.commit("numbers"))
    # netCDF-C 4.9.0 crashes on arrays of strings and on 0-d arrays (also ones zarr 2
    # wrote): the tag "nc" stands before them
    session = repo.writable_session("main")
    root = zarr.open_group(session.store, mode="r+")
    names = root.create_array("names", shape=(3,), chunks=(3,), dtype=str)
    names[:] = ["a", "bc", "déf"]
    array("scalar", np.array(42, dtype="i2"), ())
    array("sharded", np.arange(4, dtype="i2"), (2,), shards=(4,))
    array("crc", np.arange(4, dtype="i2"), (2,), compressors=[Crc32cCodec()])
    snapshot = session.commit("legacy data")
    repo.create_tag("v1", snapshot)
    return snapshot


@pytest.fixture
def legacy(tmp_path, mount_factory, log_allows):
    log_allows.append("the Zarr v2 view leaves out")
    build_legacy_repo(tmp_path / "repo")
    mount = mount_factory(tmp_path / "repo")
    mount.storage = tmp_path / "repo"
    return mount


def test_layout_documents_and_chunk_bytes(legacy):
    mnt = legacy.mountpoint
    assert {"zarr2", "zarr2-decoded"} <= set(os.listdir(mnt))
    for rendering in ("zarr2", "zarr2-decoded"):
        assert sorted(os.listdir(mnt / rendering)) == ["branches", "snapshots", "tags"]
        assert sorted(os.listdir(mnt / rendering / "tags")) == ["nc", "v1"]
        assert "main" in os.listdir(mnt / rendering / "branches")
    v2 = mnt / "zarr2" / "tags" / "v1"
    v3 = mnt / "tags" / "v1"
    shown = ["b", "crc", "g", "names", "scalar", "sparse", "t", "x", "y", "z"]
    assert sorted(os.listdir(v2)) == [".zattrs", ".zgroup", ".zmetadata", *shown]
    assert json.loads((v2 / ".zgroup").read_text()) == {"zarr_format": 2}
    assert json.loads((v2 / ".zattrs").read_text()) == {
        "title": "legacy",
        "version": 3,
        "scale": 0.5,
    }
    assert sorted(os.listdir(v2 / "z")) == [".zarray", ".zattrs", "0", "1"]
    assert sorted(os.listdir(v2 / "z" / "1")) == ["0", "1"]
    for missing in ("zarr.json", "c", "sharded", ".icefs"):
        with pytest.raises(FileNotFoundError):
            os.stat(v2 / missing if missing != "c" else v2 / "z" / "c")
    for name in ("z/1/1", "g/0/1", "b/1/0", "t/1", "x/0"):
        array, _, coords = name.partition("/")
        assert (v2 / name).read_bytes() == (v3 / array / "c" / coords).read_bytes()
    assert (v2 / "scalar" / "0").read_bytes() == (v3 / "scalar" / "c").read_bytes()
    assert json.loads((v2 / "scalar" / ".zarray").read_text())["shape"] == []
    zmetadata = json.loads((v2 / ".zmetadata").read_text())
    assert zmetadata["zarr_consolidated_format"] == 1
    for name in os.listdir(v2):
        if not name.startswith("."):
            assert (
                json.loads((v2 / name / ".zarray").read_text())
                == zmetadata["metadata"][f"{name}/.zarray"]
            )
    assert "sharded/.zarray" not in zmetadata["metadata"]
    # what is left out, and why, is in the ref's status
    left = json.loads((v3 / ".icefs" / "status").read_text())["zarr2_left_out"]
    assert "sharding_indexed" in left["zarr2"]["/sharded"]
    assert "/crc" not in left["zarr2"]
    assert "/crc" not in left["zarr2-decoded"]
    assert "variable-length" in left["zarr2-decoded"]["/names"]
    assert "/names" not in left["zarr2"]
    for _ in range(3):  # asked again and again (listings, status): logged once
        os.listdir(v2)
        json.loads((v3 / ".icefs" / "status").read_text())
    told = [line for line in legacy.log_text().splitlines() if "leaves out /sharded" in line]
    assert len(told) == 1, told


def test_fill_value_follows_the_stored_chunks(legacy):
    v2 = legacy.mountpoint / "zarr2" / "tags" / "v1"
    # every chunk stored: no chunk is ever filled, and v2 readers would mask the value
    assert json.loads((v2 / "x" / ".zarray").read_text())["fill_value"] is None
    # a chunk missing: it reads as the fill value
    assert json.loads((v2 / "sparse" / ".zarray").read_text())["fill_value"] == -9.0
    assert sorted(os.listdir(v2 / "sparse")) == [".zarray", ".zattrs", "0"]


def test_decoded_rendering(legacy):
    mnt = legacy.mountpoint
    decoded = mnt / "zarr2-decoded" / "tags" / "v1"
    store = (
        icechunk.Repository.open(sample_storage(str(legacy.storage)))
        .readonly_session(tag="v1")
        .store
    )
    root = zarr.open_group(store, mode="r")
    assert "names" not in os.listdir(decoded)
    for name in ("z", "g", "b", "t"):
        zarray = json.loads((decoded / name / ".zarray").read_text())
        assert zarray["compressor"] is None
        values = root[name][...]
        chunks = zarray["chunks"]
        itemsize = values.dtype.itemsize
        for path, _, files in os.walk(decoded / name):
            for f in files:
                if f.startswith("."):
                    continue
                coords = [
                    int(c)
                    for c in os.path.relpath(os.path.join(path, f), decoded / name).split("/")
                ]
                # the size is exact before anything is read
                assert os.stat(os.path.join(path, f)).st_size == math.prod(chunks) * itemsize
                block = values[
                    tuple(slice(c * n, (c + 1) * n) for c, n in zip(coords, chunks, strict=True))
                ]
                assert open(os.path.join(path, f), "rb").read() == block.tobytes()
    # the same chunk through the raw view stays compressed
    raw = mnt / "zarr2" / "tags" / "v1" / "z" / "0" / "0"
    assert raw.read_bytes() != (decoded / "z" / "0" / "0").read_bytes()


def test_only_the_v2_view_of_branches_is_writable(legacy):
    mnt = legacy.mountpoint
    decoded = mnt / "zarr2-decoded" / "branches" / "main"
    tag = mnt / "zarr2" / "tags" / "v1"
    for call in (
        lambda: open(decoded / "new", "w"),
        lambda: open(decoded / "t" / ".zattrs", "w"),
        lambda: os.mkdir(decoded / "d"),
        lambda: os.unlink(decoded / "t" / "0"),
        lambda: open(tag / "t" / ".zattrs", "w"),
        lambda: os.unlink(tag / "t" / "0"),
        lambda: os.mkdir(tag / "d"),
        lambda: os.mkdir(mnt / "zarr2" / "branches" / "new"),
        lambda: os.rmdir(mnt / "zarr2" / "branches" / "main"),
        lambda: os.rmdir(mnt / "zarr2-decoded" / "tags" / "v1"),
    ):
        with pytest.raises(OSError) as caught:
            call()
        assert caught.value.errno == errno.EROFS, caught.value
    assert "main" in os.listdir(mnt / "branches")
    assert sorted(os.listdir(mnt / "tags")) == ["nc", "v1"]
    branch = mnt / "zarr2" / "branches" / "main"
    with pytest.raises(OSError) as caught:
        os.link(branch / "t" / "0", branch / "t" / "copy")
    assert caught.value.errno == errno.EPERM
    with pytest.raises(OSError) as caught:
        os.rename(branch / "t", branch / "u")
    assert caught.value.errno == errno.EXDEV, "mv copies directories instead"
    with pytest.raises(OSError) as caught:
        os.rename(mnt / "branches" / "main" / "t" / "c" / "0", branch / "t" / "1")
    assert caught.value.errno == errno.EXDEV, "mv copies between the views"


def test_branch_rendering_shows_uncommitted_writes(legacy):
    mnt = legacy.mountpoint
    group = zarr.open_group(LocalStore(mnt / "branches" / "main"), mode="r+")
    new = group.create_array("fresh", shape=(4,), chunks=(2,), dtype="i4", compressors=None)
    new[:] = [7, 8, 9, 10]
    v2 = mnt / "zarr2" / "branches" / "main"
    deadline = time.monotonic() + 10  # a name once absent may be cached for the refresh interval
    while not (v2 / "fresh").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (v2 / "fresh" / "1").read_bytes() == np.array([9, 10], dtype="<i4").tobytes()
    zmetadata = json.loads((v2 / ".zmetadata").read_text())
    assert zmetadata["metadata"]["fresh/.zarray"]["shape"] == [4]
    # the tag's rendering is unchanged
    assert not (mnt / "zarr2" / "tags" / "v1" / "fresh").exists()


def test_fixed_length_strings_decoded_in_netcdf_char_form(tmp_path):
    """netCDF-C 4.9 crashes on every string form but its own: '<U1' holding one byte per
    element, the characters along one more dimension."""
    values = np.array(["a", "bb", "ccé", "d"])
    array = zarr.create_array(
        LocalStore(tmp_path / "z"),
        shape=(4,),
        chunks=(2,),
        dtype=values.dtype,
        dimension_names=["x"],
    )
    array[:] = values
    form = translate_array((tmp_path / "z" / "zarr.json").read_bytes())
    assert json.loads(form.zarray)["dtype"] == "<U3", "the raw view keeps zarr's own form"
    assert form.decoded_zarray is not None
    decoded = json.loads(form.decoded_zarray)
    assert (decoded["dtype"], decoded["shape"], decoded["chunks"]) == ("<U1", [4, 12], [2, 12])
    assert json.loads(form.decoded_zattrs)["_ARRAY_DIMENSIONS"] == ["x", "strlen12"]
    assert json.loads(form.zattrs)["_ARRAY_DIMENSIONS"] == ["x"]
    chunk = decode_chunk(form, (tmp_path / "z" / "c" / "1").read_bytes())
    assert len(chunk) == form.chunk_bytes == 2 * 12
    assert chunk == "ccé".encode().ljust(12, b"\0") + b"d".ljust(12, b"\0")
