# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""fanout.fan_out: one read of a source, several consumers at once, none stalling the others.

Consumers here are plain in-memory classes (no store behind them): a fast one, a slow one, one
that raises midway, one that returns early; sources that count reads or die midway."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import hashlib
import io
import os
import threading
import time

import pytest

from ansible_collections.offsite.backup.plugins.module_utils._engine import pipeline
from ansible_collections.offsite.backup.plugins.module_utils._engine.fanout import ProducerFailed, fan_out

CHUNK = 1024


class Collector(object):
    """Reads everything in ``read_size`` pieces, optionally sleeping between reads."""

    def __init__(self, read_size=700, delay=0.0):
        self.read_size = read_size
        self.delay = delay
        self.data = bytearray()

    def __call__(self, reader):
        while True:
            piece = reader.read(self.read_size)
            if not piece:
                return bytes(self.data)
            self.data += piece
            if self.delay:
                time.sleep(self.delay)


class Failing(object):
    """Reads ``after`` bytes, then raises (a store that went away midway)."""

    def __init__(self, after):
        self.after = after
        self.seen = 0

    def __call__(self, reader):
        while self.seen < self.after:
            piece = reader.read(CHUNK)
            if not piece:
                break
            self.seen += len(piece)
        raise RuntimeError('store gone after %d bytes' % self.seen)


class Stuck(object):
    """Reads one piece, then stops reading without returning until released: its queue fills."""

    def __init__(self):
        self.release = threading.Event()

    def __call__(self, reader):
        reader.read(CHUNK)
        self.release.wait(30)
        return 'released'


class PartialReader(object):
    """Reads exactly ``size`` bytes and returns (like sftp/local put, which stop at size)."""

    def __init__(self, size):
        self.size = size

    def __call__(self, reader):
        data = pipeline.read_full(reader, self.size)
        return len(data)


class CountingSource(object):
    def __init__(self, data, fail_after=None):
        self.stream = io.BytesIO(data)
        self.reads = 0
        self.fail_after = fail_after

    def read(self, size=-1):
        if self.fail_after is not None and self.stream.tell() >= self.fail_after:
            raise IOError(5, 'Input/output error')
        self.reads += 1
        return self.stream.read(size)


def payload(size=200 * CHUNK + 123):
    return os.urandom(size)


def run(source, consumers, depth=4):
    return fan_out(source, consumers, chunk=CHUNK, depth=depth)


def test_every_consumer_gets_every_byte_and_the_source_is_read_once():
    data = payload()
    source = CountingSource(data)
    consumers = [Collector(), Collector(read_size=5000), Collector(read_size=CHUNK)]
    size, sha256, outcomes = run(source, consumers)
    assert (size, sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert [o[0] for o in outcomes] == [data] * 3
    assert [o[1] for o in outcomes] == [None] * 3
    assert [o[2] for o in outcomes] == [len(data)] * 3
    assert source.reads == len(data) // CHUNK + 2  # every piece once, plus the final empty read


def test_a_slow_consumer_only_slows_the_stream_never_loses_bytes():
    data = payload(60 * CHUNK)
    slow, fast = Collector(delay=0.002), Collector()
    size, sha256, outcomes = run(CountingSource(data), [slow, fast], depth=2)
    assert outcomes[0][0] == data and outcomes[1][0] == data
    assert sha256 == hashlib.sha256(data).hexdigest()


def test_a_consumer_raising_midway_does_not_stop_the_others():
    data = payload()
    failing, good = Failing(after=10 * CHUNK), Collector()
    size, sha256, outcomes = run(CountingSource(data), [failing, good])
    assert isinstance(outcomes[0][1], RuntimeError) and outcomes[0][0] is None
    assert outcomes[0][2] == 10 * CHUNK
    assert outcomes[1] == (data, None, len(data))
    assert size == len(data) and sha256 == hashlib.sha256(data).hexdigest()


def test_a_dead_consumer_with_a_full_queue_never_blocks_the_producer():
    """The failing consumer stops reading with its queue full; the producer must drop it."""
    data = payload(100 * CHUNK)
    done = []

    def go():
        done.append(run(CountingSource(data), [Failing(after=1), Collector()], depth=1))

    thread = threading.Thread(target=go)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), 'the producer blocked on a dead consumer'
    assert done[0][2][1][0] == data


def test_a_consumer_that_returns_early_is_dropped_and_the_hash_still_covers_everything():
    data = payload()
    size, sha256, outcomes = run(CountingSource(data), [PartialReader(3 * CHUNK), Collector()], depth=1)
    assert outcomes[0][:2] == (3 * CHUNK, None)
    assert outcomes[1][0] == data
    assert size == len(data) and sha256 == hashlib.sha256(data).hexdigest()


def test_the_source_is_read_to_the_end_when_the_only_consumer_succeeded_early():
    """sftp/local put read exactly ``size`` bytes: a longer local file must still be hashed
    whole, so the caller sees the mismatch with the manifest."""
    data = payload(20 * CHUNK)
    size, sha256, outcomes = run(CountingSource(data), [PartialReader(5 * CHUNK)], depth=1)
    assert outcomes[0][0] == 5 * CHUNK
    assert size == len(data) and sha256 == hashlib.sha256(data).hexdigest()


def test_reading_stops_once_every_consumer_failed():
    data = payload(500 * CHUNK)
    source = CountingSource(data)
    size, sha256, outcomes = run(source, [Failing(after=2 * CHUNK), Failing(after=3 * CHUNK)], depth=2)
    assert all(isinstance(o[1], RuntimeError) for o in outcomes)
    assert source.reads < 20 and size < len(data)


def test_a_producer_error_reaches_every_consumer_and_is_raised():
    data = payload(100 * CHUNK)
    consumers = [Collector(), Collector(delay=0.001)]
    with pytest.raises(IOError):
        run(CountingSource(data, fail_after=30 * CHUNK), consumers, depth=2)
    # nobody is left waiting: fan_out joined every consumer before raising (they saw ProducerFailed)
    assert all(len(c.data) <= 30 * CHUNK for c in consumers)


def test_a_consumer_blocked_on_an_empty_queue_is_woken_by_a_producer_error():
    seen = []

    class Waiting(object):
        def __call__(self, reader):
            try:
                while reader.read(CHUNK):
                    pass
            except ProducerFailed as exc:
                seen.append(exc)
                raise

    class SlowThenDead(object):
        def __init__(self):
            self.calls = 0

        def read(self, size=-1):
            self.calls += 1
            if self.calls == 1:
                return b'x' * CHUNK
            time.sleep(0.2)  # the consumer now waits on an empty queue
            raise IOError(5, 'Input/output error')

    with pytest.raises(IOError):
        run(SlowThenDead(), [Waiting()])
    assert len(seen) == 1


def test_memory_is_bounded_by_depth_while_a_consumer_is_stuck():
    stuck = Stuck()
    data = payload(200 * CHUNK)
    source = CountingSource(data)
    result = []
    thread = threading.Thread(target=lambda: result.append(run(source, [stuck, Collector()], depth=3)))
    thread.start()
    time.sleep(0.3)
    # one piece read by the consumer, 3 queued, at most one more read and waiting to be queued
    assert source.reads <= 1 + 3 + 1
    stuck.release.set()
    thread.join(10)
    assert not thread.is_alive()
    assert result[0][2][0][0] == 'released' and result[0][2][1][0] == data


def test_the_channel_reader_splits_and_joins_pieces():
    data = payload(10 * CHUNK + 7)
    outcomes = run(CountingSource(data), [Collector(read_size=1), Collector(read_size=3 * CHUNK + 1)])[2]
    assert outcomes[0][0] == data and outcomes[1][0] == data


def test_read_without_a_size_reads_to_the_end_like_a_file():
    data = payload(7 * CHUNK + 3)
    outcomes = run(CountingSource(data), [lambda reader: (reader.read(), reader.read())])[2]
    assert outcomes[0][0] == (data, b'')
