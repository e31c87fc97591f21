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
