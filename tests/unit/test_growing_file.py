# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""fanout.GrowingFile + follow: consumers read a file while it is written (the runner's tee).

The writer writes a real file in pieces; consumers are plain functions reading through
their own handles. What matters: every consumer gets exactly the bytes written, EOF only
after ``finish()``, a writer that dies makes every consumer fail, and a slow or dead consumer
never holds the writer back."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import hashlib
import os
import threading
import time

import pytest

from ansible_collections.offsite.backup.plugins.module_utils._engine.fanout import GrowingFile, ProducerFailed, follow


def collect(read_size=4096, delay=0.0):
    def consume(reader):
        data = bytearray()
        while True:
            piece = reader.read(read_size)
            if not piece:
                return bytes(data)
            data += piece
            if delay:
                time.sleep(delay)
    return consume


def pieces(count=200, size=3000):
    return [os.urandom(size) for i in range(count)]


def test_every_consumer_gets_exactly_the_bytes_written(tmp_path):
    path = tmp_path / "artifact.partial"
    written = pieces()
    with open(path, "wb") as out:
        growing = GrowingFile(out)
        running = follow(growing, str(path), [collect(1000), collect(65536), collect(-1)])
        for piece in written:
            growing.write(piece)
        growing.finish()
        outcomes = running.join()
    expected = b"".join(written)
    for result, error, size in outcomes:
        assert error is None
        assert hashlib.sha256(result).hexdigest() == hashlib.sha256(expected).hexdigest()
        assert size == len(expected)


def test_a_consumer_at_the_end_waits_for_finish_not_for_eof(tmp_path):
    """Having read all that was written is not the end: EOF comes only with finish()."""
    path = tmp_path / "artifact.partial"
    reached = threading.Event()

    def consume(reader):
        first = reader.read(100)
        reached.set()
        return first + reader.read(100)  # blocks until more is written or finish()

    with open(path, "wb") as out:
        growing = GrowingFile(out)
        running = follow(growing, str(path), [consume])
        growing.write(b"a" * 100)
        assert reached.wait(5)
        time.sleep(0.2)
        assert running.threads[0].is_alive(), "the consumer took the end of the written bytes for EOF"
        growing.write(b"b" * 50)
        growing.finish()
        [(result, error, size)] = running.join()
    assert error is None and result == b"a" * 100 + b"b" * 50


def test_a_writer_that_dies_fails_every_consumer(tmp_path):
    path = tmp_path / "artifact.partial"
    with open(path, "wb") as out:
        growing = GrowingFile(out)
        running = follow(growing, str(path), [collect(), collect(delay=0.001)])
        for piece in pieces(20):
            growing.write(piece)
        growing.finish(RuntimeError("pg_dump was killed"))
        outcomes = running.join()
    for result, error, size in outcomes:
        assert result is None
        assert isinstance(error, ProducerFailed) and "pg_dump was killed" in str(error)


def test_a_slow_consumer_never_holds_the_writer_back(tmp_path):
    """The file is the buffer: the writer finishes while a slow consumer is far behind."""
    path = tmp_path / "artifact.partial"
    written = pieces(100, 65536)
    with open(path, "wb") as out:
        growing = GrowingFile(out)
        running = follow(growing, str(path), [collect(65536, delay=0.02)])
        started = time.monotonic()
        for piece in written:
            growing.write(piece)
        writing = time.monotonic() - started
        growing.finish()
        [(result, error, size)] = running.join()
    assert writing < 1.0, "the writer waited for the consumer (%.2f s)" % writing
    assert error is None and result == b"".join(written)


def test_a_consumer_that_gives_up_changes_nothing_for_the_others(tmp_path):
    path = tmp_path / "artifact.partial"

    def quits(reader):
        reader.read(10)
        raise ValueError("store refused the upload")

    written = pieces(50)
    with open(path, "wb") as out:
        growing = GrowingFile(out)
        running = follow(growing, str(path), [quits, collect()])
        for piece in written:
            growing.write(piece)
        growing.finish()
        (r1, e1, s1), (r2, e2, s2) = running.join()
    assert isinstance(e1, ValueError) and r1 is None and s1 == 10
    assert e2 is None and r2 == b"".join(written)


def test_readers_survive_the_rename_and_the_removal_of_the_partial(tmp_path):
    """dump renames the partial to its final name (or removes it on failure) while consumers
    still read: they hold their own handles."""
    path = tmp_path / "artifact.partial"
    gate = threading.Event()

    def late(reader):
        gate.wait(5)
        return collect()(reader)

    written = pieces(30)
    with open(path, "wb") as out:
        growing = GrowingFile(out)
        running = follow(growing, str(path), [late])
        for piece in written:
            growing.write(piece)
    os.rename(path, tmp_path / "artifact")
    growing.finish()
    gate.set()
    [(result, error, size)] = running.join()
    assert error is None and result == b"".join(written)


@pytest.mark.parametrize("size", [0, 1])
def test_tiny_and_empty_files(tmp_path, size):
    path = tmp_path / "artifact.partial"
    with open(path, "wb") as out:
        growing = GrowingFile(out)
        running = follow(growing, str(path), [collect()])
        if size:
            growing.write(b"x")
        growing.finish()
        [(result, error, read)] = running.join()
    assert error is None and result == b"x" * size and read == size


def test_the_file_is_read_and_hashed_once_for_every_consumer(tmp_path):
    """One reader of the growing file feeds all (fan_out): each consumer's reader hashes, with
    the one digest of the stream, and a repository's put does not hash it again."""
    from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories.local import LocalRepository
    path = tmp_path / "artifact.partial"
    written = pieces(40)
    readers = []

    def consume(reader):
        readers.append(reader)
        return collect()(reader), reader.hexdigest(), reader.size

    with open(path, "wb") as out:
        growing = GrowingFile(out)
        running = follow(growing, str(path), [consume, consume, consume])
        for piece in written:
            growing.write(piece)
        growing.finish()
        outcomes = running.join()
    expected = b"".join(written)
    assert len(set(id(r.sha256) for r in readers)) == 1  # one digest object: the bytes hashed once
    for (result, digest, size), error, read in outcomes:
        assert error is None and result == expected and size == read == len(expected)
        assert digest == hashlib.sha256(expected).hexdigest()
    repo = LocalRepository({"type": "local", "path": str(tmp_path / "repo")})
    assert repo.sending(readers[0], None) is readers[0]  # a reader that hashes already is not hashed again
