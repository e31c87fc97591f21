# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A hardened S3 bucket for backups, and the least-privilege IAM policy of the key that fills it.

``ensure_bucket`` reads each setting, compares it with what is asked, and changes only what
differs (in check mode: nothing), returning the before/after states for ``--diff``. Settings
not asked for are left as they are. Lifecycle rules are recognised by their ids
(``offsite-backup-...``); other rules of the bucket are kept.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json

from .errors import ConfigError, RepositoryError
from .repositories.s3 import LOCK_MODES, S3Repository, _boto

ARCHIVE_RULE = 'offsite-backup-archive'
CLEANUP_RULE = 'offsite-backup-cleanup'
# manifests are a few KiB: keeping objects below 128 KiB out of archive classes keeps every
# manifest readable, so listing, retention and restore's choice of a backup still work
# (the bucket-wide setting AWS applies by default since 2024, stated explicitly)
ARCHIVE_MIN_SIZE = 'all_storage_classes_128K'
STORAGE_CLASSES = ('GLACIER', 'DEEP_ARCHIVE', 'GLACIER_IR', 'STANDARD_IA', 'ONEZONE_IA', 'INTELLIGENT_TIERING')
ENCRYPTIONS = ('AES256', 'aws:kms', 'none')
CONNECTION_OPTIONS = ('endpoint_url', 'region', 'access_key', 'secret_key', 'session_token', 'timeout', 'retries')


def iam_policy(bucket, prefix='', delete=True, object_lock=False):
    """The least-privilege policy of the key that uploads (and, with ``delete``, runs retention)."""
    prefix = (prefix or '').strip('/')
    objects = 'arn:aws:s3:::%s/%s' % (bucket, prefix + '/*' if prefix else '*')
    listing = {'Sid': 'ListTheBackups', 'Effect': 'Allow',
               'Action': ['s3:ListBucket', 's3:ListBucketMultipartUploads', 's3:GetBucketLocation',
                          's3:GetBucketObjectLockConfiguration'] + (['s3:ListBucketVersions'] if delete else []),
               'Resource': 'arn:aws:s3:::%s' % bucket}
    if prefix:
        listing['Condition'] = {'StringLike': {'s3:prefix': [prefix, prefix + '/*']}}
    writing = {'Sid': 'ReadAndWriteBackups', 'Effect': 'Allow',
               'Action': ['s3:GetObject', 's3:PutObject', 's3:AbortMultipartUpload', 's3:ListMultipartUploadParts'],
               'Resource': objects}
    statements = [listing, writing]
    if object_lock:
        # extending is all it allows: shortening a governance lock needs s3:BypassGovernanceRetention,
        # which this policy never grants, and a compliance lock cannot be shortened at all
        writing['Action'] += ['s3:GetObjectRetention', 's3:PutObjectRetention', 's3:GetObjectVersion']
    if delete:
        statements.append({'Sid': 'RetentionDeletesOldBackups', 'Effect': 'Allow',
                           'Action': ['s3:DeleteObject', 's3:DeleteObjectVersion'], 'Resource': objects})
    return {'Version': '2012-10-17', 'Statement': statements}


def _lifecycle_rules(prefix, transition_days, storage_class, noncurrent_days, abort_days):
    """Our rules, in the shape S3 returns them."""
    prefix = (prefix or '').strip('/')
    scope = prefix + '/' if prefix else ''
    rules = []
    if transition_days is not None:
        rules.append({'ID': ARCHIVE_RULE, 'Status': 'Enabled',
                      'Filter': {'Prefix': scope},
                      'Transitions': [{'Days': transition_days, 'StorageClass': storage_class}]})
    cleanup = {'ID': CLEANUP_RULE, 'Status': 'Enabled', 'Filter': {'Prefix': scope}}
    if abort_days is not None:
        cleanup['AbortIncompleteMultipartUpload'] = {'DaysAfterInitiation': abort_days}
    if noncurrent_days is not None:
        cleanup['NoncurrentVersionExpiration'] = {'NoncurrentDays': noncurrent_days}
    if len(cleanup) > 3:
        rules.append(cleanup)
    return rules


def _comparable(rule):
    """A rule as S3 returned it, without the empty fields some stores add: other rules of the
    bucket are written back exactly as they are."""
    return dict((k, v) for k, v in rule.items() if v not in (None, [], {}))


def _rule_id(rule):
    return str(rule.get('ID', ''))


class BucketSettings(object):
    """Reads and writes one bucket's settings through an S3 repository's client."""

    def __init__(self, options):
        self.repo = S3Repository(dict((k, options.get(k)) for k in CONNECTION_OPTIONS + ('bucket',)))
        self.bucket = options['bucket']
        self.client = self.repo.client
        self.errors = self.repo._errors

    def _missing(self, call, codes):
        """Run ``call``; the error codes in ``codes`` mean "not configured" and give None."""
        botocore = _boto()
        try:
            return call()
        except botocore.exceptions.ClientError as exc:
            if str(exc.response.get('Error', {}).get('Code')) in codes:
                return None
            with self.errors('reading the settings of'):
                raise

    def exists(self):
        return self._missing(lambda: self.client.head_bucket(Bucket=self.bucket), ('404', 'NoSuchBucket')) is not None

    def read(self):
        """The current state, in the same shape as ``wanted``."""
        c, b = self.client, self.bucket
        versioning = self._missing(lambda: c.get_bucket_versioning(Bucket=b), ()) or {}
        lock = self._missing(lambda: c.get_object_lock_configuration(Bucket=b),
                             ('ObjectLockConfigurationNotFoundError',)) or {}
        lock = lock.get('ObjectLockConfiguration', {})
        rule = lock.get('Rule', {}).get('DefaultRetention')
        lifecycle = self._missing(lambda: c.get_bucket_lifecycle_configuration(Bucket=b),
                                  ('NoSuchLifecycleConfiguration',)) or {}
        public = self._missing(lambda: c.get_public_access_block(Bucket=b),
                               ('NoSuchPublicAccessBlockConfiguration',)) or {}
        encryption = self._missing(lambda: c.get_bucket_encryption(Bucket=b),
                                   ('ServerSideEncryptionConfigurationNotFoundError',)) or {}
        default = (encryption.get('ServerSideEncryptionConfiguration', {}).get('Rules') or [{}])[0]
        default = default.get('ApplyServerSideEncryptionByDefault', {})
        return {
            'exists': True,
            'versioning': versioning.get('Status') == 'Enabled',
            'object_lock': lock.get('ObjectLockEnabled') == 'Enabled',
            'object_lock_default': ({'mode': rule['Mode'].lower(), 'days': rule.get('Days')} if rule else None),
            'lifecycle': sorted((_comparable(r) for r in lifecycle.get('Rules', [])), key=_rule_id),
            'block_public_access': all(public.get('PublicAccessBlockConfiguration', {}).get(k) for k in (
                'BlockPublicAcls', 'IgnorePublicAcls', 'BlockPublicPolicy', 'RestrictPublicBuckets')),
            'encryption': {'algorithm': default.get('SSEAlgorithm'), 'kms_key_id': default.get('KMSMasterKeyID')},
        }


def _wanted(options, current):
    """The state asked for; settings not asked for keep their current value."""
    wanted = dict(current, exists=True)
    if options.get('versioning') is not None:
        wanted['versioning'] = options['versioning']
    if options.get('object_lock_enabled'):
        wanted['object_lock'] = True
        wanted['versioning'] = True  # Object Lock needs (and turns on) versioning
    elif options.get('object_lock_enabled') is False and current['object_lock']:
        raise ConfigError('bucket %s has Object Lock enabled and S3 cannot turn it off' % options['bucket'],
                          'leave object_lock_enabled unset (or true) for this bucket')
    if wanted['object_lock'] and options.get('versioning') is False:
        raise ConfigError('versioning: false contradicts Object Lock, which needs a versioned bucket')
    mode, days = options.get('object_lock_default_mode'), options.get('object_lock_default_days')
    if (mode is None) != (days is None):
        raise ConfigError('object_lock_default_mode and object_lock_default_days go together')
    if mode is not None:
        if mode not in LOCK_MODES:
            raise ConfigError('object_lock_default_mode: %r is not known' % (mode,), 'use governance or compliance')
        if not wanted['object_lock']:
            raise ConfigError('a default retention needs Object Lock', 'set object_lock_enabled: true')
        wanted['object_lock_default'] = {'mode': mode, 'days': int(days)}
    storage_class = options.get('transition_storage_class') or 'GLACIER'
    if storage_class not in STORAGE_CLASSES:
        raise ConfigError('transition_storage_class: %r is not known' % (storage_class,),
                          'use one of: %s' % ', '.join(STORAGE_CLASSES))
    for name in ('transition_days', 'noncurrent_expiration_days', 'abort_incomplete_upload_days'):
        if options.get(name) is not None and options[name] < 1:
            raise ConfigError('%s must be at least 1' % name)
    ours = _lifecycle_rules(options.get('prefix'), options.get('transition_days'), storage_class,
                            options.get('noncurrent_expiration_days'), options.get('abort_incomplete_upload_days'))
    others = [r for r in current['lifecycle'] if r.get('ID') not in (ARCHIVE_RULE, CLEANUP_RULE)]
    wanted['lifecycle'] = sorted(others + ours, key=_rule_id)  # S3 does not keep the order
    if options.get('block_public_access'):
        wanted['block_public_access'] = True
    algorithm = options.get('encryption')
    if algorithm not in (None, 'none'):
        if algorithm not in ENCRYPTIONS:
            raise ConfigError('encryption: %r is not known' % (algorithm,), 'use one of: %s' % ', '.join(ENCRYPTIONS))
        wanted['encryption'] = {'algorithm': algorithm,
                                'kms_key_id': options.get('kms_key_id') if algorithm == 'aws:kms' else None}
    return wanted


def _apply(settings, current, wanted, region):
    c, b = settings.client, settings.bucket
    done = []

    def change(what, call):
        with settings.errors('creating' if what == 'creating' else 'setting %s on' % what):
            call()
        done.append(what)

    if not current['exists']:
        params = {'Bucket': b}
        if region and region != 'us-east-1':
            params['CreateBucketConfiguration'] = {'LocationConstraint': region}
        if wanted['object_lock']:
            params['ObjectLockEnabledForBucket'] = True
        change('creating', lambda: c.create_bucket(**params))
        current = settings.read()
    if wanted['versioning'] != current['versioning']:
        status = 'Enabled' if wanted['versioning'] else 'Suspended'
        change('versioning', lambda: c.put_bucket_versioning(Bucket=b, VersioningConfiguration={'Status': status}))
    if wanted['object_lock'] != current['object_lock'] or wanted['object_lock_default'] != current['object_lock_default']:
        config = {'ObjectLockEnabled': 'Enabled'}
        if wanted['object_lock_default']:
            config['Rule'] = {'DefaultRetention': {'Mode': wanted['object_lock_default']['mode'].upper(),
                                                   'Days': wanted['object_lock_default']['days']}}
        change('object lock', lambda: c.put_object_lock_configuration(Bucket=b, ObjectLockConfiguration=config))
    if wanted['lifecycle'] != current['lifecycle']:
        if wanted['lifecycle']:
            change('lifecycle', lambda: c.put_bucket_lifecycle_configuration(
                Bucket=b, LifecycleConfiguration={'Rules': wanted['lifecycle']},
                TransitionDefaultMinimumObjectSize=ARCHIVE_MIN_SIZE))
        else:
            change('lifecycle', lambda: c.delete_bucket_lifecycle(Bucket=b))
    if wanted['block_public_access'] and not current['block_public_access']:
        flags = dict((k, True) for k in ('BlockPublicAcls', 'IgnorePublicAcls', 'BlockPublicPolicy', 'RestrictPublicBuckets'))
        change('public access block', lambda: c.put_public_access_block(Bucket=b, PublicAccessBlockConfiguration=flags))
    if wanted['encryption'] != current['encryption']:
        default = {'SSEAlgorithm': wanted['encryption']['algorithm']}
        if wanted['encryption']['kms_key_id']:
            default['KMSMasterKeyID'] = wanted['encryption']['kms_key_id']
        change('default encryption', lambda: c.put_bucket_encryption(
            Bucket=b, ServerSideEncryptionConfiguration={'Rules': [{'ApplyServerSideEncryptionByDefault': default}]}))
    return done


def ensure_bucket(options, check_mode=False, log=None):
    """Make the bucket look like ``options`` ask; return what changed and the IAM policy."""
    if not options.get('bucket'):
        raise ConfigError('bucket is required')
    settings = BucketSettings(options)
    try:
        exists = settings.exists()
        absent = {'exists': False, 'versioning': False, 'object_lock': False, 'object_lock_default': None,
                  'lifecycle': [], 'block_public_access': False, 'encryption': {'algorithm': None, 'kms_key_id': None}}
        current = settings.read() if exists else absent
        wanted = _wanted(options, current)
        changes = [k for k in sorted(wanted) if wanted[k] != current[k]]
        if changes and not check_mode:
            try:
                _apply(settings, current, wanted, options.get('region'))
            except RepositoryError as exc:
                if 'object lock' not in exc.message or not exists:
                    raise
                raise RepositoryError(exc.message, 'S3 enables Object Lock on an existing bucket only when it is versioned '
                                      '(some stores only when it is empty); create a new bucket with object_lock_enabled: true')
            after = settings.read()
        else:
            after = wanted
    finally:
        settings.repo.close()
    policy = iam_policy(options['bucket'], options.get('prefix'), delete=options.get('policy_allows_delete', True),
                        object_lock=bool(after['object_lock']))
    return {'changed': bool(changes), 'bucket': options['bucket'], 'created': not exists and bool(changes),
            'changes': changes, 'state': after, 'diff': {'before': current, 'after': after},
            'iam_policy': policy, 'iam_policy_json': json.dumps(policy, indent=2, sort_keys=True)}
