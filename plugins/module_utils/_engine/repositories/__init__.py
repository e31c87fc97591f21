# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Repository types by name. Adding a type: one new file, one line here."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from .. import schema
from ..errors import ConfigError
from . import b2, local, restic, rsync, s3, sftp

# the order of the documentation; each class declares its options (schema.Option) and capabilities
REPOSITORY_CLASSES = (s3.S3Repository, sftp.SftpRepository, local.LocalRepository, b2.B2Repository,
                      rsync.RsyncRepository, restic.ResticRepository)
TYPES = dict((cls.type, cls) for cls in REPOSITORY_CLASSES)


def repository_class(options):
    kind = (options or {}).get('type')
    if kind not in TYPES:
        raise ConfigError('repository type %r is not known' % (kind,),
                          'use one of: %s' % ', '.join(sorted(TYPES)))
    return TYPES[kind]


def check_repository(options):
    """Raise the error ``open_repository`` would for options its type does not take or values out
    of its choices, without building anything (the job-file check; a missing required option is
    left to the run, as before)."""
    schema.accept(repository_class(options), options, 'repository', required=False)


def open_repository(options, log=None):
    """Build the repository an options dict describes (it is not connected yet). ``log``: the
    caller's CommandLog, where the repository records every external command it runs (restic,
    rsync and ssh) for ``executed_commands``; without one, a log of its own nobody reads."""
    return repository_class(options)(options, log)
