# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A directory on an SSH server over SFTP: a VPS, a friend's server, a Hetzner Storage Box
(port 23, SFTP only).

The server's host key is always checked, against ``known_hosts`` or a pinned ``host_key``:
a backup sent to an impostor is a leak, not a backup. Objects are written under a
temporary name and renamed once their size (and, with ``verify: full``, their re-read
sha256) is proven.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import base64
import contextlib
import datetime
import errno
import inspect
import logging
import os
import posixpath
import socket
import stat as stat_module
import uuid

from ..errors import ConfigError, DependencyError, DiskFullError, NotFoundError, RepositoryError, UnreachableError
from ..manifest import PARTIAL_SUFFIX
from ..pipeline import CHUNK, chunks, hash_stream
from .base import DIRECTORY, SSH, ObjectInfo, PutResult, Repository, StreamingStore, checked_key


def _paramiko():
    """paramiko, imported on first use (it is slow to import; most tasks never need it)."""
    try:
        import paramiko
    except ImportError:
        raise DependencyError(
            'the Python library paramiko is missing on this node (needed for sftp repositories)',
            'pip install paramiko into the interpreter that runs the modules')
    # paramiko's transport thread logs its own failures with a traceback; with no handler
    # Python's last resort prints them on stderr. Our errors say what failed: keep them quiet.
    # Whatever else configured that logger before us, its records never reach the root logger.
    quiet = logging.getLogger('paramiko')
    if not any(isinstance(h, logging.NullHandler) for h in quiet.handlers):
        quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    return paramiko


def _transport_errors():
    """The SSH transport itself failing, as opposed to an SFTP status for one file."""
    return (ConnectionError, socket.timeout, EOFError, _paramiko().SSHException)


class SftpRepository(StreamingStore, Repository):
    type = 'sftp'
    DESCRIPTION = ('C(sftp) is a directory on an SSH server (a VPS, a Hetzner Storage Box on port 23).',)
    OPTIONS = SSH + (DIRECTORY,)

    def __init__(self, options, log=None):
        super(SftpRepository, self).__init__(options, log)
        self.host = self.options['host']
        self.port = int(self.options.get('port', 22))
        self.user = self.options['user']
        self.root = self.options['path'].rstrip('/') or '/'
        if not self.options.get('known_hosts') and not self.options.get('host_key'):
            raise ConfigError('sftp repository %s has neither known_hosts nor host_key' % self.location(),
                              'pin the server\'s key: host_key: "ssh-ed25519 AAAA..." or a known_hosts '
                              'file (ssh-keyscan -p %d %s); offsite.backup never trusts a key blindly'
                              % (self.port, self.host))
        self._ssh = None
        self._sftp = None

    def longest_wait(self):
        """Connecting, the SSH banner and authentication wait ``timeout`` each; then every SFTP
        request waits ``timeout`` for its answer (no retries: a failed connection fails)."""
        return 4 * self.timeout  # connect, banner, authentication, opening the SFTP channel

    def location(self, key=''):
        path = posixpath.join(self.root, key) if key else self.root
        return 'sftp://%s@%s:%d%s%s' % (self.user, self.host, self.port,
                                        '' if path.startswith('/') else '/~/', path)

    # -- connection ---------------------------------------------------------------------
    @property
    def sftp(self):
        if self._sftp is None:
            self._connect()
        return self._sftp

    def _host_keys(self, client):
        paramiko = _paramiko()
        known_hosts = self.options.get('known_hosts')
        if known_hosts:
            path = os.path.expanduser(known_hosts)
            if not os.path.isfile(path):
                raise ConfigError('known_hosts file %s does not exist' % path,
                                  'create it with ssh-keyscan -p %d %s > %s' % (self.port, self.host, path))
            client.load_host_keys(path)
        if self.options.get('host_key'):
            parts = self.options['host_key'].split()
            if len(parts) < 2:
                raise ConfigError('host_key must look like "ssh-ed25519 AAAA..."')
            name = self.host if self.port == 22 else '[%s]:%d' % (self.host, self.port)
            try:
                key = paramiko.PKey.from_type_string(parts[0], base64.b64decode(parts[1]))
            except Exception as exc:
                raise ConfigError('host_key is not a public key paramiko understands (%s)' % exc)
            client.get_host_keys().add(name, parts[0], key)

    def _connect(self):
        paramiko = _paramiko()
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        self._host_keys(client)
        key_file = self.options.get('private_key')
        if key_file and not os.path.isfile(os.path.expanduser(key_file)):
            raise ConfigError('private key %s does not exist' % key_file)
        timeout = self.timeout
        where = '%s:%d' % (self.host, self.port)
        waits = dict(timeout=timeout, banner_timeout=timeout, auth_timeout=timeout)
        if 'channel_timeout' in inspect.signature(client.connect).parameters:  # paramiko 3.2+
            waits['channel_timeout'] = timeout  # opening the SFTP channel (else up to an hour)
        try:
            client.connect(self.host, port=self.port, username=self.user,
                           key_filename=os.path.expanduser(key_file) if key_file else None,
                           passphrase=self.options.get('private_key_passphrase'),
                           look_for_keys=not key_file, allow_agent=not key_file, **waits)
            self._sftp = client.open_sftp()
            # every SFTP request waits `timeout` for its answer, not forever
            self._sftp.get_channel().settimeout(timeout)
        except paramiko.BadHostKeyException:
            client.close()
            raise RepositoryError('the host key of %s does NOT match the pinned one' % where,
                                  'this can be a man-in-the-middle; if the server was really reinstalled, '
                                  'verify its new key out of band and update known_hosts/host_key')
        except paramiko.AuthenticationException:
            client.close()
            raise RepositoryError('%s refused the SSH key %s for user %s' % (where, key_file or '(agent)', self.user),
                                  'install the public key on the server (ssh-copy-id, or install-ssh-key on a '
                                  'Storage Box) or fix `user`/`private_key`')
        except paramiko.SSHException as exc:
            transport = client.get_transport()
            answered = transport is not None and bool(getattr(transport, 'remote_version', None))
            client.close()
            text = str(exc)
            if not answered:  # no SSH banner came back: paramiko words this many ways
                raise UnreachableError('%s accepted the connection but did not answer as an SSH server (%s)'
                                       % (where, text or type(exc).__name__),
                                       'check host and port; ' + self.unreachable_hint())
            if 'not found in known_hosts' in text:
                raise RepositoryError('the host key of %s is unknown' % where,
                                      'add it to known_hosts (ssh-keyscan -p %d %s, checked out of band) or '
                                      'set host_key' % (self.port, self.host))
            if 'private key' in text.lower() or 'passphrase' in text.lower():
                raise ConfigError('cannot load the private key %s: %s' % (key_file, text),
                                  'check the file and private_key_passphrase')
            if 'timeout' in text.lower() or 'timed out' in text.lower():
                raise UnreachableError('%s stopped answering while connecting (%s)' % (where, text),
                                       'check the server; ' + self.unreachable_hint())
            raise RepositoryError('SSH to %s failed: %s' % (where, text))
        except (socket.error, EOFError) as exc:
            client.close()
            raise UnreachableError('cannot reach %s over SSH (%s)' % (where, exc or type(exc).__name__),
                                   'check host, port (23 for a Hetzner Storage Box) and the firewall; '
                                   + self.unreachable_hint())
        self._ssh = client

    @contextlib.contextmanager
    def _errors(self, doing, key):
        transport_errors = _transport_errors()
        try:
            yield
        except socket.timeout:
            raise UnreachableError('the SFTP server stopped answering while %s %s' % (doing, self.location(key)),
                                   self.unreachable_hint())
        except transport_errors as exc:
            # the transport itself failed (reset, closed): not an SFTP status
            raise RepositoryError('SSH connection lost while %s %s: %s' % (doing, self.location(key), exc))
        except (IOError, OSError) as exc:
            code = getattr(exc, 'errno', None)
            if code == errno.ENOENT:
                raise NotFoundError('%s does not exist' % self.location(key))
            if code == errno.EACCES:
                raise RepositoryError('permission denied %s %s' % (doing, self.location(key)),
                                      'the SSH user may only write its own directory; fix `path`')
            if 'No space left' in str(exc) or code == errno.ENOSPC:
                raise DiskFullError('the SFTP server has no space left for %s' % self.location(key),
                                    'free space there or apply retention')
            raise RepositoryError('SFTP error while %s %s: %s' % (doing, self.location(key), exc))

    def _path(self, key):
        return posixpath.join(self.root, checked_key(key)) if key else self.root

    def _makedirs(self, path):
        missing = []
        while path not in ('', '/', '.'):
            try:
                self.sftp.stat(path)
                break
            except IOError:
                missing.append(path)
                path = posixpath.dirname(path)
        for directory in reversed(missing):
            try:
                self.sftp.mkdir(directory, 0o700)
            except IOError:
                self.sftp.stat(directory)  # created meanwhile is fine; anything else raises

    # -- the five verbs -----------------------------------------------------------------
    def put(self, key, reader, size, sha256):
        path = self._path(key)
        partial = '%s.%s%s' % (path, uuid.uuid4().hex[:8], PARTIAL_SUFFIX)
        try:
            with self._errors('uploading', key):
                self._makedirs(posixpath.dirname(path))
                sent = self.sending(reader, size)
                with self.sftp.open(partial, 'wb') as remote:
                    remote.set_pipelined(True)
                    for data in chunks(sent):
                        remote.write(data)
                size, sha256 = sent.size if size is None else size, sha256 or sent.hexdigest()
                self.check_landed(key, size, sha256, self.sftp.stat(partial).st_size)
                if self.verify == 'full':
                    self.check_landed(key, size, sha256, *self._hash_remote(partial))
                self._rename(partial, path)
        except BaseException:
            try:
                self.sftp.remove(partial)
            except Exception:
                pass
            raise
        return PutResult(key, size, sha256, 'sha256 re-read' if self.verify == 'full' else 'size')

    def _hash_remote(self, path):
        with self.sftp.open(path, 'rb') as remote:
            remote.prefetch()
            return hash_stream(remote)

    def _rename(self, source, target):
        try:
            self.sftp.posix_rename(source, target)
        except IOError:
            # servers without the posix-rename extension refuse to overwrite
            try:
                self.sftp.remove(target)
            except IOError:
                pass
            self.sftp.rename(source, target)

    @contextlib.contextmanager
    def get(self, key):
        with self._errors('downloading', key):
            remote = self.sftp.open(self._path(key), 'rb')
            remote.prefetch()
        try:
            yield _ErrorMappingReader(remote, self, key)
        finally:
            remote.close()

    def list(self, prefix):
        head = prefix.rpartition('/')[0]
        found = []
        with self._errors('listing', prefix):
            try:
                self.sftp.stat(self.root)
            except IOError:
                raise NotFoundError('repository directory %s does not exist' % self.location(),
                                    'create it or fix `path`')
            self._walk(head, prefix, found)
        return found

    def _walk(self, rel, prefix, found):
        try:
            entries = self.sftp.listdir_attr(self._path(rel))
        except IOError as exc:
            if getattr(exc, 'errno', None) == errno.ENOENT:
                return
            raise
        for entry in entries:
            key = '%s/%s' % (rel, entry.filename) if rel else entry.filename
            if stat_module.S_ISDIR(entry.st_mode):
                if (key + '/').startswith(prefix) or prefix.startswith(key + '/'):
                    self._walk(key, prefix, found)
            elif key.startswith(prefix):
                found.append(ObjectInfo(key, entry.st_size, _mtime(entry.st_mtime)))

    def stat(self, key):
        with self._errors('inspecting', key):
            try:
                attrs = self.sftp.stat(self._path(key))
            except IOError as exc:
                if getattr(exc, 'errno', None) == errno.ENOENT:
                    return None
                raise
        return ObjectInfo(key, attrs.st_size, _mtime(attrs.st_mtime))

    def delete(self, key):
        with self._errors('deleting', key):
            try:
                self.sftp.remove(self._path(key))
            except IOError as exc:
                if getattr(exc, 'errno', None) != errno.ENOENT:
                    raise

    def close(self):
        if self._sftp is not None:
            self._sftp.close()
        if self._ssh is not None:
            self._ssh.close()
        self._sftp = self._ssh = None


class _ErrorMappingReader(object):
    def __init__(self, remote, repo, key):
        self.remote, self.repo, self.key = remote, repo, key

    def read(self, size=-1):
        with self.repo._errors('downloading', self.key):
            return self.remote.read(size if size and size > 0 else CHUNK)

    def readable(self):
        return True


def _mtime(value):
    return datetime.datetime.fromtimestamp(value or 0, datetime.timezone.utc)
