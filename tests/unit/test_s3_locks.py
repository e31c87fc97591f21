"""Pure parts of S3 hardening: how long a kept backup stays locked, the IAM policy, lifecycle rules."""
import datetime

import pytest

from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import ConfigError
from ansible_collections.offsite.backup.plugins.module_utils._engine.locks import lock_horizon
from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories import open_repository
from ansible_collections.offsite.backup.plugins.module_utils._engine.s3_bucket import (
    _lifecycle_rules, iam_policy)

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 11, 23, 22, 0, tzinfo=UTC)
CREATED = datetime.datetime(2026, 3, 31, 23, 30, tzinfo=UTC)


def at(*args):
    return datetime.datetime(*args, tzinfo=UTC)


def test_monthly_copy_is_locked_until_the_policy_lets_it_go():
    # kept as one of 12 monthly copies: it can leave them when the 12th month after March 2026 starts
    assert lock_horizon(CREATED, ['monthly snapshot'], {'keep_monthly': 12}, NOW) == at(2027, 3, 1)
    assert lock_horizon(CREATED, ['oldest monthly snapshot'], {'keep_monthly': 12}, NOW) == at(2027, 3, 1)


def test_yearly_wins_over_monthly_and_daily_adds_nothing():
    reasons = ['daily snapshot', 'monthly snapshot', 'yearly snapshot']
    assert lock_horizon(CREATED, reasons, {'keep_daily': 7, 'keep_monthly': 12, 'keep_yearly': 3}, NOW) == at(2029, 1, 1)


def test_backups_kept_for_other_reasons_are_not_extended():
    assert lock_horizon(CREATED, ['daily snapshot', 'last snapshot'], {'keep_daily': 7, 'keep_last': 3}, NOW, 30) is None
    assert lock_horizon(CREATED, ['within 30d'], {'keep_within': '30d'}, NOW, 30) is None


def test_within_monthly_window():
    assert lock_horizon(CREATED, ['monthly within 1y'], {'keep_within_monthly': '1y'}, NOW) == at(2027, 4, 2)


def test_unlimited_rolls_with_the_lock_length_and_rounds_up_to_midnight():
    # -1 keeps forever: lock for object_lock_days from now; the next midnight so that reruns agree
    assert lock_horizon(CREATED, ['monthly snapshot'], {'keep_monthly': -1}, NOW, 30) == at(2026, 12, 24)
    assert lock_horizon(CREATED, ['monthly snapshot'], {'keep_monthly': -1}, NOW) is None
    # a copy kept past its calendar bound (too few newer months) is still covered by the rolling lock
    assert lock_horizon(CREATED, ['monthly snapshot'], {'keep_monthly': 2}, NOW, 10) == at(2026, 12, 4)
    later = NOW + datetime.timedelta(hours=1)
    assert lock_horizon(CREATED, ['monthly snapshot'], {'keep_monthly': 2}, later, 10) == at(2026, 12, 4)


def test_iam_policy_without_delete_grants_no_delete():
    policy = iam_policy('acme', 'backups', delete=False)
    actions = [a for s in policy['Statement'] for a in s['Action']]
    assert not [a for a in actions if 'Delete' in a or 'Bypass' in a]
    listing, objects = policy['Statement']
    assert listing['Resource'] == 'arn:aws:s3:::acme'
    assert listing['Condition'] == {'StringLike': {'s3:prefix': ['backups', 'backups/*']}}
    assert objects['Resource'] == 'arn:aws:s3:::acme/backups/*'
    assert {'s3:PutObject', 's3:GetObject', 's3:AbortMultipartUpload'} <= set(objects['Action'])


def test_iam_policy_for_retention_and_locks():
    policy = iam_policy('acme', '', delete=True, object_lock=True)
    actions = set(a for s in policy['Statement'] for a in s['Action'])
    assert {'s3:DeleteObject', 's3:DeleteObjectVersion', 's3:ListBucketVersions', 's3:PutObjectRetention'} <= actions
    assert 's3:BypassGovernanceRetention' not in actions  # a thief with this key cannot shorten a lock
    assert 'Condition' not in policy['Statement'][0]
    assert policy['Statement'][1]['Resource'] == 'arn:aws:s3:::acme/*'


def test_lifecycle_rules():
    assert _lifecycle_rules('backups/', None, 'GLACIER', None, None) == []
    archive, cleanup = _lifecycle_rules('/backups', 30, 'DEEP_ARCHIVE', 90, 7)
    assert archive == {'ID': 'offsite-backup-archive', 'Status': 'Enabled', 'Filter': {'Prefix': 'backups/'},
                       'Transitions': [{'Days': 30, 'StorageClass': 'DEEP_ARCHIVE'}]}
    assert cleanup['AbortIncompleteMultipartUpload'] == {'DaysAfterInitiation': 7}
    assert cleanup['NoncurrentVersionExpiration'] == {'NoncurrentDays': 90}


@pytest.mark.parametrize('options, words', [
    ({'object_lock_mode': 'governance'}, 'go together'),
    ({'object_lock_days': 3}, 'go together'),
    ({'object_lock_mode': 'legal', 'object_lock_days': 3}, 'not known'),
    ({'object_lock_mode': 'compliance', 'object_lock_days': 0}, 'at least 1'),
])
def test_bad_lock_options_are_config_errors(options, words):
    with pytest.raises(ConfigError) as caught:
        open_repository(dict({'type': 's3', 'bucket': 'acme'}, **options))
    assert words in str(caught.value)
