"""Object-store servers on 127.0.0.1 for the tests: moto (S3), Azurite (Azure), a GCS recorder.

Each picks a free port, waits until it answers, and is always stopped by its
session fixture.  Nothing here reaches anything but the loopback address.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Azurite's documented development account key (public, for the emulator only).
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
AZURITE_ACCOUNT = "devstoreaccount1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing answers on 127.0.0.1:{port}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class S3Server:
    port: int
    proc: subprocess.Popen[bytes]
    key_id: str = "icefs-test-key"
    secret: str = "icefs-test-secret-3f9a"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.key_id,
            aws_secret_access_key=self.secret,
        )

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def options(self) -> list[str]:
        return [
            "--region",
            "us-east-1",
            "--endpoint-url",
            self.endpoint,
            "--allow-http",
            "--force-path-style",
        ]

    def storage(self, bucket: str, prefix: str):
        import icechunk

        return icechunk.s3_storage(
            bucket=bucket,
            prefix=prefix,
            region="us-east-1",
            endpoint_url=self.endpoint,
            allow_http=True,
            force_path_style=True,
            access_key_id=self.key_id,
            secret_access_key=self.secret,
        )

    def restart(self) -> None:
        """Stop the server (for fault tests) and start it again on the same port."""
        stop(self.proc)
        self.proc = start_moto(self.port).proc


def start_moto(port: int | None = None) -> S3Server:
    port = port or free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port, proc)
    return S3Server(port, proc)


@dataclass
class AzureServer:
    port: int
    proc: subprocess.Popen[bytes]
    directory: Path

    @property
    def endpoint(self) -> str:
        """What `--endpoint-url` takes for Azurite: its address (the account is in the URL)."""
        return f"http://127.0.0.1:{self.port}"

    def service(self):
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};BlobEndpoint={self.endpoint}/{AZURITE_ACCOUNT};"
        )

    def create_container(self, name: str, public: bool = False) -> str:
        self.service().create_container(name, public_access="container" if public else None)
        return name

    def sas_token(self, container: str) -> str:
        from datetime import UTC, datetime, timedelta

        from azure.storage.blob import ContainerSasPermissions, generate_container_sas

        return generate_container_sas(
            AZURITE_ACCOUNT,
            container,
            account_key=AZURITE_KEY,
            permission=ContainerSasPermissions(
                read=True, write=True, delete=True, list=True, add=True, create=True
            ),
            expiry=datetime.now(UTC) + timedelta(hours=1),
        )


def start_azurite(tmp: Path) -> AzureServer:
    exe = ROOT / ".tools" / "node_modules" / ".bin" / "azurite-blob"
    if not exe.exists():
        found = shutil.which("azurite-blob")
        if found is None:
            raise RuntimeError("azurite is not installed (scripts/bootstrap.sh installs it)")
        exe = Path(found)
    port = free_port()
    proc = subprocess.Popen(
        [
            str(exe),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--location",
            str(tmp),
            "--silent",
            "--skipApiVersionCheck",
            "--disableTelemetry",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port, proc)
    return AzureServer(port, proc, tmp)


@dataclass
class Recorded:
    method: str
    path: str
    authorization: str | None


@dataclass
class GcsRecorder:
    """An HTTP server that records what a GCS client sends and answers 404 to everything."""

    port: int
    server: http.server.ThreadingHTTPServer
    requests: list[Recorded] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_gcs_recorder() -> GcsRecorder:
    recorder: GcsRecorder

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            recorder.requests.append(
                Recorded(self.command, self.path, self.headers.get("Authorization"))
            )
            body = b'{"error": {"code": 404, "message": "No such object"}}'
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    recorder = GcsRecorder(server.server_address[1], server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return recorder


def clean_env() -> dict[str, str]:
    """The environment without any cloud credentials of the machine running the tests."""
    drop = ("AWS_", "AZURE_", "GOOGLE_", "GCS_", "ICECHUNK_", "AZURITE_")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}
