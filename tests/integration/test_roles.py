"""Roles client and storage_server applied over real SSH to this machine (root sshd on a
loopback port), then the scheduled command run exactly as cron runs it.

The client installs the runner (virtualenv from PyPI, engine, command), a job with an S3 and an
SFTP repository, its env file, an SSH key and the pinned host key; the storage server (same
host, second play) jails the client's key in its own directory. The cron line then backs up
to both repositories, pings the receiver and pushes metrics."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.harness.ansible import run_playbook
from tests.harness.monitoring import HttpReceiver, Pushgateway
from tests.harness.rolehost import RUNNER_DIR, RootSshd, runner_dir_lock
from tests.harness.services import _ssh_keygen
from tests.integration.helpers import pg_source, s3_keys

REPO = Path(__file__).resolve().parents[2]
ENGINE = REPO / "plugins" / "module_utils" / "_engine"
CRON_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/root", "SHELL": "/bin/sh", "LOGNAME": "root"}


@pytest.fixture(scope="module")
def rootsshd():
    svc = RootSshd().start()
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture
def storage_root():
    # ChrootDirectory wants root-owned, not group/world-writable parents: not under /tmp
    path = Path(f"/srv/offsite-role-test-{uuid.uuid4().hex[:8]}")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _users_cleanup(names):
    for name in names:
        subprocess.run(["userdel", name], capture_output=True, check=False)


def client_vars(workdir, job_name, moto, bucket, database, receiver, pushgateway, rootsshd, storage_user):
    config = workdir / "etc"
    return {
        "client_manage_packages": True,
        "client_install_dir": str(runner_dir_lock()),
        "client_config_dir": str(config),
        "client_log_dir": str(workdir / "log"),
        "client_command": str(workdir / "bin" / "offsite-backup"),
        "client_jobs": [{
            "name": job_name,
            "schedule": "0 */6 * * *",
            "ssh_key": True,
            "signing_key": True,
            "known_hosts": [{"host": "127.0.0.1", "port": rootsshd.port, "key": rootsshd.host_key}],
            "env": {"S3_ACCESS_KEY": moto.access_key, "S3_SECRET_KEY": moto.secret_key},
            "job": {
                "local": {"path": str(workdir / "local"), "retention": {"keep_last": 2}},
                "sources": [{"name": "crm_db", "source": pg_source(database)}],
                "repositories": [
                    {"type": "s3", "bucket": bucket, "prefix": "hosts/target", "endpoint_url": moto.endpoint_url,
                     "region": moto.region, "access_key": "${S3_ACCESS_KEY}", "secret_key": "${S3_SECRET_KEY}"},
                    {"type": "sftp", "host": "127.0.0.1", "port": rootsshd.port, "user": storage_user,
                     "private_key": str(config / "ssh" / f"{job_name}_ed25519"),
                     "known_hosts": str(config / "known_hosts"), "path": "/backups"},
                ],
                "retention": {"keep_daily": 7},
                "monitoring": {"heartbeats": [{"url": f"{receiver.url}/hc/{job_name}"}],
                               "webhooks": [{"url": f"{receiver.url}/slack"}],
                               "pushgateway": {"url": pushgateway.url}, "instance": "target"},
            },
        }],
    }


def plays(client, storage_root, rootsshd, job_name, rsync_key_pub, prefix):
    storage = {
        "storage_server_root": str(storage_root),
        # users and group of this test only: other test sessions on this machine run the roles too
        "storage_server_user_prefix": prefix,
        "storage_server_sftp_group": f"{prefix}sftp",
        "storage_server_sshd_config": f"{rootsshd.dropin_dir}/offsite-backup.conf",
        # no systemd here: the role's fallback, kill -HUP of sshd's pid file, after sshd -t
        "storage_server_sshd_main_config": rootsshd.config,
        "storage_server_sshd_pidfile": rootsshd.pidfile,
        "storage_server_clients": [
            # the client role's key, handed over in the same run
            {"name": "target", "access": "sftp",
             "public_key": "{{ hostvars['target'].client_public_keys['%s'] }}" % job_name},
            {"name": "other", "access": "rsync", "public_key": rsync_key_pub},
        ],
    }
    return [
        {"name": "client", "hosts": "target", "gather_facts": False, "vars": client,
         "roles": ["offsite.backup.client"]},
        {"name": "storage", "hosts": "target", "gather_facts": False, "vars": storage,
         "roles": ["offsite.backup.storage_server"]},
    ]


def test_roles_install_schedule_restrict_and_the_cron_run_backs_up(moto, bucket, sample_db, workdir, rootsshd,
                                                                   storage_root):
    job_name = f"crm{uuid.uuid4().hex[:6]}"
    prefix = f"o{uuid.uuid4().hex[:6]}-"
    storage_user = f"{prefix}target"
    cron_file = Path(f"/etc/cron.d/offsite-backup-{job_name}")
    pushgateway = Pushgateway().start()
    receiver = HttpReceiver().start()
    rsync_key = str(workdir / "other_ed25519")
    rsync_pub = _ssh_keygen(rsync_key, "other@offsite-role-test")
    inventory = rootsshd.inventory(workdir / "inventory")
    (workdir / "bin").mkdir()
    client = client_vars(workdir, job_name, moto, bucket, sample_db, receiver, pushgateway, rootsshd, storage_user)
    try:
        first = run_playbook(plays(client, storage_root, rootsshd, job_name, rsync_pub, prefix), inventory=inventory,
                             connection=None)
        assert first.rc == 0, first.output
        assert moto.secret_key not in first.stdout + first.stderr
        # re-applying changes nothing and is fast with and without pipelining (docs/role-client.md):
        # each role reads the host in one remote command and skips every task that would only
        # confirm what it read, so a no-change apply runs two modules over SSH (the role ran 40
        # before, 70 with the file-by-file engine copy). Module runs, not seconds, are asserted:
        # seconds depend on the load of this shared machine (bench/roles_reapply.py measures them).
        for pipelining in ("False", "True"):
            started = time.monotonic()
            again = run_playbook(plays(client, storage_root, rootsshd, job_name, rsync_pub, prefix), inventory=inventory,
                                 connection=None, env={"ANSIBLE_PIPELINING": pipelining})
            print(f"no-change apply of both roles, pipelining={pipelining}: {time.monotonic() - started:.1f} s, "
                  f"{module_runs(again)} module runs over SSH, load {os.getloadavg()}")
            assert again.rc == 0, again.output
            assert again.stats["target"]["changed"] == 0, again.output
            assert module_runs_by_task(again) == {"Read what is installed (one remote command)": 2}, again.output

        # drift: only what differs from what was read runs. Check mode reports exactly the drifted
        # items and touches nothing; the next apply repairs exactly these.
        config = workdir / "etc"
        env_file = config / f"{job_name}.env"
        keys_file = storage_root / "target" / ".ssh" / "authorized_keys"
        good = {"env": env_file.read_text(), "keys": keys_file.read_text()}
        os.chmod(config, 0o755)
        env_file.write_text(good["env"] + "EXTRA='1'\n")
        keys_file.write_text(good["keys"] + "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDrift drift@elsewhere\n")
        cron_file.unlink()
        subprocess.run(["usermod", "-s", "/bin/bash", f"{prefix}other"], check=True, capture_output=True)
        drifted = {"Create the runner directories", f"Env file with the secrets of job {job_name}",
                   f"Cron entry of job {job_name}", "Client users",
                   "Restricted authorized_keys (forced command, no shell, no forwarding)"}
        dry = run_playbook(plays(client, storage_root, rootsshd, job_name, rsync_pub, prefix), inventory=inventory,
                           connection=None, check=True)
        assert dry.rc == 0, dry.output
        assert {e["task"] for e in dry.events if e["changed"]} == drifted, dry.output
        assert stat.S_IMODE(os.stat(config).st_mode) == 0o755 and "EXTRA" in env_file.read_text()
        assert "drift@elsewhere" in keys_file.read_text() and not cron_file.exists()
        assert subprocess.run(["getent", "passwd", f"{prefix}other"], capture_output=True, text=True,
                              check=True).stdout.strip().endswith(":/bin/bash")
        repaired = run_playbook(plays(client, storage_root, rootsshd, job_name, rsync_pub, prefix), inventory=inventory,
                                connection=None)
        assert repaired.rc == 0, repaired.output
        assert {e["task"] for e in repaired.events if e["changed"]} == drifted, repaired.output
        assert env_file.read_text() == good["env"] and keys_file.read_text() == good["keys"] and cron_file.exists()
        assert subprocess.run(["getent", "passwd", f"{prefix}other"], capture_output=True, text=True,
                              check=True).stdout.strip().endswith(":/bin/sh")

        # files, modes, owners
        for path, mode in ((config, 0o700), (config / f"{job_name}.yml", 0o600), (config / f"{job_name}.env", 0o600),
                           (config / "ssh" / f"{job_name}_ed25519", 0o600), (workdir / "bin" / "offsite-backup", 0o755)):
            st = os.stat(path)
            assert (stat.S_IMODE(st.st_mode), st.st_uid) == (mode, 0), path
        assert moto.secret_key in (config / f"{job_name}.env").read_text()
        assert moto.secret_key not in (config / f"{job_name}.yml").read_text()
        assert f"[127.0.0.1]:{rootsshd.port} {rootsshd.host_key}" in (config / "known_hosts").read_text()

        # the engine: one wheel of the whole engine directory, every file of it installed (no list
        # kept by hand: tests/unit/test_engine_wheel.py adds a subpackage), no file-by-file copy
        site = next((RUNNER_DIR / "venv" / "lib").glob("python3*/site-packages/offsite_backup"))
        assert ({p.relative_to(site).as_posix() for p in site.rglob("*.py")}
                == {p.relative_to(ENGINE).as_posix() for p in ENGINE.rglob("*.py")})
        wheel = json.loads(first.result("Build the engine wheel on the controller")["stdout"])["name"]
        assert [p.name for p in (RUNNER_DIR / "dist").iterdir()] == [wheel]
        assert not (RUNNER_DIR / "lib").exists()

        # the crontab entry: the seeds' six-hourly schedule
        lines = [line for line in cron_file.read_text().splitlines() if line and not line.startswith("#")]
        assert len(lines) == 1
        fields = lines[0].split(None, 6)
        assert fields[:6] == ["0", "*/6", "*", "*", "*", "root"]
        assert fields[6] == f"{workdir}/bin/offsite-backup run {config}/{job_name}.yml"

        # the storage server: restricted key lines, root-owned jail, client-owned backups/
        keys = (storage_root / "target" / ".ssh" / "authorized_keys").read_text()
        assert keys.startswith('restrict,command="internal-sftp -d /backups" ssh-ed25519 ')
        other_keys = (storage_root / "other" / ".ssh" / "authorized_keys").read_text()
        assert other_keys.startswith(f'restrict,command="/usr/bin/rrsync {storage_root}/other/backups" ')
        assert os.stat(storage_root / "target").st_uid == 0
        assert stat.S_IMODE(os.stat(storage_root / "target" / "backups").st_mode) == 0o700

        # run the scheduled command exactly as cron would
        run = subprocess.run(["env", "-i", *[f"{k}={v}" for k, v in CRON_ENV.items()], "/bin/sh", "-c", fields[6]],
                             capture_output=True, text=True, timeout=600, check=False)
        assert run.returncode == 0, run.stderr + (workdir / "log" / f"{job_name}.log").read_text()
        assert run.stdout == "" and run.stderr == ""
        manifests = [k for k in s3_keys(moto, bucket, "hosts/target/crm_db/") if k.endswith(".manifest.json")]
        assert manifests
        # signed with the key the role generated (signing_key: true), its public half published
        signed = json.loads(moto.client().get_object(Bucket=bucket, Key=manifests[0])["Body"].read())
        signing_pub = (config / "ssh" / f"{job_name}_signing_ed25519.pub").read_text().split()
        assert signed["signature"]["public_key"] == " ".join(signing_pub[:2])
        assert stat.S_IMODE(os.stat(config / "ssh" / f"{job_name}_signing_ed25519").st_mode) == 0o600
        landed = list((storage_root / "target" / "backups" / "crm_db").glob("*.manifest.json"))
        assert len(landed) == 1
        assert receiver.paths() == [f"/hc/{job_name}/start", f"/hc/{job_name}"]
        labels = frozenset({"job": job_name, "source": "crm_db", "source_type": "postgresql", "instance": "target"}.items())
        assert pushgateway.samples("backup_success")[labels] == 1

        # the client's key: SFTP in its jail only, no shell, nothing of the other host
        client_key = str(config / "ssh" / f"{job_name}_ed25519")
        shell = rootsshd.ssh(storage_user, client_key, "id")
        assert shell.returncode != 0 and "uid=" not in shell.stdout
        listing = subprocess.run(["sftp", *rootsshd.client_args(client_key), "-P", str(rootsshd.port), "-b", "-",
                                  f"{storage_user}@127.0.0.1"], input="ls /\nls /backups/crm_db\n",
                                 capture_output=True, text=True, timeout=60, check=False)
        assert listing.returncode == 0, listing.stderr
        assert "/backups" in listing.stdout and "/other" not in listing.stdout
        assert landed[0].name in listing.stdout
        escape = subprocess.run(["sftp", *rootsshd.client_args(client_key), "-P", str(rootsshd.port), "-b", "-",
                                 f"{storage_user}@127.0.0.1"], input=f"ls {storage_root}/other\n",
                                capture_output=True, text=True, timeout=60, check=False)
        assert escape.returncode != 0

        # the rsync client: rrsync in its directory, no shell, no way out
        ssh_e = "ssh " + " ".join(rootsshd.client_args(rsync_key)) + f" -p {rootsshd.port}"
        (workdir / "payload").write_text("x")
        put = subprocess.run(["rsync", "-e", ssh_e, str(workdir / "payload"), f"{prefix}other@127.0.0.1:"],
                             capture_output=True, text=True, timeout=60, check=False)
        assert put.returncode == 0, put.stderr
        assert (storage_root / "other" / "backups" / "payload").read_text() == "x"
        assert rootsshd.ssh(f"{prefix}other", rsync_key, "cat", "/etc/passwd").returncode != 0
        subprocess.run(["rsync", "-e", ssh_e, f"{prefix}other@127.0.0.1:../target/backups/", str(workdir / "stolen")],
                       capture_output=True, text=True, timeout=60, check=False)
        assert not (workdir / "stolen" / "crm_db").exists()

        # systemd backend: unit files with randomized delay and catch-up, no cron entry left
        client["client_schedule_backend"] = "systemd"
        client["client_systemd_enable"] = False
        client["client_systemd_dir"] = str(workdir / "systemd")
        (workdir / "systemd").mkdir()
        timer_run = run_playbook(plays(client, storage_root, rootsshd, job_name, rsync_pub, prefix)[:1],
                                 inventory=inventory, connection=None)
        assert timer_run.rc == 0, timer_run.output
        timer = (workdir / "systemd" / f"offsite-backup-{job_name}.timer").read_text()
        assert "Persistent=true" in timer and "RandomizedDelaySec=15m" in timer and "OnCalendar=*-*-* 03:00:00" in timer
        service = (workdir / "systemd" / f"offsite-backup-{job_name}.service").read_text()
        assert f"ExecStart={workdir}/bin/offsite-backup run {config}/{job_name}.yml" in service
        assert not cron_file.exists()

        # state: absent removes schedule, files and key
        client["client_jobs"][0]["state"] = "absent"
        removed = run_playbook(plays(client, storage_root, rootsshd, job_name, rsync_pub, prefix)[:1],
                               inventory=inventory, connection=None)
        assert removed.rc == 0, removed.output
        for gone in (config / f"{job_name}.yml", config / f"{job_name}.env", config / "ssh" / f"{job_name}_ed25519",
                     config / "ssh" / f"{job_name}_signing_ed25519",
                     workdir / "systemd" / f"offsite-backup-{job_name}.timer"):
            assert not gone.exists(), gone
        assert f"[127.0.0.1]:{rootsshd.port}" not in (config / "known_hosts").read_text()
    finally:
        cron_file.unlink(missing_ok=True)
        _users_cleanup([storage_user, f"{prefix}other"])
        subprocess.run(["groupdel", f"{prefix}sftp"], capture_output=True, check=False)
        pushgateway.stop()
        receiver.stop()


# actions that run on the controller only: no SSH round trip
CONTROLLER_ACTIONS = {"assert", "set_fact", "debug", "include_tasks", "validate_argument_spec"}


def module_runs_by_task(result) -> dict:
    """Module runs over SSH per task name (each loop item counts; skipped ones, controller-side
    actions and tasks delegated to the controller do not)."""
    runs: dict = {}
    for event in result.events:
        res = event["result"]
        if event["skipped"] or event["action"].rsplit(".", 1)[-1] in CONTROLLER_ACTIONS:
            continue
        if (res.get("_ansible_delegated_vars") or {}).get("ansible_host") in ("localhost", "127.0.0.1") \
                and event["task"] == "Build the engine wheel on the controller":
            continue
        items = res.get("results")
        n = sum(1 for item in items if not item.get("skipped")) if isinstance(items, list) else 1
        if n:
            runs[event["task"]] = runs.get(event["task"], 0) + n
    return runs


def module_runs(result) -> int:
    return sum(module_runs_by_task(result).values())


def _sighups(rootsshd) -> int:
    return Path(rootsshd.log).read_text().count("Received SIGHUP")


def test_storage_server_validates_before_reload_and_retries_a_failed_reload(rootsshd, storage_root, workdir):
    """No handler that a failed run forgets: until sshd re-read the drop-in, every apply validates
    (sshd -t) and reloads; without systemd the reload is kill -HUP of sshd's pid file."""
    uid = uuid.uuid4().hex[:6]
    dropin = Path(rootsshd.dropin_dir) / f"offsite-{uid}.conf"
    marker = storage_root / ".sshd-reloaded"
    broken = workdir / "sshd_config.broken"
    broken.write_text(Path(rootsshd.config).read_text() + "NoSuchOption yes\n")
    inventory = rootsshd.inventory(workdir / "inventory")
    storage = {"storage_server_root": str(storage_root), "storage_server_sshd_config": str(dropin),
               "storage_server_sftp_group": f"obk-sftp-{uid}", "storage_server_manage_packages": False,
               "storage_server_sshd_main_config": rootsshd.config, "storage_server_sshd_pidfile": rootsshd.pidfile}
    task = "Validate the sshd configuration and reload sshd when the drop-in is not yet live"

    def apply(**overrides):
        return run_playbook([{"hosts": "target", "gather_facts": False, "vars": {**storage, **overrides},
                              "roles": ["offsite.backup.storage_server"]}], inventory=inventory, connection=None)

    try:
        hups = _sighups(rootsshd)
        failed = apply(storage_server_sshd_reload_command="echo 'no service manager here' >&2; exit 1")
        assert failed.rc != 0 and failed.status(task) == "failed", failed.output
        assert "no service manager here" in failed.result(task)["stderr"]
        assert dropin.exists() and not marker.exists()

        retried = apply()                                   # the default: kill -HUP "$(cat pidfile)"
        assert retried.rc == 0, retried.output
        assert retried.status(task) == "changed"
        _wait_for(lambda: _sighups(rootsshd) == hups + 1)
        assert marker.read_text().strip() == hashlib.sha1(dropin.read_bytes()).hexdigest()

        settled = apply()
        assert settled.rc == 0 and settled.stats["target"]["changed"] == 0, settled.output
        assert _sighups(rootsshd) == hups + 1

        # an invalid configuration is never reloaded, and the next valid apply still reloads
        regrouped = apply(storage_server_sftp_group=f"obk-sftq-{uid}", storage_server_sshd_main_config=str(broken))
        assert regrouped.rc != 0 and "NoSuchOption" in regrouped.result(task)["stderr"], regrouped.output
        fixed = apply(storage_server_sftp_group=f"obk-sftq-{uid}")
        assert fixed.rc == 0 and fixed.status(task) == "changed", fixed.output
        _wait_for(lambda: _sighups(rootsshd) == hups + 2)
        assert marker.read_text().strip() == hashlib.sha1(dropin.read_bytes()).hexdigest()
        assert rootsshd.ssh("root", rootsshd.private_key, "true").returncode == 0   # still serving
    finally:
        dropin.unlink(missing_ok=True)
        rootsshd.reload()
        for group in (f"obk-sftp-{uid}", f"obk-sftq-{uid}"):
            subprocess.run(["groupdel", group], capture_output=True, check=False)


def _wait_for(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)
