"""Cloud storage through real mounts: S3 (moto) and Azure (Azurite) on loopback, GCS wiring."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from urllib.parse import unquote

import icechunk
import numpy as np
import zarr
from zarr.storage import LocalStore

from harness.mount import run_icefs
from harness.servers import AZURITE_ACCOUNT, AZURITE_KEY, clean_env


def icefs(*args, env=None, timeout=120):
    return run_icefs(*args, timeout=timeout, env=env or clean_env())


def unique(name):
    return f"{name}-{uuid.uuid4().hex[:8]}"


def seed(storage):
    """A repository with one array on main, written straight through Icechunk."""
    repo = icechunk.Repository.create(storage)
    session = repo.writable_session("main")
    group = zarr.group(store=session.store, attributes={"seeded": True})
    group.create_array("x", shape=(6,), chunks=(3,), dtype="i4")[:] = np.arange(6)
    return repo, session.commit("seeded directly")


def full_cycle(m, repo):
    """Read existing data, write with LocalStore, commit, and read the commit directly."""
    main = m.mountpoint / "branches" / "main"
    np.testing.assert_array_equal(
        zarr.open_array(LocalStore(main), path="x", mode="r")[:], np.arange(6)
    )
    group = zarr.open_group(LocalStore(main), mode="r+")
    group.create_array("y", shape=(4,), chunks=(2,), dtype="f4")[:] = [1.5, 2.5, 3.5, 4.5]
    with open(main / ".icefs" / "commit", "w") as f:
        f.write("written through icefs")
    direct = zarr.open_group(repo.readonly_session(branch="main").store, mode="r")
    np.testing.assert_array_equal(direct["y"][:], [1.5, 2.5, 3.5, 4.5])
    assert next(iter(repo.ancestry(branch="main"))).message == "written through icefs"


# -- S3 --------------------------------------------------------------------------------------


def test_s3_full_cycle_with_config_file_secrets(s3_server, mount_factory, tmp_path):
    bucket = s3_server.create_bucket(unique("cycle"))
    repo, _ = seed(s3_server.storage(bucket, "data"))
    conf = tmp_path / "s3.toml"
    conf.write_text(
        f'[mount]\nregion = "us-east-1"\nendpoint_url = "{s3_server.endpoint}"\n'
        f'allow_http = true\nforce_path_style = true\naccess_key_id = "{s3_server.key_id}"\n'
        f'secret_access_key = "{s3_server.secret}"\n'
    )
    os.chmod(conf, 0o600)
    m = mount_factory(f"s3://{bucket}/data", "--config", str(conf))
    full_cycle(m, repo)
    # the secret shows nowhere: log, status, stats, the daemon's command line
    mnt = m.mountpoint
    seen = (
        m.log_text()
        + (mnt / ".icefs/status").read_text()
        + (mnt / ".icefs/stats").read_text()
        + (mnt / "branches/main/.icefs/status").read_text()
        + open(f"/proc/{m.proc.pid}/cmdline").read()
    )
    assert s3_server.secret not in seen


def test_s3_static_keys_from_files_and_from_env(s3_server, mount_factory, tmp_path):
    bucket = s3_server.create_bucket(unique("creds"))
    seed(s3_server.storage(bucket, "r"))
    key_file, secret_file = tmp_path / "id", tmp_path / "secret"
    key_file.write_text(s3_server.key_id + "\n")
    secret_file.write_text(s3_server.secret + "\n")
    m = mount_factory(
        f"s3://{bucket}/r",
        *s3_server.options(),
        "--access-key-id-file",
        str(key_file),
        "--secret-access-key-file",
        str(secret_file),
        name="files",
    )
    assert "x" in os.listdir(m.mountpoint / "branches/main")
    env = dict(
        clean_env(),
        AWS_ACCESS_KEY_ID=s3_server.key_id,
        AWS_SECRET_ACCESS_KEY=s3_server.secret,
        AWS_SESSION_TOKEN="session-token-1",
        AWS_REGION="us-east-1",
        AWS_ENDPOINT_URL=s3_server.endpoint,
    )
    mnt = tmp_path / "envmnt"
    mnt.mkdir()
    result = icefs(
        "mount",
        f"s3://{bucket}/r",
        str(mnt),
        "--allow-http",
        "--force-path-style",
        "--log-file",
        str(tmp_path / "env.log"),
        env=env,
    )
    try:
        assert result.returncode == 0, result.stderr
        assert "x" in os.listdir(mnt / "branches/main")
    finally:
        icefs("umount", str(mnt))


def test_s3_secret_on_command_line_is_warned(s3_server, mount_factory, tmp_path):
    bucket = s3_server.create_bucket(unique("warn"))
    seed(s3_server.storage(bucket, "r"))
    mnt = tmp_path / "m"
    mnt.mkdir()
    result = icefs(
        "mount",
        f"s3://{bucket}/r",
        str(mnt),
        *s3_server.options(),
        "--access-key-id",
        s3_server.key_id,
        "--secret-access-key",
        s3_server.secret,
        "--session-token",
        "tok-123",
        "--log-file",
        str(tmp_path / "log"),
    )
    try:
        assert result.returncode == 0, result.stderr
        assert "shows in ps" in result.stderr
        ps = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
        daemon = [line for line in ps.splitlines() if "--ready-fd" in line and str(mnt) in line]
        assert daemon, "the background daemon runs"
        assert all(s3_server.secret not in line for line in daemon), "not in the daemon's argv"
    finally:
        icefs("umount", str(mnt))
    assert s3_server.secret not in (tmp_path / "log").read_text()


def test_s3_fail_fast(s3_server, tmp_path):
    mnt = tmp_path / "m"
    mnt.mkdir()
    env = dict(
        clean_env(), AWS_ACCESS_KEY_ID=s3_server.key_id, AWS_SECRET_ACCESS_KEY=s3_server.secret
    )
    bucket = s3_server.create_bucket(unique("empty"))
    cases = [
        ([f"s3://{unique('nobucket')}/r", *s3_server.options()], 3, "does not exist"),
        ([f"s3://{bucket}/nothing-here", *s3_server.options()], 3, "not an Icechunk"),
        (
            [
                f"s3://{bucket}/r",
                "--region",
                "us-east-1",
                "--endpoint-url",
                "http://127.0.0.1:9",
                "--allow-http",
                "--force-path-style",
                "--connect-timeout",
                "1",
                "--operation-timeout",
                "2",
                "--max-retries",
                "1",
            ],
            6,
            "Connection refused",
        ),
        ([f"s3://{bucket}/r", "--credential-type", "sas-token"], 2, "does not apply"),
        ([f"s3://{bucket}/r", "--credential-type", "static"], 2, "needs"),
    ]
    for args, code, needle in cases:
        started = time.monotonic()
        result = icefs(
            "mount", args[0], str(mnt), *args[1:], env=clean_env() if "static" in args else env
        )
        assert result.returncode == code, (args, result.stderr)
        assert needle in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert time.monotonic() - started < 30
        assert s3_server.secret not in result.stderr
        assert not os.path.ismount(mnt)


def test_s3_cli_init_and_refs_with_repo(s3_server, tmp_path):
    bucket = s3_server.create_bucket(unique("cli"))
    env = dict(
        clean_env(), AWS_ACCESS_KEY_ID=s3_server.key_id, AWS_SECRET_ACCESS_KEY=s3_server.secret
    )
    url = f"s3://{bucket}/via-cli"
    opts = [*s3_server.options()]
    assert icefs("init", url, *opts, env=env).returncode == 0
    assert icefs("branch", "create", "dev", "--repo", url, *opts, env=env).returncode == 0
    listed = json.loads(icefs("branch", "list", "--repo", url, "--json", *opts, env=env).stdout)
    assert sorted(b["name"] for b in listed) == ["dev", "main"]


# -- Azure -----------------------------------------------------------------------------------


def azure_storage(server, container, prefix):
    os.environ["AZURITE_BLOB_STORAGE_URL"] = f"http://127.0.0.1:{server.port}"
    return icechunk.azure_storage(
        account=AZURITE_ACCOUNT,
        container=container,
        prefix=prefix,
        access_key=AZURITE_KEY,
        config={"azure_storage_use_emulator": "true"},
    )


def test_azure_full_cycle_with_access_key(azure_server, mount_factory, tmp_path):
    container = azure_server.create_container(unique("cycle"))
    repo, _ = seed(azure_storage(azure_server, container, "data"))
    key = tmp_path / "key"
    key.write_text(AZURITE_KEY)
    m = mount_factory(
        f"az://{AZURITE_ACCOUNT}/{container}/data",
        "--endpoint-url",
        azure_server.endpoint,
        "--access-key-file",
        str(key),
    )
    full_cycle(m, repo)
    assert AZURITE_KEY not in m.log_text()


def test_azure_sas_token_from_env_and_anonymous(azure_server, mount_factory, tmp_path):
    container = azure_server.create_container(unique("sas"))
    seed(azure_storage(azure_server, container, "r"))
    url = f"az://{AZURITE_ACCOUNT}/{container}/r"
    sas = tmp_path / "sas.token"
    sas.write_text(azure_server.sas_token(container))
    m = mount_factory(
        url, "--endpoint-url", azure_server.endpoint, "--sas-token-file", str(sas), name="sas"
    )
    assert "x" in os.listdir(m.mountpoint / "branches/main")
    env = dict(clean_env(), AZURE_STORAGE_ACCOUNT_KEY=AZURITE_KEY)
    mnt = tmp_path / "envmnt"
    mnt.mkdir()
    result = icefs(
        "mount",
        url,
        str(mnt),
        "--endpoint-url",
        azure_server.endpoint,
        "--log-file",
        str(tmp_path / "env.log"),
        env=env,
    )
    try:
        assert result.returncode == 0, result.stderr
        assert "x" in os.listdir(mnt / "branches/main")
    finally:
        icefs("umount", str(mnt))
    public = azure_server.create_container(unique("public"), public=True)
    seed(azure_storage(azure_server, public, "p"))
    anon = mount_factory(
        f"az://{AZURITE_ACCOUNT}/{public}/p",
        "--endpoint-url",
        azure_server.endpoint,
        "--anonymous",
        "--read-only",
        name="anon",
    )
    np.testing.assert_array_equal(
        zarr.open_array(LocalStore(anon.mountpoint / "branches/main"), path="x")[:], np.arange(6)
    )


def test_azure_wrong_key_and_missing_container_fail_fast(azure_server, tmp_path):
    container = azure_server.create_container(unique("bad"))
    seed(azure_storage(azure_server, container, "r"))
    mnt = tmp_path / "m"
    mnt.mkdir()
    wrong = tmp_path / "wrong"
    wrong.write_text("A" + AZURITE_KEY[1:])
    result = icefs(
        "mount",
        f"az://{AZURITE_ACCOUNT}/{container}/r",
        str(mnt),
        "--endpoint-url",
        azure_server.endpoint,
        "--access-key-file",
        str(wrong),
    )
    assert result.returncode == 6, result.stderr
    assert "privileges" in result.stderr or "403" in result.stderr or "auth" in result.stderr
    assert wrong.read_text() not in result.stderr
    good = tmp_path / "good"
    good.write_text(AZURITE_KEY)
    result = icefs(
        "mount",
        f"az://{AZURITE_ACCOUNT}/{unique('none')}/r",
        str(mnt),
        "--endpoint-url",
        azure_server.endpoint,
        "--access-key-file",
        str(good),
    )
    assert result.returncode == 3
    assert not os.path.ismount(mnt)


# -- GCS: wiring against a recording server ------------------------------------------------


def test_gcs_credentials_reach_the_endpoint(gcs_recorder, tmp_path):
    """No GCS emulator serves Icechunk's XML API here: check what the client sends."""
    mnt = tmp_path / "m"
    mnt.mkdir()
    key = {
        "gcs_base_url": gcs_recorder.url,
        "disable_oauth": True,
        "client_email": "icefs@test.invalid",
        "private_key_id": "k1",
        "private_key": "not-a-real-key",
    }
    key_file = tmp_path / "sa.json"
    key_file.write_text(json.dumps(key))
    token = tmp_path / "token"
    token.write_text("bearer-secret-123")
    cases = [
        ("service-account-key", ["--service-account-key-file", str(key_file)], None),
        ("service-account-file", ["--service-account-file", str(key_file)], None),
        (
            "bearer-token",
            ["--gcs-base-url", gcs_recorder.url, "--allow-http", "--bearer-token-file", str(token)],
            "Bearer bearer-secret-123",
        ),
    ]
    for kind, args, auth in cases:
        gcs_recorder.requests.clear()
        result = icefs(
            "mount",
            "gs://my-bucket/some/prefix",
            str(mnt),
            "--credential-type",
            kind,
            *args,
            "--max-retries",
            "0",
        )
        assert result.returncode == 3, (kind, result.stderr)  # 404 everywhere: no repository
        assert "bearer-secret-123" not in result.stderr
        assert gcs_recorder.requests, f"{kind}: nothing reached the endpoint"
        for req in gcs_recorder.requests:
            path = unquote(req.path)
            assert path.startswith("/my-bucket/some/prefix/"), path
            assert req.authorization == auth, (kind, req)


def test_gcs_anonymous_and_application_default_are_wired(tmp_path):
    """Both would ask Google's metadata server or endpoint: checked as built, not sent."""
    from icefs.storage import parse_storage, resolve_spec
    from icefs.store.open import make_storage

    for cli, expected in [({"anonymous": True}, "anonymous"), ({}, "env")]:
        spec, _ = resolve_spec(parse_storage("gs://b/p"), cli, {}, env={})
        assert spec.credential_type == expected
        assert "gcs" in repr(make_storage(spec)).lower()
