# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One PostgreSQL database: ``pg_dump`` out, ``pg_restore``/``psql`` back in.

Custom format is dumped uncompressed (``-Z0``) and compressed by the pipeline: zstd is
about 3x faster than pg_dump's built-in gzip, and custom format lets ``pg_restore -j``
restore in parallel. ``format: plain`` gives the seed scripts' ``.sql.gz``.

The password only ever travels in ``PGPASSWORD``. A restore goes into a scratch database
that is renamed into place only after it fully succeeded; the target is never half
restored.

A whole cluster (``databases``) is postgresql_cluster.py's ClusterMode, mixed in here; the
queries and pure helpers both use are postgresql_sql.py's.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import contextlib
import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor

from .. import commands, lifeline, pgcustom
from ..errors import ConfigError, NotFoundError, SourceError, TargetError
from .. import scratch as leases
from ..pipeline import chunks
from ..schema import Option
from .base import (CONNECT_TIMEOUT, CONTAINER, FollowingRestore, Source, StreamingRestore, check_mode, database_options,
                   password, scratch_name, server)
from .postgresql_cluster import CLUSTER_FORMAT, ClusterMode
from .postgresql_following import FollowingLoad
from .postgresql_sql import (COUNT_SQL, FACTS_SQL, check_tool_version, compare_counts, database_facts, major,
                             parse_version, quote_ident, quote_literal, setting_statement)

FORMATS = {'custom': 'dump', 'plain': 'sql'}
_SESSION_MARK = '__offsite_backup_done__'
# index builds of a restore get at least this much (kB; the server's own setting if larger)
LOAD_MAINTENANCE_WORK_MEM_KB = 256 * 1024
# the swap's transaction commits synchronously whatever the server's default: see _swap
DURABLE_SWAP = 'SET synchronous_commit = on'


def connection_options(user_text):
    """What every PostgreSQL type connects with: host, port, user (``user_text`` says what it
    needs), password (PGPASSWORD), ssl_mode, connect_timeout."""
    return server(5432, 'postgres', user_text) + (
        password('PGPASSWORD', env='PGPASSWORD'),
        Option('ssl_mode', description='libpq C(sslmode), for example C(require).'),
        CONNECT_TIMEOUT.replace(default=10),
    )


class PostgresqlConnection(object):
    """How the PostgreSQL types reach their server (mixed in): libpq's PG* environment (the
    password only ever in PGPASSWORD), psql, and libpq's complaints turned into errors an
    operator can act on. Uses ``host``, ``port``, ``user``, ``database`` and ``options``."""

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

    def _argv(self, argv, stdin=False, env=None):
        """argv as run here: through ``docker exec`` with the PG* variables (of ``env``, else
        ``_env()``) by name when in a container."""
        return self.exec_argv(argv, env_names=sorted(env or self._env()), stdin=stdin)

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


class PostgresqlSource(ClusterMode, PostgresqlConnection, StreamingRestore, FollowingRestore, Source):
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
        'database is split out of the artifact into a seekable file in the restore\'s work_dir, loaded into a scratch '
        'database and proven by its row counts; the databases and their tables share C(jobs) (a database gets '
        'C(pg_restore -j) in proportion to its size, the largest start first). Only when all are ready are '
        'they swapped in. C(mode=create) fails if any of them exists; '
        'C(mode=replace) swaps each.']) + tuple(
        o.replace(default=None, default_text='C(127.0.0.1) (with O(.container), the container\'s own socket)')
        if o.name == 'host' else o
        for o in connection_options('User to connect as; a restore needs CREATEDB.')) + CONTAINER + (
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
                   'With more than one job the artifact is downloaded, verified and decompressed into O(work_dir) '
                   '(C(pg_restore -j) needs a seekable file), and loading follows that file as it is written: the '
                   'schema once the table of contents is in, each table\'s data as it arrives (up to this many '
                   'loaders), indexes and constraints with C(pg_restore -j) once the checksum is proven. With C(1) '
                   'it streams instead through one loader, and no work file is needed. Either way the checksum and '
                   'the row counts are proven before the restored database is swapped into place.']),
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

    # -- backup side ---------------------------------------------------------------------
    def artifact(self):
        if self.databases:
            return 'tar', CLUSTER_FORMAT
        return FORMATS[self.format], self.format

    def probe(self):
        if self.databases:
            return self._probe_cluster()
        row = self._psql(FACTS_SQL, self.database, 'connecting')[0]
        facts = {'type': self.type, 'database': self.database, 'format': self.format}
        facts.update(self._server_facts(row))
        facts.update(database_facts(row))
        return facts

    def _server_facts(self, row):
        rc, out, dummy = commands.run(self._argv([self.tool('pg_dump', 'to dump PostgreSQL'), '--version']),
                                      self.log)
        tool_version = parse_version(out) if rc == 0 else None
        check_tool_version('pg_dump', tool_version, int(row[1]), row[0], self._where())
        return {'host': self.host, 'port': self.port, 'user': self.user,
                'server_version': row[0], 'server_version_num': int(row[1]),
                'server_major': '.'.join(str(p) for p in major(int(row[1]))),
                'tool': 'pg_dump', 'tool_version': tool_version}

    def _counted(self):
        """Row counts prove a whole database; a partial dump (schemas, exclude_tables) has none."""
        return not (self.options.get('schemas') or self.options.get('exclude_tables'))

    @contextlib.contextmanager
    def dump(self):
        self._counts = None
        if self.databases:
            with self._dump_cluster() as reader:
                yield reader
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
            return self._cluster_dump_facts()
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
        return commands.streaming(self._argv(self.block_buffered(argv)), self.log, env=self._env())

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
        return dict((name, int(rows)) for name, rows in self._psql(COUNT_SQL, database, 'counting rows'))

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
            return self._check_cluster_target(mode)
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

    def follows(self, manifest):
        """One database from a custom-format archive: loaded as its work file arrives."""
        return not self.databases and pgcustom.recorder_for(manifest) is not None

    def restore_following(self, path, fetch, manifest, mode, where, layout=None):
        """Load the archive while ``fetch`` writes it into ``path`` (postgresql_following.py);
        swapped in once the checksum and the row counts are proven."""
        recorder = pgcustom.OffsetRecorder(where)
        offsets = {}

        def load(scratch):
            follow = FollowingLoad(self, scratch, path, recorder, self.jobs, layout)
            try:
                follow.start()
                fetch(follow)
                offsets.update(follow.finish())
            finally:
                follow.stop()
        details = self._via_scratch(manifest, mode, load)
        return dict(details, data_offsets=offsets)

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
            argv = self._pg_restore(database, (['-j', str(self.jobs), path] if self.jobs > 1 else [path])
                                    if path else [])
            tool = 'pg_restore'
        env = self.load_env()
        if stream:
            argv = self.block_buffered(argv, stdin=True)
        with commands.streaming(self._argv(argv, stdin=bool(stream), env=env), self.log, env=env,
                                stdin=subprocess.PIPE if stream else None, stdout=subprocess.DEVNULL) as proc:
            if stream:
                commands.feed(proc, chunks(stream))
            rc = proc.wait()
            if rc != 0:
                raise TargetError('%s into the scratch database failed: %s'
                                  % (tool, commands.stderr_tail(proc)[-1500:] or 'exit status %d' % rc),
                                  'the target database %s was not touched' % self.database)

    def _pg_restore(self, database, extra):
        argv = [self.tool('pg_restore', 'to restore PostgreSQL dumps'), '--exit-on-error']
        argv += self._conn_args() + ['-d', database]
        if self.options.get('no_owner'):
            argv += ['--no-owner', '--no-privileges']
        return argv + extra

    def load_argv(self, database, extra, env, stdin=False):
        """``pg_restore`` into ``database`` with ``extra`` arguments (the archive last, or
        ``stdin``: none, it reads a pipe), as run."""
        argv = self._pg_restore(database, extra)
        return self._argv(self.block_buffered(argv, stdin=True) if stdin else argv, stdin=stdin, env=env)

    def load_env(self):
        """The loaders' environment: their sessions' own settings (PGOPTIONS). Commits do not
        wait for the WAL flush (synchronous_commit off): a crash loses at most the scratch
        database's last commits, which nothing trusts before the checksum and the row counts are
        proven, and the swap commits synchronously (``_swap``), which flushes all WAL written
        before it. Index builds get more memory (maintenance_work_mem), never less than the
        server's setting.

        For a superuser (the setting is theirs only), new WAL files are not filled with zeros
        first (wal_init_zero off, PostgreSQL 12 on). A cluster that never wrote much WAL, as the
        new one of a DR rebuild, has none to recycle: a restore creates ~1 GB of WAL files per
        GB of data, and zero-filling each doubled those writes, with the loaders waiting on
        ``IO:WALInitWrite`` (measured: the first restore of the ~1 GB benchmark database into a
        new cluster 7.4-7.7 s with zeros, 6.1-7.2 s without; 5.4-6.3 s once WAL is recycled).
        The WAL is as durable (fdatasync persists the blocks a write allocates). A full disk
        stops the server either way, inside the critical section that writes WAL: at the
        write into the file instead of at its creation."""
        if getattr(self, '_load_env', None) is None:
            rows = self._psql("SELECT greatest(setting::bigint, %d), (SELECT rolsuper FROM pg_roles WHERE rolname = "
                              "current_user) AND EXISTS (SELECT 1 FROM pg_settings WHERE name = 'wal_init_zero') "
                              "FROM pg_settings WHERE name = 'maintenance_work_mem'" % LOAD_MAINTENANCE_WORK_MEM_KB,
                              self._maintenance_db(), "reading the loaders' settings")
            memory = int(rows[0][0]) if rows else LOAD_MAINTENANCE_WORK_MEM_KB
            options = '-c synchronous_commit=off -c maintenance_work_mem=%dkB' % memory
            if rows and rows[0][1:2] == ['t']:
                options += ' -c wal_init_zero=off'
            self._load_env = dict(self._env(), PGOPTIONS=options)
        return self._load_env

    def _swap(self, scratch, mode):
        """Rename the proven scratch database into place (and the old one aside). Durable
        before it is visible: the loaders committed without waiting for the WAL flush
        (``load_env``), and the rename's transaction commits with synchronous_commit on,
        whatever the server's default. A commit flushes the WAL up to its own record, and every
        loader's rows, index builds and commits precede it in the WAL (they all ended before),
        so once the rename is durable the restored database is too: after a crash, recovery
        replays it whole, or the rename was lost and the scratch database is what a later run
        sweeps. The same guarantee as a CHECKPOINT, at the cost of one WAL flush instead of
        writing every dirty page of the restore. (Relations not WAL-logged under
        wal_level=minimal are fsynced by their own commit, whatever synchronous_commit says.)"""
        lifeline.check()
        maintenance = self._maintenance_db()
        target = quote_ident(self.database)
        # the scratch database's owner mark goes in the same transaction as the rename: the
        # restored database never carries it
        unmark = 'COMMENT ON DATABASE %s IS NULL' % target
        if not self._exists(self.database):
            self._psql('%s; ALTER DATABASE %s RENAME TO %s; %s' % (DURABLE_SWAP, quote_ident(scratch), target, unmark),
                       maintenance,
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
        self._psql('%s; ALTER DATABASE %s RENAME TO %s; ALTER DATABASE %s RENAME TO %s; %s'
                   % (DURABLE_SWAP, target, quote_ident(previous), quote_ident(scratch), target, unmark),
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
        return dict((name, int(rows)) for name, rows in self.query(COUNT_SQL))
