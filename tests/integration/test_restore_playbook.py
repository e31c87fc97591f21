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
