# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The source interface: what is backed up (``dump``) is also what is restored into.

A source type is one file: it dumps into a byte stream and restores from a verified,
decompressed local file, always into a scratch place first, swapped in only on success.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import abc
import re
import uuid

from .. import commands, schema
from .. import scratch as leases
from ..errors import ConfigError
from ..schema import Capability, Option

RESTORE_MODES = ('create', 'replace')
# the database name's first 40 bytes + '_previous_' + 8 hex digits = 58 bytes at most: within
# PostgreSQL's 63-byte identifiers (longer ones are cut, so a scratch and a previous name of a
# long name would become the same) and MySQL's 64 characters
SCRATCH_PREFIX_BYTES = 40


class Source(object):
    """Base class. Subclasses set ``type``, ``DESCRIPTION`` and ``OPTIONS`` (the options they take
    besides those below; ``roles`` says whether dump, restore or both use one); ``required`` and
    ``secret_options`` are derived from ``OPTIONS``."""

    type = None
    DESCRIPTION = ()
    OPTIONS = (
        Option('mode', roles=('restore',), default='create', choices=RESTORE_MODES, description=[
            'C(create) fails if the target exists.',
            'C(replace) restores beside the target and swaps it in only after success.']),
        Option('keep_previous', 'bool', roles=('restore',), default=False, description=[
            'Keep the replaced database or directory under a C(_previous_...) name instead of dropping it.']),
    )
    required = ()
    secret_options = ()
    work_dir = None  # set by operations.dump: a directory on the backup's disk for spooling

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        schema.finish_class(cls)

    def __init__(self, options, log):
        self.options = schema.accept(type(self), options, 'source')
        self.log = log
        if log is not None:
            log.mask(self.secrets())

    # -- containers ----------------------------------------------------------------------
    def in_container(self):
        return bool(self.options.get('container'))

    def tool(self, name, purpose):
        """The path of a command-line tool, or its bare name when it runs inside the container
        (where this node's PATH means nothing)."""
        return name if self.in_container() else commands.which(name, purpose)

    def block_buffered(self, argv, stdin=False):
        """``argv``, a tool writing (``stdin``: reading) one of our pipes with stdio, run so that
        it moves 1 MiB per system call (``commands.block_buffered``); in a container as it is
        (the container's image may have no stdbuf)."""
        return list(argv) if self.in_container() else commands.block_buffered(argv, stdin=stdin)

    def exec_argv(self, argv, env_names=(), stdin=False):
        """``argv`` as run on this node: unchanged without ``container``, else wrapped the
        way the seed scripts do it, ``docker exec [-i]`` or ``docker compose exec -T``.

        Secrets cross into the container by NAME only (``-e PGPASSWORD``): docker takes the
        value from its own environment, so it never shows in argv or ``ps``. ``stdin``: the
        command reads our stdin (``docker exec`` needs ``-i`` for that; ``compose exec -T``
        always passes it)."""
        container = self.options.get('container')
        if not container:
            return list(argv)
        docker = commands.which('docker', 'to run commands in container %s' % container)
        compose_file = self.options.get('compose_file')
        compose_project = self.options.get('compose_project')
        if compose_file or compose_project:
            wrapped = [docker, 'compose']
            if compose_file:
                wrapped += ['-f', compose_file]
            if compose_project:
                wrapped += ['-p', compose_project]
            wrapped += ['exec', '-T']
        else:
            wrapped = [docker, 'exec'] + (['-i'] if stdin else [])
        for name in env_names:
            wrapped += ['-e', name]
        return wrapped + [container] + list(argv)

    def _database_or_databases(self, many):
        """Sets ``database`` (one) and ``databases`` (``['all']`` or names, described by ``many``):
        exactly one of them must be given."""
        self.database = self.options.get('database')
        self.databases = list(self.options.get('databases') or [])
        if bool(self.database) == bool(self.databases):
            raise ConfigError('a %s source or target needs either database (one database) or databases (%s)'
                              % (self.type, many), 'set exactly one of them')

    def secrets(self):
        return [self.options[name] for name in self.secret_options if self.options.get(name)]

    def describe(self):
        """Where the data lives, for messages and results (no secrets)."""
        raise NotImplementedError

    # -- backup side ---------------------------------------------------------------------
    def artifact(self):
        """(file extension before compression, format name) of what ``dump`` produces."""
        raise NotImplementedError

    def probe(self):
        """Connect, and return facts for the manifest (server version, size estimate...).
        Raises a clear error when the source cannot be dumped. Used by check mode too."""
        raise NotImplementedError

    def dump(self):
        """Context manager yielding a binary reader of the dump; on exit, raises if the
        producer failed (so a truncated dump never passes for a complete one)."""
        raise NotImplementedError

    def dump_facts(self):
        """Facts only known once ``dump`` finished (taken consistently with it), merged into
        the manifest's ``source``: ``counts`` for verification after a restore."""
        return {}

    # -- restore side --------------------------------------------------------------------
    def choose_backup(self, catalog, wanted):
        """The backup of ``catalog`` to restore for ``wanted`` (latest, an id, a time). A target
        whose own options say which backup fits (a recovery target time) chooses otherwise."""
        return catalog.select(wanted)

    def check_target(self, mode):
        """Before anything is downloaded: is the target reachable, and does ``mode`` allow
        the restore? Returns facts (e.g. ``exists``)."""
        raise NotImplementedError

    def restore(self, path, manifest, mode):
        """Restore the decompressed, checksum-verified artifact at ``path``."""
        raise NotImplementedError

    # -- drill side (offsite-backup drill) ----------------------------------------------
    def answer(self, sql):
        """The one value a verification query returns on the restored target, as text."""
        raise ConfigError('verification queries need a database that answers SQL; %s targets do not' % self.type,
                          'remove the set\'s drill queries, or drill it with playbooks/dr_drill.yml')

    def scratch_target(self, token, scratch_root):
        """The options of a scratch target for a drill of this source (never the source)."""
        raise ConfigError('offsite-backup drill cannot restore %s sets into a scratch target yet' % self.type,
                          'drill them with playbooks/dr_drill.yml')

    def drop(self):
        """Remove this (scratch) target entirely; best effort, never raises."""

    def sweep_scratch(self, sweep):
        """Remove the scratch work of killed restores of this target (``scratch.Sweep.judge``
        decides what is provably stale); returns ``sweep``. Types without such work keep this."""
        return sweep

    def scratch_pattern(self):
        """A regular expression (PostgreSQL's and MariaDB's alike) for the scratch database names
        of ``database``, or of any database with ``databases``."""
        suffix = '_(restore|previous)_[0-9a-f]{8}$'
        return suffix if self.databases else '^%s%s' % (re.escape(scratch_prefix(self.database)), suffix)

    def judge_databases(self, sweep, rows, where, drop):
        """``rows``: (scratch database name, its comment); ``drop(name)`` removes one."""
        for row in rows:
            name = row[0]
            owner = leases.parse_comment(row[-1])
            if owner is None and '_previous_' in name:
                continue  # kept on purpose (keep_previous): only a previous marked for dropping is swept
            sweep.judge('scratch database %s on %s' % (name, where), owner,
                        lambda name=name: drop(name))
        return sweep


# -- capabilities: declared interfaces a type has beyond dump and restore ---------------------------
class StreamingRestore(Capability, metaclass=abc.ABCMeta):
    """Restores while the artifact downloads: ``restore_stream`` reads a VerifiedStream whose
    checksum is proven before the swap, so no work file is needed."""

    NAME = 'restores while downloading'

    def streams(self):
        """Whether this target, as configured, can take the stream (else restore() gets a file)."""
        return True

    @abc.abstractmethod
    def restore_stream(self, stream, manifest, mode):
        """Restore from ``stream`` into a scratch place; swap in only once the stream is proven."""


class FollowingRestore(Capability, metaclass=abc.ABCMeta):
    """Restores from the work file while the download still writes it: what has arrived is
    loaded into a scratch place at once, the rest once ``fetch`` proved the checksum, and
    only then is anything swapped in."""

    NAME = 'restores from the work file as it arrives'

    def follows(self, manifest):
        """Whether this target, as configured, restores ``manifest``'s backup that way."""
        return True

    @abc.abstractmethod
    def restore_following(self, path, fetch, manifest, mode, where, layout=None):
        """``fetch(follow)`` writes the artifact, decompressed, into ``path`` and returns once
        its checksum is proven: in order, calling ``follow.tap`` with each chunk before it is
        written; or, given the manifest's ``layout`` (pglayout.Layout), frame by frame in any
        order (framefetch.FrameFetch: ``follow.placed``, ``follow.walk``)."""


class FileTree(Capability, metaclass=abc.ABCMeta):
    """Files and directories: its ``paths`` can be snapshotted into a TreeStore (module
    ``snapshot``) and a snapshot restored into it with ``restore_tree``."""

    NAME = 'file trees'

    @abc.abstractmethod
    def restore_tree(self, fetch, manifest, mode):
        """``fetch(scratch)`` fills and proves a scratch directory, which is then swapped in."""


class ReplaysArchive(Capability, metaclass=abc.ABCMeta):
    """Recovers from the backup set's archive beyond the backup itself (PostgreSQL's WAL, fetched
    by ``offsite-backup wal-fetch``): it is told where that archive is before ``check_target``."""

    NAME = 'replays the archive (point-in-time recovery)'

    @abc.abstractmethod
    def use_archive(self, name, repositories, encryption, signing):
        """The set ``name``, the repositories (option dicts) holding its archive, and the
        ``encryption`` / ``signing`` options of the restore, to read it with."""


# -- options that several types share (each type lists the ones it takes) -----------------------
def database_options(what):
    """``database`` and ``databases``, ``what`` telling what ``databases`` holds."""
    return (
        Option('database', description='The database to dump, or to restore into.'),
        Option('databases', 'list', elements='str', description=what),
    )


def server(port, user=None, user_text=None):
    """host, port and user of a database server; ``user`` its default user."""
    return (
        Option('host', default='127.0.0.1', description='Server host.'),
        Option('port', 'int', default=port, description='Server port.'),
        Option('user', default=user, description=user_text or 'User to connect as.'),
    )


def password(variable, env=()):
    return Option('password', secret=True, env=env, description='Password; passed to the tools in E(%s).' % variable)


CONNECT_TIMEOUT = Option('connect_timeout', 'int', description='Seconds to wait for a connection.')
CONTAINER = (
    Option('container', description=[
        'Run the database tools inside this container, the way the seed scripts do '
        '(C(docker exec -i <container> ...)). With O(.compose_project) or '
        'O(.compose_file), the name of the compose service instead, run with C(docker compose exec -T).',
        'Passwords cross into the container by name (C(-e PGPASSWORD)), never on the command line.',
        'Without O(.host), the tools connect to the server on the container\'s own socket.']),
    Option('compose_project', description='Compose project of O(.container) (C(docker compose -p)).'),
    Option('compose_file', 'path', description='Compose file of O(.container) (C(docker compose -f)).'),
)


def scratch_name(database, role, token=None):
    """``<database>_<role>_<8 hex>`` (role ``restore`` or ``previous``), the database name cut to
    SCRATCH_PREFIX_BYTES on a character boundary: distinct and whole for any name."""
    return '%s_%s_%s' % (scratch_prefix(database), role, token or uuid.uuid4().hex[:8])


def scratch_prefix(database):
    return database.encode('utf-8')[:SCRATCH_PREFIX_BYTES].decode('utf-8', 'ignore')


def check_mode(mode):
    if mode not in RESTORE_MODES:
        raise ConfigError('restore mode %r is not known' % (mode,), 'use create or replace')
