"""The four job templates run the way AWX runs them: ansible-runner on a private data directory
holding the project (a copy of extensions/awx/project), an inventory (an AWX-style inventory
script with inline group vars, plus group_vars/ and host_vars/ files), the survey's answers as
env/extravars and the credential type's injected environment as env/envvars.

Every setting that is not a survey answer comes from the inventory, as docs/awx.md tells users.
When a playbook's own defaults hid the inventory (play vars beat group_vars), the drill failed
with "offsite_dr_sets must list at least one set", the heartbeat never fired, reports went to
/var/lib and the backup-now job looked for its command in /usr/local/bin."""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid

import ansible_runner
import jinja2
import pytest
import yaml

from tests.harness import COLLECTIONS_PATH, pg
from tests.harness.ansible import CONTROLLER_BIN, REPO_ROOT, controller_bin
from tests.harness.monitoring import HttpReceiver
from tests.integration.helpers import CLI_MODULE, pg_target, s3_keys, s3_repo
from tests.integration.test_dr_drill import backup_to
from tests.integration.test_runner import write_job

AWX = REPO_ROOT / "extensions" / "awx"
DEFINITIONS = yaml.safe_load((AWX / "job_templates.yml").read_text())
TEMPLATES = {t["playbook"]: t for t in DEFINITIONS["offsite_awx_job_templates"]}


def survey_answers(playbook: str, **answers) -> dict:
    """What AWX sends as extra vars: every survey question's default, overridden by the answers."""
    questions = TEMPLATES[playbook]["survey"]
    values = {q["variable"]: q["default"] for q in questions if "default" in q}
    values.update(answers)
    unknown = set(answers) - {q["variable"] for q in questions}
    assert not unknown, f"not survey questions of {playbook}: {unknown}"
    return values


def injected_env(inputs: dict) -> dict:
    """The credential type's env injectors rendered with the credential's inputs, as AWX does
    (the definitions escape the inner template from Ansible: render twice)."""
    injectors = DEFINITIONS["offsite_awx_credential_type"]["injectors"]["env"]
    return {var: jinja2.Template(jinja2.Template(text).render()).render(**inputs) for var, text in injectors.items()}


def inventory_script(groups: dict) -> str:
    """An inventory script like the one AWX writes into the private data directory: groups with
    their hosts and (inline) vars, and _meta.hostvars."""
    data = {"all": {"children": sorted(groups)}, "_meta": {"hostvars": {}}}
    for name, group in groups.items():
        data[name] = {"hosts": group["hosts"], "vars": group.get("vars", {})}
        for host in group["hosts"]:
            data["_meta"]["hostvars"][host] = {"ansible_connection": "local",
                                               "ansible_python_interpreter": sys.executable}
    return f"#!{sys.executable}\nprint({json.dumps(json.dumps(data))})\n"


def write_yaml(path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))


def run_template(pdd, playbook: str, extravars: dict):
    """One job: AWX writes the survey answers to env/extravars, then runs ansible-runner."""
    write_yaml(pdd / "env" / "extravars", extravars)
    r = ansible_runner.run(private_data_dir=str(pdd), playbook=playbook, quiet=True)
    return r, r.stdout.read()


@pytest.fixture
def restored_db():
    name = f"offsite_awx_{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        for db in pg.run_sql("postgres", f"SELECT datname FROM pg_database WHERE datname LIKE '{name}%'").split():
            pg.drop_database(db)


def test_job_templates_take_their_settings_from_the_inventory(moto, bucket, sample_db, workdir, restored_db):
    # a set name of its own: the drill tests look for scratch databases of their sets ('crm_drill_...')
    name = f"awx{uuid.uuid4().hex[:8]}"
    backup_id = backup_to(s3_repo(moto, bucket), name, sample_db, workdir / "dumps")
    # keys come from the credential (env), never from the inventory
    repo = {k: v for k, v in s3_repo(moto, bucket).items() if k not in ("access_key", "secret_key")}

    pdd = workdir / "awx"
    shutil.copytree(AWX / "project", pdd / "project")
    command = workdir / "bin" / "offsite-backup"       # where this inventory's client role put it
    command.parent.mkdir()
    command.write_text(f"#!/bin/sh\nPYTHONPATH={COLLECTIONS_PATH} exec {controller_bin('python')} -m {CLI_MODULE} \"$@\"\n")
    command.chmod(0o755)

    with HttpReceiver() as rx:
        job_path, job = write_job(workdir, moto, bucket, sample_db, rx)
        inventory = pdd / "inventory"
        inventory.mkdir()
        script = inventory / "hosts"
        # group vars set in AWX's inventory (inline in the script AWX writes)
        script.write_text(inventory_script({
            "drill": {"hosts": ["drill-host"]},
            "rebuild": {"hosts": ["new-server"]},
            "db": {"hosts": ["db1"], "vars": {
                "offsite_restore_repository": repo,
                "offsite_restore_target": pg_target(restored_db),
                "offsite_restore_keep_previous": False,
                "offsite_backup_config_dir": str(job_path.parent),
                "offsite_backup_command": str(command)}},
        }))
        script.chmod(0o755)
        target = {"type": "postgresql", "host": "127.0.0.1", "port": 5432, "user": "postgres"}
        # group_vars/ and host_vars/ files (an inventory or project from git)
        write_yaml(inventory / "group_vars" / "drill.yml", {
            "offsite_dr_sets": [{"name": name, "repositories": [repo], "target": target}],
            "offsite_dr_heartbeat_url": rx.url + "/drill-heartbeat"})
        write_yaml(inventory / "host_vars" / "drill-host.yml", {"offsite_dr_report_dir": str(workdir / "drills")})
        write_yaml(inventory / "group_vars" / "rebuild.yml", {
            "offsite_dr_sets": [{"name": name, "repositories": [repo], "target": dict(target, database=restored_db)}],
            "offsite_dr_postgresql": {"manage": False},
            "offsite_dr_install_packages": False,
            "offsite_dr_report_dir": str(workdir / "rebuilds")})
        # the job's environment: the credential type's injectors, and the collection where a
        # project update installs it (collections/requirements.yml) and the EE's ansible-playbook
        write_yaml(pdd / "env" / "envvars", dict(
            injected_env({"aws_access_key_id": moto.access_key, "aws_secret_access_key": moto.secret_key,
                          "b2_application_key_id": "", "b2_application_key": "", "pgpassword": ""}),
            ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS_PATH), ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="False",
            # (the tests' controller: tests/harness/ansible.py)
            PATH=f"{CONTROLLER_BIN}{os.pathsep}{os.environ['PATH']}"))

        drill, out = run_template(pdd, "dr_drill.yml", survey_answers("dr_drill.yml", offsite_dr_hosts="drill"))
        assert drill.rc == 0, out
        assert [r["path"] for r in rx.requests if r["method"] == "POST"] == ["/drill-heartbeat"]
        report = json.loads(next((workdir / "drills").glob("drill-*.json")).read_text())
        assert report["success"] is True and report["sets"][0]["backup_id"] == backup_id

        rebuild, out = run_template(pdd, "dr_rebuild.yml", survey_answers("dr_rebuild.yml", offsite_dr_hosts="rebuild"))
        assert rebuild.rc == 0, out
        assert json.loads(next((workdir / "rebuilds").glob("rebuild-*.json")).read_text())["success"] is True
        assert pg.fingerprint(restored_db) == pg.fingerprint(sample_db)

        # the survey says replace; the inventory says not to keep the previous database
        pg.run_sql(restored_db, "CREATE TABLE public.drift (x int)")
        restore, out = run_template(pdd, "restore.yml", survey_answers(
            "restore.yml", offsite_restore_hosts="db", offsite_restore_set=name, offsite_restore_mode="replace"))
        assert restore.rc == 0, out
        assert pg.fingerprint(restored_db) == pg.fingerprint(sample_db)
        assert pg.run_sql("postgres", f"SELECT datname FROM pg_database WHERE datname LIKE '{restored_db}%'").split() \
            == [restored_db]

        manifests = [k for k in s3_keys(moto, bucket) if k.endswith(".manifest.json")]
        backup_now, out = run_template(pdd, "backup_now.yml", survey_answers(
            "backup_now.yml", offsite_backup_hosts="db", offsite_backup_job=job["name"]))
        assert backup_now.rc == 0, out
        assert len([k for k in s3_keys(moto, bucket) if k.endswith(".manifest.json")]) > len(manifests)
