"""Hardened S3 (issue 3, items 7 and 9): real ansible-playbook runs against moto S3 (IAM enforced),
checked by looking into the bucket with boto3.

- offsite.backup.s3_bucket: versioning, Object Lock, lifecycle, public access block, encryption;
  check mode changes nothing, a second run changes nothing, the IAM policy it returns really
  lets a key upload and really keeps that key from deleting.
- Object Lock on upload; retention skips locked backups without touching any of their objects,
  deletes every version of the ones it may delete, and extends the locks of monthly copies.
- A killed multipart upload leaves nothing that looks like a backup; retention aborts it.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.harness.ansible import run_playbook
from tests.harness.faults import COLLECTIONS
from tests.integration.helpers import s3_head, s3_keys, s3_repo

if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)
from ansible_collections.offsite.backup.plugins.module_utils._engine import operations  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.s3]

ROOT = Path(__file__).resolve().parents[2]
BUCKET_MODULE = "offsite.backup.s3_bucket"


def _uid() -> str:
    return uuid.uuid4().hex[:8]


def _conn(moto) -> dict:
    return {"endpoint_url": moto.endpoint_url, "region": moto.region,
            "access_key": moto.access_key, "secret_key": moto.secret_key}


def _hardened(moto, bucket, **extra) -> dict:
    args = dict(_conn(moto), bucket=bucket, prefix="backups", object_lock_enabled=True, transition_days=30,
                transition_storage_class="DEEP_ARCHIVE", noncurrent_expiration_days=90)
    args.update(extra)
    return args


def _dump(src, dest, name="site") -> dict:
    """A backup of ``src`` in ``dest``: state for the test, written by the engine (the dump
    module's own runs are tested in test_backup_cycle.py)."""
    return operations.dump(name, {"type": "files", "paths": [str(src)]}, str(dest), compression="none")["backup"]


def _dump_and_upload(src, dest, repo, count=1, name="site") -> list[dict]:
    """``count`` backups of ``src`` (one second apart: ids have one-second resolution), uploaded:
    the state the test starts from, written by the engine, not by a playbook (the upload module's
    Object Lock check: test_upload_with_object_lock_needs_a_lock_enabled_bucket)."""
    backups = []
    for n in range(count):
        if n:
            time.sleep(1)
        backups.append(_dump(src, dest, name))
        uploaded = operations.upload(backups[-1], [repo])
        assert [x["status"] for x in uploaded["repositories"]] == ["uploaded"], uploaded
    return backups


def _retention_task(repo, policy, name="retention", **extra) -> dict:
    args = {"name": "site", "repository": repo, "policy": policy}
    args.update(extra)
    return {"name": name, "offsite.backup.retention": args}


def _retention(repo, policy, check=False, **extra):
    return run_playbook([_retention_task(repo, policy, **extra)], check=check)


def _info_task(repo) -> dict:
    return {"name": "info", "offsite.backup.backup_info": {"name": "site", "repository": repo}}


def _versions(moto, bucket, key) -> list:
    listed = moto.client().list_object_versions(Bucket=bucket, Prefix=key)
    return [v["VersionId"] for v in listed.get("Versions", []) + listed.get("DeleteMarkers", []) if v["Key"] == key]


def _set_lock(moto, bucket, key, until):
    """As the bucket's administrator: move a governance lock (here: let it expire)."""
    c = moto.client()
    version = c.head_object(Bucket=bucket, Key=key)["VersionId"]
    c.put_object_retention(Bucket=bucket, Key=key, VersionId=version, BypassGovernanceRetention=True,
                           Retention={"Mode": "GOVERNANCE", "RetainUntilDate": until})


@pytest.fixture
def files(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "data.bin").write_bytes(os.urandom(300 * 1024))
    dest = tmp_path / "dest"
    dest.mkdir()
    return src, dest


# -- the bucket module ------------------------------------------------------------------------
def test_bucket_check_mode_creates_nothing_then_hardens_and_a_second_run_changes_nothing(moto):
    bucket = f"offsite-hard-{_uid()}"
    task = {"name": "bucket", BUCKET_MODULE: _hardened(moto, bucket), "diff": True}
    r = run_playbook([task], check=True)
    assert r.rc == 0, r.output
    res = r.result("bucket")
    assert r.tasks["bucket"]["changed"] is True and res["created"] is True
    assert "object_lock" in res["changes"] and "lifecycle" in res["changes"]
    assert res["diff"]["before"]["exists"] is False and res["diff"]["after"]["object_lock"] is True
    assert bucket not in [b["Name"] for b in moto.client().list_buckets()["Buckets"]]  # a real dry run

    r = run_playbook([task])
    assert r.rc == 0, r.output
    assert r.tasks["bucket"]["changed"] is True
    c = moto.client()
    assert c.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    assert c.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]["ObjectLockEnabled"] == "Enabled"
    rules = {r["ID"]: r for r in c.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert rules["offsite-backup-archive"]["Transitions"] == [{"Days": 30, "StorageClass": "DEEP_ARCHIVE"}]
    assert rules["offsite-backup-archive"]["Filter"] == {"Prefix": "backups/"}
    assert rules["offsite-backup-cleanup"]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 90}
    assert rules["offsite-backup-cleanup"]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
    assert all(c.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"].values())
    sse = c.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert sse["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"

    # someone else's lifecycle rule survives our changes
    c.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": list(rules.values()) + [
        {"ID": "theirs", "Status": "Enabled", "Filter": {"Prefix": "logs/"}, "Expiration": {"Days": 5}}]})
    # a second run changes nothing, then a changed option changes only the lifecycle (one run)
    r = run_playbook([task, dict(task, name="60 days", **{BUCKET_MODULE: _hardened(moto, bucket, transition_days=60)})])
    assert r.rc == 0, r.output
    assert r.tasks["bucket"]["changed"] is False, r.result("bucket")["changes"]
    assert r.result("60 days")["changes"] == ["lifecycle"], r.output
    rules = {r["ID"]: r for r in c.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert rules["offsite-backup-archive"]["Transitions"][0]["Days"] == 60 and "theirs" in rules


def test_bucket_refuses_what_s3_cannot_do(moto):
    bucket = moto.create_bucket(f"offsite-hard-{_uid()}", ObjectLockEnabledForBucket=True)
    # two cases, one run: the first one's failure is ignored, the second one's ends the play
    r = run_playbook([{"name": "bucket", BUCKET_MODULE: _hardened(moto, bucket, object_lock_enabled=False),
                       "ignore_errors": True},
                      {"name": "versioning", BUCKET_MODULE: _hardened(moto, bucket, versioning=False)}])
    assert r.rc != 0
    assert r.status("bucket") == "failed" and r.tasks["bucket"]["ignored"], r.output
    res = r.result("bucket")
    assert res["error"] == "config" and "cannot turn it off" in res["msg"]
    assert r.status("versioning") == "failed" and "contradicts Object Lock" in r.result("versioning")["msg"]


def test_generated_iam_policy_lets_the_key_upload_but_not_delete(moto, files):
    bucket = f"offsite-hard-{_uid()}"
    r = run_playbook([{"name": "bucket", BUCKET_MODULE: _hardened(moto, bucket, object_lock_enabled=False,
                                                                  policy_allows_delete=False)}])
    assert r.rc == 0, r.output
    policy = r.result("bucket")["iam_policy"]
    assert json.loads(r.result("bucket")["iam_policy_json"]) == policy
    actions = [a for s in policy["Statement"] for a in s["Action"]]
    assert "s3:PutObject" in actions and not [a for a in actions if "Delete" in a]

    # the harness's key may only use S3: moto's reset-auth grants three unchecked IAM calls
    import urllib.request
    urllib.request.urlopen(urllib.request.Request(f"{moto.endpoint_url}/moto-api/reset-auth", data=b"3", headers={"Content-Type": "text/plain"},
                                                  method="POST"), timeout=10).read()
    iam = moto.client("iam")
    user = f"uploader-{_uid()}"
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="offsite", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    repo = s3_repo(moto, bucket, access_key=key["AccessKeyId"], secret_key=key["SecretAccessKey"])
    src, dest = files
    first, second = _dump_and_upload(src, dest, repo, count=2)

    r = _retention(repo, {"keep_last": 1})
    assert r.rc != 0
    res = r.result("retention")
    assert res["error"] == "repository" and "refused the credentials while deleting" in res["msg"], res["msg"]
    # the manifest is deleted first and was refused: the old backup is still complete
    for backup in (first, second):
        assert s3_head(moto, bucket, f"backups/site/{backup['id']}.manifest.json") is not None
        assert s3_head(moto, bucket, f"backups/site/{backup['id']}.tar") is not None


# -- Object Lock on upload and in retention ---------------------------------------------------
def test_upload_with_object_lock_needs_a_lock_enabled_bucket(moto, bucket, files):
    src, dest = files
    repo = s3_repo(moto, bucket, object_lock_mode="compliance", object_lock_days=1)
    r = run_playbook([{"name": "upload", "offsite.backup.upload": {"backup": _dump(src, dest), "repository": repo}}])
    assert r.rc != 0
    res = r.result("upload")
    assert res["error"] == "config" and "does not have Object Lock enabled" in res["msg"]
    assert s3_keys(moto, bucket) == []  # nothing was sent


def test_retention_skips_locked_backups_whole_and_extends_monthly_locks(moto, files):
    # what retention needs of the bucket: Object Lock (the s3_bucket module is tested above)
    bucket = moto.create_bucket(f"offsite-hard-{_uid()}", ObjectLockEnabledForBucket=True)
    repo = s3_repo(moto, bucket, object_lock_mode="governance", object_lock_days=2, part_size=5)
    src, dest = files
    oldest, middle, newest = _dump_and_upload(src, dest, repo, count=3)
    key = "backups/site/%s.%s"
    for backup in (oldest, middle, newest):
        for ext in ("tar", "manifest.json"):
            head = s3_head(moto, bucket, key % (backup["id"], ext))
            assert head["ObjectLockMode"] == "GOVERNANCE", ext
            left = head["ObjectLockRetainUntilDate"] - datetime.datetime.now(datetime.timezone.utc)
            assert datetime.timedelta(days=1, hours=23) < left <= datetime.timedelta(days=2)

    # keep_last 1 + keep_monthly 2 keeps the newest and (restic's oldest rule) the oldest
    policy = {"keep_last": 1, "keep_monthly": 2}
    before = s3_keys(moto, bucket)
    r = _retention(repo, policy, check=True)
    assert r.rc == 0, r.output
    assert [x["id"] for x in r.result("retention")["locked"]] == [middle["id"]]
    assert s3_keys(moto, bucket) == before

    # a real run, and a second one that changes nothing (one playbook)
    r = run_playbook([_retention_task(repo, policy), _retention_task(repo, policy, name="again")])
    assert r.rc == 0, r.output
    res = r.result("retention")
    assert res["remove"] == [middle["id"]] and res["removed"] == []
    assert [x["id"] for x in res["locked"]] == [middle["id"]]
    # a kept monthly copy stays immutable until the policy lets it go: the 1st of the month after next
    now = datetime.datetime.now(datetime.timezone.utc)
    month = now.month + 1
    horizon = datetime.datetime(now.year + month // 12, month % 12 + 1, 1, tzinfo=datetime.timezone.utc)
    assert sorted(x["id"] for x in res["lock_extended"]) == sorted([oldest["id"], newest["id"]])
    for backup in (oldest, newest):
        assert s3_head(moto, bucket, key % (backup["id"], "tar"))["ObjectLockRetainUntilDate"] == horizon
        assert s3_head(moto, bucket, key % (backup["id"], "manifest.json"))["ObjectLockRetainUntilDate"] == horizon
    assert s3_keys(moto, bucket) == before
    assert r.tasks["again"]["changed"] is False, r.output
    assert r.result("again")["lock_extended"] == []

    # the manifest's lock runs out first: the backup is still skipped whole (never an orphan artifact)
    past = now - datetime.timedelta(minutes=1)
    _set_lock(moto, bucket, key % (middle["id"], "manifest.json"), past)
    r = _retention(repo, policy)
    assert r.rc == 0 and [x["id"] for x in r.result("retention")["locked"]] == [middle["id"]], r.output
    assert s3_head(moto, bucket, key % (middle["id"], "manifest.json")) is not None

    # both locks ran out: every version of both objects goes, none is left behind a delete marker
    _set_lock(moto, bucket, key % (middle["id"], "tar"), past)
    r = run_playbook([_retention_task(repo, policy), _info_task(repo)])
    assert r.rc == 0, r.output
    assert r.result("retention")["removed"] == [middle["id"]] and r.result("retention")["locked"] == []
    for ext in ("tar", "manifest.json"):
        assert _versions(moto, bucket, key % (middle["id"], ext)) == []
    assert [b["id"] for b in r.result("info")["backups"]] == [newest["id"], oldest["id"]]


# -- interrupted uploads ----------------------------------------------------------------------
_KILLABLE_UPLOAD = """
import sys
from ansible_collections.offsite.backup.plugins.module_utils._engine import operations
import json
operations.upload(sys.argv[1], [json.loads(sys.argv[2])])
"""


def test_killed_multipart_upload_leaves_no_backup_and_retention_aborts_it(moto, bucket, tmp_path):
    src = tmp_path / "big"
    src.mkdir()
    (src / "blob.bin").write_bytes(os.urandom(48 * 1024 * 1024))
    backup = _dump(src, tmp_path / "dest")
    repo = s3_repo(moto, bucket, part_size=5, concurrency=1)

    env = dict(os.environ, PYTHONPATH=str(ROOT / ".cache" / "collections"))
    proc = subprocess.Popen([sys.executable, "-c", _KILLABLE_UPLOAD, backup["path"], json.dumps(repo)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    c = moto.client()
    parts, deadline = 0, time.monotonic() + 60
    while parts < 2 and proc.poll() is None and time.monotonic() < deadline:
        uploads = c.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        if uploads:
            parts = len(c.list_parts(Bucket=bucket, Key=uploads[0]["Key"], UploadId=uploads[0]["UploadId"]).get("Parts", []))
        time.sleep(0.02)
    assert proc.poll() is None, "the upload finished before it could be killed: %s" % proc.stderr.read()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    # nothing that looks like a backup: no object at all, only the invisible upload; info and
    # retention in check mode (one run) leave that upload alone
    assert s3_keys(moto, bucket) == []
    pending = [f"backups/site/{backup['id']}.tar"]
    assert [u["Key"] for u in c.list_multipart_uploads(Bucket=bucket).get("Uploads", [])] == pending
    r = run_playbook([_info_task(repo), dict(_retention_task(repo, {"keep_last": 1}, incomplete_grace=0),
                                             check_mode=True)])
    assert r.rc == 0 and r.result("info")["count"] == 0, r.output
    assert r.tasks["retention"]["changed"] is True, r.output
    assert r.result("retention")["incomplete_uploads_aborted"] == [f"site/{backup['id']}.tar"]
    assert [u["Key"] for u in c.list_multipart_uploads(Bucket=bucket).get("Uploads", [])] == pending  # a dry run

    # retention aborts it, and the next upload (same run) uploads the backup whole
    r = run_playbook([_retention_task(repo, {"keep_last": 1}, incomplete_grace=0),
                      {"name": "upload", "offsite.backup.upload": {"backup": backup, "repository": repo}}])
    assert r.rc == 0, r.output
    assert r.result("retention")["incomplete_uploads_aborted"] == [f"site/{backup['id']}.tar"]
    assert r.tasks["retention"]["changed"] is True
    assert r.result("upload")["repositories"][0]["status"] == "uploaded", r.output
    # the killed upload is gone (aborted, not completed by the upload: it has a new upload id)
    assert c.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert s3_head(moto, bucket, f"backups/site/{backup['id']}.tar")["ContentLength"] == backup["size"]
