# Copyright (c) offsite.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""backup_wal_* series written by ``offsite-backup wal-push``: beside the runner's textfile, per
repository, a failure counter that survives from one run to the next and loses nothing when
pushes run at once, a Pushgateway push of the set's series, and a metrics file that cannot be
written never failing the archive_command."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import logging
import multiprocessing
import os
import signal
import struct

import yaml

from ansible_collections.offsite.backup.plugins.module_utils._engine import cli, monitoring

SEGMENT = "000000010000000000000001"
LOGGER = logging.getLogger("test-wal-metrics")


def _segment(path):
    path.write_bytes(struct.pack("<HHIQI4xQII", 0xD110, 0x0006, 1, 0, 0, 42, 16 << 20, 8192) + b"\x01" * 4096)


def _job(tmp_path, repositories, **extra):
    job = dict({"name": "crm", "local": {"path": str(tmp_path / "local")},
                "sources": [{"name": "crm_cluster", "source": {"type": "postgresql_physical"}}],
                "repositories": repositories, "log": {"path": str(tmp_path / "crm.log")},
                "monitoring": {"textfile": {"path": str(tmp_path / "prom" / "offsite_backup_crm.prom")}}}, **extra)
    path = tmp_path / "job.yml"
    path.write_text(yaml.safe_dump(job))
    return path


def _samples(tmp_path):
    text = (tmp_path / "prom" / "offsite_backup_crm-wal.prom").read_text()
    return dict((name + str(dict(labels)), value) for (name, labels), value in monitoring.parse_samples(text).items()), text


def _key(name, repository):
    return name + str({"job": "crm", "repository": repository, "source": "crm_cluster"})


def test_wal_push_writes_the_archiving_time_and_counts_failures_per_repository(tmp_path):
    (tmp_path / "prom").mkdir()
    (tmp_path / "good").mkdir()
    good = {"type": "local", "path": str(tmp_path / "good"), "name": "nas"}
    gone = {"type": "local", "path": str(tmp_path / "gone"), "name": "usb"}
    segment = tmp_path / SEGMENT
    _segment(segment)
    job = _job(tmp_path, [good, gone], min_success=1)
    assert cli.main(["wal-push", str(job), str(segment)]) == 0          # one repository suffices
    samples, text = _samples(tmp_path)
    assert samples[_key("backup_wal_archive_failures_total", "usb")] == 1
    assert samples[_key("backup_wal_archive_failures_total", "nas")] == 0   # present from the start
    assert samples[_key("backup_wal_last_archived_timestamp_seconds", "nas")] > 1.7e9
    assert _key("backup_wal_last_archived_timestamp_seconds", "usb") not in samples
    assert "# TYPE backup_wal_archive_failures_total counter" in text
    # the runner's own file is not this one (it rewrites its file whole)
    assert not (tmp_path / "prom" / "offsite_backup_crm.prom").exists()

    # below min_success: exit 1, and the counter goes on from the file
    job = _job(tmp_path, [good, gone])
    assert cli.main(["wal-push", str(job), str(segment)]) == 1
    samples, text = _samples(tmp_path)
    assert samples[_key("backup_wal_archive_failures_total", "usb")] == 2
    assert samples[_key("backup_wal_archive_failures_total", "nas")] == 0
    assert oct(os.stat(tmp_path / "prom" / "offsite_backup_crm-wal.prom").st_mode & 0o777) == "0o644"
    assert [p for p in os.listdir(tmp_path / "prom") if p.endswith(".tmp")] == []


def _fail_once(args):
    config, job = args
    monitoring.record_wal_push(config, job, "crm_cluster", [{"repository": "nas", "status": "failed"}], None, LOGGER)


def test_pushes_at_the_same_time_each_add_their_failure(tmp_path):
    """PostgreSQL's archiver runs one archive_command at a time, but an operator's manual push
    (or two clusters' archivers on one job file) can overlap: the count loses no failure."""
    (tmp_path / "prom").mkdir()
    config = {"textfile": {"path": str(tmp_path / "prom" / "offsite_backup_crm.prom")}}
    job = {"name": "crm", "local": {"path": str(tmp_path)}}
    # Workers end on the queue's sentinels (close, join), not on the SIGTERM of the pool's exit:
    # a test before this one in the worker process may have left a SIGTERM handler that does not
    # exit (ansible-runner's interface installs one), and a forked worker inherits it; killed
    # while it waits on the queue's lock, it would then wait for ever.
    with multiprocessing.get_context("fork").Pool(4, initializer=signal.signal,
                                                  initargs=(signal.SIGTERM, signal.SIG_DFL)) as pool:
        pool.map(_fail_once, [(config, job)] * 40)
        pool.close()
        pool.join()
    samples, dummy = _samples(tmp_path)
    assert samples[_key("backup_wal_archive_failures_total", "nas")] == 40


def test_an_unwritable_metrics_file_is_a_warning_only(tmp_path, caplog):
    config = {"textfile": {"path": str(tmp_path / "missing-dir" / "x.prom")}}
    with caplog.at_level(logging.WARNING):
        assert monitoring.record_wal_push(config, {"name": "crm", "local": {"path": str(tmp_path)}}, "crm_cluster",
                                          [{"repository": "nas", "status": "stored"}], None, LOGGER) is None
    assert "WAL file is archived all the same" in caplog.text


def test_the_set_series_go_to_the_pushgateway_in_the_runner_group(tmp_path):
    from tests.harness.monitoring import HttpReceiver
    with HttpReceiver() as rx:
        config = {"pushgateway": {"url": rx.url + "/gw"}}
        job = {"name": "crm", "local": {"path": str(tmp_path)}}
        state = monitoring.record_wal_push(config, job, "crm_cluster", [{"repository": "nas", "status": "failed"}],
                                           "db1", LOGGER, now=1800000000)
        monitoring.record_wal_push(config, job, "crm_cluster", [{"repository": "nas", "status": "stored"}],
                                   "db1", LOGGER, now=1800000060)
    assert state == str(tmp_path / ".crm-wal.prom")   # the counter's state without a textfile
    (first, second) = [r for r in rx.requests if r["method"] == "POST"]
    assert first["path"] == "/gw/metrics/job/crm/instance/db1/source/crm_cluster"
    assert 'backup_wal_archive_failures_total{job="crm",repository="nas",source="crm_cluster"} 1' in first["body"]
    assert 'backup_wal_archive_failures_total{job="crm",repository="nas",source="crm_cluster"} 1' in second["body"]
    assert ('backup_wal_last_archived_timestamp_seconds{job="crm",repository="nas",source="crm_cluster"} 1800000060'
            in second["body"])


MB16 = 16 << 20


def test_the_backlog_counts_only_segments_postgresql_switched_away_from():
    """wal-status's backlog: bytes after the end of the last archived segment, and the completed
    segments among them; an idle cluster's current segment (a few records, never switched: no
    writes, no archive_timeout switch) is no segment waiting."""
    last = "000000010000000000000003"                  # ends at 0/4000000
    assert monitoring.wal_backlog(0x4000000, last, MB16) == (0, 0)            # just switched, archived
    assert monitoring.wal_backlog(0x4000060, last, MB16) == (0x60, 0)         # idle: a standby snapshot record
    assert monitoring.wal_backlog(0x5000000, last, MB16) == (MB16, 1)         # switched, not archived
    assert monitoring.wal_backlog(0x7000028, last, MB16) == (3 * MB16 + 0x28, 3)
    assert monitoring.wal_backlog(0x3800000, last, MB16) == (0, 0)            # the archiver is ahead of the read
    # the segment a .backup history or a .partial file (promotion) belongs to counts as archived
    assert monitoring.wal_backlog(0x5000000, last + ".00000028.backup", MB16) == (MB16, 1)
    assert monitoring.wal_backlog(0x5000000, last + ".partial", MB16) == (MB16, 1)
    # high log ids and another segment size: 000000020000000A00000001 with 64 MB segments
    # (64 segments per log id) is segment 10 * 64 + 1, ending at A/8000000
    assert monitoring.wal_backlog((0xA << 32) + 0x8000000, "000000020000000A00000001", 64 << 20) == (0, 0)
    assert monitoring.wal_backlog((0xA << 32) + 0xC000000, "000000020000000A00000001", 64 << 20) == (64 << 20, 1)
    # cannot be told: nothing archived yet, a timeline history file last
    assert monitoring.wal_backlog(0x5000000, "", MB16) is None
    assert monitoring.wal_backlog(0x5000000, "00000002.history", MB16) is None


def test_wal_status_and_wal_push_keep_each_others_series(tmp_path):
    (tmp_path / "prom").mkdir()
    config = {"textfile": {"path": str(tmp_path / "prom" / "offsite_backup_crm.prom")}}
    job = {"name": "crm", "local": {"path": str(tmp_path)}}
    status = 'backup_wal_%s{job="crm",source="crm_cluster"}'
    monitoring.record_wal_push(config, job, "crm_cluster", [{"repository": "nas", "status": "stored"}], None, LOGGER,
                               now=1800000000)
    monitoring.record_wal_status(config, job, "crm_cluster", (MB16 + 5, 1), None, LOGGER, now=1800000030)
    monitoring.record_wal_push(config, job, "crm_cluster", [{"repository": "nas", "status": "failed"}], None, LOGGER,
                               now=1800000060)
    samples, text = _samples(tmp_path)
    assert samples[_key("backup_wal_last_archived_timestamp_seconds", "nas")] == 1800000000
    assert samples[_key("backup_wal_archive_failures_total", "nas")] == 1
    assert status % "unarchived_segments" + " 1\n" in text and status % "unarchived_bytes" + " 16777221\n" in text
    assert status % "status_timestamp_seconds" + " 1800000030\n" in text
    assert "# TYPE backup_wal_unarchived_segments gauge" in text
    # a reading that cannot tell the backlog drops the old one (no stale 0 that silences the alert)
    monitoring.record_wal_status(config, job, "crm_cluster", None, None, LOGGER, now=1800000090)
    samples, text = _samples(tmp_path)
    assert "unarchived" not in text and status % "status_timestamp_seconds" + " 1800000090\n" in text
    assert samples[_key("backup_wal_archive_failures_total", "nas")] == 1


def test_a_linked_metrics_file_is_written_beside_its_target(tmp_path):
    """The client role links the collector's <name>-wal.prom (a directory only root writes) to a
    directory the server's user owns: the lock, the partial file and the rename happen there, and
    the link stays a link."""
    (tmp_path / "prom").mkdir()
    (tmp_path / "walmetrics").mkdir()
    link = tmp_path / "prom" / "offsite_backup_crm-wal.prom"
    link.symlink_to(tmp_path / "walmetrics" / "offsite_backup_crm-wal.prom")
    config = {"textfile": {"path": str(tmp_path / "prom" / "offsite_backup_crm.prom")}}
    job = {"name": "crm", "local": {"path": str(tmp_path)}}
    for outcome in ("stored", "failed"):
        assert monitoring.record_wal_push(config, job, "crm_cluster", [{"repository": "nas", "status": outcome}],
                                          None, LOGGER) == str(link)
    monitoring.record_wal_status(config, job, "crm_cluster", (0, 0), None, LOGGER)
    assert link.is_symlink() and sorted(os.listdir(tmp_path / "prom")) == [link.name]
    assert sorted(os.listdir(tmp_path / "walmetrics")) == [link.name, link.name + ".lock"]
    samples, text = _samples(tmp_path)
    assert samples[_key("backup_wal_archive_failures_total", "nas")] == 1
    assert 'backup_wal_unarchived_segments{job="crm",source="crm_cluster"} 0' in text
