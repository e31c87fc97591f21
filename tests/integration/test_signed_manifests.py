"""Signed manifests end to end: real ansible-playbook runs sign on dump, upload to moto S3, a
local disk and SFTP; then an attacker holding the repositories' write keys replaces an artifact
and rewrites its manifest's sha256 and size (keeping the old signature), and adds a newer
unsigned backup. With trusted keys, restore and verify refuse with ``error: authenticity`` and
the targets stay absent / unchanged; the untouched backup restores; retention keeps the real
newest and leaves the forgeries alone; the scheduled runner signs too."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from tests.harness import pg
from tests.harness.ansible import run_playbook
from tests.integration.helpers import cli, engine_dump, engine_upload, local_repo, pg_source, pg_target, s3_repo, sftp_repo

pytestmark = pytest.mark.integration

DUMP = "offsite.backup.dump"
UPLOAD = "offsite.backup.upload"
RESTORE = "offsite.backup.restore"
VERIFY = "offsite.backup.verify"
INFO = "offsite.backup.backup_info"
RETENTION = "offsite.backup.retention"


def _uid() -> str:
    return uuid.uuid4().hex[:10]


def ssh_key(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "backup@srv1", "-f", str(path)],
                   check=True, capture_output=True)
    return Path(f"{path}.pub").read_text().strip()


@pytest.fixture
def db_names():
    made = []

    def make(label: str) -> str:
        name = f"offsite_sig_{label}_{_uid()}"
        made.append(name)
        return name

    try:
        yield made, make
    finally:
        for name in made:
            pg.drop_database(name)


@pytest.fixture
def sftp_dir(sshd):
    path = sshd.make_dir(f"backups/sig-{_uid()}")
    try:
        yield str(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


def failed_with(r, task, kind="authenticity"):
    result = r.result(task)
    assert r.status(task) == "failed", (task, result)
    assert result["error"] == kind, (task, result.get("msg"))
    return result["msg"]


class Attacker:
    """Holds the repositories' write keys (here: the files and the S3 client), not the signing key."""

    def __init__(self, moto, bucket, disk: Path, sftp_path: Path):
        self.s3 = moto.client()
        self.bucket = bucket
        self.dirs = [disk, sftp_path]

    def replace(self, backup_id: str, extension: str, evil_backup: dict):
        """Swap the artifact of ``backup_id`` for the attacker's own dump everywhere; make the
        manifest match it (checksum, size, the source's row counts), keeping id and signature."""
        art, man = f"crm/{backup_id}.{extension}", f"crm/{backup_id}.manifest.json"
        evil = Path(evil_backup["path"]).read_bytes()
        evil_manifest = json.loads(Path(evil_backup["manifest"]).read_text())
        assert hashlib.sha256(evil).hexdigest() == evil_manifest["sha256"]

        def forge(data: bytes) -> bytes:
            manifest = json.loads(data)
            manifest.update((k, evil_manifest[k]) for k in ("sha256", "size", "raw_size", "source"))
            return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()

        obj = self.s3.get_object(Bucket=self.bucket, Key=f"sig/{man}")["Body"].read()
        self.s3.put_object(Bucket=self.bucket, Key=f"sig/{art}", Body=evil)
        self.s3.put_object(Bucket=self.bucket, Key=f"sig/{man}", Body=forge(obj))
        for root in self.dirs:
            (root / art).write_bytes(evil)
            (root / man).write_bytes(forge((root / man).read_bytes()))


@pytest.mark.s3
def test_forged_and_unsigned_backups_are_refused(moto, sshd, bucket, sample_db, workdir, db_names, sftp_dir):
    made, db = db_names
    server_pub = ssh_key(workdir / "signing_key")
    other_pub = ssh_key(workdir / "other_key")
    disk = workdir / "offsite"
    disk.mkdir()
    repos = [s3_repo(moto, bucket, prefix="sig"), local_repo(disk), sftp_repo(sshd, sftp_dir)]
    evil_db = db("evil")
    pg.create_database(evil_db)
    pg.run_sql(evil_db, "CREATE TABLE pwned AS SELECT 1 AS owned;")
    signing = {"key_file": str(workdir / "signing_key")}
    dumps = [
        {"name": "dump good", DUMP: {"name": "crm", "source": pg_source(sample_db), "dest": str(workdir / "copies"),
                                     "signing": signing}, "register": "good"},
        {"name": "upload good", UPLOAD: {"backup": "{{ good.backup }}", "repositories": repos}},
    ]
    r = run_playbook(dumps)
    assert r.rc == 0, r.output
    good = r.result("dump good")["backup"]
    # the rest of the starting state, by the engine in this process (dump and upload: above)
    victim = engine_dump("crm", pg_source(sample_db), workdir / "copies", signing=signing)  # newer than good
    engine_upload(victim, repos)
    # the attacker's own dump: made with the same tool, but without the server's key
    evil = engine_dump("crm", pg_source(evil_db), workdir / "evil")
    engine_dump("unsigned", pg_source(sample_db), disk)
    assert good["signed_by"] == " ".join(server_pub.split()[:2])
    stored = json.loads((disk / "crm" / f"{good['id']}.manifest.json").read_text())
    assert stored["signature"]["public_key"] == good["signed_by"]
    s3_manifest = moto.client().get_object(Bucket=bucket, Key=f"sig/crm/{good['id']}.manifest.json")["Body"].read()
    assert json.loads(s3_manifest)["signature"] == stored["signature"]  # travels with the manifest
    assert json.loads(Path(sftp_dir, "crm", f"{good['id']}.manifest.json").read_text())["signature"] \
        == stored["signature"]
    assert "PRIVATE KEY" not in r.output and all("PRIVATE" not in c for c in r.result("dump good")["executed_commands"])

    Attacker(moto, bucket, disk, Path(sftp_dir)).replace(victim["id"], victim["path"].split(".", 1)[1], evil)

    trusted = {"trusted_keys": [server_pub]}
    kept = db("kept")
    pg.create_database(kept)
    pg.run_sql(kept, "CREATE TABLE precious AS SELECT 42 AS answer;")
    before_kept = pg.fingerprint(kept)
    fresh = {label: db(label) for label in ("s3", "local", "sftp", "good", "unsigned", "wrongkey", "nokeys")}
    checks = [
        *[{"name": f"restore forged {label}", RESTORE: {"name": "crm", "repository": repo, "signing": trusted,
                                                        "target": pg_target(fresh[label], jobs=1)},
           "ignore_errors": True} for label, repo in zip(("s3", "local", "sftp"), repos)],
        {"name": "restore forged over existing", RESTORE: {
            "name": "crm", "repository": repos[0], "signing": trusted, "target": pg_target(kept, mode="replace")},
         "ignore_errors": True},
        {"name": "verify", VERIFY: {"name": "crm", "repositories": repos, "signing": trusted},
         "ignore_errors": True},
        {"name": "info", INFO: {"name": "crm", "repository": repos[0], "signing": trusted}},
        {"name": "retention", RETENTION: {"name": "crm", "repository": repos[1], "policy": {"keep_last": 1},
                                          "signing": {"trusted_keys_file": str(workdir / "signing_key.pub")}}},
        {"name": "restore good", RESTORE: {"name": "crm", "repository": repos[0], "backup": good["id"],
                                           "signing": trusted, "target": pg_target(fresh["good"], jobs=1)}},
        {"name": "restore unsigned", RESTORE: {"name": "unsigned", "repository": repos[1], "signing": trusted,
                                               "target": pg_target(fresh["unsigned"], jobs=1)},
         "ignore_errors": True},
        {"name": "restore wrong key", RESTORE: {"name": "crm", "repository": repos[2], "backup": good["id"],
                                                "signing": {"trusted_keys": [other_pub]},
                                                "target": pg_target(fresh["wrongkey"], jobs=1)},
         "ignore_errors": True},
        # without trusted keys nothing is checked (as before signing existed): the forgery loads
        {"name": "restore without keys", RESTORE: {"name": "crm", "repository": repos[1],
                                                   "target": pg_target(fresh["nokeys"], jobs=1)}},
    ]
    r = run_playbook(checks)
    for label in ("s3", "local", "sftp"):
        msg = failed_with(r, f"restore forged {label}")
        assert victim["id"] in msg and "does not verify" in msg, msg
    failed_with(r, "restore forged over existing")
    for label in ("s3", "local", "sftp", "unsigned", "wrongkey"):
        assert not pg.database_exists(fresh[label]), label
    assert pg.fingerprint(kept) == before_kept
    for name in list(fresh.values()) + [kept]:  # no scratch database either
        assert pg.run_sql("postgres", "SELECT datname FROM pg_database WHERE datname LIKE "
                          + pg.quote_literal(name + "\\_%")) == "", name

    verified = r.result("verify")
    assert failed_with(r, "verify") and len(verified["failures"]) == 3  # the forgery, on each repository
    assert all(victim["id"] in f for f in verified["failures"])
    listed = dict((b["id"], b) for b in r.result("info")["backups"])
    assert listed[good["id"]]["authentic"] is True and listed[victim["id"]]["authentic"] is False
    retention = r.result("retention")
    assert retention["keep"] == [good["id"]] and retention["removed"] == []  # the forgery is never "newest"
    assert [u["id"] for u in retention["unauthentic"]] == [victim["id"]]
    assert (disk / "crm" / f"{victim['id']}.manifest.json").exists()  # left for the operator to examine

    assert r.status("restore good") == "changed", r.output
    assert pg.fingerprint(fresh["good"]) == pg.fingerprint(sample_db)
    assert "not signed" in failed_with(r, "restore unsigned")
    assert "does not verify" in failed_with(r, "restore wrong key")
    assert r.status("restore without keys") == "changed", r.result("restore without keys").get("msg")
    assert pg.run_sql(fresh["nokeys"], "SELECT owned FROM pwned").strip() == "1"


@pytest.mark.s3
def test_scheduled_runner_signs_and_checks(moto, bucket, sample_db, workdir, db_names):
    """``offsite-backup run`` signs with the job's key; ``list`` and ``restore`` check the job's
    trusted keys; a forged manifest is marked and refused."""
    made, db = db_names
    server_pub = ssh_key(workdir / "signing_key")
    name = f"sig{_uid()[:6]}"
    job = {
        "name": name,
        "local": {"path": str(workdir / "local")},
        "sources": [{"name": "crm_db", "source": pg_source(sample_db)}],
        "repositories": [s3_repo(moto, bucket, prefix="job")],
        "retention": {"keep_last": 3},
        "signing": {"key_file": str(workdir / "signing_key"), "trusted_keys": [server_pub]},
        "log": {"path": str(workdir / "log" / f"{name}.log")},
    }
    job_path = workdir / f"{name}.yml"
    job_path.write_text(yaml.safe_dump(job))
    done = cli("run", str(job_path), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    keys = [k["Key"] for k in moto.client().list_objects_v2(Bucket=bucket, Prefix="job/")["Contents"]]
    manifest_key = [k for k in keys if k.endswith(".manifest.json")][0]
    manifest = json.loads(moto.client().get_object(Bucket=bucket, Key=manifest_key)["Body"].read())
    assert manifest["signature"]["public_key"] == " ".join(server_pub.split()[:2])
    local_manifest = json.loads(next((workdir / "local" / "crm_db").glob("*.manifest.json")).read_text())
    assert local_manifest["signature"] == manifest["signature"]

    target = db("job")
    restored = cli("restore", str(job_path), "--set", "crm_db", "--database", target)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert pg.fingerprint(target) == pg.fingerprint(sample_db)

    manifest["raw_size"] += 1  # any change: the signature no longer covers it
    moto.client().put_object(Bucket=bucket, Key=manifest_key, Body=json.dumps(manifest).encode())
    listed = cli("list", str(job_path))
    assert "UNAUTHENTIC" in listed.stdout, listed.stdout
    second = db("job2")
    refused = cli("restore", str(job_path), "--set", "crm_db", "--database", second)
    assert refused.returncode != 0 and "authenticity" in refused.stdout + refused.stderr, refused.stderr
    assert not pg.database_exists(second)


def test_signature_travels_through_restic_and_rsync(sshd, workdir, sftp_dir):
    """The signature is part of the manifest, so restic and rsync repositories store it through
    their ordinary manifest write; a snapshot (rsync tree) is signed too."""
    ssh_key(workdir / "signing_key")
    server_pub = (workdir / "signing_key.pub").read_text().strip()
    other_pub = ssh_key(workdir / "other_key")
    src = workdir / "src"
    src.mkdir()
    (src / "a.txt").write_text("alpha\n")
    signing = {"key_file": str(workdir / "signing_key")}
    restic = {"type": "restic", "restic_repository": str(workdir / "restic-repo"), "restic_password": "{{ pw }}",
              "restic_init": True}
    rsync = {"type": "rsync", "host": sshd.host, "port": sshd.port, "user": sshd.user,
             "private_key": sshd.private_key, "known_hosts": sshd.known_hosts, "path": sftp_dir}
    trusted, wrong = {"trusted_keys": [server_pub]}, {"trusted_keys": [other_pub]}
    tasks = [
        {"name": "dump", DUMP: {"name": "files", "source": {"type": "files", "paths": [str(src)]},
                                "dest": str(workdir / "copies"), "signing": signing}, "register": "dumped"},
        {"name": "upload", UPLOAD: {"backup": "{{ dumped.backup }}", "repositories": [restic, rsync]}},
        {"name": "snapshot", "offsite.backup.snapshot": {"name": "tree", "source": {"type": "files", "paths": [str(src)]},
                                                         "repository": rsync, "signing": signing}},
    ]
    for label, repo in (("restic", restic), ("rsync", rsync)):
        tasks += [
            {"name": f"restore {label}", RESTORE: {"name": "files", "repository": repo, "signing": trusted,
                                                   "target": {"type": "files", "path": str(workdir / label)}}},
            {"name": f"wrong key {label}", RESTORE: {"name": "files", "repository": repo, "signing": wrong,
                                                     "target": {"type": "files", "path": str(workdir / f"no_{label}")}},
             "ignore_errors": True},
        ]
    tasks += [
        {"name": "restore snapshot", RESTORE: {"name": "tree", "repository": rsync, "signing": trusted,
                                               "target": {"type": "files", "path": str(workdir / "tree")}}},
        {"name": "verify", VERIFY: {"name": "files", "repositories": [restic, rsync], "signing": trusted}},
    ]
    r = run_playbook(tasks, extravars={"pw": "restic-" + _uid()})
    for task in ("dump", "upload", "snapshot", "restore restic", "restore rsync", "restore snapshot", "verify"):
        assert r.status(task) in ("ok", "changed"), (task, r.result(task).get("msg"))
    for label in ("restic", "rsync"):
        assert (workdir / label / str(src).lstrip("/") / "a.txt").read_text() == "alpha\n"
        assert "does not verify" in failed_with(r, f"wrong key {label}")
        assert not (workdir / f"no_{label}").exists()
    assert (workdir / "tree" / str(src).lstrip("/") / "a.txt").read_text() == "alpha\n"
    assert r.result("snapshot")["backup"]["signed_by"] == " ".join(server_pub.split()[:2])


def test_dr_drill_checks_signatures(sample_db, workdir):
    """playbooks/dr_drill.yml with offsite_dr_signing: the signed backup is drilled; trusting
    another key, the drill fails naming the signature (dr_rebuild.yml passes it the same way)."""
    from tests.harness.ansible import REPO_ROOT
    ssh_key(workdir / "signing_key")
    server_pub = (workdir / "signing_key.pub").read_text().strip()
    other_pub = ssh_key(workdir / "other_key")
    disk = workdir / "offsite"
    engine_dump("crm", pg_source(sample_db), disk, signing={"key_file": str(workdir / "signing_key")})  # to drill
    sets = [{"name": "crm", "repositories": [local_repo(disk)],
             "target": {"type": "postgresql", "host": "127.0.0.1", "port": 5432, "user": "postgres"}}]
    drill = str(REPO_ROOT / "playbooks" / "dr_drill.yml")
    base = {"offsite_dr_sets": sets, "offsite_dr_mark_proven": False}
    ok = run_playbook(drill, extravars=dict(base, offsite_dr_report_dir=str(workdir / "r1"),
                                            offsite_dr_signing={"trusted_keys": [server_pub]}))
    assert ok.rc == 0, ok.output
    assert json.loads(sorted((workdir / "r1").glob("drill-*.json"))[-1].read_text())["success"] is True
    refused = run_playbook(drill, extravars=dict(base, offsite_dr_report_dir=str(workdir / "r2"),
                                                 offsite_dr_signing={"trusted_keys": [other_pub]}))
    assert refused.rc != 0
    report = json.loads(sorted((workdir / "r2").glob("drill-*.json"))[-1].read_text())
    assert report["success"] is False and "does not verify with any trusted key" in json.dumps(report), report
