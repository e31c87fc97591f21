"""Names read from storage are input (issue 12, item 3): crafted local manifests uploaded with
real ansible-playbook runs to local, SFTP, rsync and S3 repositories fail with ``error: config``
and write nothing, inside or outside the repository; and each repository type refuses a key
that leaves its root at its own boundary (the last line of defence), checked on the server's
file system and in the bucket."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import uuid
from pathlib import Path

import pytest

from tests.harness import COLLECTIONS_PATH
from tests.harness.ansible import run_playbook
from tests.integration.helpers import local_repo, s3_keys, s3_repo, sftp_repo
from tests.integration.test_rsync import rsync_repo

if str(COLLECTIONS_PATH) not in sys.path:  # the engine, as ansible-core lays it out (tests/unit/conftest.py)
    sys.path.insert(0, str(COLLECTIONS_PATH))

from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import ConfigError  # noqa: E402
from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories import open_repository  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.s3, pytest.mark.sftp]

BACKUP_ID = "crm_20261206T060000Z"


def _uid() -> str:
    return uuid.uuid4().hex[:8]


def _snapshot(*roots) -> dict:
    """Every path below ``roots`` (what exists), to compare before and after."""
    found = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                found[path] = os.path.getsize(path) if os.path.isfile(path) else None
    return found


def _crafted(directory: Path, **changes) -> str:
    """A local backup whose manifest carries ``changes``; returns the artifact's path."""
    directory.mkdir(parents=True)
    artifact = directory / f"{BACKUP_ID}.sql"
    artifact.write_bytes(b"#!/bin/sh\necho owned\n")
    data = {"format_version": 1, "tool": "offsite.backup", "name": "crm", "id": BACKUP_ID,
            "created": "2026-12-06T06:00:00Z", "artifact": f"{BACKUP_ID}.sql", "extension": "sql",
            "format": "plain", "compression": "none", "size": artifact.stat().st_size,
            "sha256": hashlib.sha256(artifact.read_bytes()).hexdigest(), "source": {"type": "postgresql"}}
    data.update(changes)
    (directory / f"{BACKUP_ID}.manifest.json").write_text(json.dumps(data))
    return str(artifact)


@pytest.fixture
def places(sshd, tmp_path):
    """Repository roots on the SSH server (sftp, rsync) and a directory beside them that a
    crafted name aims at; removed afterwards."""
    base = Path(sshd.make_dir(f"backups/names-{_uid()}"))
    made = {kind: sshd.make_dir(f"backups/{base.name}/{kind}") for kind in ("sftp", "rsync", "target")}
    try:
        yield made
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_crafted_manifests_fail_with_config_and_write_nothing(moto, sshd, bucket, places, tmp_path):
    local_root = tmp_path / "local-repo"
    local_root.mkdir()
    outside = places["target"]  # on the same file system as every directory repository here
    escape = "../" * 12 + outside.lstrip("/") + "/x"
    crafted = {
        "name": _crafted(tmp_path / "n", name=escape),
        "id": _crafted(tmp_path / "i", id=f"crm_20261206T060000Z/../../../{outside.lstrip('/')}/x"),
        "extension": _crafted(tmp_path / "e", extension="sql/../../../../../../../../../../.." + outside),
        "artifact": _crafted(tmp_path / "a", artifact=f"../../../../../../../../{outside}/x.sql"),
    }
    repos = {"local": local_repo(local_root), "sftp": sftp_repo(sshd, places["sftp"]),
             "rsync": rsync_repo(sshd, places["rsync"]), "s3": s3_repo(moto, bucket, prefix="p")}
    before = _snapshot(local_root, *places.values())
    tasks = [{"name": f"{field} {kind}", "offsite.backup.upload": {"backup": path, "repositories": [repo]},
              "ignore_errors": True}
             for field, path in crafted.items() for kind, repo in repos.items()]
    r = run_playbook(tasks)
    for task in tasks:
        res = r.result(task["name"])
        assert r.status(task["name"]) == "failed", (task["name"], res)
        assert res["error"] == "config", (task["name"], res["msg"])
        assert "nothing was written" in res["msg"] and "Traceback" not in json.dumps(res), res
    assert _snapshot(local_root, *places.values()) == before
    assert s3_keys(moto, bucket) == []


@pytest.mark.parametrize("kind", ["local", "sftp", "rsync", "s3"])
def test_every_repository_refuses_a_key_outside_its_root(kind, moto, sshd, bucket, places, tmp_path):
    """The guard where keys become paths: a key that slipped past the manifest rules."""
    local_root = tmp_path / "local-repo"
    local_root.mkdir()
    options = {"local": local_repo(local_root), "sftp": sftp_repo(sshd, places["sftp"]),
               "rsync": rsync_repo(sshd, places["rsync"]), "s3": s3_repo(moto, bucket, prefix="p/q")}[kind]
    before = _snapshot(local_root, *places.values())
    with open_repository(options) as repo:
        for key in ("../target/x", "crm/../../target/x", "../../x", "/" + places["target"].lstrip("/") + "/x"):
            for call in (lambda: repo.put_bytes(key, b"evil"), lambda: repo.delete(key),
                         lambda: repo.get_bytes(key)):
                with pytest.raises(ConfigError, match="leave the repository"):
                    call()
    assert _snapshot(local_root, *places.values()) == before
    assert s3_keys(moto, bucket) == []
