# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Files and directories: a streamed GNU tar of ``paths`` (permissions, owners, symlinks,
sparse files kept), restored into ``path`` after every member was checked not to escape it."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import contextlib
import os
import posixpath
import shutil
import tarfile
import uuid

from .. import commands
from ..errors import ConfigError, DiskFullError, IntegrityError, NotFoundError, SourceError, TargetError
from ..pipeline import free_bytes
from .base import Source, check_mode


class FilesSource(Source):
    type = 'files'

    def __init__(self, options, log):
        super(FilesSource, self).__init__(options, log)
        self.paths = [os.path.abspath(p) for p in self.options.get('paths') or []]
        self.target = self.options.get('path')

    def describe(self):
        return 'files %s' % ', '.join(self.paths) if self.paths else 'files into %s' % self.target

    # -- backup side ---------------------------------------------------------------------
    def artifact(self):
        return 'tar', 'tar'

    def probe(self):
        if not self.paths:
            raise ConfigError('a files source needs paths')
        for path in self.paths:
            if not os.path.lexists(path):
                raise NotFoundError('%s does not exist' % path, 'fix `paths`')
            if not os.access(path, os.R_OK):
                raise SourceError('%s is not readable by this user' % path, 'run as root (become) or fix `paths`')
        rc, out, dummy = commands.run([commands.which('tar', 'to archive files'), '--version'], self.log)
        return {'type': self.type, 'paths': self.paths, 'exclude': list(self.options.get('exclude') or []),
                'tool': 'tar', 'tool_version': out.splitlines()[0].split()[-1] if rc == 0 and out else None}

    @contextlib.contextmanager
    def dump(self):
        argv = [commands.which('tar', 'to archive files'), '--create', '--file=-', '--sparse',
                '--numeric-owner', '--directory=/']
        for pattern in self.options.get('exclude') or []:
            argv.append('--exclude=%s' % pattern)
        argv += ['--'] + [p.lstrip('/') or '.' for p in self.paths]
        with commands.streaming(argv, self.log) as proc:
            yield proc.stdout
            rc = proc.wait()
            if commands.killed_by(rc):
                raise SourceError('tar was killed by signal %s' % commands.killed_by(rc),
                                  'the partial archive was discarded; run it again')
            # 1 = a file changed while being read: the archive is still complete and usable
            if rc not in (0, 1):
                raise SourceError('tar failed: %s' % commands.stderr_tail(proc),
                                  'check that every path is readable')

    # -- restore side --------------------------------------------------------------------
    def check_target(self, mode):
        check_mode(mode)
        if not self.target:
            raise ConfigError('a files restore needs path (the directory to restore into)')
        exists = os.path.exists(self.target) and bool(os.listdir(self.target)) \
            if os.path.isdir(self.target) else os.path.exists(self.target)
        if exists and mode == 'create':
            raise TargetError('%s already exists and is not empty, and mode is create' % self.target,
                              'use mode: replace, or restore into an empty or new directory')
        return {'exists': exists}

    def restore(self, path, manifest, mode):
        target = os.path.abspath(self.target)
        parent = os.path.dirname(target)
        os.makedirs(parent, exist_ok=True)
        scratch = os.path.join(parent, '.%s.restore-%s' % (os.path.basename(target), uuid.uuid4().hex[:8]))
        include = self.options.get('include') or []
        try:
            with tarfile.open(path, 'r:') as archive:
                members = [m for m in archive.getmembers() if _wanted(m.name, include)]
                symlinks = set(posixpath.normpath(m.name) for m in members if m.issym())
                for member in members:
                    _check_member(member, symlinks)
                os.mkdir(scratch, 0o700)
                kwargs = {'filter': 'tar'} if hasattr(tarfile, 'tar_filter') else {}
                archive.extractall(scratch, members=members, numeric_owner=True, **kwargs)
        except tarfile.TarError as exc:
            shutil.rmtree(scratch, ignore_errors=True)
            raise IntegrityError('the archive cannot be read: %s' % exc, '%s was not touched' % target)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        return self._swap_in(scratch, target, len(members))

    def restore_tree(self, fetch, manifest, mode):
        """A snapshot directory (rsync repository): ``fetch(scratch)`` copies and proves it into
        a scratch directory next to the target, which is then swapped in like an archive."""
        if self.options.get('include'):
            raise ConfigError('include is not supported when restoring a snapshot directory',
                              'restore the whole snapshot into another path and pick from there')
        target = os.path.abspath(self.target)
        parent = os.path.dirname(target)
        os.makedirs(parent, exist_ok=True)
        needed = manifest.get('size') or 0
        if free_bytes(parent) < needed * 1.05:
            raise DiskFullError('%s has %d MiB free; the snapshot needs about %d MiB'
                                % (parent, free_bytes(parent) // 2 ** 20, needed // 2 ** 20),
                                'free space there; %s was not touched' % target)
        scratch = os.path.join(parent, '.%s.restore-%s' % (os.path.basename(target), uuid.uuid4().hex[:8]))
        os.mkdir(scratch, 0o700)
        try:
            fetch(scratch)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        return self._swap_in(scratch, target, manifest.get('files'))

    def _swap_in(self, scratch, target, count):
        """Put the complete scratch directory in the target's place (the old one is kept with
        keep_previous)."""
        previous = None
        replaced = os.path.lexists(target)
        if replaced:
            previous = '%s.previous-%s' % (target, uuid.uuid4().hex[:8])
            os.rename(target, previous)
        os.rename(scratch, target)
        if previous and not self.options.get('keep_previous'):
            shutil.rmtree(previous, ignore_errors=True)
            previous = None
        result = {'path': target, 'replaced': replaced, 'files': count}
        if previous:
            result['previous'] = previous
        return result


def _wanted(name, include):
    if not include:
        return True
    name = name.rstrip('/')
    return any(name == p.strip('/') or name.startswith(p.strip('/') + '/') for p in include)


def _check_member(member, symlinks=()):
    """Refuse any entry that would land outside the restore directory.

    ``symlinks``: the normalised names of the archive's symlinks. A link target that climbs
    ``..`` back out of one of them is refused: the kernel follows the symlink where a lexical
    check cannot (``s -> .`` then ``d -> s/../x`` is really ``<target>/../x``). Pythons without
    tarfile's extraction filter (Debian 12's 3.11.2) have only this check."""
    name = member.name
    parts = posixpath.normpath(name).split('/')
    if name.startswith('/') or '..' in parts:
        raise IntegrityError('the archive holds an entry that escapes the restore directory: %r' % name,
                             'refusing to restore it; nothing was written')
    if member.issym() or member.islnk():
        link = member.linkname
        base = posixpath.dirname(name) if member.issym() else ''
        resolved = posixpath.normpath(posixpath.join(base, link))
        if link.startswith('/') or resolved == '..' or resolved.startswith('../'):
            raise IntegrityError('the archive holds a link pointing outside the restore directory: %r -> %r'
                                 % (name, link), 'refusing to restore it; nothing was written')
        steps = [step for step in posixpath.join(base, link).split('/') if step not in ('', '.')]
        for i, step in enumerate(steps):
            if step == '..' and posixpath.normpath('/'.join(steps[:i]) or '.') in symlinks:
                raise IntegrityError('the archive holds a link that climbs out of the symlink %r: %r -> %r'
                                     % ('/'.join(steps[:i]), name, link),
                                     'refusing to restore it; nothing was written')
