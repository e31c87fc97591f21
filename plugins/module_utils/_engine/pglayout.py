# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The layout of a PostgreSQL custom-format dump compressed with zstd: the artifact is a
concatenation of zstd frames that begin at known places of the archive, and the manifest
says where, so that a restore behind a slow link can fetch and decompress pieces out of order
(the TOC first, then the tables that take longest to load).

Dump side (``compress``): the raw archive is compressed as ``pipeline.compress`` would (same
level and threads) while a ``pgcustom.OffsetRecorder`` reads along. A new frame begins at the
end of the TOC, at every cut the recorder makes in a large table's data (~``pgcustom.SEGMENT``
apart) and at a data block's start when the frame being written holds ``FRAME_MIN`` raw bytes
already (a frame per small table would cost ratio and manifest size for nothing). A
concatenation of zstd frames is one zstd stream to every reader (``zstd -d``, older engines),
so the artifact is still what pg_dump wrote, compressed.

The recorder learns a block's start once it has read the block's type byte and dumpId, so the
writer keeps the last ``HOLD`` bytes of each feed back from the compressor until the next feed:
every frame start is known before the bytes that cross it are compressed, whatever the feed
sizes. A recorder that finds no archive it knows (an error, an unsupported version) ends the
splitting: no layout is recorded and the dump goes on, unchanged.

The manifest's ``layout`` (only for such dumps)::

    {"frames": [[0, 0], [raw, stored], ...], "toc_end": N,
     "blocks": [[dump_id, raw], ...], "cuts": [[dump_id, raw], ...]}

Restore side (``read_layout``): the layout checked against itself and the manifest's sizes.
Anything malformed is an IntegrityError; the restore then ignores the layout and restores in
order (the sha256 of the whole artifact still proves every byte).
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import bisect
from itertools import islice

from . import pgcustom
from .errors import IntegrityError
from .pipeline import DEFAULT_LEVEL, ZSTD_THREADS, _need_zstd, copy

try:
    import zstandard
except ImportError:  # pipeline reports it (_need_zstd)
    zstandard = None

# a data block starts a frame of its own only when the frame before it holds this much raw data
FRAME_MIN = 2 ** 20
# the bytes of a feed kept from the compressor until the next one: a block's type byte and its
# dumpId (a sign byte and up to 8 bytes), after which the recorder knows where the block began
HOLD = 1 + 1 + 8
_ALWAYS, _BLOCK = 'always', 'block'


def _unencrypted(manifest):
    encryption = manifest.get('encryption')
    return encryption in (None, {}) or (isinstance(encryption, dict) and encryption.get('scheme') == 'none')


def applies(manifest):
    """True for a dump that gets a layout: one PostgreSQL database in custom format (what
    ``pgcustom.recorder_for`` takes), zstd, not encrypted. ``manifest``: the manifest, or the
    dump's prediction of it (source, format, compression, encryption)."""
    return (pgcustom.recorder_for(manifest) is not None and manifest.get('compression') == 'zstd'
            and _unencrypted(manifest))


def compress(reader, sink, level=None, threads=None, segment=None, frame_min=None):
    """``pipeline.compress(reader, sink, 'zstd', level, threads)`` in frames that begin where
    the archive's TOC ends, at cuts and at block starts. Returns (raw byte count, the layout
    for the manifest or None)."""
    with FramedWriter(sink, level, threads, segment, frame_min) as writer:
        raw_size = copy(reader, writer)
    return raw_size, writer.layout


class FramedWriter(object):
    """A write-only stream of raw archive bytes; writes them zstd-compressed to ``sink`` in
    frames. ``close()`` ends the last frame; ``layout`` is then the manifest's layout, or None
    (``skipped`` says why)."""

    def __init__(self, sink, level=None, threads=None, segment=None, frame_min=None):
        _need_zstd()
        cctx = zstandard.ZstdCompressor(level=level or DEFAULT_LEVEL['zstd'],
                                        threads=ZSTD_THREADS if threads is None else threads)
        self._writer = cctx.stream_writer(sink, closefd=False)
        self.recorder = pgcustom.OffsetRecorder('the dump', segment)
        self.frame_min = frame_min or FRAME_MIN
        self.frames = [(0, 0)]
        self.layout = None
        self.skipped = None
        self.raw = 0            # raw bytes given to the compressor
        self._start = 0         # raw offset of the frame being written
        self._tail = b''        # raw bytes shown to the recorder, not yet compressed
        self._todo = []         # (raw offset, kind): frame starts known, not reached yet
        self._toc = False
        self._ids = []          # dumpIds of the blocks learned, in file order
        self._cuts_seen = {}
        self._closed = False

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:  # the dump failed: its partial file is removed; end the compressor quietly
            self._give_up('the dump failed')
            self._closed = True
            self._writer.close()

    def writable(self):
        return True

    def write(self, data):
        size = len(data)
        if not size:
            return 0
        if self.recorder is not None:
            self._learn(data)
        if self.recorder is None:  # not splitting (any more)
            if self._tail:
                self._writer.write(self._tail)
                self.raw += len(self._tail)
                self._tail = b''
            self._writer.write(data)
            self.raw += size
            return size
        if size >= HOLD:
            if self._tail:
                self._emit(self._tail)
            self._emit(memoryview(data)[:size - HOLD])
            self._tail = bytes(data[size - HOLD:])
        else:
            held = self._tail + bytes(data)
            if len(held) > HOLD:
                self._emit(held[:len(held) - HOLD])
                held = held[len(held) - HOLD:]
            self._tail = held
        return size

    def flush(self):
        """Nothing to do: a flush of the compressor would end a block (ratio) for no reader."""

    def close(self):
        if self._closed:
            return
        self._closed = True
        if self._tail:
            self._emit(self._tail)
            self._tail = b''
        if self.recorder is not None:
            self._reach()  # the end of the TOC of an archive without data: an empty last frame
        self._writer.close()
        if self.recorder is not None:
            self.layout = self._finish()

    # -- splitting -------------------------------------------------------------------------
    def _give_up(self, reason):
        if self.skipped is None:
            self.skipped = reason
        self.recorder = None
        self._todo = []

    def _learn(self, data):
        """Show ``data`` to the recorder; queue the frame starts it found."""
        r = self.recorder
        try:
            r.feed(data)
            if r.error is not None or r.unsupported is not None:
                self._give_up('the recorder found %s' % (r.error or r.unsupported))
                return
            if not self._toc and r.toc_end is not None:
                self._toc = True
                self._queue(r.toc_end, _ALWAYS)
            known = len(self._ids)
            if len(r.blocks) != known:
                for dump_id, at in islice(r.blocks.items(), known, None):
                    self._ids.append(dump_id)
                    self._queue(at, _BLOCK)
            # cuts grow only in the block being walked: the last one learned (or just before)
            for dump_id in self._ids[max(0, known - 1):]:
                cuts = r.cuts.get(dump_id)
                seen = self._cuts_seen.get(dump_id, 0)
                if cuts and len(cuts) > seen:
                    for at in cuts[seen:]:
                        self._queue(at, _ALWAYS)
                    self._cuts_seen[dump_id] = len(cuts)
        except Exception as exc:  # a recorder problem never fails the dump
            self._give_up('the recorder failed: %r' % (exc,))

    def _queue(self, at, kind):
        if self.recorder is None:
            return
        if at < self.raw:  # cannot happen with HOLD; if it did, the layout would lie
            self._give_up('a frame start (%d) was learned after its bytes were compressed' % at)
            return
        bisect.insort(self._todo, (at, kind))

    def _reach(self):
        """Start a new frame here if a queued start says so; drop the starts reached."""
        todo = self._todo
        split = False
        while todo and todo[0][0] <= self.raw:
            at, kind = todo.pop(0)
            if at < self.raw:
                self._give_up('a frame start (%d) was passed' % at)
                return
            if kind == _ALWAYS or self.raw - self._start >= self.frame_min:
                split = True
        if split and self.raw > self._start:
            self._writer.flush(zstandard.FLUSH_FRAME)
            self._start = self.raw
            self.frames.append((self.raw, self._writer.tell()))

    def _emit(self, data):
        """Compress ``data`` (the raw bytes from ``self.raw`` on), a frame from each start."""
        size = len(data)
        done = 0
        while done < size:
            if self._todo and self._todo[0][0] <= self.raw:
                self._reach()
                if self.recorder is None:
                    break
            upto = size if not self._todo else min(size, done + self._todo[0][0] - self.raw)
            self._writer.write(data[done:upto] if done or upto < size else data)
            self.raw += upto - done
            done = upto
        if done < size:  # gave up on the way: the rest in the frame being written
            self._writer.write(data[done:])
            self.raw += size - done

    def _finish(self):
        """The layout for the manifest, once every byte went through, or None."""
        r = self.recorder
        try:
            if r.result() is None:
                self.skipped = 'the recorder found %s' % r.unsupported
                return None
        except Exception as exc:
            self.skipped = 'the recorder found %s' % (getattr(exc, 'message', None) or exc,)
            return None
        blocks = sorted((at, dump_id) for dump_id, at in r.blocks.items())
        cuts = sorted((at, dump_id) for dump_id, ats in r.cuts.items() for at in ats)
        layout = {'frames': [[raw, stored] for raw, stored in self.frames], 'toc_end': r.toc_end,
                  'blocks': [[dump_id, at] for at, dump_id in blocks],
                  'cuts': [[dump_id, at] for at, dump_id in cuts]}
        try:  # what a restore would refuse is not written
            read_layout({'layout': layout, 'compression': 'zstd', 'encryption': None,
                         'size': self._writer.tell(), 'raw_size': self.raw})
        except IntegrityError as exc:
            self.skipped = exc.message
            return None
        return layout


# -- the restore side -----------------------------------------------------------------------
class Layout(object):
    """A manifest's layout, checked. ``frames``: [(raw offset, stored offset)], ascending;
    ``toc_end``: the raw offset after the TOC; ``blocks`` and ``cuts``: [(dumpId, raw
    offset)] in file order; ``size`` and ``raw_size``: the artifact's stored and raw sizes."""

    def __init__(self, frames, toc_end, blocks, cuts, size, raw_size):
        self.frames = frames
        self.toc_end = toc_end
        self.blocks = blocks
        self.cuts = cuts
        self.size = size
        self.raw_size = raw_size
        self._bounds = None

    def spans(self):
        """[(raw_start, raw_end, stored_start, stored_end)] per frame: a stored span
        decompresses on its own to the raw span."""
        ends = self.frames[1:] + [(self.raw_size, self.size)]
        return [(raw, raw_end, stored, stored_end) for (raw, stored), (raw_end, stored_end) in zip(self.frames, ends)]

    def overlaps(self, raw_start, raw_end):
        """[(dumpId, bytes)]: the data blocks that hold bytes of [raw_start, raw_end), and how many."""
        if self._bounds is None:
            self._bounds = [at for dump_id, at in self.blocks] + [self.raw_size]
        bounds, found = self._bounds, []
        for n in range(max(0, bisect.bisect_right(bounds, raw_start) - 1), len(self.blocks)):
            if bounds[n] >= raw_end:
                break
            overlap = min(raw_end, bounds[n + 1]) - max(raw_start, bounds[n])
            if overlap > 0:
                found.append((self.blocks[n][0], overlap))
        return found

    def ratios(self):
        """{dumpId: raw bytes per stored byte} of each data block: its load work per byte to
        download. A frame's stored bytes are shared among the blocks it holds by raw bytes."""
        work = dict((dump_id, [0, 0.0]) for dump_id, at in self.blocks)
        for raw_start, raw_end, stored_start, stored_end in self.spans()[1:]:
            for dump_id, overlap in self.overlaps(raw_start, raw_end):
                work[dump_id][0] += overlap
                work[dump_id][1] += (stored_end - stored_start) * float(overlap) / (raw_end - raw_start)
        return dict((dump_id, raw / max(1.0, stored)) for dump_id, (raw, stored) in work.items())

    def __repr__(self):
        return 'Layout(%d frames, toc_end=%d, %d blocks, %d cuts)' % (
            len(self.frames), self.toc_end, len(self.blocks), len(self.cuts))


class _Bad(Exception):
    pass


def _number(value, what):
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad('%s is %r, not a number' % (what, value))
    if value < 0:
        raise _Bad('%s is negative (%d)' % (what, value))
    return value


def _pairs(layout, key):
    value = layout.get(key)
    if not isinstance(value, list):
        raise _Bad('%s is %s, not a list' % (key, 'missing' if value is None else type(value).__name__))
    pairs = []
    for n, pair in enumerate(value):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise _Bad('%s[%d] is %r, not a pair of numbers' % (key, n, pair))
        pairs.append((_number(pair[0], '%s[%d][0]' % (key, n)), _number(pair[1], '%s[%d][1]' % (key, n))))
    return pairs


def read_layout(manifest, where='the manifest'):
    """The checked ``Layout`` of a manifest, or None when it has none (no ``layout`` key, not
    zstd, encrypted). IntegrityError when the layout is malformed: the restore then ignores
    it and reads the artifact in order."""
    if not isinstance(manifest, dict) or manifest.get('layout') is None:
        return None
    if manifest.get('compression') != 'zstd' or not _unencrypted(manifest):
        return None
    try:
        return _check(manifest['layout'], manifest)
    except _Bad as exc:
        raise IntegrityError('the layout in %s is not usable: %s' % (where, exc),
                             'the manifest was altered or written by a faulty engine; the artifact can still be '
                             'restored in order, its checksum proves it')


def _check(layout, manifest):
    if not isinstance(layout, dict):
        raise _Bad('it is %s, not an object' % type(layout).__name__)
    size = _number(manifest.get('size'), 'the manifest\'s size')
    raw_size = _number(manifest.get('raw_size'), 'the manifest\'s raw_size')
    frames = _pairs(layout, 'frames')
    blocks = _pairs(layout, 'blocks')
    cuts = _pairs(layout, 'cuts')
    if 'toc_end' not in layout:
        raise _Bad('toc_end is missing')
    toc_end = _number(layout['toc_end'], 'toc_end')

    if not frames or frames[0] != (0, 0):
        raise _Bad('the first frame is %s, not [0, 0]' % (list(frames[0]) if frames else 'missing'))
    for n in range(1, len(frames)):
        (raw0, stored0), (raw, stored) = frames[n - 1], frames[n]
        if raw <= raw0 or stored <= stored0:
            raise _Bad('frames[%d] %r does not follow frames[%d] %r (raw and stored offsets ascend strictly)'
                       % (n, list(frames[n]), n - 1, list(frames[n - 1])))
    raw, stored = frames[-1]
    if raw > raw_size or stored >= size:
        raise _Bad('frames[%d] %r begins beyond the artifact (raw_size %d, size %d)'
                   % (len(frames) - 1, list(frames[-1]), raw_size, size))

    ids = set()
    for n, (dump_id, at) in enumerate(blocks):
        if dump_id <= 0 or dump_id in ids:
            raise _Bad('blocks[%d] has the dumpId %d, %s' % (n, dump_id, 'repeated' if dump_id in ids else 'not positive'))
        ids.add(dump_id)
        if n and at <= blocks[n - 1][1]:
            raise _Bad('blocks[%d] at %d does not follow blocks[%d] at %d' % (n, at, n - 1, blocks[n - 1][1]))
        if at >= raw_size:
            raise _Bad('blocks[%d] at %d begins beyond the archive (raw_size %d)' % (n, at, raw_size))

    starts = set(raw for raw, stored in frames)
    if blocks and toc_end != blocks[0][1]:
        raise _Bad('toc_end %d is not where the first block begins (%d)' % (toc_end, blocks[0][1]))
    if toc_end not in starts:
        raise _Bad('toc_end %d is not a frame start' % toc_end)

    block_at = dict(blocks)
    block_end = dict((dump_id, blocks[n + 1][1] if n + 1 < len(blocks) else raw_size)
                     for n, (dump_id, at) in enumerate(blocks))
    for n, (dump_id, at) in enumerate(cuts):
        if dump_id not in block_at:
            raise _Bad('cuts[%d] is in dumpId %d, which has no block' % (n, dump_id))
        if not block_at[dump_id] < at < block_end[dump_id]:
            raise _Bad('cuts[%d] at %d is not inside the block of dumpId %d (%d to %d)'
                       % (n, at, dump_id, block_at[dump_id], block_end[dump_id]))
        if n and at <= cuts[n - 1][1]:
            raise _Bad('cuts[%d] at %d does not follow cuts[%d] at %d' % (n, at, n - 1, cuts[n - 1][1]))
        if at not in starts:
            raise _Bad('cuts[%d] at %d is not a frame start' % (n, at))

    allowed = set([0, toc_end]) | set(block_at.values()) | set(at for dump_id, at in cuts)
    for n, (raw, stored) in enumerate(frames):
        if raw not in allowed:
            raise _Bad('frames[%d] begins at %d, neither the end of the TOC nor a block or a cut' % (n, raw))
    return Layout(frames, toc_end, blocks, cuts, size, raw_size)
