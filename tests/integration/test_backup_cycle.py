"""The backup cycle end to end: real ansible-playbook runs of the collection's modules against
real services on loopback (PostgreSQL on 127.0.0.1:5432, moto S3, OpenSSH sshd), checked by
looking at the services directly (boto3 head_object, the sshd user's home, pg fingerprints).

Bad input lives in test_failures.py; this file is about what works, check mode and idempotence.
"""

from __future__ import annotations

import calendar
import gzip
import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.harness import pg
from tests.harness.ansible import run_playbook
from tests.harness.pg import leftover_databases
from tests.integration.helpers import (engine_dump, engine_upload, local_repo, pg_source, pg_target, s3_exists, s3_head, s3_keys,
                                       s3_repo, sftp_repo, storagebox_repo, tree)

pytestmark = pytest.mark.integration

DUMP = "offsite.backup.dump"
UPLOAD = "offsite.backup.upload"
INFO = "offsite.backup.backup_info"
RETENTION = "offsite.backup.retention"
RESTORE = "offsite.backup.restore"
STREAMED = ("s3", "box")


def program_of(command: str) -> str:
    """The program an executed command runs, past the ``stdbuf -i/-o N`` that runs a tool
    reading or writing our pipes block-buffered (``commands.block_buffered``)."""
    from ansible_collections.offsite.backup.plugins.module_utils._engine import commands
    return commands._program(command.split())


def _uid() -> str:
    return uuid.uuid4().hex[:10]


def play(tasks: list, **extra) -> dict:
    p = {"name": "offsite cycle", "hosts": "localhost", "gather_facts": False, "tasks": tasks}
    p.update(extra)
    return p


def assert_ok(r, *tasks):
    assert r.rc == 0, r.output
    assert not r.failed_tasks, r.output
    for t in tasks:
        assert r.status(t) in ("ok", "changed"), f"{t}: {r.status(t)}\n{r.output}"


@pytest.fixture
def sftp_dirs(sshd):
    """A factory of fresh directories below the sshd user's home, owned by the login user;
    returns the path relative to the home (what a Storage Box expects); removed after the test."""
    made = []

    def make(prefix: str) -> str:
        rel = f"backups/{prefix}-{_uid()}"
        made.append(sshd.make_dir(rel))
        return rel

    try:
        yield make
    finally:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)


def dump_task(name, source, dest, register="dumped", task="dump", **extra) -> dict:
    args = {"name": name, "source": source, "dest": str(dest)}
    args.update(extra)
    return {"name": task, DUMP: args, "register": register}


# --------------------------------------------------------------------------------------------
# 1. the full cycle


@pytest.mark.s3
@pytest.mark.sftp
def test_full_cycle_every_repository_type(moto, sshd, bucket, sample_db, workdir, db_names, sftp_dirs):
    """dump (zstd, custom) twice -> upload to s3 + sftp + Storage Box + local -> backup_info ->
    retention (keep_last 1 removes the older one everywhere) -> restore from each into a new
    database, equal to the source as it was at the second dump."""
    name = "crm"
    dest = workdir / "local-copies"
    offsite_disk = workdir / "offsite-disk"
    offsite_disk.mkdir()
    sftp_dir = os.path.join(sshd.home, sftp_dirs("cycle"))        # absolute path, normal port
    box_rel = sftp_dirs("storagebox")                                 # relative path, SFTP-only port
    order = ("s3", "sftp", "box", "local")
    repos = {
        "s3": s3_repo(moto, bucket, prefix="prod"),
        "sftp": sftp_repo(sshd, sftp_dir),
        "box": storagebox_repo(sshd, box_rel),
        "local": local_repo(offsite_disk),
    }
    roots = {"sftp": Path(sftp_dir), "box": Path(sshd.home) / box_rel, "local": offsite_disk}
    targets = {k: db_names(k) for k in repos}
    change = "UPDATE crm.companies SET notes = 'changed between the two dumps' WHERE id = 2"

    def per_repo(label, module, args=lambda k: {}):
        # the s3 repository (and the set name) come from module_defaults: the action group
        return [{"name": f"{label} {k}", module: dict(args(k), **({} if k == "s3" else {"repository": repos[k]}))}
                for k in order]

    tasks = [
        {"name": "dump 1", DUMP: {"source": pg_source(sample_db), "dest": str(dest), "compression": "zstd",
                                  "tags": ["nightly"]}, "register": "first"},
        {"name": "change the source", "ansible.builtin.command": {
            "argv": ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres",
                     "-d", sample_db, "-c", change]}},
        {"name": "dump 2", DUMP: {"source": pg_source(sample_db), "dest": str(dest), "compression": "zstd",
                                  "tags": ["nightly"]}, "register": "second"},
        {"name": "upload 1", UPLOAD: {"backup": "{{ first.backup }}", "repositories": [repos[k] for k in order]}},
        {"name": "upload 2", UPLOAD: {"backup": "{{ second.backup.path }}",
                                      "repositories": [repos[k] for k in order]}},
        *per_repo("info", INFO),
        *per_repo("retention", RETENTION, lambda k: {"policy": {"keep_last": 1}}),
        # s3 and the Storage Box stream into the scratch database (jobs 1); the others go
        # through a verified work file and pg_restore -j 2
        *per_repo("restore", RESTORE, lambda k: {"target": pg_target(targets[k], jobs=1 if k in STREAMED else 2)}),
    ]
    r = run_playbook([play(tasks, module_defaults={"group/offsite.backup.all": {
        "name": name, "repository": repos["s3"]}})])
    assert_ok(r, *[t["name"] for t in tasks])
    source_fp = pg.fingerprint(sample_db)

    # dump: zstd custom-format artifacts with their manifests, locally
    old, backup = r.result("dump 1")["backup"], r.result("dump 2")["backup"]
    assert r.tasks["dump 2"]["changed"] and old["id"] < backup["id"]
    assert backup["name"] == name and backup["id"].startswith(f"{name}_")
    assert backup["format"] == "custom" and backup["compression"] == "zstd"
    assert backup["path"] == str(dest / name / f"{backup['id']}.dump.zst")
    art = Path(backup["path"])
    assert art.is_file() and art.stat().st_size == backup["size"]
    assert art.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"  # zstd frame magic
    manifest = json.loads(Path(backup["manifest"]).read_text())
    assert manifest["sha256"] == backup["sha256"] and manifest["size"] == backup["size"]
    assert manifest["tags"] == ["nightly"] and manifest["compression"] == "zstd"
    assert manifest["source"]["type"] == "postgresql" and manifest["source"]["server_version"]
    dump_cmds = r.result("dump 2")["executed_commands"]
    assert any("pg_dump" in c and "--format=custom" in c and "--compress=0" in c for c in dump_cmds), dump_cmds

    # upload: every repository got artifact + manifest, proven by looking at it directly
    for task in ("upload 1", "upload 2"):
        assert r.tasks[task]["changed"]
        assert [x["status"] for x in r.result(task)["repositories"]] == ["uploaded"] * 4, r.result(task)

    # backup_info (before retention): both backups, the second one latest, everywhere
    for k in order:
        info = r.result(f"info {k}")
        assert [b["id"] for b in info["backups"]] == [backup["id"], old["id"]], (k, info)
        latest = info["latest"]
        assert latest["id"] == backup["id"] and latest["complete"] is True and latest["legacy"] is False
        assert latest["sha256"] == backup["sha256"] and latest["size"] == backup["size"]
        assert latest["tags"] == ["nightly"] and info["count"] == 2
        assert not r.tasks[f"info {k}"]["changed"]

    # retention keep_last 1: the older backup is gone from every repository, the newest stays
    for k in order:
        ret = r.result(f"retention {k}")
        assert r.tasks[f"retention {k}"]["changed"] is True
        assert ret["keep"] == [backup["id"]] and ret["removed"] == [old["id"]], (k, ret)
    art_key = f"{name}/{backup['id']}.dump.zst"
    man_key = f"{name}/{backup['id']}.manifest.json"
    assert s3_keys(moto, bucket) == [f"prod/{art_key}", f"prod/{man_key}"]
    head = s3_head(moto, bucket, f"prod/{art_key}")
    assert head["ContentLength"] == backup["size"] and head["Metadata"].get("sha256") == backup["sha256"]
    for k, root in roots.items():
        assert sorted(p.name for p in (root / name).iterdir()) == sorted(
            [f"{backup['id']}.dump.zst", f"{backup['id']}.manifest.json"]), k  # no partials either
        assert (root / art_key).read_bytes() == art.read_bytes(), k
        assert json.loads((root / man_key).read_text()) == manifest, k

    # restore from each repository type into its own new database: equal to the source
    for k in order:
        res = r.result(f"restore {k}")
        assert res["status"] == "restored" and res["backup"]["id"] == backup["id"], (k, res)
        # every table's rows proven against the manifest before the swap
        tables = len(manifest["source"]["counts"]["tables"])
        assert res["restored"] == {"database": targets[k], "replaced": False, "verified_tables": tables}, (k, res)
        restores = [c for c in res["executed_commands"] if program_of(c).endswith("pg_restore")]
        if k in STREAMED:       # one job: one pg_restore reading the download as it streams
            assert len(restores) == 1 and "-j 2" not in restores[0], (k, restores)
        else:                   # two jobs: loaded while downloading (pre-data, data), then -j 2 for the rest
            assert "--section=pre-data" in restores[0], (k, restores)
            assert "-j 2 --section=data --section=post-data" in restores[-1], (k, restores)
        assert pg.fingerprint(targets[k]) == source_fp, k
        assert leftover_databases(targets[k]) == [], k
    assert pg.run_sql(targets["box"], "SELECT notes FROM crm.companies WHERE id = 2").strip() \
        == "changed between the two dumps"


# --------------------------------------------------------------------------------------------
# 2. upload: check -> real -> check -> real


def _versions(moto, bucket: str, key: str) -> int:
    res = moto.client().list_object_versions(Bucket=bucket, Prefix=key)
    return len([v for v in res.get("Versions", []) if v["Key"] == key])


@pytest.mark.s3
@pytest.mark.sftp
def test_upload_check_real_check_real(moto, sshd, bucket, sample_db, workdir, sftp_dirs):
    # versioning on: every PUT of a key makes a new version, so a re-upload cannot hide
    moto.client().put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    sftp_dir = os.path.join(sshd.home, sftp_dirs("idem"))
    offsite_disk = workdir / "disk"
    offsite_disk.mkdir()
    repos = [s3_repo(moto, bucket, prefix="idem"), sftp_repo(sshd, sftp_dir), local_repo(offsite_disk)]

    def upload(task, check):
        return {"name": task, UPLOAD: {"backup": "{{ dumped.backup }}", "repositories": repos},
                "check_mode": check}

    def statuses(r, task):
        return [x["status"] for x in r.result(task)["repositories"]]

    # the backup to upload (the dump module: test_full_cycle_every_repository_type)
    backup = engine_dump("crm", pg_source(sample_db), workdir / "dest")
    extravars = {"dumped": {"backup": backup}}

    # check: would upload, uploads nothing
    r = run_playbook([upload("check 1", True)], extravars=extravars)
    assert_ok(r, "check 1")
    assert r.tasks["check 1"]["changed"] is True
    assert statuses(r, "check 1") == ["would upload"] * 3, r.result("check 1")
    assert s3_keys(moto, bucket) == []
    assert os.listdir(sftp_dir) == [] and os.listdir(offsite_disk) == []

    # real: uploads
    art_key = f"idem/crm/{backup['id']}.dump.zst"
    man_key = f"idem/crm/{backup['id']}.manifest.json"
    r = run_playbook([upload("real 1", False)], extravars=extravars)
    assert_ok(r, "real 1")
    assert r.tasks["real 1"]["changed"] is True
    assert statuses(r, "real 1") == ["uploaded"] * 3
    head = s3_head(moto, bucket, art_key)
    assert head["ContentLength"] == backup["size"] and head["Metadata"]["sha256"] == backup["sha256"]
    assert s3_keys(moto, bucket) == sorted([art_key, man_key])
    assert _versions(moto, bucket, art_key) == 1 and _versions(moto, bucket, man_key) == 1
    files = [root / "crm" / f"{backup['id']}{suffix}" for root in (offsite_disk, Path(sftp_dir))
             for suffix in (".dump.zst", ".manifest.json")]
    stamps = [(f.stat().st_ino, f.stat().st_mtime_ns) for f in files]

    # check again: nothing to do; real again: nothing uploaded (no new S3 version, files untouched)
    r = run_playbook([upload("check 2", True), upload("real 2", False)], extravars=extravars)
    assert_ok(r, "check 2", "real 2")
    assert r.tasks["check 2"]["changed"] is False and r.tasks["real 2"]["changed"] is False
    assert statuses(r, "check 2") == ["unchanged"] * 3 and statuses(r, "real 2") == ["unchanged"] * 3
    assert _versions(moto, bucket, art_key) == 1 and _versions(moto, bucket, man_key) == 1
    assert [(f.stat().st_ino, f.stat().st_mtime_ns) for f in files] == stamps


# --------------------------------------------------------------------------------------------
# 3. retention: check -> real -> real on a repository with several backups


@pytest.mark.s3
def test_retention_check_then_real_deletes_exactly_the_plan(moto, bucket, sample_db, workdir):
    repo = s3_repo(moto, bucket, prefix="ret")
    # the backups to keep or remove, made by the engine (the dump and upload modules:
    # test_full_cycle_every_repository_type)
    ids = []
    for tags in (["monthly"], ["daily"], ["daily"], ["daily"]):
        backup = engine_dump("crm", pg_source(sample_db), workdir / "dest", tags=tags)
        engine_upload(backup, [repo])
        ids.append(backup["id"])
    assert len(set(ids)) == 4, ids  # same second: the -N suffix keeps them apart
    all_keys = sorted(f"ret/crm/{i}{suffix}" for i in ids for suffix in (".dump.zst", ".manifest.json"))
    assert s3_keys(moto, bucket) == all_keys
    oldest, mid1, mid2, newest = ids
    policy = {"keep_last": 1, "keep_tags": ["monthly"]}
    retention = {"name": "retention", RETENTION: {"name": "crm", "repository": repo, "policy": policy}}

    # check mode: lists what it would remove, removes nothing
    r = run_playbook([retention], check=True)
    assert_ok(r, "retention")
    res = r.result("retention")
    assert r.tasks["retention"]["changed"] is True
    assert sorted(res["remove"]) == sorted([mid1, mid2]), res
    assert sorted(res["keep"]) == sorted([oldest, newest]), res
    assert res["removed"] == []
    assert "last snapshot" in " ".join(res["reasons"][newest]), res["reasons"]
    assert s3_keys(moto, bucket) == all_keys

    # real: deletes exactly those (manifest and artifact), then a second run has nothing to do
    r = run_playbook([retention, dict(retention, name="retention again")])
    assert_ok(r, "retention", "retention again")
    res = r.result("retention")
    assert r.tasks["retention"]["changed"] is True
    assert sorted(res["removed"]) == sorted([mid1, mid2]), res
    assert s3_keys(moto, bucket) == sorted(f"ret/crm/{i}{suffix}" for i in (oldest, newest)
                                           for suffix in (".dump.zst", ".manifest.json"))
    for gone in (mid1, mid2):
        assert not s3_exists(moto, bucket, f"ret/crm/{gone}.manifest.json")
        assert not s3_exists(moto, bucket, f"ret/crm/{gone}.dump.zst")
    again = r.result("retention again")
    assert r.tasks["retention again"]["changed"] is False
    assert again["remove"] == [] and again["removed"] == []
    assert sorted(again["keep"]) == sorted([oldest, newest])


# --------------------------------------------------------------------------------------------
# 4. check mode of dump and restore writes nothing


def test_dump_and_restore_check_mode_write_nothing(sample_db, workdir, unique_db_name):
    repo_dir = workdir / "repo"
    made = engine_dump("crm", pg_source(sample_db), repo_dir)  # the backup to restore (in check mode)

    check_dest = workdir / "never-created"
    tasks = [
        dump_task("crm", pg_source(sample_db), check_dest, task="dump check"),
        {"name": "restore check", RESTORE: {"name": "crm", "repository": local_repo(repo_dir),
                                            "target": pg_target(unique_db_name, mode="create")}},
    ]
    started = time.time()
    r = run_playbook(tasks, check=True)
    assert_ok(r, *[t["name"] for t in tasks])

    dumped = r.result("dump check")
    assert r.tasks["dump check"]["changed"] is True
    predicted = dumped["backup"]
    assert predicted["id"].startswith("crm_") and predicted["id"] != made["id"]
    created = calendar.timegm(time.strptime(predicted["created"], "%Y-%m-%dT%H:%M:%SZ"))
    assert started - 5 <= created <= time.time() + 5
    server_version = pg.run_sql("postgres", "SHOW server_version;").strip()
    assert predicted["source"]["server_version"] == server_version
    assert predicted["source"]["database"] == sample_db
    assert predicted["path"] == str(check_dest / "crm" / f"{predicted['id']}.dump.zst")
    assert not check_dest.exists()
    # it connected to the source (psql) but never ran pg_dump itself, only asked its version
    assert any(program_of(c).endswith("psql") for c in dumped["executed_commands"])
    assert [c for c in dumped["executed_commands"] if program_of(c).endswith("pg_dump")] == \
        [c for c in dumped["executed_commands"] if c.endswith("pg_dump --version")], dumped["executed_commands"]

    restored = r.result("restore check")
    assert r.tasks["restore check"]["changed"] is True
    assert restored["status"] == "would restore"
    assert restored["backup"]["id"] == made["id"]
    assert "restored" not in restored
    assert not pg.database_exists(unique_db_name)
    assert leftover_databases(unique_db_name) == []


# --------------------------------------------------------------------------------------------
# 5. plain SQL + gzip: the seed's format


def test_plain_gzip_dump_is_sql_and_restores(sample_db, workdir, unique_db_name):
    dest = workdir / "dest"
    tasks = [
        dump_task("crm", pg_source(sample_db, format="plain"), dest, compression="gzip"),
        {"name": "restore", RESTORE: {"name": "crm", "repository": local_repo(dest),
                                      "target": pg_target(unique_db_name)}},
    ]
    r = run_playbook(tasks)
    assert_ok(r, "dump", "restore")
    backup = r.result("dump")["backup"]
    assert backup["path"].endswith(f"/crm/{backup['id']}.sql.gz")
    assert backup["format"] == "plain" and backup["compression"] == "gzip"
    head = subprocess.run(f"gunzip -c {backup['path']} | head -n 40", shell=True, capture_output=True,
                          text=True, check=True).stdout
    assert "PostgreSQL database dump" in head, head
    assert "CREATE SCHEMA" in gzip.open(backup["path"], "rt", encoding="utf-8").read()
    res = r.result("restore")
    assert res["backup"]["id"] == backup["id"]
    assert any(program_of(c).endswith("psql") and "--single-transaction" in c for c in res["executed_commands"])
    assert pg.fingerprint(unique_db_name) == pg.fingerprint(sample_db)


# --------------------------------------------------------------------------------------------
# 6. legacy backups written by the seed script


def seed_backup(db: str, path: Path) -> Path:
    """Exactly what backup_offsite.sh does: ``pg_dump <db> | gzip > crm_backup_<stamp>.sql.gz``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["bash", "-o", "pipefail", "-c", f'pg_dump "{db}" | gzip > "{path}"'], env=pg.pg_env(),
                   check=True, capture_output=True)
    return path


@pytest.mark.s3
def test_legacy_seed_backups_listed_restored_and_counted(moto, bucket, sample_db, workdir, db_names):
    name = "crm_backup"
    legacy_id = "crm_backup_20251028_140000"
    older_id = "crm_backup_20251027_140000"
    seed_file = seed_backup(sample_db, workdir / "seed" / f"{legacy_id}.sql.gz")
    s3 = moto.client()
    # the seed's upload: the file at the root of the prefix, no manifest
    s3.upload_file(str(seed_file), bucket, f"backups/{legacy_id}.sql.gz")
    s3.upload_file(str(seed_file), bucket, f"backups/{older_id}.sql.gz")
    # the local repository is also where our dump writes: a set in migration, old and new side by side
    local_dir = workdir / "local"
    local_dir.mkdir()
    (local_dir / f"{legacy_id}.sql.gz").write_bytes(seed_file.read_bytes())
    repo_s3, repo_local = s3_repo(moto, bucket, prefix="backups"), local_repo(local_dir)
    from_s3, from_local = db_names("legacy_s3"), db_names("legacy_local")

    tasks = [
        {"name": "info s3", INFO: {"name": name, "repository": repo_s3}},
        dump_task(name, pg_source(sample_db), local_dir),
        {"name": "info local", INFO: {"name": name, "repository": repo_local}},
        {"name": "restore s3", RESTORE: {"name": name, "repository": repo_s3, "backup": legacy_id,
                                         "target": pg_target(from_s3)}},
        # a time picks the newest backup at or before it: the legacy one
        {"name": "restore local", RESTORE: {"name": name, "repository": repo_local,
                                            "backup": "2025-10-28T15:00:00Z", "target": pg_target(from_local)}},
        {"name": "retention s3 check", RETENTION: {"name": name, "repository": repo_s3,
                                                   "policy": {"keep_last": 1}}, "check_mode": True},
        {"name": "retention local keep 2", RETENTION: {"name": name, "repository": repo_local,
                                                       "policy": {"keep_last": 2}}},
        {"name": "retention local keep 1", RETENTION: {"name": name, "repository": repo_local,
                                                       "policy": {"keep_last": 1}}},
    ]
    r = run_playbook(tasks)
    assert_ok(r, *[t["name"] for t in tasks])

    info = r.result("info s3")
    assert [b["id"] for b in info["backups"]] == [legacy_id, older_id]
    entry = info["backups"][0]
    assert entry["legacy"] is True and entry["complete"] is True, entry
    assert entry["created"] == "2025-10-28T14:00:00Z"
    assert entry["size"] == seed_file.stat().st_size and entry["compression"] == "gzip"
    assert info["latest"]["id"] == legacy_id and info["count"] == 2

    new_id = r.result("dump")["backup"]["id"]
    info = r.result("info local")
    assert [b["id"] for b in info["backups"]] == [new_id, legacy_id]
    assert [(b["legacy"], b["complete"]) for b in info["backups"]] == [(False, True), (True, True)]
    assert info["latest"]["id"] == new_id

    source_fp = pg.fingerprint(sample_db)
    for task, db in (("restore s3", from_s3), ("restore local", from_local)):
        res = r.result(task)
        assert res["backup"]["id"] == legacy_id and res["backup"]["legacy"] is True, res
        assert pg.fingerprint(db) == source_fp, task

    ret = r.result("retention s3 check")
    assert ret["keep"] == [legacy_id] and ret["remove"] == [older_id], ret
    assert s3_exists(moto, bucket, f"backups/{older_id}.sql.gz")  # check mode
    ret = r.result("retention local keep 2")
    assert sorted(ret["keep"]) == sorted([new_id, legacy_id]) and ret["remove"] == [], ret
    assert not r.tasks["retention local keep 2"]["changed"]
    ret = r.result("retention local keep 1")
    assert ret["keep"] == [new_id] and ret["removed"] == [legacy_id], ret
    assert not (local_dir / f"{legacy_id}.sql.gz").exists()
    assert (local_dir / name / f"{new_id}.dump.zst").exists()


# --------------------------------------------------------------------------------------------
# 7. mode replace


def _sessions(db: str, app: str) -> int:
    return int(pg.run_sql("postgres", "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                          f"{pg.quote_literal(db)} AND application_name = {pg.quote_literal(app)};").strip())


def test_restore_replace_and_open_sessions(sample_db, workdir, db_names):
    dest = workdir / "dest"
    target = db_names("replace")
    pg.create_database(target)
    pg.run_sql(target, "CREATE TABLE old_stuff (x int); INSERT INTO old_stuff VALUES (1), (2);")
    source_fp = pg.fingerprint(sample_db)

    def restore(task, **target_opts):
        return {"name": task, RESTORE: {"name": "crm", "repository": local_repo(dest),
                                        "target": pg_target(target, mode="replace", **target_opts)}}

    engine_dump("crm", pg_source(sample_db), dest)  # the backup to restore (the dump module: above)
    r = run_playbook([restore("replace")])
    assert_ok(r, "replace")
    res = r.result("replace")
    assert res["restored"] == {"database": target, "replaced": True,
                               "verified_tables": len(source_fp["tables"])}, res
    assert pg.fingerprint(target) == source_fp
    assert leftover_databases(target) == []

    # an application still connected: refuse (before downloading anything), target untouched
    pg.run_sql(target, "UPDATE crm.companies SET notes = 'edited after the restore' WHERE id = 1;")
    before = pg.fingerprint(target)
    app = f"holder-{_uid()}"
    holder = subprocess.Popen(["psql", "-X", "-q", "-d", target], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=pg.pg_env({"PGAPPNAME": app}), text=True)
    try:
        deadline = time.time() + 15
        while _sessions(target, app) != 1:
            assert holder.poll() is None and time.time() < deadline, holder.stderr.read()
            time.sleep(0.1)

        r = run_playbook([restore("busy")])
        assert r.rc != 0 and r.failed_tasks == ["busy"], r.output
        msg = r.result("busy")["msg"]
        assert f"database {target} has 1 open session" in msg and "terminate_connections" in msg, msg
        assert pg.fingerprint(target) == before
        assert leftover_databases(target) == []
        assert _sessions(target, app) == 1 and holder.poll() is None

        # the operator says so: the session is ended and the backup swapped in
        r = run_playbook([restore("terminate", terminate_connections=True)])
        assert_ok(r, "terminate")
        assert r.result("terminate")["restored"]["replaced"] is True
        assert _sessions(target, app) == 0
        assert pg.fingerprint(target) == source_fp
        assert leftover_databases(target) == []
    finally:
        holder.kill()
        holder.communicate()


# --------------------------------------------------------------------------------------------
# 8. files


def test_files_round_trip(workdir):
    src = workdir / "app-data"
    (src / "uploads" / "2026" / "11").mkdir(parents=True)
    (src / "config").mkdir()
    (src / "uploads" / "2026" / "11" / "facture-n°42.pdf").write_bytes(os.urandom(50_000))
    (src / "uploads" / "readme.txt").write_text("bonjour, ça va ? 日本\n")
    secret = src / "config" / "app.env"
    secret.write_text("DATABASE_URL=postgres://crm@db/crm\n")
    os.chmod(secret, 0o640)
    os.chown(secret, 12345, 23456)
    os.chmod(src / "config", 0o750)
    os.symlink("../uploads/readme.txt", src / "config" / "readme-link")
    (src / "uploads" / "upload-in-progress.tmp").write_bytes(b"partial")
    (src / "cache.tmp").write_text("scratch")
    expected = {k: v for k, v in tree(src).items() if not k.endswith(".tmp")}
    assert len(expected) == 8  # 4 directories, 3 files, 1 symlink

    dest, offsite, restored = workdir / "dest", workdir / "offsite", workdir / "restored"
    offsite.mkdir()
    tasks = [
        dump_task("files", {"type": "files", "paths": [str(src)], "exclude": ["*.tmp"]}, dest),
        {"name": "upload", UPLOAD: {"backup": "{{ dumped.backup }}", "repository": local_repo(offsite)}},
        {"name": "restore", RESTORE: {"name": "files", "repository": local_repo(offsite),
                                      "target": {"type": "files", "path": str(restored)}}},
    ]
    r = run_playbook(tasks)
    assert_ok(r, "dump", "upload", "restore")
    backup = r.result("dump")["backup"]
    assert backup["path"].endswith(".tar.zst") and backup["source"]["type"] == "files"
    assert r.result("restore")["restored"]["path"] == str(restored)

    # tar keeps the paths below / : the tree comes back at restored/<src without the leading />
    back = restored / str(src).lstrip("/")
    assert back.is_dir(), sorted(str(p) for p in restored.rglob("*"))[:20]
    assert tree(back) == expected
    st = os.lstat(back / "config" / "app.env")
    assert (st.st_uid, st.st_gid) == (12345, 23456)
    assert (back / "config" / "readme-link").read_text() == "bonjour, ça va ? 日本\n"
    assert not list(back.rglob("*.tmp"))


# --------------------------------------------------------------------------------------------
# 9. secrets never show


@pytest.mark.s3
@pytest.mark.scram_pg
def test_secrets_stay_out_of_output_and_commands(moto, scram_pg, bucket, workdir):
    db = f"offsite_secret_{_uid()}"
    restored = f"offsite_secret_back_{_uid()}"
    pg.create_sample_database(db, scale=0.25, env=scram_pg.env())
    try:
        conn = {"host": scram_pg.host, "port": scram_pg.port, "user": scram_pg.user,
                "password": "{{ pg_password }}"}
        repo = s3_repo(moto, bucket, prefix="secret", secret_key="{{ s3_secret }}")
        tasks = [
            dump_task("crm", dict(conn, type="postgresql", database=db), workdir / "dest"),
            {"name": "upload", UPLOAD: {"backup": "{{ dumped.backup }}", "repository": repo}},
            {"name": "info", INFO: {"name": "crm", "repository": repo}},
            {"name": "restore", RESTORE: {"name": "crm", "repository": repo,
                                          "target": dict(conn, type="postgresql", database=restored)}},
        ]
        secrets = {"pg_password": scram_pg.password, "s3_secret": moto.secret_key}
        # -vvv prints every module's arguments and results: the place a leak would show
        r = run_playbook(tasks, extravars=secrets, verbosity=3)
        assert_ok(r, "dump", "upload", "info", "restore")

        # it really authenticated with the password (scram-sha-256 refuses anything else)
        backup = r.result("dump")["backup"]
        assert backup["size"] > 0 and Path(backup["path"]).is_file()
        assert s3_exists(moto, bucket, f"secret/crm/{backup['id']}.dump.zst")
        assert pg.fingerprint(restored, env=scram_pg.env()) == pg.fingerprint(db, env=scram_pg.env())

        everything = r.stdout + r.stderr + json.dumps(r.events, ensure_ascii=False)
        commands = [c for t in ("dump", "upload", "info", "restore") for c in r.result(t)["executed_commands"]]
        assert any("pg_dump" in c for c in commands) and any("pg_restore" in c for c in commands)
        for label, value in secrets.items():
            assert value not in everything, f"{label} leaked into the output"
            assert not any(value in c for c in commands), f"{label} leaked into executed_commands"
        # the secrets were given, masked in what Ansible reports back
        assert r.result("upload")["invocation"]["module_args"]["repository"]["secret_key"] \
            == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
        assert r.result("dump")["invocation"]["module_args"]["source"]["password"] \
            == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
    finally:
        pg.drop_database(db, env=scram_pg.env())
        pg.drop_database(restored, env=scram_pg.env())


# --------------------------------------------------------------------------------------------
# 10. backup_info query


def test_backup_info_query(sample_db, workdir):
    dest = workdir / "dest"
    set_dir = dest / "crm"
    set_dir.mkdir(parents=True)
    # an interrupted dump from long ago: artifact, no manifest
    (set_dir / "crm_20200101T000000Z.dump.zst").write_bytes(b"\x28\xb5\x2f\xfd half")
    repo = local_repo(dest)
    tasks = [
        dump_task("crm", pg_source(sample_db), dest, register="first", task="dump daily", tags=["daily"]),
        dump_task("crm", pg_source(sample_db), dest, register="second", task="dump monthly",
                  tags=["daily", "monthly"]),
        {"name": "monthly", INFO: {"name": "crm", "repository": repo,
                                   "query": "[?complete && contains(tags, 'monthly')].id"}},
        {"name": "incomplete", INFO: {"name": "crm", "repository": repo,
                                      "query": "[?!complete].{id: id, problem: problem}"}},
        {"name": "all", INFO: {"name": "crm", "repository": repo}},
    ]
    r = run_playbook(tasks)
    assert_ok(r, *[t["name"] for t in tasks])
    daily, monthly = r.result("dump daily")["backup"]["id"], r.result("dump monthly")["backup"]["id"]
    assert r.result("monthly")["backups"] == [monthly]
    assert r.result("incomplete")["backups"] == [
        {"id": "crm_20200101T000000Z", "problem": "no manifest (interrupted upload or dump)"}]
    everything = r.result("all")
    assert [b["id"] for b in everything["backups"]] == [monthly, daily, "crm_20200101T000000Z"]
    assert everything["latest"]["id"] == monthly and everything["count"] == 2
    # the query filters the list, not the summary
    assert r.result("monthly")["latest"]["id"] == monthly
