# Copyright (c) offsite.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Repository settings that need no network: S3 client configuration, SFTP host-key rules,
locations without secrets."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import pytest

from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import ConfigError
from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories import open_repository
from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories.s3 import (
    S3Repository, checksum_setting)
from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories.sftp import SftpRepository

SECRET = 'wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY'
TOKEN = 'FwoGZXIvYXdzEXAMPLESESSIONTOKEN'


def s3(**options):
    base = {'type': 's3', 'bucket': 'crm-backups', 'access_key': 'AKIAEXAMPLE', 'secret_key': SECRET}
    base.update(options)
    return S3Repository(base)


# -- checksums ---------------------------------------------------------------------------------
@pytest.mark.parametrize('endpoint, requested, expected', [
    (None, 'auto', 'when_supported'),
    ('', 'auto', 'when_supported'),
    ('https://s3.eu-west-3.amazonaws.com', 'auto', 'when_supported'),
    ('https://s3.amazonaws.com', 'auto', 'when_supported'),
    ('http://127.0.0.1:9000', 'auto', 'when_required'),
    ('http://localhost:9000', 'auto', 'when_required'),
    ('https://s3.eu-central-003.backblazeb2.com', 'auto', 'when_required'),
    ('https://s3.wasabisys.com', 'auto', 'when_required'),
    ('http://127.0.0.1:9000', 'when_supported', 'when_supported'),
    (None, 'when_required', 'when_required'),
], ids=['aws-default', 'aws-empty', 'aws-regional', 'aws-global', 'loopback', 'localhost', 'b2', 'wasabi',
        'override-loopback', 'override-aws'])
def test_checksum_setting(endpoint, requested, expected):
    assert checksum_setting(endpoint, requested) == expected


def test_client_config_for_a_non_aws_endpoint_asks_checksums_only_when_required():
    # moto accepts botocore's default CRC checksums, B2 and Wasabi do not: only this test
    # proves that an S3-compatible endpoint gets when_required
    config = s3(endpoint_url='http://127.0.0.1:9000').client_config()
    assert config.request_checksum_calculation == 'when_required'
    assert config.response_checksum_validation == 'when_required'
    assert config.s3 == {'addressing_style': 'path'}


def test_client_config_for_aws():
    config = s3(region='eu-west-3').client_config()
    assert config.request_checksum_calculation == 'when_supported'
    assert config.response_checksum_validation == 'when_supported'
    assert config.s3 == {'addressing_style': 'auto'}
    assert config.region_name == 'eu-west-3'


def test_client_config_explicit_checksums_and_tuning():
    config = s3(endpoint_url='http://127.0.0.1:9000', checksums='when_supported', concurrency=8, retries=2,
                timeout=7).client_config()
    assert config.request_checksum_calculation == 'when_supported'
    assert config.max_pool_connections == 12        # every upload thread gets a connection
    assert config.retries == {'total_max_attempts': 3, 'mode': 'standard'}  # the first try and 2 retries
    assert (config.connect_timeout, config.read_timeout) == (7, 7)


# -- options -----------------------------------------------------------------------------------
@pytest.mark.parametrize('options, message', [
    ({'part_size': 4}, 'part_size must be at least 5'),
    ({'part_size': 0}, 'part_size must be at least 5'),
    ({'concurrency': 0}, 'concurrency must be at least 1'),
    ({'bucket': None}, 'needs bucket'),
    ({'bucket': ''}, 'needs bucket'),
    ({'verify': 'sometimes'}, 'verify'),
], ids=['part-size-4', 'part-size-0', 'concurrency-0', 'bucket-none', 'bucket-empty', 'verify-unknown'])
def test_s3_bad_options(options, message):
    with pytest.raises(ConfigError) as err:
        s3(**options)
    assert message in str(err.value)
    assert SECRET not in str(err.value)


def test_s3_part_size_is_mebibytes():
    assert s3(part_size=5).part_size == 5 * 1024 * 1024
    assert s3().part_size == 8 * 1024 * 1024


@pytest.mark.parametrize('options, key, expected', [
    ({}, 'crm/x.dump', 's3://crm-backups/crm/x.dump'),
    ({}, '', 's3://crm-backups/'),
    ({'prefix': '/hosts/db1/'}, 'crm/x.dump', 's3://crm-backups/hosts/db1/crm/x.dump'),
    ({'endpoint_url': 'http://127.0.0.1:9000'}, 'crm/x.dump', 's3://crm-backups/crm/x.dump at http://127.0.0.1:9000'),
], ids=['plain', 'root', 'prefix-trimmed', 'endpoint'])
def test_s3_location(options, key, expected):
    assert s3(**options).location(key) == expected


def test_s3_location_and_description_never_carry_secrets():
    repo = s3(endpoint_url='http://127.0.0.1:9000', session_token=TOKEN, prefix='p')
    texts = [repo.location(), repo.location('crm/x.dump'), repr(repo.describe())]
    for text in texts:
        assert SECRET not in text and TOKEN not in text
    assert sorted(repo.secrets()) == sorted([SECRET, TOKEN])


def test_open_repository_builds_by_type_and_refuses_unknown():
    assert isinstance(open_repository({'type': 's3', 'bucket': 'b'}), S3Repository)
    with pytest.raises(ConfigError) as err:
        open_repository({'type': 'ftp'})
    assert all(kind in str(err.value) for kind in ('local', 's3', 'sftp'))  # other types may sit between


# -- sftp --------------------------------------------------------------------------------------
def sftp(**options):
    base = {'type': 'sftp', 'host': 'u1.your-storagebox.de', 'user': 'u1', 'path': 'backups',
            'host_key': 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample'}
    base.update(options)
    return SftpRepository(base)


@pytest.mark.parametrize('options', [
    {'host_key': None},
    {'host_key': ''},
    {'host_key': None, 'known_hosts': ''},
], ids=['none', 'empty', 'empty-known-hosts'])
def test_sftp_without_a_pinned_key_is_refused(options):
    with pytest.raises(ConfigError) as err:
        sftp(**options)
    assert 'host_key' in str(err.value) and 'known_hosts' in str(err.value)
    assert 'ssh-keyscan -p 22 u1.your-storagebox.de' in str(err.value)


def test_sftp_with_known_hosts_only_is_accepted():
    repo = sftp(host_key=None, known_hosts='~/.ssh/known_hosts')
    assert repo.host == 'u1.your-storagebox.de'


@pytest.mark.parametrize('options, key, expected', [
    ({}, '', 'sftp://u1@u1.your-storagebox.de:22/~/backups'),
    ({}, 'crm/x.dump', 'sftp://u1@u1.your-storagebox.de:22/~/backups/crm/x.dump'),
    ({'port': 23}, 'crm/x.dump', 'sftp://u1@u1.your-storagebox.de:23/~/backups/crm/x.dump'),
    ({'path': '/srv/backups/'}, 'crm/x.dump', 'sftp://u1@u1.your-storagebox.de:22/srv/backups/crm/x.dump'),
    ({'path': '/'}, 'crm/x.dump', 'sftp://u1@u1.your-storagebox.de:22/crm/x.dump'),
    ({'path': '/'}, '', 'sftp://u1@u1.your-storagebox.de:22/'),
], ids=['relative-root', 'relative-key', 'storage-box-port', 'absolute-trailing-slash', 'slash-key',
        'slash-root'])
def test_sftp_location(options, key, expected):
    assert sftp(**options).location(key) == expected


def test_sftp_location_never_carries_the_passphrase():
    repo = sftp(private_key='/root/.ssh/id_backup', private_key_passphrase='hunter2-passphrase')
    assert 'hunter2-passphrase' not in repo.location('crm/x') + repr(repo.describe())
    assert repo.secrets() == ['hunter2-passphrase']
