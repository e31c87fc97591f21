"""Smoke tests: the harness itself works (services, PostgreSQL helpers, playbook runner)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import botocore.exceptions
import paramiko
import pytest

from tests.harness import pg
from tests.harness.ansible import REPO_ROOT, run_playbook

AUTH_ERRORS = {"AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidClientTokenId"}


# --- moto ----------------------------------------------------------------------------------


def test_moto_accepts_right_key(moto, bucket):
    s3 = moto.client()
    s3.put_object(Bucket=bucket, Key="hello.txt", Body=b"bonjour \xc3\xa9")
    assert s3.get_object(Bucket=bucket, Key="hello.txt")["Body"].read() == b"bonjour \xc3\xa9"
    assert bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert s3.meta.config.request_checksum_calculation == "when_required"
    assert s3.meta.config.response_checksum_validation == "when_required"
    assert s3.meta.config.s3["addressing_style"] == "path"


@pytest.mark.parametrize("which", ["wrong_secret", "unknown_key"])
def test_moto_rejects_wrong_credentials(moto, bucket, which):
    if which == "wrong_secret":
        s3 = moto.client(secret_key="not-the-secret")
    else:
        s3 = moto.client(access_key="AKIAOFFSITEUNKNOWN00", secret_key="whatever")
    with pytest.raises(botocore.exceptions.ClientError) as ei:
        s3.put_object(Bucket=bucket, Key="x", Body=b"x")
    assert ei.value.response["Error"]["Code"] in AUTH_ERRORS
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


# --- sshd ----------------------------------------------------------------------------------


def _paramiko(sshd, port=None, key=None, known_hosts=None) -> paramiko.SSHClient:
    c = paramiko.SSHClient()
    c.load_host_keys(sshd.known_hosts if known_hosts is None else known_hosts)
    c.set_missing_host_key_policy(paramiko.RejectPolicy())
    c.connect(sshd.host, port=port or sshd.port, username=sshd.user,
              key_filename=key or sshd.private_key, look_for_keys=False, allow_agent=False, timeout=10)
    return c


def test_sshd_paramiko_key_and_known_hosts(sshd):
    for port in (sshd.port, sshd.sftp_only_port):
        c = _paramiko(sshd, port=port)
        try:
            sftp = c.open_sftp()
            assert "backups" in sftp.listdir(".")
            sftp.close()
        finally:
            c.close()
    assert sshd.host_key.startswith("ssh-ed25519 AAAA")
    assert f"[127.0.0.1]:{sshd.sftp_only_port} " in open(sshd.known_hosts).read()


def test_sshd_rejects_wrong_key(sshd):
    with pytest.raises(paramiko.AuthenticationException):
        _paramiko(sshd, key=sshd.wrong_private_key)


def test_sshd_unknown_host_key_rejected(sshd, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        _paramiko(sshd, known_hosts=str(empty))


def test_sshd_shell_on_normal_port_refused_on_sftp_only_port(sshd):
    ok = subprocess.run(["ssh", *sshd.ssh_args(), f"{sshd.user}@{sshd.host}", "echo hello"],
                        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, check=False)
    assert ok.returncode == 0 and ok.stdout.strip() == "hello", ok.stderr
    refused = subprocess.run(["ssh", *sshd.ssh_args(port=sshd.sftp_only_port), f"{sshd.user}@{sshd.host}",
                              "echo hello"], capture_output=True, text=True, timeout=30,
                             stdin=subprocess.DEVNULL, check=False)
    assert refused.returncode != 0
    assert "hello" not in refused.stdout
    assert "sftp connections only" in refused.stdout + refused.stderr


# --- PostgreSQL ----------------------------------------------------------------------------


def test_sample_db_fingerprint(sample_db):
    assert pg.run_sql(sample_db, "SELECT COUNT(*) FROM users").strip() == str(pg.USERS_PER_SCALE)
    fp1 = pg.fingerprint(sample_db)
    assert fp1 == pg.fingerprint(sample_db)
    assert {"public.users", "crm.companies", "crm.contacts", "billing.invoices",
            "billing.invoice_lines", "public.attachments"} <= set(fp1["tables"])
    assert len(fp1["large_objects"]) == 2
    assert "CREATE VIEW billing.unpaid_invoices" in fp1["schema"]
    assert "\\restrict" not in fp1["schema"]
    pg.run_sql(sample_db, "UPDATE crm.companies SET notes = 'changé' WHERE id = 1")
    fp2 = pg.fingerprint(sample_db)
    assert fp2 != fp1
    assert fp2["tables"]["crm.companies"] != fp1["tables"]["crm.companies"]
    assert fp2["tables"]["public.users"] == fp1["tables"]["public.users"]


def test_scram_pg_rejects_wrong_password(scram_pg):
    ok = subprocess.run(["psql", "-X", "-Atc", "SELECT 1", "-d", "postgres"],
                        env=pg.pg_env(scram_pg.env()), capture_output=True, text=True, timeout=30, check=False)
    assert ok.returncode == 0 and ok.stdout.strip() == "1", ok.stderr
    bad = subprocess.run(["psql", "-X", "-Atc", "SELECT 1", "-d", "postgres"],
                         env=pg.pg_env(scram_pg.env(password="wrong")), capture_output=True, text=True,
                         timeout=30, check=False)
    assert bad.returncode != 0
    assert "password authentication failed" in bad.stderr


# --- ansible -------------------------------------------------------------------------------


def test_run_playbook_debug():
    r = run_playbook([{"name": "say hello", "ansible.builtin.debug": {"msg": "hello {{ who }}"}}],
                     extravars={"who": "wörld"})
    assert r.rc == 0, r.output
    assert "Warning" not in r.stderr, r.stderr      # no CryptographyDeprecationWarning (DSA) noise
    assert r.tasks["say hello"]["status"] == "ok"
    assert r.result("say hello")["msg"] == "hello wörld"
    assert r.stats["localhost"]["ok"] == 1
    assert r.stats["localhost"]["failed"] == 0


def test_lint_prints_no_deprecation_noise():
    r = subprocess.run([str(REPO_ROOT / "scripts" / "lint.sh"), "playbooks/restore.yml"], capture_output=True,
                       text=True, env={k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}, check=False)
    assert r.returncode == 0, r.stderr
    assert "Warning" not in r.stdout + r.stderr, r.stdout + r.stderr


# --- command line --------------------------------------------------------------------------


def test_command_line_starts_the_root_sshd_of_the_role_tests(tmp_path):
    state = tmp_path / "state.json"
    harness = [sys.executable, "-m", "tests.harness.services"]
    up = subprocess.run([*harness, "up", "--state", str(state), "--services", "root_sshd"], cwd=REPO_ROOT,
                        capture_output=True, text=True, check=False)
    assert up.returncode == 0, up.stderr
    try:
        sshd = json.loads(state.read_text())["root_sshd"]
        assert oct(state.stat().st_mode & 0o777) == "0o600"
        # root logs in with the key, through the inventory the role tests use
        r = run_playbook([{"hosts": "target", "gather_facts": False, "tasks": [
            {"name": "who", "ansible.builtin.command": "id -un", "changed_when": False}]}],
            inventory=sshd["inventory"], connection=None)
        assert r.rc == 0, r.output
        assert r.result("who")["stdout"] == "root" and r.tasks["who"]["host"] == "target"
    finally:
        down = subprocess.run([*harness, "down", "--state", str(state)], cwd=REPO_ROOT, capture_output=True,
                              text=True, check=False)
    assert down.returncode == 0, down.stderr
    assert not os.path.exists(sshd["root_keys"])        # root's extra authorized_keys file is gone
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", sshd["port"]), timeout=2).close()


# --- restic ----------------------------------------------------------------------------------


def test_restic_init_on_the_tests_path_makes_cheap_keys_that_still_check_the_password(tmp_path):
    """tests/harness/restic_bin/restic: a local repository it initialises works with its password
    at N=2**10 (restic reads the parameters from the key file), and a wrong one is refused."""
    assert shutil.which("restic").startswith(str(REPO_ROOT / "tests" / "harness"))
    env = dict(os.environ, RESTIC_REPOSITORY=str(tmp_path / "repo"), RESTIC_PASSWORD="right-one")
    subprocess.run(["restic", "init"], env=env, check=True, capture_output=True)
    (key,) = (tmp_path / "repo" / "keys").iterdir()
    assert {k: json.loads(key.read_text())[k] for k in ("N", "r", "p")} == {"N": 1024, "r": 1, "p": 1}
    subprocess.run(["restic", "backup", "--stdin", "--stdin-filename", "x"], input=b"data", env=env, check=True,
                   capture_output=True)
    dumped = subprocess.run(["restic", "dump", "latest", "x"], env=env, check=True, capture_output=True)
    assert dumped.stdout == b"data"
    wrong = subprocess.run(["restic", "snapshots"], env=dict(env, RESTIC_PASSWORD="wrong-one"), capture_output=True,
                           text=True, check=False)
    assert wrong.returncode != 0 and "wrong password" in wrong.stderr
