"""Big listings other than chunk directories, at size: a group of 10k arrays, 10k branches,
and a history of 100k snapshots listed and read a page at a time."""

from __future__ import annotations

import asyncio
import json
import os

import icechunk
import pytest
import zarr
from zarr.core.buffer import default_buffer_prototype

from harness.mount import rss_mib, run_icefs
from icefs.fs.controltext import LOG_PAGE
from icefs.store.repo import MANY_REFS, Repo
from icefs.store.sample import build_long_history

ARRAYS = 10_000
BRANCHES = 10_000
SNAPSHOTS = 100_000  # built in about 2 minutes (`build_long_history`)
#: Snapshots per page when the test pages through the whole history.
PAGE = 10_000
#: What listing `snapshots/` twice may add to the daemon's memory: its entries, held while
#: the listing is open and by the kernel's inodes (measured here: 54 MiB for 100k, after
#: the log's pages; +100 MiB on a new mount in the benchmark).
HISTORY_MIB = 160
#: a budget far below what 10k arrays' listing and nodes would take unbounded
BUDGET = "2M"


def storage(path):
    return icechunk.local_filesystem_storage(str(path))


@pytest.fixture(scope="module")
def wide_repo(tmp_path_factory):
    """A repository whose group ``many`` holds ARRAYS arrays (one metadata document each,
    stored concurrently: creating them one by one through zarr takes 20 s)."""
    path = tmp_path_factory.mktemp("wide") / "repo"
    repo = icechunk.Repository.create(storage(path))
    session = repo.writable_session("main")
    group = zarr.group(store=session.store).create_group("many")
    group.create_array("a00000", shape=(4,), chunks=(4,), dtype="i1")

    async def fill():
        meta = await session.store.get("many/a00000/zarr.json", default_buffer_prototype())
        assert meta is not None
        await asyncio.gather(
            *(session.store.set(f"many/a{i:05d}/zarr.json", meta) for i in range(1, ARRAYS))
        )

    asyncio.run(fill())
    session.commit(f"{ARRAYS} arrays")
    return path


def test_a_group_of_10k_arrays_lists_within_the_budget(wide_repo, mount_factory):
    m = mount_factory(wide_repo, "--metadata-memory", BUDGET)
    for where in ("branches/main/many", "zarr2/branches/main/many"):
        names = os.listdir(m.mountpoint / where)
        want = {f"a{i:05d}" for i in range(ARRAYS)}
        assert want <= set(names), where
        assert len(names) == ARRAYS + (2 if where.startswith("zarr2") else 1)  # + metadata
        for name in sorted(want)[:: ARRAYS // 50]:
            assert os.path.isdir(m.mountpoint / where / name)
    stats = json.loads((m.mountpoint / ".icefs" / "stats").read_text())["metadata_memory"]
    assert stats["used_bytes"] <= stats["limit_bytes"] == 2 << 20
    assert stats["evictions"] > 0, "the budget was reached, and held"


@pytest.fixture(scope="module")
def branchy_repo(tmp_path_factory):
    path = tmp_path_factory.mktemp("branchy") / "repo"
    repo = icechunk.Repository.create(storage(path))
    tip = repo.lookup_branch("main")
    for i in range(BRANCHES):
        repo.create_branch(f"b{i:05d}", tip)
    return path


def test_10k_branches_list_and_refresh_in_one_read(branchy_repo, mount_factory, bridge):
    m = mount_factory(branchy_repo)
    names = os.listdir(m.mountpoint / "branches")
    assert len(names) == BRANCHES + 1
    assert "b09999" in names
    assert os.listdir(m.mountpoint / "branches" / "b04567") == []
    # a refresh reads every tip at once: no lookup per branch
    repository = icechunk.Repository.open(storage(branchy_repo))
    asked: list[str] = []
    lookup = repository.lookup_branch

    def counted(name):
        asked.append(name)
        return lookup(name)

    repository.lookup_branch = counted  # type: ignore[method-assign]
    repo = Repo(repository, bridge, "test")
    assert BRANCHES > MANY_REFS
    branches, tags = repo._refs_sync()  # what Repo.refs runs in a worker thread
    assert len(branches) == BRANCHES + 1
    assert tags == {}
    assert asked == []


@pytest.fixture(scope="module")
def long_history(tmp_path_factory):
    path = tmp_path_factory.mktemp("history") / "repo"
    return path, build_long_history(str(path), SNAPSHOTS)


def test_a_long_history_is_read_a_page_at_a_time(long_history, mount_factory):
    path, ids = long_history
    assert len(ids) == SNAPSHOTS + 1
    m = mount_factory(path)
    main = m.mountpoint / "branches" / "main"
    lines = (main / ".icefs" / "log").read_text().splitlines()
    assert [line.split()[0] for line in lines[:LOG_PAGE]] == ids[:LOG_PAGE]
    assert lines[LOG_PAGE:] == [f"... older snapshots: icefs log --after {ids[LOG_PAGE - 1]}"]
    # pages through the query file: every snapshot once, in order
    seen: list[str] = []
    after = None
    while True:
        args = ["log", "-C", str(m.mountpoint), "--json", "-n", str(PAGE)]
        result = run_icefs(*args, *(["--after", after] if after else []))
        assert result.returncode == 0, result.stderr
        page = [doc["id"] for doc in json.loads(result.stdout)]
        if not page:
            break
        seen += page
        after = page[-1]
    assert seen == ids
    # the same pages without a mount
    result = run_icefs("log", "--repo", str(path), "--json", "-n", "3", "--after", ids[5])
    assert [doc["id"] for doc in json.loads(result.stdout)] == ids[6:9]
    # every snapshot is a directory of snapshots/, listed within a bounded memory
    start = rss_mib(m.proc.pid)
    for _ in range(2):
        assert set(os.listdir(m.mountpoint / "snapshots")) == set(ids)
    grown = rss_mib(m.proc.pid) - start
    print(f"daemon RSS grew {grown:.0f} MiB listing {len(ids):,} snapshots twice")
    assert grown <= HISTORY_MIB, f"{grown:.0f} MiB"
    oldest = m.mountpoint / "snapshots" / ids[-2]
    assert json.loads((oldest / "zarr.json").read_text())["node_type"] == "group"
