"""MySQL / MariaDB source and target: real ansible-playbook runs against MariaDB on 127.0.0.1:3306.

The full cycle (tables, binary data, a view, a trigger, a procedure), replace over a changed
database, and bad input: wrong password, missing database, row counts that do not match, a
dump that does not load. A failed restore must leave the target exactly as it was and no
scratch database behind.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.harness.ansible import run_playbook
from tests.harness.containers import fake_docker_env, invocations
from tests.integration.helpers import engine_dump, local_repo

pytestmark = pytest.mark.integration

MYSQL = ["mysql", "--host=127.0.0.1", "--port=3306", "--user=root", "--batch", "--skip-column-names"]


def sql(statement: str, database: str | None = None) -> str:
    """Run a script (fed on stdin, so DELIMITER works); its output."""
    argv = MYSQL + ([f"--database={database}"] if database else [])
    proc = subprocess.run(argv, input=statement, capture_output=True, text=True, errors="backslashreplace", check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def databases() -> set[str]:
    return set(sql("SHOW DATABASES").split())


def fingerprint(database: str) -> dict:
    """Every table's rows (as a hash), every view, trigger and routine name."""
    result = {}
    for table in sql(f"SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA='{database}' "
                     "AND TABLE_TYPE='BASE TABLE' ORDER BY 1").split():
        rows = sql(f"SELECT * FROM `{table}` ORDER BY 1", database)
        result[table] = hashlib.sha256(rows.encode()).hexdigest()
    for what, query in (("views", "SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA='%s'"),
                        ("triggers", "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA='%s'"),
                        ("routines", "SELECT ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA='%s'")):
        result[what] = sorted(sql(query % database).split())
    return result


def create_sample(name: str) -> None:
    sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    sql("CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(50), note TEXT, photo BLOB);"
        "INSERT INTO customers VALUES (1, 'Zoé', 'tab\there\nnewline', UNHEX('00FF10')), (2, 'O''Brien', NULL, NULL);"
        "CREATE TABLE orders (id INT AUTO_INCREMENT PRIMARY KEY, customer INT, total DECIMAL(10,2));"
        "INSERT INTO orders (customer, total) SELECT 1 + seq % 2, seq / 7 FROM seq_1_to_500;"
        "CREATE TABLE audit (msg VARCHAR(100));"
        "CREATE VIEW big_orders AS SELECT id, total FROM orders WHERE total > 50;"
        "CREATE TRIGGER orders_audit AFTER INSERT ON orders FOR EACH ROW INSERT INTO audit VALUES (CONCAT('order ', NEW.id));\n"
        "DELIMITER ;;\nCREATE PROCEDURE order_count() BEGIN SELECT COUNT(*) FROM orders; SELECT 1; END;;\nDELIMITER ;\n", name)


def drop(*names: str) -> None:
    for name in names:
        sql(f"DROP DATABASE IF EXISTS `{name}`")


def leftovers(name: str) -> list[str]:
    return [d for d in databases() if d.startswith(name[:40] + "_restore_") or d.startswith(name[:40] + "_previous_")]


@pytest.fixture
def names():
    made = []

    def make(label: str) -> str:
        name = f"offsite_{label}_{uuid.uuid4().hex[:8]}"
        made.append(name)
        return name

    try:
        yield make
    finally:
        for name in made:
            drop(name, *leftovers(name))


def source(database: str, **extra) -> dict:
    src = {"type": "mysql", "database": database, "host": "127.0.0.1", "port": 3306, "user": "root"}
    src.update(extra)
    return src


def dump_task(name: str, src: dict, dest, **extra) -> dict:
    return {"name": "dump", "offsite.backup.dump": dict({"name": name, "source": src, "dest": str(dest)}, **extra),
            "register": "dumped"}


def restore_task(name: str, dest, target: dict, mode: str = "create") -> dict:
    return {"name": "restore", "offsite.backup.restore": {"name": name, "repository": local_repo(dest),
                                                          "target": dict(target, mode=mode)}}


def test_mysql_cycle_create_and_replace(names, tmp_path):
    src, dst = names("mysrc"), names("mydst")
    create_sample(src)
    expected = fingerprint(src)
    r = run_playbook([dump_task("shop", source(src), tmp_path), restore_task("shop", tmp_path, source(dst))])
    assert r.rc == 0, r.output
    facts = r.result("dump")["backup"]["source"]
    assert facts["counts"] == {"tables": {f"{src}.audit": 0, f"{src}.customers": 2, f"{src}.orders": 500}}
    assert facts["tool"] in ("mariadb-dump", "mysqldump")
    restored = r.result("restore")["restored"]
    assert restored["verified_tables"] == 3 and restored["objects"] == 3
    assert fingerprint(dst) == expected
    assert sql("SELECT HEX(photo) FROM customers WHERE id = 1", dst).strip() == "00FF10"

    # the restored trigger works in its new home
    sql("INSERT INTO orders (customer, total) VALUES (2, 1.5)", dst)
    assert sql("SELECT COUNT(*) FROM audit", dst).strip() == "1"

    # replace: a changed target becomes the backup again, nothing left behind
    # and then (same run) create refuses the existing database and changes nothing
    sql("DELETE FROM customers; DROP VIEW big_orders; CREATE TABLE extra (a INT)", dst)
    r = run_playbook([restore_task("shop", tmp_path, source(dst), mode="replace"),
                      dict(restore_task("shop", tmp_path, source(dst)), name="create")])
    assert r.rc != 0
    assert r.status("restore") == "changed", r.output
    assert r.result("restore")["restored"]["replaced"] is True
    assert r.status("create") == "failed" and r.result("create")["error"] == "target", r.output
    expected["audit"] = fingerprint(src)["audit"]
    assert fingerprint(dst) == expected
    assert leftovers(dst) == []


def test_mysql_password_never_in_commands_and_wrong_password_fails(names, tmp_path):
    src = names("mypw")
    create_sample(src)
    user = f"offsite_{uuid.uuid4().hex[:6]}"
    secret = "S3cret-" + uuid.uuid4().hex[:8]
    sql(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{secret}'; CREATE USER '{user}'@'localhost' IDENTIFIED BY '{secret}';"
        f"GRANT ALL ON *.* TO '{user}'@'%'; GRANT ALL ON *.* TO '{user}'@'localhost'")
    try:
        good = source(src, user=user, password=secret)
        # one run: the good dump, then the wrong password (which ends the play)
        r = run_playbook([dump_task("pw", good, tmp_path / "ok"),
                          dict(dump_task("pw", dict(good, password="wrong"), tmp_path / "bad"), name="wrong")])
        assert r.rc != 0
        assert r.status("dump") == "changed", r.output
        assert secret not in json.dumps(r.result("dump")) and secret not in r.output
        assert r.status("wrong") == "failed", r.output
        res = r.result("wrong")
        assert res["error"] == "source" and "refused user" in res["msg"], res
        assert not list((tmp_path / "bad").rglob("*.sql*")), "no artifact after a refused dump"
    finally:
        sql(f"DROP USER IF EXISTS '{user}'@'%'; DROP USER IF EXISTS '{user}'@'localhost'")


def test_mysql_missing_database(tmp_path):
    r = run_playbook([dump_task("none", source("offsite_no_such_db"), tmp_path)])
    assert r.rc != 0
    res = r.result("dump")
    assert res["error"] == "not_found" and "offsite_no_such_db" in res["msg"], res


def _rewrite_backup(set_dir: Path, artifact: bytes | None = None, counts: dict | None = None) -> None:
    """Change the backup's artifact (keeping size and sha256 right) or its recorded counts."""
    manifest_path = next(set_dir.glob("*.manifest.json"))
    manifest = json.loads(manifest_path.read_text())
    if artifact is not None:
        art = set_dir / manifest["artifact"].split("/")[-1]
        art.write_bytes(artifact)
        manifest.update(size=len(artifact), sha256=hashlib.sha256(artifact).hexdigest(), raw_size=len(artifact))
    if counts is not None:
        manifest["source"]["counts"]["tables"].update(counts)
    manifest_path.write_text(json.dumps(manifest))


def test_mysql_failed_restores_leave_target_untouched(names, tmp_path):
    src, dst = names("myfail"), names("mykeep")
    create_sample(src)
    create_sample(dst)
    sql("INSERT INTO audit VALUES ('the old target')", dst)
    before = fingerprint(dst)
    engine_dump("fail", source(src), tmp_path, compression="none")  # the dump module: the tests above

    # recorded counts that the restored rows do not match: refused before the swap
    _rewrite_backup(tmp_path / "fail", counts={f"{src}.orders": 499})
    r = run_playbook([restore_task("fail", tmp_path, source(dst), mode="replace")])
    assert r.rc != 0
    res = r.result("restore")
    assert res["error"] == "integrity" and "orders: 499 rows in the backup, 500 restored" in res["msg"], res
    assert fingerprint(dst) == before and leftovers(dst) == []

    # a dump that does not load (valid checksum, bad SQL half way)
    _rewrite_backup(tmp_path / "fail", artifact=b"CREATE TABLE half (a INT);\nTHIS IS NOT SQL;\n")
    r = run_playbook([restore_task("fail", tmp_path, source(dst), mode="replace")])
    assert r.rc != 0
    res = r.result("restore")
    assert res["error"] == "target" and "scratch database failed" in res["msg"], res
    assert fingerprint(dst) == before and leftovers(dst) == []


def test_mysql_through_docker_exec_and_compose(names, tmp_path):
    """The same code path as production, with the stand-in docker executing the inner command:
    the password must cross into the "container" by name (-e MYSQL_PWD) to work at all."""
    src, dst = names("myctr"), names("myctrdst")
    create_sample(src)
    user = f"offsite_{uuid.uuid4().hex[:6]}"
    secret = "Ctr-" + uuid.uuid4().hex[:8]
    sql(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{secret}'; GRANT ALL ON *.* TO '{user}'@'%'")
    log = tmp_path / "docker.log"
    compose_file = tmp_path / "docker-compose.yml"
    compose_file.write_text("services:\n  mariadb:\n    image: mariadb:11\n")
    try:
        r = run_playbook([
            dump_task("ctr", source(src, user=user, password=secret, container="shop-db"), tmp_path),
            restore_task("ctr", tmp_path, source(dst, user=user, password=secret, container="mariadb",
                                                 compose_file=str(compose_file), compose_project="shop")),
        ], env=fake_docker_env(log, containers=("shop-db", "mariadb")))
        assert r.rc == 0, r.output
        assert fingerprint(dst) == fingerprint(src)
        calls = invocations(log)
        assert any(c.startswith("exec -e MYSQL_PWD shop-db ") and "-dump " in c for c in calls), calls
        assert any(c.startswith(f"compose -f {compose_file} -p shop exec -T -e MYSQL_PWD mariadb ") for c in calls), calls
        assert secret not in "\n".join(calls) and secret not in r.output
    finally:
        sql(f"DROP USER IF EXISTS '{user}'@'%'")


def test_mysql_several_databases_in_one_snapshot(names, tmp_path):
    """databases: a list (or all) in one consistent snapshot; restored each under its own name,
    all proven by row counts before any is swapped; a subset can be restored."""
    first, second = names("myall1"), names("myall2")
    create_sample(first)
    create_sample(second)
    sql("INSERT INTO audit VALUES ('second only')", second)
    want = {first: fingerprint(first), second: fingerprint(second)}
    r = run_playbook([dump_task("multi", {"type": "mysql", "databases": [first, second]}, tmp_path)])
    assert r.rc == 0, r.output
    facts = r.result("dump")["backup"]["source"]
    assert sorted(facts["databases"]) == [first, second]
    assert facts["counts"]["tables"][f"{second}.audit"] == 1

    # both changed; replace brings both back
    sql("DELETE FROM orders WHERE id < 100; DROP PROCEDURE order_count", first)
    sql("DROP TABLE customers", second)
    r = run_playbook([restore_task("multi", tmp_path, {"type": "mysql", "databases": ["all"]}, mode="replace")])
    assert r.rc == 0, r.output
    assert r.result("restore")["restored"]["verified_tables"] == 6
    assert {first: fingerprint(first), second: fingerprint(second)} == want
    assert leftovers(first) == [] and leftovers(second) == []

    # a subset, in create mode, leaves the other database alone
    drop(second)
    sql("INSERT INTO audit VALUES ('first changed')", first)
    changed_first = fingerprint(first)
    # and (same run) one database of a multi-database backup cannot be restored with `database`
    one = names("myone")
    r = run_playbook([restore_task("multi", tmp_path, {"type": "mysql", "databases": [second]}),
                      dict(restore_task("multi", tmp_path, source(one)), name="one")])
    assert r.status("restore") == "changed", r.output
    assert fingerprint(second) == want[second] and fingerprint(first) == changed_first
    assert r.rc != 0 and r.status("one") == "failed" and r.result("one")["error"] == "config", r.output
    assert one not in databases()
