"""Branch and tag management through real mounts and the CLI, checked with Icechunk's API."""

from __future__ import annotations

import errno
import json
import os
import time

import icechunk
import pytest
import zarr
from zarr.storage import LocalStore

from harness.mount import run_icefs
from icefs.store.sample import sample_storage


def api(path):
    return icechunk.Repository.open(sample_storage(str(path)))


def write_to(path, text):
    with open(path, "w") as f:
        f.write(text)


def wait_until(predicate, what, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_mkdir_and_rmdir_branches(fresh_sample, mount_factory):
    path, ids = fresh_sample
    m = mount_factory(path)
    branches = m.mountpoint / "branches"
    os.mkdir(branches / "dev")
    assert api(path).lookup_branch("dev") == ids["main"], "at the default branch's tip"
    assert sorted(os.listdir(branches)) == ["dev", "experiment", "main"]
    os.mkdir(branches / "feature%2Fx")
    assert "feature/x" in api(path).list_branches()
    with pytest.raises(FileExistsError):
        os.mkdir(branches / "dev")
    os.rmdir(branches / "dev")
    assert "dev" not in api(path).list_branches()
    assert "dev" not in os.listdir(branches)
    with pytest.raises(OSError) as info:
        os.rmdir(branches / "main")
    assert info.value.errno == errno.EPERM
    assert (
        "default branch" in json.loads((m.mountpoint / ".icefs/status").read_text())["last_error"]
    )
    # uncommitted changes protect a branch
    zarr.open_group(LocalStore(branches / "experiment"), mode="r+").attrs["x"] = 1
    with pytest.raises(OSError) as info:
        os.rmdir(branches / "experiment")
    assert info.value.errno == errno.EPERM
    assert "experiment" in api(path).list_branches()


def test_default_branch_option(fresh_sample, mount_factory):
    path, ids = fresh_sample
    m = mount_factory(path, "--default-branch", "experiment")
    os.mkdir(m.mountpoint / "branches" / "from-exp")
    assert api(path).lookup_branch("from-exp") == ids["experiment"]
    with pytest.raises(OSError) as info:
        os.rmdir(m.mountpoint / "branches" / "experiment")
    assert info.value.errno == errno.EPERM


def test_branch_and_tag_files_on_every_view(fresh_sample, mount_factory):
    path, ids = fresh_sample
    m = mount_factory(path)
    mnt = m.mountpoint
    write_to(mnt / "tags/v1.0/.icefs/branch", "from-tag\n")
    assert api(path).lookup_branch("from-tag") == ids["v1.0"]
    write_to(mnt / f"snapshots/{ids['experiment']}/.icefs/branch", "from-snap")
    assert api(path).lookup_branch("from-snap") == ids["experiment"]
    write_to(mnt / "branches/main/.icefs/tag", "v2.0")
    assert api(path).lookup_tag("v2.0") == ids["main"]
    assert "v2.0" in os.listdir(mnt / "tags")
    # a dirty branch tags its last commit, not its uncommitted state
    zarr.open_group(LocalStore(mnt / "branches/main"), mode="r+").attrs["dirty"] = True
    write_to(mnt / "branches/main/.icefs/tag", "v2.1")
    assert api(path).lookup_tag("v2.1") == ids["main"]
    # errors: existing names, invalid names, a deleted tag's name
    for target, name, code in [
        ("tags/v1.0/.icefs/tag", "v2.0", errno.EEXIST),
        ("tags/v1.0/.icefs/branch", "main", errno.EEXIST),
        ("tags/v1.0/.icefs/branch", " spaced ", errno.EINVAL),
        ("tags/v1.0/.icefs/tag", "bad\tname", errno.EINVAL),
        ("tags/v1.0/.icefs/tag", "..", errno.EINVAL),
    ]:
        with pytest.raises(OSError) as info:
            write_to(mnt / target, name)
        assert info.value.errno == code, (target, name)
        assert json.loads((mnt / ".icefs/status").read_text())["last_error"]
    os.rmdir(mnt / "tags/v2.0")
    assert "v2.0" not in api(path).list_tags()
    with pytest.raises(OSError) as info:
        write_to(mnt / "branches/main/.icefs/tag", "v2.0")
    assert info.value.errno == errno.EEXIST, "Icechunk never reuses a deleted tag's name"


def test_tags_and_snapshots_directory_rules(fresh_sample, mount_factory):
    path, ids = fresh_sample
    m = mount_factory(path)
    with pytest.raises(OSError) as info:
        os.mkdir(m.mountpoint / "tags" / "new")
    assert info.value.errno == errno.EPERM
    with pytest.raises(OSError) as info:
        os.mkdir(m.mountpoint / "snapshots" / "new")
    assert info.value.errno == errno.EPERM
    with pytest.raises(OSError) as info:
        os.rmdir(m.mountpoint / "snapshots" / ids["v1.0"])
    assert info.value.errno == errno.EPERM
    ro = mount_factory(path, "--read-only", name="ro")
    with pytest.raises(OSError) as info:
        write_to(ro.mountpoint / "tags/v1.0/.icefs/tag", "nope")
    assert info.value.errno == errno.EROFS
    with pytest.raises(OSError) as info:
        os.mkdir(ro.mountpoint / "branches" / "nope")
    assert info.value.errno == errno.EROFS


def test_changes_by_another_process_and_estale(fresh_sample, mount_factory):
    path, ids = fresh_sample
    m = mount_factory(path, "--refresh", "0.2")
    branches = m.mountpoint / "branches"
    repository = api(path)
    repository.create_branch("elsewhere", ids["v1.0"])
    repository.create_tag("t-else", ids["main"])
    wait_until(lambda: "elsewhere" in os.listdir(branches), "new branch shows")
    wait_until(lambda: "t-else" in os.listdir(m.mountpoint / "tags"), "new tag shows")
    f = open(branches / "elsewhere" / "zarr.json", "rb")
    g = open(m.mountpoint / "tags" / "t-else" / "zarr.json", "rb")
    try:
        repository.delete_branch("elsewhere")
        repository.delete_tag("t-else")
        wait_until(lambda: "elsewhere" not in os.listdir(branches), "deleted branch goes")
        wait_until(lambda: "t-else" not in os.listdir(m.mountpoint / "tags"), "deleted tag goes")
        for handle in (f, g):
            with pytest.raises(OSError) as info:
                os.pread(handle.fileno(), 100, 0)
            assert info.value.errno == errno.ESTALE
    finally:
        f.close()
        g.close()
    wait_until(lambda: not (branches / "elsewhere").exists(), "lookups of it fail")


def test_history(fresh_sample, mount_factory):
    path, ids = fresh_sample
    m = mount_factory(path)
    snaps = os.listdir(m.mountpoint / "snapshots")
    assert set(snaps) == {*ids.values(), "1CECHNKREP0F1RSTCMT0"}
    log = (m.mountpoint / "tags/v1.0/.icefs/log").read_text().splitlines()
    assert [line.split()[0] for line in log] == [ids["v1.0"], "1CECHNKREP0F1RSTCMT0"]
    old = zarr.open_array(
        LocalStore(m.mountpoint / f"snapshots/{ids['v1.0']}"), path="temperature", mode="r"
    )
    direct = zarr.open_array(
        api(path).readonly_session(snapshot_id=ids["v1.0"]).store, path="temperature", mode="r"
    )
    assert (old[:] == direct[:]).all()
    assert "history" not in old.attrs, "that version's metadata"


@pytest.mark.parametrize("mode", ["mount", "repo"])
def test_cli_branch_tag_log(fresh_sample, mount_factory, mode):
    path, ids = fresh_sample
    m = mount_factory(path)
    where = ["-C", str(m.mountpoint / "branches")] if mode == "mount" else ["--repo", str(path)]

    def icefs(*args):
        return (
            run_icefs(*args[:2], *where, *args[2:])
            if args[0] != "log"
            else run_icefs(*args, *where)
        )

    result = icefs("branch", "list", "--json")
    assert result.returncode == 0, result.stderr
    listed = {b["name"]: b["snapshot_id"] for b in json.loads(result.stdout)}
    assert listed == {"main": ids["main"], "experiment": ids["experiment"]}
    assert icefs("branch", "create", "b1").returncode == 0
    assert api(path).lookup_branch("b1") == ids["main"]
    result = icefs("branch", "create", "b2", "--from", "v1.0", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["snapshot_id"] == ids["v1.0"]
    assert api(path).lookup_branch("b2") == ids["v1.0"]
    assert icefs("branch", "create", "b3", "--from", ids["experiment"]).returncode == 0
    assert api(path).lookup_branch("b3") == ids["experiment"]
    assert icefs("branch", "create", "b1").returncode == 11
    assert icefs("branch", "create", "x", "--from", "nowhere").returncode == 12
    assert icefs("branch", "create", " bad").returncode == 10
    assert icefs("branch", "delete", "b2").returncode == 0
    assert "b2" not in api(path).list_branches()
    assert icefs("branch", "delete", "main").returncode == 13
    assert icefs("tag", "create", "t1", "--from", "experiment").returncode == 0
    assert api(path).lookup_tag("t1") == ids["experiment"]
    assert icefs("tag", "create", "t2").returncode == 0
    assert api(path).lookup_tag("t2") == ids["main"]
    assert "t1" in icefs("tag", "list").stdout
    assert icefs("tag", "delete", "t1").returncode == 0
    assert "t1" not in api(path).list_tags()
    result = icefs("log", "experiment", "--json")
    assert result.returncode == 0, result.stderr
    history = json.loads(result.stdout)
    assert [h["id"] for h in history] == [ids["experiment"], ids["v1.0"], "1CECHNKREP0F1RSTCMT0"]
    assert history[0]["message"] == "experiment: add humidity"
    human = icefs("log", "v1.0")
    assert human.stdout.splitlines()[0].startswith(ids["v1.0"])


def test_cli_init_and_errors(tmp_path):
    repo = tmp_path / "new"
    result = run_icefs("init", str(repo))
    assert result.returncode == 0, result.stderr
    assert icechunk.Repository.exists(sample_storage(str(repo)))
    again = run_icefs("init", str(repo))
    assert again.returncode == 3
    assert len(again.stderr.strip().splitlines()) == 1
    assert run_icefs("init", str(repo), "--mode", "open_or_create").returncode == 0
    assert run_icefs("branch", "list", "--repo", str(tmp_path / "nothing")).returncode == 3
    outside = run_icefs("branch", "list", "-C", str(tmp_path))
    assert outside.returncode == 7
    assert "not inside an icefs mount" in outside.stderr
    for command in (["init"], ["branch"], ["tag"], ["log"]):
        helped = run_icefs(*command, "--help")
        assert helped.returncode == 0
        assert "example" in helped.stdout
