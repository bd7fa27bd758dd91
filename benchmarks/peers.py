"""What users pick instead of icefs, beside it on the same server and latency (group
``peers`` of benchmarks/cloud.py): ``rclone mount`` (Debian's rclone, with
``--vfs-cache-mode off`` and ``full``) and s3fs-fuse (Debian's s3fs), each over a
plain-Zarr copy of ``big`` and ``few`` (5,000 chunk files) in the same bucket.

For each: a cold read of ``big`` with zarr on a new mount (page cache dropped), ``find``
of ``few`` on a new mount, and a read of ``big`` again after a remount (page cache
dropped; rclone's full cache and icefs's read cache kept). Once each (the slowest take
minutes); direct Icechunk's cold read beside them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from functools import partial
from typing import TYPE_CHECKING

from zarr.storage import LocalStore

from benchmarks.cloudread import _direct_read
from benchmarks.common import Row, Timing, drop_caches
from benchmarks.read import read_one
from harness.servers import stop

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from benchmarks.cloudsetup import Cloud

#: Where the plain-Zarr copy lives in the bucket.
PLAIN = "plain"
TOOLS = ("icefs", "rclone off", "rclone full", "s3fs")


def upload_plain(cloud: Cloud) -> None:
    """Upload the plain-Zarr copy (written by `build`) under `PLAIN`, not through the proxy."""
    client = cloud.s3.client()
    local = cloud.base / "plain"
    for path in sorted(local.rglob("*")):
        if path.is_file():
            key = f"{PLAIN}/{path.relative_to(local).as_posix()}"
            client.upload_file(str(path), cloud.bucket, key)


def _wait_mounted(mnt: Path, proc: subprocess.Popen[bytes], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not os.path.ismount(mnt):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{proc.args!r} did not mount {mnt}")
        time.sleep(0.05)


@contextlib.contextmanager
def _running(argv: list[str], mnt: Path, env: dict[str, str] | None = None) -> Iterator[Path]:
    mnt.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        _wait_mounted(mnt, proc)
        yield mnt
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True, check=False)
        stop(proc)


def rclone(cloud: Cloud, mode: str, cache: Path) -> contextlib.AbstractContextManager[Path]:
    """``rclone mount`` of the plain copy; its remote declared in environment variables."""
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}  # plain-http endpoint
    remote = {
        "TYPE": "s3",
        "PROVIDER": "Other",
        "ENV_AUTH": "false",
        "ACCESS_KEY_ID": cloud.s3.key_id,
        "SECRET_ACCESS_KEY": cloud.s3.secret,
        "ENDPOINT": cloud.proxy.endpoint,
        "REGION": "us-east-1",
        "FORCE_PATH_STYLE": "true",
    }
    env.update({f"RCLONE_CONFIG_ICE_{k}": v for k, v in remote.items()})
    argv = [
        "rclone",
        "mount",
        f"ice:{cloud.bucket}/{PLAIN}",
        str(cloud.base / "mnt-peer"),
        "--read-only",
        f"--vfs-cache-mode={mode}",
        f"--cache-dir={cache}",
    ]
    return _running(argv, cloud.base / "mnt-peer", env)


def s3fs(cloud: Cloud) -> contextlib.AbstractContextManager[Path]:
    """s3fs-fuse's mount of the plain copy (no cache: its default)."""
    passwd = cloud.base / "s3fs.passwd"
    passwd.write_text(f"{cloud.s3.key_id}:{cloud.s3.secret}\n")
    passwd.chmod(0o600)
    argv = [
        "s3fs",
        f"{cloud.bucket}:/{PLAIN}",
        str(cloud.base / "mnt-peer"),
        "-f",
        "-o",
        f"url={cloud.proxy.endpoint}",
        "-o",
        "use_path_request_style",
        "-o",
        f"passwd_file={passwd}",
        "-o",
        "ro",
    ]
    return _running(argv, cloud.base / "mnt-peer")


@contextlib.contextmanager
def _icefs(cloud: Cloud, cache: Path) -> Iterator[Path]:
    with cloud.mount("read", cache=cache) as m:
        yield m.mountpoint / "tags" / "v1"


def _read(root: Path) -> int:
    return read_one(LocalStore(root, read_only=True), "big")


def _find(root: Path) -> int:
    out = subprocess.run(["find", str(root / "few")], capture_output=True, check=True).stdout
    return out.count(b"\n")


def _mount(cloud: Cloud, tool: str, cache: Path) -> contextlib.AbstractContextManager[Path]:
    if tool == "icefs":
        return _icefs(cloud, cache)
    if tool == "s3fs":
        return s3fs(cloud)
    return rclone(cloud, tool.split()[1], cache)


def peer_rows(cloud: Cloud) -> list[Row]:
    if not (cloud.base / "plain-uploaded").exists():
        upload_plain(cloud)
        (cloud.base / "plain-uploaded").touch()
    direct = Timing("direct")
    direct.timed(partial(_direct_read, cloud))
    rows: list[Row] = []
    for tool in TOOLS:
        cache = cloud.base / f"peer-cache-{tool.replace(' ', '-')}"
        cold, again, walk = Timing("cold"), Timing("again"), Timing("find")
        try:
            with _mount(cloud, tool, cache) as root:
                drop_caches()
                cold.timed(partial(_read, root))
            with _mount(cloud, tool, cache) as root:
                drop_caches()
                walk.timed(partial(_find, root))
            with _mount(cloud, tool, cache) as root:
                drop_caches()
                again.timed(partial(_read, root))
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        rows.append(
            (
                f"{tool}: cold read / re-read after a remount of big (zarr), MiB/s; "
                "find of 'few', s",
                f"{cold.mib_s(cold.best):.0f} / {again.mib_s(again.best):.0f}; "
                f"{walk.best:.2f} ({walk.nbytes} entries)",
                f"direct {direct.mib_s(direct.best):.0f}",
                f"{direct.best / cold.best:.2f}x / {direct.best / again.best:.2f}x of direct",
                "-",
            )
        )
    return rows
