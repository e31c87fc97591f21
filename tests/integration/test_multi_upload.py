"""One upload to several repositories at once (issue 3, item 6): real ansible-playbook runs against
moto S3, the harness's sshd and a local directory, checked by looking at the stores directly.

The artifact (a 20 MiB files backup, uncompressed) is larger than an S3 part, so the S3 side is a
real multipart upload fed from the same single read as the SFTP and local copies.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid
from pathlib import Path

import pytest

from tests.harness.ansible import run_playbook
from tests.harness.services import free_port
from tests.integration.helpers import engine_dump, local_repo, s3_exists, s3_repo, sftp_repo

pytestmark = [pytest.mark.integration, pytest.mark.s3, pytest.mark.sftp]

UPLOAD = "offsite.backup.upload"
FAST = {"timeout": 3, "retries": 1}


def _uid() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def dumped(tmp_path_factory):
    """A 20 MiB files backup in a local directory: dump's ``backup`` result, made by the engine
    in this process (the dump module's own run is tested elsewhere; here only upload is)."""
    src = tmp_path_factory.mktemp("multi-src")
    (src / "blob.bin").write_bytes(os.urandom(20 * 1024 * 1024))
    (src / "note.txt").write_text("several repositories at once\n")
    dest = tmp_path_factory.mktemp("multi-dest")
    return engine_dump("multi", {"type": "files", "paths": [str(src)]}, dest, compression="none")


@pytest.fixture
def sftp_dir(sshd):
    rel = f"backups/multi-{_uid()}"
    path = sshd.make_dir(rel)
    try:
        yield str(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _s3_bytes(moto, bucket, key) -> bytes:
    return moto.client().get_object(Bucket=bucket, Key=key)["Body"].read()


def _upload(repos, **extra) -> dict:
    args = {"backup": "{{ backup }}", "repositories": repos}
    args.update(extra)
    return {"name": "upload", UPLOAD: args}


def _statuses(res) -> list:
    return [x["status"] for x in res["repositories"]]


def test_one_read_three_repositories_identical_copies(moto, sshd, bucket, sftp_dir, tmp_path, dumped):
    disk = tmp_path / "disk"
    disk.mkdir()
    repos = [s3_repo(moto, bucket, prefix="multi", part_size=5), sftp_repo(sshd, sftp_dir), local_repo(disk)]
    started = time.monotonic()
    r = run_playbook([_upload(repos)], extravars={"backup": dumped})
    elapsed = time.monotonic() - started
    assert r.rc == 0, r.output
    res = r.result("upload")
    assert r.tasks["upload"]["changed"] is True
    assert _statuses(res) == ["uploaded"] * 3, res
    assert [x["bytes"] for x in res["repositories"]] == [dumped["size"]] * 3
    assert all(x["duration"] >= 0 for x in res["repositories"])
    assert "failed_repositories" not in res

    local_bytes = Path(dumped["path"]).read_bytes()
    manifest_bytes = Path(dumped["manifest"]).read_bytes()
    name = f"multi/{dumped['id']}"
    art, man = f"{name}.tar", f"{name}.manifest.json"
    copies = {
        "s3": (_s3_bytes(moto, bucket, f"multi/{art}"), _s3_bytes(moto, bucket, f"multi/{man}")),
        "sftp": (Path(sftp_dir, art).read_bytes(), Path(sftp_dir, man).read_bytes()),
        "local": ((disk / art).read_bytes(), (disk / man).read_bytes()),
    }
    for kind, (artifact, manifest) in copies.items():
        assert _sha256(artifact) == dumped["sha256"] == _sha256(local_bytes), kind
        assert manifest == manifest_bytes, kind
    # nothing half-written anywhere: no .partial leftovers
    assert sorted(os.listdir(Path(sftp_dir, "multi"))) == sorted([Path(art).name, Path(man).name])
    assert sorted(os.listdir(disk / "multi")) == sorted([Path(art).name, Path(man).name])

    # again: every repository already holds it, nothing is read or sent
    r = run_playbook([_upload(repos)], extravars={"backup": dumped})
    assert r.rc == 0, r.output
    assert r.tasks["upload"]["changed"] is False
    assert _statuses(r.result("upload")) == ["unchanged"] * 3
    assert [x["bytes"] for x in r.result("upload")["repositories"]] == [0] * 3
    print(f"three repositories, {dumped['size']} bytes: {elapsed:.1f}s including ansible start-up")


def _repos_with_one_unreachable(moto, sshd, bucket, sftp_dir, disk):
    port = free_port()  # nothing listens there
    dead = sftp_repo(sshd, sftp_dir, port=port, **FAST)
    return [s3_repo(moto, bucket, prefix="multi"), dead, local_repo(disk)], f"127.0.0.1:{port}"


def _assert_complete(moto, bucket, disk, backup):
    base = f"multi/{backup['id']}"
    assert s3_exists(moto, bucket, f"multi/{base}.tar") and s3_exists(moto, bucket, f"multi/{base}.manifest.json")
    assert _sha256(_s3_bytes(moto, bucket, f"multi/{base}.tar")) == backup["sha256"]
    assert _sha256((disk / f"{base}.tar").read_bytes()) == backup["sha256"]
    assert (disk / f"{base}.manifest.json").exists()


def test_one_unreachable_repository_with_min_success_2_is_reported_not_fatal(
        moto, sshd, bucket, sftp_dir, tmp_path, dumped):
    disk = tmp_path / "disk"
    disk.mkdir()
    repos, where = _repos_with_one_unreachable(moto, sshd, bucket, sftp_dir, disk)
    started = time.monotonic()
    r = run_playbook([_upload(repos, min_success=2)], extravars={"backup": dumped})
    elapsed = time.monotonic() - started
    assert r.rc == 0, r.output
    assert r.status("upload") == "changed", r.output
    res = r.result("upload")
    assert _statuses(res) == ["uploaded", "failed", "uploaded"], res
    failed = res["repositories"][1]
    assert "cannot reach" in failed["error"] and where in failed["error"], failed
    assert failed["error_kind"] == "unreachable" and failed["bytes"] == 0
    assert len(res["failed_repositories"]) == 1 and where in res["failed_repositories"][0]
    assert any(where in w for w in res.get("warnings", [])), res
    _assert_complete(moto, bucket, disk, dumped)
    assert elapsed < 60, f"timeout: 3 / retries: 1 should fail fast, took {elapsed:.1f}s"


def test_one_unreachable_repository_fails_the_task_by_default_but_the_others_complete(
        moto, sshd, bucket, sftp_dir, tmp_path, dumped):
    disk = tmp_path / "disk"
    disk.mkdir()
    repos, where = _repos_with_one_unreachable(moto, sshd, bucket, sftp_dir, disk)
    r = run_playbook([_upload(repos)], extravars={"backup": dumped})
    assert r.rc != 0, r.output
    assert r.status("upload") == "failed", r.output
    res = r.result("upload")
    msg = res["msg"]
    assert "failed on 1 of 3 repositories" in msg and where in msg and "cannot reach" in msg, msg
    assert res["error"] == "unreachable"
    assert _statuses(res) == ["uploaded", "failed", "uploaded"], res
    _assert_complete(moto, bucket, disk, dumped)


def test_min_success_out_of_range_is_a_config_error(moto, bucket, tmp_path, dumped):
    r = run_playbook([_upload([local_repo(tmp_path), s3_repo(moto, bucket)], min_success=3)],
                     extravars={"backup": dumped})
    assert r.rc != 0 and r.status("upload") == "failed", r.output
    res = r.result("upload")
    assert res["error"] == "config" and "min_success" in res["msg"], res
    assert os.listdir(tmp_path) == []
