"""What xarray writes with its default encodings, through every view, read by the programs
users run: netCDF-C's ``ncdump``, GDAL, and xarray on zarr-python 2.

The dataset has what a typical xarray dataset has: a float variable with NaN
missing values (xarray stores its ``_FillValue`` base64-encoded in v3
attributes), CF-encoded times, fixed-length strings, an integer with a fill
value.  It is written by xarray into a branch through the mount, committed and
tagged, then read back through ``tags/``, ``zarr2/`` and ``zarr2-decoded/``.
"""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from zarr.errors import ZarrUserWarning

from tests.test_legacy import ZARR2_PYTHON, _program

pytestmark = pytest.mark.fuse


def _dataset() -> xr.Dataset:
    t = np.arange(20.0, dtype="f4").reshape(4, 5)
    t[1, 2] = t[3, 0] = np.nan
    ds = xr.Dataset(
        {
            "t": (("time", "x"), t, {"units": "K", "long_name": "temperature"}),
            "n": ("x", np.array([1, -1, 3, 4, 5], dtype="i2")),
            "s": ("x", np.array(["a", "bb", "ccc", "d", "é"])),
        },
        coords={"time": pd.date_range("2000-01-01", periods=4), "x": np.arange(5)},
        attrs={"title": "xarray defaults"},
    )
    ds["n"].encoding["_FillValue"] = -1
    return ds


@pytest.fixture
def xarray_mount(tmp_path, mount_factory):
    import icechunk

    from icefs.store.sample import sample_storage

    icechunk.Repository.create(sample_storage(str(tmp_path / "repo")))
    m = mount_factory(tmp_path / "repo")
    main = m.mountpoint / "branches" / "main"
    _dataset().to_zarr(main / "ds", zarr_format=3, consolidated=False)
    # the README's own example: one float variable, nothing else (zarr 3 warns that it
    # consolidates v3 metadata, as xarray asks by default)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ZarrUserWarning)
        xr.Dataset({"t": ("x", np.arange(10.0))}).to_zarr(main / "readme", zarr_format=3)
    (main / ".icefs" / "commit").write_text("xarray")
    (main / ".icefs" / "tag").write_text("v")
    return m


def _ncdump(url: str, *args: str) -> str:
    done = subprocess.run(
        [_program("ncdump"), *args, url], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"ncdump exited {done.returncode}: {done.stderr}"
    return done.stdout


def _values(text: str, name: str) -> list[str]:
    data = text.split("data:", 1)[1]
    found = re.search(rf"^ {re.escape(name)} =\s*(.*?)\s*;", data, re.S | re.M)
    assert found, data
    return [v.strip() for v in re.split(r",\s*", found.group(1).strip())]


def _unescaped(word: str) -> str:
    """A string ncdump printed (quoted, bytes past ASCII as octal escapes), decoded."""
    raw = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), word.encode())
    return raw.decode("utf-8").strip('"')


def _number(word: str) -> float:
    return np.nan if word in ("_", "NaN", "NaNf") else float(word)


def test_every_variable_is_in_both_v2_views(xarray_mount):
    mnt = xarray_mount.mountpoint
    for view in ("zarr2", "zarr2-decoded"):
        for name in ("t", "n", "s", "time", "x"):
            assert (mnt / view / "tags" / "v" / "ds" / name / ".zarray").exists(), (view, name)
        assert (mnt / view / "tags" / "v" / "readme" / "t" / ".zarray").exists(), view
    attrs = json.loads((mnt / "zarr2" / "tags" / "v" / "ds" / "t" / ".zattrs").read_text())
    assert np.isnan(attrs["_FillValue"]), "decoded from xarray's base64 form"
    assert attrs["units"] == "K"
    assert "leaves out" not in xarray_mount.log_text()


def test_ncdump_reads_xarray_defaults(xarray_mount):
    ds = _dataset()
    url = f"file://{xarray_mount.mountpoint}/zarr2-decoded/tags/v/ds#mode=zarr,file"
    header = _ncdump(url, "-h")
    for line in (
        "float t(time, x) ;",
        "t:_FillValue = NaN",
        't:units = "K" ;',
        "short n(x) ;",
        "n:_FillValue = -1",
        "int64 time(time) ;",
        'time:units = "days since 2000-01-01 00:00:00" ;',
        "char s(x, strlen12) ;",  # 3 characters of at most 4 bytes of UTF-8
        ':title = "xarray defaults" ;',
    ):
        assert line in header, header
    full = _ncdump(url)
    t = np.array([_number(v) for v in _values(full, "t")])
    np.testing.assert_array_equal(t, ds["t"].values.ravel())
    assert [int(v) for v in _values(full, "n")] == [1, -1, 3, 4, 5]
    assert [int(v) for v in _values(full, "time")] == [0, 1, 2, 3]
    # char arrays print their bytes, non-ASCII ones as octal escapes: UTF-8 underneath
    shown = [_unescaped(v) for v in _values(full, "s")]
    assert shown == ["a", "bb", "ccc", "d", "é"]


def test_gdal_reads_the_float_variable(xarray_mount, tmp_path):
    ds = _dataset()
    for view in ("zarr2", "zarr2-decoded"):
        source = f'ZARR:"{xarray_mount.mountpoint / view / "tags" / "v" / "ds"}":/t'
        info = json.loads(
            subprocess.run(
                [_program("gdalinfo"), "-json", source],
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
            ).stdout
        )
        assert info["size"] == [5, 4]
        assert info["bands"][0]["noDataValue"] == "NaN"  # GDAL's JSON spells it so
        target = tmp_path / f"{view}.envi"
        subprocess.run(
            [_program("gdal_translate"), "-q", "-of", "ENVI", source, str(target)],
            check=True,
            timeout=120,
        )
        pixels = np.fromfile(target, dtype="<f4").reshape(4, 5)
        np.testing.assert_array_equal(pixels, ds["t"].values)


ZARR2_XARRAY = textwrap.dedent(
    """
    import json, sys
    import xarray as xr, zarr
    assert zarr.__version__.startswith("2."), zarr.__version__
    ds = xr.open_zarr(sys.argv[1], consolidated=True)
    print(json.dumps(ds.to_dict(data="list", encoding=False), default=str))
    """
)


def test_xarray_on_zarr2_reads_what_xarray_wrote(xarray_mount):
    """xarray on zarr-python 2, through the raw view, decodes what xarray on zarr 3 wrote."""
    shown = subprocess.run(
        [
            str(ZARR2_PYTHON),
            "-c",
            ZARR2_XARRAY,
            str(xarray_mount.mountpoint / "zarr2" / "tags" / "v" / "ds"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    got = xr.Dataset.from_dict(json.loads(shown))
    expected = xr.open_zarr(xarray_mount.mountpoint / "tags" / "v" / "ds", consolidated=False)
    assert set(got.variables) == set(expected.variables)
    for name in ("t", "n", "x"):
        np.testing.assert_array_equal(got[name].values, expected[name].values)
    assert list(got["s"].values) == list(expected["s"].values)
    assert [str(v)[:10] for v in got["time"].values] == [
        str(v)[:10] for v in expected["time"].values
    ]
    assert got["t"].attrs == expected["t"].attrs
    assert got.attrs == expected.attrs
