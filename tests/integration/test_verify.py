"""offsite.backup.verify end to end: encrypted PostgreSQL and file backups copied to moto S3 and a
local disk, then verified with real ansible-playbook runs; then damaged in the repositories
(a missing artifact, a flipped byte, a rewritten manifest, a stale set, a copy that differs
between providers) and every damage reported as a failure naming the repository and backup."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.harness.ansible import run_playbook
from tests.integration.helpers import engine_dump, engine_upload, local_repo, pg_source, s3_keys, s3_repo

pytestmark = pytest.mark.integration

VERIFY = "offsite.backup.verify"


def age_key(path: Path) -> str:
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    return subprocess.run(["age-keygen", "-y", str(path)], check=True, capture_output=True, text=True).stdout.strip()


def by_id(report: dict) -> dict:
    return {b["id"]: b for b in report["backups"]}


@pytest.mark.s3
def test_verify_proves_and_catches_damage(moto, bucket, sample_db, workdir):
    pub = age_key(workdir / "dr.agekey")
    dest, disk = workdir / "copies", workdir / "offsite"
    disk.mkdir()
    repos = [s3_repo(moto, bucket, prefix="v"), local_repo(disk)]
    key = {"identity_file": str(workdir / "dr.agekey")}
    ids = []
    for dummy in range(3):  # the backups to verify (dump and upload are tested elsewhere)
        backup = engine_dump("crm", pg_source(sample_db), dest, encryption={"recipients": [pub]})
        engine_upload(backup, repos)
        ids.append(backup["id"])
    checks = [
        {"name": "full", VERIFY: {"name": "crm", "repositories": repos, "read_data": "all", "max_age": "1h",
                                  "encryption": key}},
        {"name": "sample", VERIFY: {"name": "crm", "repositories": repos, "read_data": "1"}},
        {"name": "listing", VERIFY: {"name": "crm", "repository": repos[1]}},
    ]
    r = run_playbook(checks)
    assert r.rc == 0, r.output
    full = r.result("full")
    assert full["ok"] and full["consistent"] and full["failures"] == [] and not r.tasks["full"]["changed"]
    assert full["checked"] == 6 and full["read"] == 6
    for report in full["repositories"]:
        assert sorted(by_id(report)) == sorted(ids)
        for entry in report["backups"]:
            assert entry["status"] == "ok" and entry["read"] and entry["decrypted"], entry
            assert entry["validated"] == "pg_restore --list", entry
        assert report["newest"]["id"] == ids[-1]
    # the sample without a key: the newest is read (as ciphertext), the others only listed
    sample = r.result("sample")
    for report in sample["repositories"]:
        read = [b for b in report["backups"] if b["read"]]
        assert [b["id"] for b in read] == [ids[-1]] and read[0]["decrypted"] is False
    assert r.result("listing")["read"] == 0 and "consistent" not in r.result("listing")

    # damage: local loses the oldest artifact; S3's middle artifact gets a flipped byte (same
    # size, so only reading finds it); local's newest manifest is rewritten with another checksum
    (disk / "crm" / f"{ids[0]}.dump.zst.age").unlink()
    s3 = moto.client()
    key_mid = f"v/crm/{ids[1]}.dump.zst.age"
    blob = bytearray(s3.get_object(Bucket=bucket, Key=key_mid)["Body"].read())
    blob[len(blob) // 2] ^= 0x01
    s3.put_object(Bucket=bucket, Key=key_mid, Body=bytes(blob))
    man = disk / "crm" / f"{ids[2]}.manifest.json"
    data = json.loads(man.read_text())
    data["sha256"] = "f" * 64
    man.write_text(json.dumps(data))
    r = run_playbook([
        {"name": "after damage", VERIFY: {"name": "crm", "repositories": repos, "read_data": "100%",
                                          "encryption": key}, "ignore_errors": True},
        {"name": "stale", VERIFY: {"name": "crm", "repository": repos[0], "max_age": "1s"}, "ignore_errors": True},
        {"name": "bad read_data", VERIFY: {"name": "crm", "repository": repos[0], "read_data": "150%"},
         "ignore_errors": True},
        {"name": "check mode", VERIFY: {"name": "crm", "repository": repos[0], "read_data": "all",
                                        "encryption": key}, "check_mode": True, "ignore_errors": True},
    ])
    res = r.result("after damage")
    assert r.status("after damage") == "failed" and res["error"] == "integrity" and res["ok"] is False
    s3_report, local_report = res["repositories"]
    assert by_id(s3_report)[ids[1]]["status"] == "failed"
    assert "does not match its manifest checksum" in by_id(s3_report)[ids[1]]["error"]
    assert by_id(s3_report)[ids[2]]["status"] == "ok" and by_id(s3_report)[ids[0]]["status"] == "ok"
    assert by_id(local_report)[ids[0]]["status"] == "damaged"
    assert "manifest without artifact" in by_id(local_report)[ids[0]]["error"]
    assert by_id(local_report)[ids[2]]["status"] == "failed"
    assert by_id(local_report)[ids[1]]["status"] == "ok"
    failures = "\n".join(res["failures"])
    assert f"backup {ids[0]} is missing on {local_report['location']}" in failures
    assert f"backup {ids[2]} differs between repositories" in failures
    assert res["consistent"] is False
    assert len(s3_keys(moto, bucket, "v/")) == 6  # verify never deletes or repairs

    stale = r.result("stale")
    assert r.status("stale") == "failed" and "more than max_age 1s" in stale["msg"]
    assert r.result("bad read_data")["error"] == "config" and "150%" in r.result("bad read_data")["msg"]
    # check mode runs the same read-only checks and finds the same damage
    assert r.result("check mode")["error"] == "integrity"
    assert by_id(r.result("check mode")["repositories"][0])[ids[1]]["status"] == "failed"


def test_verify_validates_file_archives_and_plain_backups(workdir):
    """A tar archive is validated with tar -t; an unencrypted backup is refused when a key is
    given (encryption required), and accepted with required false."""
    src = workdir / "src"
    src.mkdir()
    (src / "a.txt").write_text("alpha\n")
    disk = workdir / "offsite"
    pub = age_key(workdir / "k.agekey")
    engine_dump("files", {"type": "files", "paths": [str(src)]}, disk, encryption={"recipients": [pub]})
    engine_dump("plain", {"type": "files", "paths": [str(src)]}, disk)
    r = run_playbook([
        {"name": "verify files", VERIFY: {"name": "files", "repository": local_repo(disk), "read_data": "all",
                                          "encryption": {"identity_file": str(workdir / "k.agekey")}}},
        {"name": "verify plain required", VERIFY: {"name": "plain", "repository": local_repo(disk),
                                                   "read_data": "all",
                                                   "encryption": {"identity_file": str(workdir / "k.agekey")}},
         "ignore_errors": True},
        {"name": "verify plain allowed", VERIFY: {"name": "plain", "repository": local_repo(disk),
                                                  "read_data": "all",
                                                  "encryption": {"identity_file": str(workdir / "k.agekey"),
                                                                 "required": False}}},
    ])
    assert r.status("verify files") == "ok", r.output
    entry = r.result("verify files")["repositories"][0]["backups"][0]
    assert entry["validated"] == "tar -t -f -" and entry["decrypted"] is True
    required = r.result("verify plain required")
    assert r.status("verify plain required") == "failed" and "is not encrypted, but encryption is required" in required["msg"]
    assert r.status("verify plain allowed") == "ok", r.output
    assert r.result("verify plain allowed")["repositories"][0]["backups"][0]["validated"] == "tar -t -f -"


@pytest.mark.sftp
def test_verify_reads_rsync_tree_snapshots(sshd, tmp_path):
    """A tree snapshot (rsync repository) is read by downloading it and comparing its listing
    with the manifest; a file renamed on the server is reported."""
    root = sshd.make_dir(f"backups/verify-tree-{uuid.uuid4().hex[:10]}")
    try:
        check_tree_snapshots(sshd, root, tmp_path)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def check_tree_snapshots(sshd, root: str, tmp_path: Path) -> None:
    from tests.integration.test_rsync import SNAPSHOT, rsync_repo
    src = tmp_path / "www"
    src.mkdir()
    (src / "index.html").write_text("<h1>hello</h1>\n")
    repo = rsync_repo(sshd, root)
    r = run_playbook([
        {"name": "snap", SNAPSHOT: {"name": "www", "source": {"type": "files", "paths": [str(src)]},
                                    "repository": repo}, "register": "s"},
        {"name": "verify", VERIFY: {"name": "www", "repository": repo, "read_data": "all"}},
    ])
    assert r.rc == 0, r.output
    entry = r.result("verify")["repositories"][0]["backups"][0]
    assert entry["read"] and entry["validated"] == "tree listing" and entry["status"] == "ok", entry
    snap = Path(root) / "www" / r.result("snap")["backup"]["id"] / str(src).lstrip("/")
    (snap / "index.html").rename(snap / "index.htm")
    r = run_playbook([{"name": "verify", VERIFY: {"name": "www", "repository": repo, "read_data": "all"},
                       "ignore_errors": True}])
    assert r.status("verify") == "failed"
    assert "does not match its manifest" in r.result("verify")["repositories"][0]["backups"][0]["error"]
