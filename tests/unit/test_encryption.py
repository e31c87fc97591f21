# Copyright (c) offsite.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The encryption stage: option checks, and the streamed round trip through the age and gpg
binaries (real tools, in memory) with every way the bytes can be wrong."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import hashlib
import io
import os
import subprocess

import pytest

from ansible_collections.offsite.backup.plugins.module_utils._engine import encryption, pipeline
from ansible_collections.offsite.backup.plugins.module_utils._engine.commands import CommandLog
from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import ConfigError, IntegrityError

PAYLOAD = os.urandom(700000) + b'backup ' * 300000


@pytest.fixture(scope='module')
def keys(tmp_path_factory):
    base = tmp_path_factory.mktemp('age')
    out = {}
    for label in ('right', 'wrong'):
        path = base / ('%s.agekey' % label)
        subprocess.run(['age-keygen', '-o', str(path)], check=True, capture_output=True)
        public = subprocess.run(['age-keygen', '-y', str(path)], check=True, capture_output=True, text=True).stdout.strip()
        out[label] = (str(path), public)
    return out


def encrypt(options, payload=PAYLOAD):
    enc = encryption.Encryption(options, CommandLog())
    sink = io.BytesIO()
    writer = pipeline.HashingWriter(sink)
    with enc.encrypting(writer) as target:
        pipeline.compress(io.BytesIO(payload), target, 'zstd')
    return enc.describe(), sink.getvalue(), writer.hexdigest()


def restore(tmp_path, options, info, blob, sha256=None):
    dec = encryption.Encryption(options, CommandLog())
    out = tmp_path / 'out'
    pipeline.fetch_verified(io.BytesIO(blob), str(out), 'zstd', len(blob), sha256 or hashlib.sha256(blob).hexdigest(),
                            decrypt=lambda reader: dec.decrypting(reader, info, 'the artifact'))
    return out


def test_scheme_is_one_of_three():
    assert encryption.scheme_of({}) is None
    assert encryption.scheme_of({'recipients': ['x'], 'identity_file': '/k'}) == 'age'
    assert encryption.scheme_of({'gpg_recipients': ['a@b']}) == 'gpg'
    assert encryption.scheme_of({'passphrase': 'p'}) == 'passphrase'
    with pytest.raises(ConfigError, match='choose one'):
        encryption.scheme_of({'recipients': ['x'], 'passphrase': 'p'})


def test_a_secret_key_given_as_recipient_is_refused_without_echoing_it(keys):
    secret = open(keys['right'][0]).read().split('\n')[-2]
    assert secret.startswith('AGE-SECRET-KEY-')
    with pytest.raises(ConfigError) as info:
        encryption.Encryption({'recipients': [secret]}, CommandLog()).describe()
    assert secret not in str(info.value) and 'never a private' in str(info.value)


def test_recipients_file_skips_comments(tmp_path, keys):
    path = tmp_path / 'r.txt'
    path.write_text('# ops\n%s\n\n  %s  \n' % (keys['right'][1], keys['wrong'][1]))
    info = encryption.Encryption({'recipients_file': str(path)}, CommandLog()).describe()
    assert info == {'scheme': 'age', 'tool': 'age', 'recipients': sorted([keys['right'][1], keys['wrong'][1]])}


@pytest.mark.parametrize('options', [{'passphrase': 'correct horse'}, 'age'])
def test_round_trip(tmp_path, keys, options):
    if options == 'age':
        options = {'recipients': [keys['right'][1]]}
        key = {'identity_file': keys['right'][0]}
    else:
        key = options
    info, blob, sha256 = encrypt(options)
    assert PAYLOAD[:1000] not in blob
    assert restore(tmp_path, key, info, blob, sha256).read_bytes() == PAYLOAD


@pytest.mark.parametrize('case, kind, text', [
    ('wrong key', ConfigError, 'the key given does not open it'),
    ('flipped', IntegrityError, 'does not match its manifest checksum'),
    ('flipped, rehashed', IntegrityError, 'failed to decrypt'),
    ('truncated, rehashed', IntegrityError, 'failed to decrypt'),
])
def test_damage_is_named_and_leaves_no_file(tmp_path, keys, case, kind, text):
    info, blob, sha256 = encrypt({'recipients': [keys['right'][1]]})
    key = {'identity_file': keys['wrong' if case == 'wrong key' else 'right'][0]}
    if case.startswith('flipped'):
        damaged = bytearray(blob)
        damaged[len(blob) // 2] ^= 4
        blob = bytes(damaged)
    if case.startswith('truncated'):
        blob = blob[:-3000]
    if not case.endswith('rehashed'):
        blob_sha = sha256
    else:
        blob_sha = hashlib.sha256(blob).hexdigest()
    with pytest.raises(kind, match=text):
        restore(tmp_path, key, info, blob, blob_sha)
    assert not (tmp_path / 'out').exists()


def test_check_backup_before_any_download(keys):
    none = encryption.Encryption(None, CommandLog())
    none.check_backup(None, 'x')  # no key, no encryption: fine
    with pytest.raises(ConfigError, match='no identity_file'):
        none.check_backup({'scheme': 'age', 'recipients': [keys['right'][1]]}, 'x')
    with pytest.raises(ConfigError, match='no gpg_homedir'):
        none.check_backup({'scheme': 'gpg', 'recipients': ['ABC']}, 'x')
    with pytest.raises(ConfigError, match='passphrase'):
        none.check_backup({'scheme': 'passphrase'}, 'x')
    keyed = encryption.Encryption({'identity_file': keys['right'][0]}, CommandLog())
    with pytest.raises(IntegrityError, match='encryption is required'):
        keyed.check_backup(None, 'x')
    encryption.Encryption({'identity_file': keys['right'][0], 'required': False}, CommandLog()).check_backup(None, 'x')
    with pytest.raises(IntegrityError, match='upgrade'):
        keyed.check_backup({'scheme': 'rot13'}, 'x')


def test_the_passphrase_is_never_in_argv():
    log = CommandLog()
    enc = encryption.Encryption({'passphrase': 'hunter2-secret'}, log)
    with enc.encrypting(pipeline.HashingWriter(io.BytesIO())) as target:
        target.write(b'data')
    assert log.commands and not [c for c in log.commands if 'hunter2' in c]
    assert '--passphrase-fd' in log.commands[0]
