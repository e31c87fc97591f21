"""Ordinary OS conditions are reported, not crashed on (issue 12, item 11): a dest that is a
file, a missing work_dir, a dest root cannot write (``chattr +i``) and a dest on a read-only file
system give ``error: config`` or ``io`` with a hint, never ``internal`` with a traceback; and
nothing is left behind. EBUSY on a mount point is simulated at the library boundary in
tests/unit/test_errors.py."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml

from tests.harness.ansible import run_playbook
from tests.integration.helpers import cli_read_only, local_repo

pytestmark = [pytest.mark.integration]


@pytest.fixture
def source(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("ordinary conditions\n")
    return src


def _dump(title, source, dest, **extra):
    return {"name": title, "offsite.backup.dump": {"name": "site", "source": {"type": "files", "paths": [str(source)]},
                                                   "dest": str(dest), **extra},
            "ignore_errors": True, "register": title.replace(" ", "_")}


def _assert_reported(r, title, kind, *words):
    res = r.result(title)
    assert r.status(title) == "failed", (title, res)
    assert res["error"] == kind, (title, res["error"], res["msg"])
    assert "Traceback" not in json.dumps(res), (title, res)  # ansible-core itself says "(traceback unavailable)"
    for word in words:
        assert word in res["msg"], (title, word, res["msg"])


def test_dest_file_missing_work_dir_and_unwritable_dest(source, tmp_path):
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("x")
    locked = tmp_path / "locked"
    locked.mkdir()
    good = tmp_path / "good"
    subprocess.run(["chattr", "+i", str(locked)], check=True)
    try:
        r = run_playbook([
            _dump("dest is a file", source, a_file),
            _dump("dest immutable", source, locked),
            _dump("good dump", source, good),
            {"name": "restore without work_dir", "offsite.backup.restore": {
                "name": "site", "repository": local_repo(good), "work_dir": str(tmp_path / "missing"),
                "target": {"type": "files", "path": str(tmp_path / "restored")}}, "ignore_errors": True},
        ])
        assert os.listdir(locked) == []
    finally:
        subprocess.run(["chattr", "-i", str(locked)], check=False)
    assert r.status("good dump") == "changed", r.output
    _assert_reported(r, "dest is a file", "config", str(a_file), "must name a directory")
    _assert_reported(r, "dest immutable", "config", str(locked), "Operation not permitted")
    _assert_reported(r, "restore without work_dir", "config", "work_dir", "does not exist", "nothing was changed")
    assert a_file.read_text() == "x" and not (tmp_path / "restored").exists()


def test_dest_on_a_read_only_file_system(source, tmp_path):
    """The scheduled run's local copy on a disk mounted read-only (its own mount namespace)."""
    local = tmp_path / "local"
    local.mkdir()
    job = {"name": "rodest", "local": {"path": str(local)},
           "sources": [{"name": "site", "source": {"type": "files", "paths": [str(source)]}}],
           "log": {"path": str(tmp_path / "rodest.log")}}
    path = tmp_path / "rodest.yml"
    path.write_text(yaml.safe_dump(job))
    run = cli_read_only(local, "run", str(path), "--json")
    assert run.returncode != 0 and "Traceback" not in run.stderr, run.stderr
    report = json.loads(run.stdout)
    # the job's lock file is the first thing written there: the run stops with a clear error
    assert report["ok"] is False and report["sets"] == [], report
    assert "Read-only file system" in report["error"] and "remount it read-write" in report["error"], report
    assert str(local) in report["error"]
