"""Client-side encryption end to end: real ansible-playbook runs of dump (age / gpg / passphrase)
-> upload (moto S3, a local disk) -> restore (streamed and through a work file), the restored
database or tree compared with the source; then every bad input (wrong key, a flipped byte, a
truncated artifact, a manifest whose checksum does not match, an unencrypted backup where
encryption is required, no key at all), each with a clear error and nothing in the target.
Last, a run whose every output (task results at -vvv, files written, ``ps`` while it runs) is
searched for the secrets it used."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.harness import pg
from tests.harness.ansible import run_playbook
from tests.harness.pg import leftover_databases
from tests.integration.helpers import engine_dump, local_repo, pg_source, pg_target, s3_repo, tree

pytestmark = pytest.mark.integration

DUMP = "offsite.backup.dump"
UPLOAD = "offsite.backup.upload"
RESTORE = "offsite.backup.restore"
AGE_MAGIC = b"age-encryption.org/v1\n"


def _uid() -> str:
    return uuid.uuid4().hex[:10]


def age_key(path: Path) -> tuple[str, str]:
    """A new age identity file (0600) at ``path``; returns (public key, secret key)."""
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    secret = [line for line in path.read_text().splitlines() if line.startswith("AGE-SECRET-KEY-")][0]
    public = subprocess.run(["age-keygen", "-y", str(path)], check=True, capture_output=True, text=True).stdout.strip()
    return public, secret


@pytest.fixture
def gpg_keyrings(tmp_path):
    """(public-only keyring, secret keyring, fingerprint): a key with a passphrase, like a team's."""
    secret_home, public_home = tmp_path / "gpg-secret", tmp_path / "gpg-public"
    for home in (secret_home, public_home):
        home.mkdir(mode=0o700)
    passphrase = f"gpg-key-pass-{_uid()}"
    gpg = ["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", passphrase]
    subprocess.run(gpg + ["--homedir", str(secret_home), "--quick-gen-key", "Backups <backups@example.org>",
                          "ed25519", "cert,sign", "never"], check=True, capture_output=True)
    listing = subprocess.run(["gpg", "--homedir", str(secret_home), "--with-colons", "--list-keys"],
                             check=True, capture_output=True, text=True).stdout
    fpr = [line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")][0]
    subprocess.run(gpg + ["--homedir", str(secret_home), "--quick-add-key", fpr, "cv25519", "encr", "never"],
                   check=True, capture_output=True)
    exported = subprocess.run(["gpg", "--homedir", str(secret_home), "--export", fpr], check=True,
                              capture_output=True).stdout
    subprocess.run(["gpg", "--batch", "--homedir", str(public_home), "--import"], input=exported, check=True,
                   capture_output=True)
    try:
        yield public_home, secret_home, fpr, passphrase
    finally:
        for home in (secret_home, public_home):  # the agents these keyrings started
            subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False,
                           capture_output=True)


def assert_ok(r, *tasks):
    assert r.rc == 0, r.output
    for t in tasks:
        assert r.status(t) in ("ok", "changed"), f"{t}: {r.status(t)}\n{r.output}"


@pytest.mark.s3
def test_age_dump_upload_restore(moto, bucket, sample_db, workdir, db_names):
    """age with two recipients (one from a file): the artifact is age ciphertext, the manifest
    records the scheme and public keys only; restores from S3 (streamed into the scratch
    database) and from a local disk (work file, pg_restore -j 2) equal the source."""
    pub1, secret1 = age_key(workdir / "ops.agekey")
    pub2, dummy = age_key(workdir / "offline.agekey")
    (workdir / "recipients.txt").write_text(f"# the offline key\n{pub2}\n\n")
    dest, disk = workdir / "copies", workdir / "offsite"
    disk.mkdir()
    repos = [s3_repo(moto, bucket, prefix="enc"), local_repo(disk)]
    streamed, worked = db_names("age_s3"), db_names("age_local")
    decrypt = {"identity_file": str(workdir / "ops.agekey")}
    tasks = [
        {"name": "dump", DUMP: {"name": "crm", "source": pg_source(sample_db), "dest": str(dest),
                                "encryption": {"recipients": [pub1],
                                               "recipients_file": str(workdir / "recipients.txt")}},
         "register": "dumped"},
        {"name": "upload", UPLOAD: {"backup": "{{ dumped.backup }}", "repositories": repos}},
        {"name": "restore s3", RESTORE: {"name": "crm", "repository": repos[0], "encryption": decrypt,
                                         "target": pg_target(streamed, jobs=1)}},
        {"name": "restore local", RESTORE: {"name": "crm", "repository": repos[1], "encryption": decrypt,
                                            "target": pg_target(worked, jobs=2)}},
    ]
    r = run_playbook(tasks)
    assert_ok(r, "dump", "upload", "restore s3", "restore local")
    backup = r.result("dump")["backup"]
    assert backup["path"].endswith(".dump.zst.age")
    assert backup["encryption"] == {"scheme": "age", "tool": "age", "recipients": sorted([pub1, pub2])}
    art = Path(backup["path"])
    assert art.read_bytes()[:len(AGE_MAGIC)] == AGE_MAGIC
    assert oct(art.stat().st_mode & 0o777) == "0o600"
    assert hashlib.sha256(art.read_bytes()).hexdigest() == backup["sha256"]  # the hash covers the ciphertext
    manifest = json.loads(Path(backup["manifest"]).read_text())
    assert manifest["encryption"] == backup["encryption"]
    assert secret1 not in Path(backup["manifest"]).read_text()
    assert any(c.startswith(shutil.which("age")) and "--encrypt" in c for c in r.result("dump")["executed_commands"])
    expected = pg.fingerprint(sample_db)
    assert pg.fingerprint(streamed) == expected
    assert pg.fingerprint(worked) == expected
    assert secret1 not in r.output


def test_gpg_public_keys_with_files(workdir, gpg_keyrings):
    """gpg: the dump side has only the public keyring; the restore side the secret key, unlocked
    by its passphrase; a tree of files comes back identical."""
    public_home, secret_home, fpr, key_pass = gpg_keyrings
    src = workdir / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n")
    (src / "sub" / "b.bin").write_bytes(os.urandom(300_000))
    restored = workdir / "restored"
    disk = workdir / "offsite"
    tasks = [
        {"name": "dump", DUMP: {"name": "files", "source": {"type": "files", "paths": [str(src)]},
                                "dest": str(disk), "encryption": {"gpg_recipients": ["backups@example.org"],
                                                                  "gpg_homedir": str(public_home)}},
         "register": "dumped"},
        {"name": "restore", RESTORE: {"name": "files", "repository": local_repo(disk),
                                      "encryption": {"gpg_homedir": str(secret_home), "passphrase": key_pass},
                                      "target": {"type": "files", "path": str(restored)}}},
    ]
    r = run_playbook(tasks)
    assert_ok(r, "dump", "restore")
    backup = r.result("dump")["backup"]
    assert backup["encryption"] == {"scheme": "gpg", "tool": "gpg", "recipients": [fpr]}
    assert backup["path"].endswith(".tar.zst.gpg")
    assert tree(restored / str(src).lstrip("/")) == tree(src)
    assert key_pass not in r.output


# --------------------------------------------------------------------------------------------
# bad input: each a clear error, the target never created


def _rewrite(manifest_path: Path, **changes):
    data = json.loads(manifest_path.read_text())
    data.update(changes)
    manifest_path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def test_bad_input_never_reaches_the_target(sample_db, workdir, db_names):
    """One encrypted backup per case in its own local repository, damaged on purpose; every
    restore fails with its error kind and a message saying what is wrong, and neither the
    target nor a scratch database is left behind."""
    pub, dummy = age_key(workdir / "right.agekey")
    age_key(workdir / "wrong.agekey")
    cases = ["wrong_key", "flipped", "flipped_and_rehashed", "truncated", "manifest_checksum",
             "unencrypted", "no_identity"]
    dest = {c: workdir / c for c in cases}
    # the backups to damage (the dump module's own run: the tests above)
    backups = {c: engine_dump("crm", pg_source(sample_db), dest[c],
                              **({} if c == "unencrypted" else {"encryption": {"recipients": [pub]}}))
               for c in cases}

    def damage(case, fn):
        art = Path(backups[case]["path"])
        blob = bytearray(art.read_bytes())
        art.write_bytes(bytes(fn(blob)))
        return art

    def flip(blob):
        blob[len(blob) // 2] ^= 0x01
        return blob

    damage("flipped", flip)
    art = damage("flipped_and_rehashed", flip)  # an attacker who also rewrote the manifest
    _rewrite(Path(backups["flipped_and_rehashed"]["manifest"]), sha256=hashlib.sha256(art.read_bytes()).hexdigest())
    art = damage("truncated", lambda blob: blob[:len(blob) - 4000])
    _rewrite(Path(backups["truncated"]["manifest"]), size=art.stat().st_size,
             sha256=hashlib.sha256(art.read_bytes()).hexdigest())
    _rewrite(Path(backups["manifest_checksum"]["manifest"]), sha256="0" * 64)

    keys = {c: {"identity_file": str(workdir / "right.agekey")} for c in cases}
    keys["wrong_key"] = {"identity_file": str(workdir / "wrong.agekey")}
    keys["no_identity"] = None
    targets = {c: db_names(c[:12]) for c in cases}
    restores = []
    for c in cases:
        args = {"name": "crm", "repository": local_repo(dest[c]), "target": pg_target(targets[c], jobs=1)}
        if keys[c]:
            args["encryption"] = keys[c]
        restores.append({"name": f"restore {c}", RESTORE: args, "ignore_errors": True})
    r = run_playbook(restores)
    expected = {
        "wrong_key": ("config", "the key given does not open it"),
        "flipped": ("integrity", "does not match its manifest checksum"),
        "flipped_and_rehashed": ("integrity", "failed to decrypt"),
        "truncated": ("integrity", "failed to decrypt"),
        "manifest_checksum": ("integrity", "does not match its manifest checksum"),
        "unencrypted": ("integrity", "is not encrypted, but encryption is required"),
        "no_identity": ("config", "no identity_file was given"),
    }
    for c, (kind, text) in expected.items():
        result = r.result(f"restore {c}")
        assert r.status(f"restore {c}") == "failed", (c, result)
        assert result["error"] == kind, (c, result["msg"])
        assert text in result["msg"], (c, result["msg"])
        assert "Traceback" not in result["msg"] and "pg_restore" not in result["msg"].split(";")[0], (c, result["msg"])
        assert not pg.database_exists(targets[c]), c
        assert leftover_databases(targets[c]) == [], c


# --------------------------------------------------------------------------------------------
# secrets


class _PsWatcher(threading.Thread):
    """Samples every process's argv and environment-free command line while a run goes on."""

    def __init__(self):
        super().__init__(daemon=True)
        self.seen = set()
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            out = subprocess.run(["ps", "-eww", "-o", "args="], capture_output=True, text=True, check=False).stdout
            self.seen.update(out.splitlines())
            time.sleep(0.05)


def test_secrets_never_in_outputs(sample_db, workdir, db_names):
    """A passphrase-encrypted cycle at -vvv: the passphrase is not in the task output, results,
    executed_commands, any file written (0600 or not), nor in ``ps`` while it runs."""
    passphrase = f"pass-{_uid()}-phrase"
    dest, disk = workdir / "copies", workdir / "offsite"
    disk.mkdir()
    target = db_names("secret")
    tasks = [
        {"name": "dump", DUMP: {"name": "crm", "source": pg_source(sample_db), "dest": str(dest),
                                "encryption": {"passphrase": "{{ backup_passphrase }}"}}, "register": "dumped"},
        {"name": "upload", UPLOAD: {"backup": "{{ dumped.backup }}", "repository": local_repo(disk)}},
        {"name": "restore", RESTORE: {"name": "crm", "repository": local_repo(disk),
                                      "encryption": {"passphrase": "{{ backup_passphrase }}"},
                                      "target": pg_target(target, jobs=1)}},
        {"name": "wrong passphrase", RESTORE: {"name": "crm", "repository": local_repo(disk),
                                               "encryption": {"passphrase": "{{ backup_passphrase }}-not"},
                                               "target": pg_target(target + "_x", jobs=1)},
         "ignore_errors": True},
    ]
    watcher = _PsWatcher()
    watcher.start()
    try:
        r = run_playbook(tasks, extravars={"backup_passphrase": passphrase}, verbosity=3)
    finally:
        watcher.stop.set()
        watcher.join()
    assert_ok(r, "dump", "upload", "restore")
    assert r.result("wrong passphrase")["error"] == "config"
    assert r.result("dump")["backup"]["encryption"] == {"scheme": "passphrase", "tool": "gpg", "cipher": "AES256"}
    assert pg.fingerprint(target) == pg.fingerprint(sample_db)
    assert not pg.database_exists(target + "_x")
    assert len(watcher.seen) > 10
    assert passphrase not in r.output
    assert passphrase not in json.dumps(r.tasks)
    assert not [line for line in watcher.seen if passphrase in line]
    assert any("--passphrase-fd" in c for c in r.result("dump")["executed_commands"])
    for root in (dest, disk):
        for path in root.rglob("*"):
            if path.is_file():
                assert passphrase.encode() not in path.read_bytes(), path
    for path in (dest / "crm").iterdir():  # what dump writes: owner-only
        if path.is_file() and not path.name.startswith("."):
            assert path.stat().st_mode & 0o077 == 0, path


# --------------------------------------------------------------------------------------------
# the DR drill playbook takes the private key


def test_dr_drill_restores_an_encrypted_backup(sample_db, workdir):
    """playbooks/dr_drill.yml with offsite_dr_encryption: the age-encrypted backup is restored
    into the scratch database and checked; without the key the drill fails, naming it."""
    from tests.harness.ansible import REPO_ROOT
    pub, secret = age_key(workdir / "dr.agekey")
    disk = workdir / "offsite"
    engine_dump("crm", pg_source(sample_db), disk, encryption={"recipients": [pub]})  # the backup to drill
    users = pg.run_sql(sample_db, "SELECT count(*) FROM public.users").strip()
    sets = [{"name": "crm", "repositories": [local_repo(disk)],
             "target": {"type": "postgresql", "host": "127.0.0.1", "port": 5432, "user": "postgres"},
             "queries": [{"name": "users restored", "sql": "SELECT count(*) FROM public.users", "expect": users}]}]
    drill = str(REPO_ROOT / "playbooks" / "dr_drill.yml")
    base = {"offsite_dr_sets": sets, "offsite_dr_mark_proven": False}
    ok = run_playbook(drill, extravars=dict(base, offsite_dr_report_dir=str(workdir / "r1"),
                                            offsite_dr_encryption={"identity_file": str(workdir / "dr.agekey")}))
    assert ok.rc == 0, ok.output
    report = json.loads(sorted((workdir / "r1").glob("drill-*.json"))[-1].read_text())
    assert report["success"] is True and [c["ok"] for c in report["sets"][0]["checks"]] == [True]
    assert secret not in ok.output
    keyless = run_playbook(drill, extravars=dict(base, offsite_dr_report_dir=str(workdir / "r2")))
    assert keyless.rc != 0
    report = json.loads(sorted((workdir / "r2").glob("drill-*.json"))[-1].read_text())
    assert report["success"] is False
    assert "no identity_file was given" in json.dumps(report), report


# --------------------------------------------------------------------------------------------
# the cron runner's job file takes the public keys


def test_runner_job_encrypts_with_age(sample_db, workdir, db_names):
    """``offsite-backup run`` with ``encryption.recipients`` in the job file: the local copy and
    the offsite copy are age ciphertext, and restore with the identity gives back the source."""
    import yaml
    from tests.harness import COLLECTIONS_PATH, VENV_BIN
    pub, secret = age_key(workdir / "ops.agekey")
    offsite = workdir / "offsite"
    offsite.mkdir()
    job = {"name": "encjob", "local": {"path": str(workdir / "local")},
           "sources": [{"name": "crm_db", "source": pg_source(sample_db)}],
           "repositories": [local_repo(offsite)], "encryption": {"recipients": [pub]},
           "log": {"path": str(workdir / "encjob.log")}}
    path = workdir / "encjob.yml"
    path.write_text(yaml.safe_dump(job))
    env = {"PATH": "/usr/bin:/bin", "HOME": "/root", "LANG": "C", "PYTHONPATH": str(COLLECTIONS_PATH)}
    run = subprocess.run([str(VENV_BIN / "python"), "-m", "ansible_collections.offsite.backup.plugins.module_utils._engine.cli",
                          "run", str(path)], env=env, text=True, stdin=subprocess.DEVNULL, capture_output=True,
                         timeout=300, check=False)
    assert run.returncode == 0, run.stderr + run.stdout
    artifacts = list((offsite / "crm_db").glob("*.dump.zst.age"))
    assert len(artifacts) == 1 and artifacts[0].read_bytes()[:len(AGE_MAGIC)] == AGE_MAGIC
    manifest = json.loads(artifacts[0].with_name(artifacts[0].name.split(".")[0] + ".manifest.json").read_text())
    assert manifest["encryption"]["recipients"] == [pub]
    target = db_names("runner")
    r = run_playbook([{"name": "restore", RESTORE: {"name": "crm_db", "repository": local_repo(offsite),
                                                    "encryption": {"identity_file": str(workdir / "ops.agekey")},
                                                    "target": pg_target(target, jobs=1)}}])
    assert_ok(r, "restore")
    assert pg.fingerprint(target) == pg.fingerprint(sample_db)
    assert secret not in (workdir / "encjob.log").read_text()

    # `offsite-backup restore` of the same job decrypts with --identity-file; without an identity
    # it fails before anything is created
    cli = [str(VENV_BIN / "python"), "-m", "ansible_collections.offsite.backup.plugins.module_utils._engine.cli",
           "restore", str(path), "--set", "crm_db", "--from", "0"]
    refused = db_names("cli")
    bare = subprocess.run(cli + ["--database", refused], env=env, text=True, stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=300, check=False)
    assert bare.returncode != 0 and "identity_file" in bare.stderr, bare.stderr + bare.stdout
    assert not pg.database_exists(refused)
    by_cli = db_names("cli")
    restored = subprocess.run(cli + ["--database", by_cli, "--identity-file", str(workdir / "ops.agekey")], env=env,
                              text=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=300, check=False)
    assert restored.returncode == 0, restored.stderr + restored.stdout
    assert pg.fingerprint(by_cli) == pg.fingerprint(sample_db)
    assert secret not in restored.stdout + restored.stderr
