# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A Redis server: an RDB snapshot out (``redis-cli --rdb -``), keys or an RDB file back in.

The snapshot is what a replica gets: the server forks and writes a point-in-time RDB, the same
as BGSAVE, streamed to us without touching the server's disk. The password only travels in
``REDISCLI_AUTH``.

Restore never loads an unproven snapshot into the target: the RDB is first loaded by a private
``redis-server`` (unix socket only, in a temporary directory) and its key counts compared with
the manifest. Then either
- ``host``/``port``: its keys are copied into the running target with ``DUMP`` + ``RESTORE``
  (through ``redis-cli --pipe``, in batches; no restart), and the replies are counted; or
- ``data_dir``: the RDB file is placed as ``dump.rdb`` of a stopped server (refused while a
  ``redis-server`` runs there), atomically with a rename.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time

from .. import commands, lifeline
from .. import scratch as leases
from ..errors import ConfigError, IntegrityError, NotFoundError, SourceError, TargetError
from ..pipeline import CHUNK
from ..schema import Option
from .base import CONTAINER, Source, check_mode, password, server

BATCH = 500
LOAD_TIMEOUT = 3600


def parse_info(text):
    """``INFO`` output as a dict of strings."""
    info = {}
    for line in text.splitlines():
        if ':' in line and not line.startswith('#'):
            key, value = line.strip().split(':', 1)
            info[key] = value
    return info


def keyspace(info):
    """``{'db0': {'keys': n, 'expires': m}, ...}`` from the keyspace section of ``INFO``."""
    spaces = {}
    for key, value in info.items():
        if re.match(r'^db\d+$', key):
            fields = dict(part.split('=', 1) for part in value.split(','))
            spaces[key] = {'keys': int(fields.get('keys', 0)), 'expires': int(fields.get('expires', 0))}
    return spaces


def key_mismatches(expected, loaded, expired):
    """Databases whose loaded key count does not fit the recorded one. Keys whose time to live
    ran out since the dump are not loaded by Redis (``expired`` in total): each database may
    lack at most that many, and all of them together exactly that many."""
    problems = []
    missing_total = 0
    for db in sorted(set(expected) | set(loaded)):
        want, got = expected.get(db, 0), loaded.get(db, 0)
        missing_total += want - got
        if got > want or want - got > expired:
            problems.append('%s: %d keys in the backup, %d loaded' % (db, want, got))
    if not problems and missing_total != expired:
        problems.append('%d keys missing in total, but only %d expired' % (missing_total, expired))
    return problems


def resp(*args):
    """One command in the Redis protocol (what ``redis-cli --pipe`` sends)."""
    out = [b'*%d\r\n' % len(args)]
    for arg in args:
        if not isinstance(arg, bytes):
            arg = str(arg).encode('utf-8')
        out.append(b'$%d\r\n%s\r\n' % (len(arg), arg))
    return b''.join(out)


class RespConnection(object):
    """A minimal Redis client, for the private scratch server (a unix socket path) and for
    tests (a ``(host, port)`` tuple); no TLS."""

    def __init__(self, address, timeout=60):
        family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(address)
        self.reader = self.sock.makefile('rb')

    def close(self):
        self.reader.close()
        self.sock.close()

    def command(self, *args):
        self.sock.sendall(resp(*args))
        return self.reply()

    def pipeline(self, commands_):
        self.sock.sendall(b''.join(resp(*c) for c in commands_))
        return [self.reply() for dummy in commands_]

    def reply(self):
        line = self.reader.readline()
        if not line:
            raise SourceError('the scratch redis-server closed the connection')
        kind, rest = line[:1], line[1:-2]
        if kind == b'+':
            return rest.decode()
        if kind == b'-':
            raise SourceError('the scratch redis-server answered: %s' % rest.decode('utf-8', 'replace'))
        if kind == b':':
            return int(rest)
        if kind == b'$':
            size = int(rest)
            if size < 0:
                return None
            data = self.reader.read(size + 2)
            return data[:-2]
        if kind == b'*':
            size = int(rest)
            return None if size < 0 else [self.reply() for dummy in range(size)]
        raise SourceError('unexpected reply from the scratch redis-server: %r' % line[:40])


class RedisSource(Source):
    type = 'redis'
    DESCRIPTION = ('C(redis) for a snapshot of a Redis server.',)
    OPTIONS = server(6379, None, 'The ACL user.') + (
        password('REDISCLI_AUTH'),
        Option('tls', 'bool', description='Connect over TLS (C(redis-cli --tls)).'),
        Option('tls_ca_file', 'path', description='CA certificate that signed the server\'s certificate.'),
        Option('tls_cert_file', 'path', description='Client certificate for TLS.'),
        Option('tls_key_file', 'path', description='Key of O(.tls_cert_file).'),
        Option('data_dir', 'path', roles=('restore',), ignored_by=('dump',), description=[
            'Data directory of a stopped server - the snapshot is placed there as the server\'s '
            'RDB file instead of being loaded into a running server at O(.host) and O(.port).',
            'Refused while a Redis server runs on that directory.']),
    ) + CONTAINER

    def __init__(self, options, log):
        super(RedisSource, self).__init__(options, log)
        self.host = self.options.get('host', '127.0.0.1')
        self.port = int(self.options.get('port', 6379))
        self.data_dir = self.options.get('data_dir')
        self._before = None
        self._after = None

    def describe(self):
        if self.data_dir:
            return 'Redis data directory %s' % self.data_dir
        where = '%s:%s' % (self.host, self.port)
        if self.options.get('container'):
            where += ' in container %s' % self.options['container']
        return 'Redis at %s' % where

    # -- talking to the server -----------------------------------------------------------
    def _env(self):
        return {'REDISCLI_AUTH': self.options.get('password')}

    def _cli(self, extra, stdin=False):
        argv = [self.tool('redis-cli', 'to talk to Redis'), '-h', self.host, '-p', str(self.port)]
        if self.options.get('user'):
            argv += ['--user', self.options['user']]
        if self.options.get('tls'):
            argv.append('--tls')
        for option, flag in (('tls_ca_file', '--cacert'), ('tls_cert_file', '--cert'), ('tls_key_file', '--key')):
            if self.options.get(option):
                argv += [flag, self.options[option]]
        names = ('REDISCLI_AUTH',) if self.options.get('password') else ()
        return self.exec_argv(argv + list(extra), env_names=names, stdin=stdin)

    def _fail(self, what, text):
        where = '%s:%s' % (self.host, self.port)
        text = (text or '').strip()
        if 'WRONGPASS' in text or 'invalid username-password' in text or 'invalid password' in text:
            raise SourceError('Redis at %s refused the password%s' % (where, ' of user %s' % self.options['user']
                                                                      if self.options.get('user') else ''),
                              'fix `password` (passed in REDISCLI_AUTH, never on the command line) or `user`')
        if 'NOAUTH' in text:
            raise SourceError('Redis at %s requires a password and none was given' % where, 'set `password`')
        if 'NOPERM' in text:
            raise SourceError('the Redis user has no permission for %s at %s (%s)' % (what, where, text.splitlines()[-1]),
                              'grant the user the commands needed (INFO, SYNC/PSYNC for dumps)')
        if 'Connection refused' in text or 'Could not connect' in text or 'Name or service not known' in text:
            raise SourceError('cannot reach Redis at %s (%s)' % (where, text.splitlines()[-1]),
                              'check host/port and that the server is running')
        raise SourceError('%s failed on Redis at %s: %s' % (what, where, text[-1500:] or 'no error output'))

    def _info(self, what='connecting'):
        rc, out, err = commands.run(self._cli(['INFO', 'everything']), self.log, env=self._env())
        # redis-cli prints server errors on stdout with exit status 0 when not on a tty
        if rc != 0 or out.startswith(('ERR', 'NOAUTH', 'WRONGPASS', 'NOPERM')) or not out.strip():
            self._fail(what, err + out)
        return parse_info(out)

    # -- backup side ---------------------------------------------------------------------
    def artifact(self):
        return 'rdb', 'rdb'

    def probe(self):
        if self.data_dir:
            raise ConfigError('data_dir is a restore target only', 'dump from host/port')
        info = self._info()
        self._before = keyspace(info)
        return {'type': self.type, 'host': self.host, 'port': self.port,
                'server_version': info.get('redis_version'), 'database_size': int(info.get('used_memory', 0)),
                'tool': 'redis-cli --rdb'}

    def dump_facts(self):
        """Key counts per database, read before and after the snapshot: a database whose count
        moved meanwhile cannot be compared and is listed in ``counts_changed_during_dump``."""
        if self._before is None or self._after is None:
            return {}
        stable = dict((db, n['keys']) for db, n in self._before.items()
                      if self._after.get(db, {}).get('keys') == n['keys'])
        changed = sorted((set(self._before) | set(self._after)) - set(stable))
        return {'counts': {'keys': stable}, 'counts_changed_during_dump': changed}

    @contextlib.contextmanager
    def dump(self):
        with commands.streaming(self._cli(['--rdb', '-']), self.log, env=self._env()) as proc:
            yield proc.stdout
            rc = proc.wait()
            text = commands.stderr_tail(proc)
            if rc != 0 or 'Transfer finished with success' not in text:
                self._snapshot_failed(rc, text)
        self._after = keyspace(self._info('reading key counts'))

    def _snapshot_failed(self, rc, text):
        if any(word in text for word in ('WRONGPASS', 'NOAUTH', 'NOPERM', 'Connection refused', 'Could not connect')):
            self._fail('the snapshot', text)
        where = '%s:%s' % (self.host, self.port)
        last = text.splitlines()[-1] if text else 'exit status %s' % rc
        if 'unknown command' in text.lower():
            raise SourceError('Redis at %s refuses to send a snapshot (SYNC is disabled or renamed): %s' % (where, last),
                              'allow SYNC/PSYNC for the backup user; nothing was written')
        raise SourceError('Redis at %s could not make a snapshot: %s' % (where, last),
                          'check the Redis log (fork or disk errors, MISCONF); nothing was written')

    # -- restore side --------------------------------------------------------------------
    def check_target(self, mode):
        check_mode(mode)
        if self.data_dir:
            if not os.path.isdir(self.data_dir):
                raise NotFoundError('Redis data directory %s does not exist' % self.data_dir, 'fix `data_dir`')
            running = self._servers_in(self.data_dir)
            if running:
                raise TargetError('a redis-server (pid %s) runs in %s; its RDB cannot be replaced under it'
                                  % (running[0], self.data_dir),
                                  'stop the service first, or restore into the running server with host/port')
            if os.path.isdir(os.path.join(self.data_dir, 'appendonlydir')) or \
                    os.path.exists(os.path.join(self.data_dir, 'appendonly.aof')):
                raise TargetError('%s holds an append-only file, which Redis loads instead of dump.rdb' % self.data_dir,
                                  'move the AOF away (or disable appendonly) before restoring the snapshot')
            exists = os.path.exists(os.path.join(self.data_dir, 'dump.rdb'))
            if exists and mode == 'create':
                raise TargetError('%s already holds dump.rdb and mode is create' % self.data_dir,
                                  'use mode: replace')
            return {'exists': exists}
        spaces = keyspace(self._info())
        exists = any(n['keys'] for n in spaces.values())
        if exists and mode == 'create':
            raise TargetError('Redis at %s:%s already holds keys (%s) and mode is create'
                              % (self.host, self.port, ', '.join('%s=%d' % (db, n['keys']) for db, n in sorted(spaces.items()))),
                              'use mode: replace (keys of the backup overwrite keys of the same name; others stay)')
        return {'exists': exists}

    @staticmethod
    def _servers_in(directory):
        """pids of redis-server processes working in ``directory`` (redis chdirs into its dir)."""
        found = []
        real = os.path.realpath(directory)
        for pid in filter(str.isdigit, os.listdir('/proc')):
            try:
                with open('/proc/%s/comm' % pid) as handle:
                    if not handle.read().startswith('redis-server'):
                        continue
                if os.path.realpath(os.readlink('/proc/%s/cwd' % pid)) == real:
                    found.append(int(pid))
            except OSError:
                continue
        return found

    def restore(self, path, manifest, mode):
        check_mode(mode)
        with self._scratch_server(path) as (conn, loaded, expired):
            facts = manifest.get('source') or {}
            expected = (facts.get('counts') or {}).get('keys')
            verified = None
            if expected is not None:
                unstable = set(facts.get('counts_changed_during_dump') or ())
                problems = key_mismatches(expected, dict((db, n) for db, n in loaded.items() if db not in unstable),
                                          expired)
                if problems:
                    raise IntegrityError('the snapshot does not hold the keys recorded at backup time: %s'
                                         % '; '.join(problems[:5]), 'the target was not touched')
                verified = sorted(expected)
            total = sum(loaded.values())
            lifeline.check('loading the keys into the target')
            if self.data_dir:
                details = self._place(path, mode)
            else:
                details = self._copy_keys(conn, loaded, mode)
            details.update(keys=total, expired_since_backup=expired, verified_databases=verified)
            return details

    @contextlib.contextmanager
    def _scratch_server(self, path):
        """A private redis-server that loads ``path``: proves the snapshot loads and counts it."""
        server = commands.which('redis-server', 'to check and load Redis snapshots')
        work = leases.make_work_dir(tempfile.gettempdir(), 'offsite-redis-')
        try:
            os.link(path, os.path.join(work, 'dump.rdb'))
        except OSError:
            shutil.copyfile(path, os.path.join(work, 'dump.rdb'))
        sock = os.path.join(work, 'redis.sock')
        argv = [server, '--port', '0', '--unixsocket', sock, '--unixsocketperm', '700', '--dir', work,
                '--dbfilename', 'dump.rdb', '--save', '', '--appendonly', 'no', '--logfile', 'redis.log',
                '--daemonize', 'no']
        conn = None
        with commands.streaming(argv, self.log, stdout=subprocess.DEVNULL) as proc:
            try:
                deadline = time.time() + LOAD_TIMEOUT
                while True:
                    if proc.poll() is not None:
                        raise IntegrityError('the snapshot does not load into redis-server: %s'
                                             % self._log_tail(work), 'the target was not touched')
                    if conn is None and os.path.exists(sock):
                        try:
                            conn = RespConnection(sock)
                        except OSError:
                            conn = None
                    if conn is not None:
                        try:
                            if conn.command('PING') == 'PONG':
                                break
                        except SourceError as exc:
                            if 'LOADING' not in exc.message and proc.poll() is None:
                                raise
                        except OSError:  # the server died on a bad snapshot: its exit is reported above
                            conn.close()
                            conn = None
                    if time.time() > deadline:
                        raise TargetError('the snapshot took longer than %ds to load' % LOAD_TIMEOUT)
                    time.sleep(0.05)
                info = parse_info(conn.command('INFO', 'everything').decode())
                loaded = dict((db, n['keys']) for db, n in keyspace(info).items())
                yield conn, loaded, int(info.get('rdb_last_load_keys_expired', 0))
            finally:
                if conn is not None:
                    conn.close()
                proc.terminate()
                proc.wait()
                shutil.rmtree(work, ignore_errors=True)

    @staticmethod
    def _log_tail(work):
        try:
            with open(os.path.join(work, 'redis.log'), 'rb') as handle:
                lines = handle.read().decode('utf-8', 'replace').strip().splitlines()
            return ' / '.join(line.split(' # ', 1)[-1] for line in lines[-3:])
        except OSError:
            return 'no log'

    def _pipe(self, conn, loaded, commands_for):
        """Send ``commands_for(keys)`` for every key of the scratch server, database by database
        and in SCAN batches (memory stays bounded), through ``redis-cli --pipe`` to the target.
        Returns (commands sent, errors, replies, redis-cli output)."""
        sent = 0
        argv = self._cli(['--pipe'], stdin=True)
        with commands.streaming(argv, self.log, env=self._env(), stdin=subprocess.PIPE) as proc:
            try:
                for db in sorted(loaded, key=lambda name: int(name[2:])):
                    conn.command('SELECT', db[2:])
                    proc.stdin.write(resp('SELECT', db[2:]))
                    sent += 1
                    cursor = b'0'
                    while True:
                        cursor, keys = conn.command('SCAN', cursor, 'COUNT', BATCH)
                        for args in commands_for(keys) if keys else ():
                            proc.stdin.write(resp(*args))
                            sent += 1
                        if cursor == b'0':
                            break
            except BrokenPipeError:
                pass  # redis-cli stopped: its output says why
            finally:
                try:
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
            out = proc.stdout.read(CHUNK).decode('utf-8', 'replace')
            rc = proc.wait()
            text = out + commands.stderr_tail(proc)
        match = re.search(r'errors: (\d+), replies: (\d+)', text)
        if not match:
            return sent, None, None, text
        errors = int(match.group(1)) or (1 if rc != 0 else 0)
        return sent, errors, int(match.group(2)), text

    def _copy_keys(self, conn, loaded, mode):
        """DUMP every key from the scratch server and RESTORE it into the target. Every command
        must be answered without error; in mode create a failure deletes the keys again (the
        target held none before)."""
        def restores(keys):
            replies = conn.pipeline([('PTTL', k) for k in keys] + [('DUMP', k) for k in keys])
            for key, ttl, payload in zip(keys, replies[:len(keys)], replies[len(keys):]):
                yield ['RESTORE', key, max(ttl, 0), payload] + (['REPLACE'] if mode == 'replace' else [])

        sent, errors, replies, text = self._pipe(conn, loaded, restores)
        if errors == 0 and replies == sent:
            return {'target': '%s:%s' % (self.host, self.port), 'restored_keys': sent - len(loaded)}
        undone = ''
        if mode == 'create':
            dummy, del_errors, dummy2, dummy3 = self._pipe(conn, loaded, lambda keys: [['DEL'] + list(keys)])
            undone = ('; the keys restored so far were deleted again' if del_errors == 0 else
                      '; deleting the keys restored so far failed too, the target holds part of the backup')
        if 'BUSYKEY' in text:
            raise TargetError('a key of the backup already exists in Redis at %s:%s (mode create)%s'
                              % (self.host, self.port, undone), 'use mode: replace')
        if errors is None:
            self._fail('loading the keys', text)
        raise TargetError('Redis at %s:%s refused %d of %d commands while loading the keys (%s)%s'
                          % (self.host, self.port, errors or sent - replies, sent,
                             ' '.join(text.split())[-300:], undone),
                          'see the Redis log (memory limit, ACL); mode replace overwrote keys of the backup\'s names'
                          if mode == 'replace' else 'the target holds no key of the backup')

    def sweep_scratch(self, sweep):
        """Partial snapshot copies of killed restores in ``data_dir`` (the scratch redis-server's
        directory is a work directory: swept with the others)."""
        if not self.data_dir or not os.path.isdir(self.data_dir):
            return sweep
        for name in sorted(os.listdir(self.data_dir)):
            path = os.path.join(self.data_dir, name)
            if re.match(r'^dump\.rdb\.offsite-\d+\.partial$', name):
                def remove(path=path):
                    leases.remove_file(path)
                    leases.remove_file(path + '.owner')
                sweep.judge('partial snapshot %s' % path, leases.read_owner(path + '.owner'), remove)
        return sweep

    def _place(self, path, mode):
        """Put the proven snapshot in place of ``dump.rdb`` with one rename; same owner as the
        directory (the redis user), 0600."""
        final = os.path.join(self.data_dir, 'dump.rdb')
        if self._servers_in(self.data_dir):
            raise TargetError('a redis-server started in %s while restoring' % self.data_dir,
                              'stop it; nothing was changed')
        partial = '%s.offsite-%d.partial' % (final, os.getpid())
        leases.write_owner(partial + '.owner')  # a killed run's copy is found by cleanup
        try:
            shutil.copyfile(path, partial)
            os.chmod(partial, 0o600)
            owner = os.stat(self.data_dir)
            os.chown(partial, owner.st_uid, owner.st_gid)
            with open(partial, 'rb') as handle:
                os.fsync(handle.fileno())
            previous = None
            if os.path.exists(final) and self.options.get('keep_previous'):
                previous = '%s.previous-%s' % (final, time.strftime('%Y%m%dT%H%M%SZ', time.gmtime()))
                os.link(final, previous)
            if mode == 'create' and os.path.exists(final):
                raise TargetError('%s appeared while restoring and mode is create' % final, 'it was left alone')
            os.rename(partial, final)
        except BaseException:
            if os.path.exists(partial):
                os.unlink(partial)
            raise
        finally:
            leases.remove_file(partial + '.owner')
        result = {'target': final, 'replaced': previous is not None or mode == 'replace'}
        if previous:
            result['previous'] = previous
        return result
