# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bounded waiting and redacted endpoints (issue 12, items 8 and 11).

With default options every network repository gives up on a server that accepts connections
and never answers within two minutes: computed from the settings each type hands to its library
or tool (botocore's Config, ssh's options, the restic probe), not waited for. The waiting itself
is proven against a silent server in tests/integration/test_bounded_waiting_servers.py."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import logging
import re
import sys

import pytest

from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import ConfigError, UnreachableError
from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories import open_repository
from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories.base import (
    LONGEST_DEFAULT_WAIT, redact_url)
from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories.s3 import MAX_BACKOFF
from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories.sftp import _paramiko

HOST_KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl'
DEFAULTS = {
    's3': {'type': 's3', 'bucket': 'b', 'region': 'us-east-1', 'access_key': 'k', 'secret_key': 's'},
    'sftp': {'type': 'sftp', 'host': 'h', 'user': 'u', 'path': '/srv', 'host_key': HOST_KEY},
    'rsync': {'type': 'rsync', 'host': 'h', 'user': 'u', 'path': '/srv', 'host_key': HOST_KEY},
    'restic': {'type': 'restic', 'restic_repository': '/srv/restic', 'restic_password': 'pw-123456'},
}


def test_s3_defaults_give_up_within_two_minutes():
    repo = open_repository(DEFAULTS['s3'])
    config = repo.client_config()
    tries = config.retries['total_max_attempts']
    # every try may wait to connect and then for an answer; botocore sleeps at most MAX_BACKOFF between tries
    worst = tries * (config.connect_timeout + config.read_timeout) + sum(min(2 ** i, MAX_BACKOFF)
                                                                         for i in range(tries - 1))
    assert worst == repo.longest_wait() <= LONGEST_DEFAULT_WAIT
    assert config.retries['mode'] == 'standard'


def test_sftp_defaults_give_up_within_two_minutes():
    repo = open_repository(DEFAULTS['sftp'])
    # paramiko waits `timeout` to connect, for the banner, for authentication and for the channel
    assert repo.longest_wait() == 4 * repo.timeout <= LONGEST_DEFAULT_WAIT


def test_rsync_defaults_give_up_within_two_minutes():
    repo = open_repository(DEFAULTS['rsync'])
    try:
        command = repo._ssh_command()
    finally:
        repo.close()
    option = dict(re.findall(r'-o (\w+)=(\S+)', command))
    # ConnectTimeout covers connecting and the handshake; then keepalives, ServerAliveInterval apart
    worst = int(option['ConnectTimeout']) + int(option['ServerAliveInterval']) * int(option['ServerAliveCountMax'])
    assert worst == repo.longest_wait() <= LONGEST_DEFAULT_WAIT


def test_restic_defaults_give_up_within_two_minutes(monkeypatch):
    repo = open_repository(DEFAULTS['restic'])
    seen = {}

    def run(argv, log, env=None, stdin=None, timeout=None):
        seen['timeout'] = timeout
        import subprocess
        raise subprocess.TimeoutExpired(argv, timeout)
    monkeypatch.setattr('ansible_collections.offsite.backup.plugins.module_utils._engine.repositories.restic.run', run)
    monkeypatch.setattr(repo, '_argv', lambda *args: ['restic'] + list(args))
    with pytest.raises(UnreachableError, match='did not answer within 45 s') as caught:
        repo.list('crm')
    assert caught.value.kind == 'unreachable' and 'timeout (15 s per try)' in str(caught.value)
    assert seen['timeout'] == repo.longest_wait() <= LONGEST_DEFAULT_WAIT


@pytest.mark.parametrize('kind', sorted(DEFAULTS))
@pytest.mark.parametrize('option, value', [('timeout', 0), ('timeout', 'soon'), ('retries', -1), ('timeout', True)])
def test_waiting_options_are_checked(kind, option, value):
    with pytest.raises(ConfigError, match=option):
        open_repository(dict(DEFAULTS[kind], **{option: value}))


def test_waiting_options_are_used():
    repo = open_repository(dict(DEFAULTS['s3'], timeout=3, retries=0))
    config = repo.client_config()
    assert (config.connect_timeout, config.read_timeout, config.retries['total_max_attempts']) == (3, 3, 1)
    assert repo.longest_wait() == 6


def test_paramiko_never_prints_its_tracebacks():
    _paramiko()
    quiet = logging.getLogger('paramiko')
    assert not quiet.propagate and any(isinstance(h, logging.NullHandler) for h in quiet.handlers)
    # a handler some other code of the same process added may stay, but none writes to a terminal
    terminals = (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)
    assert not [h for h in quiet.handlers if getattr(h, 'stream', None) in terminals], quiet.handlers


# -- credentials inside endpoint_url (item 11) --------------------------------------------------
@pytest.mark.parametrize('url, shown', [
    ('https://user:pa55word@s3.example.net', 'https://user:***@s3.example.net'),
    ('https://AKIA1234:secret/with+chars@host:9000/path', 'https://AKIA1234:***@host:9000/path'),
    ('https://token@host', 'https://***@host'),
    ('https://host:9000', 'https://host:9000'),
    ('http://127.0.0.1:9/a@b', 'http://127.0.0.1:***@b'),   # an @ in a path: hidden too, rather than a leak
    (None, None),
])
def test_redact_url(url, shown):
    assert redact_url(url) == shown


def test_credentials_in_the_endpoint_never_show():
    """Where the endpoint is shown: location (results, logs), and the error of a failed call
    (here a real connection refused: nothing listens on port 9)."""
    repo = open_repository(dict(DEFAULTS['s3'], endpoint_url='http://admin:s3cr3t-pw@127.0.0.1:9', timeout=1, retries=0))
    assert 's3cr3t' not in repo.location('crm/x') and 'admin:***@127.0.0.1:9' in repo.location()
    assert 'admin:s3cr3t-pw' in repo.secrets()  # the job log's redaction filter gets it too
    with pytest.raises(UnreachableError) as caught:
        repo.list('crm')
    assert 's3cr3t' not in str(caught.value) and caught.value.kind == 'unreachable'
    assert repo.scrub('Could not connect to "http://admin:s3cr3t-pw@127.0.0.1:9/b"') == \
        'Could not connect to "http://***@127.0.0.1:9/b"'
