"""Monitoring endpoints on loopback for the runner's tests.

    Pushgateway()      Debian's prometheus-pushgateway on a free loopback port; .metrics() -> text
    HttpReceiver()     records every request (method, path, headers, body) on a free port;
                       fail_paths: paths answered with HTTP 500; .requests, .wait_for(pred)
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request

from tests.harness.services import LOOPBACK, Service, _kill, _wait_tcp, free_port


class Pushgateway(Service):
    kind = "pushgateway"
    state_fields = ("port", "url", "log")

    def __init__(self) -> None:
        super().__init__()
        self.port: int | None = None
        self.url: str | None = None
        self.log: str | None = None

    def _start(self) -> None:
        binary = shutil.which("prometheus-pushgateway") or "/usr/bin/prometheus-pushgateway"
        if not os.path.exists(binary):
            raise RuntimeError("prometheus-pushgateway is not installed (scripts/bootstrap.sh installs it)")
        self.tmpdir = tempfile.mkdtemp(prefix="offsite-pushgw-")
        self.log = os.path.join(self.tmpdir, "pushgateway.log")
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        with open(self.log, "ab") as logf:
            self._proc = subprocess.Popen(
                [binary, f"--web.listen-address={LOOPBACK}:{self.port}"],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=self.tmpdir)
        self.pid = self._proc.pid
        _wait_tcp(self.port, self._proc, self.log, what="prometheus-pushgateway")

    def _stop(self) -> None:
        _kill(self.pid, self._proc, marker="pushgateway")

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as response:
            return response.read().decode()

    def samples(self, name: str) -> dict:
        """{frozenset(label items): value} of one metric as the gateway exposes it."""
        found = {}
        for line in self.metrics().splitlines():
            if not line.startswith(name + "{"):
                continue
            labels_text, value = line[len(name) + 1:].rsplit("} ", 1)
            labels = {}
            for part in labels_text.split('",'):
                key, text = part.split('="', 1)
                labels[key] = text.rstrip('"')
            found[frozenset(labels.items())] = float(value)
        return found


class HttpReceiver:
    """A tiny HTTP server that records what it receives (heartbeats, webhooks)."""

    def __init__(self, fail_paths=()) -> None:
        self.requests: list[dict] = []
        self.fail_paths = set(fail_paths)
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                receiver.requests.append({"method": self.command, "path": self.path,
                                          "headers": dict(self.headers), "body": body.decode("utf-8", "replace")})
                status = 500 if self.path.split("?")[0] in receiver.fail_paths else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            do_GET = do_POST = do_PUT = do_HEAD = _handle

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.url = f"http://{LOOPBACK}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def paths(self) -> list[str]:
        return [r["path"].split("?")[0] for r in self.requests]

    def json_bodies(self, path: str) -> list:
        return [json.loads(r["body"]) for r in self.requests if r["path"].split("?")[0] == path]

    def wait_for(self, predicate, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return predicate()
