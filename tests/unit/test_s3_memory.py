# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""S3 upload memory: parts read into one buffer each, and the budget of parts being sent that
several uploads of one process share (one dump to several S3 repositories)."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import io
import os
import threading
import time
import tracemalloc

from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories import s3
from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories.base import _Limited

read_part = s3.read_part
_SendingBudget = s3._SendingBudget

MIB = 1024 * 1024


class Trickle(object):
    """A reader that returns short pieces, as a pipe or a file being written does."""

    def __init__(self, data, piece):
        self.stream, self.piece = io.BytesIO(data), piece

    def read(self, size=-1):
        return self.stream.read(min(size, self.piece))


def test_read_part_fills_exactly_and_stops_at_the_end():
    data = os.urandom(3 * MIB + 123)
    reader = Trickle(data, 70000)
    first, second, last, after = (read_part(reader, 2 * MIB), read_part(reader, MIB),
                                  read_part(reader, 2 * MIB), read_part(reader, 2 * MIB))
    assert bytes(first) + bytes(second) + bytes(last) == data
    assert (len(first), len(second), len(last), len(after)) == (2 * MIB, MIB, 123, 0)


def test_a_small_object_of_known_size_gets_a_buffer_of_its_size():
    """A put of known size reads through ``_Limited``: a manifest (or a WAL segment) must not
    cost a whole 8 MiB part (wal-push's peak memory, bench/wal_push_memory.py)."""
    data = os.urandom(5000)
    reader = _Limited(Trickle(data, 700), len(data))
    tracemalloc.start()
    try:
        part = read_part(reader, 8 * MIB)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert bytes(part) == data
    assert peak < MIB, "read_part allocated %d bytes for a 5000-byte object" % peak
    # the last part of a larger object: only what is left
    reader = _Limited(io.BytesIO(os.urandom(3 * MIB)), 2 * MIB + 10)
    assert (len(read_part(reader, 2 * MIB)), len(read_part(reader, 2 * MIB)), len(read_part(reader, 2 * MIB))) == (
        2 * MIB, 10, 0)


def test_one_upload_never_waits_for_the_budget():
    budget = _SendingBudget()
    need = budget.register(3 * 8 * MIB)
    for i in range(3):
        budget.take(8 * MIB)  # would block forever if the budget were smaller than one upload's need
    assert budget.used == 24 * MIB
    for i in range(3):
        budget.give(8 * MIB)
    budget.unregister(need)
    assert budget.used == 0


def test_two_uploads_share_the_budget_of_one():
    budget = _SendingBudget()
    needs = [budget.register(2 * MIB), budget.register(2 * MIB)]
    budget.take(MIB)
    budget.take(MIB)  # both MiB of the budget are in use now
    waited = threading.Event()

    def third():
        budget.take(MIB)
        waited.set()

    thread = threading.Thread(target=third, daemon=True)
    thread.start()
    time.sleep(0.2)
    assert not waited.is_set(), "a third part went out beyond the shared budget"
    budget.give(MIB)  # one part was sent
    assert waited.wait(5)
    thread.join(5)
    assert budget.used == 2 * MIB
    for need in needs:
        budget.unregister(need)


def test_a_part_larger_than_the_budget_still_goes_alone():
    budget = _SendingBudget()
    need = budget.register(0)  # concurrency 1
    budget.take(64 * MIB)
    budget.give(64 * MIB)
    budget.take(64 * MIB)
    assert budget.used == 64 * MIB
    budget.give(64 * MIB)
    budget.unregister(need)


def test_s3_repositories_of_a_process_parse_the_service_model_once():
    """Each S3 repository has its own session and credentials, but one data loader: the S3
    model is parsed once per process, not once per repository (~13 MiB and ~0.1 CPU s each)."""
    def repository(key):
        return s3.S3Repository({'bucket': 'b', 'endpoint_url': 'http://127.0.0.1:9', 'region': 'us-east-1',
                                'access_key': key, 'secret_key': 'secret-' + key})
    first, second = repository('one'), repository('two')
    clients = first.client, second.client
    loaders = [client._loader for client in clients]
    assert loaders[0] is loaders[1]
    assert [c._request_signer._credentials.access_key for c in clients] == ['one', 'two']
    paths = loaders[0].search_paths
    assert len(paths) == len(set(paths))  # boto3 adds its data directory once, not per session


def test_a_part_buffer_is_used_again_and_never_shows_the_last_parts_bytes():
    parts = s3.PARTS
    parts.clear()
    first = read_part(io.BytesIO(b"a" * MIB), MIB)
    parts.give(first)
    # the next part of that size gets the same buffer; a short one holds only its own bytes
    again = read_part(io.BytesIO(b"b" * MIB), MIB)
    assert again is first and bytes(again) == b"b" * MIB
    parts.give(again)
    short = read_part(io.BytesIO(b"c" * 10), MIB)
    assert bytes(short) == b"c" * 10
    parts.give(short)
    assert parts.free


def test_part_buffers_go_when_no_upload_runs():
    budget = _SendingBudget()
    parts = s3.PARTS
    need = budget.register(2 * MIB)
    parts.give(bytearray(MIB))
    assert parts.free
    budget.unregister(need)
    assert not parts.free
