"""The pure parts of the postgresql_physical source: sizes as SHOW prints them, LSNs, WAL file
names (checked against PostgreSQL's pg_walfile_name semantics), the WAL range read from
pg_basebackup --verbose; on the restore side the choice of the base backup for a target time,
the target checks and the tar extraction that writes nothing outside the data directory."""

from __future__ import annotations

import datetime
import io
import json
import os
import tarfile
import time

import pytest

from ansible_collections.offsite.backup.plugins.module_utils._engine import catalog as cat
from ansible_collections.offsite.backup.plugins.module_utils._engine import scratch as leases
from ansible_collections.offsite.backup.plugins.module_utils._engine import warden
from ansible_collections.offsite.backup.plugins.module_utils._engine.commands import CommandLog
from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import (ConfigError, IntegrityError,
                                                                                    NotFoundError, SourceError,
                                                                                    TargetError)
from ansible_collections.offsite.backup.plugins.module_utils._engine.sources import postgresql_physical as phys

MB16 = 16 * 1024 * 1024


@pytest.mark.parametrize("text, size", [("16MB", MB16), ("1GB", 1024 ** 3), ("8192", 8192), ("64kB", 65536)])
def test_parse_size(text, size):
    assert phys.parse_size(text) == size


def test_parse_size_refuses_nonsense():
    with pytest.raises(SourceError):
        phys.parse_size("sixteen")


def test_lsn_round_trip():
    assert phys.parse_lsn("0/2000028") == 0x2000028
    assert phys.parse_lsn("1A/FF000000") == (0x1A << 32) + 0xFF000000
    assert phys.format_lsn(phys.parse_lsn("1A/FF000000")) == "1A/FF000000"


def test_segment_names_follow_postgresql():
    # pg_walfile_name('0/2000028') on timeline 1 = 000000010000000000000002
    assert phys.segment_name(1, 0x2000028, MB16) == "000000010000000000000002"
    # an end exactly on a segment boundary lies in the previous segment (XLByteToPrevSeg)
    assert phys.segment_name(1, 0x3000000, MB16, previous=True) == "000000010000000000000002"
    assert phys.segment_name(1, 0x3000000, MB16) == "000000010000000000000003"
    # 256 segments of 16 MiB per "log id": 1/00000000 is in log 1, segment 0
    assert phys.segment_name(2, 1 << 32, MB16) == "000000020000000100000000"
    assert phys.segment_name(1, (1 << 32) - 1, MB16) == "0000000100000000000000FF"
    # other segment sizes: 64 per log id at 64 MiB
    assert phys.segment_name(1, 0x4000000 * 3, 64 * 1024 * 1024) == "000000010000000000000003"


STDERR = """pg_basebackup: initiating base backup, waiting for checkpoint to complete
pg_basebackup: checkpoint completed
pg_basebackup: write-ahead log start point: 0/2000028 on timeline 1
pg_basebackup: write-ahead log end point: 0/2000100
pg_basebackup: base backup completed
"""


def test_backup_progress_reads_the_wal_range():
    started = datetime.datetime(2026, 12, 6, 16, 0, 0, tzinfo=datetime.timezone.utc)
    stopped = started + datetime.timedelta(seconds=5)
    facts = phys.backup_progress(STDERR, MB16, started, stopped, "here")
    assert facts == {"timeline": 1, "start_lsn": "0/2000028", "stop_lsn": "0/2000100",
                     "start_time": "2026-12-06T16:00:00Z", "stop_time": "2026-12-06T16:00:05Z",
                     "wal_start": "000000010000000000000002", "wal_end": "000000010000000000000002"}


def test_backup_progress_without_the_wal_range_is_an_error():
    now = datetime.datetime.now(datetime.timezone.utc)
    with pytest.raises(SourceError, match="WAL start and end"):
        phys.backup_progress("pg_basebackup: base backup completed\n", MB16, now, now, "here")


# --- the restore side's pure parts ----------------------------------------------------------

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 12, 6, 17, 0, 0, tzinfo=UTC)


class FakeRepository:
    def location(self, key=""):
        return "memory://repo"


class FakeCatalog:
    """What choose_backup reads: trusted backups newest first, now, clock_skew, select()."""

    def __init__(self, stops):
        self.name, self.repository, self.now, self.clock_skew = "crm", FakeRepository(), NOW, datetime.timedelta(hours=1)
        self.trusted = []
        for start, stop in stops:
            backup = cat.Backup(f"crm_{start:%Y%m%dT%H%M%SZ}", "crm", start, complete=True)
            backup.manifest = {"source": {"format": "basebackup", "stop_time": f"{stop:%Y-%m-%dT%H:%M:%SZ}"}}
            self.trusted.append(backup)
        self.trusted.sort(key=lambda b: b.created, reverse=True)

    def select(self, wanted):
        return ("select", wanted)


def target(**options):
    return phys.PostgresqlPhysicalSource(dict({"type": "postgresql_physical", "data_directory": "/nonexistent/x"},
                                              **options), CommandLog())


def at(hour, minute=0):
    return datetime.datetime(2026, 12, 6, hour, minute, tzinfo=UTC)


def test_a_target_time_picks_the_newest_base_backup_that_had_ended_by_then():
    catalog = FakeCatalog([(at(10), at(11)), (at(14), at(15))])
    assert target(recovery_target_time="2026-12-06T15:30:00Z").choose_backup(catalog, "latest").created == at(14)
    # 14:30 is after the newer backup's start but before its end: it cannot stop there
    assert target(recovery_target_time="2026-12-06T14:30:00Z").choose_backup(catalog, "latest").created == at(10)
    assert target(recovery_target_time="2026-12-06T11:00:00Z").choose_backup(catalog, "latest").created == at(10)


def test_a_target_time_before_every_base_backup_or_in_the_future_is_refused():
    catalog = FakeCatalog([(at(10), at(11))])
    with pytest.raises(NotFoundError, match="had ended by 2026-12-06T10:30:00Z.*oldest ended 2026-12-06T11:00:00Z"):
        target(recovery_target_time="2026-12-06T10:30:00Z").choose_backup(catalog, "latest")
    with pytest.raises(ConfigError, match="in the future"):
        target(recovery_target_time="2026-12-06T19:00:00Z").choose_backup(catalog, "latest")


def test_without_a_target_time_or_with_an_id_the_catalog_chooses():
    catalog = FakeCatalog([(at(10), at(11))])
    assert target().choose_backup(catalog, "latest") == ("select", "latest")
    assert target(recovery_target_time="2026-12-06T12:00:00Z").choose_backup(catalog, "crm_x") == ("select", "crm_x")


def test_check_target_refuses_replace_both_targets_and_a_directory_in_use(tmp_path):
    with pytest.raises(ConfigError, match="mode: create only"):
        target().check_target("replace")
    with pytest.raises(ConfigError, match="exclude each other"):
        target(recovery_target_time="2026-12-06T12:00:00Z", recovery_target="latest").check_target("create")
    (tmp_path / "PG_VERSION").write_text("15\n")
    with pytest.raises(TargetError, match="not empty"):
        target(data_directory=str(tmp_path), port=1).check_target("create")
    assert target(data_directory=str(tmp_path / "new"), port=1).check_target("create") == {"exists": False}


def tar_with(*members):
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for info, payload in members:
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    data.seek(0)
    return data


def member(name, kind=tarfile.REGTYPE, payload=b"x", link=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = len(payload) if kind == tarfile.REGTYPE else 0
    return info, payload if kind == tarfile.REGTYPE else None


@pytest.mark.parametrize("bad", [member("../escaped"), member("/etc/evil"),
                                 member("pg_tblspc/16384", tarfile.SYMTYPE, link="/elsewhere"),
                                 member("global/x", tarfile.LNKTYPE, link="PG_VERSION")])
def test_extract_writes_only_files_and_directories_inside(tmp_path, bad):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(IntegrityError):
        phys.extract(tar_with(member("PG_VERSION", payload=b"15\n"), bad), str(scratch))
    assert not (tmp_path / "escaped").exists()
    assert sorted(os.listdir(scratch)) in ([], ["PG_VERSION"])


def test_extract_of_garbage_is_an_integrity_error(tmp_path):
    with pytest.raises(IntegrityError, match="not a readable tar"):
        phys.extract(io.BytesIO(b"\x01" * 2048), str(tmp_path))


def test_pause_needs_a_target_to_pause_at(tmp_path):
    with pytest.raises(ConfigError, match="pause needs a target"):
        target(data_directory=str(tmp_path / "a"), port=1, recovery_target_action="pause").check_target("create")
    with pytest.raises(ConfigError, match="pause needs a target"):
        target(data_directory=str(tmp_path / "a"), port=1, recovery_target="latest",
               recovery_target_action="pause").check_target("create")
    for ok in ({"recovery_target": "immediate"}, {"recovery_target_time": "2026-12-06T12:00:00Z"}):
        assert target(data_directory=str(tmp_path / "a"), port=1, recovery_target_action="pause",
                      **ok).check_target("create") == {"exists": False}


def test_a_killed_restores_directory_is_no_obstacle_a_live_ones_is(tmp_path):
    """The lease inside: a dead owner's directory will be swept (check_target lets it pass and
    sweep_scratch removes what it created); a live owner's is not empty."""
    directory = tmp_path / "restored"
    directory.mkdir()
    (directory / "PG_VERSION").write_text("15\n")
    lease = directory / phys.LEASE_FILE
    lease.write_text(json.dumps(dict(leases.lease(), created=True)))
    with pytest.raises(TargetError, match="not empty"):
        target(data_directory=str(directory), port=1).check_target("create")
    dead = dict(leases.lease(), pid=2 ** 22 + 7, created=True)  # above pid_max: never running
    lease.write_text(json.dumps(dead))
    tgt = target(data_directory=str(directory), port=1)
    assert tgt.check_target("create") == {"exists": True}
    sweep = tgt.sweep_scratch(leases.Sweep())
    assert sweep.removed == [f"data directory {directory} of a killed restore"] and not directory.exists()
    # a directory it was given empty is emptied, not removed
    directory.mkdir()
    (directory / "base").mkdir()
    (directory / phys.LEASE_FILE).write_text(json.dumps(dict(dead, created=False)))
    target(data_directory=str(directory), port=1).sweep_scratch(leases.Sweep())
    assert directory.is_dir() and os.listdir(directory) == []


S = MB16


@pytest.mark.parametrize("names, reached, gap", [
    ([], "0/3000060", None),                                            # nothing archived
    (["000000010000000000000003", "000000010000000000000004"], "0/4000100", None),  # reached the newest
    (["000000010000000000000003", "000000010000000000000004"], "0/5000000", None),  # a switch: ends at the boundary
    (["000000010000000000000003", "000000010000000000000004", "000000010000000000000005"], "0/4000000",
     {"newest": "000000010000000000000005", "missing": [],
      "why": "the segment after 000000010000000000000003 could not be replayed"}),
    (["000000010000000000000003", "000000010000000000000005", "000000010000000000000006"], "0/3000100",
     {"newest": "000000010000000000000006", "missing": ["000000010000000000000004"],
      "why": "missing from the archive: 000000010000000000000004"}),
    # the newest timeline counts: timeline 1's later segments belong to a branch not followed
    (["000000010000000000000009", "000000020000000000000004"], "0/4000100", None),
    (["0000000100000000000000FF", "000000010000000100000001"], "0/FF000100",
     {"newest": "000000010000000100000001", "missing": ["000000010000000100000000"],
      "why": "missing from the archive: 000000010000000100000000"}),
])
def test_archive_gap(names, reached, gap):
    assert phys.archive_gap(set(names), reached, S) == gap


def test_the_warden_undoes_when_the_engine_vanishes_and_not_after_done(tmp_path):
    kept, removed = tmp_path / "kept", tmp_path / "removed"
    for path in (kept, removed):
        (path / "base").mkdir(parents=True)
    with warden.Warden() as guard:
        guard.watch(directory=str(kept), created=True, stop=["false"])
    assert guard.proc.returncode == 0 and (kept / "base").is_dir()  # the engine said done
    guard = warden.Warden().__enter__()
    guard.watch(directory=str(removed), created=True, stop=["false"])
    guard.proc.stdin.close()  # what the kernel does when the engine is killed
    deadline = time.monotonic() + 30
    while removed.exists():
        assert time.monotonic() < deadline, "the warden did not remove the directory"
        time.sleep(0.05)
    guard.proc.kill()  # it would linger a few seconds watching for a late postmaster
    guard.proc.wait()
