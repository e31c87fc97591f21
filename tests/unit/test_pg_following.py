# Copyright (c) offsite.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The schedule of a restore that follows its work file (pgcustom.Following): what of a
growing archive can be loaded, by whom, and what is left for the final ``pg_restore -j``.

Checked on real pg_dump 15 archives (fixtures/pgcustom) fed in random pieces, with the file
on disk lagging behind what the recorder saw, as it does behind a buffered writer."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.offsite.backup.plugins.module_utils._engine import pgcustom

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures', 'pgcustom')


def fixture(name):
    with open(os.path.join(FIXTURES, name), 'rb') as handle:
        return handle.read()


def fed(data, upto):
    recorder = pgcustom.OffsetRecorder('the test archive')
    recorder.feed(data[:upto])
    return recorder


def test_the_toc_and_block_ends_are_where_the_next_thing_starts():
    data = fixture('pipe.dump')
    recorder = fed(data, len(data))
    starts = sorted(recorder.blocks.values())
    assert recorder.toc_end == starts[0]
    assert sorted(recorder.ends.values()) == starts[1:] + [len(data)]
    for dump_id, start in recorder.blocks.items():
        assert recorder.ends[dump_id] > start


def test_nothing_is_ready_before_the_toc_is_on_disk():
    data = fixture('pipe.dump')
    recorder = fed(data, len(data))
    plan = pgcustom.Following(recorder)
    assert not plan.toc_ready(recorder.toc_end - 1)
    assert plan.toc_ready(recorder.toc_end)
    assert plan.take(recorder.toc_end, 2) == []  # the TOC is there, no block has begun on disk
    half = pgcustom.Following(fed(data, recorder.toc_end - 1))
    assert not half.toc_ready(len(data))  # on disk but not parsed yet


def test_blocks_are_handed_out_once_in_file_order_round_robin():
    data = fixture('pipe.dump')
    recorder = fed(data, len(data))
    order = [(d, 0) for d in sorted(recorder.blocks, key=recorder.blocks.get)]
    plan = pgcustom.Following(recorder)
    assert plan.take(len(data), 0) == []
    batches = plan.take(len(data), 2)
    assert batches == [order[0::2], order[1::2]]
    assert plan.take(len(data), 2) == []
    assert plan.rest() == [d for d, flag, at in recorder.entries if d not in recorder.blocks]


def test_a_growing_block_is_taken_and_followed_until_it_ends():
    data = fixture('pipe.dump')
    whole = fed(data, len(data))
    last = max(whole.blocks, key=whole.blocks.get)
    middle = (whole.blocks[last] + len(data)) // 2
    recorder = fed(data, middle)
    plan = pgcustom.Following(recorder)
    batches = plan.take(middle, 1)
    assert batches == [[(d, 0) for d in sorted(whole.blocks, key=whole.blocks.get)]]  # the growing one last
    assert plan.piece(last, 0) == (whole.blocks[last], None, True)
    recorder.feed(data[middle:])
    assert plan.piece(last, 0) == (whole.blocks[last], len(data), True)


def rows(data, start, end, int_size=4):
    """The chunks (rows) between ``start`` and ``end``, a stretch of a table data block."""
    found, pos = [], start
    while pos < end:
        length = int.from_bytes(data[pos + 1:pos + 1 + int_size], 'little')
        pos += 1 + int_size
        if not length:
            break
        found.append(data[pos:pos + length])
        pos += length
    return found


def test_a_large_table_is_cut_into_pieces_of_whole_rows():
    data = fixture('pipe.dump')
    recorder = pgcustom.OffsetRecorder('the test archive', segment=64)
    for at in range(0, len(data), 50):  # cuts are made at the ends of feeds
        recorder.feed(data[at:at + 50])
    plan = pgcustom.Following(recorder)
    cut = [d for d in recorder.cuts if recorder.cuts[d]]
    assert cut, recorder.cuts
    for dump_id in cut:
        head = recorder.heads[dump_id]
        assert head == recorder.blocks[dump_id] + 1 + 5
        whole = rows(data, head, recorder.ends[dump_id])
        pieces = []
        for n in range(len(recorder.cuts[dump_id]) + 1):
            start, end, last = plan.piece(dump_id, n)
            assert last == (n == len(recorder.cuts[dump_id]))
            pieces += rows(data, head if n == 0 else start, end)
            assert end - start >= 64 or last
        assert pieces == whole and len(whole) > 1
    assert recorder.terminator() == b'\x00' * 5


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(['pipe.dump', 'pipe-z6.dump']), segment=st.sampled_from([None, 40, 300]),
       data=st.data())
def test_every_entry_is_loaded_exactly_once_by_a_loader_or_the_final_restore(name, segment, data):
    archive = fixture(name)
    recorder = pgcustom.OffsetRecorder('the test archive', segment=segment)
    plan = pgcustom.Following(recorder)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(archive)), max_size=12))) + [len(archive)]
    handed, pos = [], 0
    for cut in cuts:
        recorder.feed(archive[pos:cut])
        pos = cut
        lag = data.draw(st.integers(0, 9000))  # the writer's buffer: the disk is behind
        written = max(0, cut - lag)
        for batch in plan.take(written, data.draw(st.integers(0, 3))):
            starts = [plan.piece(d, n)[0] for d, n in batch]
            assert starts == sorted(starts) and all(at < written for at in starts)
            assert len(set(d for d, n in batch)) == len(batch)
            for d, n in batch[:-1]:  # only the last piece of a batch may still be growing
                end = plan.piece(d, n)[1]
                assert end is not None and end <= written
            handed += batch
    stopped_early = data.draw(st.booleans())
    while not stopped_early:
        more = [p for batch in plan.take(len(archive), 2) for p in batch]
        if not more:
            break
        handed += more
    assert len(handed) == len(set(handed))
    entries = [d for d, flag, at in recorder.entries]
    tables = set(d for d, n in handed)
    assert sorted(list(tables) + plan.rest()) == sorted(entries)
    if not stopped_early:
        assert set(handed) == set((d, n) for d in recorder.blocks for n in range(len(recorder.cuts.get(d, [])) + 1))


def test_a_malformed_archive_hands_out_nothing_more():
    data = fixture('pipe.dump')
    whole = fed(data, len(data))
    second = sorted(whole.blocks.values())[1]
    recorder = fed(data[:second] + b'\x07' + data[second + 1:], len(data))
    plan = pgcustom.Following(recorder)
    assert recorder.error
    assert not plan.toc_ready(len(data)) and plan.take(len(data), 2) == []


def test_freeing_a_read_range_frees_only_whole_blocks_inside_it(tmp_path):
    """What a loader has read is given back as a hole, its size kept; a block that holds bytes
    outside the range (the next piece's start, a block header every later piece repeats)
    keeps them all. A file system without holes keeps every byte, and says nothing."""
    from ansible_collections.offsite.backup.plugins.module_utils._engine.sources import postgresql_following
    data = os.urandom(64 * 1024)
    path = tmp_path / 'artifact.dump'
    path.write_bytes(data)
    if path.stat().st_blksize != 4096:
        pytest.skip('the figures below are for 4 KiB blocks')
    holes = postgresql_following._Holes()
    with open(path, 'r+b') as archive:
        assert holes.punch(archive, 5000, 8192 + 100) == 5000  # no whole block inside: nothing
        assert holes.punch(archive, 5000, 40000) == 36864      # blocks 2 to 8 of 4 KiB
        assert holes.punch(archive, 36864, 36864 + 4095) == 36864
    after = path.read_bytes()
    assert len(after) == len(data)
    assert after[:8192] == data[:8192] and after[36864:] == data[36864:]
    assert after[8192:36864] == bytes(36864 - 8192)
    assert path.stat().st_blocks * 512 <= len(data) - (36864 - 8192)

    holes.fallocate = lambda *args: -1  # EOPNOTSUPP, say: from then on nothing is freed
    with open(path, 'r+b') as archive:
        assert holes.punch(archive, 36864, 65536) == 36864
    assert holes.fallocate is None and path.read_bytes()[36864:] == data[36864:]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 48 * 1024), min_size=2, max_size=12, unique=True))
def test_freeing_pieces_in_turn_keeps_every_byte_outside_them(tmp_path_factory, bounds):
    """Pieces as a feeder frees them, each from where the previous call said: every byte outside
    the pieces (what other loaders have yet to read) keeps its value, a byte inside is its own
    or zero, and a piece's blocks are freed but for the one it shares at each end."""
    from ansible_collections.offsite.backup.plugins.module_utils._engine.sources import postgresql_following
    data = os.urandom(48 * 1024) + b'\xff' * 4096  # never zero at the end: a hole there would show
    path = tmp_path_factory.mktemp('holes') / 'artifact.dump'
    path.write_bytes(data)
    bounds = sorted(bounds)
    pieces = list(zip(bounds[::2], bounds[1::2]))  # every other stretch stays unread
    holes = postgresql_following._Holes()
    with open(path, 'r+b') as archive:
        for start, end in pieces:
            freed = start
            for pos in range(start, end, 3001):  # the download's chunks, as _follow copies them
                freed = holes.punch(archive, freed, min(pos + 3001, end))
    after = path.read_bytes()
    assert len(after) == len(data)
    outside = [0] + [at for piece in pieces for at in piece] + [len(data)]
    for start, end in zip(outside[::2], outside[1::2]):
        assert after[start:end] == data[start:end], (start, end)
    for start, end in pieces:
        assert all(a == b or a == 0 for a, b in zip(after[start:end], data[start:end])), (start, end)
    if holes.fallocate is not None and path.stat().st_blksize == 4096:
        for start, end in pieces:
            first, last = -(-start // 4096) * 4096, end // 4096 * 4096
            assert after[first:last] == bytes(max(0, last - first)), (start, end)
