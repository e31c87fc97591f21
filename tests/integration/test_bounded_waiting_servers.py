"""Bounded waiting (issue 12, item 8): a server that accepts connections and never answers (a
thread here accepts and holds every connection, silent) fails an S3, SFTP, rsync and restic
repository with ``error: unreachable`` and a hint, within the repository's ``timeout`` and
``retries`` (set low here so that the test is fast), and nothing but our own message reaches
stderr (no paramiko traceback). That the defaults bound the wait to two minutes is computed from
the settings in tests/unit/test_bounded_waiting.py."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import yaml

from tests.harness.ansible import run_playbook
from tests.integration.helpers import cli, s3_repo, sftp_repo
from tests.integration.test_rsync import rsync_repo

pytestmark = [pytest.mark.integration, pytest.mark.sftp]

FAST = {"timeout": 2, "retries": 1}
URL_SECRET = "url-s3cr3t-pw"


@pytest.fixture(scope="module")
def silent_port():
    """A port whose server accepts every connection and never sends a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held, stop = [], threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _addr = server.accept()
            except OSError:
                continue
            held.append(conn)  # open, silent: reads nothing, answers nothing

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        server.close()


def _silent_repos(moto, sshd, port):
    endpoint = f"http://127.0.0.1:{port}"
    return {
        # credentials inside endpoint_url are shown nowhere (item 11)
        "s3": s3_repo(moto, "never-answers", endpoint_url=f"http://admin:{URL_SECRET}@127.0.0.1:{port}", **FAST),
        "sftp": sftp_repo(sshd, "/srv/never", port=port, **FAST),
        "rsync": rsync_repo(sshd, "/srv/never", port=port, **FAST),
        "restic": {"type": "restic", "restic_repository": f"rest:{endpoint}/", "restic_password": "never-used-123",
                   **FAST},
    }


def test_module_fails_unreachable_with_a_hint_in_bounded_time(moto, sshd, silent_port):
    repos = _silent_repos(moto, sshd, silent_port)
    tasks = [{"name": kind, "offsite.backup.backup_info": {"name": "crm", "repository": repo}, "ignore_errors": True}
             for kind, repo in repos.items()]
    started = time.monotonic()
    r = run_playbook(tasks)
    elapsed = time.monotonic() - started
    for kind in repos:
        res = r.result(kind)
        assert r.status(kind) == "failed", (kind, res)
        assert res["error"] == "unreachable", (kind, res["msg"])
        assert "timeout (2 s per try) and retries (1)" in res["msg"], (kind, res["msg"])
        assert "Traceback" not in json.dumps(res), (kind, res)
    for where, text in (("stdout", r.stdout), ("stderr", r.stderr), ("results", json.dumps(r.events))):
        at = text.find(URL_SECRET)
        assert at < 0, (where, text[max(0, at - 300):at + 50])
    assert "admin:***@127.0.0.1" in r.result("s3")["msg"]
    # S3: 2 tries x (connect + read) of 2 s, plus a backoff; ssh: 4 waits of 2 s; restic: 2 x 2 s;
    # run one after another, with ansible's start-up around them
    assert elapsed < 8 + 8 + 8 + 4 + 60, elapsed
    print(f"four silent repositories, one after another: {elapsed:.1f}s including ansible start-up")


def test_scheduled_run_names_each_unreachable_repository_and_stderr_stays_clean(moto, sshd, silent_port, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("bounded\n")
    job = {"name": "silent", "local": {"path": str(tmp_path / "local")},
           "sources": [{"name": "site", "source": {"type": "files", "paths": [str(src)]}}],
           "repositories": list(_silent_repos(moto, sshd, silent_port).values()),
           "log": {"path": str(tmp_path / "silent.log")}}
    path = tmp_path / "silent.yml"
    path.write_text(yaml.safe_dump(job))
    started = time.monotonic()
    run = cli("run", str(path), "--json")
    elapsed = time.monotonic() - started
    assert run.returncode != 0
    [done] = json.loads(run.stdout)["sets"]
    assert [x["type"] for x in done["repositories"]] == ["s3", "sftp", "rsync", "restic"]
    assert [x["status"] for x in done["repositories"]] == ["failed"] * 4, done["repositories"]
    assert [x["error_kind"] for x in done["repositories"]] == ["unreachable"] * 4, done["repositories"]
    assert "Traceback" not in run.stderr and "paramiko" not in run.stderr, run.stderr
    assert elapsed < 60, elapsed  # the repositories wait side by side
    assert URL_SECRET not in run.stdout + run.stderr + (tmp_path / "silent.log").read_text()
    print(f"scheduled run, four silent repositories: {elapsed:.1f}s")
