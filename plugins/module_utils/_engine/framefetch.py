# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A laid-out artifact fetched frame by frame, out of order, into the restore's work file
(issue 14; docs/design.md, "Restoring out of order").

Why: behind a slow link a restore that reads the archive from its start loads in pg_dump's
order (table names), so a table that is cheap to load but large to store (incompressible
bytes) keeps the loaders waiting for one that is expensive to load but small to store (many
rows, compressing 10 to 40 times). When the manifest records where each zstd frame starts
(pglayout.py) and the store reads ranges (``RangedReads``), the frames go out in the order of
their table's load work per stored byte, over ``CONNECTIONS`` requests at once: the table with
the most raw bytes per byte on the wire arrives first and loads while the rest is on its way.

The guarantees stay those of the download in order:

- the one sha256 of the manifest is proven over the stored bytes in their order: a frame that
  arrives before those in front of it is spooled in a file beside the work file until the
  hash reaches it (only its stored, compressed bytes);
- each frame is walked as it is decompressed (``pgcustom.LaidOutWalk``): it must begin and
  end where the layout says, and every data block of the TOC must be found once, where the
  layout put it, before the TOC is patched and anything is swapped in;
- a frame that does not decompress or walk stops the decompression but not the download: the
  checksum is still proven, so that damaged bytes are reported as a checksum mismatch, and a
  layout that does not fit an artifact whose checksum holds as what it is.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import hashlib
import os
import threading
import time

from .errors import IntegrityError
from .pipeline import CHUNK, check_stored

CONNECTIONS = 2                  # ranged GETs at once: an urgent table shares the link with the rest
SMALL_UNIT = 4 * 2 ** 20         # a request for fewer stored bytes takes its neighbours along
# and none asks for more than this: few requests, as each costs the store's time to the first
# byte (and moto, the benchmark's S3, reads the whole object for every range it serves)
LARGEST_UNIT = 2 ** 30
READ = 256 * 1024                # stored bytes read from the store at a time
# Frames that expand this much or more wait for the loaders (FollowingLoad.room): a link that
# carries them fills the work file (and the page cache) faster than the loaders read, however
# slow it is, whereas bytes that barely compress arrive at the link's pace and must not wait
# behind those the loaders take first (bench/README.md)
HOLD_RATIO = 4.0
FAST = 80 * 2 ** 20  # stored bytes per second


class _Unit(object):
    """Neighbouring frames fetched by one ranged GET."""

    def __init__(self, spans, urgency):
        self.spans = spans  # [(index, raw_start, raw_end, stored_start, stored_end)]
        self.urgency = urgency


def plan(layout, small=SMALL_UNIT, most=LARGEST_UNIT):
    """The units after frame 0 (header and TOC), in the order they are fetched: the data
    block with the most raw bytes (load work) per stored byte (download) first, each block's
    frames in the file's order. Neighbouring frames of equal urgency go in one request (up to
    ``most`` stored bytes), and so do runs smaller than ``small`` and a frame smaller than
    that after a more urgent one.

    A frame goes out with the most urgent block it holds bytes of: the frame that holds a
    block's header (its start) never comes after the block's other frames, though it may hold
    mostly another table's rows (a frame begins at a block only past FRAME_MIN bytes), because
    every piece after a cut is sent with that header: a loader can take them only once it is in."""
    ratios = layout.ratios()
    units, run, urgency = [], [], None
    for span in [(i,) + span for i, span in enumerate(layout.spans())][1:]:
        frame = max([ratios[dump_id] for dump_id, overlap in layout.overlaps(span[1], span[2])] or [0.0])
        stored = run[-1][4] - run[0][3] if run else 0
        tiny = run and span[4] - span[3] < small and frame <= urgency  # goes along: it delays nothing
        if run and (stored >= most or (frame != urgency and stored >= small and not tiny)):
            units.append(_Unit(run, urgency))
            run = []
        urgency = frame if not run else max(urgency, frame)
        run.append(span)
    if run:
        units.append(_Unit(run, urgency))
    return sorted(units, key=lambda unit: (-unit.urgency, unit.spans[0][1]))


def reorders(layout):
    """Whether ``plan`` fetches some frame before one that precedes it in the file: if not, a
    download in order gets the same bytes in the same order in one request."""
    starts = [unit.spans[0][1] for unit in plan(layout)]
    return starts != sorted(starts)


class _InOrderHash(object):
    """sha256 of the stored bytes in their order, whatever order they arrive in: bytes ahead of
    the hash wait in ``spool`` (a file), and are read back once the bytes before them came."""

    def __init__(self, spool):
        self.digest = hashlib.sha256()
        self.next = 0
        self.waiting = {}  # stored offset -> length, spooled
        self.lock = threading.Lock()
        self.spool = os.open(spool, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)

    def add(self, at, data):
        with self.lock:
            if at != self.next:
                os.pwrite(self.spool, data, at)
                self.waiting[at] = len(data)
                return
            self.digest.update(data)
            self.next += len(data)
            while self.next in self.waiting:
                at, left = self.next, self.waiting.pop(self.next)
                while left:
                    chunk = os.pread(self.spool, min(CHUNK, left), at)
                    if not chunk:
                        raise OSError('the spool of the download is shorter than written')
                    self.digest.update(chunk)
                    at, left = at + len(chunk), left - len(chunk)
                self.next = at

    def close(self):
        os.close(self.spool)


class _Stored(object):
    """A frame's stored bytes from the ranged GET's ``body``, hashed in their order as they are
    read (``_InOrderHash``), and no byte beyond the frame."""

    def __init__(self, fetch, body, at, end):
        self.fetch, self.body, self.at, self.end = fetch, body, at, end

    def read(self, size=-1):
        size = self.end - self.at if size is None or size < 0 else min(size, self.end - self.at)
        if size <= 0:
            return b''
        data = self.body.read(size)
        if not data:
            raise IntegrityError('%s ended at byte %d, inside a frame that its manifest puts up to byte %d'
                                 % (self.fetch.where, self.at, self.end),
                                 'the copy is truncated; restore another backup')
        self.fetch.hash.add(self.at, data)
        self.at += len(data)
        return data


class FrameFetch(object):
    """Fetches ``key`` of ``repo`` (a RangedReads store) into ``path`` frame by frame, for
    ``follow`` (a FollowingLoad built with the layout): ``run`` returns (size, sha256,
    raw_size) once every byte is proven, or raises."""

    def __init__(self, repo, key, path, layout, walk, follow, expected_size, expected_sha256, where,
                 connections=CONNECTIONS):
        self.repo, self.key, self.path, self.layout = repo, key, path, layout
        self.walk, self.follow = walk, follow
        self.expected_size, self.expected_sha256, self.where = expected_size, expected_sha256, where
        self.connections = connections
        self.units = plan(layout)
        self.lock = threading.Lock()
        self.failure = None   # stops everything: the store failed
        self.damage = None    # stops the decompression: a frame that does not fit
        self.fd = None
        self.hash = None

    def run(self):
        import zstandard  # the layout is only ever written with zstd (pglayout.py)
        self.zstd = zstandard
        spool = self.path + '.stored'
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self.hash = _InOrderHash(spool)
        try:
            spans = self.layout.spans()
            self._fetch(_Unit([(0,) + spans[0]], None))  # the header and TOC: first, alone
            if self.damage is None and self.failure is None:
                self.damage = self.walk.toc_walked()
            workers = [threading.Thread(target=self._work, name='offsite-restore-frames')
                       for dummy in range(min(self.connections, len(self.units)))]
            for worker in workers:
                worker.daemon = True
                worker.start()
            for worker in workers:
                worker.join()
            if self.failure is not None:
                raise self.failure
            check_stored(self.where, self.hash.next, self.hash.digest.hexdigest(), self.expected_size,
                         self.expected_sha256)
            if self.damage is not None:
                raise self.damage
            self.walk.finish()
            return self.hash.next, self.hash.digest.hexdigest(), self.layout.raw_size
        finally:
            os.close(self.fd)
            self.hash.close()
            try:
                os.unlink(spool)
            except OSError:
                pass

    def _work(self):
        while True:
            with self.lock:
                if self.failure is not None or not self.units:
                    return
                unit = self.units.pop(0)
            try:
                self._fetch(unit)
            except BaseException as exc:  # the store failed: raised by run
                with self.lock:
                    self.failure = self.failure or exc
                return

    def _fetch(self, unit):
        first, last = unit.spans[0], unit.spans[-1]
        started = time.monotonic()
        with self.repo.get_range(self.key, first[3], last[4]) as body:
            for index, raw_start, raw_end, stored_start, stored_end in unit.spans:
                if self._holds(unit, stored_start - first[3], time.monotonic() - started):
                    self.follow.room()
                self._frame(body, index, raw_start, raw_end, stored_start, stored_end)

    def _holds(self, unit, stored, seconds):
        """Whether the next frame of ``unit`` waits for the loaders (``follow.room``): frames
        that expand HOLD_RATIO times or more always do, others once their request ran faster
        than FAST (a store on the same network: a wait costs little there, and the bytes ahead
        of the loaders cost pages), never behind a slower link, whose time they would waste."""
        if unit.urgency is None or self.damage is not None:
            return False
        return unit.urgency >= HOLD_RATIO or (stored > 0 and stored >= FAST * seconds)

    def _frame(self, body, index, raw_start, raw_end, stored_start, stored_end):
        """One frame: its stored bytes hashed in order, decompressed to its place, walked."""
        walker = self.walk.recorder if index == 0 else self.walk.walker(index)
        stored = _Stored(self, body, stored_start, stored_end)
        raw = raw_start
        if self.damage is None:
            # CHUNK-sized reads, as the download in order makes: a frame of rows that compress
            # 40:1 decompressed in one call would be a new 40 MiB buffer, page-faulted each time
            reader = self.zstd.ZstdDecompressor().stream_reader(stored, read_size=READ, read_across_frames=False)
            try:
                for out in iter(lambda: reader.read(CHUNK), b''):
                    if raw + len(out) > raw_end:
                        raise ValueError('it holds more than the %d bytes the layout gives it' % (raw_end - raw_start))
                    walker.feed(out)
                    os.pwrite(self.fd, out, raw)
                    self.follow.placed(raw, raw + len(out))
                    raw += len(out)
                if stored.at != stored_end or raw != raw_end:
                    raise ValueError('it ends after %d of its %d stored and %d of its %d raw bytes' % (
                        stored.at - stored_start, stored_end - stored_start, raw - raw_start, raw_end - raw_start))
            except (ValueError, self.zstd.ZstdError) as exc:
                self._damaged('frame %d (stored bytes %d-%d): %s' % (index, stored_start, stored_end, exc))
            if index and self.damage is None:
                damage = self.walk.walked(index, walker)
                with self.lock:
                    self.damage = self.damage or damage
        while stored.read(READ):  # a frame that did not fit: its bytes still count for the checksum
            pass

    def _damaged(self, why):
        with self.lock:
            self.damage = self.damage or IntegrityError(
                '%s does not fit the layout of its manifest: %s' % (self.where, why),
                'the backup was written damaged; restore another backup. Nothing was changed')
