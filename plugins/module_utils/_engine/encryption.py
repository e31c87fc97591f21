# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Client-side encryption: the stage between compression and hashing.

Three schemes, chosen by the options of ``dump``:

- ``age``: X25519 public-key recipients (``recipients``, ``recipients_file``) through the
  ``age`` binary. The backed-up server holds public keys only: it can encrypt, never decrypt.
- ``gpg``: OpenPGP public keys (``gpg_recipients``) from a keyring (``gpg_homedir``), for
  teams that already have one, as the seed scripts do.
- ``passphrase``: ``gpg --symmetric`` (AES256), for simple set-ups; the passphrase reaches gpg
  through a pipe (``--passphrase-fd``), never through argv or a file.

Both tools run as separate processes (a core of their own, no GIL): the engine writes
compressed bytes into the tool's stdin while a thread copies its stdout into the hashing
writer; decryption is the mirror image. Memory is two pipe buffers whatever the size.
Both formats are authenticated (age: per-64 KiB-chunk ChaCha20-Poly1305; OpenPGP: MDC), so
tampering is detected even when an attacker also rewrote the manifest's checksum.

The manifest records the scheme, the tool and the recipients' public keys or fingerprints,
never a secret. Why the age binary and not pyrage: docs/encryption.md (measured).
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import threading

from . import commands
from .errors import BackupError, ConfigError, IntegrityError
from .pipeline import CHUNK

SCHEMES = ('age', 'gpg', 'passphrase')
# what a dump takes (the runner's job file checks its `encryption` mapping against these)
DUMP_OPTIONS = {'recipients': list, 'recipients_file': str, 'gpg_recipients': list, 'gpg_homedir': str,
                'passphrase': str}
# appended to the artifact's extension: crm_20261123T030000Z.dump.zst.age
ENCRYPTION_EXT_FOR = {None: '', 'age': '.age', 'gpg': '.gpg', 'passphrase': '.gpg'}
AGE_RECIPIENT_RE = re.compile(r'^age1[02-9ac-hj-np-z]{58}$')
# what the tools print when the key is not the right one (a config problem, not damage)
_WRONG_KEY = ('no identity matched', 'no secret key', 'bad session key', 'bad passphrase',
              'no valid identities')


def _listed(value):
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [str(value).strip()] if str(value).strip() else []


def read_recipients_file(path):
    """age recipients, one per line; blank lines and ``#`` comments are skipped."""
    try:
        with open(path) as handle:
            lines = handle.read().splitlines()
    except (IOError, OSError) as exc:
        raise ConfigError('cannot read recipients_file %s: %s' % (path, exc.strerror or exc),
                          'give the path of a file of age public keys (age1...), one a line')
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith('#')]


def scheme_of(options):
    """The scheme ``dump`` options ask for, or None (no encryption)."""
    options = options or {}
    wanted = [s for s, present in (
        ('age', _listed(options.get('recipients')) or options.get('recipients_file')),
        ('gpg', _listed(options.get('gpg_recipients'))),
        ('passphrase', options.get('passphrase'))) if present]
    if len(wanted) > 1:
        raise ConfigError('encryption asks for %s at once' % ' and '.join(wanted),
                          'choose one: age recipients, gpg_recipients or a passphrase')
    return wanted[0] if wanted else None


class Encryption(object):
    """One configured encryption: ``encrypting(sink)`` on the dump side, ``decrypting(reader,
    info)`` on the restore side (``info`` is the manifest's ``encryption`` field)."""

    def __init__(self, options, log):
        self.options = dict((k, v) for k, v in (options or {}).items() if v is not None)
        self.log = log
        log.mask([self.options.get('passphrase')])
        self.scheme = scheme_of(self.options)

    @property
    def required(self):
        """Restore and verify refuse unencrypted backups when decryption keys are given,
        unless ``required: false`` (a repository that also holds old, plain backups)."""
        return bool(self.options.get('required', self.has_identity()))

    def has_identity(self):
        return bool(self.options.get('identity_file') or self.options.get('gpg_homedir')
                    or self.options.get('passphrase'))

    # -- dump side -------------------------------------------------------------------------
    def describe(self):
        """The manifest's ``encryption`` field: no secret, enough to know which key opens it."""
        if self.scheme == 'age':
            return {'scheme': 'age', 'tool': 'age', 'recipients': self._age_recipients()}
        if self.scheme == 'gpg':
            return {'scheme': 'gpg', 'tool': 'gpg', 'recipients': self._gpg_fingerprints()}
        if self.scheme == 'passphrase':
            return {'scheme': 'passphrase', 'tool': 'gpg', 'cipher': 'AES256'}
        return None

    def _age_recipients(self):
        recipients = _listed(self.options.get('recipients'))
        if self.options.get('recipients_file'):
            recipients += read_recipients_file(self.options['recipients_file'])
        bad = [r for r in recipients if not AGE_RECIPIENT_RE.match(r)]
        if bad:
            raise ConfigError('%d age recipient(s) are not X25519 public keys, e.g. %r' % (len(bad), bad[0][:12] + '...'),
                              'give public keys (age1..., from age-keygen -y); never a private AGE-SECRET-KEY')
        if not recipients:
            raise ConfigError('recipients_file %s holds no recipient' % self.options.get('recipients_file'))
        return sorted(set(recipients))

    def _gpg_fingerprints(self):
        homedir = self._gpg_homedir()
        fingerprints = []
        for recipient in _listed(self.options.get('gpg_recipients')):
            rc, out, err = commands.run(self._gpg(homedir) + ['--with-colons', '--list-keys', '--', recipient], self.log)
            found = [line.split(':')[9] for line in out.splitlines() if line.startswith('fpr:')]
            if rc != 0 or not found:
                raise ConfigError('gpg recipient %s is not in the keyring %s' % (recipient, homedir),
                                  'import the public key there (gpg --homedir %s --import key.asc)' % homedir)
            fingerprints.append(found[0])
        return fingerprints

    def _gpg_homedir(self):
        homedir = self.options.get('gpg_homedir')
        if not homedir:
            raise ConfigError('gpg encryption needs gpg_homedir, the keyring directory',
                              'point gpg_homedir at a directory holding the keys (mode 0700)')
        if not os.path.isdir(homedir):
            raise ConfigError('gpg_homedir %s is not a directory' % homedir)
        return homedir

    @staticmethod
    def _gpg(homedir):
        return [commands.which('gpg', 'for gpg encryption'), '--homedir', homedir, '--batch', '--no-tty',
                '--quiet', '--pinentry-mode', 'loopback']

    @contextlib.contextmanager
    def encrypting(self, sink):
        """A writer whose bytes reach ``sink`` encrypted. Leaving the block without an error
        finishes the ciphertext and checks the tool's exit status."""
        if self.scheme == 'age':
            age = commands.which('age', 'for age encryption (Debian: apt install age)')
            argv = [age, '--encrypt']
            for recipient in self._age_recipients():
                argv += ['-r', recipient]
            with _Filter(argv, self.log, 'encrypt').writing(sink) as writer:
                yield writer
        elif self.scheme == 'gpg':
            homedir = self._gpg_homedir()
            argv = self._gpg(homedir) + ['--trust-model', 'always', '--compress-algo', 'none', '--encrypt']
            for fingerprint in self._gpg_fingerprints():
                argv += ['--recipient', fingerprint]
            with _Filter(argv + ['--output', '-'], self.log, 'encrypt').writing(sink) as writer:
                yield writer
        elif self.scheme == 'passphrase':
            with _scratch_gpg_home() as homedir:
                argv = self._gpg(homedir) + ['--symmetric', '--cipher-algo', 'AES256', '--compress-algo', 'none',
                                             '--no-symkey-cache', '--output', '-']
                with _Filter(argv, self.log, 'encrypt', passphrase=self.options['passphrase']).writing(sink) as writer:
                    yield writer
        else:
            yield sink

    # -- restore side ----------------------------------------------------------------------
    def check_backup(self, info, where):
        """Before anything is downloaded: can this backup be opened with what was given?"""
        if not info:
            if self.required:
                raise IntegrityError('%s is not encrypted, but encryption is required' % where,
                                     'someone may have replaced the backup; check the repository, '
                                     'or set encryption.required false for old unencrypted backups')
            return
        scheme = info.get('scheme')
        if scheme not in SCHEMES:
            raise IntegrityError('%s is encrypted with %r, which this offsite.backup does not know' % (where, scheme),
                                 'upgrade the offsite.backup collection')
        if scheme == 'age' and not self.options.get('identity_file'):
            raise ConfigError('%s is encrypted with age for %s, and no identity_file was given'
                              % (where, ', '.join(info.get('recipients') or [])),
                              'give encryption.identity_file, the private key file (AGE-SECRET-KEY-...)')
        if scheme == 'gpg' and not self.options.get('gpg_homedir'):
            raise ConfigError('%s is encrypted with gpg for %s, and no gpg_homedir was given'
                              % (where, ', '.join(info.get('recipients') or [])),
                              'give encryption.gpg_homedir, a keyring holding the secret key')
        if scheme == 'passphrase' and not self.options.get('passphrase'):
            raise ConfigError('%s is encrypted with a passphrase, and none was given' % where,
                              'give encryption.passphrase (from a vault, no_log)')
        if scheme == 'age' and not os.access(self.options['identity_file'], os.R_OK):
            raise ConfigError('identity_file %s cannot be read' % self.options['identity_file'])

    @contextlib.contextmanager
    def decrypting(self, reader, info, where):
        """A reader of the plaintext of ``reader``. The tool's failure (wrong key, tampered or
        truncated ciphertext) is raised from ``read`` at the end of the stream."""
        if not info:
            yield reader
            return
        self.check_backup(info, where)
        scheme = info['scheme']
        if scheme == 'age':
            argv = [commands.which('age', 'to decrypt age backups (Debian: apt install age)'), '--decrypt',
                    '-i', self.options['identity_file']]
            with _Filter(argv, self.log, 'decrypt', where=where).reading(reader) as plain:
                yield plain
        elif scheme == 'gpg':
            argv = self._gpg(self._gpg_homedir()) + ['--decrypt', '--output', '-']
            with _Filter(argv, self.log, 'decrypt', where=where,
                         passphrase=self.options.get('passphrase')).reading(reader) as plain:
                yield plain
        else:
            with _scratch_gpg_home() as homedir:
                argv = self._gpg(homedir) + ['--no-symkey-cache', '--decrypt', '--output', '-']
                with _Filter(argv, self.log, 'decrypt', where=where,
                             passphrase=self.options['passphrase']).reading(reader) as plain:
                    yield plain


def decrypter(enc, data, where):
    """The ``decrypt`` stage for VerifiedStream, or None for an unencrypted backup."""
    info = data.get('encryption')
    if not info:
        return None
    return lambda reader: enc.decrypting(reader, info, where)


@contextlib.contextmanager
def _scratch_gpg_home():
    """gpg wants a home even for --symmetric: an empty private one, removed afterwards."""
    homedir = tempfile.mkdtemp(prefix='offsite-gpg-')
    try:
        yield homedir
    finally:
        shutil.rmtree(homedir, ignore_errors=True)


class _Filter(object):
    """An external tool between two streams, fed and drained at once (two threads never
    wait on each other's full pipe). A passphrase travels through its own pipe."""

    def __init__(self, argv, log, action, where='the artifact', passphrase=None):
        self.argv = argv
        self.log = log
        self.action = action
        self.where = where
        self.passphrase = passphrase
        self.error = None  # what the helper thread ran into

    @contextlib.contextmanager
    def _process(self):
        argv, pass_fds, read_end = list(self.argv), (), None
        if self.passphrase is not None:
            read_end, write_end = os.pipe()
            os.write(write_end, self.passphrase.encode('utf-8') + b'\n')  # far below a pipe's buffer
            os.close(write_end)
            gpg_options = argv.index('--batch')
            argv[gpg_options:gpg_options] = ['--passphrase-fd', str(read_end)]
            pass_fds = (read_end,)
        try:
            with commands.streaming(argv, self.log, stdin=subprocess.PIPE, pass_fds=pass_fds) as proc:
                if read_end is not None:
                    os.close(read_end)
                    read_end = None
                yield proc
        finally:
            if read_end is not None:
                os.close(read_end)

    def _failure(self, proc, rc):
        lines = [line for line in commands.stderr_tail(proc).splitlines() if 'filippo.io/age/report' not in line]
        tail = '\n'.join(lines)[-800:] or 'exit status %s' % rc
        low = tail.lower()
        if self.action == 'encrypt':
            return BackupError('%s failed: %s' % (os.path.basename(self.argv[0]), tail),
                               'check the encryption options; the partial dump was removed')
        if any(marker in low for marker in _WRONG_KEY):
            return ConfigError('cannot decrypt %s: the key given does not open it (%s)' % (self.where, tail),
                               'give the identity or passphrase that matches the recipients in the manifest')
        return IntegrityError('%s failed to decrypt: %s' % (self.where, tail),
                              'the ciphertext was tampered with or truncated; restore another backup')

    @contextlib.contextmanager
    def writing(self, sink):
        with self._process() as proc:
            def drain():
                try:
                    while True:
                        data = proc.stdout.read1(CHUNK)
                        if not data:
                            return
                        sink.write(data)
                except BaseException as exc:  # e.g. ENOSPC: raised by the writing side below
                    self.error = exc
                    proc.stdout.close()

            thread = threading.Thread(target=drain, name='encrypt-drain')
            thread.daemon = True
            thread.start()
            writer = _PipeWriter(proc.stdin, self)
            try:
                yield writer
                proc.stdin.close()
            finally:
                if not proc.stdin.closed:
                    proc.stdin.close()
                thread.join()
            rc = proc.wait()
            if self.error is not None:
                raise self.error
            if rc != 0:
                raise self._failure(proc, rc)

    @contextlib.contextmanager
    def reading(self, reader):
        with self._process() as proc:
            def feed():
                try:
                    while True:
                        data = reader.read(CHUNK)
                        if not data:
                            break
                        proc.stdin.write(data)
                except BrokenPipeError:
                    pass  # the tool gave up (wrong key): its exit status says why
                except BaseException as exc:  # the download failed: raised by the reading side
                    self.error = exc
                finally:
                    try:
                        proc.stdin.close()
                    except (BrokenPipeError, OSError):
                        pass

            thread = threading.Thread(target=feed, name='decrypt-feed')
            thread.daemon = True
            thread.start()
            plain = _PipeReader(proc, thread, self)
            try:
                yield plain
            finally:
                plain.stop()


class _PipeWriter(object):
    def __init__(self, pipe, owner):
        self.pipe = pipe
        self.owner = owner

    def write(self, data):
        try:
            self.pipe.write(data)
        except BrokenPipeError:
            if self.owner.error is not None:
                raise self.owner.error
            raise BackupError('the encryption tool stopped reading', 'see its error below')
        return len(data)

    def flush(self):
        self.pipe.flush()


class _PipeReader(object):
    """The tool's stdout; at its end, the feeder is joined and the exit status checked, so a
    stream that decrypted short or wrong raises instead of looking finished."""

    def __init__(self, proc, thread, owner):
        self.proc = proc
        self.thread = thread
        self.owner = owner
        self.done = False

    def read(self, size=-1):
        if self.done:
            return b''
        data = self.proc.stdout.read1(CHUNK if size is None or size < 0 else min(size, CHUNK))
        if not data:
            self.done = True
            self.thread.join()
            rc = self.proc.wait()
            if self.owner.error is not None:
                raise self.owner.error
            if rc != 0:
                raise self.owner._failure(self.proc, rc)
        return data

    def readable(self):
        return True

    def stop(self):
        """Leaving early (an error elsewhere): unblock the feeder and wait for it."""
        if not self.done:
            self.done = True
            try:
                self.proc.stdout.close()
            except OSError:
                pass
            if self.proc.poll() is None:
                self.proc.terminate()
            self.thread.join()
