"""History and upkeep: diff, reset, commit metadata, the operations log, expire and gc.

Every command runs through a real mount (``-C``) and on the repository
(``--repo``), on local disk and on the S3 server; the answers are checked
against Icechunk's own view of the repository.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import icechunk
import numpy as np
import pytest
import zarr

from harness.mount import run_icefs
from harness.servers import clean_env
from icefs.store.sample import sample_storage


@dataclass
class Backend:
    """One repository: how Icechunk, the CLI (``--repo``) and a mount reach it."""

    kind: str
    storage: icechunk.Storage
    url: str
    cli: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=clean_env)
    mount_args: list[str] = field(default_factory=list)

    def icefs(self, *args: str, timeout: float = 120):
        return run_icefs(*args, timeout=timeout, env=self.env)

    def repo_cmd(self, *args: str, timeout: float = 120):
        """``icefs ARGS --repo URL``, with the storage options."""
        return self.icefs(*args, "--repo", self.url, *self.cli, timeout=timeout)

    def repository(self) -> icechunk.Repository:
        return icechunk.Repository.open(self.storage)


def local_backend(tmp_path: Path) -> Backend:
    path = tmp_path / "repo"
    return Backend("local", sample_storage(str(path)), str(path))


def s3_backend(server, tmp_path: Path) -> Backend:
    bucket = server.create_bucket(f"hist-{uuid.uuid4().hex[:8]}")
    keys = tmp_path / "keys.toml"
    keys.write_text(f'access_key_id = "{server.key_id}"\nsecret_access_key = "{server.secret}"\n')
    os.chmod(keys, 0o600)
    env = dict(clean_env(), AWS_ACCESS_KEY_ID=server.key_id, AWS_SECRET_ACCESS_KEY=server.secret)
    return Backend(
        "s3",
        server.storage(bucket, "repo"),
        f"s3://{bucket}/repo",
        cli=server.options(),
        env=env,
        mount_args=[*server.options(), "--config", str(keys)],
    )


@pytest.fixture(params=["local", "s3"])
def backend(request, tmp_path):
    if request.param == "local":
        return local_backend(tmp_path)
    return s3_backend(request.getfixturevalue("s3_server"), tmp_path)


def build_history(backend: Backend) -> dict[str, str]:
    """Four commits straight through Icechunk: a, then b and an attribute, then a deletion.

    Returns the snapshot ids by name (``first``, ``second``, ``third``, ``fourth``).
    """
    repo = icechunk.Repository.create(backend.storage)
    ids = {}
    session = repo.writable_session("main")
    group = zarr.group(store=session.store)
    group.create_array("a", shape=(64, 64), chunks=(32, 32), dtype="i4", fill_value=0)[:] = 1
    group.create_array("old", shape=(2,), chunks=(2,), dtype="i4")[:] = 5
    ids["first"] = session.commit("first")
    session = repo.writable_session("main")
    group = zarr.open_group(session.store)
    group["a"][0:32, 0:32] = 2  # one chunk
    group["a"].attrs.update({"units": "K", "note": "warm"})
    group.create_array("b", shape=(3,), chunks=(3,), dtype="f4")[:] = 1.5
    ids["second"] = session.commit("second")
    session = repo.writable_session("main")
    group = zarr.open_group(session.store)
    del group["old"]
    group["a"].attrs.update({"units": "degC"})
    ids["third"] = session.commit("third")
    repo.create_tag("v1", ids["first"])
    repo.create_branch("side", ids["first"])
    session = repo.writable_session("side")
    noise = np.random.default_rng(0).integers(0, 2**31, size=(32, 32), dtype="i4")
    zarr.open_group(session.store)["a"][32:64, 32:64] = noise  # incompressible: not inlined
    ids["side"] = session.commit("on the side")
    return ids


def cli_json(result) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def nodes_by_path(doc) -> dict[str, dict[str, Any]]:
    return {n["path"]: n for n in doc["nodes"]}


# -- diff --------------------------------------------------------------------------------------


def test_diff_through_the_mount_and_on_the_repository(backend, mount_factory):
    ids = build_history(backend)
    m = mount_factory(backend.url, *backend.mount_args)
    through_mount = ["-C", str(m.mountpoint)]
    for how in ("mount", "repo"):

        def diff(*args, how=how):
            if how == "mount":
                return backend.icefs("diff", *args, *through_mount)
            return backend.repo_cmd("diff", *args)

        doc = cli_json(diff(ids["first"], ids["third"], "--json", "--chunks"))
        assert doc["from"]["id"] == ids["first"]
        assert doc["to"]["id"] == ids["third"]
        assert doc["direction"] == "forward"
        nodes = nodes_by_path(doc)
        assert nodes["/b"]["change"] == "new"
        assert nodes["/b"]["kind"] == "array"
        assert nodes["/old"]["change"] == "deleted"
        assert nodes["/a"]["change"] == "updated"
        assert nodes["/a"]["attributes"] == {
            "added": ["note", "units"],
            "removed": [],
            "changed": [],
        }
        assert nodes["/a"]["chunk_coords"] == [[0, 0]]
        assert nodes["/a"]["chunks"] == 1
        assert doc["summary"] == {"new": 1, "deleted": 1, "updated": 1, "chunks": 2}
        # Icechunk's own diff agrees on every node
        raw = backend.repository().diff(from_snapshot_id=ids["first"], to_snapshot_id=ids["third"])
        assert set(nodes) == (
            raw.new_arrays | raw.deleted_arrays | raw.updated_arrays | set(raw.updated_chunks)
        )

        # one ref: what its snapshot did; "backward" reads the history the other way round
        last = nodes_by_path(cli_json(diff("main", "--json")))
        assert last["/a"]["attributes"]["changed"] == ["units"]
        assert "chunks" not in last["/a"]
        back = cli_json(diff("main", "v1", "--json"))
        assert back["direction"] == "backward"
        assert nodes_by_path(back)["/b"]["change"] == "deleted"
        assert nodes_by_path(back)["/old"]["change"] == "new"
        text = diff("v1", "main")
        assert text.returncode == 0
        assert "+ /b  new array" in text.stdout
        assert "attributes added: note, units" in text.stdout

        # two lines of history: refused, naming their common snapshot
        apart = diff("side", "main")
        assert apart.returncode == 10, apart.stderr
        assert ids["first"] in apart.stderr
        assert diff("nothing", "main").returncode == 12

    # the control file: what this commit did, for cat
    shown = (m.mountpoint / "branches/main/.icefs/diff").read_text()
    assert shown.startswith(f"{ids['second']} -> {ids['third']}  third")
    assert "- /old  deleted array" in shown
    assert "attributes changed: units" in shown
    first = (m.mountpoint / "tags/v1/.icefs/diff").read_text()
    assert "/a  new array" in first
    assert "/old  new array" in first


# -- reset -------------------------------------------------------------------------------------


def read_a(path: Path) -> np.ndarray:
    return np.asarray(zarr.open_array(str(path / "a"), mode="r")[:])


def test_reset_through_the_mount(backend, mount_factory):
    ids = build_history(backend)
    m = mount_factory(backend.url, *backend.mount_args)
    main = m.mountpoint / "branches" / "main"
    assert read_a(main)[0, 0] == 2
    (main / "scratch.txt").write_text("kept")
    zarr.open_array(str(main / "a"), mode="r+")[3, 3] = 7  # uncommitted
    refused = backend.icefs("branch", "reset", "main", "--to", "v1", "-C", str(m.mountpoint))
    assert refused.returncode == 9, refused.stderr
    assert "uncommitted changes" in refused.stderr
    assert backend.repository().lookup_branch("main") == ids["third"]
    assert read_a(main)[3, 3] == 7  # nothing lost by the refusal

    done = backend.icefs(
        "branch", "reset", "main", "--to", "v1", "--discard", "-C", str(m.mountpoint), "--json"
    )
    assert cli_json(done) == {"name": "main", "from": ids["third"], "to": ids["first"]}
    assert backend.repository().lookup_branch("main") == ids["first"]
    # the view follows at once: the first snapshot's values, no b, old is back
    np.testing.assert_array_equal(read_a(main), np.ones((64, 64), "i4"))
    assert not (main / "b").exists()
    assert (main / "old").is_dir()
    assert (main / "scratch.txt").read_text() == "kept"
    status = json.loads((main / ".icefs/status").read_text())
    assert status["last_reset"]["from"] == ids["third"]
    assert not status["has_uncommitted_changes"]

    # a plain name written to the control file; then unknown targets
    (main / ".icefs" / "reset").write_text(ids["third"])
    assert read_a(main)[0, 0] == 2
    assert (main / "b").is_dir()
    with pytest.raises(OSError) as err:
        (main / ".icefs" / "reset").write_text("no-such-ref")
    assert err.value.errno == 2
    assert (
        backend.icefs("branch", "reset", "nope", "--to", "v1", "-C", str(m.mountpoint)).returncode
        == 12
    )
    with pytest.raises(OSError) as err:
        (m.mountpoint / "tags/v1/.icefs/reset").write_text("main")
    assert err.value.errno == 30  # tags have no reset file: EROFS, as any new control file
    assert backend.repository().lookup_branch("main") == ids["third"]


def test_reset_on_the_repository_and_the_mount_follows(backend, mount_factory):
    ids = build_history(backend)
    m = mount_factory(backend.url, *backend.mount_args, "--refresh", "0.5")
    out = backend.repo_cmd("branch", "reset", "main", "--to", ids["second"])
    assert out.returncode == 0, out.stderr
    assert f"to undo: icefs branch reset main --to {ids['third']}" in out.stdout
    assert backend.repository().lookup_branch("main") == ids["second"]
    assert backend.repo_cmd("branch", "reset", "main", "--to", "zzz").returncode == 12
    deadline = time.monotonic() + 10
    snap = m.mountpoint / "branches/main/.icefs/snapshot_id"
    while snap.read_text().strip() != ids["second"]:
        assert time.monotonic() < deadline, "the mount did not follow the reset"
        time.sleep(0.2)
    assert (m.mountpoint / "branches/main/old").is_dir()  # deleted only in "third"
    assert (m.mountpoint / "branches/main/b").is_dir()

    # a writer whose branch is reset under it keeps its changes and gets a conflict
    side = m.mountpoint / "branches/side"
    zarr.open_array(str(side / "a"), mode="r+")[0:32, 0:32] = 7
    assert backend.repo_cmd("branch", "reset", "side", "--to", "v1").returncode == 0
    refused = run_icefs("commit", str(side), "-m", "on the old base")
    assert refused.returncode == 9, refused.stderr
    assert f"branch side was moved to {ids['first']}" in refused.stderr
    status = json.loads((side / ".icefs/status").read_text())
    assert status["has_uncommitted_changes"]
    assert status["changed_chunks"] == 1
    assert backend.repository().lookup_branch("side") == ids["first"]
    (side / ".icefs/discard").write_text("x")
    assert (side / ".icefs/snapshot_id").read_text().strip() == ids["first"]


# -- commit metadata and log -------------------------------------------------------------------


def test_commit_metadata_and_log(backend, mount_factory):
    build_history(backend)
    m = mount_factory(backend.url, *backend.mount_args)
    main = m.mountpoint / "branches" / "main"
    zarr.open_array(str(main / "a"), mode="r+")[0, 0] = 3
    out = backend.icefs(
        "commit", str(main), "-m", "with metadata", "--meta", "ticket=ICE-7", "--meta", "by=ann"
    )
    assert out.returncode == 0, out.stderr
    sid = out.stdout.strip()
    info = backend.repository().lookup_snapshot(sid)
    assert info.message == "with metadata"
    meta = info.metadata
    assert meta["ticket"] == "ICE-7"
    assert meta["by"] == "ann"
    assert meta["mountpoint"] == str(m.mountpoint)
    assert meta["host"] == os.uname().nodename
    assert meta["committed_by"]
    assert meta["icefs_version"]

    # JSON straight into the control file; reserved keys and bad requests are refused
    zarr.open_array(str(main / "a"), mode="r+")[0, 0] = 4
    for bad in (
        '{"message": "x", "metadata": {"host": "elsewhere"}}',
        '{"message": "x", "extra": 1}',
        '{"message": ""}',
    ):
        with pytest.raises(OSError) as err:
            (main / ".icefs" / "commit").write_text(bad)
        assert err.value.errno == 22
        assert "commit refused" in json.loads((main / ".icefs/status").read_text())["last_error"]
    assert backend.repository().lookup_branch("main") == sid  # nothing committed
    (main / ".icefs" / "commit").write_text(json.dumps({"message": "j", "metadata": {"n": [1, 2]}}))
    tip = backend.repository().lookup_branch("main")
    assert backend.repository().lookup_snapshot(tip).metadata["n"] == [1, 2]

    # the log shows it: the control file, and `icefs log --json` both ways
    log = (main / ".icefs" / "log").read_text().splitlines()
    assert log[0].startswith(f"{tip}  ")
    assert log[0].endswith("  j")
    assert log[1].startswith("    ")
    assert "n=[1, 2]" in log[1]
    assert "committed_by=" in log[1]
    for how in (["-C", str(m.mountpoint)], ["--repo", backend.url, *backend.cli]):
        entries = cli_json(backend.icefs("log", "main", "--json", *how))
        assert [e["id"] for e in entries[:2]] == [tip, sid]
        assert entries[1]["metadata"]["ticket"] == "ICE-7"
        assert "icefs_session" not in entries[1]["metadata"]
        assert len(cli_json(backend.icefs("log", "main", "--json", "-n", "1", *how))) == 1


def test_operations_log(backend, mount_factory):
    ids = build_history(backend)
    m = mount_factory(backend.url, *backend.mount_args)
    assert (
        backend.icefs("tag", "create", "v2", "--from", "main", "-C", str(m.mountpoint)).returncode
        == 0
    )
    backend.repo_cmd("branch", "reset", "side", "--to", "v1")
    expected = [
        ("branch_reset", {"name": "side", "previous_snapshot_id": ids["side"]}),
        ("tag_created", {"name": "v2"}),
        ("new_commit", {"branch": "side", "snapshot_id": ids["side"]}),
    ]
    for how in (["-C", str(m.mountpoint)], ["--repo", backend.url, *backend.cli]):
        entries = cli_json(backend.icefs("log", "--ops", "--json", *how))
        for (operation, fields), entry in zip(expected, entries, strict=False):
            assert entry["operation"] == operation
            assert {k: entry[k] for k in fields} == fields
        assert entries[-1]["operation"] == "repo_initialized"
        times = [e["time"] for e in entries]
        assert times == sorted(times, reverse=True)
        assert len(cli_json(backend.icefs("log", "--ops", "--json", "-n", "2", *how))) == 2
        text = backend.icefs("log", "--ops", *how).stdout.splitlines()
        assert "branch_reset  name=side" in text[0]
    assert "tag_created  name=v2" in (m.mountpoint / ".icefs/ops").read_text()


# -- expire and gc -----------------------------------------------------------------------------


def all_values(repo: icechunk.Repository) -> dict[str, dict[str, list[Any]]]:
    """Every array of every branch and tag, read whole through Icechunk."""
    out = {}
    refs = [("branch", b) for b in repo.list_branches()] + [("tag", t) for t in repo.list_tags()]
    for kind, name in refs:
        session = repo.readonly_session(**{kind: name})  # type: ignore[arg-type]  # branch= or tag=
        group = zarr.open_group(session.store, mode="r")
        out[f"{kind}:{name}"] = {k: group[k][:].tolist() for k in sorted(group.array_keys())}
    return out


def test_expire_dry_run_names_what_goes_and_refs_stay(backend):
    ids = build_history(backend)
    repo = backend.repository()
    before = all_values(repo)
    time.sleep(1.1)
    dry = cli_json(backend.repo_cmd("expire", "--older-than", "1s", "--dry-run", "--json"))
    planned = {e["id"] for e in dry["expired"]}
    # what branches and tags point at stays: main's tip, side's tip, v1's snapshot
    assert planned == {ids["second"]}
    assert backend.repository().lookup_snapshot(ids["second"])  # the dry run dropped nothing
    done = cli_json(backend.repo_cmd("expire", "--older-than", "1s", "--json"))
    assert {e["id"] for e in done["expired"]} == planned
    repo = backend.repository()
    # main's history keeps its tip; what v1 points at leaves main's history but stays
    assert [i.id for i in repo.ancestry(branch="main")] == [ids["third"], "1CECHNKREP0F1RSTCMT0"]
    assert repo.lookup_tag("v1") == ids["first"]
    assert next(i.id for i in repo.ancestry(tag="v1")) == ids["first"]
    assert all_values(repo) == before
    assert backend.repo_cmd("expire", "--older-than", "xx").returncode == 2


def backdate(repo_dir: Path, seconds: float) -> None:
    """Make every object of the local repository look *seconds* old."""
    then = time.time() - seconds
    for path in repo_dir.rglob("*"):
        if path.is_file():
            os.utime(path, (then, then))


def test_gc_spares_a_writer_that_has_not_committed(tmp_path, mount_factory):
    """Old garbage goes; chunks a mount wrote and has not committed yet stay."""
    backend = local_backend(tmp_path)
    ids = build_history(backend)
    backend.repo_cmd("branch", "reset", "side", "--to", "v1")  # "on the side" is garbage now
    cli_json(backend.repo_cmd("expire", "--older-than", "0s", "--json"))
    backdate(tmp_path / "repo", 8 * 86400)
    m = mount_factory(backend.url)
    main = m.mountpoint / "branches" / "main"
    noise = np.random.default_rng(1).integers(0, 2**31, size=(32, 32), dtype="i4")
    zarr.open_array(str(main / "a"), mode="r+")[32:64, 0:32] = noise  # a chunk, uncommitted
    time.sleep(1.5)  # older than the short grace period below: that one would delete it

    # gc with a short grace period would take the writer's chunk: refused
    short = backend.repo_cmd("gc", "--grace", "1s", "--allow-short-grace")
    assert short.returncode == 9, short.stderr
    assert "uncommitted changes on main" in short.stderr
    assert backend.repo_cmd("gc", "--grace", "10m").returncode == 2  # under one hour

    dry = cli_json(backend.repo_cmd("gc", "--dry-run", "--json"))
    assert dry["bytes_deleted"] > 0
    assert dry["chunks_deleted"] >= 1
    assert dry["snapshots_deleted"] >= 1
    again = cli_json(backend.repo_cmd("gc", "--dry-run", "--json"))
    assert again["bytes_deleted"] == dry["bytes_deleted"]  # nothing went
    progress = backend.repo_cmd("gc", "--progress")
    assert progress.returncode == 0, progress.stderr
    assert "[1/7] finding what branches and tags reach" in progress.stderr
    assert "[7/7] deleting chunks" in progress.stderr
    assert "freed" in progress.stdout
    with pytest.raises(icechunk.IcechunkError):
        backend.repository().lookup_snapshot(ids["side"])
    assert cli_json(backend.repo_cmd("gc", "--dry-run", "--json"))["bytes_deleted"] == 0

    # the writer's chunk survived: commit, and Icechunk reads it back
    (main / ".icefs" / "commit").write_text("after gc")
    direct = zarr.open_array(
        backend.repository().readonly_session(branch="main").store, path="a", mode="r"
    )
    assert (direct[32:64, 0:32] == noise).all()
    assert direct[0, 0] == 2
    assert all_values(backend.repository())["tag:v1"]["a"] == np.ones((64, 64)).tolist()


def test_gc_on_s3_frees_what_no_ref_reaches(s3_server, tmp_path):
    backend = s3_backend(s3_server, tmp_path)
    ids = build_history(backend)
    before = all_values(backend.repository())
    before.pop("branch:side")
    backend.repo_cmd("branch", "delete", "side")
    time.sleep(1.1)
    cli_json(backend.repo_cmd("expire", "--older-than", "1s", "--json"))
    time.sleep(1.1)
    freed = cli_json(backend.repo_cmd("gc", "--grace", "1s", "--allow-short-grace", "--json"))
    assert freed["chunks_deleted"] >= 1
    assert freed["snapshots_deleted"] >= 2
    assert all_values(backend.repository()) == before
    with pytest.raises(icechunk.IcechunkError):
        backend.repository().lookup_snapshot(ids["second"])


def test_a_commit_request_is_json_only_when_it_says_so():
    """Text that merely starts with "{" is a message; a JSON object with "message" is a
    request, checked (found by the long model run: '{' messages were refused)."""
    from icefs.errors import InvalidInput
    from icefs.fs.commitinfo import parse_request

    assert parse_request(b"{fix} units").message == "{fix} units"
    assert parse_request(b'{"a": 1}').message == '{"a": 1}'
    assert parse_request(b"[1, 2]\n").message == "[1, 2]"
    request = parse_request(b'{"message": "m", "metadata": {"ticket": "T-1"}}')
    assert (request.message, request.metadata) == ("m", {"ticket": "T-1"})
    for bad in (
        b'{"message": "m", "other": 1}',
        b'{"message": ""}',
        b'{"message": "m", "metadata": []}',
        b'{"message": "m", "metadata": {"host": "x"}}',
        b"   ",
    ):
        with pytest.raises(InvalidInput):
            parse_request(bad)
