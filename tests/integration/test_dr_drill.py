"""playbooks/dr_drill.yml end to end: real backups in moto S3 (behind an unreachable repository
in the priority list), restored into scratch databases on 127.0.0.1:5432, checked, dropped;
reports kept with their history chart (rendered in a real headless Chromium); metrics, Slack and
heartbeat received by a local HTTP receiver; retention then keeps the proven backup."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness import pg
from tests.harness.ansible import REPO_ROOT, run_playbook
from tests.harness.monitoring import HttpReceiver
from tests.harness.services import free_port
from tests.integration.helpers import engine_dump, engine_upload, pg_source, s3_keys, s3_repo

DRILL = REPO_ROOT / "playbooks" / "dr_drill.yml"


def backup_to(repo: dict, name: str, database: str, dumps: Path) -> str:
    backup = engine_dump(name, pg_source(database), dumps)
    engine_upload(backup, [repo])
    return backup["id"]


def drill_databases(sets=("crm", "erp")) -> list[str]:
    """Scratch databases of drills of these sets (other tests drill sets of their own names)."""
    where = " OR ".join("datname LIKE '%s\\_drill\\_%%'" % name for name in sets)
    out = pg.run_sql("postgres", "SELECT datname FROM pg_database WHERE " + where)
    return [line for line in out.splitlines() if line]


def unreachable_repo(sshd) -> dict:
    """A well-formed SFTP repository on a port nothing listens on (the server "burned")."""
    return {"type": "sftp", "host": "127.0.0.1", "port": free_port(), "user": sshd.user,
            "private_key": sshd.private_key, "host_key": sshd.host_key, "path": "x", "timeout": 3}


def dba_environment() -> dict:
    """libpq variables a DBA's shell (or an AWX credential) sets, pointing somewhere else: the DR
    playbooks' own psql commands must not follow them (PGPASSWORD is a target's password when
    the target has none, as for the modules)."""
    return {"PGHOST": "127.0.0.1", "PGPORT": str(free_port()), "PGUSER": "dba_elsewhere", "PGDATABASE": "elsewhere",
            "PGPASSWORD": "not-this-servers-password", "PGAPPNAME": "dba", "PGCONNECT_TIMEOUT": "x"}


def posts(rx) -> list[str]:
    return [r["path"] for r in rx.requests if r["method"] == "POST"]


def drill_vars(sets, report_dir, rx, **extra):
    values = {"offsite_dr_sets": sets, "offsite_dr_report_dir": str(report_dir),
              "offsite_dr_pushgateway_url": rx.url + "/push", "offsite_dr_heartbeat_url": rx.url + "/hb",
              "offsite_dr_slack_webhook_url": rx.url + "/slack"}
    values.update(extra)
    return values


def render(html: Path) -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.fail("chromium is missing: scripts/bootstrap.sh installs it")
    r = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", html.as_uri()],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_drill_restores_checks_reports_and_cleans_up(moto, sshd, bucket, sample_db, workdir):
    repo = s3_repo(moto, bucket)
    backup_id = backup_to(repo, "crm", sample_db, workdir / "dumps")
    users = pg.run_sql(sample_db, "SELECT count(*) FROM public.users").strip()
    # the first repository is down, the second holds the backup, the third (down too) is never asked
    sets = [{"name": "crm", "repositories": [unreachable_repo(sshd), repo, unreachable_repo(sshd)],
             "target": {"type": "postgresql", "host": "127.0.0.1", "port": 5432, "user": "postgres"},
             "rpo_seconds": 3600,
             "queries": [{"name": "users restored", "sql": "SELECT count(*) FROM public.users", "expect": users},
                         {"name": "invoices exist", "sql": "SELECT count(*) FROM billing.invoices", "min": 1}]}]
    reports = workdir / "reports"
    with HttpReceiver() as rx:
        first = run_playbook(str(DRILL), extravars=drill_vars(sets, reports, rx), env=dba_environment())
        assert first.rc == 0, first.output
        second = run_playbook(str(DRILL), extravars=drill_vars(sets, reports, rx))
        assert second.rc == 0, second.output

    report = json.loads(sorted(reports.glob("drill-*.json"))[-1].read_text())
    assert report["success"] is True
    (crm,) = report["sets"]
    assert crm["backup_id"] == backup_id and crm["repository"].startswith("s3://")
    (skipped,) = crm["skipped_repositories"]
    assert skipped.startswith("sftp: ") and "connect" in skipped, skipped
    assert crm["rpo_met"] is True and 0 <= crm["age_seconds"] < 3600
    assert crm["restore_seconds"] > 0 and crm["duration_seconds"] >= crm["restore_seconds"]
    assert [c["ok"] for c in crm["checks"]] == [True, True], crm["checks"]
    assert drill_databases() == []                      # scratch databases always dropped
    assert f"backups/crm/{backup_id}.proven.json" in s3_keys(moto, bucket)
    md = sorted(reports.glob("drill-*.md"))[-1].read_text()
    assert "# DR drill PASSED" in md and backup_id in md

    pushes = [r for r in rx.requests if r["method"] == "PUT"]
    assert [r["path"] for r in pushes] == ["/push/metrics/job/offsite_dr_drill/instance/localhost"] * 2
    metrics = pushes[-1]["body"]
    assert 'dr_drill_success{set="crm"} 1' in metrics
    assert 'dr_drill_backup_age_seconds{set="crm"}' in metrics and "dr_drill_duration_seconds" in metrics
    assert posts(rx) == ["/hb", "/hb"]           # no /fail, no Slack

    # the history charts in a real browser: two drills, two points each, with their objectives
    # (the page itself: tests/integration/test_report_page.py)
    dom = render(sorted(reports.glob("drill-*.html"))[-1])
    assert dom.count('data-points="2"') == 2, dom[-3000:]
    assert dom.count('class="objective"') == 2 and "SELECT count(*)" in dom

    # retention keeps the proven backup even when the policy would not
    newer = backup_to(repo, "crm", sample_db, workdir / "dumps")
    r = run_playbook([{"name": "retention", "offsite.backup.retention": {
        "name": "crm", "repository": repo, "policy": {"keep_last": 1}}}])
    assert r.rc == 0, r.output
    assert r.result("retention")["kept_as_proven"] == backup_id
    assert set(r.result("retention")["keep"]) == {backup_id, newer}


def test_failed_drill_alerts_reports_and_still_cleans_up(moto, sshd, bucket, sample_db, workdir):
    repo = s3_repo(moto, bucket)
    backup_to(repo, "crm", sample_db, workdir / "dumps")
    target = {"type": "postgresql", "host": "127.0.0.1", "port": 5432, "user": "postgres"}
    sets = [{"name": "crm", "repositories": [repo], "target": target,
             "queries": [{"name": "wrong expectation", "sql": "SELECT count(*) FROM public.users", "expect": "-1"},
                         {"name": "broken query", "sql": "SELECT * FROM no_such_table"}]},
            {"name": "erp", "repositories": [repo, unreachable_repo(sshd)], "target": target}]
    reports = workdir / "reports"
    with HttpReceiver() as rx:      # localhost named in the inventory, no -c local: still a local connection
        r = run_playbook(str(DRILL), extravars=drill_vars(sets, reports, rx), inventory="localhost,", connection=None)
    assert r.rc != 0 and "UNREACHABLE" not in r.stdout, r.output
    assert "DR drill failed" in r.output and "erp: no reachable repository holds a complete backup of erp" in r.output

    report = json.loads(next(reports.glob("drill-*.json")).read_text())
    crm, erp = report["sets"]
    assert report["success"] is False
    assert crm["success"] is False and crm["backup_id"] and [c["ok"] for c in crm["checks"]] == [False, False]
    assert "no_such_table" in crm["checks"][1]["detail"]
    assert erp["success"] is False and erp["backup_id"] is None
    # in the order of the priority list
    assert erp["skipped_repositories"][0].startswith("s3://%s/backups/erp" % bucket)
    assert erp["skipped_repositories"][0].endswith(": no complete backup")
    assert erp["skipped_repositories"][1].startswith("sftp: ")
    assert drill_databases() == []
    assert posts(rx) == ["/slack", "/hb/fail"]
    (slack,) = rx.json_bodies("/slack")
    assert "crm" in slack["text"] and "erp" in slack["text"]
    push = [q for q in rx.requests if q["method"] == "PUT"][0]["body"]
    assert 'dr_drill_success{set="crm"} 0' in push and 'dr_drill_success{set="erp"} 0' in push


def test_stale_backup_fails_the_rpo_objective(moto, bucket, sample_db, workdir):
    repo = s3_repo(moto, bucket)
    backup_to(repo, "crm", sample_db, workdir / "dumps")
    sets = [{"name": "crm", "repositories": [repo], "rpo_seconds": 0,
             "target": {"type": "postgresql", "host": "127.0.0.1", "port": 5432, "user": "postgres"}}]
    with HttpReceiver() as rx:
        r = run_playbook(str(DRILL), extravars=drill_vars(sets, workdir / "reports", rx))
    assert r.rc != 0
    assert "older than the RPO objective" in r.output
    assert drill_databases() == []


def test_slow_recovery_fails_the_rto_objective(moto, bucket, sample_db, workdir):
    repo = s3_repo(moto, bucket)
    backup_to(repo, "crm", sample_db, workdir / "dumps")
    sets = [{"name": "crm", "repositories": [repo], "rto_seconds": 0,
             "target": {"type": "postgresql", "host": "127.0.0.1", "port": 5432, "user": "postgres"},
             "queries": [{"name": "users", "sql": "SELECT count(*) FROM public.users", "min": 1}]}]
    with HttpReceiver() as rx:
        r = run_playbook(str(DRILL), extravars=drill_vars(sets, workdir / "reports", rx))
    assert r.rc != 0
    assert "longer than the RTO objective of 0.0 s" in r.output
    report = json.loads(next((workdir / "reports").glob("drill-*.json")).read_text())
    (crm,) = report["sets"]
    assert crm["rto_met"] is False and crm["success"] is False and crm["recovery_seconds"] > 0
    assert crm["checks"][0]["ok"] is True and crm["checks"][0]["query"] == "SELECT count(*) FROM public.users"
    assert crm["checks"][0]["expected"] == "at least 1" and int(crm["checks"][0]["got"]) >= 1
    assert "MISSED" in (workdir / "reports" / next((workdir / "reports").glob("drill-*.md")).name).read_text()
    push = [q for q in rx.requests if q["method"] == "PUT"][0]["body"]
    assert 'dr_drill_rto_seconds{set="crm"} 0.0' in push and 'dr_drill_recovery_seconds{set="crm"}' in push
    assert drill_databases() == []


@pytest.mark.parametrize("doc", ["dr-drill.md", "dr-rebuild.md"])
def test_the_docs_example_runs_on_the_host_it_names(doc):
    """`ansible-playbook -i <host>, offsite.backup.<playbook> ...` as the page shows it plays on <host>."""
    (line,) = [line for line in (REPO_ROOT / "docs" / doc).read_text().splitlines()
               if line.startswith("ansible-playbook -i ")]
    words = line.split("#")[0].split()       # ansible-playbook -i <host>, <playbook> [-e ...] [--ask-vault-pass]
    host, playbook, rest = words[2], words[3], words[4:]
    options = [arg for i in range(0, len(rest) - 1, 2) if rest[i] == "-e" and not rest[i + 1].startswith("@")
               for arg in rest[i:i + 2]]           # the variable files of the example are the user's
    r = run_playbook(str(REPO_ROOT / "playbooks" / (playbook.split(".")[-1] + ".yml")), inventory=host,
                     connection=None, extra_args=options + ["--list-hosts"])
    assert r.rc == 0, r.output
    listed = r.stdout.split("hosts (1):")[1].split()[0]
    assert listed == host.rstrip(","), r.stdout
