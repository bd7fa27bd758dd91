"""Writes through the Zarr v2 view of a branch: v2 documents and chunks stored as v3.

The translation back (v2 `.zarray` to v3 `zarr.json`) row by row, then plain
file calls and `cp -r` on a real mount; zarr-python 2 itself writes in
tests/test_legacy.py.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from typing import Any

import icechunk
import numpy as np
import pytest
import zarr
from zarr.storage import LocalStore

from icefs.store.sample import sample_storage
from icefs.store.zarr2 import Untranslatable, array_from_v2, translate_array, with_attributes
from tests.test_zarr2 import build_legacy_repo


def _zarray(**fields) -> bytes:
    doc = {
        "zarr_format": 2,
        "shape": [4, 6],
        "chunks": [2, 3],
        "dtype": "<f8",
        "compressor": None,
        "fill_value": None,
        "order": "C",
        "filters": None,
    }
    doc.update(fields)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    "compressor",
    [
        None,
        {"id": "gzip", "level": 4},
        {"id": "zstd", "level": 2},
        {"id": "blosc", "cname": "zstd", "clevel": 3, "shuffle": 2, "blocksize": 0},
    ],
)
@pytest.mark.parametrize("dtype", ["<f8", ">i4", "|u1", "<c8"])
@pytest.mark.parametrize("order", ["C", "F"])
def test_v2_array_round_trips(compressor, dtype, order):
    """What a v2 writer wrote reads back the same through the view (but for the
    dimension separator, which the view always shows as '/')."""
    fill = [7.0, 0.0] if dtype == "<c8" else 7
    written = _zarray(compressor=compressor, dtype=dtype, order=order, fill_value=fill)
    v3 = array_from_v2(written, b'{"_ARRAY_DIMENSIONS": ["y", "x"], "units": "K"}')
    doc = json.loads(v3)
    assert doc["dimension_names"] == ["y", "x"]
    assert doc["attributes"] == {"units": "K"}
    assert doc["chunk_key_encoding"] == {"name": "default", "configuration": {"separator": "/"}}
    shown = translate_array(v3)
    assert json.loads(shown.zarray) == {**json.loads(written), "dimension_separator": "/"}
    assert json.loads(shown.zattrs) == {"_ARRAY_DIMENSIONS": ["y", "x"], "units": "K"}


def test_v2_strings_and_missing_fill_value():
    v3 = json.loads(
        array_from_v2(_zarray(dtype="|O", filters=[{"id": "vlen-utf8"}], fill_value=None), None)
    )
    assert v3["data_type"] == "string"
    assert [c["name"] for c in v3["codecs"]] == ["vlen-utf8"]
    assert json.loads(array_from_v2(_zarray(), None))["fill_value"] == 0.0, "v3 needs one"


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (b"{not json", "cannot read"),
        (_zarray(zarr_format=3), "zarr_format 2"),
        (_zarray(shape="x"), "cannot read"),
        (_zarray(compressor={"id": "lzma"}), "lzma"),
        (_zarray(filters=[{"id": "delta", "dtype": "<f8"}]), "filters"),
    ],
)
def test_v2_documents_v3_cannot_hold(document, reason):
    with pytest.raises(Untranslatable, match=reason):
        array_from_v2(document, None)


def test_attributes_replace_and_name_dimensions():
    v3 = array_from_v2(_zarray(), b'{"a": 1}')
    doc = json.loads(with_attributes(v3, b'{"b": 2, "_ARRAY_DIMENSIONS": ["p", "q"]}'))
    assert doc["attributes"] == {"b": 2}
    assert doc["dimension_names"] == ["p", "q"]
    with pytest.raises(Untranslatable):
        with_attributes(v3, b'{"_ARRAY_DIMENSIONS": ["one"]}')
    with pytest.raises(Untranslatable):
        with_attributes(v3, b"[1, 2]")


# -- on a mount ------------------------------------------------------------------------------


@pytest.fixture
def mounted(tmp_path, mount_factory, log_allows):
    log_allows.append("the Zarr v2 view leaves out")
    build_legacy_repo(tmp_path / "repo")
    return mount_factory(tmp_path / "repo"), tmp_path / "repo"


def _write(path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _status(mnt) -> dict[str, Any]:
    return json.loads((mnt / "branches" / "main" / ".icefs" / "status").read_text())


def test_plain_file_calls_make_an_array_and_commit(mounted):
    mount, repo = mounted
    mnt = mount.mountpoint
    v2 = mnt / "zarr2" / "branches" / "main"
    os.mkdir(v2 / "grp")
    _write(v2 / "grp" / ".zgroup", b'{"zarr_format": 2}')
    _write(v2 / "grp" / ".zattrs", b'{"title": "made in v2"}')
    os.mkdir(v2 / "grp" / "arr")
    _write(v2 / "grp" / "arr" / ".zarray", _zarray(dimension_separator="."))
    values = np.arange(24, dtype="<f8").reshape(4, 6)
    for i in range(2):
        for j in range(2):
            block = values[i * 2 : i * 2 + 2, j * 3 : j * 3 + 3]
            tmp = v2 / "grp" / "arr" / f".{i}.{j}.partial"  # written, then renamed into place
            _write(tmp, block.tobytes())
            os.replace(tmp, v2 / "grp" / "arr" / f"{i}.{j}")
    _write(v2 / "grp" / "arr" / ".zattrs", b'{"_ARRAY_DIMENSIONS": ["y", "x"]}')
    _write(v2 / ".zmetadata", b'{"zarr_consolidated_format": 1, "metadata": {}}')
    # at once in both views: the v3 tree, and the v2 view as it renders the tree
    group = zarr.open_group(LocalStore(mnt / "branches" / "main", read_only=True), mode="r")
    assert group["grp"].attrs["title"] == "made in v2"
    assert np.array_equal(np.asarray(group["grp/arr"][...]), values)
    assert group["grp/arr"].metadata.dimension_names == ("y", "x")
    assert sorted(os.listdir(v2 / "grp" / "arr")) == [".zarray", ".zattrs", "0", "1"]
    assert "grp/.zarray" not in json.loads((v2 / ".zmetadata").read_text())["metadata"]
    assert "grp/arr/.zarray" in json.loads((v2 / ".zmetadata").read_text())["metadata"]
    assert not (mnt / "branches" / "main" / ".zmetadata").exists(), "not stored"
    assert _status(mnt)["last_error"] is None
    (mnt / "branches" / "main" / ".icefs" / "commit").write_text("v2 writes")
    session = icechunk.Repository.open(sample_storage(str(repo))).readonly_session(branch="main")
    direct = zarr.open_group(session.store, mode="r")
    assert np.array_equal(np.asarray(direct["grp/arr"][...]), values)
    assert direct["grp"].attrs["title"] == "made in v2"


def test_bad_input_gets_einval_and_is_not_stored(mounted, log_allows):
    mount, _ = mounted
    mnt = mount.mountpoint
    v2 = mnt / "zarr2" / "branches" / "main"
    for name, data, reason in (
        ("a1", _zarray(shape="x"), "cannot read"),
        ("a2", _zarray(compressor={"id": "lzma"}), "lzma"),
        ("a3", b"{", "cannot read"),
    ):
        os.mkdir(v2 / name)
        with pytest.raises(OSError) as caught:
            _write(v2 / name / ".zarray", data)
        assert caught.value.errno == errno.EINVAL
        assert reason in _status(mnt)["last_error"]
        assert not (mnt / "branches" / "main" / name / "zarr.json").exists()
    with pytest.raises(OSError) as caught:  # a chunk outside the array's grid
        _write(v2 / "t" / "5", b"\0" * 12)
    assert caught.value.errno == errno.EINVAL
    with pytest.raises(OSError) as caught:  # coordinates the array does not have
        _write(v2 / "z" / "0.0.0", b"\0" * 48)
    assert caught.value.errno == errno.EINVAL
    assert _status(mnt)["changed_nodes"] == 0
    assert _status(mnt)["changed_chunks"] == 0


def test_chunks_and_attributes_before_their_array_wait(mounted):
    mount, _ = mounted
    mnt = mount.mountpoint
    v2 = mnt / "zarr2" / "branches" / "main"
    os.mkdir(v2 / "late")
    _write(v2 / "late" / "1.0", np.full((2, 3), 5.0).tobytes())
    _write(v2 / "late" / ".zattrs", b'{"k": "v"}')
    assert not (mnt / "branches" / "main" / "late").exists()
    _write(v2 / "late" / ".zarray", _zarray())
    array = zarr.open_array(LocalStore(mnt / "branches" / "main" / "late", read_only=True))
    assert array.attrs["k"] == "v"
    assert np.array_equal(array[2:4, 0:3], np.full((2, 3), 5.0))
    assert array[0, 0] == 0


def test_cp_r_rm_r_and_rewrites(mounted, tmp_path):
    mount, repo = mounted
    mnt = mount.mountpoint
    v2 = mnt / "zarr2" / "branches" / "main"
    # a v2 directory as zarr 2 lays it out, copied in with cp -r
    local = tmp_path / "local"
    (local / "sub" / "arr").mkdir(parents=True)
    (local / ".zgroup").write_text('{"zarr_format": 2}')
    (local / "sub" / ".zgroup").write_text('{"zarr_format": 2}')
    (local / "sub" / "arr" / ".zarray").write_text(
        _zarray(shape=[2, 3], chunks=[1, 3], dimension_separator="/").decode()
    )
    (local / "sub" / "arr" / "0").mkdir()
    (local / "sub" / "arr" / "1").mkdir()
    (local / "sub" / "arr" / "0" / "0").write_bytes(np.arange(3.0).tobytes())
    (local / "sub" / "arr" / "1" / "0").write_bytes(np.arange(3.0, 6.0).tobytes())
    subprocess.run(["cp", "-r", str(local), str(v2 / "copied")], check=True, timeout=60)
    array = zarr.open_array(LocalStore(mnt / "branches" / "main" / "copied" / "sub" / "arr"))
    assert np.array_equal(array[...], np.arange(6.0).reshape(2, 3))
    # rewrite attributes and one chunk through the view
    _write(v2 / "copied" / "sub" / "arr" / ".zattrs", b'{"note": "rewritten"}')
    _write(v2 / "copied" / "sub" / "arr" / "1" / "0", np.full(3, 9.0).tobytes())
    array = zarr.open_array(LocalStore(mnt / "branches" / "main" / "copied" / "sub" / "arr"))
    assert array.attrs["note"] == "rewritten"
    assert list(np.asarray(array[1])) == [9.0, 9.0, 9.0]
    # rm -r of an array of the committed data, and of the copied tree
    shutil.rmtree(v2 / "t")
    shutil.rmtree(v2 / "copied")
    assert not (mnt / "branches" / "main" / "t").exists()
    assert not (mnt / "branches" / "main" / "copied").exists()
    assert (mnt / "branches" / "main" / "z" / "zarr.json").exists()
    (mnt / "branches" / "main" / ".icefs" / "commit").write_text("cp and rm")
    session = icechunk.Repository.open(sample_storage(str(repo))).readonly_session(branch="main")
    names = set(zarr.open_group(session.store, mode="r").array_keys())
    assert "t" not in names
    assert "z" in names


def test_both_views_of_a_branch_see_each_others_writes(mounted):
    mount, _ = mounted
    mnt = mount.mountpoint
    v2 = mnt / "zarr2" / "branches" / "main" / "t"
    v3 = mnt / "branches" / "main" / "t" / "c"
    decoded = mnt / "zarr2-decoded" / "branches" / "main" / "t"
    assert (v2 / "1").read_bytes() == (v3 / "1").read_bytes()  # all read, all cached
    assert (decoded / "1").read_bytes() == (v3 / "1").read_bytes()
    for round_, view in enumerate((v3, v2, v3, v2)):
        data = np.full(3, float(round_), dtype="<f4").tobytes()
        _write(view / "1", data)
        assert (v2 / "1").read_bytes() == data
        assert (v3 / "1").read_bytes() == data
        assert (decoded / "1").read_bytes() == data


def test_each_view_answers_with_its_own_writer(mounted):
    """Each rendering of a branch has its own writer: moves and links between them are
    refused, as between file systems, and the decoded view takes no writes."""
    mount, _ = mounted
    mnt = mount.mountpoint
    v2 = mnt / "zarr2" / "branches" / "main" / "t"
    v3 = mnt / "branches" / "main" / "t" / "c"
    decoded = mnt / "zarr2-decoded" / "branches" / "main" / "t"
    _write(v2 / "scratch.tmp", b"x")
    with pytest.raises(OSError) as exc:
        os.rename(v2 / "scratch.tmp", v3 / "moved.tmp")
    assert exc.value.errno == errno.EXDEV
    with pytest.raises(OSError) as exc:
        os.rename(v2 / "scratch.tmp", decoded / "moved.tmp")
    assert exc.value.errno == errno.EXDEV
    for src, dst in ((v2 / "1", v2 / "copy"), (v3 / "1", v2 / "copy"), (v2 / "1", v3 / "cp")):
        with pytest.raises(OSError) as exc:
            os.link(src, dst)
        assert exc.value.errno == errno.EPERM, (src, dst)
    with pytest.raises(OSError) as exc:
        _write(decoded / "new.tmp", b"x")
    assert exc.value.errno == errno.EROFS
    os.rename(v2 / "scratch.tmp", v2 / "renamed.tmp")  # within a view, as before
    assert (v2 / "renamed.tmp").read_bytes() == b"x"
