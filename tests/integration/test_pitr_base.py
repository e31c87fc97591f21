"""Base backups (``type: postgresql_physical``) of real PostgreSQL 15 clusters that each test
creates with initdb on a free port (scram-sha-256: the password travels in PGPASSWORD), stopped
in a finalizer: ``offsite-backup run`` into local, moto S3 and SFTP with age encryption, the
manifest's facts checked against the server and against the artifact itself; a cluster with an
extra tablespace refused by a real ``ansible-playbook`` run, leaving nothing behind."""

from __future__ import annotations

import io
import json
import os
import pwd
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest
import yaml

from tests.harness import pg
from tests.harness.ansible import run_playbook
from tests.harness.services import ScramPostgres
from tests.integration.helpers import cli, local_repo, s3_repo, sftp_repo

pytestmark = [pytest.mark.integration, pytest.mark.s3, pytest.mark.sftp]

DUMP = "offsite.backup.dump"
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
