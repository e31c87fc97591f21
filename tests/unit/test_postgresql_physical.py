"""The pure parts of the postgresql_physical source: sizes as SHOW prints them, LSNs, WAL file
names (checked against PostgreSQL's pg_walfile_name semantics), and the WAL range read from
pg_basebackup --verbose."""

from __future__ import annotations

import datetime

import pytest

from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import SourceError
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
