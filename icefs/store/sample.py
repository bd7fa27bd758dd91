"""Build the sample repository used by ``icefs demo``, the tests and the benchmarks.

This runs in the CLI process, never in the daemon, and uses Icechunk and zarr
directly (synchronously), as any program writing a repository would.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import icechunk
import numpy as np
import zarr

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["build_sample", "sample_storage"]


def sample_storage(path: str) -> icechunk.Storage:
    """Return the Icechunk storage for the local repository at *path*."""
    return icechunk.local_filesystem_storage(os.path.abspath(path))


def _temperature(times: int, lat: int, lon: int, offset: float) -> np.ndarray:
    t = np.arange(times, dtype="f4")[:, None, None]
    y = np.linspace(-60, 60, lat, dtype="f4")[None, :, None]
    x = np.linspace(0, 357.5, lon, dtype="f4")[None, None, :]
    return (15 + offset + 10 * np.cos(np.radians(y)) + np.sin(np.radians(x)) + 0.1 * t).astype("f4")


def build_sample(
    repository: icechunk.Repository,
    *,
    times: int = 8,
    lat: int = 45,
    lon: int = 90,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, str]:
    """Fill *repository* with the sample dataset; return the snapshot ids by role.

    History: on ``main``, "initial data" (tagged ``v1.0``) then "warmer second half";
    branch ``experiment`` from ``v1.0`` with "experiment: add humidity".
    """
    session = repository.writable_session("main")
    root = zarr.group(
        store=session.store, attributes={"title": "icefs sample dataset", "source": "synthetic"}
    )
    time_arr = root.create_array(
        "time",
        shape=(times,),
        chunks=(times,),
        dtype="i8",
        dimension_names=["time"],
        attributes={"units": "days since 2026-01-01", "calendar": "standard"},
    )
    time_arr[:] = np.arange(times)
    lat_arr = root.create_array(
        "lat",
        shape=(lat,),
        chunks=(lat,),
        dtype="f4",
        dimension_names=["lat"],
        attributes={"units": "degrees_north"},
    )
    lat_arr[:] = np.linspace(-60, 60, lat, dtype="f4")
    lon_arr = root.create_array(
        "lon",
        shape=(lon,),
        chunks=(lon,),
        dtype="f4",
        dimension_names=["lon"],
        attributes={"units": "degrees_east"},
    )
    lon_arr[:] = np.linspace(0, 357.5, lon, dtype="f4")
    temp = root.create_array(
        "temperature",
        shape=(times, lat, lon),
        chunks=(2, lat, max(1, lon // 2)),
        dtype="f4",
        dimension_names=["time", "lat", "lon"],
        attributes={"units": "degC", "long_name": "air temperature"},
        fill_value=float("nan"),
    )
    temp[:] = _temperature(times, lat, lon, 0.0)
    first = session.commit("initial data")
    progress(f"committed {first}: initial data")
    repository.create_tag("v1.0", first)

    session = repository.writable_session("main")
    temp = zarr.open_array(session.store, path="temperature", mode="r+")
    half = times // 2
    temp[half:] = _temperature(times, lat, lon, 2.0)[half:]
    temp.attrs["history"] = "second half warmed by 2 degC"
    second = session.commit("warmer second half")
    progress(f"committed {second}: warmer second half")

    repository.create_branch("experiment", first)
    session = repository.writable_session("experiment")
    root = zarr.open_group(session.store, mode="r+")
    hum = root.create_array(
        "humidity",
        shape=(times, lat, lon),
        chunks=(2, lat, max(1, lon // 2)),
        dtype="f4",
        dimension_names=["time", "lat", "lon"],
        attributes={"units": "%"},
    )
    hum[:] = np.full((times, lat, lon), 60.0, dtype="f4")
    third = session.commit("experiment: add humidity")
    progress(f"committed {third} on branch experiment")
    return {"v1.0": first, "main": second, "experiment": third}


def sample_exists(path: str) -> bool:
    """Whether an Icechunk repository is at *path* (the demo reuses it)."""
    return bool(icechunk.Repository.exists(sample_storage(path)))


def create_sample(path: str, progress: Callable[[str], None]) -> None:
    """Create the sample repository at *path*, saying each step to *progress*."""
    build_sample(icechunk.Repository.create(sample_storage(path)), progress=progress)
