"""Continuous WAL archiving (issue 17, items 2 and 7): real PostgreSQL 15 clusters made by the test
(initdb, free port, temp dir; tests/harness/walcluster.py) whose archive_command is
``offsite-backup wal-push``, into local, S3 (moto) and SFTP repositories, with age encryption and
signed segment manifests; ``wal-fetch`` as PostgreSQL's restore_command."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import uuid

import pytest

from tests.harness.walcluster import WalCluster
from tests.integration.helpers import s3_repo, sftp_repo

FAST = {"timeout": 3, "retries": 0}


@pytest.fixture
def cluster():
    pg = WalCluster()
    try:
        yield pg
    finally:
        pg.remove()


def keys_for(pg: WalCluster) -> dict:
    """An age identity and an SSH signing key, in files the server's user owns."""
    subprocess.run(["age-keygen", "-o", os.path.join(pg.home, "age.key")], check=True, capture_output=True)
    identity = pg.give(os.path.join(pg.home, "age.key"), "identity.txt")
    recipient = subprocess.run(["age-keygen", "-y", identity], check=True, capture_output=True, text=True).stdout.strip()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(pg.home, "sign")], check=True)
    signing_key = pg.give(os.path.join(pg.home, "sign"), "signing_key")
    public = open(os.path.join(pg.home, "sign.pub")).read().strip()
    return {"identity": identity, "recipient": recipient, "signing_key": signing_key, "public": public}


def job_for(pg: WalCluster, repositories: list, keys: dict | None = None, **extra) -> dict:
    job = {"name": "wal%s" % uuid.uuid4().hex[:6], "local": {"path": pg.mkdir("local")},
           "sources": [{"name": "crm_dump", "source": {"type": "postgresql", "database": "postgres"}},
                       {"name": "crm_cluster", "source": {"type": "postgresql_physical"}}],
           "repositories": repositories, "log": {"path": os.path.join(pg.home, "job.log")}}
    if keys:
        job["encryption"] = {"recipients": [keys["recipient"]]}
        job["signing"] = {"key_file": keys["signing_key"], "trusted_keys": [keys["public"]]}
    job.update(extra)
    return job


def sftp_dir(sshd) -> str:
    return sshd.make_dir("wal-%s" % uuid.uuid4().hex[:8])


def three_repositories(pg, moto, bucket, sshd) -> list:
    sftp = sftp_repo(sshd, sftp_dir(sshd), private_key=pg.give(sshd.private_key, "sftp_key"),
                     known_hosts=pg.give(sshd.known_hosts, "known_hosts"))
    return [s3_repo(moto, bucket, prefix="prod", **FAST), sftp, {"type": "local", "path": pg.mkdir("nas")}]


def stored(moto, bucket, repo) -> dict:
    """{file name: manifest} of the WAL a repository holds (payload sizes checked)."""
    from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories import open_repository
    with open_repository(dict(repo, **({"endpoint_url": moto.endpoint_url} if repo["type"] == "s3" else {}))) as r:
        objects = dict((o.key, o) for o in r.list(".wal/crm_cluster/"))
        found = {}
        for key in objects:
            if key.endswith(".json"):
                manifest = json.loads(r.get_bytes(key))
                assert objects[".wal/crm_cluster/" + manifest["artifact"]].size == manifest["size"]
                found[manifest["id"]] = manifest
        return found


def fetch(pg: WalCluster, job: str, name: str, dest: str, *extra: str) -> subprocess.CompletedProcess:
    return pg.cli("wal-fetch", job, name, dest, *extra)


def test_segments_arrive_complete_everywhere_and_pushing_again_is_idempotent(cluster, moto, bucket, sshd):
    pg = cluster
    keys = keys_for(pg)
    repos = three_repositories(pg, moto, bucket, sshd)
    pg.write_job(job_for(pg, repos, keys))
    pg.start(archive_command=pg.push_command(), wal_keep_size="1GB")
    names = []
    for dummy in range(3):
        pg.sql("CREATE TABLE IF NOT EXISTS t(x text); INSERT INTO t SELECT md5(i::text) FROM generate_series(1, 20000) i")
        names.append(pg.switch_wal())
    pg.wait_archived(names[-1])
    segments = [n for n in pg.wal_files() if len(n) == 24 and n <= names[-1]]
    assert names[-1] in segments
    for repo in repos:
        held = stored(moto, bucket, repo)
        assert set(segments) <= set(held), repo["type"]
        for name in segments:
            manifest = held[name]
            assert manifest["raw_size"] == 16 << 20 and manifest["artifact"] == name + ".wal.zst.age"
            assert manifest["encryption"]["recipients"] == [keys["recipient"]] and manifest["signature"]
            assert manifest["system_identifier"] == pg.sql("SELECT system_identifier FROM pg_control_system()")
    # each repository serves each segment byte for byte, with the identity given on the command line
    recovery = pg.write_job(dict(job_for(pg, repos), encryption={"recipients": [keys["recipient"]]},
                                 signing={"trusted_keys": [keys["public"]]}), "recovery.yml")
    for index in range(len(repos)):
        only = pg.write_job(dict(job_for(pg, [repos[index]]), encryption={"recipients": [keys["recipient"]]},
                                 signing={"trusted_keys": [keys["public"]]}), "only.yml")
        dest = os.path.join(pg.home, "fetched")
        result = fetch(pg, only, segments[0], dest, "--identity-file", keys["identity"])
        assert result.returncode == 0, result.stderr
        with open(dest, "rb") as got, open(os.path.join(pg.datadir, "pg_wal", segments[0]), "rb") as want:
            assert got.read() == want.read()
        os.unlink(dest)
    # pushing an archived segment again: success, nothing rewritten
    before = stored(moto, bucket, repos[2])[segments[0]]
    again = pg.cli("wal-push", pg.job, os.path.join(pg.datadir, "pg_wal", segments[0]), "--json")
    assert again.returncode == 0, again.stderr
    assert [o["status"] for o in json.loads(again.stdout)["repositories"]] == ["present"] * 3
    assert stored(moto, bucket, repos[2])[segments[0]] == before
    # a different content under that name: refused with both checksums, PostgreSQL would keep it
    impostor = os.path.join(pg.home, segments[0])
    with open(impostor, "wb") as handle:
        handle.write(os.urandom(16 << 20))
    os.chown(impostor, pg.uid, pg.gid)
    refused = pg.cli("wal-push", pg.job, impostor)
    assert refused.returncode == 1
    assert "different content" in refused.stderr and before["raw_sha256"] in refused.stderr
    assert stored(moto, bucket, repos[2])[segments[0]] == before
    # recovery's view: missing is 1 (end of archive); no identity is 255 (recovery aborts)
    missing = fetch(pg, recovery, "0000000100000000000000F0", os.path.join(pg.home, "x"), "--identity-file",
                    keys["identity"])
    assert missing.returncode == 1 and "no repository holds" in missing.stderr
    no_key = fetch(pg, recovery, segments[0], os.path.join(pg.home, "x"))
    assert no_key.returncode == 255 and "identity_file" in no_key.stderr
    assert not os.path.exists(os.path.join(pg.home, "x"))


def test_a_damaged_or_forged_segment_aborts_recovery_a_missing_one_ends_it(cluster, tmp_path):
    pg = cluster
    keys = keys_for(pg)
    nas = pg.mkdir("nas")
    pg.write_job(job_for(pg, [{"type": "local", "path": nas}], keys))
    pg.start(archive_command=pg.push_command())
    first = pg.switch_wal()
    second = pg.switch_wal()
    pg.wait_archived(second)
    recovery = pg.write_job(dict(job_for(pg, [{"type": "local", "path": nas}]),
                                 encryption={"recipients": [keys["recipient"]], "identity_file": keys["identity"]},
                                 signing={"trusted_keys": [keys["public"]]}), "recovery.yml")
    dest = os.path.join(pg.home, "RECOVERYXLOG")
    assert fetch(pg, recovery, first, dest).returncode == 0
    os.unlink(dest)
    base = os.path.join(nas, ".wal", "crm_cluster")
    # one flipped byte in the stored payload
    payload = os.path.join(base, first + ".wal.zst.age")
    data = bytearray(open(payload, "rb").read())
    data[len(data) // 2] ^= 0x01
    open(payload, "wb").write(bytes(data))
    damaged = fetch(pg, recovery, first, dest)
    assert damaged.returncode == 255 and "checksum" in damaged.stderr and first in damaged.stderr
    assert not os.path.exists(dest) and not [f for f in os.listdir(pg.home) if f.startswith("RECOVERYXLOG")]
    # a manifest whose checksums were rewritten to match other bytes: the signature no longer verifies
    manifest_path = os.path.join(base, second + ".json")
    manifest = json.load(open(manifest_path))
    manifest["raw_sha256"] = "0" * 64
    open(manifest_path, "w").write(json.dumps(manifest))
    forged = fetch(pg, recovery, second, dest)
    assert forged.returncode == 255 and "signature" in forged.stderr
    # an unreachable repository is no "end of archive" either
    gone = pg.write_job(dict(job_for(pg, [{"type": "local", "path": os.path.join(pg.home, "unmounted")}])),
                        "gone.yml")
    unreachable = fetch(pg, gone, "0000000100000000000000F0", dest)
    assert unreachable.returncode == 255 and "does not exist" in unreachable.stderr
    # a wrong command line too
    assert pg.cli("wal-fetch", recovery, first).returncode == 255


class Outage:
    """A TCP forwarder to a server that can go down (connections refused) and come back on the
    same port: a repository outage without losing what the server holds."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = []
        self.up()

    def up(self) -> None:
        if self.listener is None:
            self.listener = socket.socket()
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind(("127.0.0.1", self.port))
        self.listener.listen(16)
        listener = self.listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        self.listener.close()
        self.listener = None
        for conn in self.open:
            try:
                conn.close()
            except OSError:
                pass
        self.open = []

    def _accept(self, listener) -> None:
        while True:
            try:
                client, dummy = listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            self.open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b) -> None:
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        if self.listener is not None:
            self.down()


def test_a_repository_outage_makes_postgresql_retry_and_nothing_is_lost(cluster, moto, bucket):
    pg = cluster
    outage = Outage(moto.port)
    try:
        s3 = s3_repo(moto, bucket, prefix="wal", endpoint_url="http://127.0.0.1:%d" % outage.port, **FAST)
        repos = [s3, {"type": "local", "path": pg.mkdir("nas")}]
        pg.write_job(job_for(pg, repos))
        pg.start(archive_command=pg.push_command())
        first = pg.switch_wal()
        pg.wait_archived(first)
        outage.down()
        during = [pg.switch_wal() for dummy in range(3)]
        deadline = time.monotonic() + 120
        while pg.archiver()["failed_count"] < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        state = pg.archiver()
        assert state["failed_count"] >= 2 and state["last_archived_wal"] == first
        assert state["last_failed_wal"] == during[0]
        assert "held by 1 of 2 repositories, 2 needed" in pg.log_text()
        ready = os.listdir(os.path.join(pg.datadir, "pg_wal", "archive_status"))
        assert "%s.ready" % during[0] in ready  # PostgreSQL keeps the segment
        outage.up()
        last = pg.switch_wal()
        pg.wait_archived(last)  # the backlog drains once the repository is back (no timing asserted)
        every = {first, *during, last}
        for repo in repos:
            held = stored(moto, bucket, dict(repo, endpoint_url=moto.endpoint_url) if repo["type"] == "s3" else repo)
            assert every <= set(held), repo["type"]
            timeline_one = sorted(n for n in held if len(n) == 24)
            assert [int(n[16:], 16) for n in timeline_one] == list(range(1, int(last[16:], 16) + 1))
    finally:
        outage.close()


def test_a_promoted_server_archives_its_new_timeline_beside_the_old(cluster):
    pg = cluster
    nas = pg.mkdir("nas")
    pg.write_job(job_for(pg, [{"type": "local", "path": nas}]))
    pg.start(archive_command=pg.push_command())
    pg.sql("CREATE TABLE t(x int); INSERT INTO t VALUES (1)")
    before = pg.switch_wal()
    pg.wait_archived(before)
    standby = WalCluster(beside=pg, name="standby")
    try:
        standby._run(["pg_basebackup", "-h", pg.sockdir, "-p", str(pg.port), "-U", "postgres", "-D", standby.datadir,
                      "-X", "stream", "--no-sync"])
        pg.sql("INSERT INTO t VALUES (2)")
        tail = pg.switch_wal()
        pg.wait_archived(tail)
        pg.stop()
        open(os.path.join(standby.datadir, "standby.signal"), "w").close()
        os.chown(os.path.join(standby.datadir, "standby.signal"), pg.uid, pg.gid)
        standby.start(archive_command=standby.push_command(),
                      restore_command=standby.fetch_command())
        deadline = time.monotonic() + 120
        while standby.sql("SELECT count(*) FROM t") != "2" and time.monotonic() < deadline:
            time.sleep(0.5)
        assert standby.sql("SELECT count(*) FROM t") == "2"  # replayed from the archive
        standby._run(["pg_ctl", "-D", standby.datadir, "-w", "-t", "60", "promote"])
        assert standby.sql("SELECT pg_walfile_name(pg_current_wal_lsn())").startswith("00000002")
        standby.sql("INSERT INTO t VALUES (3)")
        after = standby.switch_wal()
        assert after.startswith("00000002")
        standby.wait_archived(after)
        held = stored(None, None, {"type": "local", "path": nas})
        assert "00000002.history" in held and held["00000002.history"]["timeline"] == 2
        assert held["00000002.history"]["system_identifier"] is None
        assert {before, tail} <= set(held) and after in held
        assert [n for n in held if n.endswith(".backup")]  # pg_basebackup's backup history file
        assert held[after]["system_identifier"] == held[before]["system_identifier"]
    finally:
        standby.stop()


def test_the_client_role_turns_archiving_on_and_a_second_run_changes_nothing(cluster):
    from tests.harness.ansible import run_playbook
    from tests.harness.rolehost import runner_dir_lock

    pg = cluster
    pg.start(archive_mode="off")
    assert pg.sql("SHOW archive_mode") == "off"
    nas = pg.mkdir("nas")
    os.makedirs(os.path.join(pg.home, "bin"))
    name = "walrole%s" % uuid.uuid4().hex[:6]
    job = {k: v for k, v in job_for(pg, [{"type": "local", "path": nas}]).items() if k not in ("name", "log")}
    collector = os.path.join(pg.home, "node-exporter")   # node_exporter's textfile directory: root's, 0755
    os.mkdir(collector)
    os.chmod(collector, 0o755)
    job["monitoring"] = {"textfile": {"path": os.path.join(collector, "offsite_backup_%s.prom" % name)}}
    restart = "runuser -u postgres -- %s/pg_ctl -D %s -l %s -w -t 60 -m fast restart" % (pg.bindir, pg.datadir, pg.log)
    client = {"client_manage_packages": False, "client_install_dir": str(runner_dir_lock()),
              "client_config_dir": os.path.join(pg.home, "etc"), "client_log_dir": os.path.join(pg.home, "log"),
              "client_command": os.path.join(pg.home, "bin", "offsite-backup"),
              "client_wal_config_dir": os.path.join(pg.home, "wal-etc"),
              "client_wal_metrics_dir": os.path.join(pg.home, "wal-metrics"),
              "client_jobs": [{"name": name, "schedule": "0 2 * * 0", "job": job, "signing_key": True,
                               "wal_archiving": {"host": pg.sockdir, "port": pg.port, "set": "crm_cluster",
                                                 "restart_command": restart}}]}
    play = [{"name": "database host", "hosts": "localhost", "gather_facts": False, "vars": client,
             "roles": ["offsite.backup.client"]}]
    cron = "/etc/cron.d/offsite-backup-%s" % name
    status_cron = cron + "-wal-status"
    try:
        first = run_playbook(play)
        assert first.rc == 0, first.output
        wal_job = os.path.join(pg.home, "wal-etc", name + ".yml")
        expected = "%s wal-push %s %%p --set crm_cluster" % (client["client_command"], wal_job)
        assert pg.sql("SHOW archive_mode") == "on"  # the handler restarted the cluster
        assert pg.sql("SHOW archive_command") == expected and pg.sql("SHOW archive_timeout") == "1min"
        mode = os.stat(wal_job)
        assert oct(mode.st_mode & 0o777) == "0o640" and mode.st_gid == pg.gid and mode.st_uid == 0
        # the installed command, as the archiver runs it
        segment = pg.switch_wal()
        pg.wait_archived(segment)
        assert stored(None, None, {"type": "local", "path": nas})[segment]["signature"]  # signed by the copied key
        # its metrics reach the collector through a link; the collector's directory stays root's
        prom = os.path.join(collector, "offsite_backup_%s-wal.prom" % name)
        target = os.path.join(pg.home, "wal-metrics", name, os.path.basename(prom))
        assert os.readlink(prom) == target and os.listdir(collector) == [os.path.basename(prom)]
        assert os.stat(collector).st_uid == 0 and oct(os.stat(collector).st_mode & 0o777) == "0o755"
        assert os.stat(os.path.dirname(target)).st_uid == pg.uid
        assert 'backup_wal_last_archived_timestamp_seconds{job="%s"' % name in open(prom).read()
        # wal-status, as its cron entry runs it (the server's user, every minute)
        status_line = open(status_cron).read().strip().splitlines()[-1]
        assert status_line.startswith("* * * * * postgres %s wal-status " % client["client_command"])

        def wal_status() -> dict:
            r = subprocess.run(["runuser", "-u", "postgres", "--", "sh", "-c", status_line.split(None, 6)[6] + " --json"],
                               capture_output=True, text=True, timeout=120, check=False)
            assert r.returncode == 0, r.stderr
            return json.loads(r.stdout)

        # idle (whatever records the server writes by itself): no completed segment waits, once
        # the archiver has caught up
        deadline = time.monotonic() + 120
        while (idle := wal_status())["unarchived_segments"] != 0 and time.monotonic() < deadline:
            time.sleep(1)
        assert idle["unarchived_segments"] == 0 and idle["last_archived_wal"] >= segment, idle
        again = run_playbook(play)
        assert again.rc == 0 and again.stats["localhost"]["changed"] == 0, again.output
        # the weekly base backup beside: the job's own schedule
        assert open(cron).read().strip().splitlines()[-1].startswith("0 2 * * 0 root ")
        # written and not archived (the repository gone: every push fails): the segment waits
        os.rename(nas, nas + ".gone")
        written = pg.switch_wal()
        busy = wal_status()
        assert busy["unarchived_segments"] >= 1 and busy["unarchived_bytes"] >= 16 << 20, busy
        assert busy["last_archived_wal"] < written
        text = open(prom).read()
        assert 'backup_wal_unarchived_segments{job="%s",source="crm_cluster"} %d\n' % (name, busy["unarchived_segments"]) in text
        assert 'backup_wal_last_archived_timestamp_seconds{job="%s"' % name in text
    finally:
        for path in (cron, status_cron):
            if os.path.exists(path):
                os.unlink(path)


def test_postgresql_stops_recovery_at_a_damaged_segment_instead_of_ending_early(cluster):
    """restore_command's exit status as PostgreSQL reads it: 255 is FATAL (the server does not
    start), so recovery never ends quietly before the damaged segment; 1 is the end of the archive."""
    pg = cluster
    nas = pg.mkdir("nas")
    pg.write_job(job_for(pg, [{"type": "local", "path": nas}]))
    pg.start(archive_command=pg.push_command())
    pg.sql("CREATE TABLE t(x int); INSERT INTO t VALUES (1)")
    restored = WalCluster(beside=pg, name="restored")
    try:
        restored._run(["pg_basebackup", "-h", pg.sockdir, "-p", str(pg.port), "-U", "postgres", "-D",
                       restored.datadir, "-X", "stream", "--no-sync"])
        pg.sql("INSERT INTO t VALUES (2)")
        later = pg.switch_wal()
        pg.wait_archived(later)
        pg.stop()
        payload = os.path.join(nas, ".wal", "crm_cluster", later + ".wal.zst")
        good = open(payload, "rb").read()
        damaged = bytearray(good)
        damaged[len(damaged) // 2] ^= 0x01
        open(payload, "wb").write(bytes(damaged))
        open(os.path.join(restored.datadir, "recovery.signal"), "w").close()
        os.chown(os.path.join(restored.datadir, "recovery.signal"), pg.uid, pg.gid)
        with pytest.raises(RuntimeError):
            restored.start(archive_mode="off", restore_command=restored.fetch_command())
        log = restored.log_text()
        assert "FATAL" in log and later in log and "no good copy" in log
        assert not os.path.exists(os.path.join(restored.datadir, "postmaster.pid"))
        # repaired, the same recovery replays it and ends at the end of the archive (exit 1)
        open(payload, "wb").write(good)
        restored._run(["pg_ctl", "-D", restored.datadir, "-l", restored.log, "-w", "-t", "60", "start"])
        restored.started = True
        assert restored.sql("SELECT count(*) FROM t") == "2"
        assert "no repository holds WAL file" in restored.log_text()
    finally:
        restored.stop()
