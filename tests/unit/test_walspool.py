# Copyright (c) offsite.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""wal-fetch's spool (walspool.py): the fast path serves only a proven segment of its own restore,
the prefetcher spools exactly what the synchronous fetch writes and stops at a missing segment or
at the end of recovery, and a ``kill -9`` of the prefetcher at any point leaves wal-fetch correct.

Real local repositories and the real ``offsite-backup`` command (subprocesses); a stand-in for
the postmaster (a sleeping process named in ``postmaster.pid``). The PostgreSQL side is
tests/integration/test_pitr_base.py."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import importlib.util
import itertools
import json
import os
import signal
import struct
import subprocess
import sys
import time

import pytest

from ansible_collections.offsite.backup.plugins.module_utils._engine import wal, walspool
from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import IntegrityError
from tests.harness import COLLECTIONS_PATH

SET = "crm_cluster"
CLI = [sys.executable, "-m", "ansible_collections.offsite.backup.plugins.module_utils._engine.cli"]


def _name(seg, timeline=1):
    return "%08X%08X%08X" % (timeline, 0, seg)


def _segment(path, seg, sysid=42):
    data = struct.pack("<HHIQI4xQII", 0xD110, 0x0006, 1, 0, 0, sysid, 16 << 20, 8192) + os.urandom(1 << 16)
    path.write_bytes(data)
    return data


class Restore(object):
    """A repository with segments 1..count pushed, a job file naming it, and a data directory
    in recovery (a live stand-in postmaster) with its 0700 spool."""

    def __init__(self, tmp_path, count=6):
        self.tmp = tmp_path
        repo = tmp_path / "repo"
        repo.mkdir()
        self.repos = [{"type": "local", "path": str(repo)}]
        self.data = {}
        for seg in range(1, count + 1):
            source = tmp_path / _name(seg)
            self.data[_name(seg)] = _segment(source, seg)
            wal.push(SET, str(source), self.repos)
        self.job = tmp_path / "recovery.yml"
        self.job.write_text(json.dumps({
            "name": "recovery", "local": {"path": str(tmp_path / "local")},
            "sources": [{"name": SET, "source": {"type": "postgresql_physical"}}],
            "repositories": self.repos, "log": {"path": str(tmp_path / "job.log")}}))
        self.datadir = tmp_path / "data"
        (self.datadir / "pg_wal").mkdir(parents=True)
        self.postmaster = subprocess.Popen(["sleep", "600"])
        (self.datadir / "postmaster.pid").write_text("%d\n" % self.postmaster.pid)
        (self.datadir / "recovery.signal").write_text("")
        self.spool = self.datadir / walspool.SPOOL_NAME
        self.spool.mkdir(mode=0o700)
        self.key = walspool.key_text(str(self.job), None, "42")

    def argv(self, name, *extra):
        return ["wal-fetch", str(self.job), name, str(self.datadir / "pg_wal" / "RECOVERYXLOG"),
                "--spool", str(self.spool), "--system-identifier", "42"] + list(extra)

    def fetch(self, name, *extra):
        """wal-fetch as PostgreSQL runs it: (exit status, bytes delivered or None, stderr)."""
        dest = self.datadir / "pg_wal" / "RECOVERYXLOG"
        if dest.exists():
            dest.unlink()
        done = subprocess.run(CLI + self.argv(name, *extra), cwd=str(self.datadir), capture_output=True, text=True,
                              check=False, env=dict(os.environ, PYTHONPATH=str(COLLECTIONS_PATH)))
        return done.returncode, dest.read_bytes() if dest.exists() else None, done.stderr

    def prefetcher(self):
        """The pid holding the spool's lock, or None."""
        return int(self._read("lock")) if walspool._held(str(self.spool)) and self._read("lock").strip() else None

    def _read(self, name):
        try:
            return (self.spool / name).read_text()
        except OSError:
            return ""

    def close(self):
        walspool.stop(str(self.spool))
        self.postmaster.kill()
        self.postmaster.wait()


@pytest.fixture
def restore(tmp_path):
    r = Restore(tmp_path)
    try:
        yield r
    finally:
        r.close()


def _wait(condition, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_the_command_line_of_the_fast_path():
    argv = ["wal-fetch", "job.yml", _name(3), "pg_wal/RECOVERYXLOG", "--spool", "/d/s", "--set=crm",
            "--system-identifier", "7"]
    assert walspool.parse(argv) == {"job": "job.yml", "file": _name(3), "dest": "pg_wal/RECOVERYXLOG",
                                    "spool": "/d/s", "set": "crm", "system_identifier": "7"}
    assert walspool.parse(argv[:4]) is None                       # no spool: the ordinary way
    assert walspool.parse(argv + ["--json"]) is None
    assert walspool.parse(argv + ["--unknown"]) is None
    assert walspool.parse(["wal-push", "job.yml", "p"]) is None
    assert walspool.following(_name(0xFF), 16 << 20) == "000000010000000100000000"
    assert walspool.following("0000000200000003000000FE", 16 << 20) == "0000000200000003000000FF"
    assert walspool.following("000000020000000300000003", 1 << 30) == "000000020000000400000000"


def test_one_wal_fetch_process_asks_the_spool_once(monkeypatch, tmp_path):
    """The fast path runs when the command line module is imported; main() must not try again
    for the same arguments: a second try waits for a segment being prefetched a second time
    (up to walspool.WAIT_SECONDS) before fetching it the ordinary way."""
    asked = []
    monkeypatch.setattr(walspool, "serve", lambda argv: asked.append(list(argv)))  # nothing spooled
    monkeypatch.setattr(walspool, "_ASKED", [])
    argv = ["wal-fetch", str(tmp_path / "missing.yml"), _name(3), str(tmp_path / "RECOVERYXLOG"),
            "--spool", str(tmp_path / "spool")]
    monkeypatch.setattr(sys, "argv", ["offsite-backup"] + argv)
    spec = importlib.util.find_spec(CLI[-1])
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)  # as ``python -m ...cli wal-fetch ...`` starts
    assert asked == [argv]
    assert cli.main(argv) == cli.EXIT_ABORT_RECOVERY  # no job file: recovery must stop, not end
    assert asked == [argv]
    other = argv[:2] + [_name(4)] + argv[3:]
    assert cli.main(other) == cli.EXIT_ABORT_RECOVERY  # called with other arguments: it asks
    assert asked == [argv, other]


def test_the_fast_path_serves_only_a_segment_of_its_own_restore(restore, tmp_path):
    spool, name = restore.spool, _name(2)
    dest = tmp_path / "out"
    argv = ["wal-fetch", str(restore.job), name, str(dest), "--spool", str(spool), "--system-identifier", "42"]
    (spool / name).write_bytes(b"spooled")
    assert walspool.serve(argv) is None                            # no key: nobody's spool
    (spool / walspool.KEY_FILE).write_text(walspool.key_text(str(restore.job), None, "43"))
    assert walspool.serve(argv) is None and not dest.exists()      # another cluster's restore
    (spool / walspool.KEY_FILE).write_text(restore.key)
    (spool / (_name(3) + ".1a2b3c4d.partial")).write_bytes(b"half")
    assert walspool.serve(argv[:2] + [_name(3)] + argv[3:]) is None  # a partial file is never served
    assert walspool.serve(argv[:2] + ["00000002.history"] + argv[3:]) is None
    os.chmod(str(spool), 0o755)
    assert walspool.serve(argv) is None                            # a spool others could write to
    os.chmod(str(spool), 0o700)
    assert walspool.serve(argv) == 0
    assert dest.read_bytes() == b"spooled" and not (spool / name).exists()
    assert (spool / walspool.SERVED_FILE).read_text() == name + "\n"


def test_the_prefetcher_spools_what_the_synchronous_fetch_writes_and_stops_at_a_missing_segment(restore, tmp_path):
    session = wal.Session()
    fetched = []

    def fetch_one(name, path):
        fetched.append(name)
        wal.fetch(SET, name, path, restore.repos, system_identifier="42", session=session)

    (restore.spool / walspool.KEY_FILE).write_text(restore.key)
    (restore.spool / _name(1)).write_bytes(b"behind: purged")
    clock = itertools.count()
    why = walspool.prefetch(str(restore.spool), restore.key, _name(1), fetch_one, wal.NotArchived, count=3,
                            idle=5, clock=lambda: next(clock), sleep=lambda s: None)
    session.close()
    assert why == "idle for 5s"
    assert fetched == [_name(2), _name(3), _name(4)]                # K ahead, no more
    assert walspool.ready(str(restore.spool)) == [_name(2), _name(3), _name(4)]
    for name in walspool.ready(str(restore.spool)):
        synchronous = tmp_path / ("sync-" + name)
        wal.fetch(SET, name, str(synchronous), restore.repos)
        assert (restore.spool / name).read_bytes() == synchronous.read_bytes() == restore.data[name]

    # PostgreSQL took 2..4 from the spool and asked for 5 the ordinary way: 6, then 7 is missing
    for name in (_name(2), _name(3), _name(4)):
        os.unlink(str(restore.spool / name))
    (restore.spool / walspool.WANT_FILE).write_text(_name(5))
    fetched[:] = []
    why = walspool.prefetch(str(restore.spool), restore.key, _name(4), fetch_one, wal.NotArchived, count=3,
                            idle=5, clock=lambda: next(clock), sleep=lambda s: None)
    assert fetched == [_name(6), _name(7)] and walspool.ready(str(restore.spool)) == [_name(6)]
    assert not [n for n in os.listdir(str(restore.spool)) if n.endswith(".partial")]

    # recovery over, the server gone, the spool another restore's: it stops at once
    assert walspool.ended(str(restore.spool), restore.key) is None
    os.unlink(str(restore.datadir / "recovery.signal"))
    assert walspool.ended(str(restore.spool), restore.key) == "recovery ended"
    (restore.datadir / "recovery.signal").write_text("")
    (restore.datadir / "postmaster.pid").write_text("999999999\n")
    assert walspool.ended(str(restore.spool), restore.key) == "the server stopped"
    assert walspool.ended(str(restore.spool), walspool.key_text(str(restore.job), "other", "42"))


def test_a_segment_of_another_cluster_is_refused_with_integrity(restore, tmp_path):
    with pytest.raises(IntegrityError) as raised:
        wal.fetch(SET, _name(1), str(tmp_path / "out"), restore.repos, system_identifier="43")
    assert "another cluster" in str(raised.value) and not (tmp_path / "out").exists()
    rc, data, err = restore.fetch(_name(1), "--system-identifier", "43")
    assert rc == 255 and data is None and "integrity" in err, err
    assert restore.prefetcher() is None                             # nothing was started either


def test_wal_fetch_prefetches_and_a_kill_9_of_the_prefetcher_leaves_it_correct(restore):
    rc, data, err = restore.fetch(_name(1))
    assert rc == 0 and data == restore.data[_name(1)], err
    _wait(lambda: restore.prefetcher() is not None, "a prefetcher runs")
    first = restore.prefetcher()
    _wait(lambda: walspool.ready(str(restore.spool)) == [_name(n) for n in range(2, 7)], "2..6 spooled")
    rc, data, err = restore.fetch(_name(2))                         # from the spool
    assert rc == 0 and data == restore.data[_name(2)], err
    assert restore._read(walspool.SERVED_FILE).split() == [_name(2)]

    # killed: what it spooled is proven and served; a half-written file it left is not
    os.kill(first, signal.SIGKILL)
    _wait(lambda: restore.prefetcher() is None, "the lock is free")
    (restore.spool / _name(3)).unlink()
    (restore.spool / (_name(3) + ".0badf00d.partial")).write_bytes(b"half a segment")
    rc, data, err = restore.fetch(_name(3))                         # the ordinary way, and a new prefetcher
    assert rc == 0 and data == restore.data[_name(3)], err
    _wait(lambda: restore.prefetcher() not in (None, first), "a new prefetcher")
    assert not [n for n in os.listdir(str(restore.spool)) if n.endswith(".partial")]
    for seg in (4, 5, 6):
        rc, data, err = restore.fetch(_name(seg))
        assert rc == 0 and data == restore.data[_name(seg)], err

    # the end of the archive is "not archived" (exit 1), not a failure of the spool
    rc, data, err = restore.fetch(_name(7))
    assert rc == 1 and data is None and "no repository holds" in err, err
    assert restore._read(walspool.SERVED_FILE).split() == [_name(n) for n in (2, 4, 5, 6)]

    # the restore's end: the prefetcher ends, the spool goes, nothing runs
    second = restore.prefetcher()
    assert walspool.stop(str(restore.spool)) == 4
    assert not restore.spool.exists()
    _wait(lambda: not os.path.exists("/proc/%d" % second) or "zombie" in _state(second), "the prefetcher ended")


def test_the_prefetcher_ends_by_itself_when_the_server_stops(restore):
    rc, data, err = restore.fetch(_name(1))
    assert rc == 0, err
    _wait(lambda: restore.prefetcher() is not None, "a prefetcher runs")
    pid = restore.prefetcher()
    restore.postmaster.kill()
    restore.postmaster.wait()
    _wait(lambda: restore.prefetcher() is None, "the prefetcher ended")
    _wait(lambda: not os.path.exists("/proc/%d" % pid) or "zombie" in _state(pid), "the prefetcher ended")
    assert not [n for n in os.listdir(str(restore.spool)) if n.endswith(".partial")]


def _state(pid):
    try:
        with open("/proc/%d/status" % pid) as handle:
            return handle.read()
    except OSError:
        return "zombie"
