"""``executed_commands`` is the truth: every external command an operation ran, whichever source,
repository or encryption ran it, and never a secret. One test per repository type and per source
type, through the engine's operations with a real ``CommandLog`` (what ``_common.run`` hands
them) against the loopback services; one through ansible-playbook, where the modules return
that same log.

What the log holds, per repository type:

- ``restic``: every restic call (``cat config``, ``snapshots``, ``backup --stdin``, ``dump``,
  ``forget``, the one ``prune`` at close);
- ``rsync``: every rsync transfer with its ``-e 'ssh ...'`` (a listing is ``--list-only``, a
  deletion ``--delete``) and the ``ssh -O exit`` that ends the shared connection;
- ``local``, ``s3``, ``sftp``, ``b2``: nothing. They speak to their store through Python (os,
  boto3, paramiko, b2sdk), so an info or a retention on them logs nothing at all and an upload,
  verify or restore logs only what the source, the validation and the encryption ran.

Per source type: postgresql pg_dump / psql / pg_restore, mysql mariadb-dump (mysqldump) and
mariadb (mysql), redis redis-cli (and redis-server for a snapshot check), files tar for the dump
only (a restore extracts with Python's tarfile); in a container each is wrapped in ``docker exec``.

Every backup here is encrypted with a passphrase and every store has a secret (a key
passphrase, a secret key, a restic password and a ``restic_env`` value): none may appear.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

COLLECTIONS = str(Path(__file__).resolve().parents[2] / ".cache" / "collections")
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)

from ansible_collections.offsite.backup.plugins.module_utils._engine import commands as engine_commands  # noqa: E402
from ansible_collections.offsite.backup.plugins.module_utils._engine import operations  # noqa: E402
from ansible_collections.offsite.backup.plugins.module_utils._engine import verify as verifying  # noqa: E402
from ansible_collections.offsite.backup.plugins.module_utils._engine.commands import CommandLog  # noqa: E402
from tests.harness import b2sim  # noqa: E402
from tests.harness.ansible import run_playbook  # noqa: E402
from tests.harness.containers import fake_docker_env, invocations  # noqa: E402
from tests.harness.redis import RedisServer  # noqa: E402
from tests.integration.helpers import local_repo, pg_source, rsync_repo, s3_repo, sftp_repo  # noqa: E402

pytestmark = pytest.mark.integration

PASSPHRASE = "enc-" + uuid.uuid4().hex
ENCRYPTION = {"passphrase": PASSPHRASE}
# what the files source, the archive validation and the passphrase encryption run
NOT_THE_REPOSITORY = {"tar", "gpg"}


def _uid() -> str:
    return uuid.uuid4().hex[:8]


def programs(commands: list[str]) -> list[str]:
    """The program of each recorded call, past a ``stdbuf -o N`` that runs it block-buffered."""
    return [os.path.basename(engine_commands._program(shlex.split(c))) for c in commands]


def calls(commands: list[str], program: str) -> list[list[str]]:
    """The argv (split) of every recorded call of ``program``."""
    return [shlex.split(c) for c, name in zip(commands, programs(commands)) if name == program]


def assert_no_secret(logs: dict, secrets: list[str]) -> None:
    text = "\n".join("\n".join(c) for c in logs.values())
    for secret in secrets:
        assert secret not in text, (secret, logs)


def logged(operation, *args, **kwargs):
    """Run an engine operation as a module does (its own CommandLog); (result, commands)."""
    log = CommandLog()
    result = operation(*args, log=log, **kwargs)
    return result, log.commands


def run_cycle(repository: dict, tmp_path: Path) -> dict:
    """dump twice (files, encrypted), upload both, info, verify everything, retention keeping the
    last, restore: every operation's log, keyed by its name. The restore is checked byte for byte."""
    tree = tmp_path / "site"
    tree.mkdir()
    (tree / "index.html").write_bytes(os.urandom(4096))
    dest = tmp_path / "dumps"
    logs = {"dump": [], "upload": []}
    for dummy in range(2):
        dumped, log = logged(operations.dump, "site", {"type": "files", "paths": [str(tree)]}, str(dest),
                             encryption=ENCRYPTION)
        logs["dump"] += log
        uploaded, log = logged(operations.upload, dumped["backup"], [repository])
        assert uploaded["repositories"][0]["status"] == "uploaded", uploaded
        logs["upload"] += log
    found, logs["info"] = logged(operations.info, "site", repository)
    assert found["count"] == 2, found
    checked, logs["verify"] = logged(verifying.verify, "site", [repository], read_data="all", encryption=ENCRYPTION)
    assert checked["ok"] and checked["read"] == 2, checked
    kept, logs["retention"] = logged(operations.retention, "site", repository, {"keep_last": 1}, grace_hours=0)
    assert len(kept["removed"]) == 1, kept
    restored, logs["restore"] = logged(operations.restore, "site", repository,
                                       {"type": "files", "path": str(tmp_path / "restored")}, encryption=ENCRYPTION)
    assert restored["status"] == "restored", restored
    back = tmp_path / "restored" / str(tree).lstrip("/") / "index.html"
    assert back.read_bytes() == (tree / "index.html").read_bytes()
    # what dump, verify and restore ran for the source, the validation and the encryption, on
    # every type (the files target extracts with Python's tarfile: no tar there)
    assert calls(logs["dump"], "tar") and calls(logs["dump"], "gpg"), logs["dump"]
    assert calls(logs["verify"], "gpg") and calls(logs["verify"], "tar"), logs["verify"]
    assert calls(logs["restore"], "gpg") and not calls(logs["restore"], "tar"), logs["restore"]
    return logs


def repository_programs(commands: list[str]) -> set[str]:
    return set(programs(commands)) - NOT_THE_REPOSITORY


# -- repository types that run no command: their log says so -------------------------------------------
def assert_silent_store(logs: dict) -> None:
    assert logs["info"] == [] and logs["retention"] == [], logs
    for op in ("upload", "verify", "restore"):
        assert repository_programs(logs[op]) == set(), (op, logs[op])


def test_local_repository_logs_no_command(tmp_path):
    (tmp_path / "repo").mkdir()
    logs = run_cycle(local_repo(tmp_path / "repo"), tmp_path)
    assert_silent_store(logs)
    assert_no_secret(logs, [PASSPHRASE])


def test_s3_repository_logs_no_command(moto, bucket, tmp_path):
    logs = run_cycle(s3_repo(moto, bucket), tmp_path)
    assert_silent_store(logs)
    assert_no_secret(logs, [PASSPHRASE, moto.secret_key])


def test_sftp_repository_logs_no_command(sshd, tmp_path):
    secret = "keypass-" + _uid()
    key = sshd.add_key(f"log-sftp-{_uid()}", passphrase=secret)
    repo = sftp_repo(sshd, sshd.make_dir(f"cmdlog-sftp-{_uid()}"), private_key=key, private_key_passphrase=secret)
    logs = run_cycle(repo, tmp_path)
    assert_silent_store(logs)
    assert_no_secret(logs, [PASSPHRASE, secret])


def test_b2_repository_logs_no_command(tmp_path):
    with b2sim.simulated() as sim:
        logs = run_cycle(sim.options(), tmp_path)
    assert_silent_store(logs)
    assert_no_secret(logs, [PASSPHRASE, sim.key])


# -- repository types that run tools: every call is there -------------------------------------------------
def test_rsync_repository_logs_every_transfer(sshd, tmp_path):
    secret = "keypass-" + _uid()
    key = sshd.add_key(f"log-rsync-{_uid()}", passphrase=secret)
    repo = rsync_repo(sshd, sshd.make_dir(f"cmdlog-rsync-{_uid()}"), private_key=key, private_key_passphrase=secret)
    logs = run_cycle(repo, tmp_path)
    for op in ("upload", "info", "verify", "retention", "restore"):
        assert repository_programs(logs[op]) == {"rsync", "ssh"}, (op, logs[op])
        transfers = calls(logs[op], "rsync")
        # every transfer goes through our pinned ssh (the key file is named, never its passphrase)
        assert all(argv[1] == "-e" and "StrictHostKeyChecking=yes" in argv[2] and key in argv[2]
                   for argv in transfers), logs[op]
        # and the shared connection is ended when the repository is closed
        assert calls(logs[op], "ssh")[-1][-3:] == ["-p", str(sshd.port), f"{sshd.user}@{sshd.host}"], logs[op]
        assert "-O" in calls(logs[op], "ssh")[-1], logs[op]
    assert any("--list-only" in argv for argv in calls(logs["info"], "rsync")), logs["info"]
    assert any("--delete" in argv for argv in calls(logs["retention"], "rsync")), logs["retention"]
    assert_no_secret(logs, [PASSPHRASE, secret])


def test_restic_repository_logs_every_call(tmp_path):
    password, token = "restic-" + _uid(), "token-" + _uid()
    repo = {"type": "restic", "restic_repository": str(tmp_path / "restic"), "restic_password": password,
            "restic_init": True, "restic_env": {"OFFSITE_TEST_TOKEN": token}}
    logs = run_cycle(repo, tmp_path)

    def subcommands(op):
        return [argv[1] for argv in calls(logs[op], "restic")]
    for op in ("upload", "info", "verify", "retention", "restore"):
        assert repository_programs(logs[op]) == {"restic"}, (op, logs[op])
        assert subcommands(op)[0] == "cat", logs[op]  # the first look, bounded in time
    assert "init" in subcommands("upload") and "backup" in subcommands("upload"), logs["upload"]
    assert all("--stdin" in argv for argv in calls(logs["upload"], "restic") if argv[1] == "backup")
    assert "snapshots" in subcommands("info"), logs["info"]
    assert "dump" in subcommands("verify") and "dump" in subcommands("restore"), logs
    # retention: the old backup's two snapshots forgotten, then one prune when the repository closes
    assert "forget" in subcommands("retention") and subcommands("retention")[-1] == "prune", logs["retention"]
    # a self-check asked of info is restic check
    checked, logs["check"] = logged(operations.info, "site", repo, repository_check="100%")
    assert checked["repository_check"]["ok"], checked
    assert ["--read-data-subset=100%"] == [a for a in calls(logs["check"], "restic")[-1] if a.startswith("--read")]
    assert_no_secret(logs, [PASSPHRASE, password, token])


def test_rsync_snapshot_logs_its_transfers(sshd, tmp_path):
    """A tree snapshot and its restore are rsync transfers; nothing changed: a dry run only."""
    tree = tmp_path / "www"
    tree.mkdir()
    (tree / "index.html").write_text("hello")
    repo = rsync_repo(sshd, sshd.make_dir(f"cmdlog-tree-{_uid()}"))
    source = {"type": "files", "paths": [str(tree)]}
    first, made = logged(operations.snapshot, "www", source, repo)
    assert first["status"] == "snapshot", first
    again, unchanged = logged(operations.snapshot, "www", source, repo)
    assert again["status"] == "unchanged", again
    restored, restore = logged(operations.restore, "www", repo, {"type": "files", "path": str(tmp_path / "back")})
    assert restored["status"] == "restored", restored
    assert (tmp_path / "back" / str(tree).lstrip("/") / "index.html").read_text() == "hello"
    # the source's probe asks tar its version; everything else is rsync, and ssh at close
    assert set(programs(made)) == set(programs(unchanged)) == {"tar", "rsync", "ssh"}, (made, unchanged)
    assert set(programs(restore)) == {"rsync", "ssh"}, restore
    assert any(f"{tree}" in argv and "--list-only" not in argv for argv in calls(made, "rsync")), made
    assert any("--dry-run" in argv for argv in calls(unchanged, "rsync")), unchanged


# -- source types --------------------------------------------------------------------------------------
def dump_and_restore(name: str, source: dict, target: dict, tmp_path: Path, **dump_options) -> dict:
    dest = tmp_path / "dumps"
    dumped, dump_log = logged(operations.dump, name, source, str(dest), **dump_options)
    restored, restore_log = logged(operations.restore, name, local_repo(dest), target,
                                   encryption=dump_options.get("encryption"))
    assert restored["status"] == "restored", restored
    return {"dump": dump_log, "restore": restore_log, "backup": dumped}


def test_files_source_logs_tar_and_restores_without_a_command(tmp_path):
    """tar archives; the restore extracts with Python's tarfile (every entry checked), so its
    log is empty."""
    tree = tmp_path / "etc"
    tree.mkdir()
    (tree / "app.conf").write_text("x = 1\n")
    logs = dump_and_restore("etc", {"type": "files", "paths": [str(tree)]},
                            {"type": "files", "path": str(tmp_path / "back")}, tmp_path)
    assert set(programs(logs["dump"])) == {"tar"} and logs["restore"] == [], logs
    assert any("--create" in argv for argv in calls(logs["dump"], "tar")), logs["dump"]
    assert (tmp_path / "back" / str(tree).lstrip("/") / "app.conf").read_text() == "x = 1\n"


def _scram_psql(scram_pg, sql: str) -> None:
    subprocess.run(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-d", "postgres", "-c", sql],
                   env=dict(os.environ, **scram_pg.env()), check=True, capture_output=True)


def test_postgresql_source_logs_pg_tools_and_docker(scram_pg, tmp_path, monkeypatch):
    name = f"offsite_log_{_uid()}"
    _scram_psql(scram_pg, f"CREATE DATABASE {name}")
    _scram_psql(scram_pg, f"DROP DATABASE IF EXISTS {name}_copy")
    try:
        server = dict(port=scram_pg.port, password=scram_pg.password)
        logs = dump_and_restore("pg", pg_source(name, **server), pg_source(f"{name}_copy", mode="create", **server),
                                tmp_path)
        assert "pg_dump" in programs(logs["dump"]), logs["dump"]
        if shutil.which("stdbuf"):  # its output reaches our pipe in blocks of 1 MiB, not 4 KiB
            dumping = [argv for argv in calls(logs["dump"], "pg_dump") if "--version" not in argv]
            assert dumping and all(os.path.basename(argv[0]) == "stdbuf" for argv in dumping), logs["dump"]
        assert "pg_restore" in programs(logs["restore"]) and "psql" in programs(logs["restore"]), logs["restore"]
        assert_no_secret(logs, [scram_pg.password])

        # in a container: docker exec with the password passed by name only
        docker_log = tmp_path / "docker.log"
        for variable, value in fake_docker_env(docker_log, containers=("db",)).items():
            monkeypatch.setenv(variable, value)
        dumped, in_container = logged(operations.dump, "pgc", pg_source(name, container="db", **server),
                                      str(tmp_path / "container-dumps"))
        assert set(programs(in_container)) == {"docker"}, in_container
        pg_dump = [argv for argv in calls(in_container, "docker") if "pg_dump" in argv]
        assert pg_dump and pg_dump[0][1] == "exec", in_container
        before = pg_dump[0][:pg_dump[0].index("pg_dump")]
        assert before[-1] == "db" and "PGPASSWORD" in before, in_container  # by name: -e PGPASSWORD
        assert any("pg_dump" in line for line in invocations(docker_log)), invocations(docker_log)
        assert_no_secret({"docker": in_container, "ran": invocations(docker_log)}, [scram_pg.password])
    finally:
        _scram_psql(scram_pg, f"DROP DATABASE IF EXISTS {name}")
        _scram_psql(scram_pg, f"DROP DATABASE IF EXISTS {name}_copy")


MYSQL = ["mysql", "--host=127.0.0.1", "--port=3306", "--user=root", "--batch", "--skip-column-names"]


def _mysql(sql: str) -> None:
    subprocess.run(MYSQL, input=sql, text=True, check=True, capture_output=True)


def test_mysql_source_logs_dump_and_load_tools(tmp_path):
    name, user, password = f"offsite_log_{_uid()}", f"offsite_log_{_uid()}", "my-" + uuid.uuid4().hex
    _mysql(f"CREATE DATABASE `{name}`; CREATE TABLE `{name}`.t (id INT PRIMARY KEY); INSERT INTO `{name}`.t VALUES (1);"
           f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'; CREATE USER '{user}'@'localhost' IDENTIFIED BY "
           f"'{password}'; GRANT ALL ON *.* TO '{user}'@'%'; GRANT ALL ON *.* TO '{user}'@'localhost';")
    try:
        server = {"type": "mysql", "host": "127.0.0.1", "port": 3306, "user": user, "password": password}
        logs = dump_and_restore("my", dict(server, database=name), dict(server, database=name + "_copy", mode="create"),
                                tmp_path)
        dumpers = set(programs(logs["dump"])) & {"mysqldump", "mariadb-dump"}
        loaders = set(programs(logs["restore"])) & {"mysql", "mariadb"}
        assert dumpers and loaders, logs
        assert_no_secret(logs, [password])
    finally:
        _mysql(f"DROP DATABASE IF EXISTS `{name}`; DROP DATABASE IF EXISTS `{name}_copy`;"
               f"DROP USER IF EXISTS '{user}'@'%'; DROP USER IF EXISTS '{user}'@'localhost';")


def test_redis_source_logs_redis_cli(tmp_path):
    secret, other = "redis-" + uuid.uuid4().hex, "redis-" + uuid.uuid4().hex
    with RedisServer(password=secret) as src, RedisServer(password=other) as target:
        src.call("SET", "greeting", "bonjour")
        logs = dump_and_restore("cache", src.source(), dict(target.source(), mode="create"), tmp_path)
        assert target.call("GET", "greeting") == b"bonjour"
    assert any("--rdb" in argv for argv in calls(logs["dump"], "redis-cli")), logs["dump"]
    assert calls(logs["restore"], "redis-cli"), logs["restore"]
    assert_no_secret(logs, [secret, other])


# -- through the modules: executed_commands is that log ----------------------------------------------------
def test_modules_return_the_repository_commands(sshd, tmp_path):
    """backup_info and retention on restic and rsync return restic's and rsync's calls."""
    tree = tmp_path / "www"
    tree.mkdir()
    (tree / "a.txt").write_text("a")
    restic_pw = "restic-" + _uid()
    restic = {"type": "restic", "restic_repository": str(tmp_path / "restic"), "restic_password": "{{ pw }}",
              "restic_init": True}
    rsync = rsync_repo(sshd, sshd.make_dir(f"cmdlog-play-{_uid()}"))
    # the backup to upload comes from the engine: the dump module is tested elsewhere
    backup = operations.dump("www", {"type": "files", "paths": [str(tree)]}, str(tmp_path / "dumps"))["backup"]
    tasks = [{"name": "upload", "offsite.backup.upload": {"backup": backup, "repositories": [restic, rsync]}}]
    for label, repo in (("restic", restic), ("rsync", rsync)):
        tasks += [{"name": f"info {label}", "offsite.backup.backup_info": {"name": "www", "repository": repo}},
                  {"name": f"retention {label}", "offsite.backup.retention": {
                      "name": "www", "repository": repo, "policy": {"keep_last": 1}}}]
    r = run_playbook(tasks, extravars={"pw": restic_pw})
    assert r.rc == 0 and not r.failed_tasks, r.output
    upload = r.result("upload")["executed_commands"]
    assert "restic" in programs(upload) and "rsync" in programs(upload), upload
    info = r.result("info restic")["executed_commands"]
    # the first look, the listing, then each manifest read back
    assert [shlex.split(c)[1] for c in info] == ["cat", "snapshots", "dump"], info
    assert "restic" in programs(r.result("retention restic")["executed_commands"])
    assert any("--list-only" in shlex.split(c) for c in r.result("info rsync")["executed_commands"])
    assert "rsync" in programs(r.result("retention rsync")["executed_commands"])
    assert restic_pw not in r.stdout + r.stderr
