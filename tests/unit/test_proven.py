# Copyright (c) offsite.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Proven markers (written by a DR drill's restore): catalog and retention."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import datetime
import os

from ansible_collections.offsite.backup.plugins.module_utils._engine import manifest as mf
from ansible_collections.offsite.backup.plugins.module_utils._engine import operations
from ansible_collections.offsite.backup.plugins.module_utils._engine.catalog import Catalog

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 11, 23, 12, tzinfo=UTC)


def day(n):
    return datetime.datetime(2026, 11, n, 3, tzinfo=UTC)


def prove(repo, backup_id):
    repo.put_bytes(mf.proven_key('crm', backup_id), b'{"proven": true}\n')


def keys(repo):
    return sorted(o.key for o in repo.list(''))


def test_marker_is_not_an_artifact_and_marks_the_backup(repo, store_backup):
    ids = [store_backup(repo, 'crm', day(n)) for n in (20, 21)]
    prove(repo, ids[0])
    catalog = Catalog(repo, 'crm')
    assert [b.id for b in catalog.complete] == [ids[1], ids[0]]
    assert [b.as_dict()['proven'] for b in catalog.complete] == [False, True]
    assert catalog.newest_proven().id == ids[0]
    assert catalog.leftovers == []


def test_retention_keeps_the_newest_proven_backup_whatever_the_policy(repo, repo_options, store_backup):
    ids = [store_backup(repo, 'crm', day(n)) for n in range(18, 24)]
    prove(repo, ids[0])
    prove(repo, ids[1])  # the newest proven one
    result = operations.retention('crm', repo_options, {'keep_last': 2}, now=NOW)
    assert result['kept_as_proven'] == ids[1]
    assert set(result['keep']) == {ids[1], ids[4], ids[5]}
    assert ids[1] not in result['remove']
    assert result['reasons'][ids[1]] == ['newest backup proven restorable by a drill']
    assert sorted(result['removed']) == sorted([ids[0], ids[2], ids[3]])
    # the removed proven backup lost its marker too; the kept one still has it
    assert mf.proven_key('crm', ids[0]) not in keys(repo)
    assert mf.proven_key('crm', ids[1]) in keys(repo)
    again = operations.retention('crm', repo_options, {'keep_last': 2}, now=NOW)
    assert again['changed'] is False and again['kept_as_proven'] == ids[1]


def test_without_proven_backups_nothing_changes(repo, repo_options, store_backup):
    ids = [store_backup(repo, 'crm', day(n)) for n in (21, 22, 23)]
    result = operations.retention('crm', repo_options, {'keep_last': 1}, now=NOW)
    assert result['kept_as_proven'] is None
    assert result['removed'] == ids[:2]


def test_marker_of_a_deleted_backup_is_a_leftover_cleaned_after_the_grace(repo, repo_options, store_backup):
    ids = [store_backup(repo, 'crm', day(n)) for n in (22, 23)]
    orphan = mf.make_id('crm', day(10))
    prove(repo, orphan)
    old = (NOW - datetime.timedelta(days=2)).timestamp()
    os.utime(os.path.join(repo.root, 'crm', orphan + mf.PROVEN_SUFFIX), (old, old))
    catalog = Catalog(repo, 'crm')
    assert [b.id for b in catalog.backups] == list(reversed(ids))
    assert [o.key for o in catalog.leftovers] == [mf.proven_key('crm', orphan)]
    result = operations.retention('crm', repo_options, {'keep_last': 5}, now=NOW)
    assert result['incomplete_removed'] == [mf.proven_key('crm', orphan)]
