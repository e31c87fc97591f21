"""Scratch work names its owner; only work of a provably dead owner is removed."""

from __future__ import annotations

import json
import os
import re
import subprocess

from ansible_collections.offsite.backup.plugins.module_utils._engine import scratch
from ansible_collections.offsite.backup.plugins.module_utils._engine.commands import CommandLog
from ansible_collections.offsite.backup.plugins.module_utils._engine.sources.files import FilesSource


def dead_lease():
    """The lease of a process that ran on this host and has ended."""
    proc = subprocess.Popen(["sleep", "30"])
    owner = dict(scratch.lease(), pid=proc.pid, start=scratch.lifeline.process_start(proc.pid)[1])
    proc.kill()
    proc.wait()
    return owner


def test_owner_states():
    assert scratch.owner_gone(scratch.lease()) is False
    assert scratch.owner_gone(dead_lease()) is True
    assert scratch.owner_gone(dict(scratch.lease(), boot="another-boot")) is True
    assert scratch.owner_gone(dict(scratch.lease(), host="elsewhere.example")) is None
    assert scratch.owner_gone(None) is None
    assert scratch.owner_gone({"host": scratch.socket.gethostname(), "pid": "x"}) is None


def test_comment_round_trip():
    owner = scratch.lease()
    assert scratch.parse_comment(scratch.comment(owner)) == owner
    assert scratch.parse_comment("an ordinary comment") is None
    assert scratch.parse_comment(scratch.MARK + "{not json") is None


def write(path, owner):
    with open(path, "w") as handle:
        json.dump(owner, handle)


def test_work_dir_sweep_removes_only_dead_owners(tmp_path):
    mine = scratch.make_work_dir(str(tmp_path))
    assert oct(os.stat(mine).st_mode & 0o777) == "0o700"
    assert oct(os.stat(os.path.join(mine, scratch.OWNER_FILE)).st_mode & 0o777) == "0o600"
    dead = tmp_path / "offsite-restore-dead"
    dead.mkdir()
    write(dead / scratch.OWNER_FILE, dead_lease())
    (dead / "artifact.dump").write_bytes(b"decrypted secrets")
    unknown = tmp_path / "offsite-redis-old"
    unknown.mkdir()
    other = tmp_path / "not-ours"
    other.mkdir()
    check = scratch.sweep_work_dirs(str(tmp_path), scratch.Sweep(check_mode=True))
    assert check.removed == ["work directory %s" % dead] and dead.exists()
    sweep = scratch.sweep_work_dirs(str(tmp_path), scratch.Sweep())
    assert sweep.removed == ["work directory %s" % dead]
    assert [k["what"] for k in sweep.kept] == ["work directory %s" % unknown]
    assert not dead.exists() and os.path.isdir(mine) and unknown.exists() and other.exists()


def test_files_scratch_beside_the_target(tmp_path):
    target = tmp_path / "restored"
    dead = tmp_path / ".restored.restore-0123abcd"
    live = tmp_path / ".restored.restore-4567cdef"
    for path, owner in ((dead, dead_lease()), (live, scratch.lease())):
        path.mkdir()
        (path / "file").write_text("x")
        write(str(path) + ".owner", owner)
    other_target = tmp_path / ".other.restore-89abcdef"
    other_target.mkdir()
    write(str(other_target) + ".owner", dead_lease())
    sweep = FilesSource({"type": "files", "path": str(target)}, CommandLog()).sweep_scratch(scratch.Sweep())
    assert sweep.removed == ["scratch directory %s" % dead]
    assert not dead.exists() and not os.path.exists(str(dead) + ".owner")
    assert live.exists() and other_target.exists()


def test_a_failing_removal_is_kept_with_why():
    sweep = scratch.Sweep()

    def fail():
        raise OSError("read-only file system")
    sweep.judge("thing", dead_lease(), fail)
    assert sweep.removed == [] and sweep.kept == [{"what": "thing", "why": "removing it failed: read-only file system"}]


def test_redis_partial_snapshots_in_data_dir(tmp_path):
    from ansible_collections.offsite.backup.plugins.module_utils._engine.sources.redis import RedisSource
    dead, live = tmp_path / "dump.rdb.offsite-11.partial", tmp_path / "dump.rdb.offsite-12.partial"
    for path, owner in ((dead, dead_lease()), (live, scratch.lease())):
        path.write_bytes(b"REDIS0011")
        write(str(path) + ".owner", owner)
    (tmp_path / "dump.rdb").write_bytes(b"REDIS0011")
    sweep = RedisSource({"type": "redis", "data_dir": str(tmp_path)}, CommandLog()).sweep_scratch(scratch.Sweep())
    assert sweep.removed == ["partial snapshot %s" % dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dump.rdb", live.name, live.name + ".owner"]


def test_previous_databases_are_swept_only_when_marked_for_dropping():
    """A replace marks the previous database with its lease only when it is to be dropped: a kept
    previous (keep_previous, no mark, or the user's own comment) is never swept nor reported."""
    from ansible_collections.offsite.backup.plugins.module_utils._engine.sources.postgresql import PostgresqlSource
    source = PostgresqlSource({"type": "postgresql", "database": "crm"}, CommandLog())
    assert re.match(source.scratch_pattern(), "crm_previous_0123abcd")
    dead = scratch.comment(dead_lease())
    rows = [("crm_previous_0000000a", dead), ("crm_previous_0000000b", ""),
            ("crm_previous_0000000c", "CRM production"), ("crm_previous_0000000d", scratch.comment()),
            ("crm_restore_0000000e", "")]
    dropped = []
    sweep = source.judge_databases(scratch.Sweep(), rows, "here", dropped.append)
    assert dropped == ["crm_previous_0000000a"]
    assert [kept["what"] for kept in sweep.kept] == ["scratch database crm_restore_0000000e on here"]
