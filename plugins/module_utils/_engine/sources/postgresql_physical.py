# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A whole PostgreSQL cluster, physically: ``pg_basebackup`` out (the base backup of point-in-time
recovery, docs/pitr.md).

``pg_basebackup -Ft -D - -X fetch``: one tar on stdout, streamed through the ordinary pipeline
(compress, encrypt, sha256, manifest last), nothing spooled. ``-X fetch`` puts the WAL written
while the backup ran into the tar, so a base backup is consistent on its own, even without the
WAL archive (``-X stream``, the other way, cannot write to stdout). The price is that the
server must keep that WAL until the backup ends (``wal_keep_size``, or the archive holding it
back until archived); on a fresh checkpoint it is one or a few mostly empty segments.

The manifest's ``source`` records what recovery needs to know: server version, system
identifier, timeline, the WAL start and end (LSN, time, first and last segment).
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import contextlib
import re

from .. import commands
from .. import manifest as mf
from ..errors import ConfigError, SourceError
from ..schema import Option
from .base import Source
from .postgresql import PostgresqlConnection, connection_options
from .postgresql_sql import major, parse_version

FORMAT = 'basebackup'  # a pg_basebackup tar (base.tar with pg_wal and backup_manifest)
CHECKPOINTS = ('fast', 'spread')
FACTS_SQL = ("SELECT current_setting('server_version'), current_setting('server_version_num'), "
             "(SELECT coalesce(sum(pg_database_size(oid)), 0) FROM pg_database WHERE datallowconn), "
             "(SELECT coalesce(string_agg(spcname, ',' ORDER BY spcname), '') FROM pg_tablespace "
             "WHERE spcname NOT IN ('pg_default', 'pg_global'))")
_UNITS = {'B': 1, 'kB': 1024, 'MB': 1024 ** 2, 'GB': 1024 ** 3, 'TB': 1024 ** 4}


class PostgresqlPhysicalSource(PostgresqlConnection, Source):
    type = 'postgresql_physical'
    DESCRIPTION = ('C(postgresql_physical) for a whole PostgreSQL cluster as a base backup (C(pg_basebackup)), '
                   'the start of point-in-time recovery: see docs/pitr.md.',)
    OPTIONS = tuple(
        o.replace(roles=('dump',)) if o.name in ('host', 'ssl_mode') else o
        for o in connection_options('User to connect as; it needs the C(REPLICATION) attribute (and a '
                                    'C(replication) line in C(pg_hba.conf)).')) + (
        Option('maintenance_db', roles=('dump',), default='postgres',
               description='Database the facts of the cluster (version, size, tablespaces) are read in.'),
        Option('checkpoint', roles=('dump',), default='fast', choices=CHECKPOINTS, description=[
            'C(pg_basebackup --checkpoint): C(fast) starts the backup at once with an immediate checkpoint; '
            'C(spread) waits for a checkpoint spread over C(checkpoint_completion_target) (minutes on a '
            'default server), gentler on a busy disk.']),
    )

    def __init__(self, options, log):
        super(PostgresqlPhysicalSource, self).__init__(options, log)
        self.database = None  # the whole cluster
        self.host = self.options.get('host', '127.0.0.1')
        self.port = int(self.options.get('port', 5432))
        self.user = self.options.get('user', 'postgres')
        self._facts = None
        self._progress = None

    def describe(self):
        return 'PostgreSQL cluster on %s (base backup)' % self._where()

    # -- backup side ---------------------------------------------------------------------
    def artifact(self):
        return 'tar', FORMAT

    def probe(self):
        """Version, size and tablespaces over SQL; system identifier, timeline and segment size
        over a replication connection, the one pg_basebackup needs: a user without REPLICATION
        fails here (and in check mode), not half way."""
        row = self._psql(FACTS_SQL, self.options.get('maintenance_db', 'postgres'), 'connecting')[0]
        if row[3]:
            raise SourceError('the PostgreSQL cluster on %s has tablespaces besides pg_default (%s); a '
                              'postgresql_physical base backup streams one tablespace only'
                              % (self._where(), row[3]),
                              'move those tables into pg_default, or back their databases up with type: postgresql')
        ident = self._replication('IDENTIFY_SYSTEM')[0]
        segment = self._replication('SHOW wal_segment_size')[0][0]
        rc, out, dummy = commands.run([self.tool('pg_basebackup', 'to take PostgreSQL base backups'), '--version'],
                                      self.log)
        tool_version = parse_version(out) if rc == 0 else None
        server_major = major(int(row[1]))
        if tool_version and major(tool_version) < server_major:
            raise SourceError('pg_basebackup %s is older than the PostgreSQL %s server at %s and cannot back it up'
                              % (tool_version, row[0], self._where()),
                              'install postgresql-client-%s on this node' % '.'.join(str(p) for p in server_major))
        self._facts = {
            'type': self.type, 'format': FORMAT, 'host': self.host, 'port': self.port, 'user': self.user,
            'server_version': row[0], 'server_version_num': int(row[1]),
            'server_major': '.'.join(str(p) for p in server_major),
            'database_size': int(row[2]), 'system_identifier': ident[0], 'timeline': int(ident[1]),
            'wal_segment_size': parse_size(segment), 'tool': 'pg_basebackup', 'tool_version': tool_version,
        }
        return dict(self._facts)

    def _replication(self, command):
        """One replication-protocol command (psql over ``replication=true``), its rows."""
        argv = [self.tool('psql', 'to talk to PostgreSQL'), '-X', '-A', '-t', '-q', '-F', '\t', '-v', 'ON_ERROR_STOP=1']
        argv += self._conn_args() + ['-d', 'dbname=replication replication=true', '-c', command]
        rc, out, err = commands.run(self._argv(argv), self.log, env=self._env())
        if rc != 0:
            if 'replication connection' in err or 'must be superuser or replication role' in err:
                raise SourceError('PostgreSQL at %s refuses a replication connection to user %s' % (self._where(), self.user),
                                  'give the user REPLICATION (ALTER ROLE ... REPLICATION) and allow it in pg_hba.conf '
                                  '(a line for database "replication")')
            self._fail('a replication connection (%s)' % command, err)
        return [line.split('\t') for line in out.splitlines() if line]

    @contextlib.contextmanager
    def dump(self):
        if self._facts is None:
            self.probe()
        argv = [self.tool('pg_basebackup', 'to take PostgreSQL base backups')] + self._conn_args()
        argv += ['--format=tar', '--pgdata=-', '--wal-method=fetch', '--checkpoint=%s' % self.options.get(
            'checkpoint', 'fast'), '--label=offsite.backup', '--verbose']
        started = mf.utcnow()
        with commands.streaming(self._argv(argv), self.log, env=self._env()) as proc:
            yield proc.stdout
            rc = proc.wait()
            stopped = mf.utcnow()
            stderr = commands.stderr_tail(proc)
            if commands.killed_by(rc):
                raise SourceError('pg_basebackup of %s was killed by signal %s' % (self._where(), commands.killed_by(rc)),
                                  'the partial backup was discarded; find out what killed it and run it again')
            if rc != 0:
                if 'can only write single tablespace to stdout' in stderr:
                    raise SourceError('the PostgreSQL cluster on %s gained a tablespace during the backup' % self._where(),
                                      'a postgresql_physical base backup streams one tablespace only')
                self._fail('pg_basebackup', stderr or 'exit status %s' % rc)
        self._progress = backup_progress(stderr, self._facts['wal_segment_size'], started, stopped, self._where())

    def dump_facts(self):
        return dict(self._progress or {})

    # -- restore side --------------------------------------------------------------------
    def check_target(self, mode):
        raise ConfigError('restoring a postgresql_physical base backup is not available yet',
                          'extract the artifact with tar and follow docs/pitr.md')


def parse_size(text):
    """A size setting as SHOW prints it (``16MB``, ``1GB``, ``8192``) in bytes."""
    match = re.match(r'^\s*(\d+)\s*([kMGT]?B)?\s*$', text or '')
    if not match:
        raise SourceError('cannot read the size %r' % (text,))
    return int(match.group(1)) * _UNITS[match.group(2) or 'B']


def parse_lsn(text):
    """``0/2000028`` -> 33554472."""
    high, low = text.split('/')
    return (int(high, 16) << 32) + int(low, 16)


def format_lsn(lsn):
    return '%X/%X' % (lsn >> 32, lsn & 0xFFFFFFFF)


def segment_name(timeline, lsn, segment_size, previous=False):
    """The WAL file holding ``lsn`` on ``timeline`` (PostgreSQL's XLByteToSeg); ``previous``: the
    one holding the byte before it (XLByteToPrevSeg, what pg_walfile_name answers for an end)."""
    number = (lsn - 1 if previous else lsn) // segment_size
    per_id = 0x100000000 // segment_size
    return '%08X%08X%08X' % (timeline, number // per_id, number % per_id)


def backup_progress(stderr, segment_size, started, stopped, where):
    """The WAL range of a finished base backup, from ``pg_basebackup --verbose``'s stderr:
    start and end LSN, timeline, the first and last segment recovery needs to be consistent,
    and the times (``stopped``: when pg_basebackup had finished; the backup was consistent by then)."""
    start = re.search(r'write-ahead log start point: ([0-9A-F]+/[0-9A-F]+) on timeline (\d+)', stderr)
    end = re.search(r'write-ahead log end point: ([0-9A-F]+/[0-9A-F]+)', stderr)
    if not start or not end:
        raise SourceError('pg_basebackup of %s finished without naming its WAL start and end point' % where,
                          'its output was: %s' % (stderr[-500:] or 'empty'))
    start_lsn, timeline, end_lsn = parse_lsn(start.group(1)), int(start.group(2)), parse_lsn(end.group(1))
    return {'timeline': timeline, 'start_lsn': format_lsn(start_lsn), 'stop_lsn': format_lsn(end_lsn),
            'start_time': mf.format_time(started), 'stop_time': mf.format_time(stopped),
            'wal_start': segment_name(timeline, start_lsn, segment_size),
            'wal_end': segment_name(timeline, end_lsn, segment_size, previous=True)}
