"""The legacy programs users run, on the Zarr v2 renderings of a real mount.

netCDF-C's `ncdump` and GDAL come from Debian; zarr-python 2 (with an xarray
that reads it) lives in its own venv, `.tools/zarr2`: `scripts/bootstrap.sh
test` installs all three.  Values are compared with what zarr 3 reads through
Icechunk directly.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import icechunk
import numpy as np
import pytest
import zarr

from icefs.store.sample import sample_storage
from tests.test_zarr2 import build_legacy_repo

ZARR2_PYTHON = Path(__file__).resolve().parent.parent / ".tools" / "zarr2" / "bin" / "python"


def _program(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is required: scripts/bootstrap.sh test installs it")
    return path


def _direct(repo: Path, tag: str) -> zarr.Group:
    session = icechunk.Repository.open(sample_storage(str(repo))).readonly_session(tag=tag)
    return zarr.open_group(session.store, mode="r")


@pytest.fixture
def legacy(tmp_path, mount_factory, log_allows):
    log_allows.append("the Zarr v2 view leaves out")
    build_legacy_repo(tmp_path / "repo")
    return mount_factory(tmp_path / "repo"), tmp_path / "repo"


def _ncdump(url: str, *args: str) -> str:
    return subprocess.run(
        [_program("ncdump"), *args, url], capture_output=True, text=True, timeout=120, check=True
    ).stdout


def _ncdump_values(url: str, name: str) -> np.ndarray:
    """The values `ncdump -v` prints for *name* ('_' for the fill value: NaN)."""
    data = _ncdump(url, "-v", name).split("data:", 1)[1]
    found = re.search(rf"^ {re.escape(name)} =\s*(.*?)\s*;", data, re.S | re.M)
    assert found, data
    return np.array([np.nan if v.strip() == "_" else float(v) for v in found.group(1).split(",")])


def _url(path: Path) -> str:
    return f"file://{path}#mode=zarr,file"


def test_ncdump_reads_uncompressed_raw_and_compressed_decoded(legacy):
    mount, repo = legacy
    direct = _direct(repo, "nc")
    raw = _url(mount.mountpoint / "zarr2" / "tags" / "nc")
    header = _ncdump(raw, "-h")
    for line in (
        ':title = "legacy" ;',
        ":version = 3",
        ":scale = 0.5 ;",
        't:units = "K" ;',
        "t:count = 7",
        "float t(x) ;",
        "int x(x) ;",
        "double z(y, x) ;",
        "x = 6 ;",
        "y = 4 ;",
    ):
        assert line in header, header
    # uncompressed arrays (a coordinate, attributes, a fill value) through the raw view
    for name in ("x", "y", "t", "sparse"):
        expected = np.asarray(direct[name][...], dtype="f8")
        assert np.array_equal(_ncdump_values(raw, name), expected), name
    assert list(np.asarray(direct["sparse"][3:])) == [-9.0] * 3, (
        "the missing chunk reads as the fill value"
    )
    # Debian's netCDF-C has no codec plugins: compressed arrays only read right decoded
    decoded = _url(mount.mountpoint / "zarr2-decoded" / "tags" / "v1")
    assert "double z(y, x) ;" in _ncdump(decoded, "-h")
    for name in ("z", "g", "b", "t"):
        expected = np.asarray(direct[name][...], dtype="f8").ravel()
        assert np.array_equal(_ncdump_values(decoded, name), expected), name
    assert not np.array_equal(_ncdump_values(raw, "z"), np.asarray(direct["z"][...]).ravel()), (
        "the raw view of a compressed array is what the decoded view is for"
    )


def test_gdal_translate_of_a_2d_array(legacy, tmp_path):
    mount, repo = legacy
    direct = _direct(repo, "v1")
    for rendering in ("zarr2", "zarr2-decoded"):
        for name in ("z", "g"):
            source = f'ZARR:"{mount.mountpoint / rendering / "tags" / "v1"}":/{name}'
            info = subprocess.run(
                [_program("gdalinfo"), "-json", source],
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
            ).stdout
            assert json.loads(info)["size"] == [6, 4]
            target = tmp_path / f"{rendering}-{name}.envi"
            subprocess.run(
                [_program("gdal_translate"), "-q", "-of", "ENVI", source, str(target)],
                check=True,
                timeout=120,
            )
            values = np.asarray(direct[name][...])
            pixels = np.fromfile(target, dtype=values.dtype.newbyteorder("<")).reshape(4, 6)
            assert np.array_equal(pixels, values), (rendering, name)


ZARR2_READ = textwrap.dedent(
    """
    import json, sys
    import numpy as np, xarray as xr, zarr
    assert zarr.__version__.startswith("2."), zarr.__version__
    root, out = sys.argv[1], sys.argv[2]
    group = zarr.open_consolidated(root, mode="r")
    arrays = {name: group[name][...] for name in group.array_keys()}
    ds = xr.open_zarr(root, consolidated=True, decode_cf=False)
    for name, var in ds.variables.items():
        arrays["xr:" + name] = var.values
    np.savez(out, **{k: np.asarray(v) for k, v in arrays.items()})
    print(json.dumps(sorted(arrays)))
    """
)


def test_zarr2_and_xarray_read_every_array_of_the_sample(sample_repo, mount_factory, tmp_path):
    if not ZARR2_PYTHON.exists():
        pytest.fail(f"{ZARR2_PYTHON} is required: scripts/bootstrap.sh test installs it")
    path, _ = sample_repo
    mount = mount_factory(path)
    for ref, tag in (("tags/v1.0", "v1.0"), ("branches/main", None)):
        out = tmp_path / "arrays.npz"
        names = json.loads(
            subprocess.run(
                [str(ZARR2_PYTHON), "-c", ZARR2_READ, str(mount.mountpoint / "zarr2" / ref), out],
                capture_output=True,
                text=True,
                timeout=300,
                check=True,
            ).stdout
        )
        repo = icechunk.Repository.open(sample_storage(str(path)))
        session = repo.readonly_session(tag=tag) if tag else repo.readonly_session(branch="main")
        direct = zarr.open_group(session.store, mode="r")
        expected = sorted(direct.array_keys())
        assert expected
        assert [n for n in names if ":" not in n] == expected
        got = np.load(out)
        for name in expected:
            values = np.asarray(direct[name][...])
            for key in (name, "xr:" + name):
                assert got[key].dtype == values.dtype, key
                assert np.array_equal(got[key], values, equal_nan=True), key


ZARR2_WRITE = textwrap.dedent(
    """
    import sys
    import numpy as np, xarray as xr, zarr
    root = sys.argv[1]
    group = zarr.open_group(root, mode="a")
    array = group.create_dataset(
        "written", data=np.arange(30, dtype="<i4").reshape(5, 6), chunks=(2, 4)
    )
    array.attrs["_ARRAY_DIMENSIONS"] = ["rows", "cols"]
    array.attrs["by"] = "zarr 2"
    ds = xr.Dataset(
        {"temp": (("t", "x"), np.linspace(0, 1, 12, dtype="f4").reshape(3, 4))},
        coords={"x": np.arange(4.0)},
        attrs={"title": "from xarray on zarr 2"},
    )
    ds.to_zarr(root + "/ds", mode="w", consolidated=True)
    print(xr.open_zarr(root + "/ds").temp.values.sum())
    """
)


def test_zarr2_and_xarray_write_into_a_branch(legacy):
    if not ZARR2_PYTHON.exists():
        pytest.fail(f"{ZARR2_PYTHON} is required: scripts/bootstrap.sh test installs it")
    mount, repo = legacy
    mnt = mount.mountpoint
    result = subprocess.run(
        [str(ZARR2_PYTHON), "-c", ZARR2_WRITE, str(mnt / "zarr2" / "branches" / "main")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # in the v3 tree at once, then committed as usual
    v3 = zarr.open_group(str(mnt / "branches" / "main"), mode="r")
    assert np.array_equal(np.asarray(v3["written"][...]), np.arange(30).reshape(5, 6))
    (mnt / "branches" / "main" / ".icefs" / "commit").write_text("written by zarr 2")
    session = icechunk.Repository.open(sample_storage(str(repo))).readonly_session(branch="main")
    direct = zarr.open_group(session.store, mode="r")
    written = direct["written"]
    assert np.array_equal(np.asarray(written[...]), np.arange(30, dtype="<i4").reshape(5, 6))
    assert written.metadata.dimension_names == ("rows", "cols")
    assert written.attrs["by"] == "zarr 2"
    assert direct["ds"].attrs["title"] == "from xarray on zarr 2"
    expected = np.linspace(0, 1, 12, dtype="f4").reshape(3, 4)
    assert np.array_equal(np.asarray(direct["ds/temp"][...]), expected)
    assert direct["ds/temp"].metadata.dimension_names == ("t", "x")
    assert np.array_equal(np.asarray(direct["ds/x"][...]), np.arange(4.0))


def test_nccopy_writes_netcdf_into_a_branch(legacy, tmp_path):
    mount, repo = legacy
    mnt = mount.mountpoint
    cdl = tmp_path / "t.cdl"
    cdl.write_text(
        "netcdf t {\ndimensions:\n  x = 5 ;\nvariables:\n  double v(x) ;\n"
        '    v:units = "K" ;\n  int x(x) ;\n// global attributes:\n  :source = "nccopy" ;\n'
        "data:\n  v = 1.5, 2.5, -3, 4, 0.25 ;\n  x = 10, 20, 30, 40, 50 ;\n}\n"
    )
    subprocess.run([_program("ncgen"), "-4", "-o", str(tmp_path / "t.nc"), str(cdl)], check=True)
    target = _url(mnt / "zarr2" / "branches" / "main" / "nc")
    subprocess.run([_program("nccopy"), str(tmp_path / "t.nc"), target], check=True, timeout=120)
    assert np.array_equal(_ncdump_values(target, "v"), [1.5, 2.5, -3, 4, 0.25])
    status = json.loads((mnt / "branches" / "main" / ".icefs" / "status").read_text())
    assert status["last_error"] is None, status["last_error"]
    (mnt / "branches" / "main" / ".icefs" / "commit").write_text("nccopy")
    session = icechunk.Repository.open(sample_storage(str(repo))).readonly_session(branch="main")
    direct = zarr.open_group(session.store, mode="r")
    assert np.array_equal(np.asarray(direct["nc/v"][...]), [1.5, 2.5, -3, 4, 0.25])
    assert list(np.asarray(direct["nc/x"][...])) == [10, 20, 30, 40, 50]
    assert direct["nc/v"].attrs["units"] == "K"
    assert direct["nc/v"].metadata.dimension_names == ("x",)
