"""Virtual chunks through the mount: authorization, reads, locations, writes.

Each repository is built with Icechunk's own API: an array ``v`` (48 x 32
float32, chunks 16 x 16, uncompressed) whose chunks (0,0), (0,1) and (1,0) are
references into a source file (on local disk or on the loopback S3 server),
(1,1) a native chunk, (2,0) an inline one and (2,1) missing, and a tag ``v1``.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import icechunk
import numpy as np
import pytest
import xarray as xr
import zarr

from harness.mount import run_icefs
from harness.servers import clean_env

SHAPE = (48, 32)
CHUNK = (16, 16)
VIRTUAL = [(0, 0), (0, 1), (1, 0)]
HEADER = b"NOTNETCDF" * 7  # the source file's header: references skip it


@dataclass
class Source:
    """Where the referenced bytes live, and how a mount authorizes them."""

    prefix: str
    url: str
    container: icechunk.VirtualChunkContainer
    credential: Any  # an icechunk credentials value of the source's kind
    grant: list[str]  # the mount's options that authorize it
    values: np.ndarray  # the full array as Icechunk should read it


def chunk_values(i: int, j: int) -> np.ndarray:
    rng = np.random.default_rng(10 * i + j)
    return rng.standard_normal(CHUNK).astype("<f4")


def source_bytes() -> tuple[bytes, dict[tuple[int, int], int]]:
    """The source file: a header, then the virtual chunks back to back; and their offsets."""
    data = bytearray(HEADER)
    offsets = {}
    for coords in VIRTUAL:
        offsets[coords] = len(data)
        data += chunk_values(*coords).tobytes()
    return bytes(data), offsets


def expected() -> np.ndarray:
    full = np.full(SHAPE, np.nan, dtype="<f4")
    for i, j in [*VIRTUAL, (1, 1), (2, 0)]:
        full[i * 16 : i * 16 + 16, j * 16 : j * 16 + 16] = chunk_values(i, j)
    return full


def local_source(tmp_path: Path) -> Source:
    src = tmp_path / "src"
    src.mkdir()
    data, _ = source_bytes()
    (src / "data.bin").write_bytes(data)
    prefix = f"file://{src}/"
    return Source(
        prefix,
        f"{prefix}data.bin",
        icechunk.VirtualChunkContainer(prefix, icechunk.local_filesystem_store(str(src) + "/")),
        icechunk.credentials.LocalFileSystemAccess,
        ["--virtual", prefix],
        expected(),
    )


def s3_source(s3_server, tmp_path: Path) -> Source:
    bucket = s3_server.create_bucket(f"virt-{tmp_path.name[-12:].lower().replace('_', '-')}")
    data, _ = source_bytes()
    s3_server.client().put_object(Bucket=bucket, Key="src/data.bin", Body=data)
    prefix = f"s3://{bucket}/src/"
    keys = tmp_path / "keys"
    keys.write_text(f"access_key_id = {s3_server.key_id}\nsecret_access_key = {s3_server.secret}\n")
    store = icechunk.s3_store(
        region="us-east-1", endpoint_url=s3_server.endpoint, allow_http=True, force_path_style=True
    )
    return Source(
        prefix,
        f"{prefix}data.bin",
        icechunk.VirtualChunkContainer(prefix, store),
        icechunk.s3_static_credentials(
            access_key_id=s3_server.key_id, secret_access_key=s3_server.secret
        ),
        ["--virtual", f"{prefix}=static:{keys}"],
        expected(),
    )


def checksum(source: Source, s3_server=None) -> Any:
    """What Icechunk checks the source against: its modification time, or its ETag."""
    if source.url.startswith("file://"):
        # whole seconds, as Icechunk keeps it: changed means modified after that second
        mtime = os.stat(source.url.removeprefix("file://")).st_mtime
        return dt.datetime.fromtimestamp(math.ceil(mtime), dt.UTC)
    bucket, _, key = source.url.removeprefix("s3://").partition("/")
    return s3_server.client().head_object(Bucket=bucket, Key=key)["ETag"]


def build(repo_dir: Path, source: Source, s3_server=None) -> icechunk.Repository:
    config = icechunk.RepositoryConfig.default()
    config.set_virtual_chunk_container(source.container)
    storage = icechunk.local_filesystem_storage(str(repo_dir))
    access = icechunk.containers_credentials({source.prefix: source.credential})
    repo = icechunk.Repository.create(storage, config, authorize_virtual_chunk_access=access)
    session = repo.writable_session("main")
    arr = zarr.group(store=session.store).create_array(
        "v", shape=SHAPE, chunks=CHUNK, dtype="<f4", compressors=None, fill_value=np.nan,
        dimension_names=["y", "x"],
    )  # fmt: skip
    arr[16:32, 16:32] = chunk_values(1, 1)  # 1 KiB: a native chunk
    _, offsets = source_bytes()
    stamp = checksum(source, s3_server)
    for (i, j), offset in offsets.items():
        session.store.set_virtual_ref(
            f"v/c/{i}/{j}", source.url, offset=offset, length=1024, checksum=stamp
        )
    session.commit("virtual, native")
    inline = icechunk.RepositoryConfig(inline_chunk_threshold_bytes=4096)
    session = icechunk.Repository.open(storage, inline).writable_session("main")
    zarr.open_array(session.store, path="v", mode="r+")[32:48, 0:16] = chunk_values(2, 0)
    session.commit("an inline chunk")
    repo.create_tag("v1", repo.lookup_branch("main"))
    return icechunk.Repository.open(storage, authorize_virtual_chunk_access=access)


def chunk_kinds(repo: icechunk.Repository) -> dict[tuple[int, ...], int]:
    """The kind of each stored chunk of ``v`` on main (1 native, 2 virtual, 3 inline)."""
    store = repo.readonly_session(branch="main").store
    out = {}
    chunks = store.array_chunk_iterator("v")  # also a plain iterator, which its stub omits
    for coords, kinds, _paths, _offsets, _lens, _inline in chunks:  # type: ignore[attr-defined]
        for row, kind in zip(coords.tolist(), kinds.tolist(), strict=True):
            out[tuple(row)] = kind
    return out


@pytest.fixture(params=["local", "s3"])
def source(request, tmp_path) -> tuple[Source, object]:
    if request.param == "local":
        return local_source(tmp_path), None
    server = request.getfixturevalue("s3_server")
    return s3_source(server, tmp_path), server


def test_virtual_chunks_read_like_native_ones(source, tmp_path, mount_factory):
    src, server = source
    repo = build(tmp_path / "repo", src, server)
    assert chunk_kinds(repo) == {(0, 0): 2, (0, 1): 2, (1, 0): 2, (1, 1): 1, (2, 0): 3}
    direct = zarr.open_array(repo.readonly_session(tag="v1").store, path="v", mode="r")[:]
    np.testing.assert_array_equal(direct, src.values)

    m = mount_factory(tmp_path / "repo", *src.grant)
    for ref in ("tags/v1", "branches/main"):
        root = m.mountpoint / ref
        ds = xr.open_zarr(str(root), consolidated=False, mask_and_scale=False)
        np.testing.assert_array_equal(ds["v"].values, direct)
        assert (root / "v/c/0/1").stat().st_size == 1024
        # a partial read of a virtual chunk: the bytes at that offset of the chunk
        fd = os.open(root / "v/c/1/0", os.O_RDONLY)
        try:
            assert os.pread(fd, 64, 512) == chunk_values(1, 0).tobytes()[512:576]
        finally:
            os.close(fd)
        assert (root / "v/c/0/0").read_bytes() == chunk_values(0, 0).tobytes()

    # where a virtual chunk points; native and inline chunks have no such attribute
    _, offsets = source_bytes()
    where = os.getxattr(m.mountpoint / "tags/v1/v/c/0/1", "user.icefs.location").decode()
    assert where == f"{src.url} {offsets[(0, 1)]} 1024"
    assert "user.icefs.location" in os.listxattr(m.mountpoint / "tags/v1/v/c/1/0")
    for native in ("1/1", "2/0"):
        assert "user.icefs.location" not in os.listxattr(m.mountpoint / f"tags/v1/v/c/{native}")
        with pytest.raises(OSError) as info:
            os.getxattr(m.mountpoint / f"tags/v1/v/c/{native}", "user.icefs.location")
        assert info.value.errno == errno.ENODATA

    status = json.loads((m.mountpoint / ".icefs/status").read_text())
    assert status["virtual_containers"] == [
        {
            "name": src.prefix,
            "prefix": src.prefix,
            "store": "local" if server is None else "s3",
            "authorized": True,
            "access": "yes" if server is None else "static",
        }
    ]
    # the secret never reaches the daemon's command line, its log or its status
    if server is not None:
        assert server.secret not in m.log_text()
        assert server.secret not in json.dumps(status)
        assert server.secret not in " ".join(m.proc.args)


def test_unauthorized_container_is_eacces_logged_once(tmp_path, mount_factory):
    src = local_source(tmp_path)
    build(tmp_path / "repo", src)
    m = mount_factory(tmp_path / "repo")
    chunk = m.mountpoint / "branches/main/v/c/0/0"
    assert chunk.stat().st_size == 1024  # sizes come from the manifest: no access needed
    for name in ("0/0", "0/1", "0/0"):
        with pytest.raises(OSError) as info:
            (m.mountpoint / f"branches/main/v/c/{name}").read_bytes()
        assert info.value.errno == errno.EACCES
    assert (m.mountpoint / "branches/main/v/c/1/1").read_bytes() == chunk_values(1, 1).tobytes()
    refused = [line for line in m.log_text().splitlines() if "is not authorized" in line]
    assert len(refused) == 1, refused
    assert f"--virtual {src.prefix} to read it" in refused[0]
    status = json.loads((m.mountpoint / ".icefs/status").read_text())
    assert status["virtual_containers"][0]["authorized"] is False

    # the repository commands work on it, mounted or not
    for where in (["--repo", str(tmp_path / "repo")], ["-C", str(m.mountpoint)]):
        log = run_icefs("log", *where, "--json")
        assert log.returncode == 0, log.stderr
        assert [e["message"] for e in json.loads(log.stdout)][:2] == [
            "an inline chunk",
            "virtual, native",
        ]
        diff = run_icefs("diff", *where, "--json", "v1")
        assert diff.returncode == 0, diff.stderr
        assert json.loads(diff.stdout)["summary"]["chunks"] == 1


def test_a_changed_source_file_is_eio_never_wrong_bytes(tmp_path, mount_factory, log_allows):
    src = local_source(tmp_path)
    build(tmp_path / "repo", src)
    m = mount_factory(tmp_path / "repo", *src.grant)
    main = m.mountpoint / "branches/main/v/c"
    # The read-ahead fetches the chunks after a read (C order) in the background: bytes
    # it fetched before the change are the snapshot's own and may be served. So the
    # chunks read after the change lie before the first one read: never fetched ahead.
    assert (main / "1/0").read_bytes() == chunk_values(1, 0).tobytes()
    path = Path(src.url.removeprefix("file://"))
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, (path.stat().st_atime, path.stat().st_mtime + 5))
    with pytest.raises(OSError) as info:
        (main / "0/0").read_bytes()
    assert info.value.errno == errno.EIO
    assert "checksum of the object owning the virtual chunk has changed" in m.log_text()
    assert (main / "1/1").read_bytes() == chunk_values(1, 1).tobytes()  # native: fine
    path.unlink()
    with pytest.raises(OSError) as info:
        (main / "0/1").read_bytes()
    assert info.value.errno == errno.EIO


def test_writes_replace_references_and_keep_the_others(tmp_path, mount_factory):
    src = local_source(tmp_path)
    build(tmp_path / "repo", src)
    m = mount_factory(tmp_path / "repo", *src.grant)
    chunks = m.mountpoint / "branches/main/v/c"
    new = np.full(CHUNK, 7.5, dtype="<f4")
    (chunks / "0/0").write_bytes(new.tobytes())  # the reference becomes a native chunk
    (chunks / "0/1").unlink()  # the reference goes
    assert "user.icefs.location" in os.listxattr(chunks / "1/0")
    (m.mountpoint / "branches/main/.icefs/commit").write_text("replace and delete")

    repo = icechunk.Repository.open(
        icechunk.local_filesystem_storage(str(tmp_path / "repo")),
        authorize_virtual_chunk_access=icechunk.containers_credentials(
            {src.prefix: src.credential}
        ),
    )
    kinds = chunk_kinds(repo)
    assert kinds[(0, 0)] != 2
    assert (0, 1) not in kinds
    assert kinds[(1, 0)] == 2
    values = zarr.open_array(repo.readonly_session(branch="main").store, path="v", mode="r")[:]
    want = src.values.copy()
    want[0:16, 0:16] = new
    want[0:16, 16:32] = np.nan
    np.testing.assert_array_equal(values, want)
    assert (chunks / "1/0").read_bytes() == chunk_values(1, 0).tobytes()
    with pytest.raises(OSError) as info:
        os.getxattr(chunks / "0/0", "user.icefs.location")
    assert info.value.errno == errno.ENODATA


def test_authorization_is_checked_before_mounting(tmp_path, mount_factory):
    src = local_source(tmp_path)
    build(tmp_path / "repo", src)
    mnt = tmp_path / "refused"
    mnt.mkdir()
    env = clean_env()

    def mount(*args: str):
        return run_icefs("mount", str(tmp_path / "repo"), str(mnt), *args, env=env)

    other = mount("-o", "allow_other", *src.grant)
    assert other.returncode == 2, other.stderr
    assert "--allow-other-file-access" in other.stderr
    undeclared = mount("--virtual", "file:///elsewhere/")
    assert undeclared.returncode == 2
    assert "declares no such virtual chunk container" in undeclared.stderr
    assert src.prefix in undeclared.stderr
    bad = mount("--virtual", "ftp://host/")
    assert bad.returncode == 2
    assert "not a container URL prefix" in bad.stderr
    assert mount("--virtual", f"{src.prefix}=anonymous").returncode == 2  # file:// takes none
    assert not os.path.ismount(mnt)

    # accepted: every user of the mount may read it, which the option says
    m = mount_factory(
        tmp_path / "repo", "-o", "allow_other", "--allow-other-file-access", *src.grant
    )
    assert (m.mountpoint / "tags/v1/v/c/0/0").read_bytes() == chunk_values(0, 0).tobytes()


def test_a_bad_key_file_is_refused(s3_server, tmp_path):
    src = s3_source(s3_server, tmp_path)
    build(tmp_path / "repo", src, s3_server)
    (tmp_path / "keys").write_text("access_key_id = AKIA-not-shown\npassword = hunter2-shh\n")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    result = run_icefs("mount", str(tmp_path / "repo"), str(mnt), *src.grant, env=clean_env())
    assert result.returncode == 2, result.stderr
    assert "access_key_id, secret_access_key, session_token" in result.stderr
    assert "hunter2-shh" not in result.stderr
    assert "AKIA-not-shown" not in result.stderr


def test_grants_and_their_credentials(tmp_path):
    """Each container kind gets Icechunk's credential of its kind; mistakes are refused."""
    from icefs.errors import UsageError
    from icefs.store.virtual import authorization, authorize_hint, parse_grants

    keys = tmp_path / "s3keys"
    keys.write_text("# comment\naccess_key_id = AK\nsecret_access_key = SK\n")
    sas = tmp_path / "sas"
    sas.write_text("sas_token = sv=1\n")
    grants = parse_grants(
        [
            "s3://a/",
            "s3://b/=anonymous",
            f"s3://c/=static:{keys}",
            "gs://d/=env",
            f"az://acct/e/=static:{sas}",
            "https://f.example/",
            "file:///g/",
        ]
    )
    assert [(g.kind, g.access) for g in grants] == [
        ("s3", "env"),
        ("s3", "anonymous"),
        ("s3", "static"),
        ("gcs", "env"),
        ("azure", "static"),
        ("http", ""),
        ("local", ""),
    ]
    made = authorization(grants)
    assert set(made) == {g.prefix for g in grants}
    kinds = [type(made[g.prefix]).__qualname__ for g in grants]
    assert kinds == [
        *["Credentials.S3"] * 3,
        "Credentials.Gcs",
        "Credentials.Azure",
        "Credentials.HttpAccess",
        "Credentials.LocalFileSystemAccess",
    ]
    assert authorize_hint("s3://a/") == "--virtual s3://a/[=ACCESS]"
    assert authorize_hint("file:///g/") == "--virtual file:///g/"
    for bad in ("s3://a/,s3://a/", "ftp://x/", "https://f/=env", "nothing"):
        with pytest.raises(UsageError):
            parse_grants(bad.split(","))
    (tmp_path / "two").write_text("access_key = k\nsas_token = t\n")
    with pytest.raises(UsageError, match="exactly one of"):
        authorization(parse_grants([f"az://acct/x/=static:{tmp_path / 'two'}"]))
    with pytest.raises(UsageError, match="cannot read"):
        authorization(parse_grants([f"s3://x/=static:{tmp_path / 'missing'}"]))
