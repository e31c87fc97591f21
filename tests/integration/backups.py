"""Backups that a test only needs to exist, made as cron makes them.

A test whose subject is what comes after a backup (a drill, a restore, a rebuild) needs one in a
repository. ``backup_by_cron`` makes it with the scheduled runner's one command
(``offsite-backup run``), about 0.5 CPU s, where a dump + upload playbook costs about 3.5 (two
module payloads built and run). The dump and upload modules have tests of their own
(test_backup_cycle.py, test_failures.py); the backup is the same: one engine makes both.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import yaml

from tests.integration.helpers import cli


def backup_by_cron(workdir: Path, set_name: str, source: dict, repositories: list, **job_extra) -> dict:
    """One backup of ``source`` as set ``set_name`` into every repository of ``repositories``:
    the set's ``backup`` of ``offsite-backup run --json`` (id, path, sha256, size...)."""
    name = f"setup{uuid.uuid4().hex[:8]}"
    job = {"name": name, "local": {"path": str(Path(workdir) / f"{name}-local")},
           "sources": [{"name": set_name, "source": source}], "repositories": repositories,
           "log": {"path": str(Path(workdir) / f"{name}.log")}}
    job.update(job_extra)
    path = Path(workdir) / f"{name}.yml"
    # (a repository may hold secrets: the job file is the owner's only, as the role writes it)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        yaml.safe_dump(job, f)
    result = cli("run", str(path), "--json")
    assert result.returncode == 0, f"the set-up backup failed:\n{result.stdout}\n{result.stderr}"
    (entry,) = json.loads(result.stdout)["sets"]
    return entry["backup"]
