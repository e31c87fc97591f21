"""Base backups (``type: postgresql_physical``) and point-in-time restores of real PostgreSQL 15
clusters that each test creates with initdb on a free port, stopped in a finalizer (the shared
server on 5432 is never touched).

Backups: ``offsite-backup run`` into local, moto S3 and SFTP with age encryption, the manifest's
facts checked against the server and the artifact itself; a cluster with an extra tablespace
refused by a real ``ansible-playbook`` run, leaving nothing behind.

Restores (real ``ansible-playbook`` runs of the restore module): ``recovery_target: immediate``
from S3 with age gives the data as it was at the backup; bad input (a data directory that is not
empty, a target time before the oldest base backup, a damaged artifact) fails with its kind and
leaves nothing running and no directory. From one cluster archiving with ``wal-push`` (signed,
module-scoped, ``Archived``): a restore to a time T has every row committed up to T and none after
(margin: one second on each side of T, as recovery_target_time is given to the second); the
``pause`` and ``shutdown`` actions leave what docs/pitr.md says; a hole in the middle of the window
(to T and to latest), a damaged, a forged and a foreign segment fail with integrity and leave
nothing; a ``kill -9`` of the engine at a seeded random point leaves no server and no directory."""

from __future__ import annotations

import io
import json
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tarfile
import time
import uuid
from pathlib import Path

import pytest
import yaml

from ansible_collections.offsite.backup.plugins.module_utils._engine import operations
from tests.harness import COLLECTIONS_PATH, VENV_BIN, pg
from tests.harness.ansible import run_playbook
from tests.harness.services import LOOPBACK, ScramPostgres, _as_postgres, free_port
from tests.harness.walcluster import WalCluster, cli_prefix
from tests.integration.helpers import cli, local_repo, s3_repo, sftp_repo

pytestmark = [pytest.mark.integration, pytest.mark.s3, pytest.mark.sftp]

DUMP = "offsite.backup.dump"
RESTORE = "offsite.backup.restore"
SET = "crm_cluster"


def _uid() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def cluster():
    """A fresh PostgreSQL cluster of its own (initdb, free port), with a table of 1000 rows."""
    svc = ScramPostgres().start()
    try:
        sql(svc, "CREATE TABLE orders (id int PRIMARY KEY, note text); "
                 "INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1, 1000) g")
        yield svc
    finally:
        svc.stop()


def sql(svc, text: str, db: str = "postgres") -> str:
    return pg.run_sql(db, text, env=svc.env()).strip()


def physical_source(svc) -> dict:
    return {"type": "postgresql_physical", "host": svc.host, "port": svc.port, "user": svc.user,
            "password": svc.password}


def age_key(workdir) -> tuple:
    identity = workdir / "ops.agekey"
    subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
    public = subprocess.run(["age-keygen", "-y", str(identity)], check=True, capture_output=True, text=True)
    return identity, public.stdout.strip()


def base_tar(artifact, identity) -> tarfile.TarFile:
    """The plain tar inside an .tar.zst.age artifact."""
    plain = subprocess.run(f"age -d -i {identity} {artifact} | zstd -dc", shell=True, check=True,
                           capture_output=True).stdout
    return tarfile.open(fileobj=io.BytesIO(plain), mode="r:")


def test_run_streams_a_base_backup_to_every_repository_with_its_facts(cluster, workdir, moto, bucket, sshd):
    identity, recipient = age_key(workdir)
    sftp_dir = Path(sshd.make_dir(f"backups/pitr-{_uid()}"))
    job_name = f"pitr{_uid()}"
    job = {"name": job_name, "local": {"path": str(workdir / "local")},
           "sources": [{"name": SET, "source": physical_source(cluster)}],
           "repositories": [s3_repo(moto, bucket, prefix="pitr"), sftp_repo(sshd, str(sftp_dir)),
                            local_repo(workdir / "offsite")],
           "encryption": {"recipients": [recipient]},
           "log": {"path": str(workdir / "job.log")}}
    (workdir / "offsite").mkdir()
    job_file = workdir / "job.yml"
    job_file.write_text(yaml.safe_dump(job))

    result = cli("run", str(job_file), "--json")
    assert result.returncode == 0, result.stdout + result.stderr

    [manifest_path] = (workdir / "local" / SET).glob("*.manifest.json")
    manifest = json.loads(manifest_path.read_text())
    facts = manifest["source"]
    assert manifest["format"] == "basebackup" and manifest["extension"] == "tar.zst.age"
    ident = sql(cluster, "SELECT system_identifier, (SELECT timeline_id FROM pg_control_checkpoint()), "
                         "current_setting('server_version_num') FROM pg_control_system()").split("|")
    assert facts["type"] == "postgresql_physical"
    assert facts["system_identifier"] == ident[0]
    assert facts["timeline"] == int(ident[1]) == 1
    assert facts["server_version_num"] == int(ident[2]) and facts["server_major"] == "15"
    assert facts["wal_segment_size"] == 16 * 1024 * 1024
    assert manifest["created"] <= facts["start_time"] <= facts["stop_time"]
    assert facts["wal_start"] <= facts["wal_end"] and facts["wal_start"].startswith("00000001")
    # the password went through PGPASSWORD only
    assert cluster.password not in manifest_path.read_text() + result.stdout + result.stderr

    artifact = manifest_path.parent / manifest["artifact"]
    with base_tar(artifact, identity) as tar:
        names = tar.getnames()
        label = tar.extractfile("backup_label").read().decode()
    # the facts are those of the backup itself: its label and the WAL it carries (-X fetch)
    assert f"START WAL LOCATION: {facts['start_lsn']} (file {facts['wal_start']})" in label
    assert f"START TIMELINE: {facts['timeline']}" in label
    assert f"pg_wal/{facts['wal_start']}" in names and f"pg_wal/{facts['wal_end']}" in names
    assert "global/pg_control" in names and "backup_manifest" in names

    # the same bytes everywhere: each repository's manifest is the local one
    s3_manifest = moto.client().get_object(Bucket=bucket, Key=f"pitr/{SET}/{manifest_path.name}")["Body"].read()
    assert json.loads(s3_manifest) == manifest
    assert json.loads((sftp_dir / SET / manifest_path.name).read_text()) == manifest
    assert json.loads((workdir / "offsite" / SET / manifest_path.name).read_text()) == manifest


def test_a_second_tablespace_is_refused_and_leaves_nothing(cluster, workdir):
    """pg_basebackup to stdout carries one tablespace: a cluster with another is refused before
    anything is written, by name, with what to do; a check-mode dump reports the facts."""
    dest = workdir / "dest"
    check = run_playbook([{"name": "check", DUMP: {"name": SET, "source": physical_source(cluster),
                                                   "dest": str(dest)}, "check_mode": True}])
    assert check.rc == 0, check.output
    predicted = check.result("check")["backup"]
    assert predicted["format"] == "basebackup"
    assert predicted["source"]["system_identifier"] == sql(cluster, "SELECT system_identifier FROM pg_control_system()")
    assert not dest.exists()

    space = Path(cluster.tmpdir) / "space"  # the cluster's directory: the server's user reaches it
    space.mkdir()
    pw = pwd.getpwnam("postgres")
    os.chown(space, pw.pw_uid, pw.pw_gid)
    sql(cluster, f"CREATE TABLESPACE archive_space LOCATION '{space}'")
    r = run_playbook([{"name": "dump", DUMP: {"name": SET, "source": physical_source(cluster), "dest": str(dest)}}])
    assert r.rc != 0
    failed = r.result("dump")
    assert failed["error"] == "source", failed
    assert "archive_space" in failed["msg"] and "one tablespace" in failed["msg"], failed["msg"]
    assert cluster.password not in r.output
    leftovers = [p for p in dest.rglob("*") if p.is_file() and not p.name.startswith(".")] if dest.exists() else []
    assert leftovers == []


# --- restore -----------------------------------------------------------------------------------


def restored_running(datadir) -> bool:
    return os.path.exists(os.path.join(datadir, "postmaster.pid"))


@pytest.fixture
def restored_dirs():
    """Data directories restores may create; any server left in one is stopped afterwards."""
    made = []

    def make(parent) -> str:
        path = os.path.join(str(parent), f"restored-{_uid()}")
        made.append(path)
        return path

    try:
        yield make
    finally:
        for path in made:
            if restored_running(path):
                subprocess.run(_as_postgres(["/usr/lib/postgresql/15/bin/pg_ctl", "-D", path, "-m", "immediate",
                                             "-w", "stop"]), capture_output=True, check=False)


def physical_target(datadir, port, **extra) -> dict:
    return dict({"type": "postgresql_physical", "data_directory": datadir, "port": port,
                 "offsite_backup_command": cli_prefix()}, **extra)


def restored_sql(port, text, password=None) -> str:
    env = {"PGHOST": LOOPBACK, "PGPORT": str(port), "PGUSER": "postgres"}
    if password:
        env["PGPASSWORD"] = password
    return pg.run_sql("postgres", text, env=env).strip()


def test_restore_immediate_and_bad_input(cluster, workdir, moto, bucket, restored_dirs):
    identity, recipient = age_key(workdir)
    repo = s3_repo(moto, bucket, prefix="pitr")
    dest = workdir / "dest"
    r = run_playbook([
        {"name": "dump", DUMP: {"name": SET, "source": physical_source(cluster), "dest": str(dest),
                                "encryption": {"recipients": [recipient]}}, "register": "dumped"},
        {"name": "upload", "offsite.backup.upload": {"backup": "{{ dumped.backup }}", "repositories": [repo]}},
    ])
    assert r.rc == 0, r.output
    at_backup = sql(cluster, "SELECT count(*), md5(string_agg(note, ',' ORDER BY id)) FROM orders")
    sql(cluster, "INSERT INTO orders SELECT g, 'after' FROM generate_series(1001, 1100) g")
    created = r.result("dump")["backup"]["created"]
    decrypt = {"identity_file": str(identity)}

    busy = restored_dirs(cluster.tmpdir)
    os.mkdir(busy)
    (Path(busy) / "PG_VERSION").write_text("15\n")
    early, damaged, good = restored_dirs(cluster.tmpdir), restored_dirs(cluster.tmpdir), restored_dirs(cluster.tmpdir)
    local = local_repo(dest)
    [artifact] = (dest / SET).glob("*.tar.zst.age")
    port = free_port()
    tasks = [
        {"name": "not empty", RESTORE: {"name": SET, "repository": repo, "encryption": decrypt,
                                        "target": physical_target(busy, port, recovery_target="immediate")},
         "ignore_errors": True},
        {"name": "too early", RESTORE: {"name": SET, "repository": repo, "encryption": decrypt,
                                        "target": physical_target(early, port, recovery_target_time="2020-01-01T00:00:00Z")},
         "ignore_errors": True},
        {"name": "damaged", RESTORE: {"name": SET, "repository": local, "encryption": decrypt,
                                      "target": physical_target(damaged, port, recovery_target="immediate",
                                                                password=cluster.password)},
         "ignore_errors": True},
        {"name": "immediate", RESTORE: {"name": SET, "repository": repo, "encryption": decrypt,
                                        "target": physical_target(good, port, recovery_target="immediate",
                                                                  password=cluster.password)}},
    ]
    # one flipped byte in the middle of the local copy: the checksum fails, nothing is started
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    r = run_playbook(tasks)
    assert r.rc == 0, r.output

    not_empty = r.result("not empty")
    assert not_empty["error"] == "target", not_empty
    assert "not empty" in not_empty["msg"]
    assert os.listdir(busy) == ["PG_VERSION"]  # left alone

    too_early = r.result("too early")
    assert too_early["error"] == "not_found", too_early
    assert "2020-01-01T00:00:00Z" in too_early["msg"] and not os.path.exists(early)

    bad = r.result("damaged")
    assert bad["error"] == "integrity", bad
    assert not os.path.exists(damaged)
    assert not restored_running(damaged)

    done = r.result("immediate")
    restored = done["restored"]
    assert restored["data_directory"] == good and restored["port"] == port
    assert set(restored["phases"]) >= {"extract_seconds", "recovery_seconds", "promote_seconds", "restart_seconds"}
    assert restored["timeline"] == 2  # promoted: a new timeline
    assert done["backup"]["created"] == created
    assert restored_sql(port, "SELECT pg_is_in_recovery()", cluster.password) == "f"
    assert restored_sql(port, "SELECT count(*), md5(string_agg(note, ',' ORDER BY id)) FROM orders",
                        cluster.password) == at_backup
    st = os.stat(good)
    assert oct(st.st_mode & 0o777) == "0o700" and pwd.getpwuid(st.st_uid).pw_name == "postgres"
    # the recovery job file (S3 keys, the identity) is gone; no secret in the output
    assert not any(p.startswith("offsite-restore-pitr-") for p in os.listdir("/tmp") if os.path.exists(f"/tmp/{p}/recovery.yml")
                   and open(f"/tmp/{p}/recovery.yml").read().find(bucket) >= 0)
    assert cluster.password not in r.output and repo["secret_key"] not in r.output
    auto = (Path(good) / "postgresql.auto.conf").read_text()
    assert "restore_command" not in auto and f"port = {port}" in auto and "archive_mode = 'off'" in auto


class Archived:
    """A cluster archiving through wal-push (signed segments) into a local repository, one base
    backup, then: rows 1-10, a segment switch (``middle``: the segment holding them), rows 11-20,
    T (``target``), rows 21-40, a switch. Restores read copies of the repository (``copy``) when
    they damage it."""

    def __init__(self, src: WalCluster):
        self.src = src
        self.repo = src.mkdir("repo")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(src.home, "sign")], check=True)
        self.signing_key = src.give(os.path.join(src.home, "sign"), "signing_key")
        self.public = Path(src.home, "sign.pub").read_text().strip()
        src.write_job({"name": "pitr", "local": {"path": src.mkdir("local")},
                       "sources": [{"name": SET, "source": {"type": "postgresql_physical", "host": LOOPBACK,
                                                            "user": "postgres"}}],
                       "repositories": [{"type": "local", "path": self.repo}],
                       "signing": {"key_file": self.signing_key, "trusted_keys": [self.public]}})
        src.start(archive_command=src.push_command())
        src.configure(port=src.port)
        job = yaml.safe_load(Path(src.job).read_text())
        job["sources"][0]["source"]["port"] = src.port
        src.write_job(job)
        src.sql("CREATE TABLE ledger (id int PRIMARY KEY, committed timestamptz DEFAULT clock_timestamp())")
        backup = src.cli("run", src.job, "--json")
        assert backup.returncode == 0, backup.stdout + backup.stderr
        for i in range(1, 11):
            src.sql(f"INSERT INTO ledger (id) VALUES ({i})")
        self.middle = src.switch_wal()
        for i in range(11, 21):
            src.sql(f"INSERT INTO ledger (id) VALUES ({i})")
        # T: the next whole second after the last row before it; the rows after it wait until a
        # second has passed beyond T (recovery_target_time is given to the second)
        self.target = src.sql("SELECT to_char((date_trunc('second', clock_timestamp()) + interval '1 second') "
                              "AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')")
        while src.sql(f"SELECT clock_timestamp() > '{self.target}'::timestamptz + interval '1 second'") != "t":
            time.sleep(0.1)
        for i in range(21, 41):
            src.sql(f"INSERT INTO ledger (id) VALUES ({i})")
        self.newest = src.switch_wal()
        src.wait_archived(self.newest)

    def copy(self, name: str) -> str:
        """A copy of the repository, the server's user's (wal-fetch runs as it)."""
        path = os.path.join(self.src.home, name)
        shutil.copytree(self.repo, path)
        subprocess.run(["chown", "-R", "postgres:postgres", path], check=True)
        return path

    def restore(self, datadir, port, repo=None, **target) -> dict:
        return {RESTORE: {"name": SET, "repository": {"type": "local", "path": repo or self.repo},
                          "signing": {"trusted_keys": [self.public]},
                          "target": physical_target(datadir, port, **target)}}


@pytest.fixture(scope="module")
def archived():
    with WalCluster() as src:
        yield Archived(src)


def segment_files(repo: str, name: str) -> list:
    return sorted(Path(repo, ".wal", SET).glob(name + ".*"))


def nothing_left(datadir, port) -> None:
    """No server on the port, no data directory, no wal-fetch of it running."""
    assert not os.path.exists(datadir), os.listdir(datadir)
    with socket.socket() as probe:
        assert probe.connect_ex((LOOPBACK, port)) != 0, f"something listens on {port}"
    procs = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert datadir not in procs


def test_restore_to_a_time_keeps_what_was_committed_before_it(archived, restored_dirs):
    """Rows committed before T are there, those after it are not; the time reached is <= T."""
    datadir = restored_dirs(archived.src.home)
    port = free_port()
    r = run_playbook([dict(name="pitr", **archived.restore(datadir, port, recovery_target_time=archived.target))])
    assert r.rc == 0, r.output
    restored = r.result("pitr")["restored"]
    assert restored["reached_time"] <= archived.target.replace("Z", ".999999Z")
    assert restored["state"] == "running" and restored["timeline"] == 2
    rows = restored_sql(port, "SELECT string_agg(id::text, ',' ORDER BY id) FROM ledger")
    assert rows == ",".join(str(i) for i in range(1, 21))
    assert not Path(datadir, ".offsite-restore.owner").exists()
    # wal-fetch's prefetcher ran (segments came from its spool), and ended with its spool
    assert restored["phases"]["wal_prefetched"] >= 1, restored["phases"]
    assert not Path(datadir, "offsite_wal_spool").exists()
    procs = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert not [line for line in procs.splitlines() if "wal-fetch" in line and datadir in line], procs


def test_pause_leaves_it_paused_at_the_target_and_shutdown_leaves_it_stopped(archived, restored_dirs):
    """pause: running, in recovery, paused at T, on its private socket only, no job file left; a
    resume ends recovery there. shutdown: no server, a finished recovery that starts as it is."""
    paused_dir, stopped_dir = restored_dirs(archived.src.home), restored_dirs(archived.src.home)
    paused_port, stopped_port = free_port(), free_port()
    r = run_playbook([
        dict(name="pause", **archived.restore(paused_dir, paused_port, recovery_target_time=archived.target,
                                              recovery_target_action="pause")),
        dict(name="shutdown", **archived.restore(stopped_dir, stopped_port, recovery_target_time=archived.target,
                                                 recovery_target_action="shutdown")),
    ])
    assert r.rc == 0, r.output
    paused = r.result("pause")["restored"]
    assert paused["state"] == "paused" and paused["recovery_job_kept"] is False
    sock = paused["socket_directory"]
    assert sorted(n for n in os.listdir(sock) if not n.startswith(".s.PGSQL")) == ["recovery.log"]
    with socket.socket() as probe:  # no TCP: only the private socket
        assert probe.connect_ex((LOOPBACK, paused_port)) != 0
    env = {"PGHOST": sock, "PGPORT": str(paused_port), "PGUSER": "postgres"}
    state = pg.run_sql("postgres", "SELECT pg_is_in_recovery(), pg_get_wal_replay_pause_state(), "
                                   "string_agg(id::text, ',' ORDER BY id) FROM ledger", env=env).strip()
    assert state == "t|paused|" + ",".join(str(i) for i in range(1, 21))
    pg.run_sql("postgres", "SELECT pg_wal_replay_resume()", env=env)
    deadline = time.monotonic() + 60
    while pg.run_sql("postgres", "SELECT pg_is_in_recovery()", env=env).strip() != "f":
        assert time.monotonic() < deadline, "the resumed server did not end recovery"
        time.sleep(0.1)
    subprocess.run(_as_postgres(["/usr/lib/postgresql/15/bin/pg_ctl", "-D", paused_dir, "-m", "fast", "-w", "stop"]),
                   cwd="/", capture_output=True, check=True)
    shutil.rmtree(sock)

    stopped = r.result("shutdown")["restored"]
    assert stopped["state"] == "stopped" and stopped["timeline"] == 2
    assert not restored_running(stopped_dir) and not Path(stopped_dir, "recovery.signal").exists()
    control = subprocess.run(["/usr/lib/postgresql/15/bin/pg_controldata", stopped_dir], capture_output=True,
                             text=True, check=True).stdout
    assert "Database cluster state:               shut down" in control
    subprocess.run(_as_postgres(["/usr/lib/postgresql/15/bin/pg_ctl", "-D", stopped_dir, "-l",
                                 os.path.join(stopped_dir, "started.log"), "-w", "start"]),
                   cwd="/", capture_output=True, check=True)
    assert restored_sql(stopped_port, "SELECT pg_is_in_recovery(), string_agg(id::text, ',' ORDER BY id) FROM ledger") \
        == "f|" + ",".join(str(i) for i in range(1, 21))


def test_bad_archives_fail_clearly_and_leave_nothing(archived, restored_dirs):
    """A hole in the middle of the window (to T, and to latest), a damaged segment, a segment whose
    signature fails, a segment of another cluster: each restore fails with integrity, names the
    problem, leaves no server and no directory."""
    from ansible_collections.offsite.backup.plugins.module_utils._engine import wal

    home = archived.src.home
    gap, damaged, forged, foreign = (archived.copy(n) for n in ("gap", "damaged", "forged", "foreign"))
    for path in segment_files(gap, archived.middle):
        path.unlink()
    [payload] = [p for p in segment_files(damaged, archived.middle) if not p.name.endswith(".json")]
    data = bytearray(payload.read_bytes())
    data[len(data) // 2] ^= 0xFF
    payload.write_bytes(bytes(data))
    [manifest] = [p for p in segment_files(forged, archived.middle) if p.name.endswith(".json")]
    signed = json.loads(manifest.read_text())
    signed["created"] = "2020-01-01T00:00:00Z"  # the signature covers it
    manifest.write_text(json.dumps(signed))
    # the same segment with another cluster's system identifier, signed by the right key
    raw = os.path.join(home, archived.middle)
    wal.fetch(SET, archived.middle, raw, [{"type": "local", "path": archived.repo}])
    data = bytearray(Path(raw).read_bytes())
    data[24:32] = (int.from_bytes(data[24:32], "little") ^ 1).to_bytes(8, "little")
    Path(raw).write_bytes(bytes(data))
    for path in segment_files(foreign, archived.middle):
        path.unlink()
    wal.push(SET, raw, [{"type": "local", "path": foreign}], signing={"key_file": archived.signing_key})
    subprocess.run(["chown", "-R", "postgres:postgres", foreign], check=True)

    port = free_port()
    cases = {"gap": (gap, {"recovery_target_time": archived.target}), "gap latest": (gap, {}),
             "damaged": (damaged, {"recovery_target_time": archived.target}),
             "forged": (forged, {"recovery_target_time": archived.target}),
             "foreign": (foreign, {"recovery_target_time": archived.target})}
    dirs = {name: restored_dirs(home) for name in cases}
    r = run_playbook([dict(name=name, ignore_errors=True, **archived.restore(dirs[name], port, repo=repo, **target))
                      for name, (repo, target) in cases.items()])
    assert r.rc == 0, r.output
    said = {name: r.result(name) for name in cases}
    print(json.dumps({name: result.get("msg") for name, result in said.items()}, indent=1))
    for name, result in said.items():
        assert result.get("error") == "integrity", (name, result.get("msg"))
        nothing_left(dirs[name], port)
    assert "hole" in said["gap"]["msg"] and archived.middle in said["gap"]["msg"], said["gap"]["msg"]
    assert "latest stopped at" in said["gap latest"]["msg"] and archived.middle in said["gap latest"]["msg"]
    assert archived.newest[:24] in said["gap latest"]["msg"], said["gap latest"]["msg"]
    assert archived.middle in said["damaged"]["msg"] and "sha256" in said["damaged"]["msg"], said["damaged"]["msg"]
    assert "signature" in said["forged"]["msg"], said["forged"]["msg"]
    assert "another cluster" in said["foreign"]["msg"], said["foreign"]["msg"]


ENGINE = ("import json, sys\n"
          "from ansible_collections.offsite.backup.plugins.module_utils._engine import operations\n"
          "operations.restore(**json.loads(sys.argv[1]))\n")


def _poll(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.02)


def _warden_of(pid: int) -> int:
    rows = subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True, text=True, check=True).stdout
    [warden] = [int(r.split()[0]) for r in rows.splitlines() if int(r.split()[1]) == pid and " -S -c" in r]
    return warden


def test_a_restore_killed_with_sigkill_leaves_no_server_and_no_directory(archived, restored_dirs):
    """kill -9 of the engine at a random point (seeded, printed): while the base backup is being
    extracted (after a random number of files), or during recovery (when restore_command is called
    for the k-th time, k random; it waits at a gate there). The warden stops the server and
    removes the directory. With the warden killed too, the lease left in the directory lets the
    cleanup sweep do it."""
    seed = int(os.environ.get("PITR_KILL_SEED") or random.SystemRandom().randrange(2 ** 32))
    print(f"PITR_KILL_SEED={seed}")
    rng = random.Random(seed)
    home = archived.src.home
    gate = archived.src.write("gate.sh", 'GATE=$1; shift; echo "$*" >> "$GATE/calls"\n'
                              'while [ "$(wc -l < "$GATE/calls")" -gt "$(cat "$GATE/limit")" ]; do sleep 0.05; done\n'
                              f'exec {cli_prefix()} "$@"\n')
    for scenario in ("extract", "recovery", "recovery, warden killed too"):
        gates = archived.src.mkdir(f"gate-{_uid()}")
        limit = rng.randrange(0, 4)
        Path(gates, "limit").write_text(f"{limit}\n")
        Path(gates, "calls").write_text("")
        subprocess.run(["chown", "-R", "postgres:postgres", gates], check=True)
        datadir, port = restored_dirs(home), free_port()
        target = physical_target(datadir, port, recovery_target_time=archived.target,
                                 offsite_backup_command=f"sh {gate} {gates}")
        args = {"name": SET, "repository": {"type": "local", "path": archived.repo}, "target": target,
                "signing": {"trusted_keys": [archived.public]}}
        engine = subprocess.Popen([str(VENV_BIN / "python"), "-c", ENGINE, json.dumps(args)],
                                  env=dict(os.environ, PYTHONPATH=str(COLLECTIONS_PATH)), stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            if scenario == "extract":
                files = rng.randrange(1, 400)
                print(f"{scenario}: kill after {files} files")

                def extracted():
                    assert engine.poll() is None, engine.stderr.read()
                    return sum(len(names) for dummy, dummy2, names in os.walk(datadir)) >= files
                _poll(extracted, f"{files} files extracted")
            else:
                print(f"{scenario}: kill at restore_command call {limit + 1}")
                _poll(lambda: len(Path(gates, "calls").read_text().splitlines()) > limit,
                      f"restore_command called {limit + 1} times")
                assert restored_running(datadir)
                if "warden" in scenario:
                    os.kill(_warden_of(engine.pid), signal.SIGKILL)
            os.kill(engine.pid, signal.SIGKILL)
            engine.wait(timeout=60)
        finally:
            if engine.poll() is None:
                engine.kill()
            engine.stderr.close()
        if "warden" in scenario:
            assert restored_running(datadir)  # nobody cleaned up: the lease says whose it was
            swept = operations.cleanup({"type": "postgresql_physical", "data_directory": datadir, "port": port})
            assert f"data directory {datadir} of a killed restore" in swept["removed"], swept
        _poll(lambda: not os.path.exists(datadir), f"{datadir} removed")
        nothing_left(datadir, port)
        # the recovery's run directory, the job file with the repository's keys in it, is gone too
        calls = Path(gates, "calls").read_text().split()
        for run_dir in {os.path.dirname(word) for word in calls if word.endswith("/recovery.yml")}:
            assert os.path.basename(run_dir).startswith("offsite-restore-pitr-")
            _poll(lambda: not os.path.exists(run_dir), f"{run_dir} removed")
        procs = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
        assert gates not in procs  # no restore_command waits at the gate either
