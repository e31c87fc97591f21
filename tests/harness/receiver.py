"""A tiny HTTP receiver on loopback that records every request: a stand-in for heartbeat URLs
(healthchecks.io, UptimeRobot), Slack webhooks and a Pushgateway's push API.

    with Receiver() as rx:
        url = rx.url("/ping/abc")
        ...
        rx.requests  -> [Request(method, path, headers, body: bytes)]
        rx.fail_paths.add("/down")   # answer 500 there
"""

from __future__ import annotations

import collections
import http.server
import threading

from tests.harness.services import LOOPBACK, free_port

Request = collections.namedtuple("Request", "method path headers body")


class Receiver:
    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.fail_paths: set[str] = set()
        self.port = free_port()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def url(self, path: str = "/") -> str:
        return f"http://{LOOPBACK}:{self.port}{path}"

    def paths(self, method: str | None = None) -> list[str]:
        return [r.path for r in self.requests if method is None or r.method == method]

    def start(self) -> "Receiver":
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                receiver.requests.append(Request(self.command, self.path, dict(self.headers), body))
                status = 500 if self.path in receiver.fail_paths else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_GET = do_POST = do_PUT = do_DELETE = _record

            def log_message(self, *args) -> None:  # quiet test output
                pass

        self._server = http.server.ThreadingHTTPServer((LOOPBACK, self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "Receiver":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
