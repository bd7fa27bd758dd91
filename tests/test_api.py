"""The Python API: ``with icefs.mount(...) as m:`` mounts, waits, and unmounts on exit."""

from __future__ import annotations

import os

import icechunk
import numpy as np
import pytest
import xarray as xr
import zarr

import icefs
from icefs.store.sample import sample_storage


@pytest.mark.fuse
def test_mount_read_write_commit_and_unmount(one_array_repo, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with icefs.mount(one_array_repo, mnt, refresh=0.5, cache_dir=tmp_path / "cache") as m:
        assert os.path.ismount(mnt)
        assert m.status()["ref"] == "main"
        assert sorted(p.name for p in m.tag("v1").iterdir()) == ["a", "zarr.json"]
        ds = xr.Dataset({"t": ("x", np.arange(5.0))})
        ds.to_zarr(m.branch("main") / "ds", zarr_format=3, consolidated=False)
        sid = m.commit("add ds")
        assert sid is not None
        assert m.commit("nothing") is None
        (m.branch("main") / "left.txt").write_text("uncommitted scratch")
        zarr.open_array(zarr.storage.LocalStore(m.branch("main")), path="a", mode="r+")[:] = 7
    assert not os.path.ismount(mnt), "unmounted on exit"
    repo = icechunk.Repository.open(sample_storage(str(one_array_repo)))
    history = [info.message for info in repo.ancestry(branch="main")]
    assert history[1] == "add ds"
    assert history[0].startswith("icefs: automatic commit at unmount"), "on_unmount=commit"
    store = repo.readonly_session(branch="main").store
    np.testing.assert_array_equal(zarr.open_array(store, path="a")[:], [7, 7, 7, 7])


@pytest.mark.fuse
def test_settings_and_errors(one_array_repo, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with pytest.raises(icefs.SetupError, match="no setting 'bogus'"):
        icefs.mount(one_array_repo, mnt, bogus=1)
    with pytest.raises(icefs.SetupError, match="refresh"):
        icefs.mount(one_array_repo, mnt, refresh=-1)
    with pytest.raises(icefs.SetupError, match="no repository"):
        icefs.mount(tmp_path / "nothing", mnt)
    m = icefs.mount(
        one_array_repo, mnt, read_only=True, on_unmount="discard", cache_dir=tmp_path / "cache"
    )
    try:
        with pytest.raises(OSError):
            (m.branch() / "x.txt").write_text("x")
    finally:
        assert m.unmount() == []
    assert not m.mounted
    assert m.unmount() == [], "a second unmount does nothing"
