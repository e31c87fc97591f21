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
import io
import json
import os
import re
import subprocess
import tarfile
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from .. import commands, lifeline
from ..errors import ConfigError, IntegrityError, NotFoundError, SourceError, TargetError
from .. import scratch as leases
from ..pipeline import chunks, copy
from ..schema import Option
from .base import (CONNECT_TIMEOUT, CONTAINER, Source, StreamingRestore, check_mode, database_options, password, scratch_name,
                   server)

FORMATS = {'custom': 'dump', 'plain': 'sql'}
CLUSTER_FORMAT = 'cluster'  # a tar: globals.sql (pg_dumpall --globals-only), databases/NNNN.dump, cluster.json
_FACTS_SQL = ("SELECT current_setting('server_version'), current_setting('server_version_num'), "
              "pg_database_size(d.oid), pg_encoding_to_char(d.encoding), d.datcollate, d.datctype, "
              "pg_get_userbyid(d.datdba), (SELECT array_to_json(s.setconfig) FROM pg_db_role_setting s "
              "WHERE s.setrole = 0 AND s.setdatabase = d.oid) "
              "FROM pg_database d WHERE d.datname = current_database()")
# Rows of every ordinary table (partitions counted once, as leaves), one statement so that it
# runs inside the dump's snapshot. count(*) reads each table once more: the price of a restore
# that proves it got every row.
_COUNT_SQL = ("SELECT n.nspname || '.' || c.relname, (xpath('/row/c/text()', query_to_xml(format("
              "'SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname), false, true, '')))[1]::text "
              "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' "
              "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
              "AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)' ORDER BY 1")
# settings whose value is a list of quoted elements (pg_dump's variable_is_guc_list_quote)
_LIST_SETTINGS = ('local_preload_libraries', 'search_path', 'session_preload_libraries',
                  'shared_preload_libraries', 'temp_tablespaces', 'unix_socket_directories')
_SESSION_MARK = '__offsite_backup_done__'


def _version(text):
    match = re.search(r'\d+(?:\.\d+)+', text)
    return match.group(0) if match else None


def major(version):
    """The major version as a comparable tuple: server_version_num 150004 or '15.4' -> (15,),
    90624 or '9.6.24' -> (9, 6)."""
    if isinstance(version, int):
        return (version // 10000,) if version >= 100000 else (version // 10000, version // 100 % 100)
    parts = [int(p) for p in version.split('.')[:2]]
    return tuple(parts[:1] if parts[0] >= 10 else parts)


def check_tool_version(tool, tool_version, server_version_num, server_version, where):
    """pg_dump refuses a newer server only after connecting: say it first, with what to install."""
    if not tool_version:
        return
    server_major = major(server_version_num)
    if major(tool_version) < server_major:
        wanted = '.'.join(str(p) for p in server_major)
        raise SourceError('%s %s is older than the PostgreSQL %s server at %s and cannot dump it'
                          % (tool, tool_version, server_version, where),
                          'install postgresql-client-%s on this node (Debian: from apt.postgresql.org; a newer '
                          'client dumps older servers too)' % wanted)


def setting_statement(database, entry):
    """``ALTER DATABASE ... SET`` for one pg_db_role_setting entry (``name=value``)."""
    name, value = entry.split('=', 1)
    if name.lower() in _LIST_SETTINGS:
        values = ', '.join(quote_literal(v) for v in split_list_setting(value))
    else:
        values = quote_literal(value)
    return 'ALTER DATABASE %s SET %s TO %s' % (quote_ident(database), quote_ident(name), values or "''")


def split_list_setting(value):
    """Elements of a list setting as stored (``"$user", public``): comma separated,
    double-quoted where needed (``""`` is a quote inside)."""
    items, i = [], 0
    while i < len(value):
        while i < len(value) and value[i] in ' ,':
            i += 1
        if i >= len(value):
            break
        if value[i] == '"':
            j, item = i + 1, ''
            while j < len(value):
                if value[j] == '"' and value[j + 1:j + 2] == '"':
                    item, j = item + '"', j + 2
                elif value[j] == '"':
                    break
                else:
                    item, j = item + value[j], j + 1
            items.append(item)
            i = j + 1
        else:
            j = value.find(',', i)
            j = len(value) if j < 0 else j
            items.append(value[i:j].strip())
            i = j
    return items


def compare_counts(expected, actual, where):
    """Raise IntegrityError naming the first tables whose rows differ from the manifest's."""
    wrong = ['%s: %s rows, %s restored' % (t, n, actual.get(t, 'table missing, 0'))
             for t, n in sorted(expected.items()) if actual.get(t) != n]
    wrong += ['%s: not in the backup, %s rows restored' % (t, actual[t]) for t in sorted(actual) if t not in expected]
    if wrong:
        raise IntegrityError('the restored %s does not hold the rows the backup recorded (%d table(s) differ): %s'
                             % (where, len(wrong), '; '.join(wrong[:5])),
                             'the target was not touched; the backup or the restore is incomplete')


def quote_ident(name):
    return '"%s"' % name.replace('"', '""')


def quote_literal(text):
    return "'%s'" % text.replace("'", "''")


class PostgresqlSource(StreamingRestore, Source):
    type = 'postgresql'
    DESCRIPTION = ('C(postgresql) for a PostgreSQL database or cluster.',)
    OPTIONS = database_options([
        'The whole cluster instead of O(.database) - C([all]) (every database that accepts '
        'connections except templates and the maintenance database) or a list of names.',
        'One artifact (format C(cluster), a tar) holds C(pg_dumpall --globals-only) (roles with their password '
        'hashes, tablespaces) and one custom-format dump per database, each taken in its own exported snapshot '
        'with its row counts. Each database is spooled once to an unlinked file in the dump\'s C(dest).',
        'A restore restores C([all]) or some of its databases by name. Roles come first (existing roles are '
        'kept, never dropped, and get the backup\'s attributes; the role connecting is left alone), then every '
        'database is loaded into a scratch database (C(jobs) at a time) and proven by its row counts; only '
        'when all are ready are they swapped in. C(mode=create) fails if any of them exists; '
        'C(mode=replace) swaps each.']) + tuple(
        o.replace(default=None, default_text='C(127.0.0.1) (with O(.container), the container\'s own socket)')
        if o.name == 'host' else o
        for o in server(5432, 'postgres', 'User to connect as; a restore needs CREATEDB.')) + (
        password('PGPASSWORD', env='PGPASSWORD'),
        Option('ssl_mode', description='libpq C(sslmode), for example C(require).'),
        CONNECT_TIMEOUT.replace(default=10),
    ) + CONTAINER + (
        Option('format', roles=('dump',), default='custom', choices=FORMATS, description=[
            'C(custom) is C(pg_dump -Fc), restorable in parallel.',
            'C(plain) is SQL text, the seed scripts\' C(.sql.gz) when used with O(compression=gzip).']),
        Option('schemas', 'list', elements='str', roles=('dump',), description='Dump only these schemas.'),
        Option('exclude_tables', 'list', elements='str', roles=('dump',),
               description='Leave out these tables, C(pg_dump --exclude-table) patterns.'),
        Option('maintenance_db', roles=('restore',), ignored_by=('dump',), default='postgres',
               description='Database to connect to for CREATE/ALTER/DROP DATABASE.'),
        Option('jobs', 'int', roles=('restore',), ignored_by=('dump',), default_text='the CPU count, at most 4',
               description=[
                   'Parallel C(pg_restore) jobs for custom-format dumps.',
                   'With more than one job the artifact is first downloaded, verified and decompressed into '
                   'O(work_dir) (C(pg_restore -j) needs a seekable file). With C(1) it streams instead - download, '
                   'verification, decompression and loading overlap, no work file is needed, and the checksum is '
                   'still proven before the restored database is swapped into place.']),
        Option('owner', roles=('restore',), description='Owner of the restored database.'),
        Option('no_owner', 'bool', roles=('restore',), default=False,
               description='Restore without the dump\'s ownership and privileges (roles missing on the target).'),
        Option('terminate_connections', 'bool', roles=('restore',), default=False,
               description='With O(.mode=replace), end sessions on the old database so it can be swapped.'),
    )

    def __init__(self, options, log):
        super(PostgresqlSource, self).__init__(options, log)
        # ['all'] or names: the whole cluster (roles and those databases) in one backup
        self._database_or_databases('all, or a list: roles plus those databases')
        # in a container the tools reach the server on its own socket unless told otherwise
        self.host = self.options.get('host', None if self.in_container() else '127.0.0.1')
        self.port = int(self.options.get('port', 5432))
        self.user = self.options.get('user', 'postgres')
        self.format = self.options.get('format', 'custom')
        if self.format not in FORMATS:
            raise ConfigError('PostgreSQL format %r is not known' % self.format, 'use custom or plain')
        self.jobs = int(self.options.get('jobs') or min(4, os.cpu_count() or 1))

    def describe(self):
        if self.databases:
            return 'PostgreSQL cluster (databases %s) on %s' % (', '.join(self.databases), self._where())
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
        if self.databases:
            return 'tar', CLUSTER_FORMAT
        return FORMATS[self.format], self.format

    def probe(self):
        if self.databases:
            return self._probe_cluster()
        row = self._psql(_FACTS_SQL, self.database, 'connecting')[0]
        facts = {'type': self.type, 'database': self.database, 'format': self.format}
        facts.update(self._server_facts(row))
        facts.update(_database_facts(row))
        return facts

    def _server_facts(self, row):
        rc, out, dummy = commands.run(self._argv([self.tool('pg_dump', 'to dump PostgreSQL'), '--version']),
                                      self.log)
        tool_version = _version(out) if rc == 0 else None
        check_tool_version('pg_dump', tool_version, int(row[1]), row[0], self._where())
        return {'host': self.host, 'port': self.port, 'user': self.user,
                'server_version': row[0], 'server_version_num': int(row[1]),
                'server_major': '.'.join(str(p) for p in major(int(row[1]))),
                'tool': 'pg_dump', 'tool_version': tool_version}

    def _probe_cluster(self):
        maintenance = self._maintenance_db()
        if self.databases == ['all']:
            names = [r[0] for r in self._psql('SELECT datname FROM pg_database WHERE datallowconn AND NOT '
                                              'datistemplate AND datname <> %s ORDER BY 1' % quote_literal(maintenance),
                                              maintenance, 'listing the databases')]
        else:
            names = self.databases
        databases = []
        for index, name in enumerate(names):
            row = self._psql(_FACTS_SQL, name, 'connecting')[0]
            databases.append(dict(_database_facts(row), name=name, member='databases/%04d.dump' % index))
        row = row if names else self._psql(_FACTS_SQL, maintenance, 'connecting')[0]
        facts = {'type': self.type, 'format': CLUSTER_FORMAT, 'databases': databases,
                 'database_size': sum(d['database_size'] for d in databases)}
        facts.update(self._server_facts(row))
        self._cluster = facts
        return facts

    def _counted(self):
        """Row counts prove a whole database; a partial dump (schemas, exclude_tables) has none."""
        return not (self.options.get('schemas') or self.options.get('exclude_tables'))

    @contextlib.contextmanager
    def dump(self):
        self._counts = None
        if self.databases:
            reader, thread, failed = self._start_cluster_dump()
            try:
                yield reader
            finally:
                reader.close()  # a consumer that stopped early makes the producer fail fast
                thread.join()
            if failed:
                raise failed[0]
            return
        with self._snapshot(self.database) as session:
            # counted while pg_dump runs, in the same snapshot: the second read of every table
            # overlaps the dump (PostgreSQL's synchronized scans let both share one pass over a
            # large table) instead of adding its time after it
            pool = ThreadPoolExecutor(max_workers=1)
            counting = None
            try:
                with self._pg_dump(self.database, session.snapshot, self.format) as proc:
                    counting = pool.submit(session.counts) if self._counted() else None
                    yield proc.stdout
                    self._dumped(proc, self.database)
            except BaseException:
                if counting is not None:
                    session.proc.kill()  # the dump failed: stop counting now, not after every table
                raise
            finally:
                pool.shutdown(wait=True)
            if counting is not None:
                self._counts = counting.result()

    def dump_facts(self):
        if self.databases:
            tables = {}
            for database in self._cluster['databases']:
                for table, rows in database['counts']['tables'].items():
                    tables['%s.%s' % (database['name'], table)] = rows
            return {'databases': self._cluster['databases'], 'counts': {'tables': tables}}
        return {'counts': {'tables': self._counts}} if self._counts is not None else {}

    def _pg_dump(self, database, snapshot, fmt):
        """pg_dump of ``database`` as it was in ``snapshot``: the running process, whose
        output is read and then checked with ``_dumped``."""
        argv = [self.tool('pg_dump', 'to dump PostgreSQL')] + self._conn_args()
        argv += ['--format=%s' % fmt, '--snapshot=%s' % snapshot]
        if fmt == 'custom':
            argv += ['--compress=0']  # the pipeline compresses, faster
        for schema in self.options.get('schemas') or []:
            argv += ['--schema', schema]
        for table in self.options.get('exclude_tables') or []:
            argv += ['--exclude-table', table]
        argv.append(database)
        return commands.streaming(self._argv(argv), self.log, env=self._env())

    def _dumped(self, proc, database):
        """Raise if pg_dump failed: a truncated dump never passes for a complete one."""
        rc = proc.wait()
        if commands.killed_by(rc):
            raise SourceError('pg_dump of database %s on %s was killed by signal %s'
                              % (database, self._where(), commands.killed_by(rc)),
                              'the partial dump was discarded; find out what killed it (out-of-memory '
                              'killer, an operator, a timeout) and run it again')
        if rc != 0:
            self._fail('pg_dump', commands.stderr_tail(proc), database)

    def _start_cluster_dump(self):
        """A tar stream, written by a thread as it goes: globals.sql, then one custom-format dump
        per database (each in its own snapshot, with its row counts), then cluster.json.

        A tar member's size comes before its bytes, and pg_dump's output size is unknown: each
        database is spooled to an unlinked 0600 file in the backup's directory first, so the
        disk needs room for the largest database once more, memory stays bounded."""
        read_fd, write_fd = os.pipe()
        reader, writer = os.fdopen(read_fd, 'rb'), os.fdopen(write_fd, 'wb')
        failed = []

        def produce():
            try:
                with tarfile.open(fileobj=writer, mode='w|', format=tarfile.PAX_FORMAT) as tar:
                    self._add_member(tar, 'globals.sql', self._pg_dumpall_globals())
                    for database in self._cluster['databases']:
                        with self._snapshot(database['name']) as session:
                            with tempfile.TemporaryFile(dir=self.work_dir, prefix='.offsite-spool-') as spool:
                                with self._pg_dump(database['name'], session.snapshot, 'custom') as proc:
                                    copy(proc.stdout, spool)
                                    self._dumped(proc, database['name'])
                                database['counts'] = {'tables': session.counts()}
                                _add_file(tar, database['member'], spool)
                    summary = json.dumps({'databases': self._cluster['databases']}, indent=1, sort_keys=True)
                    self._add_member(tar, 'cluster.json', io.BytesIO(summary.encode('utf-8')))
            except BaseException as exc:
                failed.append(exc)
            finally:
                try:
                    writer.close()
                except OSError:
                    pass  # the reader went away first: its side reports why

        thread = threading.Thread(target=produce, name='pg-cluster-dump')
        thread.daemon = True
        thread.start()
        return reader, thread, failed

    def _add_member(self, tar, name, producer):
        with tempfile.TemporaryFile(dir=self.work_dir, prefix='.offsite-spool-') as spool:
            with producer as stream:
                copy(stream, spool)
            _add_file(tar, name, spool)

    @contextlib.contextmanager
    def _pg_dumpall_globals(self):
        """Roles (with their password hashes: the artifact is a secret) and tablespaces."""
        argv = [self.tool('pg_dumpall', 'to dump PostgreSQL roles')] + self._conn_args()
        argv += ['--globals-only', '-l', self._maintenance_db()]
        with commands.streaming(self._argv(argv), self.log, env=self._env()) as proc:
            yield proc.stdout
            rc = proc.wait()
            if rc != 0:
                self._fail('pg_dumpall --globals-only', commands.stderr_tail(proc) or 'exit status %s' % rc)

    @contextlib.contextmanager
    def _snapshot(self, database):
        """A psql session holding a REPEATABLE READ transaction and its exported snapshot:
        pg_dump --snapshot dumps exactly what this session sees, so counts taken here match
        the dump row for row whatever writes happen meanwhile."""
        argv = [self.tool('psql', 'to talk to PostgreSQL'), '-X', '-A', '-t', '-q', '-F', '\t',
                '-v', 'ON_ERROR_STOP=1'] + self._conn_args() + ['-d', database]
        with commands.streaming(self._argv(argv, stdin=True), self.log, env=self._env(),
                                stdin=subprocess.PIPE) as proc:
            session = _Session(self, proc, database)
            session.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY')
            session.snapshot = session.query('SELECT pg_export_snapshot()')[0][0]
            yield session  # closing psql's stdin ends the (read-only) transaction

    def _count_rows(self, database):
        return dict((name, int(rows)) for name, rows in self._psql(_COUNT_SQL, database, 'counting rows'))

    # -- restore side --------------------------------------------------------------------
    def _maintenance_db(self):
        return self.options.get('maintenance_db', 'postgres')

    def _exists(self, name):
        rows = self._psql('SELECT 1 FROM pg_database WHERE datname = %s' % quote_literal(name),
                          self._maintenance_db(), 'connecting')
        return bool(rows)

    def check_target(self, mode):
        check_mode(mode)
        if self.databases:
            named = [] if self.databases == ['all'] else self.databases
            self._psql('SELECT 1', self._maintenance_db(), 'connecting')
            existing = [name for name in named if self._exists(name)]
            if existing and mode == 'create':
                raise TargetError('database(s) %s already exist on %s and mode is create'
                                  % (', '.join(existing), self._where()),
                                  'use mode: replace to swap each for the backup\'s copy')
            for name in existing:
                PostgresqlSource(dict(self.options, database=name, databases=None), self.log)._refuse_busy_early()
            return {'exists': bool(existing)}
        exists = self._exists(self.database)
        if exists and mode == 'create':
            raise TargetError('database %s already exists on %s and mode is create'
                              % (self.database, self._where()),
                              'use mode: replace to swap it for the backup, or restore under another name')
        if exists:
            self._refuse_busy_early()
        return {'exists': exists}

    def _refuse_busy_early(self):
        """replace: a database in use fails now, before anything is downloaded (checked again at
        the swap); with terminate_connections its sessions are ended at the swap instead."""
        if not self.options.get('terminate_connections'):
            self._refuse_busy()

    def streams(self):
        """One loader reading a pipe (psql, or pg_restore with one job) can take the artifact
        as it downloads; ``pg_restore -j`` needs a seekable file. In a container the loader
        reads stdin anyway (this node's files are not there)."""
        if self.databases:
            return False  # every database is loaded and proven before any is swapped: needs the file
        return self.jobs == 1 or self.in_container()

    def restore(self, path, manifest, mode):
        """Restore from a verified, decompressed work file."""
        cluster = manifest.get('format') == CLUSTER_FORMAT
        if cluster != bool(self.databases):
            raise ConfigError('backup %s holds %s; the target needs %s'
                              % (manifest.get('id'), 'a whole cluster' if cluster else 'one database',
                                 'databases (all, or some of its databases)' if cluster else 'database'))
        if cluster:
            return self._restore_cluster(path, manifest, mode)
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

    def _restore_cluster(self, path, manifest, mode):
        """Roles first, then every database into its scratch database (``jobs`` at a time,
        each proven by its row counts), and only when all of them are ready, the swaps."""
        check_mode(mode)
        databases = manifest['source']['databases']
        if self.databases != ['all']:
            missing = sorted(set(self.databases) - set(d['name'] for d in databases))
            if missing:
                raise NotFoundError('backup %s holds no database %s' % (manifest.get('id'), ', '.join(missing)),
                                    'it holds: %s' % ', '.join(d['name'] for d in databases))
            databases = [d for d in databases if d['name'] in self.databases]
        targets = [(d, PostgresqlSource(dict(self.options, database=d['name'], databases=None, jobs=1), self.log))
                   for d in databases]
        existing = [d['name'] for d, target in targets if target._exists(d['name'])]
        if existing and mode == 'create':
            raise TargetError('database(s) %s already exist on %s and mode is create' % (', '.join(existing), self._where()),
                              'use mode: replace to swap each for the backup\'s copy; nothing was changed')
        with tarfile.open(path, 'r:') as archive:
            members = dict((m.name, m) for m in archive.getmembers())
            roles = self._restore_globals(archive.extractfile(members['globals.sql']).read().decode('utf-8'))
        prepared = []
        try:
            with ThreadPoolExecutor(max_workers=max(1, self.jobs)) as pool:
                futures = [pool.submit(self._prepare_member, target, facts, path, members[facts['member']], prepared)
                           for facts, target in targets]
                for future in futures:
                    future.result()
            if not self.options.get('terminate_connections'):
                for target, scratch, dummy in prepared:
                    target._refuse_busy()
            results = [dict(target._swap(scratch, mode), **verified) for target, scratch, verified in prepared]
        except BaseException:
            for target, scratch, dummy in prepared:
                target._drop(scratch)  # (a swapped one is no longer under that name: untouched)
            raise
        return {'databases': results, 'roles': roles}

    def _prepare_member(self, target, facts, path, member, prepared):
        def load(scratch):
            with open(path, 'rb') as handle:
                handle.seek(member.offset_data)
                target._load('custom', scratch, stream=_BoundedReader(handle, member.size))
        scratch, verified = target._prepare(facts, load)
        prepared.append((target, scratch, verified))

    def _restore_globals(self, text):
        """Run pg_dumpall's globals: roles that exist are kept (never dropped) and get the
        backup's attributes; the role we connect as is left alone; existing tablespaces too.
        Fed on stdin with terse errors: it holds password hashes."""
        maintenance = self._maintenance_db()
        tablespaces = set(r[0] for r in self._psql('SELECT spcname FROM pg_tablespace', maintenance, 'connecting'))
        statements, roles = globals_script(text, self.user, tablespaces)
        argv = [self.tool('psql', 'to restore roles'), '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-v', 'VERBOSITY=terse']
        argv += self._conn_args() + ['-d', maintenance, '-f', '-']
        with commands.streaming(self._argv(argv, stdin=True), self.log, env=self._env(), stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL) as proc:
            try:
                proc.stdin.write(statements.encode('utf-8'))
                proc.stdin.close()
            except BrokenPipeError:
                pass
            rc = proc.wait()
            if rc != 0:
                raise TargetError('restoring roles and tablespaces failed: %s'
                                  % (commands.stderr_tail(proc)[-1000:] or 'exit status %d' % rc),
                                  'no database was changed')
        return roles

    def _refuse_busy(self):
        busy = self._psql('SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()'
                          % quote_literal(self.database), self._maintenance_db(), 'checking sessions')
        if busy:
            raise TargetError('database %s has %d open session(s); it cannot be swapped while in use'
                              % (self.database, len(busy)),
                              'stop the application first, or set terminate_connections: true; nothing was swapped')

    def _via_scratch(self, manifest, mode, load):
        check_mode(mode)
        scratch, verified = self._prepare(manifest.get('source') or {}, load)
        try:
            return dict(self._swap(scratch, mode), **verified)
        except BaseException:
            self._drop(scratch)
            raise

    def _prepare(self, source_facts, load):
        """Create a scratch database, load it, prove it; returns (its name, what was verified).
        Dropped again on any failure."""
        scratch = scratch_name(self.database, 'restore')
        create = 'CREATE DATABASE %s TEMPLATE template0' % quote_ident(scratch)
        if source_facts.get('encoding'):
            create += ' ENCODING %s' % quote_literal(source_facts['encoding'])
            create += ' LC_COLLATE %s LC_CTYPE %s' % (quote_literal(source_facts['collate']),
                                                      quote_literal(source_facts['ctype']))
        if self.options.get('owner'):
            create += ' OWNER %s' % quote_ident(self.options['owner'])
        self._psql(create, self._maintenance_db(), 'creating the scratch database %s' % scratch)
        try:
            # its owner, so that a later run can tell a killed restore's database from a live one's
            self._psql('COMMENT ON DATABASE %s IS %s' % (quote_ident(scratch), quote_literal(leases.comment())),
                       self._maintenance_db(), 'marking the scratch database %s' % scratch)
            load(scratch)
            return scratch, self._finish_scratch(scratch, source_facts)
        except BaseException:
            self._drop(scratch)
            raise

    def _finish_scratch(self, scratch, facts):
        """Before the swap: prove the rows against the manifest, then give the scratch
        database what pg_dump leaves out without --create (settings, owner)."""
        result = {}
        expected = (facts.get('counts') or {}).get('tables')
        if expected is not None:
            compare_counts(expected, self._count_rows(scratch), 'database %s' % self.database)
            result['verified_tables'] = len(expected)
        maintenance = self._maintenance_db()
        for entry in facts.get('settings') or []:
            self._psql(setting_statement(scratch, entry), maintenance, 'restoring the database setting %s'
                       % entry.split('=', 1)[0])
        owner = facts.get('owner')
        if owner and not self.options.get('owner') and not self.options.get('no_owner') \
                and self._psql('SELECT 1 FROM pg_roles WHERE rolname = %s' % quote_literal(owner),
                               maintenance, 'looking up the owner'):
            self._psql('ALTER DATABASE %s OWNER TO %s' % (quote_ident(scratch), quote_ident(owner)), maintenance,
                       'giving the restored database to its owner %s' % owner)
        return result

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
                commands.feed(proc, chunks(stream))
            rc = proc.wait()
            if rc != 0:
                raise TargetError('%s into the scratch database failed: %s'
                                  % (tool, commands.stderr_tail(proc)[-1500:] or 'exit status %d' % rc),
                                  'the target database %s was not touched' % self.database)

    def _swap(self, scratch, mode):
        lifeline.check()
        maintenance = self._maintenance_db()
        target = quote_ident(self.database)
        # the scratch database's owner mark goes in the same transaction as the rename: the
        # restored database never carries it
        unmark = 'COMMENT ON DATABASE %s IS NULL' % target
        if not self._exists(self.database):
            self._psql('ALTER DATABASE %s RENAME TO %s; %s' % (quote_ident(scratch), target, unmark), maintenance,
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
        previous = scratch_name(self.database, 'previous')
        if busy:
            self._psql('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s '
                       'AND pid <> pg_backend_pid()' % quote_literal(self.database), maintenance,
                       'terminating sessions')
        # both renames in one transaction: the target is either the old or the new database. A
        # previous database that is to be dropped carries this run's lease from the same moment,
        # so that a run killed before the drop leaves one the next sweep removes.
        if not self.options.get('keep_previous'):
            unmark += '; COMMENT ON DATABASE %s IS %s' % (quote_ident(previous), quote_literal(leases.comment()))
        self._psql('ALTER DATABASE %s RENAME TO %s; ALTER DATABASE %s RENAME TO %s; %s'
                   % (target, quote_ident(previous), quote_ident(scratch), target, unmark),
                   maintenance, 'swapping the restored database into place')
        if self.options.get('keep_previous'):
            return {'database': self.database, 'replaced': True, 'previous': previous}
        self._drop(previous)
        return {'database': self.database, 'replaced': True}

    # -- drill side ----------------------------------------------------------------------
    def scratch_target(self, token, scratch_root):
        if self.databases:
            raise ConfigError('offsite-backup drill restores one database per set, not a whole cluster',
                              'drill clusters with playbooks/dr_drill.yml')
        keep = ('host', 'port', 'user', 'password', 'ssl_mode', 'connect_timeout', 'maintenance_db', 'container',
                'compose_project', 'compose_file')
        options = dict((k, v) for k, v in self.options.items() if k in keep)
        return dict(options, type=self.type, database=scratch_name(self.database, 'drill', token))

    def answer(self, sql):
        rows = self._psql(sql, self.database, 'running a verification query')
        return rows[0][0] if rows and rows[0] else ''

    def drop(self):
        self._drop(self.database)

    def sweep_scratch(self, sweep):
        """Scratch databases of killed restores: of this database, or any on the server for a
        cluster target. Their comment names the owner; only provably dead owners' are dropped."""
        rows = self._psql("SELECT datname, coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database "
                          'WHERE datname ~ %s' % quote_literal(self.scratch_pattern()), self._maintenance_db(),
                          'looking for scratch databases of killed restores')
        return self.judge_databases(sweep, rows, self._where(), lambda name: self._psql(
            'DROP DATABASE IF EXISTS %s WITH (FORCE)' % quote_ident(name), self._maintenance_db(), 'dropping %s' % name))

    def _drop(self, name):
        try:
            self._psql('DROP DATABASE IF EXISTS %s WITH (FORCE)' % quote_ident(name), self._maintenance_db(),
                       'dropping %s' % name)
        except Exception:
            pass  # best effort: the original error matters more


def _database_facts(row):
    """A _FACTS_SQL row: what restoring the database needs besides its dump."""
    return {'database_size': int(row[2]), 'encoding': row[3], 'collate': row[4], 'ctype': row[5],
            'owner': row[6], 'settings': json.loads(row[7]) if len(row) > 7 and row[7] else []}


_IDENT = r'("(?:[^"]|"")+"|[^\s;"]+)'


def _unquote(ident):
    return ident[1:-1].replace('""', '"') if ident.startswith('"') else ident


def globals_script(text, connected_as, tablespaces):
    """pg_dumpall --globals-only made safe to replay on a live server; returns (SQL, roles).
    CREATE ROLE of an existing role is skipped (its ALTER ROLE still applies the backup's
    attributes and password); statements about ``connected_as`` are dropped (restoring must
    not change the restoring role's password); existing tablespaces are not created again."""
    lines, roles = [], []
    for line in text.splitlines():
        role = re.match(r'(CREATE|ALTER) ROLE %s' % _IDENT, line)
        if role:
            name = _unquote(role.group(2))
            if name == connected_as:
                continue
            if role.group(1) == 'CREATE':
                roles.append(name)
                line = 'DO $offsite$ BEGIN %s EXCEPTION WHEN duplicate_object THEN NULL; END $offsite$;' % line
        space = re.match(r'CREATE TABLESPACE %s' % _IDENT, line)
        if space and _unquote(space.group(1)) in tablespaces:
            continue
        lines.append(line)
    return '\n'.join(lines) + '\n', roles


def _add_file(tar, name, spool):
    info = tarfile.TarInfo(name)
    info.size = spool.tell()
    info.mode = 0o600
    info.mtime = int(time.time())
    spool.seek(0)
    tar.addfile(info, spool)


class _BoundedReader(object):
    """The ``size`` bytes of one tar member, read from its own handle (one per thread)."""

    def __init__(self, handle, size):
        self.handle, self.left = handle, size

    def read(self, size=-1):
        size = self.left if size < 0 else min(size, self.left)
        data = self.handle.read(size) if size else b''
        self.left -= len(data)
        return data


class _Session(object):
    """One interactive psql: statements in, tab-separated rows out, each answer ended by a
    marker line. psql stops at the first error (ON_ERROR_STOP), which ends its output."""

    def __init__(self, source, proc, database):
        self.source, self.proc, self.database = source, proc, database
        self.snapshot = None

    def query(self, sql):
        try:
            self.proc.stdin.write(('%s;\n\\echo %s\n' % (sql, _SESSION_MARK)).encode('utf-8'))
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # psql ended: its output ends too, and its error is read below
        rows = []
        for line in iter(self.proc.stdout.readline, b''):
            text = line.decode('utf-8').rstrip('\n')
            if text == _SESSION_MARK:
                return rows
            if text:
                rows.append(text.split('\t'))
        self.proc.wait()
        self.source._fail('holding the dump snapshot', commands.stderr_tail(self.proc), self.database)

    def counts(self):
        return dict((name, int(rows)) for name, rows in self.query(_COUNT_SQL))
