"""A backup made on a machine whose clock is two years ahead (libfaketime under a real
ansible-playbook run of dump and upload), then the real clock: backup_info reports it as
suspect, retention keeps it and every real backup (and warns), `restore latest` restores the
real newest backup and names the skipped one, its id still restores it, verify fails, and the
next dump warns that this machine's clock is behind the newest backup (issue 12, item 1).
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import pytest

from tests.harness.ansible import run_playbook

pytestmark = pytest.mark.integration

# Debian package faketime (scripts/bootstrap.sh installs it), in the multiarch directory of this machine
LIBFAKETIME = next(iter(sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))), "libfaketime.so.1 (not installed)")


def play(tasks: list, **kwargs):
    return run_playbook([{"name": "clock", "hosts": "localhost", "gather_facts": False, "tasks": tasks}], **kwargs)


def task(title: str, module: str, ignore_errors: bool = False, **args) -> dict:
    entry = {"name": title, f"offsite.backup.{module}": args}
    if ignore_errors:
        entry["ignore_errors"] = True
    return entry


def assert_ok(r):
    assert r.rc == 0 and not r.failed_tasks, r.output


def test_a_backup_from_a_clock_two_years_ahead_is_suspect(tmp_path):
    assert os.path.exists(LIBFAKETIME), "libfaketime is missing: scripts/bootstrap.sh installs the faketime package"
    site = tmp_path / "site"
    site.mkdir()
    local, repo_dir = tmp_path / "local", tmp_path / "repo"
    repo_dir.mkdir()
    repo = {"type": "local", "path": str(repo_dir)}
    source = {"type": "files", "paths": [str(site)]}

    def backup(content: str, env: dict | None = None) -> dict:
        (site / "page.txt").write_text(content)
        r = play([dict(task("dump", "dump", name="site", source=source, dest=str(local), compression="none"),
                       register="dumped"),
                  task("upload", "upload", backup="{{ dumped.backup }}", repository=repo)], env=env)
        assert_ok(r)
        return r

    real = backup("real\n").result("dump")["backup"]
    ahead = backup("from the future\n", env={"LD_PRELOAD": LIBFAKETIME, "FAKETIME": "+730d"}).result("dump")
    future = ahead["backup"]
    assert future["created"] > "2028", future  # the module really ran under the fake clock
    assert "warnings" not in ahead or not ahead["warnings"]

    restored, by_id = tmp_path / "restored", tmp_path / "by-id"
    r = play([
        task("info", "backup_info", name="site", repository=repo),
        task("retention", "retention", name="site", repository=repo, policy={"keep_last": 1}),
        task("restore latest", "restore", name="site", repository=repo,
             target={"type": "files", "path": str(restored)}),
        task("restore by id", "restore", name="site", repository=repo, backup=future["id"],
             target={"type": "files", "path": str(by_id)}),
        task("verify", "verify", name="site", repository=repo, ignore_errors=True),
        task("dump now", "dump", name="site", source=source, dest=str(local), compression="none"),
    ])
    assert r.rc == 0 and r.failed_tasks == [], r.output

    info = r.result("info")
    assert info["suspect"] == [future["id"]] and info["latest"]["id"] == real["id"]
    assert any(future["id"] in w for w in info["warnings"])

    kept = r.result("retention")
    assert kept["removed"] == [] and sorted(kept["keep"]) == sorted([real["id"], future["id"]])
    assert kept["suspect"] == [future["id"]] and any(future["id"] in w for w in kept["warnings"])

    latest = r.result("restore latest")
    assert latest["backup"]["id"] == real["id"]
    assert any(future["id"] in w and "clock_skew" in w for w in latest["warnings"])
    assert [p.read_text() for p in restored.rglob("page.txt")] == ["real\n"]
    assert r.result("restore by id")["backup"]["id"] == future["id"]
    assert [p.read_text() for p in by_id.rglob("page.txt")] == ["from the future\n"]

    assert r.status("verify") == "failed"
    assert any(future["id"] in f and "clock_skew" in f for f in r.result("verify")["failures"])

    assert any("behind the newest backup of site" in w for w in r.result("dump now")["warnings"])
    assert sorted(p.name for p in (repo_dir / "site").iterdir() if p.name.endswith(".manifest.json")) == \
        sorted(f"{b}.manifest.json" for b in (real["id"], future["id"]))
    assert Path(real["path"]).exists()
