# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The command log (``executed_commands``): one log reaches every repository, source and
encryption an operation opens, and what each of them declares secret is masked in it. The
commands they really run are proven in tests/integration/test_command_logs.py."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import threading

import pytest

from ansible_collections.offsite.backup.plugins.module_utils._engine import operations
from ansible_collections.offsite.backup.plugins.module_utils._engine.commands import CommandLog, run
from ansible_collections.offsite.backup.plugins.module_utils._engine.encryption import Encryption
from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories import TYPES, open_repository
from ansible_collections.offsite.backup.plugins.module_utils._engine.sources import open_source

HOST_KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl'
OPTIONS = {
    'local': {'type': 'local', 'path': '/srv/backups'},
    's3': {'type': 's3', 'bucket': 'b', 'region': 'us-east-1', 'access_key': 'AKIAEXAMPLE',
           'secret_key': 's3-secret-value', 'endpoint_url': 'https://admin:url-secret-value@127.0.0.1:9'},
    'sftp': {'type': 'sftp', 'host': 'h', 'user': 'u', 'path': '/srv', 'host_key': HOST_KEY,
             'private_key_passphrase': 'sftp-secret-value'},
    'b2': {'type': 'b2', 'bucket': 'b', 'key_id': 'k', 'application_key': 'b2-secret-value'},
    'rsync': {'type': 'rsync', 'host': 'h', 'user': 'u', 'path': '/srv', 'host_key': HOST_KEY,
              'private_key_passphrase': 'rsync-secret-value'},
    'restic': {'type': 'restic', 'restic_repository': '/srv/restic', 'restic_password': 'restic-secret-value',
               'restic_env': {'B2_ACCOUNT_KEY': 'env-secret-value'}},
}


def test_every_repository_type_is_covered_here():
    assert sorted(OPTIONS) == sorted(TYPES)


@pytest.mark.parametrize('kind', sorted(OPTIONS))
def test_the_repository_records_into_the_log_it_is_given_with_its_secrets_masked(kind):
    log = CommandLog()
    repo = open_repository(OPTIONS[kind], log)
    assert repo.log is log
    assert repo.secrets() or kind == 'local', 'every type above but local has a secret'
    for secret in repo.secrets():
        log.record(['tool', '--option=%s' % secret, secret])
    assert all(line == "tool '--option=***' '***'" for line in log.commands), log.commands


def test_without_a_log_a_repository_keeps_its_own():
    assert isinstance(open_repository(OPTIONS['local']).log, CommandLog)


@pytest.mark.parametrize('source', [
    {'type': 'postgresql', 'database': 'crm', 'password': 'pg-secret-value'},
    {'type': 'mysql', 'database': 'shop', 'password': 'my-secret-value'},
    {'type': 'redis', 'password': 'redis-secret-value'},
])
def test_a_source_masks_its_password(source):
    log = CommandLog()
    open_source(source, log)
    log.record(['psql', 'password=%s' % source['password']])
    assert log.commands == ["psql 'password=***'"]


def test_an_encryption_passphrase_is_masked():
    log = CommandLog()
    Encryption({'passphrase': 'enc-secret-value'}, log)
    log.record(['gpg', '--passphrase', 'enc-secret-value'])
    assert log.commands == ["gpg --passphrase '***'"]


def test_short_values_are_not_masked_and_the_longest_secret_wins():
    log = CommandLog()
    log.mask(['pw', None, 'abcd', 'abcdef'])
    log.record(['x', 'pw', 'abcdefgh', 'abcd'])
    assert log.commands == ["x pw '***gh' '***'"]


def test_records_from_many_threads_are_all_kept():
    log = CommandLog()

    def record(n):
        for i in range(500):
            log.record(['tool', str(n), str(i)])
    threads = [threading.Thread(target=record, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(log.commands) == 8 * 500 and len(set(log.commands)) == 8 * 500


def test_what_ran_is_recorded_masked_but_runs_unmasked():
    """Masking is in the record only: the tool gets its real argument."""
    log = CommandLog()
    log.mask(['hidden-value'])
    rc, out, err = run(['printf', '%s', 'hidden-value'], log)
    assert (rc, out) == (0, 'hidden-value')
    assert log.commands == ["printf %s '***'"]


def test_plan_runs_no_command():
    log = CommandLog()
    operations.plan([{'id': 'a_20260101T000000Z', 'time': '2026-01-01T00:00:00Z'}], {'keep_last': 1}, log=log)
    assert log.commands == []


def test_a_secret_that_needs_quoting_is_masked_too():
    log = CommandLog()
    log.mask(["it's a secret"])
    log.record(['tool', "--password=it's a secret"])
    assert log.commands == ["tool '--password=***'"]
