"""Bytes stored per repository (backup_info) and cost estimates (retention estimate_cost), through
real ansible-playbook runs against a local directory and moto S3, checked against what the stores
really hold."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.harness.ansible import run_playbook
from tests.harness.faults import COLLECTIONS
from tests.integration.helpers import local_repo, s3_head, s3_repo

if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)
from ansible_collections.offsite.backup.plugins.module_utils._engine import operations  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.s3]

GIB = 1024 ** 3
IGNORE = {"ignore_errors": True}


@pytest.fixture
def two_backups(moto, bucket, tmp_path):
    """Two backups of set ``bill`` in a local repository and in S3; returns both repositories.
    The state the tests start from, so the engine writes it, not a playbook (the dump and upload
    modules' own runs are tested in test_backup_cycle.py)."""
    src, dest, disk = tmp_path / "src", tmp_path / "dest", tmp_path / "repo"
    for path in (src, dest, disk):
        path.mkdir()
    (src / "data.bin").write_bytes(os.urandom(300 * 1024))
    repos = [local_repo(disk), s3_repo(moto, bucket, prefix="bill")]
    for round_ in range(2):
        (src / "grows.txt").write_text("x" * (1000 * (round_ + 1)))
        backup = operations.dump("bill", {"type": "files", "paths": [str(src)]}, str(dest), compression="none")["backup"]
        uploaded = operations.upload(backup, repos)
        assert [x["status"] for x in uploaded["repositories"]] == ["uploaded"] * 2, uploaded
    return disk, repos


def test_backup_info_reports_the_bytes_each_repository_holds(moto, bucket, two_backups):
    disk, (local, s3) = two_backups
    files = sorted((disk / "bill").iterdir())
    assert len(files) == 4  # two artifacts, two manifests
    # leftovers a provider bills too: an artifact whose manifest never came, a partial upload
    orphan = disk / "bill" / "bill_20260101T000000Z.tar"
    orphan.write_bytes(b"o" * 1234)
    partial = disk / "bill" / "bill_20260102T000000Z.tar.x1.partial"
    partial.write_bytes(b"p" * 567)
    # a restore drill's marker belongs to its backup
    newest_id = files[-1].name.split(".")[0]
    marker = disk / "bill" / f"{newest_id}.proven.json"
    marker.write_text('{"proven": "2026-11-23T00:00:00Z"}')

    r = run_playbook([{"name": "local", "offsite.backup.backup_info": {"name": "bill", "repository": local}},
                      {"name": "s3", "offsite.backup.backup_info": {"name": "bill", "repository": s3}}])
    assert r.rc == 0, r.output
    on_disk = sum(f.stat().st_size for f in files)
    proven = marker.stat().st_size
    assert r.result("local")["stored_bytes"] == {"complete": on_disk + proven, "incomplete": 1234, "leftovers": 567,
                                                 "total": on_disk + proven + 1234 + 567}
    backups = [b for b in r.result("local")["backups"] if b["complete"]]
    for backup in backups:
        artifact, manifest = disk / backup["artifact"], disk / backup["manifest"]
        extra = proven if backup["id"] == newest_id else 0
        assert backup["stored_bytes"] == artifact.stat().st_size + manifest.stat().st_size + extra
    # S3 holds the same two backups: the sizes S3 reports for each object add up the same
    in_s3 = sum(s3_head(moto, bucket, "bill/" + key)["ContentLength"]
                for b in backups for key in (b["artifact"], b["manifest"]))
    assert r.result("s3")["stored_bytes"] == {"complete": in_s3, "incomplete": 0, "leftovers": 0, "total": in_s3}
    assert in_s3 == on_disk


def test_retention_estimates_the_cost_from_the_newest_backup_without_deleting_in_check_mode(two_backups):
    disk, (local, s3) = two_backups
    before = sorted(os.listdir(disk / "bill"))
    task = {"name": "estimate", "offsite.backup.retention": {
        "name": "bill", "repository": local, "policy": {"keep_last": 1},
        "estimate_cost": {"providers": ["s3_standard", "hetzner_bx11"], "start": "2027-01-01T03:00:00Z"}}}
    r = run_playbook([task], check=True)
    assert r.rc == 0, r.output
    res = r.result("estimate")
    assert len(res["remove"]) == 1 and sorted(os.listdir(disk / "bill")) == before  # a dry run
    newest = res["keep"][0]
    size = Path(disk / "bill" / f"{newest}.tar").stat().st_size
    cost = res["cost"]
    assert cost["backup_size_from"] == f"backup {newest}" and cost["backup_size"] == size
    assert cost["backups_made"] == 365 and cost["backups_kept"] == 1
    # one backup stored every day of December: size / GiB x $0.023; the box is a flat EUR 3.81
    december = cost["providers"]["s3_standard"]["monthly"][-1]
    assert december["storage"] == pytest.approx(size / GIB * 0.023, abs=1e-4)
    assert cost["providers"]["hetzner_bx11"]["last_month"] == 3.81
    assert cost["providers"]["hetzner_bx11"]["currency"] == "EUR"


def test_estimate_in_planning_mode_with_the_seeds_numbers():
    # the restic runbook: 54 retained snapshots of 20 GB on B2 at $0.005 = $5.40 a month
    task = {"name": "plan", "offsite.backup.retention": {
        "backups": [], "policy": {"keep_last": 54},
        "estimate_cost": {"backup_size": 20 * 1000 ** 3, "providers": ["b2"], "start": "2027-01-01T03:00:00Z",
                          "prices": {"b2": {"storage_per_gb_month": 0.005, "free_bytes": 0}}}}}
    r = run_playbook([task])
    assert r.rc == 0, r.output
    cost = r.result("plan")["cost"]
    assert cost["backups_kept"] == 54 and cost["backup_size_from"] == "backup_size"
    assert cost["providers"]["b2"]["last_month"] == pytest.approx(5.40)


def test_bad_estimate_options_fail_clearly_and_delete_nothing(two_backups):
    disk, (local, s3) = two_backups
    before = sorted(os.listdir(disk / "bill"))
    r = run_playbook([
        dict(IGNORE, name="no size", **{"offsite.backup.retention": {
            "backups": [], "policy": {"keep_last": 1}, "estimate_cost": {"providers": ["b2"]}}}),
        dict(IGNORE, name="bad provider", **{"offsite.backup.retention": {
            "name": "bill", "repository": local, "policy": {"keep_last": 1},
            "estimate_cost": {"providers": ["dropbox"]}}}),
        dict(IGNORE, name="bad price", **{"offsite.backup.retention": {
            "name": "bill", "repository": local, "policy": {"keep_last": 1},
            "estimate_cost": {"prices": {"b2": {"per_tb": 6}}}}}),
    ])
    assert r.rc == 0, r.output  # every failure ignored
    for task, message in (("no size", "estimate_cost needs backup_size"),
                          ("bad provider", "unknown provider(s) dropbox"),
                          ("bad price", "prices.b2: unknown field(s) per_tb")):
        assert r.tasks[task]["failed"], task
        res = r.result(task)
        assert res["error"] == "config" and message in res["msg"], res
    # keep_last 1 would have removed a backup: an estimate that fails must not half-apply the policy
    assert sorted(os.listdir(disk / "bill")) == before
