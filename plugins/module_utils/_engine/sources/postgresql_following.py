# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A PostgreSQL restore that follows its work file while the download writes it (issue 14).

Why: ``pg_restore -j`` needs a seekable file, so a parallel restore used to wait for the
last byte before loading the first. The download writes the archive in order: header and
TOC, then one data block per table. As the bytes pass, ``pgcustom.OffsetRecorder`` finds
where the TOC and each block end, and this loader follows:

- once the TOC is in the file: ``pg_restore --section=pre-data`` (tables, types, functions);
- then the table data, in pieces (a small table's block; a large table's rows between two of
  the recorder's cuts, about 64 MiB apart), from the moment a piece begins in the file, goes to
  one of ``jobs`` loaders: ``pg_restore -L <those entries>`` reading a pipe fed with the TOC and
  then those pieces (a piece after a cut gets the block's header and a terminator), which
  follows a piece still being written (``-Z0`` blocks are COPY data: a table loads at the pace
  of its download, and several loaders COPY one large table at once);
- once a table's data is all loaded: its keys and indexes (``pgcustom.EarlyPostData``), in a
  slot no piece on disk waits for, beside the COPY of the tables still arriving;
- once the download has proven the checksum: ``pg_restore -j`` of all the rest (data no
  loader took, sequences, the indexes and constraints not built yet, triggers and the rest).

Each piece is freed from the file once its loader has read it, and a download faster than the
loaders waits within ``LEAD`` of what they have still to read (``_hold``).

Given the manifest's layout, the file is instead written frame by frame in any order
(framefetch.py, ``placed``): the pieces are known from the layout (``pgcustom.LaidOut``), what
is on disk is a set of stretches (``_Ranges``), the most urgent tables' pieces go out first, and
the fetch waits for the loaders before frames that expand a lot (``room``).

The scratch database is only swapped in after that and after the row counts; a checksum
that fails drops it (``_prepare``). One thread schedules: it starts and reaps the loaders
between the download's chunks (``tap``), one thread per loader feeds its pipe; the scheduler lives until every loader it started ended: a
child's PR_SET_PDEATHSIG fires when the *thread* that started it ends. The download runs in
the caller's thread, where ``lifeline`` interrupts it.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import bisect
import contextlib
import os
import subprocess
import threading
import time

from .. import commands, pgcustom, pipeline
from ..errors import TargetError

POLL_SECONDS = 0.05  # how often the scheduler looks at the file without a new chunk
LEAD = 2 * pgcustom.SEGMENT  # how far the download may run ahead of what the loaders have read
LEAD_WAIT_SECONDS = 5.0  # held back this long with no loader reading on, the download runs free
FEED_STEP = 8 * 2 ** 20  # a feeder frees what it copied, and says how far it got, this often
PRE_DATA = 'the schema (pre-data)'
_PUNCH_HOLE = 0x01 | 0x02  # FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE (linux/falloc.h)


class _Holes(object):
    """Gives a work file's pages back once a loader has read them: holes punched in the file
    (``fallocate``), its size kept. Where that is not possible (not Linux, a file system without
    holes) the file keeps its bytes, as before.

    Why: a piece's bytes are read by its one loader, once; nothing reads them again (the final
    ``pg_restore`` reads the TOC and the entries no loader took). Kept, every byte of the archive
    stayed on disk and in the page cache until the end. Freed, the download writes into pages
    just freed: on a VM that hands free memory back to its host, writing 848 MB with a reader
    behind that frees what it read took 0.27-0.29 s of system CPU, against 0.76-0.79 s
    (bench/README.md)."""

    def __init__(self):
        self.fallocate = None
        try:
            import ctypes  # here, not at import: every engine process imports this module
            libc = ctypes.CDLL(None, use_errno=True)  # this process's C library
            self.fallocate = getattr(libc, 'fallocate64', None) or libc.fallocate  # 64-bit offsets
            self.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
        except (ImportError, OSError, AttributeError):
            self.fallocate = None

    def punch(self, archive, start, end):
        """Free the whole blocks of ``archive`` (a file object open for writing) inside
        [start, end): a block shared with bytes outside that range keeps them. Returns where
        the next call starts: the end of what was freed, or ``start``."""
        if self.fallocate is None:
            return start
        size = max(4096, os.fstat(archive.fileno()).st_blksize)
        first, last = -(-start // size) * size, end // size * size
        if last <= first:
            return start
        if self.fallocate(archive.fileno(), _PUNCH_HOLE, first, last - first) != 0:
            self.fallocate = None  # not supported here: keep every byte from now on
            return start
        return last


class _Ranges(object):
    """The stretches of a file written out of order (merged, sorted): what is on disk."""

    def __init__(self):
        self.starts, self.ends = [], []

    def add(self, start, end):
        i = bisect.bisect_left(self.ends, start)  # the first stretch that ends at or after start
        j = bisect.bisect_right(self.starts, end)  # past the last that starts at or before end
        if i < j:
            start, end = min(start, self.starts[i]), max(end, self.ends[j - 1])
        self.starts[i:j], self.ends[i:j] = [start], [end]

    def extent(self, pos):
        """The end of the bytes on disk from ``pos`` on (``pos`` if none are)."""
        i = bisect.bisect_right(self.starts, pos) - 1
        return self.ends[i] if i >= 0 and self.ends[i] > pos else pos


class _Loader(object):
    def __init__(self, what, stack, proc):
        self.what, self.stack, self.proc = what, stack, proc
        self.feeder = None  # the thread filling its stdin, if it reads a pipe
        self.pieces = ()  # the pieces of table data it loads
        self.post_data = None  # or the indexes and constraints it builds (EarlyPostData)


class FollowingLoad(object):
    """Loads ``path`` (an archive being written) into ``database`` as described above.
    ``start``, then the download with ``tap``, then ``finish``; ``stop`` always."""

    def __init__(self, source, database, path, recorder, jobs, layout=None):
        self.source, self.database, self.path = source, database, path
        self.recorder = recorder
        # the blocks and cuts: found by the recorder as the file is written in order, or known
        # from the manifest's layout when the file is written frame by frame (``placed``)
        self.marks = pgcustom.LaidOut(recorder, layout) if layout is not None else recorder
        self.walk = pgcustom.LaidOutWalk(recorder, layout) if layout is not None else None
        self.plan = pgcustom.Following(self.marks, layout.ratios() if layout is not None else None)
        self.ranges = _Ranges() if layout is not None else None
        self.placed_bytes = self.copied_bytes = 0  # written out of order / read by the loaders
        self.jobs = max(1, jobs)
        self.env = source.load_env()
        self.cond = threading.Condition()
        self.loaders = []
        self.feeders = []
        self.schema = None          # None, 'loading', 'loaded': the pre-data section
        self.failure = None
        self.draining = False       # start nothing more (a failure, or the end), reap
        self.downloaded = False     # the file is complete (or will never be): feeders stop at its end
        self.closing = False
        self.lists = 0
        self.holes = _Holes()
        self.reading = {}           # (dumpId, n) -> where a loader is in that piece, from its take
        self.loaded = set()         # pieces loaded (their loader ended well)
        self.post_data = None       # pgcustom.EarlyPostData, once the schema is in
        self.read_to = 0            # the end of the last piece a loader finished, the furthest
        self.held_back = True       # the download waits while it is more than LEAD ahead
        self.thread = threading.Thread(target=self._schedule, name='offsite-restore-following')
        self.thread.daemon = True

    def start(self):
        self.thread.start()

    def tap(self, data):
        """The download's chunk, before it is written: parsed, and the scheduler woken; then the
        download waits while it is more than LEAD ahead of what the loaders have still to read."""
        with self.cond:
            self.recorder.feed(data)
            self.cond.notify_all()
            if self.held_back:
                self._hold()

    def placed(self, start, end):
        """Bytes [start, end) of the file are written (out of order: a frame fetched by
        framefetch.py)."""
        with self.cond:
            self.ranges.add(start, end)
            self.placed_bytes += end - start
            self.cond.notify_all()

    def room(self):
        """Out of order, ``_hold``'s rule before a frame that expands a lot (framefetch.py): it
        waits while what was placed runs more than LEAD ahead of what the loaders read (no
        loader before the schema: no wait), and runs free once they read nothing for
        LEAD_WAIT_SECONDS."""
        with self.cond:
            deadline = copied = None
            while self.held_back and not (self.closing or self.draining or self.failure is not None):
                if self.schema != 'loaded' or self.placed_bytes - self.copied_bytes <= LEAD:
                    return
                now = time.monotonic()
                if self.copied_bytes != copied:
                    deadline, copied = now + LEAD_WAIT_SECONDS, self.copied_bytes
                elif now >= deadline:
                    self.held_back = False
                    return
                self.cond.wait(POLL_SECONDS)

    def _hold(self):
        """Why: from a fast store the download runs ahead of the loaders (on loopback ~3x), and
        every byte it wrote ahead took a page of the page cache, and of the disk, that no loader
        had freed yet. On a VM that hands free memory back to its host such pages cost a fault
        each: an 848 MB archive's restore took 1.44-1.75 s of system CPU, and 1.05-1.19 s held
        back (bench/README.md). Held within LEAD, the download writes into the pages the loaders
        just freed (``_Holes``), and the work file holds about LEAD of rows, not the archive.
        Behind a link slower than the loaders nothing waits. Loaders that read nothing for
        LEAD_WAIT_SECONDS while the download waits (stalled) let it run free from then on."""
        deadline = unread = None
        while not (self.closing or self.draining or self.failure is not None
                   or self.recorder.error is not None):
            written = self._written()
            unread_now = self._unread(written)
            if written - unread_now <= LEAD:
                return
            now = time.monotonic()
            if unread_now != unread:  # the loaders read on: wait as long again
                deadline, unread = now + LEAD_WAIT_SECONDS, unread_now
            elif now >= deadline:
                self.held_back = False
                return
            self.cond.wait(POLL_SECONDS)

    def _unread(self, written):
        """The first byte of the file a loader has still to read: pieces are taken in file
        order, so every piece no loader took lies after the pieces taken (``reading``); with
        none taken or left, after the TOC and the last piece a loader finished. No loader runs
        before the schema is in: until then the download does not wait."""
        if self.schema != 'loaded':
            return written
        if self.reading:
            return min(self.reading.values())
        return max(self.recorder.toc_end, self.read_to)

    # -- the scheduler thread ---------------------------------------------------------------
    def _schedule(self):
        with self.cond:
            while not self.closing:
                try:
                    self._step()
                except BaseException as exc:  # reported by finish(), in the caller's thread
                    self.failure = self.failure or exc
                    self.draining = True
                self.cond.notify_all()
                self.cond.wait(POLL_SECONDS)

    def _step(self):
        self._reap()
        if self.failure is not None or self.draining:
            return
        written = self._on_disk()
        if self.schema is None:
            if self.plan.toc_ready(written):
                self.schema = 'loading'
                self._start(['--section=pre-data', self.path], PRE_DATA)
            return
        if self.schema != 'loaded':
            return
        for batch in self.plan.take(written, self.jobs - len(self.loaders)):
            for piece in batch:
                self.reading[piece] = self.plan.piece(*piece)[0]
            loader = self._start(['-L', self._list([dump_id for dump_id, n in batch])],
                                 'the data of %d table(s)' % len(batch), piped=True)
            loader.pieces = batch
            loader.feeder = threading.Thread(target=self._feed, args=(loader.proc, batch),
                                             name='offsite-restore-feeder')
            loader.feeder.daemon = True
            loader.feeder.start()
            self.feeders.append(loader.feeder)
        # keys and indexes in the slots the data leaves free: never ahead of a piece on disk
        if self.post_data is None:
            self.post_data = pgcustom.EarlyPostData(self.recorder.toc)
        for entries in self.post_data.take(self.plan.loaded(self.loaded), self.jobs - len(self.loaders)):
            loader = self._start(['-L', self._list(entries), self.path], '%d index(es) and constraint(s)' % len(entries))
            loader.post_data = entries

    def _feed(self, proc, batch):
        """A loader's pipe: the archive's header and TOC, then each block of ``batch``,
        following the last one while the download writes it."""
        try:
            # writable: the pieces read are freed; unbuffered: a buffer would keep what it read
            # ahead of a piece, where a file written out of order may not be written yet
            with open(self.path, 'r+b', buffering=0) as archive:
                self._copy(archive, proc.stdin, 0, self.recorder.toc_end)
                for dump_id, n in batch:
                    self._follow(archive, proc.stdin, dump_id, n)
        except (BrokenPipeError, ValueError):
            pass  # the loader ended (its exit status says why) or was stopped
        except Exception as exc:
            with self.cond:
                self.failure = self.failure or exc
        finally:
            try:
                proc.stdin.close()
            except (OSError, ValueError):
                pass

    def _follow(self, archive, pipe, dump_id, n):
        """One piece: the block's header (for a piece after a cut), its rows as they arrive, and
        a terminator where a cut, not the block, ends it."""
        with self.cond:
            pos, end, last = self.plan.piece(dump_id, n)
            head = self.marks.blocks[dump_id], self.marks.heads.get(dump_id)
        try:
            pos = self._follow_rows(archive, pipe, dump_id, n, pos, head)
        finally:
            with self.cond:
                self.reading.pop((dump_id, n), None)
                self.read_to = max(self.read_to, pos)
                self.cond.notify_all()

    def _follow_rows(self, archive, pipe, dump_id, n, pos, head):
        """``_follow`` from ``pos``: returns where it stopped."""
        if n:
            self._copy(archive, pipe, *head)
        # the block's header is read again by the pieces after each cut: never freed
        freed = max(pos, head[1] or head[0])
        while True:
            with self.cond:
                while True:
                    start, end, last = self.plan.piece(dump_id, n)
                    limit = self._upto(pos) if end is None else min(end, self._upto(pos))
                    if pos < limit or (end is not None and pos >= end) or self.closing:
                        break
                    if self.downloaded:
                        return pos  # the file ended inside the block: fetch's checks say why
                    self.cond.wait(POLL_SECONDS)
            if self.closing:
                return pos
            if end is not None and pos >= end:
                break
            limit = min(limit, pos + FEED_STEP)
            self._copy(archive, pipe, pos, limit)
            copied, pos = limit - pos, limit
            freed = self.holes.punch(archive, freed, pos)
            with self.cond:
                self.copied_bytes += copied
                self.reading[(dump_id, n)] = pos
                self.cond.notify_all()  # a download held back may go on
        if not last:
            pipe.write(self.recorder.terminator())
        return pos

    @staticmethod
    def _copy(archive, pipe, start, end):
        archive.seek(start)
        while start < end:
            data = archive.read(min(pipeline.CHUNK, end - start))
            if not data:
                raise OSError('the work file %s is shorter than recorded' % archive.name)
            pipe.write(data)
            start += len(data)

    def _written(self):
        try:
            return os.stat(self.path).st_size
        except OSError:
            return 0

    def _on_disk(self):
        """What ``Following`` is told is on disk: the file's size, or its stretches' ends."""
        return self._written() if self.ranges is None else self.ranges.extent

    def _upto(self, pos):
        """The end of the bytes on disk from ``pos`` on."""
        return self._written() if self.ranges is None else self.ranges.extent(pos)

    # -- processes -----------------------------------------------------------------------------
    def _start(self, extra, what, piped=False):
        """A loader reading the work file, or (``piped``) a pipe a feeder fills."""
        stack = contextlib.ExitStack()
        argv = self.source.load_argv(self.database, extra, self.env, stdin=piped)
        proc = stack.enter_context(commands.streaming(argv, self.source.log, env=self.env, stdout=subprocess.DEVNULL,
                                                      stdin=subprocess.PIPE if piped else None))
        loader = _Loader(what, stack, proc)
        self.loaders.append(loader)
        return loader

    def _reap(self):
        for loader in list(self.loaders):
            rc = loader.proc.poll()
            if rc is None:
                continue
            self.loaders.remove(loader)
            if rc != 0:
                self.failure = self.failure or self._failed(loader.what, loader.proc, rc)
            elif loader.what == PRE_DATA:
                self.schema = 'loaded'
            elif loader.post_data is not None:
                self.post_data.finished(loader.post_data)
            else:
                self.loaded.update(loader.pieces)
            loader.stack.close()

    def _failed(self, what, proc, rc):
        return TargetError('pg_restore of %s into the scratch database failed: %s' % (
            what, commands.stderr_tail(proc)[-1500:] or 'exit status %d' % rc),
            'the target database %s was not touched' % self.source.database)

    def _list(self, dump_ids):
        """A ``pg_restore -L`` file naming these entries (pg_restore reads each line's dumpId)."""
        self.lists += 1
        name = os.path.join(os.path.dirname(self.path), 'restore-%d.list' % self.lists)
        with open(name, 'w') as handle:
            handle.write(''.join('%d\n' % dump_id for dump_id in dump_ids))
        return name

    # -- the end -------------------------------------------------------------------------------
    def finish(self):
        """The download proved the checksum: let the loaders load what is left of the data,
        then restore the rest (sequences, indexes, constraints) with ``pg_restore -j``. Returns
        the data offsets' summary."""
        with self.cond:
            self.downloaded = True
            during = len(self.plan.tables())
            self.cond.notify_all()
            # the blocks no loader took yet go to loaders as they free up; then nothing more. A
            # download that ended before the scheduler's first look still gets the schema first
            # and the pieces: which way a restore loads must not depend on that race
            while self.thread.is_alive() and (self.loaders or (self.failure is None and (
                    (self.schema is None and self.plan.toc_ready(self._on_disk()))
                    or (self.schema == 'loaded' and self.plan.begun(self._on_disk()))))):
                self.cond.wait(POLL_SECONDS)
            self.draining = True
        offsets = self.recorder.patch(self.path)  # a malformed archive: IntegrityError, the root cause
        if self.failure is not None:
            raise self.failure
        built = self.post_data.done if self.post_data is not None else set()
        if self.schema == 'loaded':
            rest = [dump_id for dump_id in self.plan.rest() if dump_id not in built]
            extra = ['--section=data', '--section=post-data', '-L', self._list(rest)]
        else:  # the TOC was never read here (a version pgcustom leaves alone, a tiny file): all of it
            extra = []
        what = 'the rest (data, indexes and constraints)'
        argv = self.source.load_argv(self.database, ['-j', str(self.jobs)] + extra + [self.path], self.env)
        with commands.streaming(argv, self.source.log, env=self.env, stdout=subprocess.DEVNULL) as proc:
            rc = proc.wait()
            if rc != 0:
                raise self._failed(what, proc, rc)
        result = dict(offsets, loaded_while_downloading=during, loaded_in_pieces=len(self.plan.taken),
                      built_while_downloading=len(built))
        if self.walk is not None:
            result['frames'] = len(self.walk.layout.frames)
        return result

    def stop(self):
        """Always, last: no loader left running (after a failure: terminated), no scheduler."""
        with self.cond:
            self.closing = self.downloaded = True
            self.cond.notify_all()
            loaders, self.loaders = self.loaders, []
        for loader in loaders:
            if loader.proc.poll() is None:
                loader.proc.terminate()  # first: a feeder blocked writing to it gets EPIPE
            loader.stack.close()
        for feeder in self.feeders:
            feeder.join()
        if self.thread.is_alive():
            self.thread.join()
