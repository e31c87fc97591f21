"""playbooks/restore.yml (the AWX "offsite restore" template): restore on demand, then replace."""

from __future__ import annotations

from tests.harness import pg
from tests.harness.ansible import REPO_ROOT, run_playbook
from tests.integration.helpers import local_repo, pg_target
from tests.integration.test_dr_drill import backup_to

RESTORE = REPO_ROOT / "playbooks" / "restore.yml"


def test_restore_playbook_creates_then_replaces(sample_db, unique_db_name, workdir):
    repo = local_repo(workdir / "repo")
    (workdir / "repo").mkdir()
    backup_id = backup_to(repo, "crm", sample_db, workdir / "dumps")
    values = {"offsite_restore_set": "crm", "offsite_restore_repository": repo,
              "offsite_restore_target": pg_target(unique_db_name)}
    r = run_playbook(str(RESTORE), extravars=values)
    assert r.rc == 0, r.output
    assert r.result("Restore the backup")["backup"]["id"] == backup_id
    assert pg.fingerprint(unique_db_name) == pg.fingerprint(sample_db)

    pg.run_sql(unique_db_name, "CREATE TABLE public.drift (x int)")
    again = run_playbook(str(RESTORE), extravars=values)
    assert again.rc != 0 and "exists" in again.output        # create never overwrites
    replace = dict(values, offsite_restore_mode="replace", offsite_restore_keep_previous=False)
    replaced = run_playbook(str(RESTORE), extravars=replace)
    assert replaced.rc == 0, replaced.output
    assert pg.fingerprint(unique_db_name) == pg.fingerprint(sample_db)


def test_restore_playbook_refuses_missing_variables():
    r = run_playbook(str(RESTORE), extravars={"offsite_restore_set": "crm"})
    assert r.rc != 0 and "offsite_restore_repository" in r.output


def test_backup_now_runs_an_installed_job(moto, bucket, sample_db, workdir):
    """playbooks/backup_now.yml runs the job through the offsite-backup command, as its schedule does."""
    from tests.harness import COLLECTIONS_PATH, VENV_BIN
    from tests.harness.monitoring import HttpReceiver
    from tests.integration.helpers import s3_keys
    from tests.integration.helpers import CLI_MODULE
    from tests.integration.test_runner import write_job

    command = workdir / "offsite-backup"
    command.write_text(f"#!/bin/sh\nPYTHONPATH={COLLECTIONS_PATH} exec {VENV_BIN / 'python'} -m {CLI_MODULE} \"$@\"\n")
    command.chmod(0o755)
    with HttpReceiver() as rx:
        job_path, job = write_job(workdir, moto, bucket, sample_db, rx)
        values = {"offsite_backup_hosts": "localhost", "offsite_backup_job": job["name"],
                  "offsite_backup_config_dir": str(job_path.parent), "offsite_backup_command": str(command)}
        r = run_playbook(str(REPO_ROOT / "playbooks" / "backup_now.yml"), extravars=values)
        assert r.rc == 0, r.output
        assert [k for k in s3_keys(moto, bucket) if k.endswith(".manifest.json")], s3_keys(moto, bucket)
        bad = run_playbook(str(REPO_ROOT / "playbooks" / "backup_now.yml"),
                           extravars=dict(values, offsite_backup_job="../etc/passwd"))
        assert bad.rc != 0 and "set offsite_backup_job" in bad.output
