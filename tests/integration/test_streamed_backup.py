"""The scheduled job's one pass (issue 6, Performance): the dump streamed to the local copy and
to every repository at once, through the real ``offsite-backup`` command against PostgreSQL,
moto S3, the harness's sshd (SFTP and rsync) and local directories.

What is checked is what an operator relies on:
- every repository holds the same bytes as the local copy, with its manifest written last;
- the upload really overlaps the dump (an S3 multipart upload is in progress while the local
  ``.partial`` is still being written);
- a dump that dies midway leaves nothing anywhere: no artifact, no manifest, no pending multipart
  upload, no partial file;
- a repository that fails midway fails alone: the local copy and the others complete, and the run
  fails unless ``min_success`` is met.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid

import pytest
import yaml

from tests.harness import pg
from tests.integration.helpers import (cli, kill_pg_dump, partial_bytes, pg_source, s3_keys, s3_repo, sftp_repo,
                                       watching)

pytestmark = [pytest.mark.integration, pytest.mark.s3, pytest.mark.sftp]

SET = "crm_db"


def _uid() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def server_dir(sshd):
    path = sshd.make_dir(f"backups/stream-{_uid()}")
    yield str(path)


def write_job(workdir, repositories, database, **extra) -> tuple:
    name = f"stream{_uid()}"
    job = {"name": name, "local": {"path": str(workdir / "local")},
           "sources": [{"name": SET, "source": pg_source(database)}],
           "repositories": repositories, "log": {"path": str(workdir / f"{name}.log")}}
    job.update(extra)
    path = workdir / f"{name}.yml"
    path.write_text(yaml.safe_dump(job))
    return path, job


def run_json(path) -> tuple:
    result = cli("run", str(path), "--json")
    return result, json.loads(result.stdout) if result.stdout.strip() else None


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def local_manifest(workdir) -> dict:
    [manifest] = (workdir / "local" / SET).glob("*.manifest.json")
    return json.loads(manifest.read_text())


def pending_multipart(moto, bucket) -> list:
    return moto.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def files_under(root) -> list:
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, dirs, fs in os.walk(root) for f in fs)


def test_one_pass_to_every_kind_of_repository(moto, bucket, sshd, server_dir, sample_db, workdir,
                                              unique_db_name):
    """s3, sftp and a local disk are fed while the dump is written; rsync (it needs the size in
    advance) gets the finished local copy. All hold the same bytes; a restore from the
    streamed S3 copy equals the source."""
    other_disk = workdir / "usb"
    other_disk.mkdir()
    rsync_dir = sshd.make_dir(f"backups/stream-rsync-{_uid()}")
    repos = [s3_repo(moto, bucket, prefix="srv1"), sftp_repo(sshd, server_dir), {"type": "local", "path": str(other_disk)},
             {"type": "rsync", "host": sshd.host, "port": sshd.port, "user": sshd.user,
              "private_key": sshd.private_key, "known_hosts": sshd.known_hosts, "path": str(rsync_dir)}]
    path, job = write_job(workdir, repos, sample_db)
    result, report = run_json(path)
    assert result.returncode == 0, result.stderr
    [done] = report["sets"]
    manifest = local_manifest(workdir)
    artifact = f"{SET}/{manifest['id']}.{manifest['extension']}"
    assert [r["status"] for r in done["repositories"]] == ["uploaded"] * 4, done["repositories"]
    assert all(r["bytes"] == manifest["size"] for r in done["repositories"]), done["repositories"]
    assert sha256_file(workdir / "local" / artifact) == manifest["sha256"]

    # each store holds the local bytes and the same manifest
    s3 = moto.client()
    body = s3.get_object(Bucket=bucket, Key=f"srv1/{artifact}")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == manifest["sha256"]
    remote = json.loads(s3.get_object(Bucket=bucket, Key=f"srv1/{SET}/{manifest['id']}.manifest.json")["Body"].read())
    assert remote["sha256"] == manifest["sha256"] and remote["size"] == manifest["size"]
    for root in (server_dir, str(other_disk), str(rsync_dir)):
        assert sha256_file(os.path.join(root, artifact)) == manifest["sha256"], root
        copied = json.loads(open(os.path.join(root, SET, f"{manifest['id']}.manifest.json")).read())
        assert copied["sha256"] == manifest["sha256"], root
        assert not [f for f in files_under(root) if ".partial" in f], files_under(root)
    assert pending_multipart(moto, bucket) == []

    restored = cli("restore", str(path), "--set", SET, "--database", unique_db_name, "--from", "0")
    assert restored.returncode == 0, restored.stderr
    assert pg.fingerprint(unique_db_name) == pg.fingerprint(sample_db)


def test_upload_overlaps_the_dump(moto, bucket, big_db, workdir):
    """While pg_dump is still writing the local ``.partial``, S3 already has parts of it."""
    repo = s3_repo(moto, bucket, prefix="srv1", part_size=5)
    path, job = write_job(workdir, [repo], big_db, compression="none")
    set_dir = workdir / "local" / SET
    seen: dict = {}
    client = moto.client()

    def parts_while_dumping():
        uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) if partial_bytes(set_dir) else []
        if uploads:
            parts = client.list_parts(Bucket=bucket, Key=uploads[0]["Key"], UploadId=uploads[0]["UploadId"])
            if parts.get("Parts") and partial_bytes(set_dir):  # still dumping once the parts were seen
                seen["parts_while_dumping"] = len(parts["Parts"])
                return True
        return False

    with watching(parts_while_dumping, interval=0.02):
        result, report = run_json(path)
    assert result.returncode == 0, result.stderr
    assert seen.get("parts_while_dumping"), "no part reached S3 before the dump finished: not streamed"
    manifest = local_manifest(workdir)
    head = client.head_object(Bucket=bucket, Key=f"srv1/{SET}/{manifest['id']}.{manifest['extension']}")
    assert head["ContentLength"] == manifest["size"] and head["ETag"].strip('"').endswith("-%d" % -(-manifest["size"] // (5 << 20)))


def test_dump_killed_midway_leaves_nothing_anywhere(moto, bucket, sshd, server_dir, big_db, workdir):
    other_disk = workdir / "usb"
    other_disk.mkdir()
    repos = [s3_repo(moto, bucket, prefix="srv1", part_size=5), sftp_repo(sshd, server_dir),
             {"type": "local", "path": str(other_disk)}]
    path, job = write_job(workdir, repos, big_db, compression="none")
    set_dir = workdir / "local" / SET
    report: dict = {}

    def interrupt():
        if partial_bytes(set_dir) <= 12 << 20:  # kill once two S3 parts are on their way
            return False
        report["killed"] = kill_pg_dump(big_db)
        return True

    with watching(interrupt):
        result, out = run_json(path)
    assert report.get("killed"), f"pg_dump was not caught running\n{result.stderr}"
    assert result.returncode != 0
    [failed] = out["sets"]
    assert failed["status"] == "failed" and "SIGKILL" in failed["error"], failed
    # nothing anywhere: no artifact, no manifest, no partial, no pending multipart upload
    assert files_under(set_dir) == [f".{SET}.lock"], files_under(set_dir)
    assert s3_keys(moto, bucket) == []
    assert pending_multipart(moto, bucket) == []
    assert files_under(server_dir) == [] and files_under(other_disk) == []


@pytest.mark.parametrize("min_success", [None, 2])
def test_a_repository_failing_midstream_fails_alone(moto, bucket, sshd, server_dir, big_db, workdir, min_success):
    """A bucket that does not exist fails at the first part; the local copy, SFTP and the
    other disk complete; the run fails unless min_success is met. While offsite copies fail,
    local retention keeps every local copy (one that never left the machine is not deleted)."""
    other_disk = workdir / "usb"
    other_disk.mkdir()
    missing = s3_repo(moto, f"offsite-missing-{_uid()}", prefix="srv1", part_size=5)
    repos = [missing, sftp_repo(sshd, server_dir), {"type": "local", "path": str(other_disk)}]
    extra = {"min_success": min_success} if min_success else {}
    path, job = write_job(workdir, repos, big_db, **extra)
    job["local"]["retention"] = {"keep_last": 1}
    path.write_text(yaml.safe_dump(job))
    first, dummy = run_json(path)
    result, out = run_json(path)
    [done] = out["sets"]
    local_backups = list((workdir / "local" / SET).glob("*.manifest.json"))
    statuses = [r["status"] for r in done["repositories"]]
    assert statuses == ["failed", "uploaded", "uploaded"], done["repositories"]
    assert "does not exist" in done["repositories"][0]["error"] or "NoSuchBucket" in done["repositories"][0]["error"]
    # the local copy is complete either way
    manifest = json.loads((workdir / "local" / SET / f"{done['backup']['id']}.manifest.json").read_text())
    assert done["backup"]["sha256"] == manifest["sha256"]
    artifact = f"{SET}/{manifest['id']}.{manifest['extension']}"
    for root in (server_dir, str(other_disk)):
        assert sha256_file(os.path.join(root, artifact)) == manifest["sha256"]
    if min_success is None:
        assert first.returncode != 0 and result.returncode != 0 and done["status"] == "failed", done
        assert "failed on 1 of 3 repositories" in done["error"]
        assert len(local_backups) == 2, "local retention removed a copy while the upload failed"
    else:
        assert first.returncode == 0 and result.returncode == 0 and done["status"] == "succeeded", done
        assert len(local_backups) == 1
        log_text = (workdir / f"{job['name']}.log").read_text()
        assert "min_success 2 still met" in log_text
