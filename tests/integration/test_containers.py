"""Database sources inside containers, end to end: real ansible-playbook runs whose commands go
through ``docker exec`` / ``docker compose exec -T`` exactly as built for production, executed by
the stand-in docker (tests/harness/fake_docker) against the real PostgreSQL servers on loopback.

The stand-in gives the inner command only the variables passed by ``-e NAME``: a dump through it
against the scram-sha-256 server only works if the password crossed by name."""

from __future__ import annotations

import uuid

import pytest

from tests.harness import pg
from tests.harness.ansible import run_playbook
from tests.harness.containers import fake_docker_env, invocations
from tests.integration.helpers import local_repo, pg_source, pg_target

pytestmark = pytest.mark.integration


def _uid() -> str:
    return uuid.uuid4().hex[:10]


def assert_ok(r, *tasks):
    assert r.rc == 0, r.output
    for t in tasks:
        assert r.status(t) in ("ok", "changed"), f"{t}: {r.status(t)}\n{r.output}"


def test_dump_in_container_and_restore_through_compose(sample_db, unique_db_name, workdir):
    log = workdir / "docker.log"
    compose_file = workdir / "docker-compose.prod.yml"
    compose_file.write_text("services:\n  postgres:\n    image: postgres:15\n")
    dest = workdir / "dest"
    r = run_playbook([
        {"name": "dump", "offsite.backup.dump": {
            "name": "crm", "dest": str(dest),
            "source": pg_source(sample_db, container="crm-postgres")},
         "register": "dumped"},
        {"name": "restore", "offsite.backup.restore": {
            "name": "crm", "repository": local_repo(dest), "work_dir": str(workdir), "backup": "latest",
            "target": pg_target(unique_db_name, container="postgres", compose_file=str(compose_file),
                                compose_project="crm", jobs=4)},
         "register": "restored"},
    ], env=fake_docker_env(log, containers=("crm-postgres", "postgres")))
    assert_ok(r, "dump", "restore")
    assert pg.fingerprint(unique_db_name) == pg.fingerprint(sample_db)
    calls = invocations(log)
    assert any(c.startswith("exec -e ") and " crm-postgres pg_dump " in c for c in calls), calls
    assert any(c.startswith(f"compose -f {compose_file} -p crm exec -T ") and " postgres pg_restore " in c
               for c in calls), calls
    executed = r.tasks["dump"]["result"]["executed_commands"]
    assert all("docker" in c.split()[0] for c in executed), executed


@pytest.mark.scram_pg
def test_password_crosses_into_the_container_by_name_only(scram_pg, workdir):
    log = workdir / "docker.log"
    dest = workdir / "dest"
    source = {"type": "postgresql", "database": "postgres", "host": scram_pg.host, "port": scram_pg.port,
              "user": scram_pg.user, "password": scram_pg.password, "container": "db"}
    r = run_playbook([{"name": "dump", "offsite.backup.dump": {"name": "scram", "dest": str(dest), "source": source}}],
                     env=fake_docker_env(log))
    assert_ok(r, "dump")
    assert scram_pg.password not in log.read_text()
    assert scram_pg.password not in r.output
    assert all(" -e PGPASSWORD " in c for c in invocations(log))


def test_missing_container_is_a_clear_failure(sample_db, workdir):
    dest = workdir / "dest"
    r = run_playbook([{"name": "dump", "offsite.backup.dump": {
        "name": "crm", "dest": str(dest), "source": pg_source(sample_db, container="no-such-db")}}],
        env=fake_docker_env(workdir / "docker.log", containers=("crm-postgres",)))
    assert r.status("dump") == "failed", r.output
    result = r.tasks["dump"]["result"]
    assert result["error"] == "source", result
    assert "No such container: no-such-db" in result["msg"] and "container no-such-db" in result["msg"], result
    assert not dest.exists() or not any(dest.rglob("*.dump*"))


@pytest.mark.scram_pg
def test_whole_cluster_through_docker_exec(scram_pg, workdir):
    """Roles and every database through the container: globals and each database are fed to
    psql / pg_restore on stdin (the container cannot see this node's files)."""
    uid = _uid()
    role, db = f"c_role_{uid}", f"c_db_{uid}"
    env = scram_pg.env()
    pg.run_sql("postgres", f"CREATE ROLE {role} LOGIN PASSWORD 'pw-{uid}'; CREATE DATABASE {db} OWNER {role}", env=env)
    pg.run_sql(db, "CREATE TABLE t AS SELECT generate_series(1, 77) AS i", env=env)
    conn = {"type": "postgresql", "host": scram_pg.host, "port": scram_pg.port, "user": scram_pg.user,
            "password": scram_pg.password, "container": "db"}
    log, dest = workdir / "docker.log", workdir / "dest"
    try:
        r = run_playbook([{"name": "dump", "offsite.backup.dump": {
            "name": "cl", "dest": str(dest), "source": dict(conn, databases=[db])}}], env=fake_docker_env(log))
        assert_ok(r, "dump")
        pg.run_sql("postgres", f"DROP DATABASE {db}; DROP ROLE {role}", env=env)
        r = run_playbook([{"name": "restore", "offsite.backup.restore": {
            "name": "cl", "repository": local_repo(dest), "work_dir": str(workdir),
            "target": dict(conn, databases=["all"], mode="create")}}], env=fake_docker_env(log))
        assert_ok(r, "restore")
        assert pg.run_sql(db, "SELECT count(*) FROM t", env=env).strip() == "77"
        assert pg.run_sql(db, "SELECT current_user", env=dict(env, PGUSER=role, PGPASSWORD=f"pw-{uid}")).strip() == role
        calls = invocations(log)
        assert any(" db pg_dumpall " in c for c in calls), calls
        assert any(c.startswith("exec -i ") and " db pg_restore " in c for c in calls), calls
        assert scram_pg.password not in log.read_text()
    finally:
        pg.run_sql("postgres", f"DROP DATABASE IF EXISTS {db} WITH (FORCE); DROP ROLE IF EXISTS {role}", env=env)


def test_older_pg_dump_than_the_server_is_named(sample_db, workdir):
    """The container's pg_dump is older than the server: the message names both versions and
    the package, before anything is dumped."""
    tools = workdir / "old-client"
    tools.mkdir()
    fake = tools / "pg_dump"
    fake.write_text("#!/bin/sh\n[ \"$1\" = --version ] && echo 'pg_dump (PostgreSQL) 13.14' && exit 0\nexit 1\n")
    fake.chmod(0o755)
    env = fake_docker_env(workdir / "docker.log")
    env["PATH"] = f"{tools}:{env['PATH']}"  # no container here: the local pg_dump is the old one
    dest = workdir / "dest"
    r = run_playbook([{"name": "dump", "offsite.backup.dump": {
        "name": "crm", "dest": str(dest), "source": pg_source(sample_db)}}], env=env)
    assert r.status("dump") == "failed", r.output
    res = r.result("dump")
    assert res["error"] == "source", res
    assert "pg_dump 13.14 is older than the PostgreSQL 15." in res["msg"] and "postgresql-client-15" in res["msg"], res
    assert not dest.exists() or not any(dest.rglob("*.dump*"))
