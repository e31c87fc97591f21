"""Bad input: every case is a real ``ansible-playbook`` task that fails with a clear message, a
failed status and an ``error`` kind, and leaves NOTHING half-written behind. (Most cases are
tasks of one playbook, each with its own state: see the ``failures`` fixture.)

After each failure the test looks at the real state: the bucket / directory of the repository
(no object, no manifest, no pending multipart upload), the dump directory (no artifact that
looks complete, no ``.partial``), and the target database (same fingerprint as before, no
``<db>_restore_*`` scratch database left).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.harness import pg
from tests.harness.faults import COLLECTIONS
from tests.harness.ansible import run_playbook
from tests.harness.services import free_port
from tests.integration.helpers import (kill_pg_dump, local_repo, partial_bytes, pg_source, pg_target, s3_keys, s3_repo,
                                       sftp_repo, watching)

if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)
from ansible_collections.offsite.backup.plugins.module_utils._engine import operations  # noqa: E402
from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories import open_repository  # noqa: E402

pytestmark = pytest.mark.integration

SET = "failset"      # backup set name used throughout
FAST = {"timeout": 3, "retries": 1}


# --- helpers ----------------------------------------------------------------------------------


def _uid() -> str:
    return uuid.uuid4().hex[:8]


def play(*tasks, **kwargs):
    """Run the tasks (dicts) as one localhost play."""
    return run_playbook(list(tasks), **kwargs)


def task(title: str, module: str, /, **args) -> dict:
    return {"name": title, f"offsite.backup.{module}": args}


def assert_failed(r, name: str, kind: str, *words: str) -> dict:
    """``name`` failed (not ignored), the play exited non-zero, ``error`` is ``kind`` and ``msg``
    contains every one of ``words``. Returns the module result."""
    assert r.rc != 0, f"the play should have failed\n{r.output}"
    return task_failed(r, name, kind, *words)


def task_failed(r, name: str, kind: str, *words: str) -> dict:
    """Task ``name`` of run ``r`` failed, ``error`` is ``kind`` and ``msg`` contains every one of
    ``words``. Returns the module result."""
    assert r.status(name) == "failed", f"{name}: {r.status(name)}\n{r.output}"
    res = r.result(name)
    msg = res.get("msg", "")
    assert res.get("error") == kind, f"error kind {res.get('error')!r} != {kind!r}: {msg}"
    for w in words:
        assert w in msg, f"{w!r} not in msg: {msg}"
    assert "Traceback" not in msg
    return res


def assert_no_secret(r, *secrets: str) -> None:
    everything = r.stdout + r.stderr + json.dumps(r.events, default=str)
    for s in secrets:
        assert s and s not in everything, "a secret leaked into the output"


def files(root) -> list[str]:
    """Relative paths of every file below ``root`` (empty list when it does not exist)."""
    root = Path(root)
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def backup_files(root) -> list[str]:
    """Files that a catalog would look at (lock files excluded)."""
    return [f for f in files(root) if not Path(f).name.endswith(".lock")]


def no_pending_uploads(moto, bucket: str) -> bool:
    return not moto.client().list_multipart_uploads(Bucket=bucket).get("Uploads")


def scratch_databases(db: str) -> list[str]:
    out = pg.run_sql("postgres", "SELECT datname FROM pg_database WHERE datname LIKE "
                                 f"{pg.quote_literal(db[:40] + '_restore_%')} OR datname LIKE "
                                 f"{pg.quote_literal(db[:40] + '_previous_%')};")
    return [line for line in out.splitlines() if line]


def make_small_db(name: str) -> None:
    """A tiny database with known content: the restore target that must stay untouched."""
    pg.drop_database(name)
    pg.create_database(name)
    pg.run_sql(name, "CREATE TABLE keep_me (id int PRIMARY KEY, note text);"
                     "INSERT INTO keep_me VALUES (1, 'précieux'), (2, 'do not lose');")


def flip_byte(data: bytes, where: str) -> bytes:
    """Flip one byte: in the ``middle`` (zstd stores the incompressible bytes there as they are,
    so decompression succeeds and only the checksum can tell), or near the ``start`` (inside a
    compressed block: the decompressor chokes before the checksum is known), or near the ``end``
    (the last bytes a streamed restore reads before the checksum is known)."""
    at = {"middle": len(data) // 2, "start": 12, "end": len(data) - 100}[where]
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


def sftp_dir(sshd, label: str) -> str:
    return sshd.make_dir(f"backups/{label}-{_uid()}")


# --- shared fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def source_db():
    """The database that is backed up (sample data, 2 MiB of incompressible bytes)."""
    name = f"offsite_failsrc_{_uid()}"
    pg.create_sample_database(name)
    try:
        yield name
    finally:
        pg.drop_database(name)


@pytest.fixture(scope="module")
def dumped(source_db, tmp_path_factory):
    """One good local backup of ``source_db``: {"dest", "backup" (dump's result)}.

    ``dest`` has the layout of a local repository, so restores can read from it directly."""
    dest = tmp_path_factory.mktemp("dumped")
    # only the state the failures start from: the engine writes it (the dump module's own run
    # is tested in test_backup_cycle.py), without an ansible-playbook run of its own
    return {"dest": str(dest), "backup": operations.dump(SET, pg_source(source_db), str(dest))["backup"]}


# --- the failure cases that need only their own state: one ansible-playbook run -------------
#
# Every case of sections 1, 2, 4, 5, 6, 8, 11, 13 and 14 is one task of ONE playbook (the
# module-scoped ``failures`` fixture), with its own state: its own bucket, directory, work_dir,
# tmpfs and database. Each task but the last is run with ignore_errors, so that the next case
# runs too; the last one ends the play with a non-zero exit status. Each test then checks its
# own task's result and its own state, which no other case touched. (One playbook per case
# cost ~1.5 CPU s of ansible-playbook start-up and module payload per case.)


def _mount_tiny(mnt: Path) -> bool:
    """A 1 MiB tmpfs at ``mnt`` (needs root / CAP_SYS_ADMIN); False when it cannot be mounted."""
    mnt.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mnt)],
                          capture_output=True, text=True, check=False).returncode == 0


def _umount(mnt: Path) -> None:
    if subprocess.run(["umount", str(mnt)], capture_output=True, check=False).returncode != 0:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)


def _store_corrupted(moto, dumped, repo_dir: Path | None, bucket: str | None, where: str) -> dict:
    """The good backup stored the way upload stores it (upload itself is tested elsewhere), then
    one byte of the stored artifact flipped; the manifest kept. Returns the repository."""
    backup = dumped["backup"]
    art_name = Path(backup["path"]).name
    man_name = Path(backup["manifest"]).name
    if bucket:
        repo = s3_repo(moto, bucket, **FAST)
        s3 = moto.client()
        for path in (backup["path"], backup["manifest"]):
            body = Path(path).read_bytes()
            if path == backup["path"]:
                body = flip_byte(body, where)
            s3.put_object(Bucket=bucket, Key=f"{repo['prefix']}/{SET}/{Path(path).name}",
                          Body=body, Metadata={"sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()})
        assert any(k.endswith(man_name) for k in s3_keys(moto, bucket))
    else:
        repo = local_repo(repo_dir)
        (repo_dir / SET).mkdir(parents=True)
        for path in (backup["path"], backup["manifest"]):
            shutil.copyfile(path, repo_dir / SET / Path(path).name)
        art = repo_dir / SET / art_name
        art.write_bytes(flip_byte(art.read_bytes(), where))
        assert (repo_dir / SET / man_name).exists()
    return repo


CORRUPTED = [("local", "middle", 2), ("s3", "middle", 2), ("local", "start", 2), ("s3", "middle", 1),
             ("local", "end", 1)]
CORRUPTED_IDS = ["local-middle-file", "s3-middle-file", "local-start-file", "s3-middle-streamed",
                 "local-end-streamed"]
HOST_KEY_CASES = ["known_hosts_without_server", "known_hosts_other_key", "pinned_other_key"]


@pytest.fixture(scope="module")
def failures(moto, sshd, dumped, source_db, tmp_path_factory):
    """One playbook with every case below as a task: {"r": the run, case: what it needs to check}."""
    base = tmp_path_factory.mktemp("failures")
    tasks, ctx, databases, mounts = [], {}, [], []

    def add(case, module, **args):
        tasks.append(task(case, module, **args))

    def victim(case) -> str:
        db = f"offsite_restore_{_uid()}"
        databases.append(db)
        make_small_db(db)
        ctx[case]["db"], ctx[case]["before"] = db, pg.fingerprint(db)
        return db

    try:
        # 1. wrong S3 credentials: a bucket each
        for which in ("wrong_secret", "unknown_access_key"):
            bucket = moto.create_bucket(f"offsite-test-{_uid()}")
            bad_secret = "wrong-" + _uid() + "-" + moto.secret_key[:6]
            repo = s3_repo(moto, bucket, secret_key=bad_secret, **FAST)
            if which == "unknown_access_key":
                repo["access_key"] = "AKIAOFFSITEUNKNOWN00"
            ctx[f"creds {which}"] = {"bucket": bucket, "bad_secret": bad_secret}
            add(f"creds {which}", "upload", backup=dumped["backup"], repositories=[repo])

        # 2. missing bucket: a name each, a restore target that must not appear
        for module in ("upload", "backup_info", "restore"):
            missing = f"offsite-missing-{_uid()}"
            db = f"offsite_restore_{_uid()}"
            databases.append(db)
            repo = s3_repo(moto, missing, **FAST)
            ctx[f"missing {module}"] = {"missing": missing, "db": db}
            if module == "upload":
                add(f"missing {module}", module, backup=dumped["backup"], repositories=[repo])
            elif module == "backup_info":
                add(f"missing {module}", module, name=SET, repository=repo)
            else:
                add(f"missing {module}", module, name=SET, repository=repo, target=pg_target(db))

        # 4. untrusted host keys and 5. a wrong SSH key: a directory each
        other_key = " ".join(Path(sshd.wrong_private_key + ".pub").read_text().split()[:2])
        for case in HOST_KEY_CASES:
            path = sftp_dir(sshd, "hostkey")
            repo = sftp_repo(sshd, path, **FAST)
            kh = base / f"known_hosts-{case}"
            if case == "known_hosts_without_server":
                kh.write_text(f"[192.0.2.7]:2222 {sshd.host_key}\n")  # some other host only
                repo["known_hosts"] = str(kh)
            elif case == "known_hosts_other_key":
                kh.write_text(f"[127.0.0.1]:{sshd.port} {other_key}\n")
                repo["known_hosts"] = str(kh)
            else:
                del repo["known_hosts"]
                repo["host_key"] = other_key
            ctx[f"hostkey {case}"] = {"path": path}
            add(f"hostkey {case}", "upload", backup=dumped["backup"], repositories=[repo])
        path = sftp_dir(sshd, "wrongkey")
        ctx["wrong ssh key"] = {"path": path}
        add("wrong ssh key", "upload", backup=dumped["backup"],
            repositories=[sftp_repo(sshd, path, private_key=sshd.wrong_private_key, **FAST)])

        # 6. a database that does not exist
        missing = f"offsite_nosuchdb_{_uid()}"
        ctx["nonexistent database"] = {"missing": missing, "dest": base / "nonexistent-dest"}
        add("nonexistent database", "dump", name=SET, source=pg_source(missing),
            dest=str(ctx["nonexistent database"]["dest"]))

        # 8. corrupted artifacts: a repository (directory or bucket), work_dir and target each
        for (kind, where, jobs), case_id in zip(CORRUPTED, CORRUPTED_IDS):
            case = f"corrupted {case_id}"
            ctx[case] = {"workdir": base / f"work-{case_id}", "jobs": jobs}
            ctx[case]["workdir"].mkdir()
            bucket = moto.create_bucket(f"offsite-test-{_uid()}") if kind == "s3" else None
            repo = _store_corrupted(moto, dumped, base / f"repo-{case_id}", bucket, where)
            db = victim(case)
            add(case, "restore", name=SET, repository=repo, work_dir=str(ctx[case]["workdir"]),
                target=pg_target(db, mode="replace", terminate_connections=True, jobs=jobs))

        # 11. mode: create on an existing database
        case = "create onto existing"
        ctx[case] = {"workdir": base / "work-create"}
        ctx[case]["workdir"].mkdir()
        db = victim(case)
        add(case, "restore", name=SET, repository=local_repo(dumped["dest"]),
            work_dir=str(ctx[case]["workdir"]), target=pg_target(db, mode="create"))

        # 13. a full disk while dumping, 14. a work_dir too small: a tmpfs each
        full, small = base / "tiny-full", base / "tiny-workdir"
        if _mount_tiny(full) and _mount_tiny(small):
            mounts += [full, small]
            ctx["full disk"] = {"mnt": full}
            add("full disk", "dump", name=SET, source=pg_source(source_db), dest=str(full))
            case = "work_dir too small"
            ctx[case] = {"mnt": small}
            db = victim(case)
            add(case, "restore", name=SET, repository=local_repo(dumped["dest"]), work_dir=str(small),
                target=pg_target(db, mode="replace"))
        else:
            mounts += [m for m in (full, small) if os.path.ismount(m)]

        for t in tasks[:-1]:
            t["ignore_errors"] = True
        r = play(*tasks)
        assert r.rc != 0, f"the last case should have ended the play\n{r.output}"
        assert r.stats["localhost"]["failed"] == 1 and r.stats["localhost"]["ignored"] == len(tasks) - 1, r.output
        ctx["r"] = r
        yield ctx
    finally:
        for mnt in mounts:
            _umount(mnt)
        for db in databases:
            pg.drop_database(db)


def failed_case(failures, name: str, kind: str, *words: str) -> dict:
    """Case ``name`` of the ``failures`` run failed, with error ``kind`` and every one of
    ``words`` in its ``msg``; returns the module result."""
    return task_failed(failures["r"], name, kind, *words)


# --- 1. wrong S3 credentials ------------------------------------------------------------------


@pytest.mark.s3
@pytest.mark.parametrize("which", ["wrong_secret", "unknown_access_key"])
def test_wrong_s3_credentials(moto, failures, which):
    case = failures[f"creds {which}"]
    bucket = case["bucket"]
    res = failed_case(failures, f"creds {which}", "repository", "refused the credentials", bucket,
                      "check access_key/secret_key")
    assert res["repositories"][0]["status"] == "failed"
    assert s3_keys(moto, bucket) == []
    assert no_pending_uploads(moto, bucket)
    assert_no_secret(failures["r"], case["bad_secret"], moto.secret_key)


# --- 2. missing bucket ------------------------------------------------------------------------


@pytest.mark.s3
@pytest.mark.parametrize("module", ["upload", "backup_info", "restore"])
def test_missing_bucket(moto, failures, module):
    case = failures[f"missing {module}"]
    missing = case["missing"]
    failed_case(failures, f"missing {module}", "not_found", f"bucket {missing} does not exist at {moto.endpoint_url}",
                "create it or fix `bucket`")
    assert missing not in [b["Name"] for b in moto.client().list_buckets()["Buckets"]]
    assert not pg.database_exists(case["db"])
    assert_no_secret(failures["r"], moto.secret_key)


# --- 3. unreachable host ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["s3", "sftp"])
def test_unreachable_host(sshd, dumped, kind, tmp_path):
    port = free_port()  # nothing listens there
    if kind == "s3":
        repo = {"type": "s3", "bucket": "offsite-nowhere", "endpoint_url": f"http://127.0.0.1:{port}",
                "region": "us-east-1", "access_key": "AKIAOFFSITENOWHERE00", "secret_key": "nowhere-secret",
                **FAST}
        words = ["cannot reach", f"http://127.0.0.1:{port}"]
    else:
        repo = sftp_repo(sshd, "/nowhere", port=port, **FAST)
        words = ["cannot reach", f"127.0.0.1:{port}", "port"]
    # the same upload to a local repository waits for no network: what a play costs on this
    # machine at this load (ansible-playbook, the module, the engine), measured just before
    started = time.monotonic()
    assert play(task("upload", "upload", backup=dumped["backup"], repositories=[local_repo(tmp_path)])).rc == 0
    baseline = time.monotonic() - started
    started = time.monotonic()
    r = play(task("upload", "upload", backup=dumped["backup"], repositories=[repo]))
    elapsed = time.monotonic() - started
    assert_failed(r, "upload", "unreachable", *words)
    # timeout: 3 / retries: 1 bound the waiting (the defaults wait up to 120 s): beyond the
    # baseline, at most what those options allow, plus a margin that grows with the load
    waited = elapsed - baseline
    bound = open_repository(repo).longest_wait() + max(10.0, baseline)
    assert waited < bound, (f"timeout: 3 / retries: 1 should fail fast: {waited:.1f} s more than an upload "
                            f"without network ({baseline:.1f} s), bound {bound:.1f} s")
    assert_no_secret(r, "nowhere-secret")


# --- 4. unknown / mismatching host key --------------------------------------------------------


@pytest.mark.sftp
@pytest.mark.parametrize("case", HOST_KEY_CASES)
def test_host_key_not_trusted(sshd, failures, case):
    if case == "known_hosts_without_server":
        words = ["host key", f"127.0.0.1:{sshd.port}", "unknown", "ssh-keyscan"]
    else:
        words = ["host key", f"127.0.0.1:{sshd.port}", "does NOT match"]
    failed_case(failures, f"hostkey {case}", "repository", *words)
    assert files(failures[f"hostkey {case}"]["path"]) == []


# --- 5. wrong SSH key -------------------------------------------------------------------------


@pytest.mark.sftp
def test_wrong_ssh_key(sshd, failures):
    failed_case(failures, "wrong ssh key", "repository", "refused the SSH key", sshd.wrong_private_key,
                f"user {sshd.user}")
    assert files(failures["wrong ssh key"]["path"]) == []
    assert_no_secret(failures["r"], Path(sshd.wrong_private_key).read_text().splitlines()[1])


# --- 6. nonexistent database ------------------------------------------------------------------


def test_dump_nonexistent_database(failures):
    case = failures["nonexistent database"]
    missing = case["missing"]
    failed_case(failures, "nonexistent database", "not_found", f"database {missing} does not exist",
                "127.0.0.1:5432")
    assert files(case["dest"]) == []
    assert not pg.database_exists(missing)


# --- 7. wrong PostgreSQL password -------------------------------------------------------------


@pytest.mark.scram_pg
@pytest.mark.parametrize("module", ["dump", "restore"])
def test_wrong_postgresql_password(scram_pg, dumped, workdir, module):
    wrong = "not-the-pw-" + _uid()
    conn = {"type": "postgresql", "host": scram_pg.host, "port": scram_pg.port, "user": scram_pg.user,
            "password": wrong}
    dest = workdir / "dest"
    if module == "dump":
        t = task(module, module, name=SET, source=dict(conn, database="postgres"), dest=str(dest))
    else:
        t = task(module, module, name=SET, repository=local_repo(dumped["dest"]),
                 target=dict(conn, database="restored_here", mode="create"), work_dir=str(workdir))
    r = play(t)
    assert_failed(r, module, "source", "refused the password", f"user {scram_pg.user}",
                  f"{scram_pg.host}:{scram_pg.port}")
    assert_no_secret(r, wrong, scram_pg.password)
    assert files(dest) == []
    assert not [p for p in workdir.iterdir() if p.name.startswith("offsite-restore-")]
    out = subprocess.run(["psql", "-XAtc", "SELECT datname FROM pg_database", "-d", "postgres"],
                         env=pg.pg_env(scram_pg.env()), capture_output=True, text=True, check=True).stdout
    assert "restored_here" not in out


# --- 8. corrupted artifact --------------------------------------------------------------------


@pytest.mark.parametrize("case_id", CORRUPTED_IDS)
def test_corrupted_artifact_leaves_target_untouched(dumped, failures, case_id):
    """jobs 2 loads from the work file as it arrives, jobs 1 streams: either way into a scratch
    database that is dropped when the checksum fails, and the target keeps its data."""
    case = failures[f"corrupted {case_id}"]
    backup = dumped["backup"]
    res = failed_case(failures, f"corrupted {case_id}", "integrity", "does not match its manifest checksum",
                      Path(backup["path"]).name, backup["sha256"])
    if case["jobs"] > 1:  # loading into the scratch database may have begun; nothing after the checksum ran
        assert not any("--section=post-data" in c or "RENAME TO" in c for c in res.get("executed_commands", []))
    assert pg.fingerprint(case["db"]) == case["before"]
    assert scratch_databases(case["db"]) == []
    assert not [p for p in case["workdir"].iterdir() if p.name.startswith("offsite-restore-")]


# --- 9. truncated upload (artifact without manifest) ------------------------------------------


@pytest.mark.parametrize("kind,previous", [("s3", True), ("sftp", True), ("local", False)])
def test_artifact_without_manifest_is_incomplete(moto, bucket, sshd, dumped, workdir, unique_db_name,
                                                 kind, previous):
    backup = dumped["backup"]
    good_id = backup["id"]
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() + 3600))
    partial_id = f"{SET}_{stamp}"  # newer than the good backup: it would be `latest` if complete
    ext = Path(backup["path"]).name[len(good_id) + 1:]
    half = Path(backup["path"]).read_bytes()
    half = half[:len(half) // 2]
    if kind == "s3":
        repo = s3_repo(moto, bucket, **FAST)
        moto.client().put_object(Bucket=bucket, Key=f"{repo['prefix']}/{SET}/{partial_id}.{ext}", Body=half)
    elif kind == "sftp":
        rel = f"backups/trunc-{_uid()}"
        root = sshd.make_dir(rel)
        repo = sftp_repo(sshd, root, **FAST)
        partial = Path(sshd.make_dir(f"{rel}/{SET}")) / f"{partial_id}.{ext}"
        partial.write_bytes(half)
        st = os.stat(root)
        os.chown(partial, st.st_uid, st.st_gid)  # as if the SSH user had written it
    else:
        root = workdir / "repo"
        repo = local_repo(root)
        (root / SET).mkdir(parents=True)
        (root / SET / f"{partial_id}.{ext}").write_bytes(half)

    if previous:  # the good backup, uploaded by the engine (the upload module: the tests above)
        uploaded = operations.upload(backup, [repo])
        assert [x["status"] for x in uploaded["repositories"]] == ["uploaded"], uploaded
    tasks = [task("info", "backup_info", name=SET, repository=repo)]
    if previous:
        tasks.append(task("restore latest", "restore", name=SET, repository=repo, work_dir=str(workdir),
                          target=pg_target(unique_db_name)))
    else:
        tasks.append(dict(task("restore latest", "restore", name=SET, repository=repo, work_dir=str(workdir),
                               target=pg_target(unique_db_name)), ignore_errors=True))
    tasks.append(task("restore partial", "restore", name=SET, repository=repo, backup=partial_id,
                      work_dir=str(workdir), target=pg_target(unique_db_name + "_p")))
    try:
        r = play(*tasks)
        info = r.result("info")
        listed = {b["id"]: b for b in info["backups"]}
        assert listed[partial_id]["complete"] is False, info
        assert "manifest" in listed[partial_id].get("problem", ""), info
        if previous:
            assert listed[good_id]["complete"] is True
            assert info["latest"]["id"] == good_id
            assert info["count"] == 1
            assert r.status("restore latest") == "changed", r.output
            assert r.result("restore latest")["backup"]["id"] == good_id
        else:
            assert info["latest"] is None
            assert info["count"] == 0
            latest = r.tasks["restore latest"]
            assert latest["status"] == "failed" and latest["ignored"], r.output
            assert latest["result"]["error"] == "not_found"
            assert "no complete backup" in latest["result"]["msg"]
            assert not pg.database_exists(unique_db_name)
        assert_failed(r, "restore partial", "not_found", partial_id, "incomplete")
        assert not pg.database_exists(unique_db_name + "_p")
        assert scratch_databases(unique_db_name) == []
    finally:
        pg.drop_database(unique_db_name + "_p")


# --- 10. dump interrupted midway --------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("how", ["terminate_backend", "kill_pg_dump"])
def test_dump_interrupted_midway(big_db, workdir, how):
    dest = workdir / "dest"
    set_dir = dest / SET
    report: dict = {}

    def interrupt():
        size = partial_bytes(set_dir)
        if size <= 64 * 1024:
            return False
        report["partial_size"] = size
        if how == "terminate_backend":
            out = pg.run_sql("postgres", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                         f"WHERE datname = {pg.quote_literal(big_db)} "
                                         "AND pid <> pg_backend_pid();")
            report["terminated"] = out.split().count("t")
        else:
            report["terminated"] = kill_pg_dump(big_db)
        return True

    with watching(interrupt):
        # the failure ends the play (rc != 0); `always` still lists what dest holds afterwards
        r = play({"block": [task("dump", "dump", name=SET, source=pg_source(big_db), dest=str(dest))],
                  "always": [task("info", "backup_info", name=SET, repository=local_repo(dest))]})
    assert report.get("terminated"), f"the dump was not caught running ({report})\n{r.output}"
    words = ["pg_dump", "127.0.0.1:5432"]
    words += ["broke off during pg_dump"] if how == "terminate_backend" else ["killed by signal", "SIGKILL"]
    assert_failed(r, "dump", "source", *words)
    left = backup_files(dest)
    assert not [f for f in left if f.endswith(".partial")], left
    assert not [f for f in left if f.endswith(".manifest.json")], left
    assert left == [], left
    assert r.status("info") == "ok", r.output
    assert r.result("info")["backups"] == [] and r.result("info")["latest"] is None


# --- 11. mode: create on an existing database -------------------------------------------------


def test_restore_create_onto_existing_database(failures):
    case = failures["create onto existing"]
    db = case["db"]
    res = failed_case(failures, "create onto existing", "target", f"database {db} already exists",
                      "mode is create", "mode: replace")
    # nothing downloaded: no scratch directory in work_dir, no restore tool ran
    assert list(case["workdir"].iterdir()) == []
    assert not any("pg_restore" in c or ("psql" in c and "CREATE DATABASE" in c)
                   for c in res.get("executed_commands", []))
    assert pg.fingerprint(db) == case["before"]
    assert scratch_databases(db) == []


# --- 12. concurrent runs of one backup set ----------------------------------------------------


@pytest.mark.slow
def test_concurrent_dump_is_refused(source_db, workdir):
    dest = workdir / "dest"
    # hold a table lock so that the first dump's pg_dump waits (deterministically slow)
    holder = subprocess.Popen(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", source_db],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=pg.pg_env())
    first: dict = {}
    runner = None
    try:
        holder.stdin.write("BEGIN; LOCK TABLE public.users IN ACCESS EXCLUSIVE MODE; SELECT 'locked';\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "locked"

        def run_first():
            first["r"] = play(task("dump", "dump", name=SET, source=pg_source(source_db), dest=str(dest)))

        runner = threading.Thread(target=run_first, daemon=True)
        runner.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            waiting = pg.run_sql("postgres", "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                                             f"{pg.quote_literal(source_db)} AND wait_event_type = 'Lock';")
            if waiting.strip() not in ("", "0"):
                break
            assert runner.is_alive(), first.get("r") and first["r"].output
            time.sleep(0.1)
        else:
            pytest.fail("the first dump never started waiting on the table lock")

        second = play(task("dump", "dump", name=SET, source=pg_source(source_db), dest=str(dest)))
        assert_failed(second, "dump", "locked", "another run of backup set failset holds",
                      f".{SET}.lock", "wait for it to finish")
        # only the first run's in-progress file exists, nothing complete yet
        assert [f for f in backup_files(dest) if not f.endswith(".partial")] == []
    finally:
        if holder.poll() is None:
            try:
                holder.stdin.write("COMMIT;\n")
                holder.stdin.close()
            except OSError:
                pass
            holder.wait(30)
        if runner is not None:
            runner.join(120)
    r = first["r"]
    assert r.rc == 0 and r.status("dump") == "changed", r.output
    b = r.result("dump")["backup"]
    assert sorted(backup_files(dest)) == sorted([f"{SET}/{Path(b['path']).name}", f"{SET}/{Path(b['manifest']).name}"])


# --- 13. full disk while dumping --------------------------------------------------------------


def test_dump_into_full_disk(failures):
    if "full disk" not in failures:
        pytest.skip("cannot mount a tmpfs here (needs root/CAP_SYS_ADMIN)")
    mnt = failures["full disk"]["mnt"]
    failed_case(failures, "full disk", "disk_full", "no space left", str(mnt), "partial dump was removed")
    assert backup_files(mnt) == []
    st = os.statvfs(mnt)
    assert st.f_bfree * st.f_frsize > 900 * 1024  # the space was given back


# --- 14. restore work_dir too small -----------------------------------------------------------


def test_restore_work_dir_too_small(dumped, failures):
    if "work_dir too small" not in failures:
        pytest.skip("cannot mount a tmpfs here (needs root/CAP_SYS_ADMIN)")
    case = failures["work_dir too small"]
    db, mnt = case["db"], case["mnt"]
    raw_mib = dumped["backup"]["raw_size"] // 2 ** 20
    assert raw_mib >= 2, "the sample must be bigger than the tmpfs for this test to mean anything"
    res = failed_case(failures, "work_dir too small", "disk_full", str(mnt), f"needs about {raw_mib} MiB",
                      "work_dir")
    assert re.search(r"has \d+ MiB free", res["msg"])
    assert files(mnt) == []
    assert pg.fingerprint(db) == case["before"]
    assert scratch_databases(db) == []
