"""A private network namespace for tests whose clients must never leave this machine.

`PrivateNetwork` holds a network namespace where only loopback exists (``unshare
--net``, then ``ip link set lo up``); `PrivateNetwork.prefix` runs a command in it
(``nsenter``), so a daemon started that way reaches 127.0.0.1 of the namespace and
nothing else: a cloud client that falls back to a metadata service (169.254.169.254)
gets "network unreachable", and a fixed port a repository names (the Icechunk
corpus's ``localhost:4200``) is free there.  The mounts those daemons make are
visible to the test as usual: only the network is private.

Run as a module inside such a namespace, it serves S3 objects from moto on a fixed
port (``python -m tests.netns serve-s3 PORT BUCKET KEY=FILE ...``), printing
``ready`` once they are in place and serving until its standard input closes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["PrivateNetwork"]

ROOT = Path(__file__).resolve().parent.parent
#: Credentials the S3 server in the namespace takes (moto accepts any).
KEY_ID = "icefs-netns-key"
SECRET = "icefs-netns-secret-71c2"


class PrivateNetwork:
    """A network namespace with only loopback, kept alive by a sleeping process."""

    def __init__(self) -> None:
        self._holder = subprocess.Popen(
            ["unshare", "--net", "sleep", "infinity"], stdin=subprocess.DEVNULL
        )
        own = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{self._holder.pid}/ns/net") == own:
            if self._holder.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("unshare --net did not make a network namespace")
            time.sleep(0.01)
        self._servers: list[subprocess.Popen[str]] = []
        self.run("ip", "link", "set", "lo", "up")

    @property
    def prefix(self) -> list[str]:
        """The command prefix that runs a program inside the namespace."""
        return ["nsenter", f"--net=/proc/{self._holder.pid}/ns/net"]

    def run(self, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.prefix, *cmd], capture_output=True, text=True, timeout=timeout, check=True
        )

    def serve_s3(self, port: int, bucket: str, objects: dict[str, bytes], tmp: Path) -> None:
        """Serve *objects* (key -> bytes) in *bucket* from moto on 127.0.0.1:*port*."""
        items = []
        for i, (key, data) in enumerate(objects.items()):
            path = tmp / f"object-{i}"
            path.write_bytes(data)
            items.append(f"{key}={path}")
        server = subprocess.Popen(
            [
                *self.prefix,
                sys.executable,
                "-m",
                "tests.netns",
                "serve-s3",
                str(port),
                bucket,
                *items,
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # moto logs every request
            text=True,
        )
        self._servers.append(server)
        assert server.stdout is not None
        line = server.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"the S3 server in the namespace did not start: {line!r}")

    def static_keys(self, path: Path) -> Path:
        """A `--virtual PREFIX=static:PATH` key file for the namespace's S3 server."""
        path.write_text(f"access_key_id = {KEY_ID}\nsecret_access_key = {SECRET}\n")
        path.chmod(0o600)
        return path

    def close(self) -> None:
        for server in self._servers:
            if server.stdin is not None:
                server.stdin.close()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        self._holder.kill()
        self._holder.wait()


def _serve_s3(port: int, bucket: str, items: list[str]) -> None:
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    client = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
    )
    client.create_bucket(Bucket=bucket)
    for item in items:
        key, _, path = item.partition("=")
        client.put_object(Bucket=bucket, Key=key, Body=Path(path).read_bytes())
    print("ready", flush=True)
    sys.stdin.read()  # until the test closes it
    server.stop()


if __name__ == "__main__":
    if sys.argv[1] == "serve-s3":
        _serve_s3(int(sys.argv[2]), sys.argv[3], sys.argv[4:])
