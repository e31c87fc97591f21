"""Small, stable helpers for integration tests: repository / source / target dicts built from
the fixtures, and direct (non-Ansible) looks into the services to check real outcomes.

    s3_repo(moto, bucket, prefix="p")          {type: s3, bucket, prefix, endpoint_url, region, keys}
    sftp_repo(sshd, path) / rsync_repo(sshd, path)    normal port, known_hosts file
    storagebox_repo(sshd, relpath)             SFTP-only port, pinned host_key, path relative to home
    local_repo(path)                           {type: local, path}
    pg_source(db, **extra) / pg_target(db, mode="create", **extra)   127.0.0.1:5432 as postgres
    s3_keys(moto, bucket, prefix="") -> sorted keys;  s3_exists(moto, bucket, key) -> bool (head_object)
    tree(path) -> {relpath: ("file", mode, bytes) | ("dir", mode) | ("link", target)}
    pg_dump_pids(db) -> pids of the pg_dump processes this test process started for db
    kill_pg_dump(db) -> SIGKILL those, return how many
    running(word) -> pids of this test process's descendants with ``word`` in their command line
    cli(*args) -> the offsite-backup command run as cron runs it (CompletedProcess)
    with watching(poll): ... -> poll() called in a thread while the block runs, until it returns True
    partial_bytes(directory) -> bytes in the .partial files there (a dump being written)
    engine_dump(name, source, dest, **options) -> the backup dict, written by the engine in this process
    engine_upload(backup, repositories) -> upload's result, the engine in this process (all "uploaded")
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import botocore.exceptions

from tests.harness import COLLECTIONS_PATH
from tests.harness.ansible import controller_bin

CLI_MODULE = "ansible_collections.offsite.backup.plugins.module_utils._engine.cli"

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_USER = "postgres"


# --- repositories -----------------------------------------------------------------------------


def s3_repo(moto, bucket: str, prefix: str | None = "backups", **extra) -> dict:
    repo = {"type": "s3", "bucket": bucket, "endpoint_url": moto.endpoint_url, "region": moto.region,
            "access_key": moto.access_key, "secret_key": moto.secret_key}
    if prefix:
        repo["prefix"] = prefix
    repo.update(extra)
    return repo


def sftp_repo(sshd, path: str, **extra) -> dict:
    """The normal sshd port, host key checked against the harness's known_hosts file."""
    repo = {"type": "sftp", "host": sshd.host, "port": sshd.port, "user": sshd.user,
            "private_key": sshd.private_key, "known_hosts": sshd.known_hosts, "path": path}
    repo.update(extra)
    return repo


def rsync_repo(sshd, path: str, **extra) -> dict:
    """The normal sshd port, host key checked against the harness's known_hosts file."""
    repo = {"type": "rsync", "host": sshd.host, "port": sshd.port, "user": sshd.user,
            "private_key": sshd.private_key, "known_hosts": sshd.known_hosts, "path": path}
    repo.update(extra)
    return repo


def storagebox_repo(sshd, relpath: str, **extra) -> dict:
    """Like a Hetzner Storage Box: SFTP-only port, pinned ``host_key``, ``path`` relative to the
    login directory. ``relpath`` must exist (create it with ``sshd.make_dir``)."""
    repo = {"type": "sftp", "host": sshd.host, "port": sshd.sftp_only_port, "user": sshd.user,
            "private_key": sshd.private_key, "host_key": sshd.host_key, "path": relpath}
    repo.update(extra)
    return repo


def local_repo(path, **extra) -> dict:
    repo = {"type": "local", "path": str(path)}
    repo.update(extra)
    return repo


# --- PostgreSQL -------------------------------------------------------------------------------


def pg_source(database: str, **extra) -> dict:
    src = {"type": "postgresql", "database": database, "host": PG_HOST, "port": PG_PORT, "user": PG_USER}
    src.update(extra)
    return src


def pg_target(database: str, mode: str = "create", **extra) -> dict:
    tgt = pg_source(database, mode=mode)
    tgt.update(extra)
    return tgt


# --- looking into the services ----------------------------------------------------------------


def s3_keys(moto, bucket: str, prefix: str = "") -> list[str]:
    s3 = moto.client()
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return sorted(keys)


def s3_head(moto, bucket: str, key: str) -> dict | None:
    """``head_object`` of ``key``, or None when it does not exist."""
    try:
        return moto.client().head_object(Bucket=bucket, Key=key)
    except botocore.exceptions.ClientError as e:
        if e.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
            return None
        raise


def s3_exists(moto, bucket: str, key: str) -> bool:
    return s3_head(moto, bucket, key) is not None


def tree(root) -> dict:
    """A comparable description of a directory tree (not following symlinks).

    ``{relpath: ("dir", mode) | ("file", mode, content) | ("link", target)}``; modes are the
    permission bits only.
    """
    root = Path(root)
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), p.read_bytes())
    return out


def _descendants(root_pid: int) -> list[int]:
    """Pids of every living descendant of ``root_pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root_pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def pg_dump_pids(db: str) -> list[int]:
    """pg_dump processes started by this test process (our descendants) that dump ``db``."""
    pids = []
    for pid in _descendants(os.getpid()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"pg_dump" and db.encode() in argv:
            pids.append(pid)
    return pids


def running(word: str) -> list[int]:
    """Processes started by this test process whose command line has ``word`` in it (e.g. the
    AnsiballZ file of a module: ``AnsiballZ_upload``)."""
    found = []
    for pid in _descendants(os.getpid()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if word.encode() in f.read():
                    found.append(pid)
        except OSError:
            continue
    return found


def kill_pg_dump(db: str) -> int:
    """SIGKILL every pg_dump of ``db`` this test process started; returns how many there were."""
    pids = pg_dump_pids(db)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return len(pids)


# --- the offsite-backup command, and watching a run -------------------------------------------


def cli(*args, env_extra=None, wrap=()):
    """Run the command with cron's minimal environment (no terminal: stdin/stdout are pipes),
    on the Python the modules run with (tests.harness.ansible.CONTROLLER_BIN: the distribution's
    where there is one, as on a Debian node); ``wrap``: a command line it runs under (see
    cli_read_only)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": "/root", "SHELL": "/bin/sh", "LANG": "C",
           "PYTHONPATH": str(COLLECTIONS_PATH)}
    env.update(env_extra or {})
    return subprocess.run([*wrap, controller_bin("python"), "-m", CLI_MODULE, *args], env=env, text=True,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=300, check=False)


def cli_read_only(directory, *args):
    """``cli(*args)`` in its own mount namespace, where ``directory`` is an empty tmpfs mounted
    read-only: what a disk the kernel remounted read-only after I/O errors looks like (EROFS).
    Nobody outside that namespace sees the mount."""
    script = 'mount -t tmpfs -o size=1m tmpfs "$0" && mount -o remount,ro "$0" && exec "$@"'
    return cli(*args, wrap=["unshare", "-m", "--propagation", "private", "sh", "-c", script, str(directory)])


@contextlib.contextmanager
def watching(poll, interval: float = 0.005, timeout: float = 120):
    """Call ``poll()`` every ``interval`` seconds in a thread while the block runs, until it
    returns True (or ``timeout``); the thread is gone when the block is left."""
    done = threading.Event()

    def loop():
        deadline = time.monotonic() + timeout
        while not done.is_set() and time.monotonic() < deadline:
            if poll():
                return
            time.sleep(interval)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(10)


def partial_bytes(directory) -> int:
    """Bytes in the ``.partial`` files of ``directory`` (0 if none or they just vanished)."""
    directory = Path(directory)
    try:
        return sum(p.stat().st_size for p in directory.glob("*.partial")) if directory.is_dir() else 0
    except OSError:
        return 0


# --- state for a test, without a playbook -----------------------------------------------------


def _operations():
    if str(COLLECTIONS_PATH) not in sys.path:
        sys.path.insert(0, str(COLLECTIONS_PATH))
    from ansible_collections.offsite.backup.plugins.module_utils._engine import operations
    return operations


def engine_dump(name: str, source: dict, dest, **options) -> dict:
    """``dump``'s ``backup`` of ``source`` into ``dest``, made by the engine in this process: the
    state a test starts from (a backup to restore from), without an ansible-playbook run (~2 CPU s).
    Only where the dump module's own run is tested elsewhere."""
    return _operations().dump(name, source, str(dest), **options)["backup"]


def engine_upload(backup: dict, repositories: list) -> dict:
    """``upload`` of ``backup`` to ``repositories`` by the engine in this process (state for a
    test, like engine_dump); every repository must have taken it."""
    result = _operations().upload(backup, repositories)
    assert [x["status"] for x in result["repositories"]] == ["uploaded"] * len(repositories), result
    return result
