# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One error hierarchy, with messages written for the operator who reads them at 3 a.m.

Every message says what failed, where, and what to do. None carries a secret: messages
are built from names and locations, and secrets reach tools only through the environment.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type


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
