"""A cluster restore in parallel (issue 14, item 3): every database of the cluster's tar is split
into its own seekable file, its TOC patched with the data offsets, and the databases and their
tables share one ``jobs`` budget (the largest gets ``pg_restore -j k``, the others the rest). The
guarantees stay: nothing is swapped unless every database loaded and proved its row counts, and
a failure in one database leaves every target as it was, with no scratch database behind.

Through the engine's operations (what the modules call) against the throwaway scram-sha-256
server; ``executed_commands`` (the CommandLog) shows every pg_restore with its argv."""

from __future__ import annotations

import hashlib
import io
import json
import shlex
import tarfile
import uuid
from pathlib import Path

import pytest

from tests.harness import pg
from tests.integration.helpers import local_repo

pytestmark = pytest.mark.integration


def engine():
    from ansible_collections.offsite.backup.plugins.module_utils._engine import operations
    from ansible_collections.offsite.backup.plugins.module_utils._engine.commands import CommandLog
    return operations, CommandLog


def conn(scram_pg, **extra) -> dict:
    options = {"type": "postgresql", "host": scram_pg.host, "port": scram_pg.port, "user": scram_pg.user,
               "password": scram_pg.password}
    options.update(extra)
    return options


def sql(scram_pg, db, text) -> str:
    return pg.run_sql(db, text, env=scram_pg.env())


@pytest.fixture
def cluster(scram_pg, workdir):
    """Three databases, one much larger than the others, dumped uncompressed as a cluster."""
    uid = uuid.uuid4().hex[:8]
    names = [f"big_{uid}", f"small_{uid}", f"tiny_{uid}"]
    sql(scram_pg, "postgres", "; ".join(f"CREATE DATABASE {n}" for n in names))
    sql(scram_pg, names[0], "CREATE TABLE a AS SELECT i, md5(i::text) AS t FROM generate_series(1, 60000) i; "
                            "CREATE TABLE b AS SELECT i, md5(i::text) AS t FROM generate_series(1, 40000) i; "
                            "CREATE INDEX ON a (t)")
    sql(scram_pg, names[1], "CREATE TABLE s AS SELECT generate_series(1, 200) AS i")
    sql(scram_pg, names[2], "CREATE TABLE t AS SELECT generate_series(1, 10) AS i")
    operations, CommandLog = engine()
    dest = workdir / "dest"
    dumped = operations.dump("cl", conn(scram_pg, databases=names), str(dest), compression="none", log=CommandLog())
    try:
        yield names, dest, Path(dumped["backup"]["path"]), Path(dumped["backup"]["manifest"])
    finally:
        sql(scram_pg, "postgres", "; ".join(f"DROP DATABASE IF EXISTS {n} WITH (FORCE)" for n in names))


def pg_restores(log) -> list[list[str]]:
    return [shlex.split(c) for c in log.commands if shlex.split(c)[0].endswith("pg_restore")]


def restore(scram_pg, dest, workdir, names, mode, jobs):
    operations, CommandLog = engine()
    log = CommandLog()
    try:
        return operations.restore("cl", local_repo(dest), conn(scram_pg, databases=["all"], jobs=jobs), mode=mode,
                                  work_dir=str(workdir), log=log), log
    except Exception as exc:
        exc.log = log
        raise


def test_the_largest_database_gets_most_jobs_each_from_its_own_patched_file(scram_pg, cluster, workdir):
    names, dest, artifact, manifest = cluster
    before = {n: pg.fingerprint(n, env=scram_pg.env()) for n in names}
    result, log = restore(scram_pg, dest, workdir, names, "replace", jobs=3)
    restored = result["restored"]
    assert restored["data_offsets"] == {n: "recorded" for n in names}  # every database's TOC patched
    assert restored["jobs"] == {names[0]: 3, names[1]: 1, names[2]: 1}
    assert sorted(d["database"] for d in restored["databases"]) == sorted(names)
    runs = pg_restores(log)
    assert len(runs) == 3
    for argv in runs:
        database = argv[argv.index("-d") + 1]
        jobs = int(argv[argv.index("-j") + 1]) if "-j" in argv else 1
        assert 1 <= jobs <= 3 and jobs == restored["jobs"][next(n for n in names if database.startswith(n[:20]))]
        assert argv[-1].endswith(".dump") and argv[-1] != "-"  # a seekable file, not the tar on stdin
    assert {n: pg.fingerprint(n, env=scram_pg.env()) for n in names} == before
    assert "_restore_" not in sql(scram_pg, "postgres", "SELECT string_agg(datname, ' ') FROM pg_database")


def rewrite_member(artifact: Path, manifest: Path, name: str, change) -> None:
    """Replace one member of the (uncompressed) cluster tar by ``change(its bytes)`` and make the
    manifest agree: a backup written damaged, whose checksum matches what was stored."""
    with tarfile.open(artifact) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member, data in members:
            data = change(data) if member.name == name else data
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    artifact.write_bytes(buffer.getvalue())
    data = json.loads(manifest.read_text())
    data.update(size=len(buffer.getvalue()), sha256=hashlib.sha256(buffer.getvalue()).hexdigest())
    manifest.write_text(json.dumps(data))


@pytest.mark.parametrize("damage", ["a row pg_restore refuses", "an archive that does not parse"])
def test_a_failure_in_one_database_leaves_every_target_untouched(scram_pg, cluster, workdir, damage):
    names, dest, artifact, manifest = cluster
    members = {d["name"]: d["member"] for d in json.loads(manifest.read_text())["source"]["databases"]}
    if damage == "a row pg_restore refuses":  # tiny's COPY row "10" (a chunk of 3 bytes) becomes "1x"
        row = b"\x00\x03\x00\x00\x00"
        rewrite_member(artifact, manifest, members[names[2]], lambda data: data.replace(row + b"10\n", row + b"1x\n"))
    else:  # the last bytes of small's archive cut off
        rewrite_member(artifact, manifest, members[names[1]], lambda data: data[:-5])
    for n in names:  # the targets differ from the backup now
        sql(scram_pg, n, "CREATE TABLE written_after_backup AS SELECT 1 AS x")
    before = {n: pg.fingerprint(n, env=scram_pg.env()) for n in names}
    with pytest.raises(Exception) as exc:
        restore(scram_pg, dest, workdir, names, "replace", jobs=2)
    if damage == "a row pg_restore refuses":
        assert exc.value.kind == "target" and "pg_restore into the scratch database failed" in str(exc.value)
        assert len(pg_restores(exc.value.log)) >= 1
    else:
        assert exc.value.kind == "integrity" and f"database {names[1]} of backup" in str(exc.value)
        assert pg_restores(exc.value.log) == []  # found before any database was loaded
    assert {n: pg.fingerprint(n, env=scram_pg.env()) for n in names} == before
    assert "_restore_" not in sql(scram_pg, "postgres", "SELECT string_agg(datname, ' ') FROM pg_database")
    assert not list(workdir.glob("offsite-restore-*"))  # the work directory with its split files is gone
