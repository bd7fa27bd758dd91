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

__all__ = ["build_long_history", "build_sample", "build_virtual_grid", "sample_storage"]


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


#: Bytes of the one file the references of `build_virtual_grid` point into.
VIRTUAL_SOURCE = 4096


def build_virtual_grid(path: str, rows: int, columns: int) -> str:
    """Make a local repository at *path*/repo whose tag ``v1`` holds ``a``: *rows* x
    *columns* one-byte virtual chunks (grid 1 x 1: *rows* chunk directories), every
    reference pointing into *path*/src.bin; return the container's URL prefix.

    Icechunk makes millions of references in seconds: arrays of the sizes users meet
    (tests and benchmarks of scale), without writing their chunks."""
    from icechunk import VirtualChunkSpec

    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "src.bin"), "wb") as f:
        f.write(bytes(range(256)) * (VIRTUAL_SOURCE // 256))
    prefix = f"file://{os.path.abspath(path)}/"
    config = icechunk.RepositoryConfig.default()
    config.set_virtual_chunk_container(
        icechunk.VirtualChunkContainer(prefix, icechunk.local_filesystem_store(path))
    )
    repo = icechunk.Repository.create(sample_storage(os.path.join(path, "repo")), config=config)
    session = repo.writable_session("main")
    zarr.create_array(
        session.store, name="a", shape=(rows, columns), chunks=(1, 1), dtype="u1", fill_value=0
    )
    location = f"{prefix}src.bin"
    for row in range(rows):
        specs = [
            VirtualChunkSpec(
                index=[row, j],
                location=location,
                offset=(row + j) % VIRTUAL_SOURCE,
                length=1,
            )
            for j in range(columns)
        ]
        session.store.set_virtual_refs("a", specs, validate_containers=False)
    repo.create_tag("v1", session.commit(f"{rows * columns} virtual chunks"))
    return prefix


def build_long_history(path: str, snapshots: int) -> list[str]:
    """Make a local repository at *path* whose branch ``main`` has *snapshots* commits
    after its root (empty ones, but for the first: a group); return the ids of its whole
    history, newest first (the root last).

    A current-format repository rewrites its list of every snapshot at each commit,
    so committing 100k one at a time takes hours.  This commits in the first format
    (one file per snapshot, constant cost: about a millisecond each) and upgrades the
    repository once at the end, as ``icechunk`` upgrades any old repository: the
    result is a current-format repository with that history.
    """
    repo = icechunk.Repository.create(sample_storage(path), spec_version=1)
    repo.save_config()  # the upgrade replaces it (and logs an error if there is none)
    for i in range(snapshots):
        session = repo.writable_session("main")
        if not i:
            zarr.group(store=session.store)
        session.commit(f"commit {i}", allow_empty=bool(i))
    repo = icechunk.upgrade_icechunk_repository(repo, dry_run=False)
    return [s.id for s in repo.ancestry(branch="main")]
