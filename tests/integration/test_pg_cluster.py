"""PostgreSQL beyond one pg_dump: row counts taken in the dump's snapshot and proven in the
scratch database before the swap, database settings, the whole cluster (roles + every database).

Real ansible-playbook runs against PostgreSQL 15 on 127.0.0.1:5432; outcomes are checked in
the server (fingerprints, roles, settings)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tests.harness import pg
from tests.harness.ansible import run_playbook
from tests.integration.helpers import engine_dump, local_repo, pg_source, pg_target

pytestmark = pytest.mark.integration


def _uid() -> str:
    return uuid.uuid4().hex[:10]


def task(title: str, module: str, /, **args) -> dict:
    return {"name": title, f"offsite.backup.{module}": args, "register": title.replace(" ", "_")}


def assert_ok(r, *tasks):
    assert r.rc == 0, r.output
    for t in tasks:
        assert r.status(t) in ("ok", "changed"), f"{t}: {r.status(t)}\n{r.output}"


def manifest_of(r, title="dump") -> tuple[Path, dict]:
    path = Path(r.result(title)["backup"]["manifest"])
    return path, json.loads(path.read_text())


def test_counts_in_the_manifest_and_settings_restored(sample_db, unique_db_name, workdir):
    db = pg.quote_ident(sample_db)
    pg.run_sql(sample_db, f"ALTER DATABASE {db} SET search_path = \"$user\", public, pg_catalog; "
                          f"ALTER DATABASE {db} SET work_mem = '7MB'")
    dest = workdir / "dest"
    r = run_playbook([
        task("dump", "dump", name="crm", dest=str(dest), source=pg_source(sample_db)),
        task("restore", "restore", name="crm", repository=local_repo(dest), work_dir=str(workdir),
             target=pg_target(unique_db_name)),
    ])
    assert_ok(r, "dump", "restore")
    dummy, data = manifest_of(r)
    tables = data["source"]["counts"]["tables"]
    expected = {t: rows for t, (rows, md5) in pg.fingerprint(sample_db)["tables"].items()}
    assert tables == expected and tables["public.users"] == pg.USERS_PER_SCALE
    assert data["source"]["server_major"] == "15"
    assert r.result("restore")["restored"]["verified_tables"] == len(tables)
    assert pg.fingerprint(unique_db_name) == pg.fingerprint(sample_db)
    assert db_settings(unique_db_name) == db_settings(sample_db) == \
        ['search_path="$user", public, pg_catalog', "work_mem=7MB"]


def db_settings(database: str) -> list:
    out = pg.run_sql("postgres", "SELECT array_to_json(setconfig) FROM pg_db_role_setting s JOIN pg_database d "
                                 "ON d.oid = s.setdatabase WHERE s.setrole = 0 AND d.datname = %s"
                     % pg.quote_literal(database))
    return json.loads(out) if out.strip() else []


def test_row_count_mismatch_fails_before_the_swap(sample_db, workdir):
    """A manifest that records more rows than the artifact holds: the restore into the scratch
    database succeeds, the count check refuses it, the existing target keeps its data."""
    dest = workdir / "dest"
    backup = engine_dump("crm", pg_source(sample_db), dest)  # the dump module: the test above
    path = Path(backup["manifest"])
    data = json.loads(path.read_text())
    data["source"]["counts"]["tables"]["public.users"] += 1
    path.write_text(json.dumps(data))
    pg.run_sql(sample_db, "CREATE TABLE public.written_after_backup AS SELECT 1 AS x")  # the target differs now
    changed = pg.fingerprint(sample_db)
    r = run_playbook([task("restore", "restore", name="crm", repository=local_repo(dest), work_dir=str(workdir),
                           target=pg_target(sample_db, mode="replace"))])
    assert r.rc != 0 and r.status("restore") == "failed", r.output
    res = r.result("restore")
    assert res["error"] == "integrity", res
    assert "public.users: %d rows, %d restored" % (pg.USERS_PER_SCALE + 1, pg.USERS_PER_SCALE) in res["msg"], res
    assert pg.fingerprint(sample_db) == changed  # the target was not touched
    leftovers = pg.run_sql("postgres", "SELECT datname FROM pg_database WHERE datname LIKE %s"
                           % pg.quote_literal(sample_db[:40] + "_restore_%"))
    assert leftovers.strip() == ""


# --- the whole cluster ------------------------------------------------------------------------
# On the throwaway scram-sha-256 server (tests.harness.services.ScramPostgres): `databases: all`
# there means only what the test made, and roles can be dropped to imitate a rebuilt server.


def scram_conn(scram_pg, **extra) -> dict:
    conn = {"type": "postgresql", "host": scram_pg.host, "port": scram_pg.port, "user": scram_pg.user,
            "password": scram_pg.password}
    conn.update(extra)
    return conn


def scram_sql(scram_pg, db, sql, password=None, user=None) -> str:
    env = scram_pg.env(password)
    if user:
        env["PGUSER"] = user
    return pg.run_sql(db, sql, env=env)


@pytest.mark.scram_pg
def test_whole_cluster_roles_first_then_every_database(scram_pg, workdir):
    uid = _uid()
    role, role_pw = f"app_{uid}", f"pw-{uid}"
    crm, shop = f"crm_{uid}", f"shop_{uid}"
    scram_sql(scram_pg, "postgres", f"CREATE ROLE {role} LOGIN PASSWORD '{role_pw}'; "
                                    f"CREATE DATABASE {crm} OWNER {role}; CREATE DATABASE {shop}; "
                                    f"ALTER DATABASE {shop} SET work_mem = '9MB'")
    scram_sql(scram_pg, crm, "CREATE TABLE notes (id int PRIMARY KEY, body text); "
                             "INSERT INTO notes SELECT i, md5(i::text) FROM generate_series(1, 300) i")
    scram_sql(scram_pg, crm, f"ALTER TABLE notes OWNER TO {role}")
    scram_sql(scram_pg, shop, "CREATE SCHEMA sales; CREATE TABLE sales.orders AS "
                              "SELECT i AS id, i * 2 AS total FROM generate_series(1, 1234) i")
    before = {db: pg.fingerprint(db, env=scram_pg.env()) for db in (crm, shop)}
    dest = workdir / "dest"
    try:
        r = run_playbook([task("dump", "dump", name="cluster", dest=str(dest),
                               source=scram_conn(scram_pg, databases=["all"]))])
        assert_ok(r, "dump")
        dummy, data = manifest_of(r)
        assert data["format"] == "cluster" and data["source"]["server_major"] == "15"
        assert [d["name"] for d in data["source"]["databases"]] == sorted([crm, shop])
        assert data["source"]["counts"]["tables"] == {f"{crm}.public.notes": 300, f"{shop}.sales.orders": 1234}
        assert scram_pg.password not in r.output and role_pw not in r.output

        # a rebuilt server: neither the databases nor the role exist
        scram_sql(scram_pg, "postgres", f"DROP DATABASE {crm}; DROP DATABASE {shop}; DROP ROLE {role}")
        restore = task("restore", "restore", name="cluster", repository=local_repo(dest), work_dir=str(workdir),
                       target=scram_conn(scram_pg, databases=["all"], mode="create", jobs=2))
        r = run_playbook([restore])
        assert_ok(r, "restore")
        restored = r.result("restore")["restored"]
        assert role in restored["roles"]
        assert sorted((d["database"], d["verified_tables"]) for d in restored["databases"]) == [(crm, 1), (shop, 1)]
        assert {db: pg.fingerprint(db, env=scram_pg.env()) for db in (crm, shop)} == before
        # the role came back with its password (hash) and owns its database again
        assert scram_sql(scram_pg, crm, "SELECT count(*) FROM notes", password=role_pw, user=role).strip() == "300"
        assert scram_sql(scram_pg, "postgres", f"SELECT pg_get_userbyid(datdba) FROM pg_database "
                                               f"WHERE datname = '{crm}'").strip() == role
        assert "work_mem=9MB" in scram_sql(scram_pg, "postgres", "SELECT setconfig FROM pg_db_role_setting")
        assert role_pw not in r.output

        # existing databases need an explicit mode: create refuses and changes nothing ...
        scram_sql(scram_pg, shop, "INSERT INTO sales.orders VALUES (0, 0)")
        changed = pg.fingerprint(shop, env=scram_pg.env())
        r = run_playbook([restore])
        assert r.rc != 0 and r.result("restore")["error"] == "target", r.output
        assert "already exist" in r.result("restore")["msg"]
        assert pg.fingerprint(shop, env=scram_pg.env()) == changed
        # ... replace swaps every database for the backup's copy; existing roles are kept
        restore["offsite.backup.restore"]["target"]["mode"] = "replace"
        r = run_playbook([restore])
        assert_ok(r, "restore")
        assert pg.fingerprint(shop, env=scram_pg.env()) == before[shop]
    finally:
        scram_sql(scram_pg, "postgres", f"DROP DATABASE IF EXISTS {crm} WITH (FORCE); "
                                        f"DROP DATABASE IF EXISTS {shop} WITH (FORCE); DROP ROLE IF EXISTS {role}")


@pytest.mark.scram_pg
def test_cluster_restore_with_a_bad_database_swaps_nothing(scram_pg, workdir):
    """One database of the backup fails its proof: no database is swapped, no scratch is left."""
    uid = _uid()
    one, two = f"one_{uid}", f"two_{uid}"
    scram_sql(scram_pg, "postgres", f"CREATE DATABASE {one}; CREATE DATABASE {two}")
    for db in (one, two):
        scram_sql(scram_pg, db, "CREATE TABLE t AS SELECT generate_series(1, 10) AS i")
    dest = workdir / "dest"
    try:
        # the dump module's run of a cluster: test_whole_cluster_roles_first_then_every_database
        backup = engine_dump("cl", scram_conn(scram_pg, databases=[one, two]), dest)
        path = Path(backup["manifest"])
        data = json.loads(path.read_text())
        data["source"]["databases"][1]["counts"]["tables"]["public.t"] = 11
        path.write_text(json.dumps(data))
        for db in (one, two):
            scram_sql(scram_pg, db, "INSERT INTO t VALUES (100)")
        r = run_playbook([task("restore", "restore", name="cl", repository=local_repo(dest), work_dir=str(workdir),
                               target=scram_conn(scram_pg, databases=["all"], mode="replace"))])
        assert r.rc != 0 and r.result("restore")["error"] == "integrity", r.output
        assert "public.t: 11 rows, 10 restored" in r.result("restore")["msg"]
        for db in (one, two):
            assert scram_sql(scram_pg, db, "SELECT count(*) FROM t").strip() == "11"
        names = scram_sql(scram_pg, "postgres", "SELECT datname FROM pg_database")
        assert "_restore_" not in names
    finally:
        scram_sql(scram_pg, "postgres", f"DROP DATABASE IF EXISTS {one} WITH (FORCE); "
                                        f"DROP DATABASE IF EXISTS {two} WITH (FORCE)")


def test_cluster_backup_needs_a_cluster_target(scram_pg, workdir):
    uid = _uid()
    db = f"solo_{uid}"
    scram_sql(scram_pg, "postgres", f"CREATE DATABASE {db}")
    dest = workdir / "dest"
    try:
        r = run_playbook([
            task("dump", "dump", name="cl", dest=str(dest), source=scram_conn(scram_pg, databases=[db])),
            task("restore", "restore", name="cl", repository=local_repo(dest), work_dir=str(workdir),
                 target=scram_conn(scram_pg, database=f"other_{uid}")),
        ])
        assert r.status("dump") == "changed", r.output
        assert r.result("restore")["error"] == "config", r.output
        assert "holds a whole cluster" in r.result("restore")["msg"]
    finally:
        scram_sql(scram_pg, "postgres", f"DROP DATABASE IF EXISTS {db}")
