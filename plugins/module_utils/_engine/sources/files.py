# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Files and directories: a streamed GNU tar of ``paths`` (permissions with setuid, setgid and
sticky, numeric owners, mtimes, empty directories, hard links, symlinks, sparse files kept),
restored into ``path`` after every member was checked not to escape it (device files refused).

The manifest records the number of files and their bytes (counted from the tar stream itself as
it passes, so exactly what was archived); a restore counts what it extracted into its scratch
directory and refuses to swap it in on any difference."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import contextlib
import os
import posixpath
import shutil
import stat
import tarfile
import threading
import uuid

from .. import commands, lifeline
from ..errors import ConfigError, DiskFullError, IntegrityError, NotFoundError, SourceError, TargetError
from ..pipeline import free_bytes
from ..scratch import remove_file, sweep_beside, write_owner
from ..schema import Option
from .base import FileTree, Source, check_mode


class FilesSource(FileTree, Source):
    type = 'files'
    DESCRIPTION = ('C(files) for files and directories (a tar archive).',)
    OPTIONS = (
        Option('paths', 'list', elements='path', roles=('dump', 'snapshot'), description=[
            'Files and directories to archive (dump) or to copy (M(offsite.backup.snapshot)), absolute. They keep '
            'their full path inside the archive or snapshot (C(/srv/www) becomes C(srv/www)).']),
        Option('exclude', 'list', elements='str', roles=('dump', 'snapshot'), description=[
            'Patterns of what to leave out, for example C(*.tmp) or C(cache/): C(tar --exclude) patterns (dump), '
            'rsync exclude patterns (snapshot).']),
        Option('path', 'path', roles=('restore',), description='Directory to restore into.'),
        Option('include', 'list', elements='str', roles=('restore',), description='Restore only these paths of the archive.'),
    )

    def __init__(self, options, log):
        super(FilesSource, self).__init__(options, log)
        self.paths = [os.path.abspath(p) for p in self.options.get('paths') or []]
        self.target = self.options.get('path')
        self._counter = None

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
        for path in self.paths:
            inside = [other for other in self.paths if other != path and other.startswith(path.rstrip('/') + '/')]
            if inside or self.paths.count(path) > 1:
                raise ConfigError('paths lists %s and also %s inside it: tar would archive it twice'
                                  % (path, ', '.join(inside) or path), 'keep only the outer path')
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
            counter = _TarCounter(proc.stdout)
            try:
                yield counter
            finally:
                counter.close()
            self._counter = counter
            rc = proc.wait()
            if commands.killed_by(rc):
                raise SourceError('tar was killed by signal %s' % commands.killed_by(rc),
                                  'the partial archive was discarded; run it again')
            # 1 = a file changed while being read: the archive is still complete and usable
            if rc not in (0, 1):
                raise SourceError('tar failed: %s' % commands.stderr_tail(proc),
                                  'check that every path is readable')

    def dump_facts(self):
        if self._counter is None or self._counter.error:
            return {}
        return {'counts': {'files': self._counter.files, 'bytes': self._counter.bytes}}

    # -- drill side ----------------------------------------------------------------------
    def scratch_target(self, token, scratch_root):
        return {'type': self.type, 'path': os.path.join(scratch_root, 'drill_%s' % token)}

    def drop(self):
        if self.target:
            shutil.rmtree(self.target, ignore_errors=True)

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

    def sweep_scratch(self, sweep):
        """Scratch directories of killed restores next to ``path``."""
        return sweep_beside(self.target, sweep) if self.target else sweep

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
                expected = _member_counts(members)
                recorded = (manifest.get('source') or {}).get('counts')
                if recorded and not include and recorded != expected:
                    raise IntegrityError('the archive holds %(files)d files, %(bytes)d bytes' % expected
                                         + ' but its manifest records %(files)d files, %(bytes)d bytes' % recorded,
                                         '%s was not touched' % target)
                _make_scratch(scratch)
                kwargs = {'filter': _keep_mode} if hasattr(tarfile, 'tar_filter') else {}
                archive.extractall(scratch, members=members, numeric_owner=True, **kwargs)
            restored = _tree_counts(scratch)
            if restored != expected:
                raise IntegrityError('the restore holds %(files)d files, %(bytes)d bytes' % restored
                                     + ' but the backup holds %(files)d files, %(bytes)d bytes' % expected,
                                     '%s was not touched' % target)
        except tarfile.TarError as exc:
            _drop_scratch(scratch)
            raise IntegrityError('the archive cannot be read: %s' % exc, '%s was not touched' % target)
        except BaseException:
            _drop_scratch(scratch)
            raise
        return dict(self._swap_in(scratch, target, len(members)), verified=expected)

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
        _make_scratch(scratch)
        try:
            fetch(scratch)
        except BaseException:
            _drop_scratch(scratch)
            raise
        return self._swap_in(scratch, target, manifest.get('files'))

    def _swap_in(self, scratch, target, count):
        """Put the complete scratch directory in the target's place (the old one is kept with
        keep_previous)."""
        lifeline.check()
        previous = None
        replaced = os.path.lexists(target)
        if replaced:
            previous = '%s.previous-%s' % (target, uuid.uuid4().hex[:8])
            os.rename(target, previous)
        os.rename(scratch, target)
        remove_file(scratch + '.owner')
        if previous and not self.options.get('keep_previous'):
            shutil.rmtree(previous, ignore_errors=True)
            previous = None
        result = {'path': target, 'replaced': replaced, 'files': count}
        if previous:
            result['previous'] = previous
        return result


def _make_scratch(path):
    """The scratch directory (0700) and, beside it, the lease that lets a later run tell a
    killed restore's directory from a live one's."""
    os.mkdir(path, 0o700)
    write_owner(path + '.owner')


def _drop_scratch(path):
    shutil.rmtree(path, ignore_errors=True)
    remove_file(path + '.owner')


def _wanted(name, include):
    if not include:
        return True
    name = name.rstrip('/')
    return any(name == p.strip('/') or name.startswith(p.strip('/') + '/') for p in include)


def _keep_mode(member, path):
    """tarfile's ``tar`` extraction filter checks every entry once more (absolute, outside the
    directory, links), but also clears setuid, setgid, sticky and group/other write: files
    would not come back as they were. Keep its checks, put the archived mode back. Owners
    (numeric, applied as root), mtimes, empty directories and hard links are kept anyway."""
    checked = tarfile.tar_filter(member, path)
    if checked is None or member.mode is None or checked.mode == member.mode:
        return checked
    return checked.replace(mode=member.mode, deep=False)


def _check_member(member, symlinks=()):
    """Refuse any entry that would be written outside the restore directory.

    ``symlinks``: the normalised names of the archive's symlinks. A symlink's target is data:
    it is restored as it was (absolute, or pointing up and out), because extraction never
    follows one - every entry that would be written through a symlink of the archive (``l``
    then ``l/x``, or ``l/../x``), or over one, is refused, and a hard link may not point
    through or at a symlink (the kernel would follow it). Pythons without tarfile's
    extraction filter (Debian 12's 3.11.2) have only this check."""
    name = member.name
    parts = posixpath.normpath(name).split('/')
    if name.startswith('/') or '..' in parts:
        raise IntegrityError('the archive holds an entry that escapes the restore directory: %r' % name,
                             'refusing to restore it; nothing was written')
    if member.ischr() or member.isblk():
        raise IntegrityError('the archive holds a device file: %r' % name,
                             'refusing to restore it (a device node gives access to hardware or kernel '
                             'memory); exclude it at backup time; nothing was written')
    through = _through_symlink(name, symlinks)
    if through or (not member.issym() and posixpath.normpath(name) in symlinks):
        raise IntegrityError('the archive holds an entry written through or over its symlink %r: %r'
                             % (through or posixpath.normpath(name), name),
                             'refusing to restore it; nothing was written')
    if member.islnk():
        link = member.linkname
        resolved = posixpath.normpath(link)
        if link.startswith('/') or resolved == '..' or resolved.startswith('../'):
            raise IntegrityError('the archive holds a link pointing outside the restore directory: %r -> %r'
                                 % (name, link), 'refusing to restore it; nothing was written')
        through = _through_symlink(link, symlinks, itself=True)
        if through:
            raise IntegrityError('the archive holds a hard link through its symlink %r: %r -> %r'
                                 % (through, name, link), 'refusing to restore it; nothing was written')


def _through_symlink(path, symlinks, itself=False):
    """The first leading part of ``path`` (as the kernel walks it, before any ``..`` is
    applied) that is one of ``symlinks``; with ``itself``, ``path`` as a whole counts too."""
    steps = [step for step in path.split('/') if step not in ('', '.')]
    for i in range(1, len(steps) + (1 if itself else 0)):
        prefix = posixpath.normpath('/'.join(steps[:i]))
        if prefix in symlinks:
            return prefix
    return None


def _member_counts(members):
    """Files (regular files and hard links: each a path to a file) and their bytes (a hard
    link's bytes are its target's, counted once), as the tar records them."""
    files = [m for m in members if m.isreg() or m.islnk()]
    return {'files': len(files), 'bytes': sum(m.size for m in files if m.isreg())}


def _tree_counts(root):
    """The same, of an extracted tree: regular files, bytes of each distinct inode."""
    files, inodes = 0, {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            info = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(info.st_mode):
                files += 1
                inodes[(info.st_dev, info.st_ino)] = info.st_size
    return {'files': files, 'bytes': sum(inodes.values())}


class _TarCounter(object):
    """A reader passing the tar stream on unchanged while a thread parses a copy of it
    (tarfile in stream mode, through a pipe: bounded memory) and counts its files."""

    def __init__(self, reader):
        self.reader = reader
        self.files = self.bytes = 0
        self.error = None
        read_fd, write_fd = os.pipe()
        self._copy = os.fdopen(write_fd, 'wb')
        self._thread = threading.Thread(target=self._count, args=(os.fdopen(read_fd, 'rb'),))
        self._thread.daemon = True
        self._thread.start()

    def read(self, size=-1):
        data = self.reader.read(size)
        if data and self._copy:
            try:
                self._copy.write(data)
            except (BrokenPipeError, ValueError):
                self._copy = None  # the counter gave up: it recorded why
        return data

    def close(self):
        if self._copy:
            try:
                self._copy.close()
            except BrokenPipeError:
                pass
            self._copy = None
        self._thread.join()

    def _count(self, pipe):
        try:
            with tarfile.open(fileobj=pipe, mode='r|') as archive:
                counts = _member_counts(iter(archive))
            self.files, self.bytes = counts['files'], counts['bytes']
        except Exception as exc:  # the dump itself decides success; no counts then
            self.error = exc
        finally:
            while pipe.read(1024 * 1024):  # drain: tar pads after its end marker
                pass
            pipe.close()
