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

A restore is point-in-time recovery into an empty or absent data directory: the artifact is
extracted as it downloads into a scratch directory inside it and moved into place only once
its sha256 (and the identity in its pg_control) is proven; then recovery.signal and the
recovery settings (``restore_command`` = ``offsite-backup wal-fetch`` with a job file of the
set's repositories), a server of the backup's major version on a private socket, replay to the
target, promotion, and a restart on the port with the cluster's own settings. Any failure
stops the server and removes what the restore wrote.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import contextlib
import json
import os
import pwd
import re
import shlex
import shutil
import socket
import tarfile
import tempfile
import time

from .. import commands, lifeline, walspool, warden
from .. import scratch as leases
from .. import manifest as mf
from ..errors import ConfigError, DependencyError, IntegrityError, NotFoundError, SourceError, TargetError
from ..schema import Option
from .base import ReplaysArchive, Source, StreamingRestore
from .postgresql import PostgresqlConnection, connection_options
from .postgresql_sql import major, parse_version

FORMAT = 'basebackup'  # a pg_basebackup tar (base.tar with pg_wal and backup_manifest)
CHECKPOINTS = ('fast', 'spread')
RECOVERY_TARGETS = ('latest', 'immediate')
ACTIONS = ('promote', 'pause', 'shutdown')
# inside the data directory while a restore writes it: whose it is (scratch.lease), and whether the
# restore created the directory; a killed restore's is found by sweep_scratch
LEASE_FILE = '.offsite-restore.owner'
# the recovery's run directory (socket, job file, log) in TMPDIR: a scratch work directory
RUN_DIR_PREFIX = 'offsite-restore-pitr-'
FACTS_SQL = ("SELECT current_setting('server_version'), current_setting('server_version_num'), "
             "(SELECT coalesce(sum(pg_database_size(oid)), 0) FROM pg_database WHERE datallowconn), "
             "(SELECT coalesce(string_agg(spcname, ',' ORDER BY spcname), '') FROM pg_tablespace "
             "WHERE spcname NOT IN ('pg_default', 'pg_global'))")
_UNITS = {'B': 1, 'kB': 1024, 'MB': 1024 ** 2, 'GB': 1024 ** 3, 'TB': 1024 ** 4}


def runuser():
    """util-linux's runuser: in /usr/sbin, which cron's PATH (/usr/bin:/bin) lacks."""
    return shutil.which('runuser') or shutil.which('runuser', path='/usr/sbin:/sbin') or 'runuser'


class PostgresqlPhysicalSource(PostgresqlConnection, ReplaysArchive, StreamingRestore, Source):
    type = 'postgresql_physical'
    DESCRIPTION = ('C(postgresql_physical) for a whole PostgreSQL cluster as a base backup (C(pg_basebackup)), '
                   'the start of point-in-time recovery: see docs/pitr.md.',)
    OPTIONS = tuple(
        o.replace(roles=('dump',)) if o.name in ('host', 'ssl_mode') else o.replace(description=[
            'Server port; for a restore, the port the restored server listens on.']) if o.name == 'port' else o
        for o in connection_options('User to connect as; it needs the C(REPLICATION) attribute (and a '
                                    'C(replication) line in C(pg_hba.conf)).')) + (
        Option('maintenance_db', roles=('dump',), default='postgres',
               description='Database the facts of the cluster (version, size, tablespaces) are read in.'),
        Option('checkpoint', roles=('dump',), default='fast', choices=CHECKPOINTS, description=[
            'C(pg_basebackup --checkpoint): C(fast) starts the backup at once with an immediate checkpoint; '
            'C(spread) waits for a checkpoint spread over C(checkpoint_completion_target) (minutes on a '
            'default server), gentler on a busy disk.']),
        Option('data_directory', 'path', roles=('restore',), description=[
            'Data directory to restore into: absent or empty (O(.mode=create) only). It is created 0700, owned by '
            'O(.os_user) when the restore runs as root.']),
        Option('recovery_target_time', roles=('restore',), description=[
            'Recover to this moment (ISO-8601, e.g. C(2026-12-06T14:32:00Z)): the newest base backup that ended at '
            'or before it is restored and the archived WAL replayed up to it; transactions committed after it are '
            'not. Excludes O(.recovery_target).']),
        Option('recovery_target', roles=('restore',), choices=RECOVERY_TARGETS, description=[
            'Without O(.recovery_target_time): C(latest) replays all archived WAL (the default); C(immediate) '
            'stops as soon as the base backup is consistent (no WAL archive needed).']),
        Option('recovery_target_action', roles=('restore',), default='promote', choices=ACTIONS, description=[
            'What happens at the target. C(promote): recovery ends there and the server is restarted with its own '
            'settings on O(.port), a primary on a new timeline (result C(state=running)).',
            'C(pause): the server is left running in recovery, paused at the target, read-only, on O(.port) but '
            'only on the private socket directory the result names (C(state=paused), C(socket_directory)); '
            'inspect the data, then C(SELECT pg_wal_replay_resume()) ends recovery there, or stop it and restore '
            'again. It fetches no more WAL and no secret stays on disk. Needs O(.recovery_target_time) or '
            'O(.recovery_target=immediate): C(latest) has no target to pause at.',
            'C(shutdown): recovery ends at the target (a new timeline), the server is stopped cleanly and not '
            'started (C(state=stopped)); the data directory holds the final settings and starts as it is '
            '(C(pg_ctl start), or the service). Unlike PostgreSQL\'s own C(shutdown) it is not left in '
            'recovery: that would need the recovery job file, with its keys, on its next start.']),
        Option('os_user', roles=('restore',), default='postgres', description=[
            'When the restore runs as root: the system user that owns the data directory and runs the server '
            '(and C(restore_command)). Otherwise the restoring user does.']),
        Option('bin_dir', 'path', roles=('restore',), default_text='C(/usr/lib/postgresql/<major>/bin) of the backup',
               description='Directory of C(pg_ctl) and C(postgres) of the backup\'s major version.'),
        Option('offsite_backup_command', roles=('restore',), default='/usr/local/bin/offsite-backup', description=[
            'The C(offsite-backup) command C(restore_command) runs (C(wal-fetch)), as the server\'s user; a '
            'command line, split like a shell does.']),
        Option('keep_archiving', 'bool', roles=('restore',), default=False, description=[
            'Keep the backup\'s C(archive_mode). By default the restored server gets C(archive_mode = off): a '
            'copy must not archive into the set\'s WAL. Set it when the restored server replaces the source and '
            'is to continue the archive (on its new timeline).']),
        Option('recovery_timeout', 'int', roles=('restore',), default=21600, description=[
            'Seconds recovery may take before the restore gives up (and stops the server).']),
    )

    def __init__(self, options, log):
        super(PostgresqlPhysicalSource, self).__init__(options, log)
        self.database = None  # the whole cluster
        self.host = self.options.get('host', '127.0.0.1')
        self.port = int(self.options.get('port', 5432))
        self.user = self.options.get('user', 'postgres')
        self._facts = None
        self._progress = None
        self._archive = None

    def describe(self):
        return 'PostgreSQL cluster on %s (base backup)' % self._where()

    # -- the drill's scratch server (drill.py) --------------------------------------------------
    def scratch_target(self, token, scratch_root):
        """A scratch data directory under ``scratch_root`` and a free port: the drill's restore
        target (it adds the recovery target), never the source."""
        with socket.socket() as probe:
            probe.bind(('127.0.0.1', 0))
            port = probe.getsockname()[1]
        keep = ('user', 'password', 'maintenance_db', 'os_user', 'bin_dir', 'offsite_backup_command')
        options = dict((k, v) for k, v in self.options.items() if k in keep)
        return dict(options, type=self.type, port=port,
                    data_directory=os.path.join(scratch_root, 'drill_%s' % token))

    def _scratch_user(self):
        return self.options.get('os_user', 'postgres') if os.geteuid() == 0 else None

    def _scratch_bindir(self, directory):
        return self.options.get('bin_dir') or '/usr/lib/postgresql/%s/bin' % _read(
            os.path.join(directory, 'PG_VERSION')).strip()

    def answer(self, sql):
        """One value from the restored server, through its own socket (postmaster.pid), as the
        server's user when we are root (its pg_hba may allow local peer connections only)."""
        directory = self._data_directory()
        lines = _read(os.path.join(directory, 'postmaster.pid')).splitlines()
        if len(lines) < 5:
            raise TargetError('no server runs in %s' % directory, 'the restore did not leave it running')
        argv = [os.path.join(self._scratch_bindir(directory), 'psql'), '-X', '-A', '-t', '-q', '-v', 'ON_ERROR_STOP=1',
                '-h', lines[4] or '127.0.0.1', '-p', str(self.port), '-U', self.user, '--no-password',
                '-d', self.options.get('maintenance_db', 'postgres'), '-c', sql]
        user = self._scratch_user()
        rc, out, err = commands.run(([runuser(), '-u', user, '--'] if user else []) + argv, self.log, cwd='/',
                                    env=self._env())
        if rc != 0:
            raise TargetError('the verification query failed on the restored server: %s' % err.strip()[-500:])
        rows = [line for line in out.splitlines() if line]
        return rows[0] if rows else ''

    def drop(self):
        """Stop the scratch server and remove its data directory; best effort, never raises."""
        try:
            directory = self._data_directory()
            if os.path.exists(os.path.join(directory, 'postmaster.pid')):
                user = self._scratch_user()
                argv = [os.path.join(self._scratch_bindir(directory), 'pg_ctl'), '-D', directory, '-m', 'fast', '-w',
                        '-t', '120', 'stop']
                commands.run(([runuser(), '-u', user, '--'] if user else []) + argv, self.log, cwd='/')
            shutil.rmtree(directory, ignore_errors=True)
        except Exception:  # a drill's cleanup: reported by what is left, never raised
            pass

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
    def use_archive(self, name, repositories, encryption, signing):
        self._archive = {'name': name, 'repositories': repositories, 'encryption': encryption or {},
                         'signing': signing or {}}

    def _target_time(self):
        text = self.options.get('recovery_target_time')
        if text and self.options.get('recovery_target'):
            raise ConfigError('recovery_target_time and recovery_target exclude each other', 'set one of them')
        return mf.parse_time(text) if text else None

    def choose_backup(self, catalog, wanted):
        """With a target time: the newest trusted base backup that was consistent (had ended) by
        then; an earlier one cannot stop there."""
        moment = self._target_time()
        if moment is None or wanted not in (None, '', 'latest'):
            return catalog.select(wanted)
        if moment > catalog.now + catalog.clock_skew:
            raise ConfigError('recovery_target_time %s is in the future' % mf.format_time(moment),
                              'give a time within the window: between the oldest base backup\'s end and now')
        ended = [(b, _stop_time(b)) for b in catalog.trusted]
        for backup, stop in ended:
            if stop is not None and stop <= moment:
                return backup
        oldest = min((stop for dummy, stop in ended if stop is not None), default=None)
        raise NotFoundError('no base backup of %s in %s had ended by %s (the oldest ended %s)'
                            % (catalog.name, catalog.repository.location(), mf.format_time(moment),
                               mf.format_time(oldest) if oldest else 'never: there is none'),
                            'choose a recovery_target_time after the oldest base backup\'s end; nothing was written')

    def check_target(self, mode):
        if mode != 'create':
            raise ConfigError('a postgresql_physical target restores with mode: create only',
                              'restore into an empty or absent data_directory, then switch to it')
        moment = self._target_time()
        if (self.options.get('recovery_target_action') == 'pause' and moment is None
                and self.options.get('recovery_target') != 'immediate'):
            raise ConfigError('recovery_target_action pause needs a target to pause at',
                              'give recovery_target_time or recovery_target: immediate (latest ends recovery at '
                              'the end of the archive); nothing was written')
        directory = self._data_directory()
        exists = os.path.lexists(directory)
        if exists and not os.path.isdir(directory):
            raise TargetError('%s exists and is not a directory' % directory, 'choose an absent or empty data_directory')
        if exists and os.listdir(directory) and not leases.owner_gone(leases.read_owner(
                os.path.join(directory, LEASE_FILE))):
            raise TargetError('data directory %s is not empty and mode is create' % directory,
                              'choose an absent or empty directory; it was left alone')
        if _listening(self.port):
            raise TargetError('port %d is in use on this node' % self.port, 'choose a free port for the restored server')
        return {'exists': exists}

    def sweep_scratch(self, sweep):
        """The data directory a killed restore was writing (its lease inside, its owner provably
        gone): the server stopped if one still runs there, the directory removed when that restore
        created it, emptied when it was given empty."""
        directory = self.options.get('data_directory')
        if not directory:
            return sweep
        directory = os.path.abspath(directory)
        owner = leases.read_owner(os.path.join(directory, LEASE_FILE))
        if owner is None:
            return sweep

        def remove():
            walspool.stop(os.path.join(directory, walspool.SPOOL_NAME))  # its wal-fetch prefetcher
            version = _read(os.path.join(directory, 'PG_VERSION')).strip()
            if version and os.path.exists(os.path.join(directory, 'postmaster.pid')):
                _Server(self, {'server_major': version}).stop(directory)
            _undo(directory, owner.get('created'))
        sweep.judge('data directory %s of a killed restore' % directory, owner, remove)
        return sweep

    def _data_directory(self):
        directory = self.options.get('data_directory')
        if not directory:
            raise ConfigError('a postgresql_physical restore target needs data_directory')
        return os.path.abspath(directory)

    def restore(self, path, manifest, mode):
        with open(path, 'rb') as stream:
            return self._restore(stream, manifest, None)

    def restore_stream(self, stream, manifest, mode):
        return self._restore(stream, manifest, stream.finish)

    def _restore(self, stream, manifest, prove):
        facts = manifest.get('source') or {}
        if facts.get('format') != FORMAT:
            raise ConfigError('backup %s is not a base backup' % manifest.get('id'))
        server = _Server(self, facts)
        directory = self._data_directory()
        with warden.Warden() as guard:
            # should the engine die (kill -9) from here on, the warden stops the server and
            # removes what was written; the lease lets a later sweep do it if the warden died too
            return self._restore_into(stream, manifest, prove, facts, server, directory, guard)

    def _restore_into(self, stream, manifest, prove, facts, server, directory, guard):
        created = not os.path.exists(directory)
        guard.watch(directory=directory, created=created, stop=server.stop_argv(directory))
        phases = {}
        started = time.time()
        lease = os.path.join(directory, LEASE_FILE)
        try:
            if created:
                os.makedirs(directory, 0o700)
            server.own(directory)
            os.chmod(directory, 0o700)
            fd = os.open(lease, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, 'w') as handle:
                json.dump(dict(leases.lease(), created=created), handle)
            scratch = tempfile.mkdtemp(prefix='.offsite-restore-', dir=directory)
            extract(stream, scratch)
            if prove:
                prove()  # the sha256: nothing reaches the data directory before it holds
            lifeline.check()
            found = server.system_identifier(scratch)
            if str(found) != str(facts.get('system_identifier')):
                raise IntegrityError('the base backup %s holds cluster %s, its manifest says %s'
                                     % (manifest.get('id'), found, facts.get('system_identifier')),
                                     'the artifact is not the backup its manifest describes; nothing was started')
            for entry in os.listdir(scratch):
                os.rename(os.path.join(scratch, entry), os.path.join(directory, entry))
            os.rmdir(scratch)
            server.own(directory, recursive=True)
            phases['extract_seconds'] = round(time.time() - started, 3)
            reached = server.recover(directory, self._archive, self._target_time(), phases, manifest.get('encryption'),
                                     guard, facts)
            os.unlink(lease)
        except BaseException:
            server.stop(directory)
            server.remove_run_dir()
            _undo(directory, created)
            raise
        return dict(reached, data_directory=directory, port=self.port, phases=phases,
                    system_identifier=facts.get('system_identifier'))


def _undo(directory, created):
    """Remove a data directory the restore created; empty one it was given empty."""
    if created:
        shutil.rmtree(directory, ignore_errors=True)
    elif os.path.isdir(directory):
        for entry in os.listdir(directory):
            full = os.path.join(directory, entry)
            if os.path.isdir(full) and not os.path.islink(full):
                shutil.rmtree(full, ignore_errors=True)
            else:
                os.unlink(full)


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


def _stop_time(backup):
    """When a base backup had ended (consistent from then on), or None for other backups."""
    facts = (backup.manifest or {}).get('source') or {}
    if facts.get('format') != FORMAT or not facts.get('stop_time'):
        return None
    return mf.parse_time(facts['stop_time'])


def _listening(port):
    try:
        with socket.create_connection(('127.0.0.1', port), timeout=1):
            return True
    except OSError:
        return False


def extract(stream, directory):
    """The tar in ``stream`` into ``directory``: regular files and directories only, each inside
    it (a damaged or forged tar must not write elsewhere before its checksum is known)."""
    try:
        with tarfile.open(fileobj=stream, mode='r|') as tar:
            for member in tar:
                parts = member.name.split('/')
                if member.name.startswith('/') or '..' in parts or not (member.isfile() or member.isdir()):
                    raise IntegrityError('the base backup holds %r, which is not a file or directory inside the '
                                         'data directory' % member.name,
                                         'a base backup of one tablespace holds nothing else; nothing was started')
                if hasattr(tarfile, 'data_filter'):
                    tar.extract(member, directory, filter='data')
                else:
                    tar.extract(member, directory)
    except tarfile.TarError as exc:
        raise IntegrityError('the base backup is not a readable tar (%s)' % exc, 'nothing was started')


class _Server(object):
    """The restored cluster's server: started on a private socket for recovery, promoted, and
    restarted with its own settings on the port. Runs as ``os_user`` when we are root."""

    def __init__(self, source, facts):
        self.source = source
        self.options = source.options
        self.log = source.log
        self.bindir = self.options.get('bin_dir') or '/usr/lib/postgresql/%s/bin' % facts.get('server_major')
        missing = [tool for tool in ('pg_ctl', 'postgres', 'pg_controldata', 'psql')
                   if not os.access(os.path.join(self.bindir, tool), os.X_OK)]
        if missing:
            raise DependencyError('%s has no %s: the backup needs PostgreSQL %s to recover'
                                  % (self.bindir, ', '.join(missing), facts.get('server_major')),
                                  'install postgresql-%s on this node (or set bin_dir); nothing was written'
                                  % facts.get('server_major'))
        self.user = self.options.get('os_user', 'postgres') if os.geteuid() == 0 else None
        if self.user:
            try:
                entry = pwd.getpwnam(self.user)
            except KeyError:
                raise ConfigError('os_user %s does not exist on this node' % self.user,
                                  'create it or set os_user to the user PostgreSQL runs as')
            self.uid, self.gid = entry.pw_uid, entry.pw_gid
        self.port = source.port
        self.run_dir = None
        self.log_file = None
        self.spool = None

    # -- as the server's user ------------------------------------------------------------------
    def own(self, path, recursive=False):
        if not self.user:
            return
        os.chown(path, self.uid, self.gid)
        if recursive:
            for root, dirs, files in os.walk(path):
                for name in dirs + files:
                    os.lchown(os.path.join(root, name), self.uid, self.gid)

    def _argv(self, tool, *args):
        argv = [os.path.join(self.bindir, tool)] + list(args)
        return [runuser(), '-u', self.user, '--'] + argv if self.user else argv

    def _run(self, tool, *args, **kwargs):
        return commands.run(self._argv(tool, *args), self.log, cwd='/', **kwargs)

    def system_identifier(self, directory):
        """From pg_control, read as we are (the scratch directory is not the server's user's yet)."""
        rc, out, err = commands.run([os.path.join(self.bindir, 'pg_controldata'), directory], self.log)
        match = re.search(r'Database system identifier:\s*(\d+)', out)
        if rc != 0 or not match:
            raise IntegrityError('the base backup has no readable pg_control (%s)' % (err.strip() or 'no identifier'),
                                 'the artifact is damaged; nothing was started')
        return match.group(1)

    def _query(self, sql):
        """One row of ``sql`` on the restored server (private socket), or None when it does not answer."""
        env = {'PGPASSWORD': self.options.get('password'), 'PGCONNECT_TIMEOUT': '5', 'PGAPPNAME': 'offsite.backup'}
        rc, out, dummy = self._run('psql', '-X', '-A', '-t', '-q', '-F', '\t', '-h', self.run_dir, '-p', str(self.port),
                                   '-U', self.options.get('user', 'postgres'), '--no-password', '-d', 'postgres',
                                   '-c', sql, env=dict((k, v) for k, v in env.items() if v))
        if rc != 0:
            return None
        lines = [line for line in out.splitlines() if line]
        return lines[0].split('\t') if lines else []

    def _running(self, directory):
        rc, dummy, dummy2 = self._run('pg_ctl', '-D', directory, 'status')
        return rc == 0

    # -- recovery ------------------------------------------------------------------------------
    def recover(self, directory, archive, moment, phases, encrypted=None, guard=None, facts=None):
        """Recovery to the target, then the action: the ``restored`` facts (``state``: running,
        paused or stopped)."""
        if not archive:
            raise ConfigError('a postgresql_physical restore needs the set\'s repositories for its WAL')
        self.archive, self.facts, self.moment = archive, facts or {}, moment
        # a work directory with its lease (scratch.py): a sweep removes it, and the job file's
        # secrets, when a killed restore's warden did not
        self.run_dir = leases.make_work_dir(tempfile.gettempdir(), prefix=RUN_DIR_PREFIX)
        if guard is not None:
            guard.watch(remove=[self.run_dir])
        self.own(self.run_dir)
        self.log_file = os.path.join(self.run_dir, 'recovery.log')
        conf = os.path.join(directory, 'postgresql.auto.conf')
        original = _read(conf)
        job = self._write_job(archive, encrypted or {})
        # the prefetcher's spool (walspool.py): the server's user's, inside the data directory (it
        # goes with it); removed, and the prefetcher ended, once recovery reached its end
        self.spool = os.path.join(directory, walspool.SPOOL_NAME)
        shutil.rmtree(self.spool, ignore_errors=True)  # never another restore's (the tar's)
        os.mkdir(self.spool, 0o700)
        self.own(self.spool)
        if guard is not None:
            guard.watch(prefetcher=os.path.join(self.spool, walspool.LOCK_FILE))
        command = '%s wal-fetch %s %%f %%p --spool %s' % (
            self.options.get('offsite_backup_command', '/usr/local/bin/offsite-backup'), shlex.quote(job),
            shlex.quote(self.spool))
        if self.facts.get('system_identifier'):
            command += ' --system-identifier %s' % shlex.quote(str(self.facts['system_identifier']))
        # always pause at a target: the restore looks at where recovery stopped before it acts
        settings = [('restore_command', command), ('recovery_target_action', 'pause')]
        if moment is not None:
            settings.append(('recovery_target_time', moment.strftime('%Y-%m-%d %H:%M:%S+00')))
        elif self.options.get('recovery_target') == 'immediate':
            settings.append(('recovery_target', 'immediate'))
        self._write(conf, original + '\n# offsite.backup: recovery settings, removed after promotion\n'
                    + ''.join('%s = %s\n' % (k, _quote(v)) for k, v in settings))
        self._write(os.path.join(directory, 'recovery.signal'), '')
        if not os.path.exists(os.path.join(directory, 'postgresql.conf')):
            # a Debian cluster keeps its configuration in /etc: the backup has none
            self._write(os.path.join(directory, 'postgresql.conf'), '')
        if not os.path.exists(os.path.join(directory, 'pg_hba.conf')):
            self._write(os.path.join(directory, 'pg_hba.conf'), 'local all all peer\n')
        options = ["-p %d" % self.port, "-k %s" % shlex.quote(self.run_dir), "-c listen_addresses=''",
                   '-c hot_standby=on', '-c logging_collector=off']
        if not self.options.get('keep_archiving'):
            options.append('-c archive_mode=off')
        started = time.time()
        timeout = int(self.options.get('recovery_timeout', 21600))
        rc, out, err = self._run('pg_ctl', '-D', directory, '-l', self.log_file, '-o', ' '.join(options), '-w',
                                 '-t', str(timeout), 'start', stdin=None)
        if rc != 0:
            self._failed(moment)
        state = self._wait(directory, started + timeout, moment)
        phases['recovery_seconds'] = round(time.time() - started, 3)
        phases['wal_prefetched'] = self.stop_prefetch()
        reached = {'reached_time': state[2] or None, 'reached_lsn': state[3] or None}
        self._check_identity()
        action = self.options.get('recovery_target_action', 'promote')
        final = '\n# offsite.backup: the restored server\nport = %d\n' % self.port
        if not self.options.get('keep_archiving'):
            final += "archive_mode = 'off'\n"
        if state[0] == 't':  # paused at the target
            if action == 'pause':
                return self._leave_paused(conf, original + final, settings, reached)
            started = time.time()
            lifeline.check('promoting the restored server')
            if self._query('SELECT pg_promote(true, 600)') != ['t']:
                self._failed(moment)
            phases['promote_seconds'] = round(time.time() - started, 3)
        elif moment is None and self.options.get('recovery_target') != 'immediate':
            self._check_complete(reached)  # latest: the end of the archive, not a hole before it
        started = time.time()
        self._stop_fast(directory)
        self._write(conf, original + final)
        signal = os.path.join(directory, 'recovery.signal')
        if os.path.exists(signal):
            os.unlink(signal)
        if action == 'shutdown':
            phases['stop_seconds'] = round(time.time() - started, 3)
            self.remove_run_dir()
            return dict(reached, state='stopped', timeline=self._timeline(directory))
        logs = os.path.join(directory, 'log')
        if not os.path.isdir(logs):
            os.mkdir(logs, 0o700)
            self.own(logs)
        rc, out, err = self._run('pg_ctl', '-D', directory, '-l', os.path.join(logs, 'offsite-restore.log'), '-w',
                                 '-t', '600', 'start')
        if rc != 0:
            raise TargetError('the restored server did not start on port %d: %s' % (self.port, (out + err).strip()[-800:]),
                              'see %s' % os.path.join(logs, 'offsite-restore.log'))
        phases['restart_seconds'] = round(time.time() - started, 3)
        self.remove_run_dir()
        return dict(reached, state='running', timeline=self._timeline(directory))

    def _timeline(self, directory):
        rc, out, dummy = self._run('pg_controldata', directory)
        timeline = re.search(r"Latest checkpoint's TimeLineID:\s*(\d+)", out)
        return int(timeline.group(1)) if timeline else None

    def _leave_paused(self, conf, final, settings, reached):
        """recovery_target_action pause: the server stays in recovery at the target on its private
        socket. Its restore_command becomes one that finds nothing (a resume ends recovery there and
        needs no more WAL; PostgreSQL 14 and later reload it), so the job file and the identity copy
        are removed; only the socket stays in the run directory."""
        kept = [(k, v) for k, v in settings if k != 'restore_command']
        self._write(conf, final + '# offsite.backup: recovery settings of the paused restore (unused once it is '
                    'promoted)\n' + ''.join('%s = %s\n' % (k, _quote(v)) for k, v in [('restore_command', 'false')] + kept))
        reloaded = self._query('SELECT pg_reload_conf()') == ['t'] and self._poll(
            lambda: self._query("SELECT current_setting('restore_command')") == ['false'], 10)
        for name in os.listdir(self.run_dir):
            # the lease goes in any case: the run directory of a server left running is no scratch
            if name == leases.OWNER_FILE or (reloaded and not name.startswith('.s.PGSQL.') and name != 'recovery.log'):
                os.unlink(os.path.join(self.run_dir, name))
        state = self._query('SELECT pg_is_in_recovery(), pg_get_wal_replay_pause_state()')
        if state != ['t', 'paused']:
            raise TargetError('the restored server did not stay paused at the target (%s)' % (state,),
                              'the server was stopped and the data directory removed')
        return dict(reached, state='paused', socket_directory=self.run_dir, timeline=self._timeline_in_recovery(),
                    recovery_job_kept=not reloaded,
                    resume="psql -h %s -p %d -c 'SELECT pg_wal_replay_resume()'" % (self.run_dir, self.port))

    def _timeline_in_recovery(self):
        row = self._query('SELECT timeline_id FROM pg_control_checkpoint()')
        return int(row[0]) if row and row[0].isdigit() else None

    def _poll(self, condition, seconds):
        deadline = time.time() + seconds
        while not condition():
            if time.time() > deadline:
                return False
            time.sleep(0.1)
        return True

    def _wait(self, directory, deadline, moment):
        """Until recovery paused at its target, or ended by itself (``latest``): the state row."""
        while True:
            # pg_get_wal_replay_pause_state() is an error once recovery has ended (latest)
            state = self._query("SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN "
                                "pg_get_wal_replay_pause_state() ELSE '' END, "
                                "coalesce(to_char(pg_last_xact_replay_timestamp() AT TIME ZONE 'UTC', "
                                "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), ''), coalesce(pg_last_wal_replay_lsn()::text, '')")
            if state and (state[0] == 'f' or state[1] == 'paused'):
                return state
            if state is None and not self._running(directory):
                self._failed(moment)
            if time.time() > deadline:
                raise TargetError('recovery did not reach its target within recovery_timeout (%ss)'
                                  % self.options.get('recovery_timeout', 21600),
                                  'the server was stopped and the data directory removed; raise recovery_timeout')
            lifeline.check('waiting for recovery')
            time.sleep(0.5)

    def _check_identity(self):
        """PostgreSQL treats a segment of another cluster like the end of the WAL (a LOG line) and
        goes on; the restore does not: it is the wrong archive, not the end of the right one."""
        text = _read(self.log_file)
        if 'from different database system' in text:
            raise IntegrityError('the archive holds WAL of another cluster: %s' % _said(text, 'different database system'),
                                 'another cluster archives into this set, or the wrong set was given; the server was '
                                 'stopped and the data directory removed')

    def _check_complete(self, reached):
        """``latest`` ended: fail when the archive holds WAL beyond where recovery stopped (a missing
        or unreadable segment in between); reaching an earlier point is not what was asked."""
        gap = self._gap(reached.get('reached_lsn'))
        if gap:
            raise IntegrityError('recovery to latest stopped at %s (WAL %s) but the archive holds WAL up to %s: %s'
                                 % (reached.get('reached_time') or 'the base backup', reached.get('reached_lsn'),
                                    gap['newest'], gap['why']),
                                 'restore with a recovery_target_time at or before %s to get the data up to the hole, '
                                 'or put the missing segment back; the server was stopped and the data directory '
                                 'removed' % (reached.get('reached_time') or 'the base backup\'s end'))

    def _gap(self, reached_lsn):
        """{newest, why} when the archive's newest timeline has segments after the one holding
        ``reached_lsn``, else None."""
        try:
            names = archived_segments(self.archive, self.log)
        except Exception as exc:  # the check must not turn a good restore into a crash
            self.log.record(['# could not list the archive to check for holes: %s' % exc])
            return None
        return archive_gap(names, reached_lsn, int(self.facts.get('wal_segment_size') or 16 * 1024 * 1024))

    def _failed(self, moment):
        """The server stopped (or would not start): raise what its log says."""
        text = _read(self.log_file)
        # (a history file not found is PostgreSQL probing for timelines, not a problem)
        fatal = [line.strip() for line in text.splitlines()
                 if ('FATAL' in line or 'PANIC' in line or line.startswith('offsite-backup'))
                 and not re.search(r'no repository holds WAL file [0-9A-F]{8}\.history', line)]
        said = ' / '.join(fatal[-4:]) or text.strip()[-800:] or 'no log'
        self._check_identity()
        if 'recovery ended before configured recovery target was reached' in text:
            last = re.findall(r'last completed transaction was at log time ([0-9-]+ [0-9:.]+[+-][0-9:]+)', text)
            reached = ('the last transaction replayed was at %s' % last[-1]) if last else 'no transaction was replayed'
            gap = self._gap(_last_lsn(text)) if getattr(self, 'archive', None) else None
            if gap:
                raise IntegrityError('recovery stopped before the recovery target %s at a hole in the archive (%s; it '
                                     'holds WAL up to %s): %s' % (mf.format_time(moment) if moment else '',
                                                                  gap['why'], gap['newest'], reached),
                                     'put the missing segment back, or choose a recovery_target_time before the hole; '
                                     'nothing is running')
            raise NotFoundError('the archived WAL ends before the recovery target %s (%s): %s'
                                % (mf.format_time(moment) if moment else '', reached, said),
                                'choose an earlier recovery_target_time (the archive\'s newest segment bounds the '
                                'window), or check that archiving works; nothing is running')
        if 'before consistent recovery point' in text:
            raise NotFoundError('the recovery target lies before the base backup was consistent: %s' % said,
                                'choose a later recovery_target_time; nothing is running')
        if 'wal-fetch' in text or 'could not restore file' in text or 'restore_command' in text:
            raise IntegrityError('recovery could not fetch the WAL it needs: %s' % said,
                                 'see the offsite-backup lines of the message for the segment and the repository; '
                                 'nothing is running')
        raise TargetError('PostgreSQL stopped during recovery: %s' % said, 'nothing is running')

    def _stop_fast(self, directory):
        rc, out, err = self._run('pg_ctl', '-D', directory, '-m', 'fast', '-w', '-t', '600', 'stop')
        if rc != 0:
            raise TargetError('the restored server did not stop for its restart: %s' % (out + err).strip()[-500:])

    def stop_argv(self, directory):
        """What stops a server in ``directory`` at once (the warden runs it should the engine die)."""
        return self._argv('pg_ctl', '-D', directory, '-m', 'immediate', '-w', '-t', '60', 'stop')

    def stop_prefetch(self):
        """End wal-fetch's prefetcher and remove its spool: how many segments came from it."""
        spool, self.spool = self.spool, None
        return walspool.stop(spool) if spool else 0

    def stop(self, directory):
        """After a failure: stop whatever runs in ``directory`` now (best effort)."""
        self.stop_prefetch()
        if os.path.exists(os.path.join(directory, 'postmaster.pid')):
            self._run('pg_ctl', '-D', directory, '-m', 'immediate', '-w', '-t', '60', 'stop')

    def remove_run_dir(self):
        if self.run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.run_dir = None

    def _write_job(self, archive, encrypted):
        """The job file of restore_command (0600 in the 0700 run directory, the server's user's):
        the set, its repositories, and how to decrypt and check its WAL. Secrets live here only.
        A job's encryption names what it encrypts for: the base backup's recipients (the WAL's
        were the same job's)."""
        encryption = dict((k, v) for k, v in (archive['encryption'] or {}).items() if v is not None)
        recipients = {'age': 'recipients', 'gpg': 'gpg_recipients'}.get(encrypted.get('scheme'))
        if recipients and encrypted.get('recipients'):
            encryption[recipients] = list(encrypted['recipients'])
        encryption.pop('required', None)
        identity = encryption.get('identity_file')
        if identity:
            encryption['identity_file'] = self._copy_private(identity, 'identity')
        signing = dict((k, v) for k, v in (archive['signing'] or {}).items() if v is not None and k != 'key_file')
        job = {'name': 'recovery', 'local': {'path': self.run_dir},
               'sources': [{'name': archive['name'], 'source': {'type': PostgresqlPhysicalSource.type}}],
               'repositories': [dict((k, v) for k, v in repo.items() if v is not None)
                                for repo in archive['repositories']],
               'log': {'path': os.path.join(self.run_dir, 'recovery-job.log')}}
        if encryption:
            job['encryption'] = encryption
        if signing:
            job['signing'] = signing
        path = os.path.join(self.run_dir, 'recovery.yml')
        self._write(path, json.dumps(job, indent=1, sort_keys=True) + '\n')
        return path

    def _copy_private(self, source, name):
        path = os.path.join(self.run_dir, name)
        with open(source, 'rb') as handle:
            self._write(path, handle.read())
        return path

    def _write(self, path, data):
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        fd = os.open(path, flags, 0o600)
        with os.fdopen(fd, 'wb' if isinstance(data, bytes) else 'w') as handle:
            handle.write(data)
        os.chmod(path, 0o600)
        self.own(path)


def archived_segments(archive, log):
    """The names of the WAL segments (not history, backup or partial files) the archive's
    repositories hold with a manifest: a file of any of them counts."""
    from .. import wal
    from ..repositories import open_repository
    prefix = wal.directory(archive['name'])
    names = set()
    for options in archive['repositories']:
        with open_repository(options, log) as repo:
            for item in repo.list(prefix):
                name = item.key[len(prefix):]
                if name.endswith(wal.MANIFEST_EXT) and re.match(r'^[0-9A-F]{24}$', name[:-len(wal.MANIFEST_EXT)]):
                    names.add(name[:-len(wal.MANIFEST_EXT)])
    return names


def archive_gap(names, reached_lsn, size):
    """{newest, missing, why} when the newest timeline among the archived segment ``names`` has
    a segment after the one holding the byte before ``reached_lsn`` (where replay ended), else None."""
    if not names or not reached_lsn:
        return None
    per_id = 0x100000000 // size
    timeline = max(int(n[:8], 16) for n in names)
    positions = sorted(int(n[8:16], 16) * per_id + int(n[16:24], 16) for n in names if int(n[:8], 16) == timeline)
    lsn = parse_lsn(reached_lsn)
    at = (lsn - 1) // size if lsn else 0
    if positions[-1] <= at:
        return None

    def name(position):
        return '%08X%08X%08X' % (timeline, position // per_id, position % per_id)
    held = set(positions)
    missing = [name(p) for p in range(at + 1, positions[-1]) if p not in held]
    if missing:
        why = 'missing from the archive: %s' % ', '.join(missing[:3] + (['...'] if len(missing) > 3 else []))
    else:
        why = 'the segment after %s could not be replayed' % name(at)
    return {'newest': name(positions[-1]), 'missing': missing, 'why': why}


def _said(text, needle):
    lines = [line.strip() for line in text.splitlines() if needle in line]
    return lines[-1] if lines else needle


def _last_lsn(text):
    """Where replay ended, from the server log (``redo done at X/Y``), or None."""
    found = re.findall(r'redo done at ([0-9A-F]+/[0-9A-F]+)', text)
    return found[-1] if found else None


def _read(path):
    try:
        with open(path) as handle:
            return handle.read()
    except (OSError, TypeError):
        return ''


def _quote(value):
    return "'%s'" % str(value).replace("'", "''")
