"""The ``offsite-backup`` command, run for real as cron runs it: minimal environment, no
terminal, against PostgreSQL, moto S3, a local HTTP receiver (heartbeats, Slack webhook) and
Debian's prometheus-pushgateway on loopback."""

from __future__ import annotations

import fcntl
import json
import os
import stat
import uuid

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import pg
from tests.harness.monitoring import HttpReceiver, Pushgateway
from tests.integration.helpers import cli, pg_source, s3_keys


@pytest.fixture(scope="module")
def pushgateway():
    svc = Pushgateway().start()
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture
def receiver():
    svc = HttpReceiver(fail_paths={"/down"}).start()
    try:
        yield svc
    finally:
        svc.stop()


def write_job(workdir, moto, bucket, database, receiver, pushgateway=None, name=None, **extra):
    """A job file plus its 0600 env file holding the S3 keys; returns (job path, job dict)."""
    name = name or f"job{uuid.uuid4().hex[:6]}"
    hc = f"{receiver.url}/hc/{name}"
    job = {
        "name": name,
        "local": {"path": str(workdir / "local"), "retention": {"keep_last": 1}},
        "sources": [{"name": "crm_db", "source": pg_source(database)}],
        "repositories": [{"type": "s3", "bucket": bucket, "prefix": "srv1", "endpoint_url": moto.endpoint_url,
                          "region": moto.region, "access_key": "${S3_ACCESS_KEY}", "secret_key": "${S3_SECRET_KEY}"}],
        "retention": {"keep_last": 2},
        "log": {"path": str(workdir / "log" / f"{name}.log")},
        "monitoring": {
            "heartbeats": [{"url": hc}, {"success": f"{receiver.url}/down"}],
            "webhooks": [{"url": f"{receiver.url}/slack", "format": "slack"},
                         {"url": f"{receiver.url}/json", "format": "json"}],
            "textfile": {"path": str(workdir / "metrics" / f"offsite_backup_{name}.prom")},
            "instance": "srv1.example",
        },
    }
    if pushgateway is not None:
        job["monitoring"]["pushgateway"] = {"url": pushgateway.url}
    job.update(extra)
    (workdir / "metrics").mkdir(exist_ok=True)
    path = workdir / f"{name}.yml"
    path.write_text(yaml.safe_dump(job))
    env_path = workdir / f"{name}.env"
    env_path.write_text(f"S3_ACCESS_KEY={moto.access_key}\nS3_SECRET_KEY='{moto.secret_key}'\n")
    env_path.chmod(0o600)
    return path, job


def test_scheduled_run_backs_up_reports_and_restores(moto, bucket, sample_db, workdir, receiver, pushgateway,
                                                     unique_db_name):
    job_path, job = write_job(workdir, moto, bucket, sample_db, receiver, pushgateway)
    name = job["name"]

    first = cli("run", str(job_path))
    assert first.returncode == 0, first.stderr
    # quiet under cron: nothing on stdout or stderr when all went well
    assert first.stdout == "" and first.stderr == ""
    second = cli("run", str(job_path))
    assert second.returncode == 0, second.stderr

    # the local copy keeps 1 backup, the bucket 2, each with its manifest
    local_set = workdir / "local" / "crm_db"
    local_ids = sorted(p.name.split(".")[0] for p in local_set.glob("*.manifest.json"))
    assert len(local_ids) == 1
    keys = s3_keys(moto, bucket, "srv1/crm_db/")
    manifests = [k for k in keys if k.endswith(".manifest.json")]
    assert len(manifests) == 2 and any(local_ids[0] in k for k in manifests)
    assert stat.S_IMODE(os.stat(next(local_set.glob("*.dump.zst"))).st_mode) == 0o600

    # heartbeats: start then success, per run; the endpoint that answers 500 was only logged
    paths = receiver.paths()
    assert paths.count(f"/hc/{name}/start") == 2 and paths.count(f"/hc/{name}") == 2
    assert paths.count("/down") == 2 and f"/hc/{name}/fail" not in paths
    assert "/slack" not in paths  # the webhooks speak on failure only
    log_text = (workdir / "log" / f"{name}.log").read_text()
    assert "succeeded" in log_text and "failed (500)" in log_text
    assert moto.secret_key not in log_text and moto.secret_key not in first.stdout + first.stderr
    assert stat.S_IMODE(os.stat(workdir / "log" / f"{name}.log").st_mode) == 0o640

    # Prometheus: the gateway and the textfile hold the run's metrics
    labels = frozenset({"job": name, "source": "crm_db", "source_type": "postgresql",
                        "instance": "srv1.example"}.items())
    assert pushgateway.samples("backup_success")[labels] == 1
    assert pushgateway.samples("backup_last_success_timestamp_seconds")[labels] > 1.7e9
    assert pushgateway.samples("backup_size_bytes")[labels] > 0
    uploads = [v for k, v in pushgateway.samples("backup_upload_bytes").items() if ("job", name) in k]
    assert uploads and uploads[0] > 0
    textfile = (workdir / "metrics" / f"offsite_backup_{name}.prom").read_text()
    assert f'backup_success{{job="{name}",source="crm_db",source_type="postgresql"}} 1' in textfile

    # list shows both places; restore brings the data back equal to the source
    listed = cli("list", str(job_path))
    assert listed.returncode == 0, listed.stderr
    assert "local" in listed.stdout and "s3 #0" in listed.stdout and local_ids[0] in listed.stdout
    # VERIFIED: the upload proved size and sha256 of what landed; nothing re-read the local copy
    header, *rows = listed.stdout.splitlines()
    repository, column = header.index("REPOSITORY"), header.index("VERIFIED")
    assert {(row[repository:].split("  ")[0], row[column:].split()[0]) for row in rows} \
        == {("local", "no"), ("s3 #0", "checksum")}, listed.stdout
    restored = cli("restore", str(job_path), "--set", "crm_db", "--database", unique_db_name)
    assert restored.returncode == 0, restored.stderr
    assert pg.fingerprint(unique_db_name) == pg.fingerprint(sample_db)
    # the CLI's errors name its flags, not the module's options
    again = cli("restore", str(job_path), "--set", "crm_db", "--database", unique_db_name)
    assert again.returncode != 0 and "--mode replace" in again.stderr and "mode: replace" not in again.stderr, \
        again.stderr


def test_failure_sends_fail_ping_and_slack_and_keeps_last_success(moto, bucket, sample_db, workdir, receiver,
                                                                  pushgateway):
    job_path, job = write_job(workdir, moto, bucket, sample_db, receiver, pushgateway)
    name = job["name"]
    assert cli("run", str(job_path)).returncode == 0
    labels = frozenset({"job": name, "source": "crm_db", "source_type": "postgresql",
                        "instance": "srv1.example"}.items())
    last_good = pushgateway.samples("backup_last_success_timestamp_seconds")[labels]

    job["sources"][0]["source"]["database"] = "offsite_no_such_db"
    job_path.write_text(yaml.safe_dump(job))
    failed = cli("run", str(job_path))
    assert failed.returncode == 1
    assert "offsite_no_such_db" in failed.stderr  # cron mails the error

    fail_pings = [r for r in receiver.requests if r["path"].startswith(f"/hc/{name}/fail")]
    assert len(fail_pings) == 1
    assert "offsite_no_such_db" in fail_pings[0]["body"] and "--- log tail ---" in fail_pings[0]["body"]
    slack = receiver.json_bodies("/slack")
    assert len(slack) == 1 and name in slack[0]["text"] and "srv1.example" in slack[0]["text"]
    assert "offsite_no_such_db" in slack[0]["text"] and "FAILED" in slack[0]["text"]
    generic = receiver.json_bodies("/json")
    assert generic[0]["status"] == "failure" and generic[0]["host"] == "srv1.example" and generic[0]["job"] == name
    assert moto.secret_key not in json.dumps(receiver.requests)

    assert pushgateway.samples("backup_success")[labels] == 0
    assert pushgateway.samples("backup_last_success_timestamp_seconds")[labels] == last_good
    textfile = (workdir / "metrics" / f"offsite_backup_{name}.prom").read_text()
    assert f'backup_success{{job="{name}",source="crm_db",source_type="postgresql"}} 0' in textfile
    assert "backup_last_success_timestamp_seconds" in textfile
    # nothing half-written in the local copy
    assert not list((workdir / "local").rglob("*.partial"))


def series(text):
    """The (metric name, labels) of every sample in a Prometheus text exposition."""
    return {(sample.name, frozenset(sample.labels.items()))
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_series_stay_the_same_run_after_run(moto, bucket, sample_db, workdir, receiver):
    """Nightly runs must not mint new series: labels carry names from the job file, never a
    backup id (which changes every run)."""
    job_path, job = write_job(workdir, moto, bucket, sample_db, receiver)
    job["repositories"].append({"type": "local", "path": str(workdir / "nas"), "name": "nas"})
    (workdir / "nas").mkdir()
    job_path.write_text(yaml.safe_dump(job))
    textfile = workdir / "metrics" / f"offsite_backup_{job['name']}.prom"
    seen, backup_ids = [], set()
    for run in range(3):
        result = cli("run", str(job_path))
        assert result.returncode == 0, f"run {run}: {result.stderr}"
        seen.append(series(textfile.read_text()))
        backup_ids |= {p.name.split(".")[0] for p in (workdir / "nas" / "crm_db").glob("*.manifest.json")}
    assert seen[0] == seen[1] == seen[2]
    repositories = {dict(labels)["repository"] for name, labels in seen[0] if name == "backup_upload_bytes"}
    assert repositories == {f"s3://{bucket}/srv1 at {moto.endpoint_url}", "nas"}
    assert len(backup_ids) == 3
    values = {value for run in seen for name, labels in run for label, value in labels}
    assert not any(backup_id in value for backup_id in backup_ids for value in values)


def test_monitoring_down_never_fails_the_backup(moto, bucket, sample_db, workdir, receiver):
    job_path, job = write_job(workdir, moto, bucket, sample_db, receiver)
    job["monitoring"] = {"heartbeats": [{"url": "http://127.0.0.1:9/hc"}],
                         "pushgateway": {"url": "http://127.0.0.1:9"}, "timeout": 2}
    job_path.write_text(yaml.safe_dump(job))
    result = cli("run", str(job_path), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["ok"] and len(summary["monitoring_problems"]) == 3  # start, success, push
    assert s3_keys(moto, bucket, "srv1/crm_db/")


def test_dry_run_changes_nothing_and_checks_credentials(moto, bucket, sample_db, workdir, receiver):
    job_path, job = write_job(workdir, moto, bucket, sample_db, receiver)
    result = cli("run", str(job_path), "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["sets"][0]["status"] == "would succeed"
    assert not list((workdir / "local").rglob("*.dump*")) and s3_keys(moto, bucket) == []
    assert receiver.requests == []  # a dry run does not ping
    # it opens nothing that writes: no local directory, no lock, no log file
    assert not (workdir / "local").exists() and not (workdir / "log").exists()

    (workdir / f"{job['name']}.env").write_text(f"S3_ACCESS_KEY={moto.access_key}\nS3_SECRET_KEY=wrong\n")
    bad = cli("run", str(job_path), "--dry-run")
    assert bad.returncode == 1 and "crm_db" in bad.stderr and "wrong" not in bad.stderr


@pytest.mark.parametrize("change, expected", [
    (lambda job: job.update(colour="blue"), "unknown key(s) colour"),
    (lambda job: job["local"].update(path="relative/dir"), "must be an absolute path"),
    (lambda job: job["local"].update(retention={"keep_forever": 1}), "unknown retention rule(s) keep_forever"),
    (lambda job: job["repositories"][0].update(secret_key="${NOT_IN_ENV_FILE}"), "no NOT_IN_ENV_FILE"),
    (lambda job: job["monitoring"].update(webhooks=[{"url": "ftp://x"}]), "must be an http(s) URL"),
    (lambda job: job["sources"].append(dict(job["sources"][0])), "crm_db is used twice"),
])
def test_bad_job_file_is_refused_clearly(moto, bucket, sample_db, workdir, receiver, change, expected):
    job_path, job = write_job(workdir, moto, bucket, sample_db, receiver)
    change(job)
    job_path.write_text(yaml.safe_dump(job))
    result = cli("run", str(job_path))
    assert result.returncode == 2
    assert expected in result.stderr
    assert not (workdir / "local").exists() and s3_keys(moto, bucket) == []


def test_two_runs_never_overlap(moto, bucket, sample_db, workdir, receiver):
    job_path, job = write_job(workdir, moto, bucket, sample_db, receiver)
    local = workdir / "local"
    local.mkdir()
    with open(local / f".job-{job['name']}.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = cli("run", str(job_path))
    assert result.returncode == 3
    assert "another run" in result.stderr
    assert s3_keys(moto, bucket) == [] and not list(local.rglob("*.dump*"))
