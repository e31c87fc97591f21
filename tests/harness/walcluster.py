"""A throwaway PostgreSQL cluster (initdb, free port, under a temp dir) that archives its WAL
with ``offsite-backup wal-push``, for the WAL archiving tests and bench/wal_archiving.py.

The server runs as ``postgres`` and its archive_command as well, so everything the command
reads lives in a directory that user owns (``home``): the job file, keys, a local repository.
The test venv's interpreter lives under /root, which ``postgres`` cannot enter: the command
runs the system ``python3`` (the same 3.11 ABI) with the venv's site-packages on PYTHONPATH,
which is the engine and its libraries exactly as the other tests run them (``-S``: not the
system's own dist-packages).

    with WalCluster() as pg:
        pg.write_job({...})             # job.yml in pg.home (0600, owned by postgres)
        pg.start(archive_command=pg.push_command())
        pg.sql("CREATE TABLE t(x int)"); pg.switch_wal()
        pg.wait_archived(name)          # pg_stat_archiver
"""

from __future__ import annotations

import glob
import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

from tests.harness import COLLECTIONS_PATH
from tests.harness.services import LOOPBACK, _as_postgres, free_port, pg_bindir

CLI_MODULE = "ansible_collections.offsite.backup.plugins.module_utils._engine.cli"
SYSTEM_PYTHON = "/usr/bin/python3"


def cli_prefix() -> str:
    """The offsite-backup command as the ``postgres`` user can run it (a shell word list)."""
    env = f"PYTHONPATH={shlex.quote(str(COLLECTIONS_PATH))}:{shlex.quote(_venv_site())} PYTHONWARNINGS=ignore"
    return f"env {env} {SYSTEM_PYTHON} -S -m {CLI_MODULE}"


def _venv_site() -> str:
    import zstandard  # the venv's own: its site-packages is the one to hand on
    return str(Path(zstandard.__file__).resolve().parent.parent)


class WalCluster:
    def __init__(self, archive_timeout: int = 0, beside: "WalCluster | None" = None, name: str = "data") -> None:
        """A new cluster (initdb) in a new home; ``beside``: an empty data directory ``name`` in
        that cluster's home instead (for pg_basebackup), sharing its job file and keys."""
        self.bindir = pg_bindir()
        pw = pwd.getpwnam("postgres")
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        if beside is None:
            self.home = tempfile.mkdtemp(prefix="offsite-walpg-")
            os.chmod(self.home, 0o700)
            os.chown(self.home, self.uid, self.gid)
        else:
            self.home = beside.home
        self.datadir = os.path.join(self.home, name)
        self.sockdir = self.mkdir("sock")
        self.log = os.path.join(self.home, name + ".log")
        self.job = os.path.join(self.home, "job.yml")
        self.port: int | None = None
        self.archive_timeout = archive_timeout
        self.started = False
        if beside is None:
            self._run(["initdb", "-D", self.datadir, "-U", "postgres", "--auth=trust", "-E", "UTF8",
                       "--no-locale", "--no-sync"])
        else:
            self.mkdir(name)

    # files the server's user can read -------------------------------------------------------
    def mkdir(self, name: str) -> str:
        path = os.path.join(self.home, name)
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.chown(path, self.uid, self.gid)
        return path

    def give(self, source: str, name: str | None = None) -> str:
        """A private copy of ``source`` (a key file) in home, owned by postgres, 0600."""
        path = os.path.join(self.home, name or os.path.basename(source))
        shutil.copyfile(source, path)
        os.chown(path, self.uid, self.gid)
        os.chmod(path, 0o600)
        return path

    def write(self, name: str, text: str) -> str:
        path = os.path.join(self.home, name)
        with open(path, "w") as handle:
            handle.write(text)
        os.chown(path, self.uid, self.gid)
        os.chmod(path, 0o600)
        return path

    def write_job(self, job: dict, name: str = "job.yml") -> str:
        return self.write(name, yaml.safe_dump(job, sort_keys=False))

    def push_command(self, job: str | None = None, extra: str = "") -> str:
        return f"{cli_prefix()} wal-push {shlex.quote(job or self.job)} %p {extra}".strip()

    def fetch_command(self, job: str | None = None, extra: str = "") -> str:
        return f"{cli_prefix()} wal-fetch {shlex.quote(job or self.job)} %f %p {extra}".strip()

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """The command run as the server's user, as PostgreSQL runs it."""
        argv = shlex.split(cli_prefix()) + list(args)
        return subprocess.run(_as_postgres(argv), capture_output=True, text=True, timeout=300, cwd=self.home,
                              stdin=subprocess.DEVNULL, check=False)

    # the server -----------------------------------------------------------------------------
    def configure(self, **settings) -> None:
        lines = []
        for key, value in settings.items():
            value = str(value).replace("'", "''")
            lines.append(f"{key} = '{value}'")
        with open(os.path.join(self.datadir, "postgresql.auto.conf"), "a") as handle:
            handle.write("\n".join(lines) + "\n")

    def start(self, archive_command: str | None = None, **settings) -> None:
        self.port = self.port or free_port()
        base = {"port": self.port, "listen_addresses": LOOPBACK, "unix_socket_directories": self.sockdir,
                "fsync": "off", "wal_level": "replica", "archive_mode": "on",
                "archive_timeout": self.archive_timeout, "max_wal_senders": 4}
        if archive_command is not None:
            base["archive_command"] = archive_command
        base.update(settings)
        self.configure(**base)
        self._run(["pg_ctl", "-D", self.datadir, "-l", self.log, "-w", "-t", "60", "start"])
        self.started = True

    def restart(self) -> None:
        self._run(["pg_ctl", "-D", self.datadir, "-l", self.log, "-w", "-t", "60", "-m", "fast", "restart"])

    def stop(self) -> None:
        if os.path.exists(os.path.join(self.datadir, "postmaster.pid")):
            subprocess.run(_as_postgres([os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "-m",
                                         "immediate", "-w", "-t", "30", "stop"]),
                           cwd="/", stdin=subprocess.DEVNULL, capture_output=True, check=False)
        self.started = False

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess:
        argv = [os.path.join(self.bindir, argv[0])] + argv[1:]
        r = subprocess.run(_as_postgres(argv), cwd=self.home, stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {r.stdout}{r.stderr}\n{self.log_text()[-3000:]}")
        return r

    def log_text(self) -> str:
        try:
            return Path(self.log).read_text(errors="replace")
        except OSError:
            return ""

    # SQL ------------------------------------------------------------------------------------
    def sql(self, query: str, db: str = "postgres") -> str:
        r = subprocess.run([os.path.join(self.bindir, "psql"), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
                            "-h", self.sockdir, "-p", str(self.port), "-U", "postgres", "-d", db, "-c", query],
                           capture_output=True, text=True, check=False, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"psql failed: {r.stderr}")
        return r.stdout.strip()

    def switch_wal(self) -> str:
        """Close the current segment (after writing into it) and return its file name."""
        self.sql("CREATE TABLE IF NOT EXISTS wal_filler(x int); INSERT INTO wal_filler VALUES (1)")
        return self.sql("SELECT pg_walfile_name(pg_switch_wal())")

    def archiver(self) -> dict:
        row = self.sql("SELECT archived_count, coalesce(last_archived_wal, ''), "
                       "coalesce(extract(epoch FROM last_archived_time)::text, ''), failed_count, "
                       "coalesce(last_failed_wal, '') FROM pg_stat_archiver")
        archived, last, when, failed, last_failed = row.split("|")
        return {"archived_count": int(archived), "last_archived_wal": last,
                "last_archived_time": float(when) if when else None, "failed_count": int(failed),
                "last_failed_wal": last_failed}

    def wait_archived(self, name: str, timeout: float = 180) -> dict:
        """Until pg_stat_archiver says ``name`` (or a later file) was archived."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.archiver()
            if state["last_archived_wal"] and state["last_archived_wal"][:24] >= name[:24]:
                return state
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} not archived in {timeout}s: {state}\n{self.log_text()[-3000:]}")
            time.sleep(0.2)

    def wal_files(self) -> list[str]:
        return sorted(os.path.basename(p) for p in glob.glob(os.path.join(self.datadir, "pg_wal", "*"))
                      if os.path.isfile(p))
