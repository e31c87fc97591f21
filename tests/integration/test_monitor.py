"""``offsite-backup monitor``: a monitoring host reads every repository of a job (moto S3, the
harness sshd over SFTP, a local directory) and exports what actually landed there; the alert
rules fire on what it exports when a bucket is emptied, a copy is corrupted or the repositories
drift apart (promtool, fed the real export)."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.monitoring import Pushgateway
from tests.harness.services import free_port
from tests.harness import COLLECTIONS_PATH, VENV_BIN
from tests.integration.helpers import CLI_MODULE, cli, local_repo, pg_source, s3_keys, s3_repo, sftp_repo

RULES = Path(__file__).resolve().parents[2] / "roles" / "client" / "files" / "offsite-backup.rules.yml"


def samples(text: str) -> dict:
    """{(metric, repository): value} of the set crm_db."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("source") == "crm_db" and sample.name.startswith("backup_repository_"):
                found[(sample.name, sample.labels["repository"])] = sample.value
    return found


@pytest.fixture
def watched(moto, sshd, bucket, sample_db, workdir):
    """A job with three repositories, run twice (two backups everywhere)."""
    sftp_dir = os.path.join(sshd.home, sshd.make_dir(f"monitor-{uuid.uuid4().hex[:8]}"))
    nas = workdir / "nas"
    nas.mkdir()
    job = {"name": f"watch{uuid.uuid4().hex[:6]}", "local": {"path": str(workdir / "local")},
           "sources": [{"name": "crm_db", "source": pg_source(sample_db)}],
           "repositories": [s3_repo(moto, bucket, prefix="prod", name="s3-eu"), sftp_repo(sshd, sftp_dir, name="vps"),
                            local_repo(nas, name="nas")],
           "log": {"path": str(workdir / "job.log")}}
    path = workdir / "job.yml"
    path.write_text(yaml.safe_dump(job))
    for run in ("first", "second"):
        result = cli("run", str(path))
        assert result.returncode == 0, f"{run} run: {result.stderr}"
        time.sleep(1)  # the two backups in different seconds: the test compares their times
    return {"path": path, "job": job, "sftp": Path(sftp_dir), "nas": nas}


def promtool_alerts(tmp_path: Path, text: str, alerts: list[dict]) -> subprocess.CompletedProcess:
    series = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ", ".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            series.append({"series": f"{sample.name}{{{labels}}}", "values": f"{sample.value}x300"})
    tests = {"rule_files": [str(RULES)], "evaluation_interval": "1m",
             "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": alerts}]}
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests))
    return subprocess.run(["promtool", "test", "rules", str(tmp_path / "tests.yml")], capture_output=True, text=True,
                          check=False)


def test_monitor_sees_what_landed_and_alerts_when_it_changes(watched, moto, bucket, tmp_path):
    prom = tmp_path / "watch.prom"
    result = cli("monitor", str(watched["path"]), "--textfile", str(prom))
    assert result.returncode == 0, result.stderr
    seen = samples(prom.read_text())
    for repo in ("s3-eu", "vps", "nas"):
        assert seen[("backup_repository_up", repo)] == 1
        assert seen[("backup_repository_backups", repo)] == 2
        assert seen[("backup_repository_stored_bytes", repo)] > 0
        assert 0 <= seen[("backup_repository_newest_age_seconds", repo)] < 600
        assert seen[("backup_repository_incomplete", repo)] == 0 and seen[("backup_repository_suspect", repo)] == 0
        assert seen[("backup_repository_verify_success", repo)] == 1
        assert ("backup_repository_newest_proven_age_seconds", repo) not in seen  # no drill yet
    newest = {seen[("backup_repository_newest_timestamp_seconds", r)] for r in ("s3-eu", "vps", "nas")}
    assert len(newest) == 1                                    # one pass: the same newest backup everywhere
    # nothing to alert on
    quiet = promtool_alerts(tmp_path, prom.read_text(), [
        {"eval_time": "3h", "alertname": name, "exp_alerts": []}
        for name in ("BackupMissingFromRepository", "BackupRepositoriesDiverge", "BackupVerifyFailed",
                     "BackupRepositoryUnreachable", "BackupSuspectInRepository")])
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr

    # someone empties the bucket; the newest copy on the NAS rots; the VPS lost the newest manifest
    s3 = moto.client()
    for key in s3_keys(moto, bucket):
        s3.delete_object(Bucket=bucket, Key=key)
    # newest by when it was written: two runs within one second give <stamp> and <stamp>-1 ids,
    # which do not sort by name
    artifact = max((watched["nas"] / "crm_db").glob("*.dump*"), key=lambda p: p.stat().st_mtime_ns)
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    max((watched["sftp"] / "crm_db").glob("*.manifest.json"), key=lambda p: p.stat().st_mtime_ns).unlink()

    result = cli("monitor", str(watched["path"]), "--textfile", str(prom))
    assert result.returncode == 0, result.stderr
    assert "crm_db in nas:" in result.stderr, result.stderr
    seen = samples(prom.read_text())
    assert seen[("backup_repository_backups", "s3-eu")] == 0 and seen[("backup_repository_up", "s3-eu")] == 1
    assert ("backup_repository_newest_timestamp_seconds", "s3-eu") not in seen
    assert seen[("backup_repository_verify_success", "nas")] == 0
    assert seen[("backup_repository_backups", "vps")] == 1 and seen[("backup_repository_incomplete", "vps")] == 1
    assert seen[("backup_repository_newest_timestamp_seconds", "vps")] < \
        seen[("backup_repository_newest_timestamp_seconds", "nas")]
    job = watched["job"]["name"]
    labels = {"job": job, "source": "crm_db"}
    fired = promtool_alerts(tmp_path, prom.read_text(), [
        {"eval_time": "20m", "alertname": "BackupMissingFromRepository", "exp_alerts": [
            {"exp_labels": dict(labels, repository="s3-eu", severity="critical"), "exp_annotations": {
                "summary": f"Repository s3-eu holds no complete backup of {job}/crm_db",
                "description": "The set should be there: the bucket was emptied, the backups were deleted, or "
                               "uploads never reached it."}}]},
        {"eval_time": "20m", "alertname": "BackupVerifyFailed", "exp_alerts": [
            {"exp_labels": dict(labels, repository="nas", severity="critical"), "exp_annotations": {
                "summary": f"The sampled verify of {job}/crm_db in nas failed",
                "description": "A copy is damaged or unreadable: run the verify module or offsite-backup monitor by "
                               "hand for the details."}}]},
        {"eval_time": "1h", "alertname": "BackupRepositoriesDiverge", "exp_alerts": []},
        {"eval_time": "3h", "alertname": "BackupRepositoriesDiverge", "exp_alerts": [
            {"exp_labels": dict(labels, severity="warning"), "exp_annotations": {
                "summary": f"The repositories of {job}/crm_db disagree on the newest backup",
                "description": "One repository stopped receiving backups or lost its newest ones; compare them with "
                               "offsite-backup list."}}]},
    ])
    assert fired.returncode == 0, fired.stdout + fired.stderr


def test_monitor_pushes_and_serves_metrics(watched, tmp_path):
    gateway = Pushgateway().start()
    try:
        result = cli("monitor", str(watched["path"]), "--pushgateway", gateway.url)
        assert result.returncode == 0, result.stderr
        pushed = samples(gateway.metrics())
    finally:
        gateway.stop()
    assert pushed[("backup_repository_backups", "vps")] == 2

    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "LANG": "C", "PYTHONPATH": str(COLLECTIONS_PATH)}
    server = subprocess.Popen([str(VENV_BIN / "python"), "-m", CLI_MODULE, "monitor", str(watched["path"]),
                               "--listen", f"127.0.0.1:{port}", "--interval", "3600"],
                              env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        text = None
        deadline = time.time() + 60
        while time.time() < deadline and text is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                    text = response.read().decode()
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()
                time.sleep(0.2)
        assert text is not None
        served = samples(text)
        assert served[("backup_repository_backups", "nas")] == 2 and served[("backup_repository_up", "s3-eu")] == 1
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_monitor_needs_an_output_and_repositories(watched, tmp_path):
    result = cli("monitor", str(watched["path"]))
    assert result.returncode == 2 and "--textfile PATH, --pushgateway URL or --listen" in result.stderr
    result = cli("monitor", str(watched["path"]), "--textfile", str(tmp_path / "x.txt"))
    assert result.returncode == 2 and "must end in .prom" in result.stderr
