# Copyright (c) offsite.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Time you cannot trust: backups dated in the future (a clock that jumped, an edited manifest)
are suspect. Planner, catalog, retention, backup_info, restore, verify, the job file and
``offsite-backup list``; plus the small ones of issue 12 (damaged newest backup named when
``latest`` skips it, negative grace, exact legacy set names)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import datetime
import json
import os

import pytest

from ansible_collections.offsite.backup.plugins.module_utils._engine import cli, jobs, operations, verify
from ansible_collections.offsite.backup.plugins.module_utils._engine import manifest as mf
from ansible_collections.offsite.backup.plugins.module_utils._engine.catalog import Catalog
from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import (
    ConfigError, IntegrityError, NotFoundError)
from ansible_collections.offsite.backup.plugins.module_utils._engine.retention import (
    BackupRef, PolicyError, plan_retention)

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 12, 6, 6, 0, tzinfo=UTC)
HOUR = datetime.timedelta(hours=1)


def ref(backup_id, when, proven=False):
    return BackupRef(backup_id, when, (), proven)


def days_ago(n):
    return NOW - datetime.timedelta(days=n)


# -- the planner ---------------------------------------------------------------------------------
def test_issue_example_a_backup_in_2029_no_longer_deletes_today():
    """plan([today, 2029], keep_last 1) kept 2029 and removed today's backup."""
    today = ref('s_20261206T060000Z', NOW)
    future = ref('s_20291205T070000Z', datetime.datetime(2029, 12, 5, 7, tzinfo=UTC))
    plan = plan_retention([today, future], {'keep_last': 1}, now=NOW)
    assert plan.remove == []
    assert [b.id for b in plan.keep] == [future.id, today.id]
    assert plan.suspect == [future]
    assert plan.reasons[today.id] == ['last snapshot']
    assert plan.reasons[future.id] == ['suspect: dated 2029-12-05T07:00:00Z, more than 1h in the future']


@pytest.mark.parametrize('policy, kept_real', [
    ({'keep_last': 2}, ['r0', 'r1']),
    ({'keep_daily': 2}, ['r0', 'r1']),
    ({'keep_within': '36h'}, ['r0', 'r1']),  # measured from the newest REAL backup
    ({'keep_tags': ['nothing']}, ['r0']),    # the newest real backup, whatever the policy
])
def test_suspect_fills_no_slot_and_is_never_removed(policy, kept_real):
    real = [ref('r%d' % n, days_ago(n)) for n in range(5)]
    future = [ref('f1', NOW + datetime.timedelta(days=400)), ref('f2', NOW + 2 * HOUR)]
    plan = plan_retention(real + future, policy, now=NOW)
    assert sorted(b.id for b in plan.keep) == sorted(kept_real + ['f1', 'f2'])
    assert [b.id for b in plan.suspect] == ['f1', 'f2']
    assert not set(b.id for b in plan.remove) & {'f1', 'f2'}


def test_within_the_tolerance_a_backup_counts_as_usual():
    ahead = ref('a', NOW + 30 * datetime.timedelta(minutes=1))
    plan = plan_retention([ref('r', days_ago(1)), ahead], {'keep_last': 1}, now=NOW)
    assert plan.suspect == [] and [b.id for b in plan.keep] == ['a'] and [b.id for b in plan.remove] == ['r']
    strict = plan_retention([ref('r', days_ago(1)), ahead], {'keep_last': 1}, now=NOW,
                            clock_skew=datetime.timedelta(0))
    assert strict.suspect == [ahead] and strict.remove == []


def test_negative_clock_skew_is_refused():
    with pytest.raises(PolicyError, match='clock_skew'):
        plan_retention([], {'keep_last': 1}, now=NOW, clock_skew=-HOUR)


def test_newest_proven_backup_is_kept_by_the_planner():
    items = [ref('r%d' % n, days_ago(n), proven=n in (2, 3)) for n in range(5)]
    plan = plan_retention(items, {'keep_last': 1}, now=NOW)
    assert [b.id for b in plan.keep] == ['r0', 'r2']
    assert plan.kept_as_proven == 'r2'
    assert plan.reasons['r2'] == ['newest backup proven restorable by a drill']


@pytest.mark.parametrize('text, seconds', [('1h', 3600), ('90m', 5400), ('2d', 172800), ('0', 0), (600, 600),
                                           (None, 3600), ('', 3600)])
def test_clock_skew_option(text, seconds):
    assert mf.clock_skew(text) == datetime.timedelta(seconds=seconds)


@pytest.mark.parametrize('text', ['-1h', 'soon', '1y', True])
def test_clock_skew_option_refuses(text):
    with pytest.raises(ConfigError, match='clock_skew'):
        mf.clock_skew(text)


# -- catalog, retention, info, verify on a repository ---------------------------------------------
@pytest.fixture
def skewed(repo, store_backup):
    """Three real backups and one dated two years ahead, in a local repository."""
    real = [store_backup(repo, 'crm', days_ago(n)) for n in (3, 2, 1)]
    future = store_backup(repo, 'crm', NOW + datetime.timedelta(days=730))
    return real, future


def test_catalog_latest_and_select_skip_a_suspect_backup(repo, skewed):
    real, future = skewed
    catalog = Catalog(repo, 'crm', now=NOW)
    assert [b.id for b in catalog.suspect] == [future]
    assert catalog.latest().id == real[-1]
    assert catalog.select('latest').id == real[-1]
    assert catalog.select(mf.format_time(NOW + datetime.timedelta(days=1000))).id == real[-1]
    assert catalog.select(future).id == future  # asked for by id: still restorable
    warnings = catalog.passed_over(catalog.select('latest'))
    assert len(warnings) == 1 and future in warnings[0] and 'clock_skew 1h' in warnings[0]
    loose = Catalog(repo, 'crm', now=NOW, clock_skew='1000d')
    assert loose.suspect == [] and loose.latest().id == future


def test_only_suspect_backups_is_no_latest(repo, store_backup):
    future = store_backup(repo, 'crm', NOW + datetime.timedelta(days=3))
    with pytest.raises(NotFoundError) as info:
        Catalog(repo, 'crm', now=NOW).select('latest')
    assert 'not suspect' in str(info.value) and future in str(info.value) and 'give its id' in info.value.hint


def test_retention_never_deletes_the_real_backups_nor_the_suspect_one(repo, repo_options, skewed):
    real, future = skewed
    for attempt in range(2):  # "on every run": the second run must not take the next one
        result = operations.retention('crm', repo_options, {'keep_last': 1}, now=NOW)
        assert result['suspect'] == [future]
        assert len(result['warnings']) == 1 and future in result['warnings'][0]
        assert 'delete it by hand' in result['warnings'][0]
    listed = Catalog(repo, 'crm', now=NOW)
    assert sorted(b.id for b in listed.complete) == sorted([real[-1], future])


def test_backup_info_reports_suspect(repo_options, skewed, monkeypatch):
    real, future = skewed
    monkeypatch.setattr(mf, 'utcnow', lambda: NOW)
    found = operations.info('crm', repo_options)
    assert found['suspect'] == [future]
    assert found['latest']['id'] == real[-1]
    assert [b['suspect'] for b in found['backups']] == [True, False, False, False]
    assert future in found['warnings'][0]
    assert operations.info('crm', repo_options, clock_skew='1000d')['suspect'] == []


def test_verify_fails_on_a_suspect_backup(repo_options, skewed):
    real, future = skewed
    with pytest.raises(IntegrityError) as info:
        verify.verify('crm', [repo_options], now=NOW)
    report = info.value.details
    assert [f for f in report['failures'] if future in f and 'clock_skew' in f]
    assert report['repositories'][0]['newest']['id'] == real[-1]
    assert report['repositories'][0]['backups'][0]['status'] == 'suspect'
    assert verify.verify('crm', [repo_options], now=NOW, clock_skew='1000d')['ok']


# -- dump and restore, real files ------------------------------------------------------------------
def _site(tmp_path):
    source = tmp_path / 'site'
    source.mkdir()
    (source / 'index.html').write_text('hello')
    return {'type': 'files', 'paths': [str(source)]}


def test_dump_warns_when_this_machine_is_behind_the_newest_backup(tmp_path, store_backup):
    dest = tmp_path / 'local'
    first = operations.dump('site', _site(tmp_path), str(dest), compression='none')
    assert 'warnings' not in first
    local = operations.open_repository({'type': 'local', 'path': str(dest)})
    ahead = store_backup(local, 'site', mf.utcnow() + datetime.timedelta(days=2))
    second = operations.dump('site', {'type': 'files', 'paths': [str(tmp_path / 'site')]}, str(dest), compression='none')
    assert len(second['warnings']) == 1
    assert 'behind the newest backup of site' in second['warnings'][0]
    assert mf.format_time(mf.parse_id(ahead)[1]) in second['warnings'][0]


def test_restore_latest_names_the_damaged_and_suspect_backups_it_skips(tmp_path, store_backup):
    dest = tmp_path / 'local'
    good = operations.dump('site', _site(tmp_path), str(dest), compression='none')['backup']['id']
    options = {'type': 'local', 'path': str(dest)}
    local = operations.open_repository(options)
    damaged = store_backup(local, 'site', mf.utcnow() + datetime.timedelta(minutes=5), manifest_size=999)
    suspect = store_backup(local, 'site', mf.utcnow() + datetime.timedelta(days=1))
    restored = operations.restore('site', options, {'type': 'files', 'path': str(tmp_path / 'back')})
    assert restored['backup']['id'] == good
    assert (tmp_path / 'back').exists()
    damaged_warning = [w for w in restored['warnings'] if damaged in w]
    assert damaged_warning and 'manifest records 999' in damaged_warning[0]
    assert [w for w in restored['warnings'] if suspect in w and 'clock_skew' in w]
    by_id = operations.restore('site', options, {'type': 'files', 'path': str(tmp_path / 'again')}, backup=good)
    assert 'warnings' not in by_id
    catalog = Catalog(local, 'site')
    before_damaged = mf.format_time(mf.parse_id(damaged)[1] - datetime.timedelta(seconds=1))
    assert catalog.passed_over(catalog.select(before_damaged), before_damaged) == []  # newer, not skipped
    assert len(catalog.passed_over(catalog.select(mf.format_time(mf.parse_id(damaged)[1])),
                                   mf.format_time(mf.parse_id(damaged)[1]))) == 1


# -- job file and offsite-backup list ----------------------------------------------------------------
def _job(**extra):
    job = {'name': 'crm', 'local': {'path': '/var/backups/offsite'},
           'sources': [{'name': 'crm_db', 'source': {'type': 'postgresql', 'database': 'crm'}}]}
    job.update(extra)
    return job


@pytest.mark.parametrize('extra, message', [
    ({'clock_skew': 'soon'}, "job.clock_skew 'soon' is not a duration"),
    ({'clock_skew': -5}, 'job.clock_skew -5 is not a duration'),
    ({'clock_skew': [1]}, 'clock_skew must be a duration'),
    ({'incomplete_grace': -1}, 'job.incomplete_grace is -1; it must be a whole number of hours, 0 or more'),
])
def test_job_file_refuses_bad_clock_skew_and_negative_grace(extra, message):
    with pytest.raises(ConfigError) as info:
        jobs.validate(_job(**extra))
    assert message in str(info.value)


def test_job_file_defaults():
    job = jobs.validate(_job(clock_skew='2h'))
    assert job['incomplete_grace'] == 24 and job['clock_skew'] == '2h'


def test_retention_refuses_a_negative_grace_before_touching_anything(repo_options, store_backup, repo):
    store_backup(repo, 'crm', days_ago(1))
    with pytest.raises(ConfigError, match='incomplete_grace is -1'):
        operations.retention('crm', repo_options, {'keep_last': 1}, grace_hours=-1, now=NOW)


def test_list_marks_a_suspect_backup(tmp_path, store_backup, capsys):
    local = tmp_path / 'local'
    local.mkdir()
    repo = operations.open_repository({'type': 'local', 'path': str(local)})
    real = store_backup(repo, 'crm_db', mf.utcnow() - HOUR)
    future = store_backup(repo, 'crm_db', mf.utcnow() + datetime.timedelta(days=3))
    path = tmp_path / 'job.json'  # JSON is YAML
    path.write_text(json.dumps(_job(local={'path': str(local)})))
    assert cli.main(['list', str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if future in line and 'SUSPECT: dated' in line]
    assert [line for line in lines if real in line and line.rstrip().endswith('complete')]


# -- exact set names for legacy (seed script) files -------------------------------------------------
def test_a_set_named_crm_backup_keeps_its_files_from_set_crm(repo, repo_options, store_backup):
    own = store_backup(repo, 'crm', days_ago(1))
    store_backup(repo, 'crm_backup', days_ago(1))  # set crm_backup lives in this repository
    theirs = 'crm_backup_20261101_030000.sql.gz'
    repo.put_bytes(theirs, b'legacy of crm_backup')
    assert [b.id for b in Catalog(repo, 'crm', now=NOW).backups] == [own]
    result = operations.retention('crm', repo_options, {'keep_last': 1}, now=NOW)
    assert result['remove'] == [] and repo.stat(theirs) is not None
    assert 'crm_backup_20261101_030000' in [b.id for b in Catalog(repo, 'crm_backup', now=NOW).backups]


def test_without_a_set_named_crm_backup_the_seed_files_are_crms(repo, store_backup):
    own = store_backup(repo, 'crm', days_ago(1))
    repo.put_bytes('crm_backup_20261101_030000.sql.gz', b'seed')
    assert [b.id for b in Catalog(repo, 'crm', now=NOW).backups] == [own, 'crm_backup_20261101_030000']
    assert os.path.exists(os.path.join(repo.root, 'crm_backup_20261101_030000.sql.gz'))


def test_offsite_backup_restore_prints_what_latest_skipped(tmp_path, store_backup, capsys):
    local = tmp_path / 'local'
    good = operations.dump('site', _site(tmp_path), str(local), compression='none')['backup']['id']
    future = store_backup(operations.open_repository({'type': 'local', 'path': str(local)}), 'site',
                          mf.utcnow() + datetime.timedelta(days=3))
    path = tmp_path / 'job.json'
    path.write_text(json.dumps(_job(local={'path': str(local)}, clock_skew='2h',
                                    sources=[{'name': 'site', 'source': {'type': 'files', 'paths': [str(tmp_path / 'site')]}}])))
    code = cli.main(['restore', str(path), '--set', 'site', '--from', 'local', '--path', str(tmp_path / 'back')])
    out, err = capsys.readouterr()
    assert code == 0 and ('restored %s' % good) in out
    assert 'warning: skipped backup %s' % future in err and 'clock_skew 2h' in err
