# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pglayout: a PostgreSQL custom-format dump compressed as zstd frames that begin at known
places of the archive, and the manifest's layout that says where.

Generated archives (the builder of test_pgcustom, every known version and word size), fed to
the writer in pieces of any size, with small segments (many cuts) and small FRAME_MIN values:

* the artifact is one zstd stream to a reader that knows nothing of frames (and to ``zstd -d``);
* each frame decompresses on its own to exactly its raw span;
* the frames begin at 0, the end of the TOC, every cut, and a block start only when the frame
  before it held FRAME_MIN raw bytes; nowhere else;
* the blocks are the archive's, every cut is at a row of its table's block;
* ``read_layout`` accepts the layout, and refuses each of a list of corruptions of it.

A recorder that finds no archive it knows (garbage, an unknown version, bytes after the end)
gives no layout and the same artifact as ever.

Reproducing a failure: examples come from ``SEED`` (random per run unless
``PGLAYOUT_PROPERTY_SEED`` is set); a failure shows ``seed <N>``, and
``PGLAYOUT_PROPERTY_SEED=<N> pytest tests/unit/test_pglayout.py`` replays it.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import copy
import io
import os
import random
import shutil
import struct
import subprocess

import pytest
import zstandard
from hypothesis import HealthCheck, given, note, seed, settings, strategies as st

from ansible_collections.offsite.backup.plugins.module_utils._engine import manifest as mf
from ansible_collections.offsite.backup.plugins.module_utils._engine import pglayout
from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import IntegrityError
from ansible_collections.offsite.backup.plugins.module_utils._engine.pipeline import compress as plain_compress
from tests.unit.test_pgcustom import write_archive

SEED = int(os.environ.get('PGLAYOUT_PROPERTY_SEED') or random.SystemRandom().randrange(2 ** 32))
print('pglayout properties: seed %d (PGLAYOUT_PROPERTY_SEED=%d replays it)' % (SEED, SEED))
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures', 'pgcustom')


def framed(archive, pieces=None, **options):
    """(stored bytes, writer) of ``archive`` written in ``pieces`` (sizes; default 1 MiB)."""
    out = io.BytesIO()
    writer = pglayout.FramedWriter(out, **options)
    at = 0
    if pieces is None:  # as a dump feeds it
        pieces = [2 ** 20] * (len(archive) // 2 ** 20)
    for size in list(pieces) + [len(archive)]:
        if at >= len(archive):
            break
        writer.write(archive[at:at + max(size, 1)])
        at += max(size, 1)
    writer.close()
    return out.getvalue(), writer


def manifest_of(stored, raw, layout):
    return {'layout': layout, 'compression': 'zstd', 'encryption': None, 'size': len(stored), 'raw_size': len(raw)}


def whole(stored):
    """What a reader that knows nothing of frames gets (the restore of older engines)."""
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(stored), read_across_frames=True)
    return reader.read()


def alone(span):
    """A stored span decompressed on its own: it must be exactly one whole frame."""
    obj = zstandard.ZstdDecompressor().decompressobj()
    out = obj.decompress(span)
    assert obj.eof and obj.unused_data == b''
    return out


def expected_starts(layout, raw_size, frame_min):
    """The rule, read plainly: 0, toc_end and every cut always; a block start when the frame
    being written holds frame_min raw bytes."""
    always = set([layout.toc_end]) | set(at for dump_id, at in layout.cuts)
    points = sorted(always | set(at for dump_id, at in layout.blocks))
    starts = [0]
    for at in points:
        if at > starts[-1] and (at in always or at - starts[-1] >= frame_min):
            starts.append(at)
    return starts


def rows_of(archive, offsets, entries, int_size):
    """{dumpId: [raw offset of each chunk length, and of the terminator]} of table data blocks."""
    rows = {}
    hdr = 1 + int_size
    for dump_id, blocks in entries:
        if not blocks or blocks[0] != 'data':
            continue
        at = offsets[dump_id] + 1 + hdr
        rows[dump_id] = []
        for chunk in blocks[1]:
            rows[dump_id].append(at)
            at += hdr + len(chunk)
        rows[dump_id].append(at)
    return rows


def check(archive, stored, writer, frame_min):
    """Every property of one written artifact; returns its Layout."""
    assert whole(stored) == archive
    assert writer.layout is not None, writer.skipped
    layout = pglayout.read_layout(manifest_of(stored, archive, writer.layout))
    spans = layout.spans()
    assert spans[0][0] == 0 and spans[0][2] == 0 and spans[-1][1] == len(archive) and spans[-1][3] == len(stored)
    for raw_start, raw_end, stored_start, stored_end in spans:
        assert alone(stored[stored_start:stored_end]) == archive[raw_start:raw_end]
    assert [raw for raw, stored_at in layout.frames] == expected_starts(layout, len(archive), frame_min)
    assert layout.toc_end == writer.recorder.toc_end
    assert dict(layout.blocks) == writer.recorder.result()
    return layout


# -- generated archives ----------------------------------------------------------------------------
row = st.binary(min_size=1, max_size=120)
blocks = st.one_of(
    st.none(),
    st.tuples(st.just('data'), st.lists(row, max_size=40)),
    st.tuples(st.just('blobs'), st.lists(st.tuples(st.integers(1, 2 ** 31 - 1), st.lists(row, max_size=3)),
                                         max_size=3)))
archives = st.tuples(
    st.sampled_from([(1, 12), (1, 13), (1, 14), (1, 15), (1, 16)]),
    st.sampled_from([4, 8]),
    st.lists(blocks, max_size=8))


@seed(SEED)
@settings(max_examples=300, deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow])
@given(spec=archives, data=st.data())
def test_generated_archives_are_frames_at_the_toc_the_cuts_and_the_blocks(spec, data):
    note('seed %d' % SEED)
    version, int_size, contents = spec
    entries = [(n + 1, b) for n, b in enumerate(contents)]
    archive, offsets = write_archive(version, int_size, entries)
    pieces = data.draw(st.lists(st.integers(1, 400), max_size=60), label='feed sizes')
    segment = data.draw(st.integers(1, 600), label='segment')
    frame_min = data.draw(st.integers(1, 3000), label='frame_min')
    stored, writer = framed(archive, pieces, segment=segment, frame_min=frame_min)
    layout = check(archive, stored, writer, frame_min)
    assert dict(layout.blocks) == offsets
    rows = rows_of(archive, offsets, entries, int_size)
    for dump_id, at in layout.cuts:
        assert at in rows[dump_id]  # a row's chunk length (or the block's terminator)
    assert len(layout.cuts) == sum(len(cuts) for cuts in writer.recorder.cuts.values())


@seed(SEED)
@settings(max_examples=40, deadline=None, print_blob=True)
@given(data=st.data())
def test_real_archives_fed_in_any_pieces(data):
    note('seed %d' % SEED)
    archive = fixture(data.draw(st.sampled_from(['pipe.dump', 'pipe-z6.dump', 'seek.dump'])))
    pieces = data.draw(st.lists(st.integers(1, 5000), max_size=40))
    frame_min = data.draw(st.integers(1, 40000))
    stored, writer = framed(archive, pieces, segment=data.draw(st.integers(1, 20000)), frame_min=frame_min)
    check(archive, stored, writer, frame_min)


def fixture(name):
    with open(os.path.join(FIXTURES, name), 'rb') as handle:
        return handle.read()


def test_byte_by_byte_feeds_hold_every_start_back_in_time():
    """A block's start is known only after its type byte and dumpId: fed one byte at a time,
    the writer still begins its frame exactly there."""
    archive = fixture('pipe.dump')
    stored, writer = framed(archive, [1] * len(archive), segment=300, frame_min=1)
    layout = check(archive, stored, writer, 1)
    assert set(at for dump_id, at in layout.blocks) <= set(raw for raw, s in layout.frames)
    assert layout.cuts  # a cut at the end of (nearly) every feed past a segment


def big_archive(rows_per_table, row_size, tables=3, small=20):
    """Tables of ``rows_per_table`` rows of ``row_size`` bytes, then ``small`` one-row tables."""
    body = b'x' * (row_size - 1) + b'\n'
    rows = (struct.pack('<BI', 0, len(body)) + body) * rows_per_table
    entries = [(n + 1, ('data', [b'r\n'])) for n in range(tables + small)]
    archive, offsets = write_archive((1, 14), 4, entries)
    out, last = [], 0
    for at in sorted(offsets.values())[:tables]:
        # the rows go before the block's own last row: after its header (1 + 5 bytes)
        head = at + 6
        out.append(archive[last:head])
        out.append(rows)
        last = head
    out.append(archive[last:])
    return b''.join(out)


def test_the_default_rule_a_block_starts_a_frame_after_one_mib():
    """Three tables of 600 KiB, then twenty small ones: with FRAME_MIN (1 MiB) the second
    table's block does not begin a frame (the first frame after the TOC holds 600 KiB), the
    third's does; of the small tables, none."""
    archive = big_archive(6000, 100)
    stored, writer = framed(archive)
    layout = check(archive, stored, writer, pglayout.FRAME_MIN)
    starts = [raw for raw, s in layout.frames]
    block = [at for dump_id, at in layout.blocks]
    assert starts == [0, layout.toc_end, block[2]]
    assert not layout.cuts


@pytest.mark.slow
def test_the_default_segment_cuts_a_large_table():
    """About 70 MiB of rows in one table, fed a mebibyte at a time as a dump feeds it: one cut,
    about 64 MiB into the block, begins a frame."""
    archive = big_archive(700000, 100, tables=1, small=2)
    stored, writer = framed(archive)
    layout = check(archive, stored, writer, pglayout.FRAME_MIN)
    assert len(layout.cuts) == 1
    dump_id, at = layout.cuts[0]
    assert 64 * 2 ** 20 <= at - dict(layout.blocks)[dump_id] <= 66 * 2 ** 20
    assert at in [raw for raw, s in layout.frames]


def test_worker_threads_and_levels_give_the_same_frames():
    archive = big_archive(3000, 100, tables=4)
    layouts = []
    for options in ({}, {'threads': 1}, {'level': 3}):
        stored, writer = framed(archive, [65536] * 100, segment=100000, frame_min=200000, **options)
        layouts.append(check(archive, stored, writer, 200000))
    assert len(set(tuple(raw for raw, s in layout.frames) for layout in layouts)) == 1
    assert len(layouts[0].frames) > 3 and layouts[0].cuts


def test_compress_reads_a_stream_as_the_dump_does():
    archive = big_archive(30000, 100)  # ~9 MiB, read a mebibyte at a time
    out = io.BytesIO()
    raw_size, layout = pglayout.compress(io.BytesIO(archive), out, segment=65536)
    assert raw_size == len(archive)
    found = pglayout.read_layout(manifest_of(out.getvalue(), archive, layout))
    assert found.cuts and whole(out.getvalue()) == archive


@pytest.mark.skipif(not shutil.which('zstd'), reason='no zstd command')
def test_zstd_d_reads_the_frames_as_one_stream(tmp_path):
    archive = big_archive(3000, 100)
    stored, writer = framed(archive, [50000] * 100, segment=30000, frame_min=1)
    assert len(writer.layout['frames']) > 10
    path = tmp_path / 'a.dump.zst'
    path.write_bytes(stored)
    assert subprocess.run(['zstd', '-d', '-c', str(path)], capture_output=True, check=True).stdout == archive
    out = io.BytesIO()  # and what pipeline.compress writes of the same archive reads the same
    plain_compress(io.BytesIO(archive), out, 'zstd')
    assert whole(out.getvalue()) == whole(stored)


def test_an_archive_without_data_ends_in_an_empty_frame_at_the_end_of_its_toc():
    archive, offsets = write_archive((1, 16), 8, [(1, None), (2, None)])
    stored, writer = framed(archive)
    layout = check(archive, stored, writer, pglayout.FRAME_MIN)
    assert layout.toc_end == len(archive) and layout.blocks == []
    assert [raw for raw, s in layout.frames] == [0, len(archive)]
    assert layout.spans()[-1][:2] == (len(archive), len(archive))


# -- no layout, the same artifact ------------------------------------------------------------------
@pytest.mark.parametrize('damage', ['garbage', 'version 1.17', 'version 2.0', 'word size', 'trailing bytes',
                                    'truncated', 'bad block id'])
def test_an_archive_the_recorder_refuses_gets_no_layout_and_a_correct_artifact(damage):
    archive = big_archive(300, 100, tables=2, small=3)
    if damage == 'garbage':
        archive = random.Random(SEED).randbytes(300000)
    elif damage.startswith('version'):
        archive = archive[:5] + bytes([int(damage[8]), int(damage[10:])]) + archive[7:]
    elif damage == 'word size':
        archive = archive[:8] + b'\x02' + archive[9:]
    elif damage == 'trailing bytes':
        archive += b'\x01\x02'
    elif damage == 'truncated':
        archive = archive[:-7]
    else:
        stored, writer = framed(archive)
        at = writer.layout['blocks'][1][1]
        archive = archive[:at + 1] + struct.pack('<BI', 0, 999) + archive[at + 6:]
    stored, writer = framed(archive, [4096] * 200, segment=1000, frame_min=1)
    assert writer.layout is None and writer.skipped
    assert whole(stored) == archive
    out = io.BytesIO()
    assert pglayout.compress(io.BytesIO(archive), out) == (len(archive), None)
    assert whole(out.getvalue()) == archive


def test_a_recorder_that_raises_never_fails_the_dump():
    archive = big_archive(300, 100)

    class Broken(object):
        def feed(self, data):
            raise RuntimeError('a bug')

    out = io.BytesIO()
    writer = pglayout.FramedWriter(out)
    writer.recorder = Broken()
    writer.write(archive[:1000])
    writer.write(archive[1000:])
    writer.close()
    assert writer.layout is None and 'a bug' in writer.skipped
    assert whole(out.getvalue()) == archive


# -- read_layout --------------------------------------------------------------------------------------
def good():
    archive = big_archive(400, 100, tables=3, small=2)
    stored, writer = framed(archive, [4096] * 100, segment=8000, frame_min=1)
    manifest = manifest_of(stored, archive, writer.layout)
    layout = pglayout.read_layout(manifest)
    assert len(layout.blocks) == 5 and len(layout.cuts) >= 6 and len(layout.frames) == 1 + 5 + len(layout.cuts)
    return manifest


def _set(path, value):
    def change(m):
        target = m
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


def _apply(fn):
    """``fn(layout, manifest)`` changes them in place."""
    def change(m):
        fn(m['layout'], m)
    return change


def _cut_block(m):
    return [b for b in m['layout']['blocks'] if b[0] == m['layout']['cuts'][0][0]][0]


CORRUPTIONS = [
    ('not an object', _set(['layout'], [1, 2]), 'not an object'),
    ('frames missing', _apply(lambda x, m: x.pop('frames')), 'frames is missing, not a list'),
    ('frames a dict', _set(['layout', 'frames'], {'0': 0}), 'frames is dict, not a list'),
    ('a triple', _apply(lambda x, m: x['frames'].__setitem__(1, x['frames'][1] + [0])), 'frames[1] is'),
    ('a string', _apply(lambda x, m: x['blocks'][0].__setitem__(1, '12')), 'not a number'),
    ('a bool', _apply(lambda x, m: x['cuts'][0].__setitem__(0, True)), 'cuts[0][0] is True, not a number'),
    ('a float', _set(['layout', 'toc_end'], 12.0), 'toc_end is 12.0, not a number'),
    ('negative', _apply(lambda x, m: x['frames'][1].__setitem__(1, -5)), 'frames[1][1] is negative'),
    ('toc_end missing', _apply(lambda x, m: x.pop('toc_end')), 'toc_end is missing'),
    ('size missing', _apply(lambda x, m: m.pop('size')), 'size is None, not a number'),
    ('first frame', _apply(lambda x, m: x['frames'].__setitem__(0, [0, 4])), 'the first frame is [0, 4]'),
    ('no frames', _set(['layout', 'frames'], []), 'the first frame is missing'),
    ('raw descends', _apply(lambda x, m: x['frames'].__setitem__(2, [x['frames'][1][0], x['frames'][2][1]])),
     'frames[2]'),
    ('stored descends', _apply(lambda x, m: x['frames'][2].__setitem__(1, x['frames'][1][1])),
     'raw and stored offsets ascend strictly'),
    ('frame past raw_size', _apply(lambda x, m: x['frames'].append([m['raw_size'] + 1, m['size'] - 1])),
     'begins beyond the artifact'),
    ('frame past size', _apply(lambda x, m: x['frames'][-1].__setitem__(1, m['size'])), 'begins beyond the artifact'),
    ('repeated dumpId', _apply(lambda x, m: x['blocks'][1].__setitem__(0, x['blocks'][0][0])), 'repeated'),
    ('dumpId 0', _apply(lambda x, m: x['blocks'][1].__setitem__(0, 0)), 'not positive'),
    ('blocks descend', _apply(lambda x, m: x['blocks'].reverse()), 'does not follow blocks'),
    ('block past the end', _apply(lambda x, m: x['blocks'].append([999, m['raw_size']])), 'beyond the archive'),
    ('toc_end elsewhere', _apply(lambda x, m: x.__setitem__('toc_end', x['toc_end'] - 1)),
     'is not where the first block begins'),
    ('toc_end no frame', _apply(lambda x, m: (x.__setitem__('blocks', []), x.__setitem__('cuts', []),
                                              x.__setitem__('toc_end', 17))), 'toc_end 17 is not a frame start'),
    ('cut in no block', _apply(lambda x, m: x['cuts'][0].__setitem__(0, 4242)), 'which has no block'),
    ('cut at its block', _apply(lambda x, m: x['cuts'][0].__setitem__(1, _cut_block(m)[1])), 'is not inside the block'),
    ('cut in another block', _apply(lambda x, m: x['cuts'][0].__setitem__(0, x['blocks'][-1][0])),
     'is not inside the block'),
    ('cuts descend', _apply(lambda x, m: x['cuts'].reverse()), 'does not follow cuts'),
    ('cut no frame', _apply(lambda x, m: x['cuts'][0].__setitem__(1, x['cuts'][0][1] + 1)), 'is not a frame start'),
    ('frame nowhere', _apply(lambda x, m: x['frames'].insert(2, [x['frames'][1][0] + 1, x['frames'][1][1] + 1])),
     'neither the end of the TOC nor a block or a cut'),
]


@pytest.mark.parametrize('name, change, says', CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_a_corrupted_layout_is_an_integrity_error(name, change, says):
    manifest = copy.deepcopy(good())
    change(manifest)
    with pytest.raises(IntegrityError) as caught:
        pglayout.read_layout(manifest, where='manifest crm/x')
    assert caught.value.kind == 'integrity'
    assert caught.value.message.startswith('the layout in manifest crm/x is not usable: ')
    assert says in caught.value.message, caught.value.message
    assert 'restored in order' in caught.value.hint


def test_read_layout_is_none_without_a_layout_zstd_or_plain_bytes():
    manifest = good()
    assert pglayout.read_layout(dict(manifest, layout=None)) is None
    assert pglayout.read_layout(dict((k, v) for k, v in manifest.items() if k != 'layout')) is None
    assert pglayout.read_layout(dict(manifest, compression='gzip')) is None
    assert pglayout.read_layout(dict(manifest, encryption={'scheme': 'age', 'tool': 'age'})) is None
    assert pglayout.read_layout(dict(manifest, encryption={'scheme': 'none'})) is not None
    layout = pglayout.read_layout(manifest)
    assert all(isinstance(pair, tuple) for pair in layout.frames + layout.blocks + layout.cuts)
    assert layout.size == manifest['size'] and layout.raw_size == manifest['raw_size']
    for n, (raw, raw_end, stored, stored_end) in enumerate(layout.spans()):
        # the data blocks follow the TOC back to back: every byte of a frame after it is a block's
        assert sum(count for dump_id, count in layout.overlaps(raw, raw_end)) == (raw_end - raw if n else 0)
    assert sorted(layout.ratios()) == sorted(dump_id for dump_id, at in layout.blocks)


def test_applies_to_single_postgresql_custom_zstd_unencrypted_dumps():
    base = {'source': {'type': 'postgresql'}, 'format': 'custom', 'compression': 'zstd', 'encryption': None}
    assert pglayout.applies(base)
    assert not pglayout.applies(dict(base, compression='gzip'))
    assert not pglayout.applies(dict(base, compression='none'))
    assert not pglayout.applies(dict(base, format='cluster'))
    assert not pglayout.applies(dict(base, format='plain'))
    assert not pglayout.applies(dict(base, source={'type': 'mysql'}))
    assert not pglayout.applies(dict(base, encryption={'scheme': 'passphrase', 'tool': 'gpg'}))


def test_the_manifest_carries_the_layout_only_when_given():
    import datetime
    created = datetime.datetime(2026, 12, 6, 6, 0, 0, tzinfo=datetime.timezone.utc)
    args = ('crm', 'crm_20261206T060000Z', created, 'dump.zst', 'zstd', 'custom', 3, 'ab' * 32, 3,
            {'type': 'postgresql'}, [], 0.1)
    assert 'layout' not in mf.build(*args)
    layout = good()['layout']
    data = mf.build(*args, layout=layout)
    assert data['layout'] == layout and data['format_version'] == 1
    assert mf.loads(mf.dumps(data), 'the test')['layout'] == layout
