"""scripts/bootstrap.sh starts MariaDB and Redis where none runs, as it does PostgreSQL, so a
fresh Debian needs nothing by hand. Proven on free ports with a throwaway data directory (the
variables bootstrap honours), so the suite's own servers on 3306 and 6379 are never touched."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.harness.ansible import REPO_ROOT
from tests.harness.services import free_port

BOOTSTRAP = REPO_ROOT / "scripts" / "bootstrap.sh"


def stop(pidfile: Path) -> None:
    """SIGTERM the server bootstrap started (only that pid), and wait until it is gone."""
    if not pidfile.exists():
        return
    pid = int(pidfile.read_text().strip())
    try:
        os.kill(pid, signal.SIGTERM)
        for _attempt in range(100):
            os.kill(pid, 0)
            time.sleep(0.1)
    except ProcessLookupError:
        pass


def test_bootstrap_starts_mariadb_and_redis_where_none_runs():
    scratch = Path(tempfile.mkdtemp(prefix="offsite-bootstrap-"))
    scratch.chmod(0o755)                         # mariadbd runs as the mysql user
    mysql_port, redis_port = free_port(), free_port()
    datadir, redis_dir = scratch / "mariadb", scratch / "redis"
    env = dict(os.environ, OFFSITE_MARIADB_PORT=str(mysql_port), OFFSITE_MARIADB_DATADIR=str(datadir),
               OFFSITE_MARIADB_SOCKET=str(datadir / "mysqld.sock"), OFFSITE_REDIS_PORT=str(redis_port),
               OFFSITE_REDIS_DIR=str(redis_dir))
    try:
        first = subprocess.run([str(BOOTSTRAP), "mariadb", "redis"], env=env, capture_output=True, text=True,
                               timeout=300, check=False)
        assert first.returncode == 0, first.stdout + first.stderr
        assert f"starting mariadb on 127.0.0.1:{mysql_port}" in first.stdout, first.stdout
        assert f"starting redis on 127.0.0.1:{redis_port}" in first.stdout, first.stdout

        # as the tests use them: root over TCP without a password, utf8mb4; Redis without a password
        mysql = subprocess.run(["mysql", "--no-defaults", "--host=127.0.0.1", f"--port={mysql_port}", "--user=root",
                                "--batch", "--skip-column-names", "-e",
                                "CREATE DATABASE probe; SELECT @@character_set_server, @@bind_address"],
                               capture_output=True, text=True, check=False)
        assert mysql.returncode == 0, mysql.stderr
        assert mysql.stdout.split() == ["utf8mb4", "127.0.0.1"]
        redis = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(redis_port), "ping"],
                               capture_output=True, text=True, check=False)
        assert redis.stdout.strip() == "PONG"

        again = subprocess.run([str(BOOTSTRAP), "mariadb", "redis"], env=env, capture_output=True, text=True,
                               timeout=120, check=False)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "starting" not in again.stdout
        assert f"mariadb: running on 127.0.0.1:{mysql_port}" in again.stdout
        assert f"redis: running on 127.0.0.1:{redis_port}" in again.stdout
    finally:
        stop(datadir / "mariadbd.pid")
        stop(redis_dir / "redis-server.pid")
        shutil.rmtree(scratch, ignore_errors=True)
