"""Base backups (``type: postgresql_physical``) and point-in-time restores of real PostgreSQL 15
clusters that each test creates with initdb on a free port, stopped in a finalizer (the shared
server on 5432 is never touched).

Backups: ``offsite-backup run`` into local, moto S3 and SFTP with age encryption, the manifest's
facts checked against the server and the artifact itself; a cluster with an extra tablespace
refused by a real ``ansible-playbook`` run, leaving nothing behind.

Restores (real ``ansible-playbook`` runs of the restore module): ``recovery_target: immediate``
from S3 with age gives the data as it was at the backup; bad input (a data directory that is not
empty, a target time before the oldest base backup, a damaged artifact) fails with its kind and
leaves nothing running and no directory; a restore to a time T from a cluster archiving with
``wal-push`` has every row committed up to T and none after (margin: one second on each side
of T, as recovery_target_time is given to the second)."""

from __future__ import annotations

import io
import json
import os
import pwd
import subprocess
import tarfile
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.harness import pg
from tests.harness.ansible import run_playbook
from tests.harness.services import LOOPBACK, ScramPostgres, _as_postgres, free_port
from tests.harness.walcluster import WalCluster, cli_prefix
from tests.integration.helpers import cli, local_repo, s3_repo, sftp_repo

pytestmark = [pytest.mark.integration, pytest.mark.s3, pytest.mark.sftp]

DUMP = "offsite.backup.dump"
RESTORE = "offsite.backup.restore"
SET = "crm_cluster"


def _uid() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def cluster():
    """A fresh PostgreSQL cluster of its own (initdb, free port), with a table of 1000 rows."""
    svc = ScramPostgres().start()
    try:
        sql(svc, "CREATE TABLE orders (id int PRIMARY KEY, note text); "
                 "INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1, 1000) g")
        yield svc
    finally:
        svc.stop()


def sql(svc, text: str, db: str = "postgres") -> str:
    return pg.run_sql(db, text, env=svc.env()).strip()


def physical_source(svc) -> dict:
    return {"type": "postgresql_physical", "host": svc.host, "port": svc.port, "user": svc.user,
            "password": svc.password}


def age_key(workdir) -> tuple:
    identity = workdir / "ops.agekey"
    subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
    public = subprocess.run(["age-keygen", "-y", str(identity)], check=True, capture_output=True, text=True)
    return identity, public.stdout.strip()


def base_tar(artifact, identity) -> tarfile.TarFile:
    """The plain tar inside an .tar.zst.age artifact."""
    plain = subprocess.run(f"age -d -i {identity} {artifact} | zstd -dc", shell=True, check=True,
                           capture_output=True).stdout
    return tarfile.open(fileobj=io.BytesIO(plain), mode="r:")


def test_run_streams_a_base_backup_to_every_repository_with_its_facts(cluster, workdir, moto, bucket, sshd):
    identity, recipient = age_key(workdir)
    sftp_dir = Path(sshd.make_dir(f"backups/pitr-{_uid()}"))
    job_name = f"pitr{_uid()}"
    job = {"name": job_name, "local": {"path": str(workdir / "local")},
           "sources": [{"name": SET, "source": physical_source(cluster)}],
           "repositories": [s3_repo(moto, bucket, prefix="pitr"), sftp_repo(sshd, str(sftp_dir)),
                            local_repo(workdir / "offsite")],
           "encryption": {"recipients": [recipient]},
           "log": {"path": str(workdir / "job.log")}}
    (workdir / "offsite").mkdir()
    job_file = workdir / "job.yml"
    job_file.write_text(yaml.safe_dump(job))

    result = cli("run", str(job_file), "--json")
    assert result.returncode == 0, result.stdout + result.stderr

    [manifest_path] = (workdir / "local" / SET).glob("*.manifest.json")
    manifest = json.loads(manifest_path.read_text())
    facts = manifest["source"]
    assert manifest["format"] == "basebackup" and manifest["extension"] == "tar.zst.age"
    ident = sql(cluster, "SELECT system_identifier, (SELECT timeline_id FROM pg_control_checkpoint()), "
                         "current_setting('server_version_num') FROM pg_control_system()").split("|")
    assert facts["type"] == "postgresql_physical"
    assert facts["system_identifier"] == ident[0]
    assert facts["timeline"] == int(ident[1]) == 1
    assert facts["server_version_num"] == int(ident[2]) and facts["server_major"] == "15"
    assert facts["wal_segment_size"] == 16 * 1024 * 1024
    assert manifest["created"] <= facts["start_time"] <= facts["stop_time"]
    assert facts["wal_start"] <= facts["wal_end"] and facts["wal_start"].startswith("00000001")
    # the password went through PGPASSWORD only
    assert cluster.password not in manifest_path.read_text() + result.stdout + result.stderr

    artifact = manifest_path.parent / manifest["artifact"]
    with base_tar(artifact, identity) as tar:
        names = tar.getnames()
        label = tar.extractfile("backup_label").read().decode()
    # the facts are those of the backup itself: its label and the WAL it carries (-X fetch)
    assert f"START WAL LOCATION: {facts['start_lsn']} (file {facts['wal_start']})" in label
    assert f"START TIMELINE: {facts['timeline']}" in label
    assert f"pg_wal/{facts['wal_start']}" in names and f"pg_wal/{facts['wal_end']}" in names
    assert "global/pg_control" in names and "backup_manifest" in names

    # the same bytes everywhere: each repository's manifest is the local one
    s3_manifest = moto.client().get_object(Bucket=bucket, Key=f"pitr/{SET}/{manifest_path.name}")["Body"].read()
    assert json.loads(s3_manifest) == manifest
    assert json.loads((sftp_dir / SET / manifest_path.name).read_text()) == manifest
    assert json.loads((workdir / "offsite" / SET / manifest_path.name).read_text()) == manifest


def test_a_second_tablespace_is_refused_and_leaves_nothing(cluster, workdir):
    """pg_basebackup to stdout carries one tablespace: a cluster with another is refused before
    anything is written, by name, with what to do; a check-mode dump reports the facts."""
    dest = workdir / "dest"
    check = run_playbook([{"name": "check", DUMP: {"name": SET, "source": physical_source(cluster),
                                                   "dest": str(dest)}, "check_mode": True}])
    assert check.rc == 0, check.output
    predicted = check.result("check")["backup"]
    assert predicted["format"] == "basebackup"
    assert predicted["source"]["system_identifier"] == sql(cluster, "SELECT system_identifier FROM pg_control_system()")
    assert not dest.exists()

    space = Path(cluster.tmpdir) / "space"  # the cluster's directory: the server's user reaches it
    space.mkdir()
    pw = pwd.getpwnam("postgres")
    os.chown(space, pw.pw_uid, pw.pw_gid)
    sql(cluster, f"CREATE TABLESPACE archive_space LOCATION '{space}'")
    r = run_playbook([{"name": "dump", DUMP: {"name": SET, "source": physical_source(cluster), "dest": str(dest)}}])
    assert r.rc != 0
    failed = r.result("dump")
    assert failed["error"] == "source", failed
    assert "archive_space" in failed["msg"] and "one tablespace" in failed["msg"], failed["msg"]
    assert cluster.password not in r.output
    leftovers = [p for p in dest.rglob("*") if p.is_file() and not p.name.startswith(".")] if dest.exists() else []
    assert leftovers == []


# --- restore -----------------------------------------------------------------------------------


def restored_running(datadir) -> bool:
    return os.path.exists(os.path.join(datadir, "postmaster.pid"))


@pytest.fixture
def restored_dirs():
    """Data directories restores may create; any server left in one is stopped afterwards."""
    made = []

    def make(parent) -> str:
        path = os.path.join(str(parent), f"restored-{_uid()}")
        made.append(path)
        return path

    try:
        yield make
    finally:
        for path in made:
            if restored_running(path):
                subprocess.run(_as_postgres(["/usr/lib/postgresql/15/bin/pg_ctl", "-D", path, "-m", "immediate",
                                             "-w", "stop"]), capture_output=True, check=False)


def physical_target(datadir, port, **extra) -> dict:
    return dict({"type": "postgresql_physical", "data_directory": datadir, "port": port,
                 "offsite_backup_command": cli_prefix()}, **extra)


def restored_sql(port, text, password=None) -> str:
    env = {"PGHOST": LOOPBACK, "PGPORT": str(port), "PGUSER": "postgres"}
    if password:
        env["PGPASSWORD"] = password
    return pg.run_sql("postgres", text, env=env).strip()


def test_restore_immediate_and_bad_input(cluster, workdir, moto, bucket, restored_dirs):
    identity, recipient = age_key(workdir)
    repo = s3_repo(moto, bucket, prefix="pitr")
    dest = workdir / "dest"
    r = run_playbook([
        {"name": "dump", DUMP: {"name": SET, "source": physical_source(cluster), "dest": str(dest),
                                "encryption": {"recipients": [recipient]}}, "register": "dumped"},
        {"name": "upload", "offsite.backup.upload": {"backup": "{{ dumped.backup }}", "repositories": [repo]}},
    ])
    assert r.rc == 0, r.output
    at_backup = sql(cluster, "SELECT count(*), md5(string_agg(note, ',' ORDER BY id)) FROM orders")
    sql(cluster, "INSERT INTO orders SELECT g, 'after' FROM generate_series(1001, 1100) g")
    created = r.result("dump")["backup"]["created"]
    decrypt = {"identity_file": str(identity)}

    busy = restored_dirs(cluster.tmpdir)
    os.mkdir(busy)
    (Path(busy) / "PG_VERSION").write_text("15\n")
    early, damaged, good = restored_dirs(cluster.tmpdir), restored_dirs(cluster.tmpdir), restored_dirs(cluster.tmpdir)
    local = local_repo(dest)
    [artifact] = (dest / SET).glob("*.tar.zst.age")
    port = free_port()
    tasks = [
        {"name": "not empty", RESTORE: {"name": SET, "repository": repo, "encryption": decrypt,
                                        "target": physical_target(busy, port, recovery_target="immediate")},
         "ignore_errors": True},
        {"name": "too early", RESTORE: {"name": SET, "repository": repo, "encryption": decrypt,
                                        "target": physical_target(early, port, recovery_target_time="2020-01-01T00:00:00Z")},
         "ignore_errors": True},
        {"name": "damaged", RESTORE: {"name": SET, "repository": local, "encryption": decrypt,
                                      "target": physical_target(damaged, port, recovery_target="immediate",
                                                                password=cluster.password)},
         "ignore_errors": True},
        {"name": "immediate", RESTORE: {"name": SET, "repository": repo, "encryption": decrypt,
                                        "target": physical_target(good, port, recovery_target="immediate",
                                                                  password=cluster.password)}},
    ]
    # one flipped byte in the middle of the local copy: the checksum fails, nothing is started
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    r = run_playbook(tasks)
    assert r.rc == 0, r.output

    not_empty = r.result("not empty")
    assert not_empty["error"] == "target", not_empty
    assert "not empty" in not_empty["msg"]
    assert os.listdir(busy) == ["PG_VERSION"]  # left alone

    too_early = r.result("too early")
    assert too_early["error"] == "not_found", too_early
    assert "2020-01-01T00:00:00Z" in too_early["msg"] and not os.path.exists(early)

    bad = r.result("damaged")
    assert bad["error"] == "integrity", bad
    assert not os.path.exists(damaged)
    assert not restored_running(damaged)

    done = r.result("immediate")
    restored = done["restored"]
    assert restored["data_directory"] == good and restored["port"] == port
    assert set(restored["phases"]) >= {"extract_seconds", "recovery_seconds", "promote_seconds", "restart_seconds"}
    assert restored["timeline"] == 2  # promoted: a new timeline
    assert done["backup"]["created"] == created
    assert restored_sql(port, "SELECT pg_is_in_recovery()", cluster.password) == "f"
    assert restored_sql(port, "SELECT count(*), md5(string_agg(note, ',' ORDER BY id)) FROM orders",
                        cluster.password) == at_backup
    st = os.stat(good)
    assert oct(st.st_mode & 0o777) == "0o700" and pwd.getpwuid(st.st_uid).pw_name == "postgres"
    # the recovery job file (S3 keys, the identity) is gone; no secret in the output
    assert not any(p.startswith("offsite-pitr-") for p in os.listdir("/tmp") if os.path.exists(f"/tmp/{p}/recovery.yml")
                   and open(f"/tmp/{p}/recovery.yml").read().find(bucket) >= 0)
    assert cluster.password not in r.output and repo["secret_key"] not in r.output
    auto = (Path(good) / "postgresql.auto.conf").read_text()
    assert "restore_command" not in auto and f"port = {port}" in auto and "archive_mode = 'off'" in auto


def test_restore_to_a_time_keeps_what_was_committed_before_it(workdir, restored_dirs):
    """A cluster archiving through wal-push, a base backup, rows committed before and after T:
    the restore to T has the former, not the latter, and reports a time reached <= T."""
    with WalCluster() as src:
        repo_dir = src.mkdir("repo")
        src.write_job({"name": "pitr", "local": {"path": src.mkdir("local")},
                       "sources": [{"name": SET, "source": {"type": "postgresql_physical", "host": LOOPBACK,
                                                            "user": "postgres"}}],
                       "repositories": [{"type": "local", "path": repo_dir}]})
        src.start(archive_command=src.push_command())
        src.configure(port=src.port)
        job = yaml.safe_load(Path(src.job).read_text())
        job["sources"][0]["source"]["port"] = src.port
        src.write_job(job)
        src.sql("CREATE TABLE ledger (id int PRIMARY KEY, committed timestamptz DEFAULT clock_timestamp())")
        backup = src.cli("run", src.job, "--json")
        assert backup.returncode == 0, backup.stdout + backup.stderr
        for i in range(1, 21):
            src.sql(f"INSERT INTO ledger (id) VALUES ({i})")
        # T: the next whole second after the last row before it; the rows after it wait until a
        # second has passed beyond T (recovery_target_time is given to the second)
        target = src.sql("SELECT to_char((date_trunc('second', clock_timestamp()) + interval '1 second') "
                         "AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')")
        while src.sql(f"SELECT clock_timestamp() > '{target}'::timestamptz + interval '1 second'") != "t":
            time.sleep(0.1)
        for i in range(21, 41):
            src.sql(f"INSERT INTO ledger (id) VALUES ({i})")
        src.wait_archived(src.switch_wal())

        datadir = restored_dirs(src.home)
        port = free_port()
        r = run_playbook([{"name": "pitr", RESTORE: {
            "name": SET, "repository": {"type": "local", "path": repo_dir},
            "target": physical_target(datadir, port, recovery_target_time=target)}}])
        assert r.rc == 0, r.output
        restored = r.result("pitr")["restored"]
        assert restored["reached_time"] <= target.replace("Z", ".999999Z")
        rows = restored_sql(port, "SELECT string_agg(id::text, ',' ORDER BY id) FROM ledger")
        assert rows == ",".join(str(i) for i in range(1, 21))
        assert restored["timeline"] == 2
