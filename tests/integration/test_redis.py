"""Redis source and target: real ansible-playbook runs against private redis-servers on loopback
(the shared one on 6379 is never touched).

A snapshot of a password-protected server with several databases and every value type is
restored into a second, running server (keys loaded while it runs) and into the data directory
of a stopped one; then bad input: wrong password, a server that refuses to send a snapshot,
recorded key counts that do not match, a snapshot that does not load, a running server on the
data directory. A failed restore leaves the target as it was.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest

from tests.harness.ansible import run_playbook
from tests.harness.containers import fake_docker_env, invocations
from tests.harness.redis import RedisServer
from tests.integration.helpers import engine_dump, local_repo

pytestmark = pytest.mark.integration


def populate(srv: RedisServer) -> None:
    srv.call("SET", "greeting", "bonjour")
    srv.call("SET", b"bin\x00\xffkey", b"\x00\x01\x02\xfe")
    srv.call("SET", "session:1", "temp", "EX", "3600")
    srv.call("HSET", "user:1", "name", "Zoé", "mail", "z@example.org")
    srv.call("RPUSH", "queue", "a", "b", "c")
    srv.call("SADD", "tags", "postgres", "redis", "volumes")
    srv.call("ZADD", "scores", "1", "one", "2.5", "two")
    srv.call("XADD", "events", "*", "kind", "backup")
    for i in range(1200):  # more than one SCAN batch
        srv.call("SET", f"cache:{i}", f"v{i}", db=3)


def dump_task(name, src, dest, **extra):
    return {"name": "dump", "offsite.backup.dump": dict({"name": name, "source": src, "dest": str(dest)}, **extra)}


def restore_task(name, dest, target, mode="create"):
    return {"name": "restore", "offsite.backup.restore": {"name": name, "repository": local_repo(dest),
                                                          "target": dict(target, mode=mode)}}


@pytest.fixture
def servers():
    made = []

    def make(**kwargs) -> RedisServer:
        srv = RedisServer(**kwargs).start()
        made.append(srv)
        return srv

    try:
        yield make
    finally:
        for srv in made:
            srv.cleanup()


def test_redis_snapshot_into_running_server_and_data_dir(servers, tmp_path):
    secret = "pw-" + uuid.uuid4().hex[:8]
    src = servers(password=secret)
    populate(src)
    expected = src.fingerprint()
    target = servers(password="other-" + uuid.uuid4().hex[:6])
    r = run_playbook([dump_task("cache", src.source(), tmp_path),
                      restore_task("cache", tmp_path, target.source())])
    assert r.rc == 0, r.output
    assert secret not in r.output and secret not in json.dumps(r.result("dump"))
    facts = r.result("dump")["backup"]["source"]
    assert facts["counts"] == {"keys": {"db0": 8, "db3": 1200}}
    restored = r.result("restore")["restored"]
    assert restored["restored_keys"] == 1208 and restored["verified_databases"] == ["db0", "db3"]
    assert target.fingerprint() == expected

    # replace: changed keys come back, keys that are not in the backup stay
    target.call("SET", "greeting", "changed")
    target.call("SET", "only-here", "x")
    # and then (same run) create refuses a server that holds keys
    r = run_playbook([restore_task("cache", tmp_path, target.source(), mode="replace"),
                      dict(restore_task("cache", tmp_path, target.source()), name="create")])
    assert r.status("restore") == "changed", r.output
    assert target.call("GET", "greeting") == b"bonjour" and target.call("GET", "only-here") == b"x"
    assert r.rc != 0 and r.status("create") == "failed" and r.result("create")["error"] == "target", r.output

    # a stopped server's data directory: refused while one runs there, placed when stopped
    data_dir = tmp_path / "redis-data"
    data_dir.mkdir()
    runner = servers(data_dir=str(data_dir))
    r = run_playbook([restore_task("cache", tmp_path, {"type": "redis", "data_dir": str(data_dir)})])
    assert r.rc != 0 and "runs in" in r.result("restore")["msg"], r.result("restore")
    assert not (data_dir / "dump.rdb").exists()
    runner.stop()
    r = run_playbook([restore_task("cache", tmp_path, {"type": "redis", "data_dir": str(data_dir)})])
    assert r.rc == 0, r.output
    assert oct((data_dir / "dump.rdb").stat().st_mode & 0o777) == "0o600"
    runner.start()
    assert runner.fingerprint() == expected


def test_redis_wrong_password_and_refused_snapshot(servers, tmp_path):
    src = servers(password="right")
    locked = servers(config=['rename-command SYNC ""', 'rename-command PSYNC ""', 'rename-command BGSAVE ""'])
    locked.call("SET", "k", "v")
    # one run: the first failure ignored, the second one ends the play
    r = run_playbook([dict(dump_task("bad", src.source(password="wrong"), tmp_path), ignore_errors=True),
                      dict(dump_task("refused", locked.source(), tmp_path), name="refused")])
    assert r.rc != 0
    assert r.status("dump") == "failed" and r.tasks["dump"]["ignored"], r.output
    res = r.result("dump")
    assert res["error"] == "source" and "refused the password" in res["msg"], res

    assert r.status("refused") == "failed", r.output
    res = r.result("refused")
    assert res["error"] == "source" and "refuses to send a snapshot" in res["msg"], res
    assert not list(tmp_path.rglob("*.rdb*")), "no artifact after a refused snapshot"


def _rewrite(set_dir: Path, artifact: bytes | None = None, counts: dict | None = None) -> None:
    manifest_path = next(set_dir.glob("*.manifest.json"))
    manifest = json.loads(manifest_path.read_text())
    if artifact is not None:
        (set_dir / manifest["artifact"].split("/")[-1]).write_bytes(artifact)
        manifest.update(size=len(artifact), sha256=hashlib.sha256(artifact).hexdigest(), raw_size=len(artifact))
    if counts is not None:
        manifest["source"]["counts"]["keys"].update(counts)
    manifest_path.write_text(json.dumps(manifest))


def test_redis_failed_restores_leave_target_untouched(servers, tmp_path):
    src = servers()
    populate(src)
    target = servers()
    target.call("SET", "precious", "keep me")
    before = target.fingerprint()
    engine_dump("bad", src.source(), tmp_path, compression="none")  # the dump module: the tests above

    _rewrite(tmp_path / "bad", counts={"db3": 1199})
    r = run_playbook([restore_task("bad", tmp_path, target.source(), mode="replace")])
    assert r.rc != 0
    res = r.result("restore")
    assert res["error"] == "integrity" and "db3: 1199 keys in the backup, 1200 loaded" in res["msg"], res.get("exception", res)
    assert target.fingerprint() == before

    _rewrite(tmp_path / "bad", artifact=b"REDIS0010\xfa\x09redis-ver\x067.0.15garbage")
    r = run_playbook([restore_task("bad", tmp_path, target.source(), mode="replace")])
    assert r.rc != 0
    res = r.result("restore")
    assert res["error"] == "integrity" and "does not load" in res["msg"], res.get("exception", res)
    assert target.fingerprint() == before


def test_redis_through_docker_exec(servers, tmp_path):
    src = servers(password="ctr-secret")
    populate(src)
    target = servers()
    log = tmp_path / "docker.log"
    r = run_playbook([dump_task("ctr", src.source(container="redis"), tmp_path),
                      restore_task("ctr", tmp_path, target.source(container="redis-copy"))],
                     env=fake_docker_env(log, containers=("redis", "redis-copy")))
    assert r.rc == 0, r.output
    assert target.fingerprint() == src.fingerprint()
    calls = invocations(log)
    assert any(c.startswith("exec -e REDISCLI_AUTH redis redis-cli ") and "--rdb -" in c for c in calls), calls
    assert any(c.startswith("exec -i redis-copy redis-cli ") and c.endswith("--pipe") for c in calls), calls
    assert "ctr-secret" not in "\n".join(calls)


def test_redis_target_that_runs_out_of_memory_keeps_no_key(servers, tmp_path):
    """The running target refuses RESTOREs half way (maxmemory, noeviction): the task fails
    and, in mode create, the keys restored so far are deleted again."""
    src = servers()
    for i in range(300):
        src.call("SET", f"blob:{i}", "x" * 10000)
    target = servers()
    used = int(target.call("INFO", "memory").decode().split("used_memory:")[1].split()[0])
    target.call("CONFIG", "SET", "maxmemory", str(used + 1024 * 1024))
    target.call("CONFIG", "SET", "maxmemory-policy", "noeviction")
    r = run_playbook([dump_task("oom", src.source(), tmp_path),
                      restore_task("oom", tmp_path, target.source())])
    assert r.rc != 0
    res = r.result("restore")
    assert res["error"] == "target" and "deleted again" in res["msg"], res
    assert target.keyspace() == {}
