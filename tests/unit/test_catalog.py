# Copyright (c) offsite.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The catalog of a set in a real LocalRepository (tmp_path), and retention applied to it."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import datetime
import hashlib
import os

import pytest

from ansible_collections.offsite.backup.plugins.module_utils._engine import manifest as mf
from ansible_collections.offsite.backup.plugins.module_utils._engine import operations
from ansible_collections.offsite.backup.plugins.module_utils._engine.catalog import Catalog
from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import NotFoundError
from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories.local import LocalRepository

try:
    from zoneinfo import ZoneInfo
except ImportError:  # pragma: no cover
    ZoneInfo = None

UTC = datetime.timezone.utc


def utc(*args):
    return datetime.datetime(*args, tzinfo=UTC)


def write_local_backup(directory, name, created, data):
    """What ``dump`` leaves in its directory: the artifact, then its manifest."""
    backup_id = mf.make_id(name, created)
    set_dir = directory / name
    set_dir.mkdir(parents=True)
    artifact = set_dir / ('%s.dump' % backup_id)
    artifact.write_bytes(data)
    doc = mf.build(name, backup_id, created, 'dump', 'none', 'custom', len(data),
                   hashlib.sha256(data).hexdigest(), len(data), {'type': 'postgresql'}, ['daily'], 2.0)
    (set_dir / (backup_id + mf.MANIFEST_SUFFIX)).write_bytes(mf.dumps(doc))
    return str(artifact), backup_id


def by_id(catalog):
    return dict((b.id, b) for b in catalog.backups)


# -- complete / incomplete / legacy ------------------------------------------------------------
def test_uploaded_backup_is_complete(tmp_path, repo, repo_options):
    data = os.urandom(4096)
    path, backup_id = write_local_backup(tmp_path / 'dumps', 'crm', utc(2026, 11, 23, 3), data)

    result = operations.upload(path, [repo_options])
    assert [r['status'] for r in result['repositories']] == ['uploaded']
    assert result['changed'] is True

    catalog = Catalog(repo, 'crm')
    assert [b.id for b in catalog.complete] == [backup_id]
    backup = catalog.latest()
    assert (backup.size, backup.sha256) == (4096, hashlib.sha256(data).hexdigest())
    assert backup.created == utc(2026, 11, 23, 3)
    assert backup.artifact_key == 'crm/%s.dump' % backup_id
    assert backup.manifest_key == 'crm/%s.manifest.json' % backup_id
    assert backup.tags == ['daily'] and not backup.legacy and backup.problem is None
    assert catalog.incomplete == [] and catalog.leftovers == []

    again = operations.upload(path, [repo_options])
    assert [r['status'] for r in again['repositories']] == ['unchanged']
    assert again['changed'] is False


def test_artifact_without_manifest_is_incomplete_and_never_latest(repo, store_backup):
    older = store_backup(repo, 'crm', utc(2026, 11, 22, 3))
    newer = store_backup(repo, 'crm', utc(2026, 11, 23, 3), manifest=False)

    catalog = Catalog(repo, 'crm')
    assert [b.id for b in catalog.backups] == [newer, older]
    assert [b.id for b in catalog.incomplete] == [newer]
    assert 'no manifest' in by_id(catalog)[newer].problem
    assert catalog.latest().id == older
    assert catalog.select('latest').id == older


def test_manifest_without_artifact_is_incomplete(repo, store_backup):
    backup_id = store_backup(repo, 'crm', utc(2026, 11, 23, 3), artifact=False)

    catalog = Catalog(repo, 'crm')
    assert catalog.complete == [] and catalog.latest() is None
    (backup,) = catalog.incomplete
    assert backup.id == backup_id and backup.artifact_key is None
    assert backup.problem == 'manifest without artifact'


def test_size_mismatch_is_incomplete_with_problem(repo, store_backup):
    backup_id = store_backup(repo, 'crm', utc(2026, 11, 23, 3), data=b'x' * 12, manifest_size=99)

    catalog = Catalog(repo, 'crm')
    (backup,) = catalog.incomplete
    assert backup.id == backup_id and not backup.complete
    assert backup.problem == 'artifact has 12 bytes, manifest records 99'
    assert backup.as_dict()['problem'] == backup.problem


@pytest.mark.parametrize('manifest_bytes, problem', [
    (b'{"format_version": 1, "name": "crm"', 'not valid JSON'),
    (b'[]', 'not a JSON object'),
    (b'{"format_version": 1, "name": "crm", "id": "x", "created": "soon", "artifact": "x", "size": 1, '
     b'"sha256": "x"}', 'not a time'),
], ids=['broken-json', 'not-an-object', 'bad-created'])
def test_damaged_manifest_makes_one_backup_incomplete_not_the_listing_fail(repo, store_backup,
                                                                           manifest_bytes, problem):
    good = store_backup(repo, 'crm', utc(2026, 11, 22, 3))
    bad = store_backup(repo, 'crm', utc(2026, 11, 23, 3))
    repo.put_bytes(mf.manifest_key('crm', bad), manifest_bytes)

    catalog = Catalog(repo, 'crm')
    assert [b.id for b in catalog.complete] == [good]
    assert problem in by_id(catalog)[bad].problem


@pytest.mark.skipif(ZoneInfo is None, reason='zoneinfo needs Python 3.9+')
def test_legacy_files_are_complete_and_legacy(repo, store_backup):
    repo.put_bytes('crm_backup_20251028_140000.sql.gz', b'root legacy')
    repo.put_bytes('crm/crm_20251029_140000.sql.gz', b'dir legacy')
    repo.put_bytes('crm2_backup_20251030_140000.sql.gz', b'another set')
    modern = store_backup(repo, 'crm', utc(2026, 11, 23, 3))

    catalog = Catalog(repo, 'crm', legacy_tz=ZoneInfo('Europe/Paris'))
    assert [b.id for b in catalog.backups] == [modern, 'crm_20251029_140000', 'crm_backup_20251028_140000']
    assert catalog.incomplete == []
    root = by_id(catalog)['crm_backup_20251028_140000']
    assert root.complete and root.legacy
    assert root.created == utc(2025, 10, 28, 13)   # 14:00 in Paris (CET)
    assert root.size == len(b'root legacy') and root.sha256 is None
    assert root.tags == ['legacy'] and root.compression == 'gzip'
    assert root.artifact_key == 'crm_backup_20251028_140000.sql.gz' and root.manifest_key is None
    assert by_id(catalog)['crm_20251029_140000'].artifact_key == 'crm/crm_20251029_140000.sql.gz'


def test_other_sets_are_not_listed(repo, store_backup):
    ours = store_backup(repo, 'crm', utc(2026, 11, 23, 3))
    store_backup(repo, 'crm2', utc(2026, 11, 23, 4))
    store_backup(repo, 'crm-prod', utc(2026, 11, 23, 5))
    repo.put_bytes('crm/crm2_20261123T060000Z.dump', b'misplaced')

    assert [b.id for b in Catalog(repo, 'crm').backups] == [ours]


def test_partial_files_are_leftovers_not_backups(repo, store_backup):
    backup_id = store_backup(repo, 'crm', utc(2026, 11, 23, 3))
    repo.put_bytes('crm/%s.dump.1a2b3c4d.partial' % mf.make_id('crm', utc(2026, 11, 24, 3)), b'half')
    repo.put_bytes('crm/%s.manifest.json.5e6f7a8b.partial' % backup_id, b'{')
    repo.put_bytes('crm2/crm2_20261123T030000Z.dump.0000aaaa.partial', b'not ours')

    catalog = Catalog(repo, 'crm')
    assert [b.id for b in catalog.backups] == [backup_id]
    assert sorted(o.key.rsplit('.', 2)[-2] for o in catalog.leftovers) == ['1a2b3c4d', '5e6f7a8b']


def test_missing_repository_directory_is_not_found(tmp_path):
    with pytest.raises(NotFoundError) as err:
        Catalog(LocalRepository({'path': str(tmp_path / 'absent')}), 'crm')
    assert str(tmp_path / 'absent') in str(err.value)


# -- ordering and selection --------------------------------------------------------------------
@pytest.fixture(scope='module')
def three_days(tmp_path_factory, store_backup_module):
    """crm backups at 03:00Z on 21, 22 (twice in the same second) and 23 November 2026 (read-only)."""
    repo, store_backup = LocalRepository({'path': str(tmp_path_factory.mktemp('three'))}), store_backup_module
    store_backup(repo, 'crm', utc(2026, 11, 21, 3))
    store_backup(repo, 'crm', utc(2026, 11, 22, 3))
    store_backup(repo, 'crm', utc(2026, 11, 22, 3), seq=1)
    store_backup(repo, 'crm', utc(2026, 11, 23, 3))
    return Catalog(repo, 'crm')


def test_backups_are_newest_first_with_same_second_suffix_first(three_days):
    catalog = three_days
    assert [b.id for b in catalog.backups] == [
        'crm_20261123T030000Z', 'crm_20261122T030000Z-1', 'crm_20261122T030000Z', 'crm_20261121T030000Z']


@pytest.mark.parametrize('wanted, expected', [
    ('latest', 'crm_20261123T030000Z'),
    (None, 'crm_20261123T030000Z'),
    ('', 'crm_20261123T030000Z'),
    ('crm_20261121T030000Z', 'crm_20261121T030000Z'),
    ('crm_20261122T030000Z', 'crm_20261122T030000Z'),
    ('2026-11-23T03:00:00Z', 'crm_20261123T030000Z'),             # exactly at a backup
    ('2026-11-23T02:59:59Z', 'crm_20261122T030000Z-1'),           # newest before
    ('2026-11-22T12:00:00+09:00', 'crm_20261122T030000Z-1'),      # 03:00Z: newest of the pair
    ('20261130T000000Z', 'crm_20261123T030000Z'),                 # after the newest
    ('2026-11-21T03:00:00', 'crm_20261121T030000Z'),              # naive = UTC, the oldest
], ids=['latest', 'none', 'empty', 'id-oldest', 'id-same-second-base', 'time-exact', 'time-between',
        'time-offset', 'time-after-newest', 'time-naive'])
def test_select(three_days, wanted, expected):
    catalog = three_days
    assert catalog.select(wanted).id == expected


@pytest.mark.parametrize('wanted, message', [
    ('2026-11-21T02:59:59Z', 'at or before 2026-11-21T02:59:59Z (oldest is 2026-11-21T03:00:00Z)'),
    ('crm_20261120T030000Z', 'no backup crm_20261120T030000Z of crm'),
    ('not-a-backup', 'no backup not-a-backup of crm'),
], ids=['before-oldest', 'unknown-id', 'garbage'])
def test_select_not_found(three_days, wanted, message):
    catalog = three_days
    with pytest.raises(NotFoundError) as err:
        catalog.select(wanted)
    assert message in str(err.value)


def test_select_incomplete_id_is_not_found(repo, store_backup):
    store_backup(repo, 'crm', utc(2026, 11, 22, 3))
    broken = store_backup(repo, 'crm', utc(2026, 11, 23, 3), manifest=False)
    catalog = Catalog(repo, 'crm')
    with pytest.raises(NotFoundError) as err:
        catalog.select(broken)
    assert 'incomplete' in str(err.value)
    # and a time right at it falls back to the complete one before it
    assert catalog.select('2026-11-23T03:00:00Z').id == 'crm_20261122T030000Z'


def test_select_in_empty_repository(repo):
    with pytest.raises(NotFoundError) as err:
        Catalog(repo, 'crm').select('latest')
    assert 'no complete backup of crm' in str(err.value)


# -- retention applied to a repository ---------------------------------------------------------
NOW = utc(2026, 11, 23, 12)


def keys(repo):
    return sorted(o.key for o in repo.list(''))


def set_mtime(repo, key, when):
    stamp = when.timestamp()
    os.utime(os.path.join(repo.root, *key.split('/')), (stamp, stamp))


@pytest.fixture
def five_days(repo, store_backup):
    """Daily crm backups at 03:00Z from 19 to 23 November 2026, oldest first."""
    return [store_backup(repo, 'crm', utc(2026, 11, day, 3), tags=['daily']) for day in range(19, 24)]


def test_retention_check_mode_reports_and_deletes_nothing(repo, repo_options, five_days):
    before = keys(repo)
    result = operations.retention('crm', repo_options, {'keep_last': 2}, check_mode=True, now=NOW)
    assert result['changed'] is True
    assert result['remove'] == list(reversed(five_days[:3]))
    assert result['keep'] == list(reversed(five_days[3:]))
    assert result['removed'] == []
    assert keys(repo) == before


def test_retention_deletes_manifest_and_artifact_then_is_idempotent(repo, repo_options, five_days):
    result = operations.retention('crm', repo_options, {'keep_last': 2}, now=NOW)
    assert result['changed'] is True
    assert result['removed'] == five_days[:3]        # oldest first
    assert keys(repo) == sorted(['crm/%s.dump' % i for i in five_days[3:]]
                                + ['crm/%s.manifest.json' % i for i in five_days[3:]])

    again = operations.retention('crm', repo_options, {'keep_last': 2}, now=NOW)
    assert again['changed'] is False
    assert again['remove'] == [] and again['removed'] == [] and again['incomplete_removed'] == []


def test_retention_never_deletes_the_newest_complete_backup(repo, repo_options, store_backup):
    monthly = [store_backup(repo, 'crm', utc(2026, 11, day, 3), tags=['monthly']) for day in (1, 2)]
    newest = store_backup(repo, 'crm', utc(2026, 11, 23, 3), tags=['daily'])

    result = operations.retention('crm', repo_options, {'keep_tags': ['monthly']}, now=NOW)
    assert newest in result['keep'] and newest not in result['remove']
    assert set(result['keep']) == set(monthly + [newest])
    assert result['removed'] == []
    assert [b.id for b in Catalog(repo, 'crm').complete] == [newest] + list(reversed(monthly))


def test_retention_never_deletes_the_newest_even_when_all_are_old(repo, repo_options, five_days):
    # keep_days measures from now: in a month every backup is older than 7 days
    later = NOW + datetime.timedelta(days=30)
    operations.retention('crm', repo_options, {'keep_days': 7}, now=later)
    assert [b.id for b in Catalog(repo, 'crm').complete] == [five_days[-1]]


def test_retention_removes_legacy_backups_by_policy(repo, repo_options, five_days):
    repo.put_bytes('crm_backup_20251028_140000.sql.gz', b'legacy')
    result = operations.retention('crm', repo_options, {'keep_last': 5}, now=NOW)
    assert result['removed'] == ['crm_backup_20251028_140000']
    assert 'crm_backup_20251028_140000.sql.gz' not in keys(repo)


def test_retention_cleans_incomplete_leftovers_after_the_grace(repo, repo_options, store_backup, five_days):
    old_orphan = store_backup(repo, 'crm', utc(2026, 11, 10, 3), manifest=False)
    new_orphan = store_backup(repo, 'crm', utc(2026, 11, 23, 11), manifest=False)
    old_partial = 'crm/%s.dump.aaaa1111.partial' % mf.make_id('crm', utc(2026, 11, 20, 3))
    new_partial = 'crm/%s.dump.bbbb2222.partial' % mf.make_id('crm', utc(2026, 11, 23, 11))
    repo.put_bytes(old_partial, b'half')
    repo.put_bytes(new_partial, b'half')
    set_mtime(repo, 'crm/%s.dump' % old_orphan, NOW - datetime.timedelta(hours=48))
    set_mtime(repo, old_partial, NOW - datetime.timedelta(hours=25))
    set_mtime(repo, 'crm/%s.dump' % new_orphan, NOW - datetime.timedelta(hours=1))
    set_mtime(repo, new_partial, NOW - datetime.timedelta(hours=23))
    policy = {'keep_last': 10}   # keeps every complete backup

    checked = operations.retention('crm', repo_options, policy, check_mode=True, now=NOW)
    assert checked['changed'] is True
    assert sorted(checked['incomplete']) == sorted(['crm/%s.dump' % old_orphan, old_partial])
    assert checked['incomplete_removed'] == []
    assert os.path.exists(os.path.join(repo.root, 'crm', '%s.dump' % old_orphan))

    result = operations.retention('crm', repo_options, policy, now=NOW)
    assert sorted(result['incomplete_removed']) == sorted(['crm/%s.dump' % old_orphan, old_partial])
    remaining = keys(repo)
    assert 'crm/%s.dump' % old_orphan not in remaining and old_partial not in remaining
    assert 'crm/%s.dump' % new_orphan in remaining and new_partial in remaining
    assert [b.id for b in Catalog(repo, 'crm').complete] == list(reversed(five_days))

    assert operations.retention('crm', repo_options, policy, now=NOW)['changed'] is False


def test_retention_reports_damaged_backups_and_leaves_them(repo, repo_options, store_backup, five_days):
    lonely = store_backup(repo, 'crm', utc(2026, 11, 1, 3), artifact=False)
    result = operations.retention('crm', repo_options, {'keep_last': 1}, now=NOW)
    assert result['damaged'] == [{'id': lonely, 'problem': 'manifest without artifact'}]
    assert mf.manifest_key('crm', lonely) in keys(repo)


def test_select_incomplete_id_when_nothing_is_complete(repo, store_backup):
    broken = store_backup(repo, 'crm', utc(2026, 11, 23, 3), data=b'x' * 12, manifest_size=99)
    with pytest.raises(NotFoundError) as err:
        Catalog(repo, 'crm').select(broken)
    assert 'incomplete (artifact has 12 bytes, manifest records 99)' in str(err.value)
