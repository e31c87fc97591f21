"""playbooks/dr_rebuild.yml end to end. The "fresh server" is a new, empty PostgreSQL cluster the
playbook itself creates (pg_createcluster) on a free port, with a password for postgres set by
the playbook; the backup comes from moto S3 behind an unreachable repository; the "application"
is a small HTTP server started by the user's start-up tasks; the report states RPO and RTO. The
controller's environment holds a DBA's PG* variables pointing elsewhere."""

from __future__ import annotations

import json
import secrets
import subprocess
import uuid

import pytest

from tests.harness import pg
from tests.harness.ansible import REPO_ROOT, run_playbook
from tests.harness.services import free_port
from tests.integration.helpers import s3_keys, s3_repo
from tests.integration.test_dr_drill import backup_to, dba_environment, unreachable_repo

REBUILD = REPO_ROOT / "playbooks" / "dr_rebuild.yml"
PG_MAJOR = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=True).stdout.split()[0]


@pytest.fixture
def fresh_cluster():
    """Name and port of a cluster that does not exist yet; dropped after the test."""
    name, port = "offsite_dr_%s" % uuid.uuid4().hex[:8], free_port()
    try:
        yield name, port
    finally:
        subprocess.run(["pg_dropcluster", "--stop", PG_MAJOR, name], capture_output=True, check=False)


def startup_tasks(tmp, port):
    """The user's start-up tasks: start the 'application' (an HTTP server) in the background."""
    (tmp / "www").mkdir()
    (tmp / "www" / "index.html").write_text("ok\n")
    path = tmp / "start_app.yml"
    path.write_text(f"""---
- name: Start the application
  ansible.builtin.shell: >-
    nohup python3 -m http.server {port} --bind 127.0.0.1 --directory {tmp / 'www'} >/dev/null 2>&1 &
    echo $! > {tmp / 'app.pid'}
  changed_when: true
""")
    return str(path)


def stop_app(tmp):
    pid = tmp / "app.pid"
    if pid.exists():
        subprocess.run(["kill", pid.read_text().strip()], check=False)


def rebuild_vars(sets, workdir, cluster, port, password, **extra):
    values = {"offsite_dr_sets": sets, "offsite_dr_install_packages": False,
              "offsite_dr_postgresql": {"manage": True, "cluster": cluster, "port": port, "password": password},
              "offsite_dr_report_dir": str(workdir / "reports")}
    values.update(extra)
    return values


def backed_up_set(moto, bucket, sample_db, workdir, port, password):
    """The set "crm": a backup of ``sample_db`` in S3, to be restored on ``port`` as postgres."""
    repo = s3_repo(moto, bucket)
    backup_to(repo, "crm", sample_db, workdir / "dumps")
    target = {"type": "postgresql", "host": "127.0.0.1", "port": port, "user": "postgres", "password": password,
              "database": sample_db}
    return [{"name": "crm", "repositories": [repo], "target": target}]


def test_rebuild_a_destroyed_server_from_s3(moto, sshd, bucket, sample_db, workdir, fresh_cluster):
    cluster, port = fresh_cluster
    password = secrets.token_urlsafe(16)
    repo = s3_repo(moto, bucket)
    backup_id = backup_to(repo, "crm", sample_db, workdir / "dumps")
    app_port = free_port()
    target = {"type": "postgresql", "host": "127.0.0.1", "port": port, "user": "postgres", "password": password,
              "database": sample_db}
    sets = [{"name": "crm", "repositories": [unreachable_repo(sshd), repo], "target": target,
             "queries": [{"name": "users", "sql": "SELECT count(*) > 0 FROM public.users", "expect": "t"}]}]
    try:
        r = run_playbook(str(REBUILD), extravars=rebuild_vars(
            sets, workdir, cluster, port, password, offsite_dr_startup_tasks=startup_tasks(workdir, app_port),
            offsite_dr_health_url=f"http://127.0.0.1:{app_port}/", offsite_dr_health_timeout=30),
            env=dict(dba_environment(), ANSIBLE_ASYNC_DIR=str(workdir / "async")))
    finally:
        stop_app(workdir)
    assert r.rc == 0, r.output
    assert password not in r.output
    # the server was started in the background (pg_ctlcluster), and its job file is gone
    assert (workdir / "async").is_dir() and list((workdir / "async").iterdir()) == []

    # the rebuilt database equals the source (on the new cluster, reached with the new password)
    env = {"PGPORT": str(port), "PGPASSWORD": password}
    assert pg.fingerprint(sample_db, env=env) == pg.fingerprint(sample_db)

    report = json.loads(next((workdir / "reports").glob("rebuild-*.json")).read_text())
    assert report["success"] is True and report["kind"] == "rebuild"
    (crm,) = report["sets"]
    assert crm["backup_id"] == backup_id and crm["age_seconds"] < 3600 and crm["checks"][0]["ok"] is True
    steps = [s["name"] for s in report["steps"]]
    assert steps == ["find crm", "server for crm", "restore crm", "start the application", "healthy"]
    assert 0 < report["duration_seconds"] < 600
    # one RTO: start of the restore to the server answering its checks and health URL
    assert 0 < crm["recovery_seconds"] <= report["recovery_seconds"] <= report["duration_seconds"]
    assert report["rto_met"] is True and report["rto_seconds"] == 14400
    assert "RTO (start of the restore to the target answering its checks): " in r.output
    assert "(objective 4.0 h)" in r.output
    assert "restore time (RTO)" not in r.output and "RTO achieved" not in r.output
    assert f"backups/crm/{backup_id}.proven.json" not in s3_keys(moto, bucket)   # a rebuild is no drill


def test_health_url_that_never_answers_fails_with_a_report_and_keeps_the_restore(moto, bucket, sample_db, workdir,
                                                                                 fresh_cluster):
    cluster, port = fresh_cluster
    password = secrets.token_urlsafe(16)
    sets = backed_up_set(moto, bucket, sample_db, workdir, port, password)
    r = run_playbook(str(REBUILD), extravars=rebuild_vars(
        sets, workdir, cluster, port, password,
        offsite_dr_health_url=f"http://127.0.0.1:{free_port()}/", offsite_dr_health_timeout=4))
    assert r.rc != 0
    assert "DR rebuild FAILED at Wait for the health URL to answer 200" in r.output
    report = json.loads(next((workdir / "reports").glob("rebuild-*.json")).read_text())
    assert report["success"] is False
    assert [s["name"] for s in report["sets"]] == ["crm", "rebuild"] and report["sets"][0]["success"] is True
    # left for inspection
    assert pg.database_exists(sample_db, env={"PGPORT": str(port), "PGPASSWORD": password})


def test_no_complete_backup_anywhere_fails_before_touching_the_server(moto, sshd, bucket, workdir, fresh_cluster):
    cluster, port = fresh_cluster
    target = {"type": "postgresql", "host": "127.0.0.1", "port": port, "user": "postgres", "database": "crm"}
    r = run_playbook(str(REBUILD), extravars=rebuild_vars(
        [{"name": "crm", "repositories": [unreachable_repo(sshd), s3_repo(moto, bucket)], "target": target}],
        workdir, cluster, port, "x"))
    assert r.rc != 0
    assert "no reachable repository holds a complete backup of crm" in r.output
    assert subprocess.run(["pg_lsclusters", PG_MAJOR, cluster], capture_output=True, check=False).returncode != 0


def test_a_cluster_that_cannot_be_created_fails_with_its_error_output(moto, bucket, sample_db, workdir,
                                                                      fresh_cluster):
    """The report and the play say why (pg_createcluster's stderr), not just "non-zero return code"."""
    cluster, port = fresh_cluster
    password = secrets.token_urlsafe(16)
    sets = backed_up_set(moto, bucket, sample_db, workdir, port, password)
    values = rebuild_vars(sets, workdir, cluster, port, password)
    values["offsite_dr_postgresql"]["version"] = 99          # no such PostgreSQL installed
    r = run_playbook(str(REBUILD), extravars=values, env=dba_environment())
    assert r.rc != 0
    report = json.loads(next((workdir / "reports").glob("rebuild-*.json")).read_text())
    (failure,) = [s for s in report["sets"] if s["name"] == "rebuild"]
    assert failure["error"] == ("PostgreSQL | create the cluster 99/%s: non-zero return code: "
                                "Error: no initdb program for version 99 found" % cluster), failure["error"]
    assert "no initdb program for version 99" in r.output and password not in r.output


def existing_cluster(name, port, *settings):
    """A cluster made before the rebuild, with ``settings`` appended to its postgresql.conf."""
    subprocess.run(["pg_createcluster", PG_MAJOR, name, "--port", str(port), "--", "--auth-local=peer",
                    "--auth-host=scram-sha-256"], capture_output=True, check=True)
    with open(f"/etc/postgresql/{PG_MAJOR}/{name}/postgresql.conf", "a") as conf:
        conf.write("".join(f"{line}\n" for line in settings))


def test_a_cluster_that_cannot_start_fails_with_pg_ctlclusters_words(moto, bucket, sample_db, workdir, fresh_cluster):
    """pg_ctlcluster runs in the background while the play polls the port: when the server never
    answers, the play waits for pg_ctlcluster's verdict and fails with it, before the restore."""
    cluster, port = fresh_cluster
    existing_cluster(cluster, port, "shared_buffers = 'plenty'")
    password = secrets.token_urlsafe(16)
    sets = backed_up_set(moto, bucket, sample_db, workdir, port, password)
    r = run_playbook(str(REBUILD), extravars=rebuild_vars(
        sets, workdir, cluster, port, password))
    assert r.rc != 0
    report = json.loads(next((workdir / "reports").glob("rebuild-*.json")).read_text())
    (failure,) = [s for s in report["sets"] if s["name"] == "rebuild"]
    assert failure["error"].startswith(f"PostgreSQL | fail when this cluster did not start: {PG_MAJOR}/{cluster}: "
                                       f"pg_ctlcluster could not start {PG_MAJOR}/{cluster} (exit 1):"), failure["error"]
    assert 'invalid value for parameter "shared_buffers": "plenty"' in failure["error"]
    assert [s["name"] for s in report["steps"]] == ["find crm"]   # nothing restored
    assert password not in r.output


def test_a_running_cluster_is_not_started_again(moto, bucket, sample_db, workdir, fresh_cluster):
    cluster, port = fresh_cluster
    existing_cluster(cluster, port)
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", PG_MAJOR, cluster, "start"], check=True)
    password = secrets.token_urlsafe(16)
    subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-p", str(port),
                    "-d", "postgres", "-f", "-"], input=f"ALTER ROLE postgres PASSWORD '{password}';",
                   text=True, check=True, capture_output=True)   # on stdin, as the playbook sends it: not in argv
    sets = backed_up_set(moto, bucket, sample_db, workdir, port, password)
    r = run_playbook(str(REBUILD), extravars=rebuild_vars(
        sets, workdir, cluster, port, password))
    assert r.rc == 0, r.output
    assert r.status(f"PostgreSQL | start the cluster {PG_MAJOR}/{cluster}") == "skipped"
    env = {"PGPORT": str(port), "PGPASSWORD": password}
    assert pg.fingerprint(sample_db, env=env) == pg.fingerprint(sample_db)
