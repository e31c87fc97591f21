"""Pure parts of the Redis source: INFO parsing, key-count comparison (with keys that expired
since the backup), the protocol encoding fed to ``redis-cli --pipe``, the recorded counts."""

from __future__ import annotations

from ansible_collections.offsite.backup.plugins.module_utils._engine.commands import CommandLog
from ansible_collections.offsite.backup.plugins.module_utils._engine.sources import redis


def test_keyspace_from_info():
    info = redis.parse_info("# Server\r\nredis_version:7.0.15\r\n# Keyspace\r\ndb0:keys=8,expires=1,avg_ttl=0\r\n"
                            "db3:keys=1200,expires=0,avg_ttl=0\r\n")
    assert info["redis_version"] == "7.0.15"
    assert redis.keyspace(info) == {"db0": {"keys": 8, "expires": 1}, "db3": {"keys": 1200, "expires": 0}}


def test_key_mismatches():
    assert redis.key_mismatches({"db0": 8, "db3": 1200}, {"db0": 8, "db3": 1200}, 0) == []
    assert redis.key_mismatches({"db0": 8}, {"db0": 7}, 0) == ["db0: 8 keys in the backup, 7 loaded"]
    assert redis.key_mismatches({"db0": 8}, {"db0": 9}, 0) == ["db0: 8 keys in the backup, 9 loaded"]
    # one key's TTL ran out since the backup: Redis does not load it
    assert redis.key_mismatches({"db0": 8}, {"db0": 7}, 1) == []
    # expired keys explain only as many missing keys as expired
    assert redis.key_mismatches({"db0": 8, "db1": 2}, {"db0": 7, "db1": 1}, 1) == ["2 keys missing in total, but only 1 expired"]


def test_resp_encoding_is_binary_safe():
    assert redis.resp("SET", b"k\r\n", 5) == b"*3\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$1\r\n5\r\n"


def test_counts_that_moved_during_the_snapshot_are_not_recorded():
    src = redis.RedisSource({"type": "redis"}, CommandLog())
    src._before = {"db0": {"keys": 5, "expires": 0}, "db1": {"keys": 3, "expires": 0}}
    src._after = {"db0": {"keys": 5, "expires": 0}, "db1": {"keys": 4, "expires": 0}}
    assert src.dump_facts() == {"counts": {"keys": {"db0": 5}}, "counts_changed_during_dump": ["db1"]}


def test_password_by_name_and_tls_options():
    src = redis.RedisSource({"type": "redis", "password": "s3cret", "tls": True, "tls_ca_file": "/ca.pem",
                             "container": "cache"}, CommandLog())
    argv = src._cli(["--rdb", "-"])
    assert argv[1:5] == ["exec", "-e", "REDISCLI_AUTH", "cache"]
    assert argv[5:] == ["redis-cli", "-h", "127.0.0.1", "-p", "6379", "--tls", "--cacert", "/ca.pem", "--rdb", "-"]
    assert "s3cret" not in " ".join(argv)
