"""playbooks/dr_drill.yml proves point-in-time recovery: a PostgreSQL 15 cluster of its own
archives its WAL with wal-push into a local repository, has a base backup, and a writer commits
rows one transaction at a time, each recording its time; the drill restores the set into a
scratch data directory on a free port, to a random moment of the recovery window, checks it,
stops the scratch server and removes its directory, and reports the moment, the RPO achieved and
the RTO (report and pushed metrics). Then ``offsite-backup drill`` does the same from the job file,
on the same archive.

Exactness, and the clock-granularity margin: the rows the restore must hold are taken from
PostgreSQL's own commit timestamps (``track_commit_timestamp``), the very values recovery compares
with ``recovery_target_time``: no margin there, every row committed at or before the moment and
none after it. The drill's own queries see only the restored copy and use the writer's
``committed`` column (``clock_timestamp()`` inside each transaction, earlier than its commit by far
less than the 0.4 s between two rows): a row recorded after the moment committed after it, so
``committed > moment`` must count 0, and ids without a hole mean no row was skipped. The moment is
drawn to the second, at least ``point_in_time_margin`` (10 s) before the newest archived segment,
so rows committed after it always exist (the writer runs 20 s)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.harness.ansible import REPO_ROOT, run_playbook
from tests.harness.monitoring import HttpReceiver
from tests.harness.services import LOOPBACK
from tests.harness.walcluster import WalCluster, cli_prefix
from tests.integration.helpers import cli

pytestmark = [pytest.mark.integration]

DRILL = REPO_ROOT / "playbooks" / "dr_drill.yml"
SET = "ledger_cluster"


def writer(src: WalCluster, first: int, count: int, pause: float) -> None:
    """``count`` rows, each committed alone (psql autocommit), ``pause`` seconds apart: one psql."""
    script = "".join(f"INSERT INTO ledger (id) VALUES ({i});\nSELECT pg_sleep({pause});\n"
                     for i in range(first, first + count))
    subprocess.run([os.path.join(src.bindir, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", src.sockdir,
                    "-p", str(src.port), "-U", "postgres", "-d", "postgres", "-f", "-"],
                   input=script, capture_output=True, text=True, check=True, timeout=300)


def running_in(directory: str) -> list[str]:
    """Processes whose command line names ``directory`` (a server left running there)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if directory in cmdline:
            found.append(cmdline)
    return found


def test_the_drill_restores_a_random_moment_with_exactly_the_rows_committed_before_it(workdir):
    with WalCluster() as src:
        repo_dir = src.mkdir("repo")
        src.start(archive_command=src.push_command(), track_commit_timestamp="on")
        src.write_job({"name": "pitrdrill", "local": {"path": src.mkdir("local")},
                       "sources": [{"name": SET, "source": {"type": "postgresql_physical", "host": LOOPBACK,
                                                            "port": src.port, "user": "postgres"}}],
                       "repositories": [{"type": "local", "path": repo_dir}]})
        src.sql("CREATE TABLE ledger (id int PRIMARY KEY, committed timestamptz DEFAULT clock_timestamp())")
        writer(src, 1, 5, 0)                                   # before the base backup
        backup = src.cli("run", src.job)
        assert backup.returncode == 0, backup.stdout + backup.stderr
        writer(src, 6, 50, 0.4)                                # 20 s after it
        src.wait_archived(src.switch_wal())

        sets = [{"name": SET, "repositories": [{"type": "local", "path": repo_dir}],
                 "target": {"type": "postgresql_physical", "offsite_backup_command": cli_prefix()},
                 "point_in_time": "random", "point_in_time_margin": 10, "rpo_seconds": 3600,
                 "queries": [
                     {"name": "nothing after the moment",
                      "sql": "SELECT count(*) FROM ledger WHERE committed > '{point_in_time}'", "expect": "0"},
                     {"name": "no row skipped", "sql": "SELECT count(*) = max(id) FROM ledger", "expect": "t"},
                     {"name": "newest row", "sql": "SELECT max(id) FROM ledger", "min": 5}]}]
        reports = workdir / "reports"
        with HttpReceiver() as rx:
            r = run_playbook(str(DRILL), extravars={
                "offsite_dr_sets": sets, "offsite_dr_report_dir": str(reports), "offsite_dr_scratch_root": src.home,
                "offsite_dr_pushgateway_url": rx.url + "/push"})
        report = json.loads(sorted(reports.glob("drill-*.json"))[-1].read_text())
        (drilled,) = report["sets"]
        pit = drilled["point_in_time"]
        print("point in time drawn:", pit)                     # the "seed" of this run
        assert r.rc == 0, r.output
        assert drilled["success"] is True, drilled

        # the moment lies in the window, the margin before its end, and recovery stopped at or before it
        assert pit["chosen"] == "random" and pit["window_start"] < pit["target"] < pit["window_end"]
        # (reached is None when no transaction was replayed: a moment drawn before the first commit
        # after the base backup's end; the rows below are then the base backup's)
        assert pit["reached"] is None or pit["reached"] <= pit["target"].replace("Z", ".999999Z")
        # exactly the rows committed (PostgreSQL's commit timestamps) up to the moment
        newest = int(next(c for c in drilled["checks"] if c["name"] == "newest row")["got"])
        expected = src.sql("SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM ledger "
                           f"WHERE pg_xact_commit_timestamp(xmin) <= '{pit['target']}'")
        assert expected == ",".join(str(i) for i in range(1, newest + 1))
        assert 5 <= newest < 55                                # rows before it, and after it
        assert {c["name"]: c["ok"] for c in drilled["checks"]} == {
            "nothing after the moment": True, "no row skipped": True, "newest row": True}
        assert pit["target"] in next(c for c in drilled["checks"] if c["name"] == "nothing after the moment")["query"]

        # RPO achieved: now - the newest archived segment; RTO: the restore and its checks
        assert 0 <= drilled["age_seconds"] < 3600 and drilled["rpo_met"] is True
        assert 0 < drilled["restore_seconds"] <= drilled["recovery_seconds"]
        assert drilled["backup_id"].startswith(SET + "_")
        md = sorted(reports.glob("drill-*.md"))[-1].read_text()
        assert f"point in time {pit['target']} (random" in md
        assert "point in time" in sorted(reports.glob("drill-*.html"))[-1].read_text()
        (push,) = [q for q in rx.requests if q["method"] == "PUT"]
        assert f'dr_drill_pitr_rpo_seconds{{set="{SET}"}}' in push["body"]
        assert f'dr_drill_pitr_rto_seconds{{set="{SET}"}}' in push["body"]
        assert f'dr_drill_pitr_target_timestamp_seconds{{set="{SET}"}}' in push["body"]

        # nothing left: no scratch directory, no server running in it
        scratch = [p for p in os.listdir(src.home) if p.startswith(SET + "_drill_")]
        assert scratch == []
        assert running_in(os.path.join(src.home, SET + "_drill_")) == []

        # the same drill without a controller: offsite-backup drill JOB, on the same archive
        job = yaml.safe_load(Path(src.job).read_text())
        job["drill"] = {"report_dir": str(workdir / "cmd-reports"), "scratch_root": src.home,
                        "point_in_time": "random", "point_in_time_margin": 10,
                        "restore_options": {SET: {"offsite_backup_command": cli_prefix()}},
                        "queries": {SET: sets[0]["queries"]}}
        job["log"] = {"path": str(workdir / "drill-cmd.log")}
        cmd_job = workdir / "job.yml"
        cmd_job.write_text(yaml.safe_dump(job))
        result = cli("drill", str(cmd_job), "--json")
        assert result.stdout, result.stderr
        (drilled,) = json.loads(result.stdout)["sets"]
        pit = drilled["point_in_time"]
        print("point in time drawn by the command:", pit)
        assert result.returncode == 0 and drilled["success"] is True, result.stderr + json.dumps(drilled)
        newest = int(next(c for c in drilled["checks"] if c["name"] == "newest row")["got"])
        expected = src.sql("SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM ledger "
                           f"WHERE pg_xact_commit_timestamp(xmin) <= '{pit['target']}'")
        assert expected == ",".join(str(i) for i in range(1, newest + 1)) and 5 <= newest < 55
        assert pit["window_start"] < pit["target"] < pit["window_end"]
        assert pit["reached"] is None or pit["reached"] <= pit["target"][:-1] + ".9Z"
        assert 0 <= drilled["age_seconds"] < 3600
        assert [p for p in os.listdir(src.home) if p.startswith("drill_")] == []
        assert running_in(os.path.join(src.home, "drill_")) == []
