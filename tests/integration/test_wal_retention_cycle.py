"""Retention, backup_info and verify of archived WAL (issue 17 item 5) in a real local directory
and a real (moto) S3 bucket, through one real ansible-playbook run of the modules.

No PostgreSQL is needed: three base backups (manifests as postgresql_physical writes them,
starting at segments ...FE, ...100 and ...102 of timeline 1: across the 00..FF wrap) are put
beside WAL pushed by the engine's own wal-push (zstd, manifest last) into both repositories at
once, with timeline 2 branching off at ...103 and its history file; beside them the WAL of the
set ``crm_cluster2``, whose directory name starts like this set's.

The play: backup_info (the window), retention in check mode (reports, deletes nothing), for real
in both (deletes what the dropped base backup alone needed), again (changed: false), verify
(continuous in both). Gaps and damaged manifests failing verify are in the unit tests, against
local repositories. The objects of both repositories are compared before and after: exactly the removed
files' objects are gone, nothing outside ``.wal/crm_cluster/`` was touched. The algorithm's
invariants over generated archives are tests/unit/test_wal_retention.py."""

from __future__ import annotations

import datetime
import hashlib
import os
import uuid

import pytest

from ansible_collections.offsite.backup.plugins.module_utils._engine import manifest as mf
from ansible_collections.offsite.backup.plugins.module_utils._engine import wal, walchain
from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories import open_repository
from tests.harness.ansible import run_playbook
from tests.integration.helpers import local_repo, s3_keys, s3_repo

pytestmark = [pytest.mark.integration, pytest.mark.s3]

SET = "crm_cluster"
MB16 = 16 * 1024 * 1024
NOW = mf.utcnow().replace(microsecond=0)


def seg(timeline: int, number: int) -> str:
    return walchain.segment_name(timeline, number, MB16)


def put_base(repos, number: int, created: datetime.datetime) -> str:
    backup_id = mf.make_id(SET, created)
    data = b"not really a tar %d" % number
    facts = {"type": "postgresql_physical", "format": "basebackup", "timeline": 1, "wal_start": seg(1, number),
             "wal_end": seg(1, number), "wal_segment_size": MB16, "system_identifier": "7312345678901234567",
             "start_time": mf.format_time(created), "stop_time": mf.format_time(created + datetime.timedelta(seconds=30))}
    manifest = mf.build(SET, backup_id, created, "tar.zst", "zstd", "basebackup", len(data),
                        hashlib.sha256(data).hexdigest(), len(data), facts, [], 1.0)
    for repo in repos:
        repo.put_bytes(f"{SET}/{manifest['artifact']}", data)
        repo.put_bytes(mf.manifest_key(SET, backup_id), mf.dumps(manifest))
    return backup_id


def push(workdir, options, set_name: str, name: str, created: datetime.datetime, content: bytes | None = None):
    path = workdir / name
    path.write_bytes(content or os.urandom(64))
    wal.push(set_name, str(path), options, now=created)
    path.unlink()


def local_keys(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, dummy, fs in os.walk(root) for f in fs)


def test_retention_info_and_verify_of_wal_in_local_and_s3(moto, bucket, workdir):
    disk = workdir / "offsite"
    disk.mkdir()
    prefix = f"walret-{uuid.uuid4().hex[:6]}"
    options = [local_repo(disk), s3_repo(moto, bucket, prefix=prefix)]
    repos = [open_repository(o) for o in options]
    day = datetime.timedelta(days=1)
    bases = [put_base(repos, number, NOW - (3 - i) * day) for i, number in enumerate((0xFE, 0x100, 0x102))]
    for number in range(0xFC, 0x104):
        push(workdir, options, SET, seg(1, number), NOW - 4 * day + datetime.timedelta(hours=number - 0xF0))
    push(workdir, options, SET, "00000002.history", NOW - datetime.timedelta(hours=2),
         content=b"1\t1/3000060\tno recovery target specified\n")
    for number in (0x103, 0x104):
        push(workdir, options, SET, seg(2, number), NOW - datetime.timedelta(minutes=0x110 - number))
    push(workdir, options, "crm_cluster2", seg(1, 0xF0), NOW - 9 * day)
    before = [local_keys(disk), s3_keys(moto, bucket, prefix + "/")]

    local, s3 = options
    policy = {"keep_last": 2}
    tasks = [
        {"name": "info", "offsite.backup.backup_info": {"name": SET, "repository": s3}},
        {"name": "preview", "offsite.backup.retention": {"name": SET, "repository": s3, "policy": policy},
         "check_mode": True},
        {"name": "apply 0", "offsite.backup.retention": {"name": SET, "repository": local, "policy": policy}},
        {"name": "apply 1", "offsite.backup.retention": {"name": SET, "repository": s3, "policy": policy}},
        {"name": "again", "offsite.backup.retention": {"name": SET, "repository": s3, "policy": policy}},
        {"name": "verify", "offsite.backup.verify": {"name": SET, "repositories": options}},
    ]
    r = run_playbook([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}])
    assert r.rc == 0, r.output

    dropped = [seg(1, n) for n in (0xFC, 0xFD, 0xFE, 0xFF)]
    window = r.result("info")["recovery_window"]
    assert window["earliest_backup"] == bases[0] and window["continuous"] and window["gaps"] == []
    assert window["latest_segment"] == seg(2, 0x104) and not window["problems"]
    assert window["latest"] == mf.format_time(NOW - datetime.timedelta(minutes=0x110 - 0x104))
    assert [t["timeline"] for t in window["timelines"]] == [1, 2]
    preview = r.result("preview")
    assert preview["wal"]["remove"] == dropped and preview["wal"]["removed"] == []
    assert r.tasks["preview"]["status"] == "changed"
    for index in range(2):
        applied = r.result(f"apply {index}")
        assert applied["removed"] == [bases[0]] and applied["wal"]["removed"] == dropped
        assert applied["wal"]["oldest_needed"] == seg(1, 0x100) and applied["wal"]["anchor"] == bases[1]
    assert r.tasks["again"]["status"] == "ok" and r.result("again")["wal"]["remove"] == []
    verified = r.result("verify")
    assert verified["ok"] and [rep["wal"]["continuous"] for rep in verified["repositories"]] == [True, True]

    after = [local_keys(disk), s3_keys(moto, bucket, prefix + "/")]
    strip = ["", prefix + "/"]
    for index in range(2):
        gone = set(k[len(strip[index]):] for k in set(before[index]) - set(after[index]))
        expected = {f".wal/{SET}/{name}{ext}" for name in dropped for ext in (".json", ".wal.zst")}
        expected |= {f"{SET}/{bases[0]}.tar.zst", f"{SET}/{bases[0]}.manifest.json"}
        assert gone == expected
        assert not set(after[index]) - set(before[index])
        assert any("crm_cluster2/" in k for k in after[index])
