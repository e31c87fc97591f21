# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Source (and restore target) types by name. Adding a type: one new file, one line here."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from ..errors import ConfigError
from . import files, mysql, postgresql, redis

SOURCE_CLASSES = (postgresql.PostgresqlSource, files.FilesSource, mysql.MysqlSource, redis.RedisSource)
TYPES = dict((cls.type, cls) for cls in SOURCE_CLASSES)


def open_source(options, log):
    kind = (options or {}).get('type')
    if kind not in TYPES:
        raise ConfigError('source type %r is not known' % (kind,),
                          'use one of: %s' % ', '.join(sorted(TYPES)))
    return TYPES[kind](options, log)
