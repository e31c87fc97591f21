"""Private redis-server instances for tests (the shared one on 6379 is never touched).

    with RedisServer(password="pw", config=["rename-command SYNC \\"\\""]) as srv:
        srv.call("SET", "k", "v"); srv.fingerprint() -> {"db0": {b"k": (b"string", payload, False)}}

Each binds a free port on 127.0.0.1 and keeps its files in its own temporary directory;
``data_dir`` servers (``RedisServer(data_dir=...)``) load what is there at start.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import sys
from pathlib import Path

_COLLECTIONS = str(Path(__file__).resolve().parents[2] / ".cache" / "collections")  # scripts/bootstrap.sh links it
if _COLLECTIONS not in sys.path:
    sys.path.insert(0, _COLLECTIONS)

from ansible_collections.offsite.backup.plugins.module_utils._engine.sources.redis import (  # noqa: E402
    RespConnection, keyspace, parse_info)
from tests.harness.services import free_port  # noqa: E402


class RedisServer:
    def __init__(self, password: str | None = None, config: list[str] | None = None, data_dir: str | None = None):
        self.password = password
        self.config = list(config or [])
        self.tmpdir = tempfile.mkdtemp(prefix="offsite-test-redis-")
        self.data_dir = data_dir or self.tmpdir
        self.port = 0
        self.proc: subprocess.Popen | None = None

    def start(self) -> "RedisServer":
        self.port = free_port()
        conf = [f"port {self.port}", "bind 127.0.0.1", f"dir {self.data_dir}", "save \"\"", "appendonly no",
                f"logfile {self.tmpdir}/redis.log", "daemonize no"] + self.config
        if self.password:
            conf.append(f"requirepass {self.password}")
        path = Path(self.tmpdir) / "redis.conf"
        path.write_text("\n".join(conf) + "\n")
        os.chmod(path, 0o600)
        self.proc = subprocess.Popen(["redis-server", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                if self.call("PING") in ("PONG", b"PONG"):
                    return self
            except (OSError, Exception):
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start: " + (Path(self.tmpdir) / "redis.log").read_text()[-2000:])

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()

    def call(self, *args, db: int = 0):
        conn = RespConnection(("127.0.0.1", self.port), timeout=10)
        try:
            if self.password:
                conn.command("AUTH", self.password)
            if db:
                conn.command("SELECT", db)
            return conn.command(*args)
        finally:
            conn.close()

    def keyspace(self) -> dict:
        return keyspace(parse_info(self.call("INFO", "keyspace").decode()))

    READ = {"string": ("GET",), "hash": ("HGETALL",), "list": ("LRANGE", 0, -1), "set": ("SMEMBERS",),
            "zset": ("ZRANGE", 0, -1, "WITHSCORES"), "stream": ("XRANGE", "-", "+")}

    def fingerprint(self) -> dict:
        """Every key of every database: (type, value, has a TTL); the value as read, not as
        DUMPed (a server may encode the same value differently after loading an RDB)."""
        result = {}
        for db in self.keyspace():
            n = int(db[2:])
            entry = {}
            for key in self.call("KEYS", "*", db=n):
                kind = self.call("TYPE", key, db=n)
                read = self.READ[kind]
                value = self.call(read[0], key, *read[1:], db=n)
                if kind in ("set", "hash"):
                    value = sorted(value) if kind == "set" else sorted(zip(value[::2], value[1::2]))
                entry[key] = (kind, repr(value), self.call("PTTL", key, db=n) > 0)
            result[db] = entry
        return result

    def source(self, **extra) -> dict:
        src = {"type": "redis", "host": "127.0.0.1", "port": self.port}
        if self.password:
            src["password"] = self.password
        src.update(extra)
        return src
