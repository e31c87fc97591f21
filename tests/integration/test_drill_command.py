"""``offsite-backup drill JOB``: the DR drill from the job file, without AWX or a controller;
then the client role's drill and monitor schedules, their installed lines run as cron runs them."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import yaml

from tests.harness import pg
from tests.harness.ansible import run_playbook
from tests.harness.monitoring import HttpReceiver
from tests.harness.rolehost import runner_dir_lock
from tests.integration.helpers import cli, local_repo, pg_source, s3_keys, s3_repo

CRON_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/root", "SHELL": "/bin/sh", "LOGNAME": "root"}


def scratch_databases(database: str) -> list[str]:
    rows = pg.run_sql("postgres", f"SELECT datname FROM pg_database WHERE datname LIKE '{database}_drill_%'")
    return [r for r in rows.split() if r]


def drill_job(workdir, moto, bucket, database, receiver, **drill):
    name = f"drill{uuid.uuid4().hex[:6]}"
    job = {"name": name, "local": {"path": str(workdir / "local")},
           "sources": [{"name": "crm_db", "source": pg_source(database)}],
           "repositories": [s3_repo(moto, bucket, prefix="prod", name="s3-eu"), local_repo(workdir / "nas")],
           "log": {"path": str(workdir / "log" / f"{name}.log")},
           "drill": dict({"report_dir": str(workdir / "drills"), "scratch_root": str(workdir / "scratch"),
                          "pushgateway": {"url": receiver.url + "/push"},
                          "queries": {"crm_db": [{"name": "users", "sql": "SELECT count(*) FROM public.users",
                                                  "min": 1}]}}, **drill)}
    (workdir / "nas").mkdir(exist_ok=True)
    return name, job


def test_drill_command_restores_checks_drops_marks_and_reports(moto, bucket, sample_db, workdir):
    with HttpReceiver() as receiver:
        name, job = drill_job(workdir, moto, bucket, sample_db, receiver)
        path = workdir / "job.yml"
        path.write_text(yaml.safe_dump(job))
        assert cli("run", str(path)).returncode == 0
        # the bucket "burned": the drill takes the next repository and says why it skipped the first
        for key in s3_keys(moto, bucket):
            moto.client().delete_object(Bucket=bucket, Key=key)
        result = cli("drill", str(path), "--json")
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        (crm,) = report["sets"]
        assert crm["success"] is True and crm["repository"] == str(workdir / "nas")
        assert crm["skipped_repositories"] == ["s3-eu: no complete backup"]
        assert crm["checks"][0]["ok"] is True and int(crm["checks"][0]["got"]) > 0
        assert 0 < crm["recovery_seconds"] < crm["rto_seconds"] == 14400 and crm["rto_met"] is True
        assert scratch_databases(sample_db) == []                       # dropped
        assert list((workdir / "nas" / "crm_db").glob("*.proven.json"))  # marked proven
        assert Path(report["paths"]["html"]).exists() and Path(report["paths"]["markdown"]).exists()
        push = [r for r in receiver.requests if r["path"].startswith("/push/")]
        assert push and 'dr_drill_success{set="crm_db"} 1' in push[0]["body"]

        # a failing check fails the drill (exit 1, reported), the scratch copy still goes
        job["drill"]["queries"]["crm_db"][0]["min"] = 10 ** 9
        path.write_text(yaml.safe_dump(job))
        failed = cli("drill", str(path))
        assert failed.returncode == 1 and "drill of crm_db FAILED" in failed.stderr
        assert scratch_databases(sample_db) == []


def cron_line(path: Path) -> tuple[list[str], str]:
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    assert len(lines) == 1, lines
    fields = lines[0].split(None, 6)
    return fields[:6], fields[6]


def as_cron(command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["env", "-i", *[f"{k}={v}" for k, v in CRON_ENV.items()], "/bin/sh", "-c", command],
                          capture_output=True, text=True, timeout=600, check=False)


def test_role_schedules_the_drill_and_the_monitor_and_cron_runs_them(moto, bucket, sample_db, workdir):
    with HttpReceiver() as receiver:
        name, job = drill_job(workdir, moto, bucket, sample_db, receiver)
        # the backup host's job, run once; the drill and monitoring host gets its own copy of the job file
        (workdir / "backup.yml").write_text(yaml.safe_dump(job))
        assert cli("run", str(workdir / "backup.yml")).returncode == 0
        (workdir / "bin").mkdir()
        content = {k: v for k, v in job.items() if k != "name"}
        content["repositories"][0] = dict(content["repositories"][0], access_key="${S3_ACCESS_KEY}",
                                          secret_key="${S3_SECRET_KEY}")
        secrets = {"S3_ACCESS_KEY": moto.access_key, "S3_SECRET_KEY": moto.secret_key}
        client = {"client_manage_packages": False, "client_install_dir": str(runner_dir_lock()),
                  "client_config_dir": str(workdir / "etc"), "client_log_dir": str(workdir / "log"),
                  "client_command": str(workdir / "bin" / "offsite-backup"),
                  "client_monitor_textfile_dir": str(workdir / "prom"),
                  "client_drills": [{"name": name, "job": content, "env": secrets}],
                  "client_monitors": [{"name": name, "job": content, "env": secrets, "read_data": "all"}]}
        play = [{"name": "drill and monitoring host", "hosts": "localhost", "gather_facts": False, "vars": client,
                 "roles": ["offsite.backup.client"]}]
        drill_cron = Path(f"/etc/cron.d/offsite-backup-drill-{name}")
        monitor_cron = Path(f"/etc/cron.d/offsite-backup-monitor-{name}")
        try:
            clock = time.time()
            first = run_playbook(play)
            print(f"first role run: {time.time() - clock:.0f} s")
            assert first.rc == 0, first.output
            assert moto.secret_key not in first.output
            clock = time.time()
            again = run_playbook(play)
            print(f"second role run: {time.time() - clock:.0f} s")
            assert again.rc == 0 and again.stats["localhost"]["changed"] == 0, again.output

            # weekly drill, hourly monitor, each on its own job file (0600, secrets in the env file)
            when, command = cron_line(drill_cron)
            assert when == ["0", "5", "*", "*", "1", "root"]
            assert command == f"{workdir}/bin/offsite-backup drill {workdir}/etc/drill/{name}.yml"
            when, monitor_command = cron_line(monitor_cron)
            assert when == ["17", "*", "*", "*", "*", "root"]
            textfile = workdir / "prom" / f"offsite_backup_{name}_repositories.prom"
            assert monitor_command == (f"{workdir}/bin/offsite-backup monitor {workdir}/etc/monitor/{name}.yml "
                                       f"--textfile {textfile} --read-data all")
            assert moto.secret_key not in (workdir / "etc" / "drill" / f"{name}.yml").read_text()
            assert oct((workdir / "etc" / "drill" / f"{name}.env").stat().st_mode & 0o777) == "0o600"

            # the lines as cron runs them: silent when all is well
            drilled = as_cron(command)
            assert drilled.returncode == 0, drilled.stderr
            assert drilled.stdout == "" and drilled.stderr == ""
            (report,) = (workdir / "drills").glob("drill-*.json")
            crm = json.loads(report.read_text())["sets"][0]
            assert crm["success"] is True and crm["repository"] == "s3-eu"
            assert scratch_databases(sample_db) == []
            assert [k for k in s3_keys(moto, bucket, "prod/crm_db/") if k.endswith(".proven.json")]
            assert any(r["path"].startswith("/push/metrics/job/offsite_dr_drill/") for r in receiver.requests)

            watched = as_cron(monitor_command)
            assert watched.returncode == 0, watched.stderr
            text = textfile.read_text()
            assert f'backup_repository_verify_success{{job="{name}",repository="s3-eu",source="crm_db"}} 1.0' in text
            assert f'backup_repository_backups{{job="{name}",repository="s3-eu",source="crm_db"}} 1.0' in text
            assert "backup_repository_newest_proven_age_seconds" in text       # the drill's marker, seen
        finally:
            drill_cron.unlink(missing_ok=True)
            monitor_cron.unlink(missing_ok=True)
