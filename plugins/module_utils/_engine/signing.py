# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Signed manifests: who made a backup, proven with an SSH signature.

The backed-up server signs each manifest with its own private key (``signing.key_file``, an
OpenSSH key, ed25519 by choice); restore, verify, backup_info and retention trust the public
keys in ``signing.trusted_keys`` / ``trusted_keys_file``. The crypto is OpenSSH's
``ssh-keygen -Y sign`` / ``-Y verify`` (SSHSIG, PROTOCOL.sshsig) in the namespace
``offsite-backup``, so a signature can be checked by hand with the same tool.

What is signed: the manifest without its ``signature`` field, serialised as every manifest is
(``manifest.dumps``: sorted keys, ASCII), so the signature covers the artifact's sha256 and
size, the id and the name. The signature is embedded in the manifest (``signature``), so it
travels with the manifest through every repository's put path, the manifest is still the last
object written, and readers that predate signing ignore the field.

The private key is read by ssh-keygen only (its path is on the command line, never the key);
the engine never reads it. Verification runs ssh-keygen with an ``allowed_signers`` file made
from the trusted keys, which are public.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import re
import shutil
import subprocess
import tempfile

from . import commands
from . import manifest as mf
from .errors import AuthenticityError, ConfigError

NAMESPACE = 'offsite-backup'
FORMAT = 'sshsig'
OPTIONS = {'key_file': str, 'trusted_keys': list, 'trusted_keys_file': str}
# a public key line: type, base64 blob, optional comment (dropped)
_KEY_RE = re.compile(r'^(?P<type>(?:ssh|ecdsa|sk)-[A-Za-z0-9@.-]+)\s+(?P<blob>[A-Za-z0-9+/]+={0,3})(?:\s.*)?$')
_ARMOR_RE = re.compile(r'^-----BEGIN SSH SIGNATURE-----\n[A-Za-z0-9+/=\n]+-----END SSH SIGNATURE-----\n?$')
_GOOD_RE = re.compile(r'with (?P<algo>\S+) key (?P<fingerprint>SHA256:[A-Za-z0-9+/=]+)')
MAX_SIGNATURE = 8192
TIMEOUT = 60


def _present(options):
    return dict((k, v) for k, v in (options or {}).items() if v not in (None, '', []))


def check_options(options, where='signing'):
    """Unknown keys and wrong types are config errors (the job file's check)."""
    for key, value in _present(options).items():
        if key not in OPTIONS:
            raise ConfigError('%s has unknown option %s' % (where, key), 'use: %s' % ', '.join(sorted(OPTIONS)))
        if not isinstance(value, OPTIONS[key]):
            raise ConfigError('%s.%s must be a %s' % (where, key, OPTIONS[key].__name__))


def payload(manifest):
    """The bytes a signature covers: the manifest without its signature."""
    return mf.dumps(dict((k, v) for k, v in manifest.items() if k != 'signature'))


def _ssh_keygen(argv, log, purpose, stdin=None):
    """Run ssh-keygen detached from any terminal (a passphrase prompt fails instead of hanging)."""
    tool = commands.which('ssh-keygen', purpose)
    argv = [tool] + argv
    log.record(argv)
    try:
        proc = subprocess.run(argv, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=TIMEOUT,
                              start_new_session=True, check=False)
    except subprocess.TimeoutExpired:
        return 1, '', 'ssh-keygen did not answer within %d s' % TIMEOUT
    return proc.returncode, proc.stdout.decode('utf-8', 'replace'), proc.stderr.decode('utf-8', 'replace')


def parse_public_key(line, where):
    """``(type, blob)`` of a public key line; anything else is a config error."""
    match = _KEY_RE.match(str(line).strip())
    if not match:
        raise ConfigError('%s: %r is not an SSH public key line' % (where, str(line)[:60]),
                          'give lines like "ssh-ed25519 AAAA... comment" (the .pub file of signing.key_file)')
    return match.group('type'), match.group('blob')


class Signer(object):
    """Signs manifests with ``key_file``; ``enabled`` is false without one."""

    def __init__(self, options, log):
        check_options(options)
        self.log = log
        self.key_file = _present(options).get('key_file')
        self.public_key = None
        if self.key_file:
            self.key_file = os.path.abspath(os.path.expanduser(self.key_file))
            self.public_key = self._public_key()

    @property
    def enabled(self):
        return self.key_file is not None

    def _public_key(self):
        """Derive the public half: proves the key is readable and needs no passphrase, before any
        source is touched."""
        if not os.path.isfile(self.key_file):
            raise ConfigError('signing.key_file %s does not exist' % self.key_file,
                              'generate one with ssh-keygen -t ed25519 -N "" -f <path> (the client role can)')
        rc, out, err = _ssh_keygen(['-y', '-f', self.key_file], self.log, 'to sign manifests')
        if rc != 0:
            raise ConfigError('signing.key_file %s is not a usable private key: %s' % (self.key_file, _last_line(err)),
                              'use an OpenSSH private key without a passphrase, readable only by its owner (0600)')
        return ' '.join(parse_public_key(out, 'signing.key_file'))

    def describe(self):
        """What the manifest will say about the signer (public), or None."""
        return {'format': FORMAT, 'namespace': NAMESPACE, 'public_key': self.public_key} if self.enabled else None

    def sign(self, manifest):
        """``manifest`` with its ``signature`` field (unchanged when signing is off)."""
        if not self.enabled:
            return manifest
        scratch = tempfile.mkdtemp(prefix='offsite-sign-')
        try:
            message = os.path.join(scratch, 'manifest.json')
            with open(message, 'wb') as handle:
                handle.write(payload(manifest))
            rc, dummy, err = _ssh_keygen(['-Y', 'sign', '-f', self.key_file, '-n', NAMESPACE, message],
                                         self.log, 'to sign manifests')
            if rc != 0:
                raise ConfigError('signing manifest %s with %s failed: %s' % (manifest.get('id'), self.key_file,
                                                                              _last_line(err)),
                                  'check signing.key_file (an OpenSSH private key without a passphrase)')
            with open(message + '.sig') as handle:
                armored = handle.read()
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return dict(manifest, signature=dict(self.describe(), signature=armored))


def read_trusted_keys_file(path):
    try:
        with open(path) as handle:
            lines = handle.read().splitlines()
    except (IOError, OSError) as exc:
        raise ConfigError('cannot read signing.trusted_keys_file %s: %s' % (path, exc.strerror or exc),
                          'give a file of SSH public keys, one a line (# comments allowed)')
    return [line for line in lines if line.strip() and not line.strip().startswith('#')]


class Verifier(object):
    """Checks manifests against trusted public keys; ``enabled`` is false without any, and then
    every backup is accepted as before (signed or not)."""

    def __init__(self, options, log, required=False):
        check_options(options)
        options = _present(options)
        self.log = log
        lines = list(options.get('trusted_keys') or [])
        if options.get('trusted_keys_file'):
            lines += read_trusted_keys_file(options['trusted_keys_file'])
        self.keys = [parse_public_key(line, 'signing.trusted_keys') for line in lines]
        if options and not self.keys and required:
            raise ConfigError('signing is given but names no trusted key',
                              'set signing.trusted_keys (public key lines) or signing.trusted_keys_file here; '
                              'signing.key_file is what dump and snapshot sign with')
        self._seen = {}

    @property
    def enabled(self):
        return bool(self.keys)

    def problem(self, backup):
        """None when ``backup`` (a catalog Backup) is signed by a trusted key, else why not.
        Always None when no key is trusted."""
        if not self.enabled:
            return None
        data = backup.manifest or {}
        if not data:
            return 'backup %s has no manifest to sign (a seed-script backup)' % backup.id
        if data.get('id') != backup.id or data.get('name') != backup.name:
            return 'manifest of %s names backup %s of set %s' % (backup.id, data.get('id'), data.get('name'))
        signature = data.get('signature')
        if not signature:
            return 'backup %s is not signed' % backup.id
        cache_key = (backup.id, payload(data), repr(signature))
        if cache_key not in self._seen:
            self._seen[cache_key] = self._check(data, signature, backup.id)
        return self._seen[cache_key]

    def check(self, backup, where):
        """Raise AuthenticityError unless ``backup`` is signed by a trusted key."""
        problem = self.problem(backup)
        if problem:
            raise AuthenticityError('%s: %s' % (where, problem),
                                    'do not restore it; it was not made by a trusted server or was changed '
                                    'since (see docs/signing.md). Nothing was written to the target')

    def _check(self, data, signature, backup_id):
        armored = signature.get('signature') if isinstance(signature, dict) else None
        if (not isinstance(armored, str) or len(armored) > MAX_SIGNATURE or not _ARMOR_RE.match(armored)
                or signature.get('format') != FORMAT or signature.get('namespace') != NAMESPACE):
            return 'backup %s has a malformed signature' % backup_id
        scratch = tempfile.mkdtemp(prefix='offsite-verify-sig-')
        try:
            allowed = os.path.join(scratch, 'allowed_signers')
            with open(allowed, 'w') as handle:
                for key_type, blob in self.keys:
                    handle.write('%s namespaces="%s" %s %s\n' % (NAMESPACE, NAMESPACE, key_type, blob))
            sig = os.path.join(scratch, 'manifest.sig')
            with open(sig, 'w') as handle:
                handle.write(armored)
            with tempfile.TemporaryFile() as message:
                message.write(payload(data))
                message.seek(0)
                rc, out, err = _ssh_keygen(['-Y', 'verify', '-f', allowed, '-I', NAMESPACE, '-n', NAMESPACE,
                                            '-s', sig], self.log, 'to check signed manifests', stdin=message)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if rc != 0:
            return 'signature of backup %s does not verify with any trusted key (%s)' % (backup_id, _last_line(err))
        return None


def _last_line(text):
    lines = [line.strip() for line in (text or '').splitlines() if line.strip()]
    return lines[-1] if lines else 'no error output'
