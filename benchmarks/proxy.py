"""A loopback HTTP proxy that adds latency to every request and counts requests by kind.

    python benchmarks/proxy.py --upstream http://127.0.0.1:PORT [--delay-ms 20]

Object stores answer in 10-100 ms; the loopback S3 server (moto) answers in
about one.  Put this proxy between a client and the server and every request
waits ``--delay-ms`` before it is forwarded, as a request to a cloud region
waits one round trip for its first byte.  Bandwidth is not limited.  It counts
requests by kind (GET, LIST, PUT, HEAD, POST, DELETE) and the body bytes each
way.  It prints its port on the first line of its output.

Control requests, answered at once and not counted:
``GET /__proxy/counts`` (JSON), ``POST /__proxy/reset``,
``POST /__proxy/delay?ms=N``.  `Proxy` runs one in a subprocess (its own GIL,
so its copying does not slow the process being measured).
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import json
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections import defaultdict
from typing import Final

#: Request headers not forwarded as they are (hop by hop, or rewritten here).
_HOP: Final = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade"}
)
_CONTROL: Final = "/__proxy/"
#: Response bodies are passed on in pieces of this size.
_PIECE: Final = 1 << 20


def kind(method: str, path: str) -> str:
    """The kind of an S3 request: a GET of a bucket (a listing) is LIST."""
    url = urllib.parse.urlsplit(path)
    if method == "GET":
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        if "list-type" in query or url.path.strip("/").count("/") == 0:
            return "LIST"
    return method


class _Counts:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.delay = 0.0
        self._reset()

    def _reset(self) -> None:
        self.requests: dict[str, int] = defaultdict(int)
        self.sent: dict[str, int] = defaultdict(int)  # bytes to the server
        self.received: dict[str, int] = defaultdict(int)  # bytes from the server

    def reset(self) -> None:
        with self._lock:
            self._reset()

    def add(self, what: str, sent: int, received: int) -> None:
        with self._lock:
            self.requests[what] += 1
            self.sent[what] += sent
            self.received[what] += received

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {
                k: {"requests": n, "sent": self.sent[k], "received": self.received[k]}
                for k, n in sorted(self.requests.items())
            }


def _handler(
    upstream: tuple[str, int], counts: _Counts
) -> type[http.server.BaseHTTPRequestHandler]:
    local = threading.local()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        #: A reply goes out in two writes (head, then body). With Nagle's algorithm the
        #: body of a small reply waits for the client to acknowledge the head, which
        #: its delayed ACK holds back ~40 ms: every small GET took the delay plus ~45
        #: ms (benchmarks/RESULTS.md, 2026-12-07: the proxy's own delay).
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _upstream(self) -> http.client.HTTPConnection:
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = http.client.HTTPConnection(*upstream, timeout=300)
            return conn

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                parts: list[bytes] = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0], 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(parts)
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _control(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            name = url.path[len(_CONTROL) :]
            if name == "counts":
                answer = json.dumps(counts.snapshot()).encode()
            elif name == "reset":
                counts.reset()
                answer = b"{}"
            elif name == "delay":
                counts.delay = float(urllib.parse.parse_qs(url.query)["ms"][0]) / 1000
                answer = b"{}"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def _forward(self) -> None:
            if self.path.startswith(_CONTROL):
                self._body()
                self._control()
                return
            body = self._body()
            if counts.delay:
                time.sleep(counts.delay)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            if body or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            for attempt in (0, 1):  # a kept-alive upstream connection may have closed
                conn = self._upstream()
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    break
                except (ConnectionError, http.client.HTTPException):
                    conn.close()
                    local.conn = None
                    if attempt:
                        raise
            self.send_response(resp.status, resp.reason)
            length = resp.getheader("Content-Length")
            for k, v in resp.getheaders():
                if k.lower() not in _HOP and k.lower() != "content-length":
                    self.send_header(k, v)
            received = 0
            if self.command == "HEAD" or length is not None:
                self.send_header("Content-Length", length or "0")
                self.end_headers()
                while piece := resp.read(_PIECE):
                    self.wfile.write(piece)
                    received += len(piece)
            else:
                data = resp.read()
                received = len(data)
                self.send_header("Content-Length", str(received))
                self.end_headers()
                self.wfile.write(data)
            counts.add(kind(self.command, self.path), len(body), received)

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

    return Handler


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that went away
            super().handle_error(request, client_address)  # type: ignore[arg-type]


def serve(upstream: str, delay_ms: float, port: int = 0) -> http.server.ThreadingHTTPServer:
    """A started proxy server (in a daemon thread) forwarding to *upstream*."""
    url = urllib.parse.urlsplit(upstream)
    counts = _Counts()
    counts.delay = delay_ms / 1000
    server = _Server(
        ("127.0.0.1", port), _handler((url.hostname or "127.0.0.1", url.port or 80), counts)
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class Proxy:
    """A proxy subprocess in front of *upstream* (an ``http://host:port`` URL)."""

    def __init__(self, upstream: str, delay_ms: float = 20) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--upstream", upstream, "--delay-ms", str(delay_ms)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.delay_ms = delay_ms

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _call(self, method: str, name: str) -> bytes:
        req = urllib.request.Request(f"{self.endpoint}{_CONTROL}{name}", method=method, data=None)
        with urllib.request.urlopen(req, timeout=10) as resp:
            return bytes(resp.read())

    def counts(self) -> dict[str, dict[str, int]]:
        """Requests and bytes by kind since the last `reset`."""
        return dict(json.loads(self._call("GET", "counts")))

    def reset(self) -> None:
        self._call("POST", "reset")

    def set_delay(self, ms: float) -> None:
        self._call("POST", f"delay?ms={ms}")
        self.delay_ms = ms

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def summary(counts: dict[str, dict[str, int]]) -> str:
    """Counts as one short line: ``GET 512 (1024 MiB), LIST 3, PUT 2 (1 MiB)``."""
    parts = []
    for what, c in counts.items():
        moved = c["sent"] + c["received"]
        size = f" ({moved / 2**20:.0f} MiB)" if moved >= 2**20 else ""
        parts.append(f"{what} {c['requests']}{size}")
    return ", ".join(parts) or "none"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="http://host:port of the server")
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = serve(args.upstream, args.delay_ms, args.port)
    print(server.server_address[1], flush=True)
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
