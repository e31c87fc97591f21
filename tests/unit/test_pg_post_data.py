# Copyright (c) offsite.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Indexes and constraints built while other tables still load (pgcustom.EarlyPostData).

The TOC the recorder reads as the bytes pass must be the one ``pg_restore -l -v`` lists
(kinds and dependencies, on real pg_dump 15 archives). On generated TOCs, whatever order the
tables finish loading in and the batches finish building in, the schedule keeps pg_restore's
rules: an entry runs only once everything it depends on is restored (a table's dependency meaning
its data), two batches running at once never share a table, only indexes and constraints go
early, each once; and everything that could go early did, once every table was loaded."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.offsite.backup.plugins.module_utils._engine import pgcustom
from tests.harness import pg

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures', 'pgcustom')
T = pgcustom.TocEntry
PRE, DATA, POST = pgcustom.SECTION_PRE_DATA, pgcustom.SECTION_DATA, pgcustom.SECTION_POST_DATA


def listed(path):
    """{dumpId: (desc, deps)} as ``pg_restore -l -v`` lists them."""
    out = subprocess.run([pg.client('pg_restore'), '-l', '-v', path], check=True, capture_output=True,
                         text=True).stdout
    toc, last = {}, None
    for line in out.splitlines():
        entry = re.match(r'^(\d+); \d+ \d+ (.*)$', line)
        if entry:
            last = int(entry.group(1))
            toc[last] = (entry.group(2), ())
        elif line.startswith(';\tdepends on:'):
            toc[last] = (toc[last][0], tuple(int(d) for d in line.split(':')[1].split()))
    return toc


@pytest.mark.parametrize('name', ['pipe.dump', 'seek.dump', 'pipe-z6.dump'])
def test_the_toc_read_as_the_bytes_pass_is_the_one_pg_restore_lists(name):
    path = os.path.join(FIXTURES, name)
    recorder = pgcustom.OffsetRecorder('the test archive')
    with open(path, 'rb') as handle:
        recorder.feed(handle.read())
    ours = dict((dump_id, (e.desc, e.deps)) for dump_id, e in recorder.toc.items())
    theirs = listed(path)
    # pg_restore -l: "dumpId; tableoid oid desc namespace tag owner" (desc may hold spaces)
    assert sorted(ours) == sorted(theirs)
    for dump_id, (line, deps) in theirs.items():
        assert line.startswith(ours[dump_id][0] + ' ') and deps == ours[dump_id][1], (line, ours[dump_id])
    kinds = set(e.desc for e in recorder.toc.values())
    assert {'TABLE DATA', 'CONSTRAINT', 'INDEX', 'MATERIALIZED VIEW DATA'} <= kinds


def test_a_dependency_that_is_no_dumpid_is_named():
    with open(os.path.join(FIXTURES, 'pipe.dump'), 'rb') as handle:
        data = bytearray(handle.read())
    recorder = pgcustom.OffsetRecorder('the test archive')
    recorder.feed(bytes(data))
    dump_id, entry = next((i, e) for i, e in recorder.toc.items() if e.desc == 'TABLE DATA')
    text = str(entry.deps[0]).encode()
    # a string: a sign byte, its length (intSize bytes), its text; the first after the entry's desc
    at = data.index(b'\x00' + len(text).to_bytes(recorder._hdr - 1, 'little') + text, data.index(b'TABLE DATA'))
    data[at + recorder._hdr] = ord('x')
    damaged = pgcustom.OffsetRecorder('the test archive')
    damaged.feed(bytes(data))
    assert 'dumpId %d has the dependency' % dump_id in damaged.error and 'not a dumpId' in damaged.error
    with pytest.raises(pgcustom.IntegrityError, match='not a dumpId'):
        damaged.result()


def early(toc, loaded, done=()):
    plan = pgcustom.EarlyPostData(toc)
    plan.started.update(done)
    plan.done.update(done)
    return plan.take(set(loaded), 8)


def test_an_index_waits_for_its_tables_data_and_a_foreign_key_for_both_keys():
    toc = {
        1: T('TABLE', PRE, ()), 2: T('TABLE', PRE, ()),
        3: T('TABLE DATA', DATA, (1,)), 4: T('TABLE DATA', DATA, (2,)),
        5: T('CONSTRAINT', POST, (1,)), 6: T('CONSTRAINT', POST, (2,)),
        7: T('INDEX', POST, (2,)), 8: T('FK CONSTRAINT', POST, (2, 1, 5)),
        9: T('TRIGGER', POST, (1,)), 10: T('SEQUENCE SET', DATA, ()),
    }
    assert early(toc, []) == []
    assert early(toc, [3]) == [[5]]  # table 1's key; its trigger waits for the final restore
    assert early(toc, [3, 4]) == [[5], [6, 7]]  # one batch per table
    assert early(toc, [3, 4], done=[5, 6, 7]) == [[8]]
    assert early(toc, [4], done=[5, 6, 7]) == []  # the key it references is built, not its data


def test_batches_never_share_a_table_with_one_running():
    toc = {1: T('TABLE', PRE, ()), 2: T('TABLE', PRE, ()), 3: T('TABLE DATA', DATA, (1,)),
           4: T('TABLE DATA', DATA, (2,)), 5: T('CONSTRAINT', POST, (1,)), 6: T('CONSTRAINT', POST, (2,)),
           7: T('FK CONSTRAINT', POST, (1, 2, 6)), 8: T('FK CONSTRAINT', POST, (2, 1, 5))}
    plan = pgcustom.EarlyPostData(toc)
    assert plan.take({3, 4}, 1) == [[5]]  # one loader free
    assert plan.take({3, 4}, 1) == [[6]]
    plan.finished([5])
    plan.finished([6])
    first = plan.take({3, 4}, 2)
    # pg_dump makes a foreign key depend on both tables: each locks both, so they go in one
    # batch, never in two at once (in opposite orders, two could deadlock)
    assert first == [[7, 8]]


@st.composite
def tocs(draw):
    """A TOC as pg_dump orders one: tables (some without data), their data, then post-data
    entries of any kind depending on tables and on earlier post-data entries."""
    toc, tables, post = {}, [], []
    next_id = iter(range(1, 10 ** 6))
    for dummy in range(draw(st.integers(1, 6))):
        table = next(next_id)
        toc[table] = T('TABLE', PRE, ())
        tables.append(table)
    for table in tables:
        if draw(st.booleans()) or len(tables) == 1:
            toc[next(next_id)] = T('TABLE DATA', DATA, (table,))
    toc[next(next_id)] = T('SEQUENCE SET', DATA, ())
    for dummy in range(draw(st.integers(0, 12))):
        desc = draw(st.sampled_from(['INDEX', 'CONSTRAINT', 'FK CONSTRAINT', 'TRIGGER', 'INDEX ATTACH']))
        deps = draw(st.lists(st.sampled_from(tables), min_size=1, max_size=2, unique=True))
        if post and draw(st.booleans()):
            deps.append(draw(st.sampled_from(post)))
        if draw(st.integers(0, 9)) == 0:
            deps.append(10 ** 7)  # a dumpId with no entry: met, as pg_restore counts it
        dump_id = next(next_id)
        toc[dump_id] = T(desc, POST, tuple(deps))
        post.append(dump_id)
    return toc


@settings(max_examples=300, deadline=None)
@given(toc=tocs(), data=st.data())
def test_any_order_of_loading_and_building_keeps_pg_restores_rules(toc, data):
    data_of = dict((e.deps[0], i) for i, e in toc.items() if e.desc == 'TABLE DATA')
    plan = pgcustom.EarlyPostData(toc)
    to_load = [i for i, e in toc.items() if e.desc == 'TABLE DATA']
    loaded, running, done, taken = set(), [], set(), []

    def restored(dep):
        entry = toc.get(dep)
        if entry is None or entry.section == PRE and dep not in data_of:
            return True
        if entry.section == PRE:
            return data_of[dep] in loaded
        return dep in done

    def tables_of(dump_id):
        return set(d for d in toc[dump_id].deps if d in toc and toc[d].desc == 'TABLE')

    while to_load or running:
        step = data.draw(st.sampled_from(['load', 'finish', 'take']))
        if step == 'load' and to_load:
            loaded.add(to_load.pop(data.draw(st.integers(0, len(to_load) - 1))))
        elif step == 'finish' and running:
            batch = running.pop(data.draw(st.integers(0, len(running) - 1)))
            plan.finished(batch)
            done.update(batch)
        for batch in plan.take(set(loaded), data.draw(st.integers(0, 3))):
            for dump_id in batch:
                assert toc[dump_id].desc in pgcustom.EarlyPostData.EARLY
                assert all(restored(dep) for dep in toc[dump_id].deps), (dump_id, toc[dump_id])
            locks = set().union(*(tables_of(i) for i in batch))
            for other in running:
                assert not locks & set().union(*(tables_of(i) for i in other)), (batch, other)
            running.append(batch)
            taken.extend(batch)
    while True:  # everything loaded: build until nothing more goes early
        batches = plan.take(set(loaded), 3)
        if not batches:
            break
        for batch in batches:
            plan.finished(batch)
            done.update(batch)
            taken.extend(batch)
    assert len(taken) == len(set(taken))

    def could(dump_id):  # restorable early once all data is in: every dependency is
        entry = toc[dump_id]
        return entry.desc in pgcustom.EarlyPostData.EARLY and all(
            dep not in toc or toc[dep].section != POST or could(dep) for dep in entry.deps)
    assert set(taken) == set(i for i, e in toc.items() if e.section == POST and could(i))
