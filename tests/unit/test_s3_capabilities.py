# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""How the s3 repository reads a store's answers about Object Lock and versioning.

Pure logic over error codes: the answers are queued with botocore's own Stubber (no request
leaves the process), because the loopback S3 (moto) supports both features and never answers
NotImplemented the way smaller S3-compatible stores do."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import pytest
from botocore.stub import Stubber

from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import NotFoundError, RepositoryError
from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories import open_repository


def repository():
    repo = open_repository({'type': 's3', 'bucket': 'b', 'endpoint_url': 'http://127.0.0.1:9', 'region': 'us-east-1',
                            'access_key': 'k', 'secret_key': 's'})
    return repo, Stubber(repo.client)


@pytest.mark.parametrize('code, status, expected', [
    ('ObjectLockConfigurationNotFoundError', 404, False),
    ('NotImplemented', 501, False),  # a store without Object Lock at all (s3rver, some gateways)
    ('AccessDenied', 403, None),     # this key may not ask: unknown, decided per object later
])
def test_object_lock_answers(code, status, expected):
    repo, stub = repository()
    stub.add_client_error('get_object_lock_configuration', code, http_status_code=status)
    with stub:
        assert repo.bucket_has_locks() is expected


@pytest.mark.parametrize('code, status, error, words', [
    ('NoSuchBucket', 404, NotFoundError, 'bucket b does not exist'),
    ('InternalError', 500, RepositoryError, 'reading the Object Lock setting'),
])
def test_object_lock_other_errors_are_clear_errors(code, status, error, words):
    repo, stub = repository()
    stub.add_client_error('get_object_lock_configuration', code, http_status_code=status)
    with stub, pytest.raises(error, match=words):
        repo.bucket_has_locks()


@pytest.mark.parametrize('answer, expected', [
    ({}, False),                         # never versioned: a plain DELETE removes the only version
    ({'Status': 'Enabled'}, True),
    ({'Status': 'Suspended'}, True),     # old versions may remain: list them
])
def test_versioning_answers(answer, expected):
    repo, stub = repository()
    stub.add_response('get_bucket_versioning', answer, {'Bucket': 'b'})
    with stub:
        assert repo._bucket_has_versions() is expected
        assert repo._bucket_has_versions() is expected  # asked once: a second call needs no answer


@pytest.mark.parametrize('code, status, expected', [
    ('NotImplemented', 501, False),
    ('AccessDenied', 403, True),  # unknown: list versions (and fall back to a plain delete if refused)
])
def test_versioning_errors(code, status, expected):
    repo, stub = repository()
    stub.add_client_error('get_bucket_versioning', code, http_status_code=status)
    with stub:
        assert repo._bucket_has_versions() is expected
