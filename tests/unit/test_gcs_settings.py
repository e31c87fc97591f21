# Copyright (c) offsite.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Google Cloud Storage through its S3-interoperable XML API (docs/repositories-gcs.md): the
settings `type: s3` derives for https://storage.googleapis.com, checked without a network."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories import open_repository
from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories.s3 import (
    S3Repository, checksum_setting)

GCS = 'https://storage.googleapis.com'
HMAC_ID = 'GOOG1EEXAMPLEHMACACCESSIDFORTESTS'
HMAC_SECRET = 'bGoa+V7g/yqDXvKRqq+JTFn4uQZbPiQJo4pf9RzJ'


def gcs(**options):
    base = {'type': 's3', 'bucket': 'acme-backups', 'prefix': 'prod', 'endpoint_url': GCS, 'region': 'auto',
            'access_key': HMAC_ID, 'secret_key': HMAC_SECRET}
    base.update(options)
    return open_repository(base)


def test_gcs_is_an_s3_repository_with_checksums_only_when_required():
    # GCS rejects botocore 1.36+'s default CRC32 checksum headers (x-amz-checksum-*, aws-chunked)
    repo = gcs()
    assert isinstance(repo, S3Repository)
    assert checksum_setting(GCS) == 'when_required'
    config = repo.client_config()
    assert config.request_checksum_calculation == 'when_required'
    assert config.response_checksum_validation == 'when_required'
    assert config.s3 == {'addressing_style': 'path'}   # storage.googleapis.com/<bucket>/<key>
    assert config.region_name == 'auto'


def test_gcs_requests_are_signed_sigv4_for_region_auto_at_the_gcs_endpoint():
    # a presigned URL is built offline by the same client the repository uses for every call
    url = gcs().client.generate_presigned_url(
        'get_object', Params={'Bucket': 'acme-backups', 'Key': 'prod/crm/x.dump.zst'}, ExpiresIn=60)
    assert url.startswith(GCS + '/acme-backups/prod/crm/x.dump.zst?')
    assert 'X-Amz-Algorithm=AWS4-HMAC-SHA256' in url
    assert 'X-Amz-Credential=%s%%2F' % HMAC_ID in url and '%2Fauto%2Fs3%2Faws4_request' in url
    assert HMAC_SECRET not in url


def test_gcs_location_names_the_endpoint_without_the_hmac_secret():
    repo = gcs()
    assert repo.location('crm/x.dump.zst') == 's3://acme-backups/prod/crm/x.dump.zst at ' + GCS
    assert HMAC_SECRET not in repo.location() and HMAC_SECRET not in repr(repo.describe())
    assert HMAC_SECRET in repo.secrets()
