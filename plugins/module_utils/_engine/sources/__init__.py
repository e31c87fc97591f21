# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Source (and restore target) types by name. Adding a type: one new file, one line here."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from .. import schema
from ..errors import ConfigError
from . import files, mysql, postgresql, postgresql_physical, redis
from .base import FileTree

SOURCE_CLASSES = (postgresql.PostgresqlSource, postgresql_physical.PostgresqlPhysicalSource, files.FilesSource,
                  mysql.MysqlSource, redis.RedisSource)
TYPES = dict((cls.type, cls) for cls in SOURCE_CLASSES)


def classes_for(role):
    """The source types a ``source`` of ``role`` may name: all for dump and restore, the file
    trees (``FileTree``) for snapshot."""
    return [cls for cls in SOURCE_CLASSES if role != 'snapshot' or issubclass(cls, FileTree)]


def source_class(options):
    kind = (options or {}).get('type')
    if kind not in TYPES:
        raise ConfigError('source type %r is not known' % (kind,),
                          'use one of: %s' % ', '.join(sorted(TYPES)))
    return TYPES[kind]


def check_source(options, role=None):
    """Raise the error ``open_source`` would for options its type does not take (of ``role``:
    ``dump`` or ``restore``) or values out of its choices, without building anything."""
    schema.accept(source_class(options), options, 'source', role, required=False)


def open_source(options, log):
    return source_class(options)(options, log)
