# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``dump`` use case: a source into the local directory (the local copy of 3-2-1),
manifest last; and the per-set lock every run of a backup set takes."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import contextlib
import errno
import os
import time
import uuid

from .. import manifest as mf
from .. import pglayout
from ..commands import CommandLog
from ..encryption import ENCRYPTION_EXT_FOR, Encryption
from ..errors import DiskFullError, LockedError, from_os_error
from ..pipeline import COMPRESSION_EXT_FOR, HashingWriter, compress, remove_quietly, validate_compression
from ..signing import Signer
from ..sources import open_source

try:
    import fcntl
except ImportError:  # not on Windows; the engine runs on Linux nodes
    fcntl = None


@contextlib.contextmanager
def set_lock(directory, name):
    """One run per backup set and directory at a time; the lock dies with the process."""
    path = os.path.join(directory, '.%s.lock' % name)
    try:
        handle = open(path, 'a+')
    except OSError as exc:
        raise from_os_error(exc, 'cannot open the lock file of backup set %s' % name)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (IOError, OSError) as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                handle.seek(0)
                holder = handle.read().strip() or 'unknown'
                raise LockedError('another run of backup set %s holds %s (%s)' % (name, path, holder),
                                  'wait for it to finish; runs never overlap')
            raise
        handle.seek(0)
        handle.truncate()
        handle.write('pid %d since %s\n' % (os.getpid(), mf.format_time(mf.utcnow())))
        handle.flush()
        yield
    finally:
        handle.close()


def dump(name, source, dest, compression='zstd', level=None, tags=None, threads=None,
         encryption=None, signing=None, check_mode=False, log=None, tee=None):
    """Dump ``source`` into the local directory ``dest`` (the local copy of 3-2-1).

    ``tee`` (see backup()) is told when the artifact's partial file is opened, and gets its
    bytes as they are written."""
    log = log or CommandLog()
    mf.validate_name(name)
    validate_compression(compression, level)
    enc = Encryption(encryption, log)
    encryption_info = enc.describe()  # bad recipients fail here, before the source is touched
    signer = Signer(signing, log)  # so does a bad signing key
    src = open_source(source, log)
    started = time.time()
    facts = src.probe()
    extension, fmt = src.artifact()
    extension += COMPRESSION_EXT_FOR[compression] + ENCRYPTION_EXT_FOR[enc.scheme]
    created = mf.utcnow()
    set_dir = os.path.join(os.path.abspath(dest), name)
    backup_id = mf.make_id(name, created)
    predicted = {'id': backup_id, 'name': name, 'created': mf.format_time(created),
                 'path': os.path.join(set_dir, '%s.%s' % (backup_id, extension)),
                 'manifest': os.path.join(set_dir, backup_id + mf.MANIFEST_SUFFIX),
                 'compression': compression, 'format': fmt, 'source': facts, 'tags': list(tags or []),
                 'encryption': encryption_info, 'signed_by': signer.public_key}
    if check_mode:
        predicted['estimated_raw_size'] = facts.get('database_size')
        return {'changed': True, 'backup': predicted}
    try:
        os.makedirs(set_dir, mode=0o700, exist_ok=True)
    except OSError as exc:  # dest is a file, on a read-only disk, not ours...
        raise from_os_error(exc, 'cannot create the backup directory %s (dest)' % set_dir)
    with set_lock(set_dir, name):
        warnings = _clock_behind(set_dir, name, created)
        seq = 0
        while any(os.path.exists(os.path.join(set_dir, mf.make_id(name, created, seq) + suffix))
                  for suffix in ('.' + extension, mf.MANIFEST_SUFFIX)):
            seq += 1
        backup_id = mf.make_id(name, created, seq)
        final = os.path.join(set_dir, '%s.%s' % (backup_id, extension))
        partial = '%s.%s%s' % (final, uuid.uuid4().hex[:8], mf.PARTIAL_SUFFIX)
        try:
            with open(partial, 'wb') as out:
                os.fchmod(out.fileno(), 0o600)
                writer = HashingWriter(tee.start(mf.artifact_key(name, backup_id, extension), partial, out)
                                       if tee else out)
                src.work_dir = set_dir  # where a source may spool (same disk as the backup)
                with src.dump() as reader:
                    # source -> compress -> encrypt -> hash -> file: the sha256 covers what is stored
                    with enc.encrypting(writer) as sink:
                        if pglayout.applies(predicted):  # zstd frames a restore can fetch out of order
                            raw_size, layout = pglayout.compress(reader, sink, level, threads)
                        else:
                            raw_size, layout = compress(reader, sink, compression, level, threads), None
                # facts only known once the dump finished (row counts for verification)
                facts.update(src.dump_facts())
                out.flush()
                os.fsync(out.fileno())
            os.rename(partial, final)
        except OSError as exc:
            remove_quietly(partial)
            if exc.errno == errno.ENOSPC:
                raise DiskFullError('no space left in %s while dumping %s' % (set_dir, src.describe()),
                                    'free space or apply retention; the partial dump was removed')
            raise from_os_error(exc, 'dumping %s into %s (the partial dump was removed)' % (src.describe(), set_dir))
        except BaseException:
            remove_quietly(partial)
            raise
        duration = time.time() - started
        data = mf.build(name, backup_id, created, extension, compression, fmt, writer.size,
                        writer.hexdigest(), raw_size, facts, tags, duration, encryption=encryption_info,
                        layout=layout)
        data = signer.sign(data)
        manifest_path = os.path.join(set_dir, backup_id + mf.MANIFEST_SUFFIX)
        _write_atomic(manifest_path, mf.dumps(data))  # manifest last: now the backup exists
    result = dict(predicted, id=backup_id, path=final, manifest=manifest_path, size=writer.size,
                  sha256=writer.hexdigest(), raw_size=raw_size, duration=round(duration, 3))
    if warnings:
        return {'changed': True, 'backup': result, 'warnings': warnings}
    return {'changed': True, 'backup': result}


def _clock_behind(set_dir, name, created):
    """A warning when a backup in ``set_dir`` is dated after ``created`` (this machine's now):
    the clock went back, or that backup came from a machine whose clock was ahead."""
    stamps = [mf.parse_id(f[:-len(mf.MANIFEST_SUFFIX)]) for f in os.listdir(set_dir) if f.endswith(mf.MANIFEST_SUFFIX)]
    newest = max((p for p in stamps if p and p[0] == name), key=lambda p: p[1], default=None)
    if newest is None or newest[1] <= created:
        return []
    return ['this machine\'s clock (%s) is %s behind the newest backup of %s in %s (dated %s): check the clock '
            '(timedatectl, NTP); backups dated more than clock_skew in the future are suspect and never count '
            'as the newest' % (mf.format_time(created), mf.format_duration(newest[1] - created), name, set_dir,
                               mf.format_time(newest[1]))]


def _write_atomic(path, data):
    partial = '%s.%s%s' % (path, uuid.uuid4().hex[:8], mf.PARTIAL_SUFFIX)
    try:
        with open(partial, 'wb') as out:
            os.fchmod(out.fileno(), 0o600)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.rename(partial, path)
    except BaseException:
        remove_quietly(partial)
        raise
