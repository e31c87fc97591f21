# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A directory on a local or mounted disk (USB drive, NFS mount, the dump's own local copy)."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import contextlib
import datetime
import errno
import os
import uuid

from ..errors import DiskFullError, NotFoundError, RepositoryError, from_os_error
from ..manifest import PARTIAL_SUFFIX
from ..pipeline import copy, hash_stream, remove_quietly
from .base import DIRECTORY, ObjectInfo, PutResult, Repository, StreamingStore, checked_key


class LocalRepository(StreamingStore, Repository):
    type = 'local'
    DESCRIPTION = ('C(local) is a directory on a local or mounted disk.',)
    OPTIONS = (DIRECTORY,)

    def __init__(self, options, log=None):
        super(LocalRepository, self).__init__(options, log)
        self.root = os.path.abspath(os.path.expanduser(self.options['path']))

    def location(self, key=''):
        return os.path.join(self.root, key) if key else self.root

    def _path(self, key):
        return os.path.join(self.root, *checked_key(key).split('/'))

    def _check_root(self):
        if not os.path.isdir(self.root):
            raise NotFoundError('repository directory %s does not exist' % self.root,
                                'create it (and mount the disk if it is one) or fix `path`')

    def put(self, key, reader, size, sha256):
        self._check_root()
        path = self._path(key)
        partial = '%s.%s%s' % (path, uuid.uuid4().hex[:8], PARTIAL_SUFFIX)
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            sent = self.sending(reader, size)
            with open(partial, 'wb') as out:
                os.fchmod(out.fileno(), 0o600)
                copy(sent, out)
                out.flush()
                os.fsync(out.fileno())
            size, sha256 = sent.size if size is None else size, sha256 or sent.hexdigest()
            self.check_landed(key, size, sha256, os.path.getsize(partial))
            if self.verify == 'full':
                with open(partial, 'rb') as landed:
                    self.check_landed(key, size, sha256, *hash_stream(landed))
            os.rename(partial, path)
            _fsync_dir(os.path.dirname(path))
        except OSError as exc:
            remove_quietly(partial)
            if exc.errno == errno.ENOSPC:
                raise DiskFullError('no space left on the disk of %s' % self.root,
                                    'free space or apply retention; the partial copy was removed')
            raise from_os_error(exc, 'local repository %s: cannot write %s' % (self.root, key))
        except BaseException:
            remove_quietly(partial)
            raise
        return PutResult(key, size, sha256, 'sha256 re-read' if self.verify == 'full' else 'size')

    @contextlib.contextmanager
    def get(self, key):
        try:
            handle = open(self._path(key), 'rb')
        except (IOError, OSError) as exc:
            if exc.errno == errno.ENOENT:
                raise NotFoundError('%s does not exist' % self.location(key))
            raise RepositoryError('cannot read %s: %s' % (self.location(key), exc.strerror))
        with handle:
            yield handle

    def list(self, prefix):
        self._check_root()
        head = prefix.rpartition('/')[0]
        start = self._path(head) if head else self.root
        found = []
        for dirpath, dirnames, filenames in os.walk(start):
            for filename in filenames:
                full = os.path.join(dirpath, filename)
                key = os.path.relpath(full, self.root).replace(os.sep, '/')
                if key.startswith(prefix):
                    try:
                        st = os.stat(full)
                    except OSError:
                        continue  # vanished while listing
                    found.append(ObjectInfo(key, st.st_size, _mtime(st)))
            rel = os.path.relpath(dirpath, self.root).replace(os.sep, '/')
            rel = '' if rel == '.' else rel + '/'
            # descend only where keys starting with prefix can be
            dirnames[:] = [d for d in dirnames
                           if (rel + d + '/').startswith(prefix) or prefix.startswith(rel + d + '/')]
        return found

    def stat(self, key):
        try:
            st = os.stat(self._path(key))
        except OSError:
            return None
        return ObjectInfo(key, st.st_size, _mtime(st))

    def delete(self, key):
        remove_quietly(self._path(key))


def _mtime(st):
    return datetime.datetime.fromtimestamp(st.st_mtime, datetime.timezone.utc)


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
