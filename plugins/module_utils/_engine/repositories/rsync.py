# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""rsync over SSH: artifacts as files, file trees as hard-linked snapshot directories.

Every operation is one rsync transfer and nothing else, so a key that the server forces
through ``rrsync`` (``command="rrsync /srv/backups/host1",restrict`` in authorized_keys) works:
such a key can run no shell, no ``mv``, no ``rm``. Hence:

- a file lands atomically because rsync itself writes ``.<name>.XXXXXX`` and renames it;
- a snapshot is written as ``<name>/<id>.<rand>.partial/`` (``--link-dest`` the previous
  snapshot: unchanged files become hard links), then "renamed" by a second transfer into
  ``<name>/<id>/`` with ``--link-dest`` the partial (hard links only, no data), and the
  partial is deleted;
- deleting is a transfer of an empty directory with ``--delete`` and a filter that lets
  only the one name be deleted;
- listing is ``rsync --list-only`` run with TZ=UTC (it prints times in the client's zone);
- an upload does not keep the dump's mtime: the stored file is as old as its upload, so
  retention never takes an old backup being uploaded for an abandoned one.

The manifest ``<name>/<id>.manifest.json`` is written last, as for every repository; for a
snapshot its ``size`` is the total of the files and its ``sha256`` is that of the sorted
listing (type, size, path of every entry), which a restore recomputes on what it received.
The host key is always pinned (``known_hosts`` or ``host_key``); a key passphrase reaches
ssh through ``SSH_ASKPASS`` and the environment, never through argv.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import contextlib
import datetime
import hashlib
import os
import posixpath
import re
import shlex
import shutil
import stat as stat_module
import subprocess
import tempfile
import uuid

from .. import commands
from .. import manifest as mf
from ..errors import ConfigError, DiskFullError, IntegrityError, NotFoundError, RepositoryError, UnreachableError
from ..pipeline import CHUNK, HashingWriter, copy
from .base import DIRECTORY, SSH, LocalFileStore, ObjectInfo, PutResult, Repository, TreeStore, checked_key

# one line of `rsync --list-only --no-h`: mode, size, date, time, name
_LIST_LINE = re.compile(r'^(?P<mode>[-dlpscb][-rwxsStT]{9})\s+(?P<size>\d+) (?P<date>\d{4}/\d\d/\d\d) '
                        r'(?P<time>\d\d:\d\d:\d\d) (?P<name>.*)$')
# an --itemize-changes line: what would change (not the --stats lines around it)
_ITEMIZED = re.compile(r'^(\*deleting|[<>ch.][fdLDS]\S{9}) ')
_ESCAPE = re.compile(br'\\#([0-7]{3})')
# stderr of ssh and rsync -> what it means for the operator
_FULL = ('No space left on device', 'Disk quota exceeded')
# a connected server that stops answering: ssh gives up after this many keepalives of `timeout`
ALIVE_COUNT = 3
_ASKPASS = '#!/bin/sh\nprintf \'%s\\n\' "$OFFSITE_SSH_PASSPHRASE"\n'


class RsyncRepository(LocalFileStore, TreeStore, Repository):
    type = 'rsync'
    DESCRIPTION = ('C(rsync) is a directory on an SSH server written with rsync (also through an C(rrsync) '
                   'forced command); file trees are stored as hard-linked snapshots (M(offsite.backup.snapshot)).',)
    OPTIONS = SSH + (DIRECTORY,)
    TOOL = 'rsync'

    def __init__(self, options, log=None):
        super(RsyncRepository, self).__init__(options, log)
        self.host = self.options['host']
        self.port = int(self.options.get('port', 22))
        self.user = self.options['user']
        self.root = self.options['path'].rstrip('/') or '/'
        if not self.options.get('known_hosts') and not self.options.get('host_key'):
            raise ConfigError('rsync repository %s has neither known_hosts nor host_key' % self.location(),
                              'pin the server\'s key: host_key: "ssh-ed25519 AAAA..." or a known_hosts '
                              'file (ssh-keyscan -p %d %s); offsite.backup never trusts a key blindly'
                              % (self.port, self.host))
        self._scratch = None
        self._anchored = False  # --link-dest anchored at the rrsync directory (see _linked)

    def longest_wait(self):
        """ssh's ConnectTimeout bounds connecting and the SSH handshake; a connected server
        that stops answering is given up after ALIVE_COUNT keepalives, ``timeout`` apart."""
        return self.timeout * (1 + ALIVE_COUNT)

    def location(self, key=''):
        path = self._path(key)
        return 'rsync://%s@%s:%d%s%s' % (self.user, self.host, self.port,
                                         '' if path.startswith('/') else '/~/', path)

    def _path(self, key):
        if not key:
            return self.root
        return key if self.root == '.' else posixpath.join(self.root, key)

    def _remote(self, key, directory=False):
        return '%s@%s:%s%s' % (self.user, self.host, self._path(checked_key(key)), '/' if directory else '')

    # -- ssh and rsync ------------------------------------------------------------------
    def scratch(self):
        """A private (0700) local directory for this repository's temporary files."""
        if self._scratch is None:
            self._scratch = tempfile.mkdtemp(prefix='offsite-rsync-')
        return self._scratch

    def _ssh_command(self):
        known = []
        if self.options.get('known_hosts'):
            path = os.path.expanduser(self.options['known_hosts'])
            if not os.path.isfile(path):
                raise ConfigError('known_hosts file %s does not exist' % path,
                                  'create it with ssh-keyscan -p %d %s > %s' % (self.port, self.host, path))
            known.append(path)
        if self.options.get('host_key'):
            parts = self.options['host_key'].split()
            if len(parts) < 2:
                raise ConfigError('host_key must look like "ssh-ed25519 AAAA..."')
            pinned = os.path.join(self.scratch(), 'known_hosts')
            name = self.host if self.port == 22 else '[%s]:%d' % (self.host, self.port)
            with open(pinned, 'w') as handle:
                handle.write('%s %s %s\n' % (name, parts[0], parts[1]))
            known.append(pinned)
        argv = [commands.which('ssh', 'for rsync repositories'), '-p', str(self.port),
                '-o', 'StrictHostKeyChecking=yes', '-o', 'UserKnownHostsFile=%s' % ' '.join(known),
                '-o', 'GlobalKnownHostsFile=/dev/null', '-o', 'ConnectTimeout=%d' % self.timeout,
                '-o', 'ServerAliveInterval=%d' % self.timeout, '-o', 'ServerAliveCountMax=%d' % ALIVE_COUNT,
                '-o', 'PasswordAuthentication=no',
                '-o', 'KbdInteractiveAuthentication=no']
        # with a passphrase ssh must be allowed to ask (SSH_ASKPASS answers from the environment)
        argv += ['-o', 'BatchMode=%s' % ('no' if self.options.get('private_key_passphrase') else 'yes')]
        # one SSH connection for all the transfers of this run (a snapshot takes about ten);
        # also keeps a Storage Box well below its connection limit
        argv += ['-o', 'ControlMaster=auto', '-o', 'ControlPath=%s' % self._control_path(),
                 '-o', 'ControlPersist=60']
        key_file = self.options.get('private_key')
        if key_file:
            key_file = os.path.expanduser(key_file)
            if not os.path.isfile(key_file):
                raise ConfigError('private key %s does not exist' % key_file)
            argv += ['-i', key_file, '-o', 'IdentitiesOnly=yes']
        return ' '.join(shlex.quote(a) for a in argv)

    def _env(self):
        passphrase = self.options.get('private_key_passphrase')
        if not passphrase:
            return {}
        askpass = os.path.join(self.scratch(), 'askpass')
        if not os.path.exists(askpass):
            with open(askpass, 'w') as handle:
                handle.write(_ASKPASS)
            os.chmod(askpass, 0o700)
        return {'SSH_ASKPASS': askpass, 'SSH_ASKPASS_REQUIRE': 'force', 'OFFSITE_SSH_PASSPHRASE': passphrase,
                'DISPLAY': os.environ.get('DISPLAY', 'none')}

    def rsync(self, args, doing, key, missing_ok=False):
        """Run rsync with our ssh; returns its output, or None when ``missing_ok`` and the
        remote path does not exist. Failures become clear errors."""
        argv = [commands.which('rsync', 'for rsync repositories'), '-e', self._ssh_command()] + list(args)
        # --list-only prints times in the client's local zone: in UTC they parse as what they are
        rc, out, err = commands.run(argv, self.log, env=dict(self._env(), TZ='UTC'), stdin=subprocess.DEVNULL)
        if rc != 0:
            error = self._error(rc, err, doing, key)
            if missing_ok and isinstance(error, NotFoundError):
                return None
            raise error
        return out

    def _error(self, rc, err, doing, key):
        where = '%s:%d' % (self.host, self.port)
        text = err.strip()
        tail = text[-600:]
        if any(marker in text for marker in _FULL):
            return DiskFullError('the rsync server has no space left while %s %s' % (doing, self.location(key)),
                                 'free space there or apply retention; nothing was marked complete')
        if 'REMOTE HOST IDENTIFICATION HAS CHANGED' in text:
            return RepositoryError('the host key of %s does NOT match the pinned one' % where,
                                   'this can be a man-in-the-middle; if the server was really reinstalled, '
                                   'verify its new key out of band and update known_hosts/host_key')
        if 'Host key verification failed' in text:
            return RepositoryError('the host key of %s is unknown' % where,
                                   'add it to known_hosts (ssh-keyscan -p %d %s, checked out of band) or '
                                   'set host_key' % (self.port, self.host))
        if 'Permission denied (publickey' in text or 'Too many authentication failures' in text:
            return RepositoryError('%s refused the SSH key %s for user %s'
                                   % (where, self.options.get('private_key') or '(default)', self.user),
                                   'install the public key on the server (ssh-copy-id, or install-ssh-key on a '
                                   'Storage Box) or fix `user`/`private_key`')
        if 'incorrect passphrase' in text or 'Load key' in text:
            return ConfigError('cannot load the private key %s' % self.options.get('private_key'),
                               'check the file and private_key_passphrase')
        if rc == 255 or 'Connection refused' in text or 'Could not resolve' in text or 'timed out' in text:
            return UnreachableError('cannot reach %s over SSH: %s' % (where, tail),
                                    'check host, port and the firewall; ' + self.unreachable_hint())
        # 23: rsync's "some files were not transferred"; 12: rrsync refusing a missing path
        if 'No such file or directory' in text and rc in (23, 12):
            return NotFoundError('%s does not exist' % self.location(key))
        if 'Permission denied (13)' in text or 'Operation not permitted' in text:
            return RepositoryError('permission denied while %s %s' % (doing, self.location(key)),
                                   'the SSH user may only write its own directory; fix `path`')
        return RepositoryError('rsync failed (exit %d) while %s %s: %s' % (rc, doing, self.location(key), tail))

    # -- the five verbs -----------------------------------------------------------------
    def put(self, key, reader, size, sha256, local=None):
        # upload names the local file (``local``, see LocalFileStore): rsync sends that file
        # itself; anything else is spooled to a private file first
        spooled = None
        if local is not None and os.path.isfile(local) and os.path.getsize(local) == size:
            while reader.read(CHUNK):
                pass  # the caller hashes what it feeds us: proves the file we send is the dump
        else:
            spooled = local = os.path.join(self.scratch(), 'put-%s' % uuid.uuid4().hex[:8])
            with open(local, 'wb') as out:
                os.fchmod(out.fileno(), 0o600)
                writer = HashingWriter(out)
                copy(reader, writer)
            if writer.size != size or writer.hexdigest() != sha256:
                os.unlink(local)
                raise IntegrityError('the data given for %s has %d bytes and another checksum than expected'
                                     % (self.location(key), writer.size), 'nothing was uploaded')
        try:
            # no --times: the stored file is as old as its upload, not as the dump; retention
            # takes an old artifact without manifest for an abandoned upload
            self.rsync(['--chmod=F600,D700', '--mkpath', local, self._remote(key)], 'uploading', key)
            try:
                landed = self.stat(key)
                self.check_landed(key, size, sha256, landed.size if landed else None)
                if self.verify == 'full':
                    self._check_content(local, key, sha256)
            except BaseException:
                self.delete(key)
                raise
        finally:
            if spooled:
                os.unlink(spooled)
        return PutResult(key, size, sha256, 'rsync checksum re-read' if self.verify == 'full' else 'size')

    def _check_content(self, local, key, sha256):
        """A dry run with --checksum makes the server read its copy back and compare it with
        ours: rsync would send the file again (itemized ``<f``) only if the contents differ.
        The file is offered under its remote name, into its directory (rrsync itemizes a
        file-to-file dry run as a new file)."""
        offered = os.path.join(self.scratch(), 'verify-%s' % uuid.uuid4().hex[:8])
        os.mkdir(offered, 0o700)
        try:
            os.symlink(os.path.abspath(local), os.path.join(offered, posixpath.basename(key)))
            out = self.rsync(['--dry-run', '--checksum', '--itemize-changes', '--copy-links',
                              os.path.join(offered, posixpath.basename(key)),
                              self._remote(posixpath.dirname(key), directory=True)], 'verifying', key)
        finally:
            shutil.rmtree(offered, ignore_errors=True)
        if any(line.startswith('<') for line in out.splitlines()):  # '<f': would send the file again
            raise IntegrityError('%s does not read back with the checksum that was sent' % self.location(key),
                                 'the store corrupted the upload; it was not marked complete')

    @contextlib.contextmanager
    def get(self, key):
        local = os.path.join(self.scratch(), 'get-%s' % uuid.uuid4().hex[:8])
        try:
            self.rsync(['--chmod=F600', self._remote(key), local], 'downloading', key)
            with open(local, 'rb') as handle:
                yield handle
        finally:
            if os.path.exists(local):
                os.unlink(local)

    def list(self, prefix):
        """Files as objects; a snapshot directory ``<name>/<id>`` (or a partial one) as one
        object whose size is the total of its files."""
        head = prefix.rpartition('/')[0]
        out = self.rsync(['--list-only', '--no-h', self._remote(head, directory=True)], 'listing', head,
                         missing_ok=True)
        if out is None:
            if head:
                return []
            raise NotFoundError('repository directory %s does not exist' % self.location(),
                                'create it or fix `path`')
        found = []
        for kind, size, modified, name in parse_listing(out):
            key = '%s/%s' % (head, name) if head else name
            if name == '.':
                continue
            if kind == 'd':
                if (key + '/').startswith(prefix) or prefix.startswith(key + '/'):
                    found += self._list_set(key, prefix)
                elif key.startswith(prefix):
                    found.append(self.stat(key))
            elif kind == 'f' and key.startswith(prefix):
                found.append(ObjectInfo(key, size, modified))
        return found

    def _list_set(self, directory, prefix):
        """One recursive listing of a set directory: files and snapshot directories."""
        out = self.rsync(['--list-only', '--no-h', '--recursive', self._remote(directory, directory=True)],
                         'listing', directory, missing_ok=True)
        if out is None:
            return []
        top = {}
        for kind, size, modified, name in parse_listing(out):
            if name == '.':
                continue
            first, sep, rest = name.partition('/')
            key = '%s/%s' % (directory, first)
            if not sep:
                if kind in ('f', 'd'):
                    top[key] = ObjectInfo(key, size if kind == 'f' else 0, modified, {'directory': kind == 'd'})
            elif kind == 'f' and key in top:
                info = top[key]
                top[key] = info._replace(size=info.size + size)
        return [info for key, info in sorted(top.items()) if key.startswith(prefix)]

    def stat(self, key):
        out = self.rsync(['--list-only', '--no-h', '--recursive', self._remote(key)], 'inspecting', key,
                         missing_ok=True)
        if out is None:
            return None
        entries = list(parse_listing(out))
        if not entries:
            return None
        kind, size, modified, name = entries[0]
        if kind == 'd':
            size = sum(e[1] for e in entries if e[0] == 'f')
        return ObjectInfo(key, size, modified, {'directory': kind == 'd'})

    def delete(self, key):
        """rsync an empty directory onto the key's parent with --delete, filtered so that only
        this one name (a file, or a directory and all it holds) may be deleted."""
        parent, base = posixpath.split(key)
        if not base or re.search(r'[*?\[\\]', base):
            raise ConfigError('cannot delete %r: not a plain name' % key)
        empty = os.path.join(self.scratch(), 'empty')
        if not os.path.isdir(empty):
            os.mkdir(empty, 0o700)
        self.rsync(['--recursive', '--delete', '--include=/%s' % base, '--include=/%s/***' % base,
                    '--exclude=*', empty + '/', self._remote(parent, directory=True)], 'deleting', key, missing_ok=True)

    def _control_path(self):
        return os.path.join(self.scratch(), 'ssh-%C')

    def close(self):
        if self._scratch is not None:
            if any(name.startswith('ssh-') for name in os.listdir(self._scratch)):
                ssh = shutil.which('ssh')
                if ssh:
                    try:  # ends the shared connection; its outcome changes nothing
                        commands.run([ssh, '-o', 'ControlPath=%s' % self._control_path(), '-O', 'exit',
                                      '-p', str(self.port), '%s@%s' % (self.user, self.host)],
                                     self.log, stdin=subprocess.DEVNULL, timeout=30)
                    except subprocess.TimeoutExpired:
                        pass
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    # -- file trees --------------------------------------------------------------------
    def snapshot(self, name, paths, exclude, created, previous, check_mode):
        """Write a tree snapshot ``<name>/<id>`` of the local ``paths`` (kept with their full
        path, as the files source's tar does). ``previous``: id of the newest complete
        snapshot, used as --link-dest. Returns facts for the manifest, or, when nothing
        changed since ``previous`` or in check mode, what would be transferred."""
        sources = _source_args(paths)
        filters = ['--exclude=%s' % pattern for pattern in exclude or []]
        # --no-implied-dirs: the parents of a path (/srv of /srv/www) are not part of the tree;
        # their times change with unrelated files and would make every run look changed
        copy_args = ['--archive', '--relative', '--no-implied-dirs', '--hard-links', '--numeric-ids',
                     '--mkpath'] + filters
        if previous:
            out = self.rsync(copy_args + ['--dry-run', '--itemize-changes', '--delete', '--stats'] + sources
                             + [self._remote('%s/%s' % (name, previous), directory=True)], 'comparing', name)
            compared = parse_stats(out)
            changes = [line for line in out.splitlines() if _ITEMIZED.match(line)]
            if not changes:
                return {'status': 'unchanged', 'changes': 0}
            if check_mode:
                return {'status': 'would snapshot', 'changes': len(changes)}
        elif check_mode:
            return {'status': 'would snapshot', 'changes': None}
        taken = set(mf.id_from_key(entry) for entry in self._names(name))
        seq = 0
        while mf.make_id(name, created, seq) in taken:
            seq += 1
        backup_id = mf.make_id(name, created, seq)
        partial = '%s.%s%s' % (backup_id, uuid.uuid4().hex[:8], mf.PARTIAL_SUFFIX)
        try:
            out = self._linked(copy_args + ['--stats'], sources, name, partial, previous, 'writing')
            stats = parse_stats(out)
            passes = [compared, stats] if previous else [stats]
            # the "rename": hard links to the complete partial, no data moves
            passes.append(parse_stats(self._linked(copy_args + ['--stats'], sources, name, backup_id, partial,
                                                   'completing')))
        except BaseException:
            self._delete_quietly('%s/%s' % (name, partial))
            self._delete_quietly('%s/%s' % (name, backup_id))
            raise
        self._delete_quietly('%s/%s' % (name, partial))  # retention removes it if this fails
        out = self.rsync(['--list-only', '--no-h', '--recursive',
                          self._remote('%s/%s' % (name, backup_id), directory=True)], 'listing', name)
        entries = list(parse_listing(out))
        # everything on the wire: the comparison, the copy and the "rename" (file lists included)
        stats['wire_bytes'] = sum(p.get('bytes_sent', 0) + p.get('bytes_received', 0) for p in passes)
        return dict(stats, status='snapshot', id=backup_id, artifact_key='%s/%s' % (name, backup_id),
                    files=sum(1 for e in entries if e[0] == 'f'), size=sum(e[1] for e in entries if e[0] == 'f'),
                    sha256=listing_digest((e[0], e[1], e[3]) for e in entries))

    def _linked(self, args, sources, name, target, link, doing):
        """rsync ``sources`` into ``<name>/<target>/`` hard-linking what ``<name>/<link>/``
        already holds. --link-dest is relative to the destination (``../<link>``), except
        that rrsync refuses ``..`` and wants it anchored at its directory (``/<path>/...``):
        that form is used once rrsync asked for it."""
        def link_dest():
            if not link:
                return []
            if self.root.startswith('/'):
                return ['--link-dest=%s' % posixpath.join(self.root, name, link)]
            if self._anchored:
                return ['--link-dest=/%s' % posixpath.normpath(posixpath.join(self.root, name, link))]
            return ['--link-dest=../%s' % link]
        destination = [self._remote('%s/%s' % (name, target), directory=True)]
        try:
            return self.rsync(args + link_dest() + sources + destination, doing, name)
        except RepositoryError as exc:
            if not link or self._anchored or 'in --link-dest' not in exc.message:
                raise
        self._anchored = True
        return self.rsync(args + link_dest() + sources + destination, doing, name)

    def _names(self, directory):
        """Names directly in ``directory`` (none when it does not exist)."""
        out = self.rsync(['--list-only', '--no-h', self._remote(directory, directory=True)], 'listing',
                         directory, missing_ok=True)
        return [] if out is None else [e[3] for e in parse_listing(out) if e[3] != '.']

    def _delete_quietly(self, key):
        try:
            self.delete(key)
        except Exception:
            pass

    def fetch_tree(self, key, directory, manifest):
        """Copy the snapshot ``key`` into the local ``directory`` and prove it is the one the
        manifest describes. Owners are not copied: files belong to the user restoring."""
        self.rsync(['--recursive', '--links', '--perms', '--times', '--devices', '--specials', '--hard-links',
                    self._remote(key, directory=True), directory.rstrip('/') + '/'], 'downloading', key)
        digest = listing_digest(local_listing(directory))
        if digest != manifest.get('sha256'):
            raise IntegrityError('the snapshot %s does not match its manifest (listing sha256 %s, expected %s)'
                                 % (self.location(key), digest, manifest.get('sha256')),
                                 'the copy on the server was changed or damaged; restore another backup')


def _source_args(paths):
    if not paths:
        raise ConfigError('a snapshot needs paths (the directories or files to copy)')
    args = []
    for path in paths:
        path = os.path.abspath(path)
        if not os.path.lexists(path):
            raise NotFoundError('%s does not exist' % path, 'fix `paths`')
        args.append(path)
    return args


def parse_listing(text):
    """(kind, size, modified, name) of each line of ``rsync --list-only --no-h``: kind is
    ``f`` (file), ``d``, ``l`` (symlink) or ``o`` (other)."""
    for line in text.splitlines():
        match = _LIST_LINE.match(line)
        if not match:
            continue
        mode = match.group('mode')[0]
        kind = {'-': 'f', 'd': 'd', 'l': 'l'}.get(mode, 'o')
        modified = datetime.datetime.strptime(match.group('date') + match.group('time'), '%Y/%m/%d%H:%M:%S')
        name = match.group('name')
        if kind == 'l':
            name = name.split(' -> ', 1)[0]
        # rsync writes unprintable bytes (and non-ASCII ones under LANG=C) as \#ooo
        raw = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 8)]), name.encode('utf-8', 'surrogateescape'))
        name = raw.decode('utf-8', 'surrogateescape')
        yield kind, int(match.group('size')), modified.replace(tzinfo=datetime.timezone.utc), name


def listing_digest(entries):
    """sha256 of the sorted "kind size path" lines of files, directories and symlinks (sizes
    of files only: a directory's size depends on the file system)."""
    lines = sorted('%s %d %s\n' % (kind, size if kind == 'f' else 0, path)
                   for kind, size, path in entries if kind in ('f', 'd', 'l') and path != '.')
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode('utf-8', 'surrogateescape'))
    return digest.hexdigest()


def local_listing(root):
    """(kind, size, relative path) of everything under ``root``, symlinks not followed."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            if stat_module.S_ISLNK(st.st_mode):
                yield 'l', 0, rel
            elif stat_module.S_ISDIR(st.st_mode):
                yield 'd', 0, rel
            elif stat_module.S_ISREG(st.st_mode):
                yield 'f', st.st_size, rel


def parse_stats(text):
    """The transfer figures of ``rsync --stats``."""
    wanted = {'Number of files': 'entries', 'Number of regular files transferred': 'files_transferred',
              'Total file size': 'source_bytes', 'Total transferred file size': 'transferred_bytes',
              'Total bytes sent': 'bytes_sent', 'Total bytes received': 'bytes_received'}
    stats = {}
    for line in text.splitlines():
        label, sep, value = line.partition(':')
        if sep and label.strip() in wanted:
            number = re.match(r'\s*([\d,]+)', value)
            if number:
                stats[wanted[label.strip()]] = int(number.group(1).replace(',', ''))
    return stats
