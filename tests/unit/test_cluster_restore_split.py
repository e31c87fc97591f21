# Copyright (c) offsite.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A cluster restore in parallel (issue 14, item 3): every database split out of the cluster's tar
into its own seekable file with its data offsets patched (the real pg_dump 15 archives of
fixtures/pgcustom), and one ``jobs`` budget shared by databases and tables."""

from __future__ import annotations

import io
import os
import tarfile
import threading
import time

import pytest

from ansible_collections.offsite.backup.plugins.module_utils._engine import pipeline
from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import IntegrityError
from ansible_collections.offsite.backup.plugins.module_utils._engine.sources.postgresql_cluster import (
    run_within, share_jobs, split_members)

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures', 'pgcustom')
CREATED = slice(16, 51)  # the creation time in the fixtures' 1.14 header


def fixture(name):
    with open(os.path.join(FIXTURES, name), 'rb') as handle:
        return handle.read()


def masked(data):
    data = bytearray(data)
    data[CREATED] = bytes(CREATED.stop - CREATED.start)
    return bytes(data)


def cluster_tar(path, dumps):
    with tarfile.open(path, 'w', format=tarfile.PAX_FORMAT) as tar:
        for name, data in [('globals.sql', b'-- roles\n')] + dumps + [('cluster.json', b'{}')]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with tarfile.open(path) as tar:
        return dict((m.name, m) for m in tar.getmembers())


def members(found, names):
    return [(name, found[name], 'database %s' % name) for name in names]


def test_each_database_gets_a_seekable_file_with_its_offsets_and_the_tar_is_cut(tmp_path):
    pipe, seek = fixture('pipe.dump'), fixture('seek.dump')
    path = str(tmp_path / 'artifact.tar')
    found = cluster_tar(path, [('databases/0000.dump', pipe), ('databases/0001.dump', seek)])
    files = split_members(path, members(found, ['databases/0000.dump', 'databases/0001.dump']))
    assert files['databases/0000.dump']['data_offsets'] == 'recorded'
    assert files['databases/0000.dump']['patched'] == 5  # the pipe's archive had no offsets
    assert files['databases/0001.dump']['patched'] == 0  # pg_dump's seekable file had them
    for name in files:
        with open(files[name]['path'], 'rb') as handle:
            assert masked(handle.read()) == masked(seek)  # what pg_dump writes when it can seek
        assert os.stat(files[name]['path']).st_mode & 0o777 == 0o600
    # taken from the end, the tar cut behind each: only what precedes the first database is left
    assert os.path.getsize(path) == found['databases/0000.dump'].offset
    with open(path, 'rb') as handle:
        handle.seek(found['globals.sql'].offset_data)
        assert handle.read(9) == b'-- roles\n'


def test_a_malformed_database_fails_the_split_with_its_name(tmp_path):
    pipe = fixture('pipe.dump')
    path = str(tmp_path / 'artifact.tar')
    found = cluster_tar(path, [('databases/0000.dump', pipe), ('databases/0001.dump', pipe[:-7])])
    with pytest.raises(IntegrityError) as exc:
        split_members(path, members(found, ['databases/0000.dump', 'databases/0001.dump']))
    assert 'database databases/0001.dump is not a valid pg_dump custom-format archive' in str(exc.value)


def test_a_database_without_room_to_split_stays_in_the_tar(tmp_path, monkeypatch):
    pipe = fixture('pipe.dump')
    path = str(tmp_path / 'artifact.tar')
    found = cluster_tar(path, [('databases/0000.dump', pipe), ('databases/0001.dump', pipe)])
    looks = []

    class Disk(object):  # full at the first look, roomy after
        def __init__(self, free):
            self.f_frsize, self.f_bavail = 1, free

    def statvfs(where):
        looks.append(where)
        return Disk(0 if len(looks) == 1 else 10 ** 12)
    monkeypatch.setattr(pipeline.os, 'statvfs', statvfs)
    files = split_members(path, members(found, ['databases/0000.dump', 'databases/0001.dump']))
    assert files['databases/0001.dump'] is None  # the last one, looked at first, found no room
    assert files['databases/0000.dump']['data_offsets'] == 'recorded'
    assert os.path.getsize(path) >= found['databases/0001.dump'].offset_data + found['databases/0001.dump'].size


@pytest.mark.parametrize('sizes,budget,shares', [
    ([600, 300, 100], 4, [2, 1, 1]),    # the large one gets most jobs, the small ones the rest
    ([900, 50, 50], 4, [4, 1, 1]),      # nearly all in one: it takes every job, the others follow
    ([500, 500], 4, [2, 2]),
    ([500, 500], 2, [1, 1]),            # two equal databases side by side
    ([1000, 1], 2, [2, 1]),
    ([1000], 4, [4]),                   # one database: every job
    ([0, 0], 4, [1, 1]),                # none can seek: one job each
    ([0, 700, 300], 3, [1, 2, 1]),
])
def test_jobs_follow_the_share_of_the_bytes(sizes, budget, shares):
    assert share_jobs(sizes, budget) == shares


def test_the_budget_is_never_exceeded_and_every_task_runs():
    budget, running, peak, done = 4, [0], [0], []
    lock = threading.Lock()

    def task(jobs, name):
        def run():
            with lock:
                running[0] += jobs
                peak[0] = max(peak[0], running[0])
            time.sleep(0.02)
            with lock:
                running[0] -= jobs
                done.append(name)
        return jobs, run
    sizes = [700, 200, 50, 30, 20]
    run_within(budget, [task(jobs, i) for i, jobs in enumerate(share_jobs(sizes, budget))])
    assert sorted(done) == [0, 1, 2, 3, 4] and peak[0] == budget


def test_after_a_failure_nothing_more_starts_and_the_running_ones_end_first():
    started, ended = [], []
    gate = threading.Event()

    def failing():
        started.append('bad')
        raise IntegrityError('database two: 11 rows, 10 restored')

    def slow():
        started.append('slow')
        gate.wait(5)
        ended.append('slow')

    def later():
        started.append('later')

    threading.Timer(0.1, gate.set).start()
    with pytest.raises(IntegrityError):
        run_within(2, [(1, slow), (1, failing), (2, later)])
    assert sorted(started) == ['bad', 'slow'] and ended == ['slow']  # waited for, never abandoned
