# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One error hierarchy, with messages written for the operator who reads them at 3 a.m.

Every message says what failed, where, and what to do. None carries a secret: messages
are built from names and locations, and secrets reach tools only through the environment.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import errno
import traceback


class BackupError(Exception):
    """Base class; ``kind`` lets callers and tests tell failures apart without parsing text."""

    kind = 'error'

    def __init__(self, message, hint=None, details=None):
        self.message = message
        self.hint = hint
        # structured partial results (e.g. per-repository outcomes) for the caller to report
        self.details = details
        super(BackupError, self).__init__(message if not hint else '%s; %s' % (message, hint))


class ConfigError(BackupError):
    """The options given cannot work (missing or contradictory)."""
    kind = 'config'


class DependencyError(BackupError):
    """A Python library or a command-line tool is missing on the node that runs the engine."""
    kind = 'dependency'


class SourceError(BackupError):
    """Dumping from or talking to the database / files being backed up failed."""
    kind = 'source'


class RepositoryError(BackupError):
    """A repository could not be reached, authenticated against, read or written."""
    kind = 'repository'


class UnreachableError(RepositoryError):
    """A repository's server did not answer in time, or could not be connected to at all."""
    kind = 'unreachable'


class NotFoundError(BackupError):
    """The backup, bucket, path or database asked for does not exist."""
    kind = 'not_found'


class IntegrityError(BackupError):
    """Bytes are not the ones that were backed up: checksum or size mismatch, truncation."""
    kind = 'integrity'


class TargetError(BackupError):
    """A restore target refused the restore (exists in create mode, busy, failed to load)."""
    kind = 'target'


class DiskFullError(BackupError):
    """No space left where a dump, an upload or a restore writes."""
    kind = 'disk_full'


class LockedError(BackupError):
    """Another run holds the lock for this backup set."""
    kind = 'locked'


class AuthenticityError(BackupError):
    """With trusted signing keys given: a backup is unsigned, or its signature does not verify."""
    kind = 'authenticity'


class LocalIOError(BackupError):
    """A local file or directory could not be read or written: read-only file system, I/O
    error, busy mount point."""
    kind = 'io'


class InternalError(BackupError):
    """A bug or an unforeseen failure (``exception`` carries the traceback for a report)."""
    kind = 'internal'


# errno -> (class, what it means, what to do) for ordinary conditions of a node's disks
_OS_ERRORS = {
    errno.ENOSPC: (DiskFullError, 'no space left', 'free space or apply retention'),
    errno.EDQUOT: (DiskFullError, 'disk quota exceeded', 'raise the quota, free space or apply retention'),
    errno.EROFS: (LocalIOError, 'read-only file system',
                  'remount it read-write; a disk remounted read-only by the kernel had I/O errors (dmesg)'),
    errno.EIO: (LocalIOError, 'input/output error', 'the disk is failing or was removed (dmesg); use another one'),
    errno.EBUSY: (LocalIOError, 'device or resource busy',
                  'it is a mount point or in use; choose a path below it, or wait for the other user'),
    errno.EACCES: (ConfigError, 'permission denied', 'fix the path, or its owner and mode'),
    errno.EPERM: (ConfigError, 'operation not permitted', 'fix the path, or its owner, mode and attributes'),
    errno.ENOENT: (ConfigError, 'does not exist', 'create it or fix the path'),
    errno.ENOTDIR: (ConfigError, 'a file is where a directory is needed', 'fix the path: it must name a directory'),
    errno.EISDIR: (ConfigError, 'is a directory', 'fix the path: it must name a file'),
    errno.EEXIST: (ConfigError, 'already exists', 'fix the path, or remove what is in the way'),
    errno.ENAMETOOLONG: (ConfigError, 'file name too long', 'use a shorter path'),
}
for _code in (errno.ETIMEDOUT, errno.ECONNREFUSED, errno.ECONNRESET, errno.EHOSTUNREACH, errno.ENETUNREACH):
    _OS_ERRORS[_code] = (UnreachableError, None, 'check the host, the port, the network and the server')


def from_os_error(exc, doing):
    """An OSError (``exc``) met while ``doing`` something (``"writing the dump"``) as the
    BackupError an operator can act on; its kind says config, io or disk_full."""
    cls, meaning, hint = _OS_ERRORS.get(exc.errno, (LocalIOError, None, 'check the disk and the path'))
    where = exc.filename if exc.filename is not None else ''
    detail = exc.strerror or meaning or str(exc)
    return cls('%s: %s%s' % (doing, '%s: ' % where if where else '', detail), hint)


def as_backup_error(exc, doing):
    """Any exception as a BackupError: itself, an OSError's meaning, or an InternalError that
    keeps the traceback in ``details['exception']``."""
    if isinstance(exc, BackupError):
        return exc
    if isinstance(exc, TimeoutError) and exc.errno is None:  # socket.timeout
        return UnreachableError('%s: no answer in time (%s)' % (doing, exc),
                                'check the server and the network; timeouts are options of the repository')
    if isinstance(exc, EnvironmentError) and getattr(exc, 'errno', None) is not None:
        return from_os_error(exc, doing)
    error = InternalError('unexpected error while %s: %s: %s' % (doing, type(exc).__name__, exc),
                          'this is a bug; please report it with the exception below')
    error.details = {'exception': ''.join(traceback.format_exception(type(exc), exc, exc.__traceback__))}
    return error
