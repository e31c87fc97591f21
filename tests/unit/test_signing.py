# Copyright (c) offsite.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Signed manifests: real ssh-keygen signatures, and every way a manifest can be changed or
a signature be missing, malformed or made by the wrong key."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import subprocess

import pytest
from hypothesis import given, settings, strategies as st

from ansible_collections.offsite.backup.plugins.module_utils._engine import manifest as mf
from ansible_collections.offsite.backup.plugins.module_utils._engine import signing
from ansible_collections.offsite.backup.plugins.module_utils._engine.catalog import Backup
from ansible_collections.offsite.backup.plugins.module_utils._engine.commands import CommandLog
from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import AuthenticityError, ConfigError

CREATED = mf.parse_time('2026-12-06T03:00:00Z')
BACKUP_ID = mf.make_id('crm', CREATED)


def keygen(path, passphrase=''):
    subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', passphrase, '-C', 'test', '-f', str(path)],
                   check=True, capture_output=True)
    with open('%s.pub' % path) as handle:
        return handle.read().strip()


@pytest.fixture(scope='module')
def keys(tmp_path_factory):
    base = tmp_path_factory.mktemp('sshkeys')
    return dict((label, (str(base / label), keygen(base / label))) for label in ('server', 'other'))


@pytest.fixture(scope='module')
def signed(keys):
    data = mf.build('crm', BACKUP_ID, CREATED, 'dump.zst', 'zstd', 'custom', 1234, 'ab' * 32, 5000,
                    {'type': 'postgresql', 'database': 'crm'}, ['nightly'], 1.25)
    return signing.Signer({'key_file': keys['server'][0]}, CommandLog()).sign(data)


def backup_of(data):
    return Backup(data['id'], data['name'], CREATED, manifest=data, complete=True)


def verifier(*public_keys):
    return signing.Verifier({'trusted_keys': list(public_keys)}, CommandLog(), required=True)


def test_signed_manifest_verifies_after_a_round_trip_through_storage(keys, signed):
    stored = mf.loads(mf.dumps(signed), 'test')  # what a reader gets back from any repository
    assert stored['signature']['public_key'] == ' '.join(keys['server'][1].split()[:2])
    assert verifier(keys['server'][1]).problem(backup_of(stored)) is None
    # several trusted keys: any one of them is enough
    assert verifier(keys['other'][1], keys['server'][1]).problem(backup_of(stored)) is None


def test_the_signature_is_plain_sshsig_checkable_by_hand(tmp_path, keys, signed):
    """docs/signing.md tells operators to check a manifest with ssh-keygen alone."""
    (tmp_path / 'payload').write_bytes(signing.payload(signed))
    (tmp_path / 'sig').write_text(signed['signature']['signature'])
    (tmp_path / 'allowed').write_text('backup %s\n' % keys['server'][1])
    with open(str(tmp_path / 'payload'), 'rb') as message:
        proc = subprocess.run(['ssh-keygen', '-Y', 'verify', '-f', str(tmp_path / 'allowed'), '-I', 'backup',
                               '-n', signing.NAMESPACE, '-s', str(tmp_path / 'sig')], stdin=message,
                              capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=5)


@settings(max_examples=60, deadline=None, print_blob=True)
@given(field=st.sampled_from(['sha256', 'size', 'created', 'artifact', 'extension', 'encryption', 'source',
                              'tags', 'raw_size', 'format', 'compression', 'new_field']),
       value=JSON)
def test_any_change_to_a_signed_field_is_refused(keys, signed, field, value):
    changed = dict(signed)
    if changed.get(field) == value:
        return
    changed[field] = value
    problem = verifier(keys['server'][1]).problem(backup_of(changed))
    assert problem and 'does not verify' in problem


def test_unsigned_wrong_key_malformed_and_foreign_namespace_are_refused(tmp_path, keys, signed):
    trusting = verifier(keys['server'][1])
    unsigned = dict((k, v) for k, v in signed.items() if k != 'signature')
    assert 'not signed' in trusting.problem(backup_of(unsigned))
    assert 'does not verify' in verifier(keys['other'][1]).problem(backup_of(signed))
    for bad in ('', 'x' * 100, {'format': 'sshsig'}, dict(signed['signature'], signature='garbage'),
                dict(signed['signature'], signature='-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n')):
        problem = trusting.problem(backup_of(dict(signed, signature=bad)))
        assert problem and ('malformed' in problem or 'not signed' in problem or 'does not verify' in problem)
    # a signature by the trusted key in another namespace (e.g. a git commit signature) is no manifest signature
    (tmp_path / 'payload').write_bytes(signing.payload(signed))
    subprocess.run(['ssh-keygen', '-Y', 'sign', '-f', keys['server'][0], '-n', 'git', str(tmp_path / 'payload')],
                   check=True, capture_output=True)
    foreign = dict(signed, signature=dict(signed['signature'], signature=(tmp_path / 'payload.sig').read_text()))
    assert 'does not verify' in trusting.problem(backup_of(foreign))
    with pytest.raises(AuthenticityError) as caught:
        trusting.check(backup_of(unsigned), 's3://bucket/crm/x.manifest.json')
    assert caught.value.kind == 'authenticity' and 's3://bucket/crm/x.manifest.json' in str(caught.value)


def test_a_signed_manifest_moved_to_another_id_or_set_is_refused(keys, signed):
    trusting = verifier(keys['server'][1])
    other_id = mf.make_id('crm', mf.parse_time('2026-12-07T03:00:00Z'))
    assert 'names backup' in trusting.problem(Backup(other_id, 'crm', CREATED, manifest=signed, complete=True))
    assert 'names backup' in trusting.problem(Backup(BACKUP_ID, 'erp', CREATED, manifest=signed, complete=True))
    assert 'no manifest' in trusting.problem(Backup('crm_20261206_030000', 'crm', CREATED, legacy=True, complete=True))


def test_without_trusted_keys_everything_is_accepted_as_before(signed):
    quiet = signing.Verifier(None, CommandLog())
    assert not quiet.enabled
    assert quiet.problem(backup_of(dict(signed, sha256='00' * 32))) is None


def test_option_errors_are_config_errors_before_anything_runs(tmp_path, keys):
    log = CommandLog()
    with pytest.raises(ConfigError, match='names no trusted key'):
        signing.Verifier({'key_file': keys['server'][0]}, log, required=True)
    with pytest.raises(ConfigError, match='not an SSH public key'):
        signing.Verifier({'trusted_keys': ['AAAA not a key']}, log)
    with pytest.raises(ConfigError, match='unknown option'):
        signing.Signer({'keyfile': 'x'}, log)
    with pytest.raises(ConfigError, match='does not exist'):
        signing.Signer({'key_file': str(tmp_path / 'missing')}, log)
    with pytest.raises(ConfigError, match='cannot read'):
        signing.Verifier({'trusted_keys_file': str(tmp_path / 'missing')}, log)
    keygen(tmp_path / 'locked', passphrase='secret phrase')
    with pytest.raises(ConfigError, match='not a usable private key'):  # fails at once, never prompts
        signing.Signer({'key_file': str(tmp_path / 'locked')}, log)


def test_trusted_keys_file_with_comments(tmp_path, keys, signed):
    path = tmp_path / 'trusted'
    path.write_text('# the backed-up servers\n\n%s\n%s\n' % (keys['other'][1], keys['server'][1]))
    trusting = signing.Verifier({'trusted_keys_file': str(path)}, CommandLog(), required=True)
    assert len(trusting.keys) == 2 and trusting.problem(backup_of(signed)) is None


def test_the_private_key_never_reaches_a_command_line_or_the_manifest(keys, signed):
    log = CommandLog()
    signing.Signer({'key_file': keys['server'][0]}, log).sign(dict(signed))
    with open(keys['server'][0]) as handle:
        secret_lines = [line for line in handle.read().splitlines() if not line.startswith('-----')]
    text = ' '.join(log.commands) + mf.dumps(signed).decode()
    assert keys['server'][0] in ' '.join(log.commands)  # the path, which is fine
    assert not any(line in text for line in secret_lines)
    assert os.stat(keys['server'][0]).st_mode & 0o077 == 0


def test_job_file_signing_is_checked_before_the_first_dump(tmp_path, keys):
    from ansible_collections.offsite.backup.plugins.module_utils._engine import jobs

    def job(signing):
        return {'name': 'crm', 'local': {'path': '/var/backups/offsite'}, 'signing': signing,
                'sources': [{'name': 'crm_db', 'source': {'type': 'postgresql', 'database': 'crm'}}]}
    bad = [({'keyfile': keys['server'][0]}, 'job.signing has unknown option keyfile'),
           ({'key_file': str(tmp_path / 'missing')}, 'does not exist'),
           ({'trusted_keys': keys['server'][1]}, 'trusted_keys must be a list'),
           ({'trusted_keys': ['ssh-ed25519']}, 'not an SSH public key')]
    for signing_options, message in bad:
        with pytest.raises(ConfigError, match=message):
            jobs.validate(job(signing_options))
    signs_only = jobs.validate(job({'key_file': keys['server'][0]}))
    assert jobs.trusted_keys(signs_only) is None  # its own key is not trusted implicitly
    both = jobs.validate(job({'key_file': keys['server'][0], 'trusted_keys': [keys['other'][1]]}))
    assert jobs.trusted_keys(both) == {'trusted_keys': [keys['other'][1]]}
