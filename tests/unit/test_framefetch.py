# Copyright (c) offsite.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""framefetch: a laid-out artifact fetched frame by frame, out of order, proven as in order.

The store is an in-memory one with ranged reads (the library boundary); the archives are the
real pg_dump 15 archives of fixtures/pgcustom, laid out by pglayout as a dump lays them out.
The invariants: whatever the order the frames arrive in, the work file is the archive, the
sha256 is the one of the stored bytes in their order, the TOC patched is pg_dump's own
seekable file; a stored byte changed is a checksum mismatch (the root cause), a layout that
does not fit an intact artifact is named as that, and no spool is left behind."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.offsite.backup.plugins.module_utils._engine import framefetch, pgcustom, pglayout
from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import IntegrityError
from ansible_collections.offsite.backup.plugins.module_utils._engine.sources.postgresql_following import _Ranges

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures', 'pgcustom')


def fixture(name):
    with open(os.path.join(FIXTURES, name), 'rb') as handle:
        return handle.read()


class Trickle(io.BytesIO):
    """pg_dump's pipe, a few bytes at a time: the recorder cuts only at the end of a feed."""

    def read(self, size=-1):
        return super().read(50)


def laid_out(raw, segment=64, frame_min=1):
    """(stored bytes, manifest) of ``raw`` compressed as a dump does, with small cuts."""
    sink = io.BytesIO()
    raw_size, layout = pglayout.compress(Trickle(raw), sink, segment=segment, frame_min=frame_min)
    stored = sink.getvalue()
    assert raw_size == len(raw) and layout is not None
    manifest = {'compression': 'zstd', 'encryption': None, 'size': len(stored), 'raw_size': raw_size,
                'sha256': hashlib.sha256(stored).hexdigest(), 'layout': layout}
    return stored, manifest


class Store(object):
    """Ranged reads of one object, answered in a random order of arrival: each read waits a
    random moment, so that the fetch's two connections interleave."""

    def __init__(self, stored, rng=None):
        self.stored, self.rng, self.ranges = stored, rng or random.Random(0), []

    @contextlib.contextmanager
    def get_range(self, key, start, end):
        self.ranges.append((start, end))
        yield io.BytesIO(self.stored[start:end])


class Follow(object):
    """What FrameFetch tells a FollowingLoad: the stretches placed, in the order they came."""

    def __init__(self, recorder, layout):
        self.walk = pgcustom.LaidOutWalk(recorder, layout)
        self.ranges = _Ranges()
        self.order = []
        self.lock = threading.Lock()

    def placed(self, start, end):
        with self.lock:
            self.ranges.add(start, end)
            self.order.append(start)

    def room(self):
        pass


def fetch(tmp_path, stored, manifest, name='pipe.dump'):
    layout = pglayout.read_layout(manifest)
    recorder = pgcustom.OffsetRecorder('the test archive')
    follow = Follow(recorder, layout)
    path = str(tmp_path / 'artifact.dump')
    store = Store(stored)
    job = framefetch.FrameFetch(store, 'k', path, layout, follow.walk, follow, manifest['size'],
                                manifest['sha256'], 'the test artifact')
    job.units = framefetch.plan(layout, small=1, most=1)  # every frame a request of its own
    return path, job.run(), recorder, follow, store


@pytest.mark.parametrize('name', ['pipe.dump', 'pipe-z6.dump'])
def test_fetched_out_of_order_the_work_file_is_the_archive_and_patches_as_pg_dumps_own(tmp_path, name):
    raw = fixture(name)
    stored, manifest = laid_out(raw)
    path, (size, sha256, raw_size), recorder, follow, store = fetch(tmp_path, stored, manifest)
    assert manifest['layout']['cuts'] and (size, sha256, raw_size) == (len(stored), manifest['sha256'], len(raw))
    with open(path, 'rb') as handle:
        assert handle.read() == raw
    assert follow.ranges.extent(0) == len(raw)
    assert len(store.ranges) > 2 and store.ranges[0][0] == 0  # the TOC's frame first, alone
    recorder.patch(path)
    if name == 'pipe.dump':
        seek = fixture('seek.dump')
        with open(path, 'rb') as handle:
            patched = handle.read()
        assert patched[:16] + patched[51:] == seek[:16] + seek[51:]  # all but the creation time
    assert sorted(os.listdir(tmp_path)) == ['artifact.dump']  # the spool is gone


def test_frames_go_out_by_load_work_per_stored_byte():
    """Rows that compress 40:1 before incompressible bytes, whatever the file's order, each
    table's frames in the file's order (its header first); neighbours of equal urgency, or
    smaller than SMALL_UNIT, travel together."""
    big = framefetch.SMALL_UNIT
    # raw, stored sizes of the frames after the TOC: table 1 (incompressible, two frames), table
    # 2 (40:1, three frames, the second compressing worse than table 1), table 3 (small)
    sizes = [(big, big + 10), (big, big + 10), (40 * big, big), (big, 2 * big), (40 * big, big), (1, 2)]
    firsts = {1: 1, 2: 3, 3: 6}  # the frame that starts each table's block

    frames, blocks = [(0, 0)], []
    raw = stored = 10
    for n, (r, s) in enumerate(sizes, start=1):
        if n in firsts.values():
            blocks.append((n, raw))
        frames.append((raw, stored))
        raw, stored = raw + r, stored + s
    layout = pglayout.Layout(frames, 10, blocks, [], stored, raw)

    def order(layout, **sizes):
        return [[span[0] for span in unit.spans] for unit in framefetch.plan(layout, **sizes)]
    assert order(layout, small=1, most=1) == [[3], [4], [5], [1], [2], [6]]
    assert order(layout) == [[3, 4, 5, 6], [1, 2]] and framefetch.reorders(layout)  # 6 is tiny: it goes along
    assert order(layout, most=2 * big) == [[3, 4], [5, 6], [1, 2]]
    # table 2 begins 15 bytes into frame 2 (a cut at table 1's terminator): that frame, mostly
    # table 2's rows and holding its header, goes with table 2, before its next one
    straddling = pglayout.Layout([(0, 0), (10, 10), (10 + big, 20 + big), (25 + 41 * big, 20 + 2 * big)], 10,
                                 [(1, 10), (2, 25 + big)], [], 20 + 3 * big, 25 + 81 * big)
    assert order(straddling, small=1, most=1) == [[2], [3], [1]]
    in_order = pglayout.Layout(layout.frames, 10, [(1, 10)], [], layout.size, layout.raw_size)
    assert not framefetch.reorders(in_order)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(['pipe.dump', 'pipe-z6.dump']), segment=st.sampled_from([40, 64, 300]),
       seed=st.integers(0, 2 ** 32 - 1))
def test_any_order_of_arrival_gives_the_archive(tmp_path_factory, name, segment, seed):
    print('seed', seed)
    raw = fixture(name)
    stored, manifest = laid_out(raw, segment=segment)
    layout = pglayout.read_layout(manifest)
    rng = random.Random(seed)
    units = framefetch.plan(layout, small=rng.choice([1, 100, 10 ** 6]), most=rng.choice([1, 500, 10 ** 6]))
    rng.shuffle(units)
    tmp = tmp_path_factory.mktemp('order')
    recorder = pgcustom.OffsetRecorder('the test archive')
    follow = Follow(recorder, layout)
    job = framefetch.FrameFetch(Store(stored), 'k', str(tmp / 'a.dump'), layout, follow.walk, follow,
                                len(stored), manifest['sha256'], 'the test artifact', connections=rng.choice([1, 2, 3]))
    job.units = units
    assert job.run()[1] == manifest['sha256']
    assert (tmp / 'a.dump').read_bytes() == raw
    assert recorder.result() == pgcustom_offsets(raw)


def pgcustom_offsets(raw):
    recorder = pgcustom.OffsetRecorder('the reference')
    recorder.feed(raw)
    return recorder.result()


def test_a_changed_stored_byte_is_a_checksum_mismatch_and_nothing_is_left(tmp_path):
    raw = fixture('pipe.dump')
    stored, manifest = laid_out(raw)
    spans = pglayout.read_layout(manifest).spans()
    at = (spans[2][2] + spans[2][3]) // 2
    damaged = stored[:at] + bytes([stored[at] ^ 0xff]) + stored[at + 1:]
    with pytest.raises(IntegrityError, match='does not match its manifest checksum'):
        fetch(tmp_path, damaged, manifest)
    assert sorted(os.listdir(tmp_path)) == ['artifact.dump']  # the caller removes its work directory


def test_a_layout_that_does_not_fit_an_intact_artifact_is_named(tmp_path):
    raw = fixture('pipe.dump')
    stored, manifest = laid_out(raw)
    layout = manifest['layout']
    # a frame start moved by one stored byte: the checksum holds, the frame does not
    moved = dict(layout, frames=[list(f) for f in layout['frames']])
    moved['frames'][2][1] += 1
    with pytest.raises(IntegrityError, match='does not fit the layout'):
        fetch(tmp_path, stored, dict(manifest, layout=moved))


def test_a_cut_the_layout_puts_inside_a_row_is_found(tmp_path):
    """The frames decompress, but a row boundary the layout claims is none: the walk says so."""
    raw = fixture('pipe.dump')
    stored, manifest = laid_out(raw)
    layout = pglayout.read_layout(manifest)
    recorder = pgcustom.OffsetRecorder('the test archive')
    walk = pgcustom.LaidOutWalk(recorder, layout)
    recorder.feed(raw[:layout.toc_end])
    assert walk.toc_walked() is None
    cut_at = layout.cuts[0][1]
    walk.cut_of = {cut_at + 1: layout.cuts[0][0]}  # a row that starts one byte later
    walk.starts = [s + 1 if s == cut_at else s for s in walk.starts]
    index = walk.starts.index(cut_at + 1)
    walker = walk.walker(index)
    walker.feed(raw[cut_at + 1:walk.starts[index + 1]])
    error = walk.walked(index, walker)
    assert isinstance(error, IntegrityError) and 'does not match the layout' in str(error)


def test_a_store_that_fails_mid_frame_fails_the_fetch(tmp_path):
    raw = fixture('pipe.dump')
    stored, manifest = laid_out(raw)

    class Broken(Store):
        @contextlib.contextmanager
        def get_range(self, key, start, end):
            if start:
                raise OSError('connection reset')
            yield io.BytesIO(self.stored[start:end])
    layout = pglayout.read_layout(manifest)
    recorder = pgcustom.OffsetRecorder('t')
    follow = Follow(recorder, layout)
    with pytest.raises(OSError, match='connection reset'):
        framefetch.FrameFetch(Broken(stored), 'k', str(tmp_path / 'a'), layout, follow.walk, follow,
                              len(stored), manifest['sha256'], 'w').run()
    assert sorted(os.listdir(tmp_path)) == ['a']


@settings(max_examples=200, deadline=None)
@given(stretches=st.lists(st.tuples(st.integers(0, 200), st.integers(1, 50)), max_size=20),
       probes=st.lists(st.integers(0, 260), max_size=20))
def test_ranges_answer_the_end_of_the_bytes_on_disk(stretches, probes):
    ranges, on_disk = _Ranges(), set()
    for start, length in stretches:
        ranges.add(start, start + length)
        on_disk.update(range(start, start + length))
        assert ranges.starts == sorted(ranges.starts)
        assert all(e < s for e, s in zip(ranges.ends, ranges.starts[1:]))  # merged: no touching stretches
    for pos in probes:
        end = pos
        while end in on_disk:
            end += 1
        assert ranges.extent(pos) == end


def test_a_piece_after_a_cut_waits_for_its_blocks_header(tmp_path):
    """Out of order the frame of a cut can arrive before the block's first frame: the piece
    is sent with the block's header, so it is not handed out before that is on disk too."""
    raw = fixture('pipe.dump')
    stored, manifest = laid_out(raw)
    layout = pglayout.read_layout(manifest)
    recorder = pgcustom.OffsetRecorder('the test archive')
    recorder.feed(raw[:layout.toc_end])
    plan = pgcustom.Following(pgcustom.LaidOut(recorder, layout))
    dump_id, cut = layout.cuts[0]
    ranges = _Ranges()
    ranges.add(0, layout.toc_end)
    ranges.add(cut, cut + 10)
    assert (dump_id, 1) not in plan.begun(ranges.extent)
    block = dict(layout.blocks)[dump_id]
    ranges.add(block, block + 3)  # not the whole header yet
    assert (dump_id, 1) not in plan.begun(ranges.extent)
    ranges.add(block, plan.recorder.heads[dump_id])
    assert (dump_id, 1) in plan.begun(ranges.extent) and (dump_id, 0) in plan.begun(ranges.extent)


def test_a_malformed_layout_read_from_storage_is_passed_over_with_a_warning():
    """A manifest is input: a layout that does not hold together (frames out of order here)
    makes the restore warn and read the artifact in order, as one written without a layout;
    a store without ranged reads, or an encrypted backup, never looks at it."""
    from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories.base import RangedReads
    from ansible_collections.offsite.backup.plugins.module_utils._engine.usecases import restore

    class Ranged(RangedReads):
        def get_range(self, key, start, end):
            raise AssertionError('nothing is fetched to decide')
    raw = fixture('pipe.dump')
    stored, manifest = laid_out(raw)
    summary = {}
    assert restore._frames_to_fetch(Ranged(), manifest, None, 'w', summary) is None  # nothing to reorder
    assert summary == {}
    broken = dict(manifest, layout=dict(manifest['layout'], frames=manifest['layout']['frames'][::-1]))
    assert restore._frames_to_fetch(Ranged(), broken, None, 's3://b/x.dump.zst', summary) is None
    assert len(summary['warnings']) == 1 and 'the layout in the manifest of s3://b/x.dump.zst was not used' \
        in summary['warnings'][0] and 'not usable' in summary['warnings'][0]
    assert restore._frames_to_fetch(object(), broken, None, 'w', {}) is None
    assert restore._frames_to_fetch(Ranged(), broken, object(), 'w', {}) is None
