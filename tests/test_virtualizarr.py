"""A VirtualiZarr dataset made from netCDF-4 files, as users make them, through the mount.

Two netCDF-4 files are written with HDF5's default compression (shuffle + deflate),
VirtualiZarr (2.x, its HDF parser) turns them into virtual references and writes
those to an Icechunk repository, and the mount reads them back: xarray through
``tags/`` equals the original files, and ``ncdump -v`` through the decoded view
prints the same values (Debian's netCDF-C has no codec plugins: the view decodes
``numcodecs.shuffle`` + ``numcodecs.zlib`` itself).
"""

from __future__ import annotations

import json
import os
from typing import Any

import icechunk
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from tests.test_xarray_data import _ncdump, _number, _values

pytestmark = pytest.mark.fuse


def _netcdf4_files(tmp_path) -> list[Any]:
    paths = []
    for i in range(2):
        t = np.arange(2 * 6 * 8, dtype="f4").reshape(2, 6, 8) + 100 * i
        t[0, 1, 1] = np.nan
        ds = xr.Dataset(
            {"t": (("time", "y", "x"), t, {"units": "K"})},
            coords={
                "time": pd.date_range(f"2000-01-0{1 + 2 * i}", periods=2),
                "y": np.arange(6.0),
                "x": np.arange(8.0),
            },
        )
        path = tmp_path / "files" / f"part{i}.nc"
        path.parent.mkdir(exist_ok=True)
        ds.to_netcdf(
            path,
            engine="h5netcdf",
            encoding={"t": {"compression": "gzip", "shuffle": True, "chunksizes": (1, 3, 4)}},
        )
        paths.append(path)
    return paths


def _virtual_repository(tmp_path, paths) -> str:
    from obspec_utils.registry import ObjectStoreRegistry
    from obstore.store import LocalStore
    from virtualizarr import open_virtual_dataset
    from virtualizarr.parsers import HDFParser

    prefix = f"file://{tmp_path / 'files'}/"
    registry = ObjectStoreRegistry({"file://": LocalStore()})
    parts = [
        open_virtual_dataset(
            f"file://{p}",
            parser=HDFParser(),
            registry=registry,
            loadable_variables=["time", "y", "x"],
        )
        for p in paths
    ]
    combined = xr.concat(
        parts, dim="time", coords="minimal", compat="override", combine_attrs="override"
    )
    config = icechunk.RepositoryConfig.default()
    config.set_virtual_chunk_container(
        icechunk.VirtualChunkContainer(prefix, icechunk.local_filesystem_store(prefix[7:]))
    )
    repo = icechunk.Repository.create(
        icechunk.local_filesystem_storage(str(tmp_path / "repo")),
        config=config,
        authorize_virtual_chunk_access=icechunk.containers_credentials(
            {prefix: icechunk.credentials.LocalFileSystemAccess}
        ),
    )
    session = repo.writable_session("main")
    combined.vz.to_icechunk(session.store)
    repo.create_tag("v1", session.commit("virtual references to netCDF-4 files"))
    return prefix


def test_virtualizarr_netcdf4_through_the_mount(tmp_path, mount_factory):
    paths = _netcdf4_files(tmp_path)
    prefix = _virtual_repository(tmp_path, paths)
    m = mount_factory(tmp_path / "repo", "--virtual", prefix)
    tag = m.mountpoint / "tags" / "v1"
    codecs = [c["name"] for c in json.loads((tag / "t" / "zarr.json").read_text())["codecs"]]
    assert codecs == ["bytes", "numcodecs.shuffle", "numcodecs.zlib"], "HDF5's default"
    chunk = tag / "t" / "c" / "3" / "1" / "1"
    assert "user.icefs.location" in os.listxattr(chunk), "a virtual chunk"

    original = xr.concat([xr.open_dataset(p, engine="h5netcdf") for p in paths], dim="time")
    through = xr.open_zarr(tag, consolidated=False)
    xr.testing.assert_identical(through.load(), original.load())

    # the raw v2 view expresses the chain; the decoded view undoes it for netCDF-C
    zarray = json.loads((m.mountpoint / "zarr2" / "tags" / "v1" / "t" / ".zarray").read_text())
    assert zarray["filters"] == [{"elementsize": 4, "id": "shuffle"}]
    assert zarray["compressor"] == {"id": "zlib", "level": 4}
    url = f"file://{m.mountpoint}/zarr2-decoded/tags/v1#mode=zarr,file"
    printed = np.array([_number(v) for v in _values(_ncdump(url, "-v", "t"), "t")])
    np.testing.assert_array_equal(printed, original["t"].values.ravel())
