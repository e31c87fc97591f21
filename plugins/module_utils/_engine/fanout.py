# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One stream, several consumers at once, none stalling the others: ``fan_out`` (one read of a
file fed to every repository) and ``follow`` (a file read once, while it is written, and fed
to every repository the same way). Either way the bytes are read and hashed once, whatever
the number of consumers.

The concurrency of the data path lives here; the stages a stream flows through (compress,
hash, verify) are pipeline.py's.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import collections
import hashlib
import threading

from .pipeline import CHUNK, HashingReader

# pieces queued per consumer of a fan-out: memory is FANOUT_DEPTH x CHUNK x consumers at most
FANOUT_DEPTH = 8
# following a growing file, the file is the buffer: a short queue keeps memory down (two S3
# repositories measured 156-164 MiB peak with 8, against 150 MB targeted)
FOLLOW_DEPTH = 2


# -- fan-out: one read, several consumers ---------------------------------------------------
class ProducerFailed(Exception):
    """What a fan-out consumer reads when the producer died: the consumer's own operation
    fails (and cleans up); ``fan_out`` then raises the producer's error, not this one."""


class _Channel(object):
    """A bounded queue of pieces from one producer to one consumer. Either side can give up:
    ``close`` (consumer gone) makes every further ``send`` return False at once, even one
    waiting on a full queue; ``finish`` (producer done or dead) wakes a waiting ``receive``."""

    def __init__(self, depth):
        self.cond = threading.Condition()
        self.items = collections.deque()
        self.depth = depth
        self.closed = False
        self.succeeded = False
        self.eof = False
        self.error = None

    def send(self, data):
        with self.cond:
            while len(self.items) >= self.depth and not self.closed:
                self.cond.wait()
            if self.closed:
                return False
            self.items.append(data)
            self.cond.notify_all()
            return True

    def finish(self, error=None):
        with self.cond:
            self.eof = True
            self.error = error
            self.cond.notify_all()

    def receive(self):
        with self.cond:
            while not self.items and not self.eof:
                self.cond.wait()
            if self.error is not None:
                self.items.clear()
                raise ProducerFailed('the source stream failed: %s' % (self.error,))
            if self.items:
                data = self.items.popleft()
                self.cond.notify_all()
                return data
            return b''

    def close(self, succeeded):
        with self.cond:
            self.closed = True
            self.succeeded = succeeded
            self.items.clear()  # nobody reads them any more: free the memory now
            self.cond.notify_all()


class ChannelReader(object):
    """The file-like end of a channel a consumer reads from."""

    def __init__(self, channel):
        self.channel = channel
        self.pending = b''
        self.offset = 0
        self.size = 0

    def read(self, size=-1):
        if size is None or size < 0:  # everything to the end, as a file would
            parts = []
            while True:
                data = self.read(CHUNK)
                if not data:
                    return b''.join(parts)
                parts.append(data)
        if self.offset >= len(self.pending):
            self.pending, self.offset = self.channel.receive(), 0
        start = self.offset
        self.offset = min(len(self.pending), start + size)
        if start == 0 and self.offset == len(self.pending):
            data = self.pending  # the whole piece: no copy
        else:
            data = self.pending[start:self.offset]
        self.size += len(data)
        return data

    def readable(self):
        return True


def fan_out(source, consumers, chunk=CHUNK, depth=FANOUT_DEPTH):
    """Read ``source`` once, in ``chunk``-sized pieces, and feed every consumer concurrently.

    ``consumers`` are callables taking one binary reader; each runs in its own thread and
    reads from its own bounded queue (at most ``depth`` pieces), while the calling thread
    reads and hashes. A consumer that returns or raises stops being fed; it never stalls the
    others. The source is read to its end as long as one consumer is still running or has
    succeeded (its sha256 proves what was sent), and abandoned once every consumer failed.
    Each consumer's reader is a HashingReader whose sha256, once it has read to the end, is
    the one hash of the stream taken here: the bytes are hashed once, not once per consumer.

    Returns ``(size, sha256, outcomes)``: the byte count and sha256 of what was read, and
    per consumer ``(result, None, bytes_read)`` or ``(None, exception, bytes_read)``. An error
    reading ``source`` is raised once every consumer has stopped (and cleaned up after itself).
    """
    feed = _Feed(consumers, depth)
    return feed.run(source, chunk)


class _Feed(object):
    """One read of a stream, hashed once, and a bounded channel per consumer (``fan_out``)."""

    def __init__(self, consumers, depth):
        self.digest = hashlib.sha256()
        self.channels = [_Channel(depth) for consumer in consumers]
        self.running = _Consumers(consumers, [SharedHashReader(ChannelReader(c), self.digest) for c in self.channels],
                                  on_stop=lambda index, succeeded: self.channels[index].close(succeeded))

    def run(self, source, chunk=CHUNK):
        channels, digest, size, failure = self.channels, self.digest, 0, None
        try:
            while True:
                open_channels = [c for c in channels if not c.closed]
                if not open_channels and not any(c.succeeded for c in channels):
                    break  # every consumer failed: nobody needs the rest
                data = source.read(chunk)
                if not data:
                    break
                digest.update(data)
                size += len(data)
                for channel in open_channels:
                    channel.send(data)  # False: that consumer is gone; the others go on
        except BaseException as exc:
            failure = exc
            raise
        finally:
            for channel in channels:
                channel.finish(failure)
            outcomes = self.running.join()
        return size, digest.hexdigest(), outcomes


class SharedHashReader(HashingReader):
    """One consumer's reader of a fan-out: its bytes were hashed once for every consumer (the
    digest is final when the stream ended, which is when this reader returns b'')."""

    def __init__(self, reader, digest):
        self.source = reader
        self.sha256 = digest

    @property
    def size(self):
        return self.source.size

    def read(self, size=-1):
        return self.source.read(size)


class _Consumers(object):
    """Each consumer called with its own reader in its own thread; ``join`` waits for all and
    returns per consumer ``(result, None, bytes_read)`` or ``(None, exception, bytes_read)``."""

    def __init__(self, consumers, readers, on_stop):
        self.readers = readers
        self.outcomes = [None] * len(consumers)
        self.threads = [threading.Thread(target=self._work, args=(i, consumer, on_stop), name='consumer-%d' % i)
                        for i, consumer in enumerate(consumers)]
        for thread in self.threads:
            thread.daemon = True
            thread.start()

    def _work(self, index, consumer, on_stop):
        succeeded = False
        try:
            self.outcomes[index] = (consumer(self.readers[index]), None)
            succeeded = True
        except BaseException as exc:  # reported to the caller, whatever it is
            self.outcomes[index] = (None, exc)
        finally:
            on_stop(index, succeeded)

    def join(self):
        for thread in self.threads:
            thread.join()
        return [outcome + (reader.size,) for outcome, reader in zip(self.outcomes, self.readers)]


# -- tee: a file read by consumers while it is being written ----------------------------
class GrowingFile(object):
    """The writing end of a file that consumers read while it grows (``follow``).

    The file itself is the buffer between the writer and its readers: a slow reader never
    slows the writer down, nothing piles up in memory, and every reader gets the bytes as
    stored. A reader waits at the end of what was written until ``finish``: EOF only once the
    writer declared the file complete, ProducerFailed if the writer died."""

    def __init__(self, target):
        self.target = target
        self.cond = threading.Condition()
        self.written = 0
        self.done = False
        self.error = None

    def write(self, data):
        self.target.write(data)
        self.target.flush()  # readers have their own handles: they see only what reached the OS
        with self.cond:
            self.written += len(data)
            self.cond.notify_all()
        return len(data)

    def flush(self):
        self.target.flush()

    def finish(self, error=None):
        with self.cond:
            self.done = True
            self.error = error
            self.cond.notify_all()


class FollowingReader(object):
    """One consumer's reader of a GrowingFile, through its own handle on the file."""

    def __init__(self, growing, path):
        self.growing = growing
        self.handle = open(path, 'rb')
        self.size = 0

    def read(self, size=-1):
        if size is None or size < 0:
            size = CHUNK
        growing = self.growing
        with growing.cond:
            while self.size >= growing.written and not growing.done:
                growing.cond.wait()
            if growing.error is not None:
                raise ProducerFailed('the source stream failed: %s' % (growing.error,))
            available = growing.written - self.size
        if not available:
            return b''
        data = self.handle.read(min(size, available))
        self.size += len(data)
        return data

    def readable(self):
        return True

    def close(self):
        self.handle.close()


def follow(growing, path, consumers):
    """Start feeding every consumer from one reader of ``path`` while ``growing`` writes it:
    the file is read once and hashed once for all of them (``fan_out``, in its own thread).
    The returned object's ``join()`` waits (call ``growing.finish`` first) and gives the
    outcomes as fan_out does."""
    return _Following(FollowingReader(growing, path), _Feed(consumers, FOLLOW_DEPTH))


class _Following(object):
    def __init__(self, reader, feed):
        self.reader, self.feed = reader, feed
        self.threads = feed.running.threads
        self.error = []
        self.reading = threading.Thread(target=self._read, name='follow')
        self.reading.daemon = True
        self.reading.start()

    def _read(self):
        try:
            self.feed.run(self.reader)
        except BaseException as exc:  # the consumers were told (ProducerFailed) and ended
            self.error.append(exc)
        finally:
            self.reader.close()

    def join(self):
        self.reading.join()
        return self.feed.running.join()
