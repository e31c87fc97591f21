# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A whole PostgreSQL cluster in one backup (``databases: [all]`` or a list of names): the
cluster mode of PostgresqlSource.

The artifact is a tar: globals.sql (roles and tablespaces, ``pg_dumpall --globals-only``), one
custom-format dump per database (``databases/NNNN.dump``, each in its own snapshot with its
row counts), cluster.json. A restore splits every database out of the tar into a seekable file
with its data offsets (pgcustom), replays the roles, loads every database into its own scratch
database (one ``jobs`` budget for databases and tables: ``share_jobs``, ``run_within``; each
proven by its row counts) and swaps them in only once all of them are ready; the swap itself
is the single database's.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import contextlib
import errno
import io
import json
import os
import re
import subprocess
import tarfile
import tempfile
import threading
import time

from .. import commands, pgcustom
from ..errors import NotFoundError, TargetError
from ..pipeline import CHUNK, Tapped, copy, free_bytes, remove_quietly
from .base import check_mode
from .postgresql_sql import FACTS_SQL, database_facts, quote_literal

CLUSTER_FORMAT = 'cluster'  # a tar: globals.sql (pg_dumpall --globals-only), databases/NNNN.dump, cluster.json


class ClusterMode(object):
    """The cluster half of PostgresqlSource (mixed in): used when ``self.databases`` is set."""

    @contextlib.contextmanager
    def _dump_cluster(self):
        """The cluster's tar stream, read by the caller; the producer's error once it is read."""
        reader, thread, failed = self._start_cluster_dump()
        try:
            yield reader
        finally:
            reader.close()  # a consumer that stopped early makes the producer fail fast
            thread.join()
        if failed:
            raise failed[0]

    def _cluster_dump_facts(self):
        """Every database's facts and row counts, tables named <database>.<schema>.<table>."""
        tables = {}
        for database in self._cluster['databases']:
            for table, rows in database['counts']['tables'].items():
                tables['%s.%s' % (database['name'], table)] = rows
        return {'databases': self._cluster['databases'], 'counts': {'tables': tables}}

    def _check_cluster_target(self, mode):
        """The named databases that exist: refused in create mode, and when busy (replace)."""
        named = [] if self.databases == ['all'] else self.databases
        self._psql('SELECT 1', self._maintenance_db(), 'connecting')
        existing = [name for name in named if self._exists(name)]
        if existing and mode == 'create':
            raise TargetError('database(s) %s already exist on %s and mode is create'
                              % (', '.join(existing), self._where()),
                              'use mode: replace to swap each for the backup\'s copy')
        for name in existing:
            type(self)(dict(self.options, database=name, databases=None), self.log)._refuse_busy_early()
        return {'exists': bool(existing)}

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
            row = self._psql(FACTS_SQL, name, 'connecting')[0]
            databases.append(dict(database_facts(row), name=name, member='databases/%04d.dump' % index))
        row = row if names else self._psql(FACTS_SQL, maintenance, 'connecting')[0]
        facts = {'type': self.type, 'format': CLUSTER_FORMAT, 'databases': databases,
                 'database_size': sum(d['database_size'] for d in databases)}
        facts.update(self._server_facts(row))
        self._cluster = facts
        return facts

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

    def _restore_cluster(self, path, manifest, mode):
        """Every database split out of the tar into a seekable file with its data offsets
        (``pgcustom``), then roles, then every database into its scratch database, the ``jobs``
        budget shared by databases and tables (``share_jobs``), each proven by its row counts;
        only when all of them are ready, the swaps."""
        check_mode(mode)
        databases = manifest['source']['databases']
        if self.databases != ['all']:
            missing = sorted(set(self.databases) - set(d['name'] for d in databases))
            if missing:
                raise NotFoundError('backup %s holds no database %s' % (manifest.get('id'), ', '.join(missing)),
                                    'it holds: %s' % ', '.join(d['name'] for d in databases))
            databases = [d for d in databases if d['name'] in self.databases]
        existing = [d['name'] for d in databases if self._exists(d['name'])]
        if existing and mode == 'create':
            raise TargetError('database(s) %s already exist on %s and mode is create' % (', '.join(existing), self._where()),
                              'use mode: replace to swap each for the backup\'s copy; nothing was changed')
        with tarfile.open(path, 'r:') as archive:
            members = dict((m.name, m) for m in archive.getmembers())
            globals_sql = archive.extractfile(members['globals.sql']).read().decode('utf-8')
        # a malformed archive fails here, before the roles or any database are touched
        files = split_members(path, [(d['member'], members[d['member']], 'database %s of backup %s'
                                      % (d['name'], manifest.get('id'))) for d in databases])
        roles = self._restore_globals(globals_sql)
        # pg_restore -j needs to seek; in a container the file is fed on stdin: one job each
        sizes = [members[d['member']].size if files[d['member']] and not self.in_container() else 0
                 for d in databases]
        shares = share_jobs(sizes, max(1, self.jobs))
        order = sorted(range(len(databases)), key=lambda i: -members[databases[i]['member']].size)
        prepared = []
        tasks = []
        for i in order:
            facts = databases[i]
            target = type(self)(dict(self.options, database=facts['name'], databases=None, jobs=shares[i]), self.log)
            tasks.append((shares[i], self._preparing(target, facts, path, members[facts['member']],
                                                     files[facts['member']], prepared)))
        try:
            run_within(max(1, self.jobs), tasks)
            if not self.options.get('terminate_connections'):
                for target, scratch, dummy in prepared:
                    target._refuse_busy()
            results = [dict(target._swap(scratch, mode), **verified) for target, scratch, verified in prepared]
        except BaseException:
            for target, scratch, dummy in prepared:
                target._drop(scratch)  # (a swapped one is no longer under that name: untouched)
            raise
        return {'databases': results, 'roles': roles,
                'jobs': dict((databases[i]['name'], shares[i]) for i in order),
                'data_offsets': dict((d['name'], (files[d['member']] or {}).get('data_offsets', 'not split'))
                                     for d in databases)}

    def _preparing(self, target, facts, path, member, split, prepared):
        """The task that loads one database into its scratch database: from its own seekable
        file, or (no room to split it out) from the tar on stdin."""
        def load(scratch):
            if split:
                target._load('custom', scratch, path=split['path'])
                return
            with open(path, 'rb') as handle:
                handle.seek(member.offset_data)
                target._load('custom', scratch, stream=_BoundedReader(handle, member.size))

        def prepare():
            scratch, verified = target._prepare(facts, load)
            prepared.append((target, scratch, verified))
        return prepare

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


def split_members(path, members):
    """Each custom-format dump in the tar at ``path`` into a file of its own beside it, its data
    offsets recorded as it is copied and written into its TOC (pgcustom): the seekable file
    ``pg_restore -j`` needs. ``members``: (name, TarInfo, what to call it in errors).

    Returns {name: {'path', 'data_offsets'}}, or None for a member left in the tar because the
    disk has no room for it (it is then streamed to a one-job pg_restore, as before). The
    members are taken from the end of the tar and the tar is cut behind each, so the disk holds
    the download plus one database at most. A member that does not parse raises IntegrityError
    before anything was restored."""
    directory = os.path.dirname(os.path.abspath(path))
    files = {}
    cut = True  # the tar may still be shortened: nothing behind the member being split is needed
    for number, (name, member, where) in enumerate(sorted(members, key=lambda m: -m[1].offset)):
        if free_bytes(directory) < member.size * 1.05 + CHUNK:
            files[name], cut = None, False
            continue
        target = os.path.join(directory, 'database-%04d.dump' % number)
        recorder = pgcustom.OffsetRecorder(where)
        try:
            with open(path, 'rb') as tar, open(target, 'wb') as out:
                os.fchmod(out.fileno(), 0o600)
                tar.seek(member.offset_data)
                copy(_BoundedReader(tar, member.size), Tapped(out, recorder.feed))
        except OSError as exc:
            remove_quietly(target)
            if exc.errno == errno.ENOSPC:  # the room was taken meanwhile: stream this one
                files[name], cut = None, False
                continue
            raise
        files[name] = dict(recorder.patch(target), path=target)
        if cut:
            os.truncate(path, member.offset)
    return files


def share_jobs(sizes, budget):
    """The pg_restore jobs of each database: its share of the bytes times ``budget``, rounded,
    at least one (size 0: a database that cannot be restored in parallel). ``run_within``
    starts the largest first and never runs more than ``budget`` jobs at once, so a database
    that holds most of the data gets most of the jobs and the small ones share the rest (or
    follow it, when it holds nearly all: one large database with -j 2 beats it with -j 1 next
    to a small one, on two cores)."""
    total = float(sum(sizes))
    return [max(1, min(budget, int(budget * size / total + 0.5))) if total else 1 for size in sizes]


def run_within(budget, tasks):
    """Run ``tasks`` ((jobs, callable) in the order to start them) in threads, never more than
    ``budget`` jobs at once. After the first failure nothing more starts; returns when every
    started task has ended, raising that first failure (or the waiting thread's interruption)."""
    cond = threading.Condition()
    state = {'free': budget, 'failed': []}
    threads = []

    def run(jobs, task):
        try:
            task()
        except BaseException as exc:
            with cond:
                state['failed'].append(exc)
        finally:
            with cond:
                state['free'] += jobs
                cond.notify_all()

    try:
        for jobs, task in tasks:
            jobs = min(jobs, budget)
            with cond:
                while state['free'] < jobs and not state['failed']:
                    cond.wait()
                if state['failed']:
                    break
                state['free'] -= jobs
            thread = threading.Thread(target=run, args=(jobs, task), name='pg-cluster-restore')
            thread.daemon = True
            thread.start()
            threads.append(thread)
    finally:
        for thread in threads:
            thread.join()  # every scratch database a task made is known to the caller's cleanup
    if state['failed']:
        raise state['failed'][0]


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
