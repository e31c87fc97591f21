# Copyright (c) offsite.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The schedule of a restore that follows its work file (pgcustom.Following): what of a
growing archive can be loaded, by whom, and what is left for the final ``pg_restore -j``.

Checked on real pg_dump 15 archives (fixtures/pgcustom) fed in random pieces, with the file
on disk lagging behind what the recorder saw, as it does behind a buffered writer."""

from __future__ import annotations

import os

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
    order = sorted(recorder.blocks, key=recorder.blocks.get)
    plan = pgcustom.Following(recorder)
    assert plan.take(len(data), 0) == []
    batches = plan.take(len(data), 2)
    assert batches == [order[0::2], order[1::2]]
    assert plan.take(len(data), 2) == []
    assert plan.rest() == [d for d, flag, at in recorder.entries if d not in order]


def test_a_growing_block_is_taken_and_followed_until_it_ends():
    data = fixture('pipe.dump')
    whole = fed(data, len(data))
    last = max(whole.blocks, key=whole.blocks.get)
    middle = (whole.blocks[last] + len(data)) // 2
    recorder = fed(data, middle)
    plan = pgcustom.Following(recorder)
    batches = plan.take(middle, 1)
    assert batches == [sorted(whole.blocks, key=whole.blocks.get)]  # the growing one last
    assert plan.span(last, middle) == (whole.blocks[last], None)
    recorder.feed(data[middle:])
    assert plan.span(last, len(data) - 1) == (whole.blocks[last], None)  # not all on disk yet
    assert plan.span(last, len(data)) == (whole.blocks[last], len(data))


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(['pipe.dump', 'pipe-z6.dump']), data=st.data())
def test_every_entry_is_loaded_exactly_once_by_a_loader_or_the_final_restore(name, data):
    archive = fixture(name)
    recorder = pgcustom.OffsetRecorder('the test archive')
    plan = pgcustom.Following(recorder)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(archive)), max_size=12))) + [len(archive)]
    handed, pos = [], 0
    for cut in cuts:
        recorder.feed(archive[pos:cut])
        pos = cut
        lag = data.draw(st.integers(0, 9000))  # the writer's buffer: the disk is behind
        written = max(0, cut - lag)
        for batch in plan.take(written, data.draw(st.integers(0, 3))):
            assert batch == sorted(batch, key=recorder.blocks.get)
            for dump_id in batch[:-1]:  # only the last block of a batch may still be growing
                assert recorder.ends[dump_id] <= written
            assert all(recorder.blocks[d] < written for d in batch)
            handed += batch
    stopped_early = data.draw(st.booleans())
    if not stopped_early:
        handed += [d for batch in plan.take(len(archive), 2) for d in batch]
    assert len(handed) == len(set(handed))
    entries = [d for d, flag, at in recorder.entries]
    assert sorted(handed + plan.rest()) == sorted(entries)
    if not stopped_early:
        assert set(handed) == set(recorder.blocks)


def test_a_malformed_archive_hands_out_nothing_more():
    data = fixture('pipe.dump')
    whole = fed(data, len(data))
    second = sorted(whole.blocks.values())[1]
    recorder = fed(data[:second] + b'\x07' + data[second + 1:], len(data))
    plan = pgcustom.Following(recorder)
    assert recorder.error
    assert not plan.toc_ready(len(data)) and plan.take(len(data), 2) == []
