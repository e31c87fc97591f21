"""One repository, one failure (issue 12, item 4), end to end: a read-only local repository listed
first, then S3 (moto) and SFTP (the harness's sshd), ``min_success: 1``. S3 and SFTP complete
with their manifests and restore; the result names the read-only disk and why.

Both fan-outs: the upload module (a directory made immutable with ``chattr +i``, what root cannot
write either) and the scheduled job's streamed pass (``offsite-backup run`` inside its own mount
namespace, where the local repository is a tmpfs remounted read-only: EROFS, like a USB disk the
kernel remounted read-only after I/O errors)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import uuid

import pytest
import yaml

from tests.harness.ansible import run_playbook
from tests.integration.helpers import cli, cli_read_only, local_repo, s3_keys, s3_repo, sftp_repo

pytestmark = [pytest.mark.integration, pytest.mark.s3, pytest.mark.sftp]


def _uid() -> str:
    return uuid.uuid4().hex[:8]


def _digests(root) -> dict:
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            found[os.path.relpath(path, root)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return found


@pytest.fixture
def source(tmp_path):
    src = tmp_path / "src" / "site"
    (src / "empty").mkdir(parents=True)
    (src / "blob.bin").write_bytes(os.urandom(7 * 1024 * 1024))  # larger than one S3 part
    (src / "note.txt").write_text("one repository, one failure\n")
    return src


@pytest.fixture
def server_dir(sshd):
    path = sshd.make_dir(f"backups/onefail-{_uid()}")
    try:
        yield str(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def immutable_dir(tmp_path):
    path = tmp_path / "usb"
    path.mkdir()
    subprocess.run(["chattr", "+i", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=False)


def test_upload_read_only_local_first_s3_and_sftp_complete(moto, bucket, sshd, server_dir, immutable_dir,
                                                           source, tmp_path):
    repos = [local_repo(immutable_dir), s3_repo(moto, bucket, prefix="p"), sftp_repo(sshd, server_dir)]
    restored = {kind: tmp_path / f"restored-{kind}" for kind in ("s3", "sftp")}
    tasks = [
        {"name": "dump", "offsite.backup.dump": {"name": "site", "source": {"type": "files", "paths": [str(source)]},
                                                 "dest": str(tmp_path / "dest"), "compression": "zstd"},
         "register": "dumped"},
        {"name": "upload", "offsite.backup.upload": {"backup": "{{ dumped.backup }}", "repositories": repos,
                                                     "min_success": 1}},
    ] + [{"name": f"restore {kind}", "offsite.backup.restore": {
        "name": "site", "repository": repo, "work_dir": str(tmp_path), "target": {"type": "files", "path": str(restored[kind])}}}
        for kind, repo in (("s3", repos[1]), ("sftp", repos[2]))]
    r = run_playbook(tasks)
    assert r.rc == 0 and not r.failed_tasks, r.output
    res = r.result("upload")
    assert [x["status"] for x in res["repositories"]] == ["failed", "uploaded", "uploaded"], res
    failed = res["repositories"][0]
    assert failed["error_kind"] == "config" and "Operation not permitted" in failed["error"], failed
    assert str(immutable_dir) in res["failed_repositories"][0] and "Operation not permitted" in res["warnings"][0]
    backup_id = res["backup"]["id"]
    assert f"p/site/{backup_id}.manifest.json" in s3_keys(moto, bucket)
    assert os.path.exists(os.path.join(server_dir, "site", f"{backup_id}.manifest.json"))
    assert os.listdir(immutable_dir) == []
    for kind in ("s3", "sftp"):
        assert _digests(restored[kind] / str(source).lstrip("/")) == _digests(source), kind
        assert (restored[kind] / str(source).lstrip("/") / "empty").is_dir()


def test_streamed_run_read_only_local_first_s3_and_sftp_complete(moto, bucket, sshd, server_dir, source, tmp_path):
    usb = tmp_path / "usb"
    usb.mkdir()
    repos = [local_repo(usb), s3_repo(moto, bucket, prefix="p"), sftp_repo(sshd, server_dir)]
    name = f"onefail{_uid()}"
    job = {"name": name, "local": {"path": str(tmp_path / "local")}, "min_success": 1,
           "sources": [{"name": "site", "source": {"type": "files", "paths": [str(source)]}}],
           "repositories": repos, "log": {"path": str(tmp_path / f"{name}.log")}}
    path = tmp_path / f"{name}.yml"
    path.write_text(yaml.safe_dump(job))
    run = cli_read_only(usb, "run", str(path), "--json")  # only this run sees usb read-only
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    [done] = json.loads(run.stdout)["sets"]
    assert [x["status"] for x in done["repositories"]] == ["failed", "uploaded", "uploaded"], done
    failed = done["repositories"][0]
    assert failed["error_kind"] == "io" and "Read-only file system" in failed["error"], failed
    backup_id = done["backup"]["id"]
    assert f"p/site/{backup_id}.manifest.json" in s3_keys(moto, bucket)
    assert os.path.exists(os.path.join(server_dir, "site", f"{backup_id}.manifest.json"))
    for index, kind in ((1, "s3"), (2, "sftp")):
        target = tmp_path / f"restored-{kind}"
        restored = cli("restore", str(path), "--set", "site", "--path", str(target), "--from", str(index),
                       "--work-dir", str(tmp_path))
        assert restored.returncode == 0, restored.stderr
        assert _digests(target / str(source).lstrip("/")) == _digests(source), kind
