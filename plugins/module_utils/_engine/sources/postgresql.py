# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One PostgreSQL database: ``pg_dump`` out, ``pg_restore``/``psql`` back in.

Custom format is dumped uncompressed (``-Z0``) and compressed by the pipeline: zstd is
about 3x faster than pg_dump's built-in gzip, and custom format lets ``pg_restore -j``
restore in parallel. ``format: plain`` gives the seed scripts' ``.sql.gz``.

The password only ever travels in ``PGPASSWORD``. A restore goes into a scratch database
that is renamed into place only after it fully succeeded; the target is never half
restored.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import contextlib
import os
import re
import subprocess
import uuid

from .. import commands
from ..errors import ConfigError, NotFoundError, SourceError, TargetError
from ..pipeline import copy
from .base import Source, check_mode

FORMATS = {'custom': 'dump', 'plain': 'sql'}
_FACTS_SQL = ("SELECT current_setting('server_version'), current_setting('server_version_num'), "
              "pg_database_size(d.oid), pg_encoding_to_char(d.encoding), d.datcollate, d.datctype "
              "FROM pg_database d WHERE d.datname = current_database()")


def _version(text):
    match = re.search(r'\d+(?:\.\d+)+', text)
    return match.group(0) if match else None


def quote_ident(name):
    return '"%s"' % name.replace('"', '""')


def quote_literal(text):
    return "'%s'" % text.replace("'", "''")


class PostgresqlSource(Source):
    type = 'postgresql'
    required = ('database',)
    secret_options = ('password',)

    def __init__(self, options, log):
        super(PostgresqlSource, self).__init__(options, log)
        self.database = self.options['database']
        # in a container the tools reach the server on its own socket unless told otherwise
        self.host = self.options.get('host', None if self.in_container() else '127.0.0.1')
        self.port = int(self.options.get('port', 5432))
        self.user = self.options.get('user', 'postgres')
        self.format = self.options.get('format', 'custom')
        if self.format not in FORMATS:
            raise ConfigError('PostgreSQL format %r is not known' % self.format, 'use custom or plain')
        self.jobs = int(self.options.get('jobs') or min(4, os.cpu_count() or 1))

    def describe(self):
        return 'PostgreSQL database %s on %s' % (self.database, self._where())

    def _where(self):
        where = '%s:%s' % (self.host or 'local socket', self.port)
        if self.in_container():
            where += ' in container %s' % self.options['container']
        return where

    def _env(self):
        env = {'PGHOST': self.host, 'PGPORT': self.port, 'PGUSER': self.user,
               'PGPASSWORD': self.options.get('password'), 'PGSSLMODE': self.options.get('ssl_mode'),
               'PGCONNECT_TIMEOUT': self.options.get('connect_timeout', 10),
               'PGAPPNAME': 'offsite.backup'}
        return dict((k, v) for k, v in env.items() if v is not None)

    def _conn_args(self):
        host = ['-h', self.host] if self.host else []
        return host + ['-p', str(self.port), '-U', self.user, '--no-password']

    def _argv(self, argv, stdin=False):
        """argv as run here: through ``docker exec`` with the PG* variables by name when in
        a container."""
        return self.exec_argv(argv, env_names=sorted(self._env()), stdin=stdin)

    def _fail(self, what, stderr, database=None):
        """Turn libpq/tool stderr into the error an operator can act on."""
        where = self._where()
        database = database or self.database
        text = stderr.strip()
        if re.search(r'database "[^"]*" does not exist', text):
            raise NotFoundError('database %s does not exist on %s' % (database, where),
                                'create it or fix `database`')
        if 'password authentication failed' in text or 'authentication failed' in text:
            raise SourceError('PostgreSQL at %s refused the password of user %s' % (where, self.user),
                              'fix `password` (or `user`)')
        if 'no password supplied' in text or 'fe_sendauth' in text:
            raise SourceError('PostgreSQL at %s asks user %s for a password and none was given' % (where, self.user),
                              'set `password` (it is passed in PGPASSWORD, never on the command line)')
        if 'server version mismatch' in text:
            raise SourceError('%s: the client tools are older than the server at %s (%s)' % (what, where, text),
                              'install the postgresql-client package of the server\'s major version')
        lost = [line.strip() for line in text.splitlines()
                if 'terminating connection' in line or 'server closed the connection' in line
                or 'connection to server was lost' in line]
        if lost:
            raise SourceError('the connection to PostgreSQL at %s broke off during %s (%s)'
                              % (where, what, lost[0].split('server: ')[-1]),
                              'the server restarted or the session was terminated; nothing complete was '
                              'written, run it again')
        if 'Connection refused' in text or 'could not connect' in text or 'timeout expired' in text \
                or 'could not translate host name' in text:
            raise SourceError('cannot reach PostgreSQL at %s (%s)' % (where, text.splitlines()[-1] if text else '?'),
                              'check host/port and that the server is running')
        raise SourceError('%s failed on %s: %s' % (what, where, text or 'no error output'))

    def _psql(self, sql, database, what):
        argv = [self.tool('psql', 'to talk to PostgreSQL'), '-X', '-A', '-t', '-q', '-F', '\t',
                '-v', 'ON_ERROR_STOP=1'] + self._conn_args() + ['-d', database, '-c', sql]
        rc, out, err = commands.run(self._argv(argv), self.log, env=self._env())
        if rc != 0:
            self._fail(what, err, database)
        return [line.split('\t') for line in out.splitlines() if line]

    # -- backup side ---------------------------------------------------------------------
    def artifact(self):
        return FORMATS[self.format], self.format

    def probe(self):
        row = self._psql(_FACTS_SQL, self.database, 'connecting')[0]
        rc, out, dummy = commands.run(self._argv([self.tool('pg_dump', 'to dump PostgreSQL'), '--version']),
                                      self.log)
        return {'type': self.type, 'database': self.database, 'host': self.host, 'port': self.port,
                'user': self.user, 'format': self.format,
                'server_version': row[0], 'server_version_num': int(row[1]), 'database_size': int(row[2]),
                'encoding': row[3], 'collate': row[4], 'ctype': row[5],
                'tool': 'pg_dump', 'tool_version': _version(out) if rc == 0 else None}

    @contextlib.contextmanager
    def dump(self):
        argv = [self.tool('pg_dump', 'to dump PostgreSQL')] + self._conn_args()
        argv += ['--format=%s' % self.format]
        if self.format == 'custom':
            argv += ['--compress=0']  # the pipeline compresses, faster
        for schema in self.options.get('schemas') or []:
            argv += ['--schema', schema]
        for table in self.options.get('exclude_tables') or []:
            argv += ['--exclude-table', table]
        argv.append(self.database)
        with commands.streaming(self._argv(argv), self.log, env=self._env()) as proc:
            yield proc.stdout
            rc = proc.wait()
            if commands.killed_by(rc):
                raise SourceError('pg_dump of %s was killed by signal %s' % (self.describe(), commands.killed_by(rc)),
                                  'the partial dump was discarded; find out what killed it (out-of-memory '
                                  'killer, an operator, a timeout) and run it again')
            if rc != 0:
                self._fail('pg_dump', commands.stderr_tail(proc))

    # -- restore side --------------------------------------------------------------------
    def _maintenance_db(self):
        return self.options.get('maintenance_db', 'postgres')

    def _exists(self, name):
        rows = self._psql('SELECT 1 FROM pg_database WHERE datname = %s' % quote_literal(name),
                          self._maintenance_db(), 'connecting')
        return bool(rows)

    def check_target(self, mode):
        check_mode(mode)
        exists = self._exists(self.database)
        if exists and mode == 'create':
            raise TargetError('database %s already exists on %s and mode is create'
                              % (self.database, self._where()),
                              'use mode: replace to swap it for the backup, or restore under another name')
        return {'exists': exists}

    def streams(self):
        """One loader reading a pipe (psql, or pg_restore with one job) can take the artifact
        as it downloads; ``pg_restore -j`` needs a seekable file. In a container the loader
        reads stdin anyway (this node's files are not there)."""
        return self.jobs == 1 or self.in_container()

    def restore(self, path, manifest, mode):
        """Restore from a verified, decompressed work file."""
        fmt = manifest.get('format') or ('plain' if path.endswith('.sql') else 'custom')
        return self._via_scratch(manifest, mode, lambda scratch: self._load(fmt, scratch, path=path))

    def restore_stream(self, stream, manifest, mode):
        """Restore while downloading: ``stream`` (a pipeline.VerifiedStream) feeds the scratch
        database, and its checksum is proven before the scratch database is swapped in; a
        damaged artifact only ever reaches the scratch database, which is then dropped."""
        fmt = manifest.get('format') or 'custom'

        def load(scratch):
            try:
                self._load(fmt, scratch, stream=stream)
            except TargetError:
                stream.finish()  # damaged bytes make the loader choke: name that root cause first
                raise
            stream.finish()
        return self._via_scratch(manifest, mode, load)

    def _via_scratch(self, manifest, mode, load):
        check_mode(mode)
        scratch = '%s_restore_%s' % (self.database[:40], uuid.uuid4().hex[:8])
        source_facts = manifest.get('source') or {}
        create = 'CREATE DATABASE %s TEMPLATE template0' % quote_ident(scratch)
        if source_facts.get('encoding'):
            create += ' ENCODING %s' % quote_literal(source_facts['encoding'])
            create += ' LC_COLLATE %s LC_CTYPE %s' % (quote_literal(source_facts['collate']),
                                                      quote_literal(source_facts['ctype']))
        if self.options.get('owner'):
            create += ' OWNER %s' % quote_ident(self.options['owner'])
        self._psql(create, self._maintenance_db(), 'creating the scratch database %s' % scratch)
        try:
            load(scratch)
            return self._swap(scratch, mode)
        except BaseException:
            self._drop(scratch)
            raise

    def _load(self, fmt, database, path=None, stream=None):
        """Load ``path`` or ``stream`` into ``database`` with psql (plain) or pg_restore.
        In a container the file is fed on stdin: the container cannot see this node's files."""
        if path and self.in_container():
            with open(path, 'rb') as handle:
                return self._load(fmt, database, stream=handle)
        source = path if path else '-'
        if fmt == 'plain':
            argv = [self.tool('psql', 'to restore plain dumps'), '-X', '-q', '-v', 'ON_ERROR_STOP=1',
                    '--single-transaction'] + self._conn_args() + ['-d', database, '-f', source]
            tool = 'psql'
        else:
            argv = [self.tool('pg_restore', 'to restore PostgreSQL dumps'), '--exit-on-error']
            argv += self._conn_args() + ['-d', database]
            if path and self.jobs > 1:
                argv += ['-j', str(self.jobs)]
            if self.options.get('no_owner'):
                argv += ['--no-owner', '--no-privileges']
            if path:
                argv.append(path)
            tool = 'pg_restore'
        with commands.streaming(self._argv(argv, stdin=bool(stream)), self.log, env=self._env(),
                                stdin=subprocess.PIPE if stream else None, stdout=subprocess.DEVNULL) as proc:
            if stream:
                try:
                    copy(stream, proc.stdin)
                except BrokenPipeError:
                    pass  # the loader stopped reading: its exit status and stderr say why
                finally:
                    try:
                        proc.stdin.close()
                    except BrokenPipeError:
                        pass
            rc = proc.wait()
            if rc != 0:
                raise TargetError('%s into the scratch database failed: %s'
                                  % (tool, commands.stderr_tail(proc)[-1500:] or 'exit status %d' % rc),
                                  'the target database %s was not touched' % self.database)

    def _swap(self, scratch, mode):
        maintenance = self._maintenance_db()
        target = quote_ident(self.database)
        if not self._exists(self.database):
            self._psql('ALTER DATABASE %s RENAME TO %s' % (quote_ident(scratch), target), maintenance,
                       'renaming the restored database into place')
            return {'database': self.database, 'replaced': False}
        if mode == 'create':
            raise TargetError('database %s appeared while restoring and mode is create' % self.database,
                              'it was left alone; the restored copy was dropped')
        busy = self._psql('SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()'
                          % quote_literal(self.database), maintenance, 'checking sessions')
        if busy and not self.options.get('terminate_connections'):
            raise TargetError('database %s has %d open session(s); it cannot be swapped while in use'
                              % (self.database, len(busy)),
                              'stop the application first, or set terminate_connections: true')
        previous = '%s_previous_%s' % (self.database[:40], uuid.uuid4().hex[:8])
        if busy:
            self._psql('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s '
                       'AND pid <> pg_backend_pid()' % quote_literal(self.database), maintenance,
                       'terminating sessions')
        # both renames in one transaction: the target is either the old or the new database
        self._psql('ALTER DATABASE %s RENAME TO %s; ALTER DATABASE %s RENAME TO %s'
                   % (target, quote_ident(previous), quote_ident(scratch), target),
                   maintenance, 'swapping the restored database into place')
        if self.options.get('keep_previous'):
            return {'database': self.database, 'replaced': True, 'previous': previous}
        self._drop(previous)
        return {'database': self.database, 'replaced': True}

    def _drop(self, name):
        try:
            self._psql('DROP DATABASE IF EXISTS %s WITH (FORCE)' % quote_ident(name), self._maintenance_db(),
                       'dropping %s' % name)
        except Exception:
            pass  # best effort: the original error matters more
