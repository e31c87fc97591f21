# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pg_dump custom-format archives: where each data block starts, found as the bytes stream
past, then written into the table of contents, as pg_dump itself does when its output is a
file.

Why: ``pg_dump -Fc`` writing to a pipe (every dump of this engine) cannot go back to its table
of contents, so every entry's data offset stays "not set". ``pg_restore -j`` then has each
worker walk the chunk headers from the start of the data to find its table (one chunk per row),
and cannot hand out the largest tables first. A restore writes the archive to a local file
anyway (``pg_restore -j`` needs one): ``OffsetRecorder.feed`` reads along as it is written, and
``OffsetRecorder.patch`` then rewrites the 1 + 8 bytes of each entry's offset field. Nothing
else in the file changes.

The format, from PostgreSQL's src/bin/pg_dump/pg_backup_archiver.c and pg_backup_custom.c:

- int: a sign byte (0, or 1 for negative) and ``intSize`` bytes, little-endian; string: an int
  length (negative for a null string) and that many bytes;
- header: ``PGDMP``, the archive version (3 bytes), intSize, offSize, the format (1: custom),
  the compression (a byte from version 1.15, an int before), the creation time (7 ints), the
  database name, the server and the pg_dump versions (strings);
- TOC: an int count, then per entry: dumpId, hadDumper (ints); tableoid, oid, tag, desc
  (strings); section (int); defn, dropStmt, copyStmt, namespace, tablespace, tableam (from
  1.14) (strings); relkind (an int, from 1.16); owner, withOids (strings); the dependencies
  (strings up to a null string); the data offset: a flag byte (1 not set, 2 set, 3 no data)
  and offSize bytes, little-endian;
- data, in TOC order, one block per entry that has data: a type byte (1 table data, 3 large
  objects), the entry's dumpId (int), then chunks (an int length and that many bytes) up to a
  zero length; a large-objects block holds (oid, chunks) pairs up to a zero oid.

The offset recorded for an entry is that of its block's type byte.

Trust: the offsets come from walking every chunk length, as pg_restore walks them when it reads
the archive in order, so the patched file means what the unpatched one meant. A known version
that does not parse that way (a bad flag, a block for an entry without data, a block missing
or repeated, a negative length, bytes after the last block, an end inside a block) is an
IntegrityError; a version or word size this module does not know is left as it is (pg_restore
then walks the chunks itself, as before).
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import collections
import os
import struct

from .errors import IntegrityError

NOT_SET, SET, NO_DATA = 1, 2, 3
BLK_DATA, BLK_BLOBS = 1, 3
CUSTOM = 1  # archCustom
KNOWN_VERSIONS = ((1, 12), (1, 16))  # PostgreSQL 9.6 to 17
OFF_SIZE = 8  # sizeof(pgoff_t): what pg_dump writes everywhere it runs today
# a table's data is cut at row (chunk) boundaries about this far apart, so that several loaders
# can COPY one large table at once (Following); a cut is only ever made at the end of a feed
SEGMENT = 64 * 2 ** 20
_READ, _SKIP, _CHUNKS, _BLOCK = 'read', 'skip', 'chunks', 'block'
_OFFSET = struct.Struct('<BQ')
MAX_KEPT = 4096  # the longest desc or dependency kept from the TOC (pg_dump's are < 32 bytes)
# a TOC entry's section (pg_backup.h, teSection)
SECTION_NONE, SECTION_PRE_DATA, SECTION_DATA, SECTION_POST_DATA = 1, 2, 3, 4
TocEntry = collections.namedtuple('TocEntry', 'desc section deps')


class Malformed(Exception):
    """The bytes do not parse as a custom-format archive of a known version."""


class OffsetRecorder(object):
    """Fed an archive's bytes in order (``feed``), it finds each entry's data block; ``patch``
    then writes their offsets into the file those bytes went to.

    ``feed`` never raises: the first problem is kept, and ``patch`` raises it, so that a
    download whose checksum fails reports that root cause first."""

    def __init__(self, where='the archive', segment=None):
        self.where = where
        self.segment = segment or SEGMENT
        self.version = None
        self.entries = []       # (dumpId, flag, position of the flag byte)
        self.toc = {}           # dumpId -> TocEntry (desc, section, dependencies), in TOC order
        self.blocks = {}        # dumpId -> position of its block's type byte
        self.ends = {}          # dumpId -> position after its block's last byte
        self.toc_end = None     # position after the TOC: all a schema-only restore reads
        self.heads = {}         # dumpId -> position after its table data block's header
        self.cuts = {}          # dumpId -> chunk boundaries in its table data block, ~segment apart
        self._cutting = None    # the dumpId of the table data block being walked
        self.error = None
        self.unsupported = None
        self.done = False
        self._context = 'the header'
        self._base = 0          # position of the first byte of the data being fed
        self._pos = 0           # position of the next byte the parser takes
        self._pending = b''     # the start of a value that continues in the next feed
        self._left = 0          # bytes still to skip
        self._int = None
        self._hdr = 0
        self._parser = self._archive()
        self._op = next(self._parser)

    # -- feeding ----------------------------------------------------------------------------
    def feed(self, data):
        """Take the next bytes of the archive (as written). Returns ``data``."""
        if data and self.error is None and self.unsupported is None:
            try:
                self._consume(data)
            except Malformed as exc:
                self.error = '%s (at byte %d, in %s)' % (exc, self._pos, self._context)
            self._base += len(data)
        return data

    def _consume(self, data):
        end = len(data)
        i = 0
        while i < end:
            kind, size = self._op
            if kind is None:
                if self.done:
                    raise Malformed('%d byte(s) follow the last data block' % (end - i))
                return  # a version this module does not know
            if kind == _CHUNKS:
                i = self._walk(data, i, end)
            elif kind == _SKIP:
                take = min(self._left, end - i)
                i += take
                self._left -= take
                if not self._left:
                    self._next(None, i)
            else:
                need = size - len(self._pending)
                if end - i < need:
                    self._pending += data[i:]
                    return
                value = self._pending + data[i:i + need] if self._pending else data[i:i + need]
                self._pending = b''
                i += need
                self._next(value, i)

    def _next(self, value, i):
        """The current operation is complete up to ``data[i]``: run the parser to its next one."""
        self._pos = self._base + i
        try:
            self._op = self._parser.send(value)
        except StopIteration:
            self.done = self.unsupported is None
            self._op = (None, 0)

    def _walk(self, data, i, end):
        """Skip chunks (int length, bytes) up to the zero length that ends a block: the hot
        loop, one struct unpack per chunk (pg_dump -Z0 writes one chunk per table row)."""
        if self._left:  # the rest of a chunk begun in an earlier feed
            take = min(self._left, end - i)
            i += take
            self._left -= take
            if self._left:
                return i
        if self._pending:  # a chunk length split between two feeds
            need = self._hdr - len(self._pending)
            if end - i < need:
                self._pending += data[i:]
                return end
            sign, length = self._int.unpack(self._pending + data[i:i + need])
            self._pending = b''
            i += need
            if sign:
                raise Malformed('a chunk has a negative length')
            if not length:
                self._next(None, i)
                return i
            self._left = length
            return self._walk(data, i, end)
        hdr = self._hdr
        unpack = self._int.unpack_from
        p = i
        try:
            while True:
                sign, length = unpack(data, p)
                if sign or not length:
                    break
                p += hdr + length
        except struct.error:  # the next chunk length is not (wholly) in this feed
            if self._cutting is not None:
                self._cut(self._base + p)
            if p >= end:
                self._left = p - end
            else:
                self._pending = data[p:]
            return end
        if sign:
            raise Malformed('a chunk has a negative length')
        p += hdr
        self._next(None, p)
        return p

    def _cut(self, at):
        """``at`` is where a chunk (a row) of the table data being walked begins."""
        cuts = self.cuts[self._cutting]
        if at - (cuts[-1] if cuts else self.heads[self._cutting]) >= self.segment:
            cuts.append(at)

    def terminator(self):
        """The zero chunk length that ends a data block."""
        return b'\x00' * self._hdr

    # -- the parser: yields (operation, size), is sent what a read got ----------------------
    def _archive(self):
        if (yield _READ, 5) != b'PGDMP':
            raise Malformed('it does not start with PGDMP, so it is no pg_dump custom-format archive')
        version = tuple(bytearray((yield _READ, 3)))
        self.version = '%d.%d' % version[:2]
        int_size, off_size, fmt = bytearray((yield _READ, 3))
        if not KNOWN_VERSIONS[0] <= version[:2] <= KNOWN_VERSIONS[1]:
            self.unsupported = 'archive version %s is not one this engine knows' % self.version
            return
        if int_size not in (4, 8) or off_size != OFF_SIZE:
            self.unsupported = 'integers of %d and offsets of %d bytes' % (int_size, off_size)
            return
        if fmt != CUSTOM:
            raise Malformed('its format byte is %d, not custom (%d)' % (fmt, CUSTOM))
        self._int = struct.Struct('<BI' if int_size == 4 else '<BQ')
        self._hdr = 1 + int_size
        if version[:2] >= (1, 15):
            yield _READ, 1  # compression algorithm
        else:
            yield from self._int_value('the compression level')
        for dummy in range(7):
            yield from self._int_value('the creation time')
        for dummy in range(3):  # database name, server and pg_dump versions
            yield from self._string()
        count = yield from self._int_value('the TOC entry count')
        if count < 0:
            raise Malformed('the TOC entry count is negative')
        ids = set()
        for number in range(count):
            self._context = 'TOC entry %d of %d' % (number + 1, count)
            dump_id = yield from self._int_value('a dumpId')
            if dump_id <= 0 or dump_id in ids:
                raise Malformed('dumpId %d is %s' % (dump_id, 'repeated' if dump_id in ids else 'out of range'))
            ids.add(dump_id)
            yield from self._int_value('hadDumper')
            for dummy in range(3):  # tableoid, oid, tag
                yield from self._string()
            desc = yield from self._string(keep=True)
            section = yield from self._int_value('the section')
            for dummy in range(6 if version[:2] >= (1, 14) else 5):  # defn .. tableam
                yield from self._string()
            if version[:2] >= (1, 16):
                yield from self._int_value('relkind')
            for dummy in range(2):  # owner, withOids
                yield from self._string()
            deps = []
            while True:  # dependencies (dumpIds as text), up to a null string
                dep = yield from self._string(keep=True)
                if dep is None:
                    break
                if not dep.isdigit():
                    raise Malformed('dumpId %d has the dependency %r, not a dumpId' % (dump_id, dep[:20]))
                deps.append(int(dep))
            self.toc[dump_id] = TocEntry(desc, section, tuple(deps))
            at = self._pos
            flag = bytearray((yield _READ, 1 + off_size))[0]
            if flag not in (NOT_SET, SET, NO_DATA):
                raise Malformed('dumpId %d has the unknown data offset flag %d' % (dump_id, flag))
            self.entries.append((dump_id, flag, at))
        self.toc_end = self._pos
        wanted = self.wanted()
        while len(self.blocks) < len(wanted):
            self._context = 'the data after block %d of %d' % (len(self.blocks), len(wanted))
            yield from self._block(wanted)
        self._context = 'the end of the archive'

    def wanted(self):
        """The dumpIds of the TOC that have a data block."""
        return set(dump_id for dump_id, flag, at in self.entries if flag != NO_DATA)

    def _block(self, wanted):
        """One data block, from its type byte to the byte after it."""
        at = self._pos
        kind = bytearray((yield _BLOCK, 1))[0]
        dump_id = yield from self._int_value('a block id')
        self._context = 'the data block of dumpId %d' % dump_id
        if dump_id not in wanted:
            raise Malformed('a data block for dumpId %d, which %s' % (
                dump_id, 'has no data' if any(d == dump_id for d, f, a in self.entries) else 'is not in the TOC'))
        if dump_id in self.blocks:
            raise Malformed('a second data block for dumpId %d' % dump_id)
        self.blocks[dump_id] = at
        if kind == BLK_DATA:
            self.heads[dump_id] = self._pos
            yield from self._rows(dump_id)
        elif kind == BLK_BLOBS:
            while (yield from self._int_value('a large object oid')):
                yield _CHUNKS, 0
            self.ends[dump_id] = self._pos
        else:
            raise Malformed('a data block of unknown type %d' % kind)

    def _rows(self, dump_id):
        """A table data block's chunks, up to its terminator: where the block ends."""
        self.cuts.setdefault(dump_id, [])
        self._cutting = dump_id
        yield _CHUNKS, 0
        self._cutting = None
        self.ends[dump_id] = self._pos

    def _int_value(self, what):
        sign, value = self._int.unpack((yield _READ, self._hdr))
        if sign > 1:
            raise Malformed('%s has the sign byte %d' % (what, sign))
        return -value if sign else value

    def _string(self, keep=False):
        """Skip a string; returns its length (negative: a null string), or (``keep``) its text
        (None: a null string). Only short strings are kept: a desc, a dependency."""
        length = yield from self._int_value('a string length')
        if keep:
            if length > MAX_KEPT:
                raise Malformed('a string of %d bytes where a short name belongs' % length)
            return (yield _READ, length).decode('ascii', 'replace') if length > 0 else ('' if length == 0 else None)
        if length > 0:
            self._left = length
            yield _SKIP, length
        return length

    # -- the end ----------------------------------------------------------------------------
    def result(self):
        """What was found, once every byte was fed: {'dumpId': offset}; raises IntegrityError
        for an archive that does not parse, returns None for one this module does not know."""
        if self.error is None and self.unsupported is None and not self.done:
            if self._op[0] == _BLOCK and not self._pending:
                missing = sorted(set(d for d, flag, at in self.entries if flag != NO_DATA) - set(self.blocks))
                self.error = 'it ends before the data block of dumpId %s' % ', '.join(str(d) for d in missing[:5])
            else:
                self.error = 'it ends in the middle of %s' % self._context
        if self.error is not None:
            raise IntegrityError('%s is not a valid pg_dump custom-format archive: %s' % (self.where, self.error),
                                 'the backup was written damaged (its checksum matches what was stored); '
                                 'restore another backup. Nothing was changed')
        if self.unsupported is not None:
            return None
        return dict(self.blocks)

    def patch(self, path):
        """Write the recorded offsets into the archive at ``path`` (the file that was fed).
        Returns a summary: ``entries`` (with data), ``patched`` (offset fields changed), or
        ``skipped`` with the reason the file was left as it is."""
        offsets = self.result()
        if offsets is None:
            return {'data_offsets': 'left as dumped', 'reason': self.unsupported}
        patched = 0
        fd = os.open(path, os.O_RDWR)
        try:
            for dump_id, flag, at in self.entries:
                if flag == NO_DATA:
                    continue
                field = _OFFSET.pack(SET, offsets[dump_id])
                if os.pread(fd, len(field), at) != field:
                    if os.pwrite(fd, field, at) != len(field):
                        raise IntegrityError('could not write the data offsets into %s' % path,
                                             'check the work directory; nothing was changed')
                    patched += 1
        finally:
            os.close(fd)
        return {'data_offsets': 'recorded', 'entries': len(offsets), 'patched': patched}


class _FrameWalker(OffsetRecorder):
    """Walks the data of one frame of a laid-out archive (``LaidOutWalk``) on its own, from a
    block's type byte or (``in_block``) from a row of that table's data block."""

    def __init__(self, toc, start, in_block=None):  # pylint: disable=super-init-not-called
        self.where = toc.where
        self.segment = toc.segment
        self.version, self.entries = toc.version, toc.entries
        self.blocks, self.ends, self.heads, self.cuts = {}, {}, {}, {}
        self.toc_end = toc.toc_end
        self._cutting = None
        self.error = self.unsupported = None
        self.done = False
        self._context = 'the frame at byte %d' % start
        self._base = self._pos = start
        self._pending, self._left = b'', 0
        self._int, self._hdr = toc._int, toc._hdr
        self._parser = self._frame(toc.wanted(), in_block)
        self._op = next(self._parser)

    def _frame(self, wanted, in_block):
        if in_block is not None:
            self.heads[in_block] = self._pos
            yield from self._rows(in_block)
        while True:
            yield from self._block(wanted)

    def stopped_at(self):
        """Where the walk stands after the frame's last byte: 'block' (before a data block's
        type byte, or the archive's end), ('rows', dumpId) (before a row of that table), or
        None (inside a value)."""
        if self.error is not None or self._pending or self._left:
            return None
        if self._op[0] == _BLOCK:
            return 'block'
        if self._op[0] == _CHUNKS and self._cutting is not None:
            return 'rows', self._cutting
        return None


class LaidOutWalk(object):
    """Proves an archive fetched frame by frame, in any order, as the walk in order would
    (``OffsetRecorder``): the manifest's layout (pglayout.Layout) says where each zstd frame
    starts, and every frame begins at the TOC's end, at a data block or at a row (a cut). The
    recorder is fed the first frame (header and TOC); each other frame is walked on its own
    from where it starts, and must end where the next one starts (a block, or a row of the
    table it cuts). ``finish`` then checks every block was found once, where the layout put it,
    and leaves the recorder as if it had walked the whole archive (``patch`` works)."""

    def __init__(self, recorder, layout):
        self.recorder, self.layout = recorder, layout
        self.cut_of = dict((at, dump_id) for dump_id, at in layout.cuts)
        self.starts = [raw for raw, stored in layout.frames] + [layout.raw_size]
        self.found = []  # each frame's walker, once walked

    def walker(self, index):
        """The walker of frame ``index`` (>= 1): feed it the frame's bytes, then ``walked``."""
        return _FrameWalker(self.recorder, self.starts[index], self.cut_of.get(self.starts[index]))

    def toc_walked(self):
        """After the recorder was fed frame 0: an error unless it ends exactly at the TOC's end."""
        r = self.recorder
        if r.error is None and r.unsupported is None and (r.toc_end != self.layout.toc_end or self.starts[1] != r.toc_end):
            r.error = 'the layout puts the end of the TOC at byte %d, the archive at %s' % (self.layout.toc_end, r.toc_end)
        return self._failure(r.error or r.unsupported)

    def walked(self, index, walker):
        """Frame ``index`` was fed whole: it must end where frame ``index + 1`` begins."""
        end = self.starts[index + 1]
        expected = ('rows', self.cut_of[end]) if end in self.cut_of else 'block'
        stopped = walker.stopped_at()
        if walker.error is None and stopped != expected:
            walker.error = 'the frame at byte %d does not end at %s' % (
                self.starts[index], 'a row of dumpId %d' % expected[1] if expected != 'block' else 'a data block')
        self.found.append(walker)
        return self._failure(walker.error)

    def _failure(self, error):
        if error is None:
            return None
        return IntegrityError('%s does not match the layout of its manifest: %s' % (self.recorder.where, error),
                              'the backup was written damaged (its checksum matches what was stored); '
                              'restore another backup. Nothing was changed')

    def finish(self):
        """Every frame walked: the blocks found must be the TOC's, once each, where the layout
        said. Raises IntegrityError; on success the recorder holds them (``patch``)."""
        blocks, ends = {}, {}
        for walker in self.found:
            for dump_id, at in walker.blocks.items():
                if dump_id in blocks:
                    raise self._failure('a second data block for dumpId %d' % dump_id)
                blocks[dump_id] = at
            ends.update(walker.ends)
        if len(self.found) != len(self.layout.frames) - 1:
            raise self._failure('%d of %d frames were walked' % (len(self.found), len(self.layout.frames) - 1))
        if set(blocks) != self.recorder.wanted() or blocks != dict(self.layout.blocks):
            raise self._failure('its data blocks are not those of the TOC where the layout puts them')
        r = self.recorder
        r.blocks, r.ends, r.done, r._op = blocks, ends, True, (None, 0)


class LaidOut(object):
    """The marks ``Following`` plans with, taken from a manifest's layout instead of a walk in
    order: every block, row cut and block end is known before the first data byte arrives. The
    TOC (its end, its entries) is still the recorder's, once frame 0 was walked."""

    def __init__(self, recorder, layout):
        self.recorder = recorder
        self.blocks = dict(layout.blocks)
        self.cuts = {}
        for dump_id, at in layout.cuts:
            self.cuts.setdefault(dump_id, []).append(at)
        starts = [at for dump_id, at in layout.blocks] + [layout.raw_size]
        self.ends = dict((dump_id, starts[n + 1]) for n, (dump_id, at) in enumerate(layout.blocks))
        self._heads = None

    @property
    def heads(self):
        if self._heads is None:  # the block's type byte, then its dumpId (an int of the TOC's size)
            self._heads = dict((dump_id, at + 1 + self.recorder._hdr) for dump_id, at in self.blocks.items())
        return self._heads

    @property
    def toc_end(self):
        return self.recorder.toc_end

    @property
    def entries(self):
        return self.recorder.entries

    @property
    def error(self):
        return self.recorder.error

    @property
    def unsupported(self):
        return self.recorder.unsupported

    def terminator(self):
        return self.recorder.terminator()


class Following(object):
    """What of a growing archive file can be loaded already (``restore_following``): the
    schema (pre-data) once the TOC is in the file, then the table data in pieces - a block, or
    for a large table each stretch of rows between two of the recorder's cuts - from the moment
    a piece begins: a loader reads it as it grows, and several loaders can COPY one large table
    at once. Pure: fed positions, it answers; the caller runs the loaders.

    A piece is (dumpId, n): piece 0 begins with the block, piece n > 0 at the block's cut n - 1.
    ``written`` is how many bytes of the file are on disk (its size), not how many the
    recorder saw pass on their way there; or, for a file written out of order, a function of a
    position: the end of the bytes on disk from there on.

    ``recorder`` is the OffsetRecorder walking the file, or a ``LaidOut`` (the manifest's layout)."""

    def __init__(self, recorder, first=None):
        self.recorder = recorder
        self.taken = set()      # pieces handed to a loader
        # {dumpId: urgency}: pieces go out by it (the highest first), then in file order; for a
        # file written out of order, the order its frames are fetched in (framefetch.plan)
        self.first = first or {}

    def toc_ready(self, written):
        """The TOC is in the file and parsed: a schema-only restore can read it."""
        r = self.recorder
        return (r.error is None and r.unsupported is None and r.toc_end is not None
                and _extent(written)(0) >= r.toc_end)

    def _starts(self, dump_id):
        return [self.recorder.blocks[dump_id]] + self.recorder.cuts.get(dump_id, [])

    def begun(self, written):
        """Pieces begun in the file that no loader took, the most urgent first, then in file order."""
        if self.recorder.error is not None:
            return []
        found = []
        extent = _extent(written)
        heads = self.recorder.heads
        for dump_id in list(self.recorder.blocks):
            starts = self._starts(dump_id)
            # a piece after a cut is sent with its block's header: on disk too (out of order,
            # the frame of a cut can come before the block's first frame)
            header = len(starts) == 1 or extent(starts[0]) >= heads[dump_id]
            for n, at in enumerate(starts):
                if extent(at) > at and (n == 0 or header) and (dump_id, n) not in self.taken:
                    found.append((-self.first.get(dump_id, 0), at, dump_id, n))
        return [(dump_id, n) for urgency, at, dump_id, n in sorted(found)]

    def take(self, written, free):
        """Batches for up to ``free`` idle loaders, each in ``begun``'s order (a loader reads
        its pieces one after the other, as a pipe, as its list names them) and with one piece per table (pg_restore loads
        an entry once), spread round-robin so that no loader gets all the small tables while
        another idles; at most the last piece of a batch still grows."""
        batches = [[] for dummy in range(max(0, free))]
        turn = 0
        for piece in self.begun(written) if free > 0 else []:
            for k in range(free):
                batch = batches[(turn + k) % free]
                if all(dump_id != piece[0] for dump_id, n in batch):
                    batch.append(piece)
                    self.taken.add(piece)
                    turn = (turn + k + 1) % free
                    break
            else:
                break  # every batch has a piece of this table: the rest waits, in order
        return [batch for batch in batches if batch]

    def piece(self, dump_id, n):
        """(start, end, last) of a piece: ``end`` is None while not known yet; ``last``: it
        ends the block (else the loader's copy needs a terminator)."""
        starts = self._starts(dump_id)
        if n + 1 < len(starts):
            return starts[n], starts[n + 1], False
        return starts[n], self.recorder.ends.get(dump_id), True

    def loaded(self, pieces):
        """dumpIds whose every piece is in ``pieces`` (loaded): the block's end is known, and
        so how many pieces it has."""
        whole = set()
        for dump_id in self.tables():
            if dump_id in self.recorder.ends and all(
                    (dump_id, n) in pieces for n in range(len(self._starts(dump_id)))):
                whole.add(dump_id)
        return whole

    def tables(self):
        """dumpIds of which a loader took a piece."""
        return set(dump_id for dump_id, n in self.taken)

    def rest(self):
        """Every dumpId of the TOC no loader took, in TOC order: what the final restore lists."""
        taken = self.tables()
        return [dump_id for dump_id, flag, at in self.recorder.entries if dump_id not in taken]


class EarlyPostData(object):
    """Which indexes and constraints of a restore can be built before the last byte arrived:
    those of the tables whose data is all loaded (``Following.loaded``). Pure, like
    ``Following``: told what is loaded and done, it answers; the caller runs ``pg_restore -L``.

    Why: behind a link slower than the loaders, the final ``pg_restore -j`` built every index and
    constraint once the last byte had arrived (~2 s of the ~1 GB benchmark database, all of it
    after the download), where a local ``pg_restore -j`` builds a table's keys as soon as its
    data is in, beside the other tables' COPY.

    The rule is ``pg_restore -j``'s own (pg_backup_archiver.c): a post-data entry's dependency
    on a table means on its data (``repoint_table_dependencies``), and it may run once every
    dependency is restored - the schema (pre-data) is, a table's data once all its pieces were
    loaded, another post-data entry once it was built here; a dependency on no entry of the
    TOC counts as met, as there. Only these kinds are built early (``EARLY``): what else
    post-data holds (triggers, rules, policies, a materialized view's refresh, ACLs) waits for
    the final restore, which runs them in pg_restore's own order. And as pg_restore keeps two
    workers off one table at once (``has_lock_conflicts``: an FK constraint locks two tables,
    in an order two such could deadlock over), a batch never shares a table with a batch still
    running."""

    EARLY = frozenset(('INDEX', 'CONSTRAINT', 'FK CONSTRAINT'))

    def __init__(self, toc):
        data_of = {}  # a TABLE's dumpId -> its TABLE DATA's
        for dump_id, entry in toc.items():
            if entry.desc == 'TABLE DATA' and entry.deps:
                data_of[entry.deps[0]] = dump_id
        self.toc = toc
        self.needs = {}  # a post-data entry built early -> the dumpIds it waits for
        self.tables = {}  # ... -> the tables it locks (their data's dumpIds)
        for dump_id, entry in toc.items():
            if entry.section == SECTION_POST_DATA and entry.desc in self.EARLY:
                deps = set(data_of.get(dep, dep) for dep in entry.deps)
                self.needs[dump_id] = deps
                self.tables[dump_id] = set(dep for dep in deps if dep in toc and toc[dep].desc in ('TABLE', 'TABLE DATA'))
        self.running = {}  # a batch's first dumpId -> the tables it locks
        self.started, self.done = set(), set()

    def _met(self, dep, loaded):
        entry = self.toc.get(dep)
        if entry is None or entry.section in (SECTION_NONE, SECTION_PRE_DATA):
            return True
        if entry.section == SECTION_DATA:
            return dep in loaded
        return dep in self.done

    def take(self, loaded, free):
        """Batches for up to ``free`` idle loaders: the entries every dependency of which is
        met (``loaded``: TABLE DATA dumpIds whose data is all in), one batch per table, in TOC
        order within it, none locking a table a running batch locks. Each batch is then
        ``finished`` (or the restore fails)."""
        batches = {}  # the first table an entry locks -> (entries, the tables they lock)
        busy = set().union(*self.running.values()) if self.running else set()
        for dump_id, needs in self.needs.items():
            if dump_id in self.started or not all(self._met(dep, loaded) for dep in needs):
                continue
            locks = self.tables[dump_id]
            key = min(locks) if locks else -dump_id
            batch = batches.get(key)
            if batch is None:
                if locks & busy or len(batches) >= free:
                    continue
                batch = batches[key] = [], set()
            elif (locks - batch[1]) & busy:
                continue
            batch[0].append(dump_id)
            batch[1].update(locks)
            busy |= locks
            self.started.add(dump_id)
        for entries, held in batches.values():
            self.running[entries[0]] = held
        return [entries for entries, held in batches.values()]

    def finished(self, entries):
        """A batch ``take`` gave was built."""
        self.running.pop(entries[0], None)
        self.done.update(entries)


def _extent(written):
    """``Following``'s ``written``, as a function of a position."""
    if callable(written):
        return written
    return lambda pos: max(pos, written)


def recorder_for(manifest, where='the archive'):
    """An OffsetRecorder for a backup whose artifact is one custom-format archive (a
    PostgreSQL database, not a cluster's tar), else None."""
    source = manifest.get('source') or {}
    if source.get('type') == 'postgresql' and manifest.get('format') == 'custom':
        return OffsetRecorder(where)
    return None
