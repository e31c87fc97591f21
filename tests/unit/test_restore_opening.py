# Copyright (c) offsite.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``usecases.restore._Opening``: the artifact's download is opened in a thread while the target
prepares, and handed to the download once. Tested with a repository whose ``get`` starts a real
process, as restic's does (``restic dump``): that process dies when the thread that started it
ends (``lifeline``'s PR_SET_PDEATHSIG), so the thread must live until the reader is closed."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import contextlib
import os
import threading
import time

import pytest

from ansible_collections.offsite.backup.plugins.module_utils._engine import commands
from ansible_collections.offsite.backup.plugins.module_utils._engine.usecases import restore


class CatRepository(object):
    """``get`` streams a file through ``cat``, started by the thread that enters it."""

    def __init__(self, path, fail=None):
        self.path, self.fail = path, fail
        self.closed = []

    def get(self, key):
        if self.fail:  # before any context, as restic's get asks for its snapshots
            raise self.fail
        return self._cat(key)

    @contextlib.contextmanager
    def _cat(self, key):
        with commands.streaming(['cat', str(self.path)], commands.CommandLog()) as proc:
            try:
                yield proc.stdout
            finally:
                self.closed.append(key)


@pytest.fixture
def artifact(tmp_path):
    path = tmp_path / 'artifact.dump'
    path.write_bytes(os.urandom(8 * 2 ** 20))  # far more than a pipe holds: cat is still writing
    return path


def test_the_download_taken_later_reads_every_byte_the_opening_thread_started(artifact):
    repo = CatRepository(artifact)
    opening = restore._Opening(repo, 'the-key')
    time.sleep(0.5)  # the target prepares; had the opening thread ended, cat would be dead now
    try:
        with opening.take() as reader:
            assert reader.read() == artifact.read_bytes()
            assert opening.thread.is_alive()
    finally:
        opening.close()
    assert repo.closed == ['the-key'] and not opening.thread.is_alive()
    with pytest.raises(RuntimeError):
        opening.take()


def test_an_opening_that_failed_raises_where_the_download_is_taken(artifact):
    """Where the restore takes the download (inside the block that removes its work directory),
    not where it began opening it."""
    opening = restore._Opening(CatRepository(artifact, fail=OSError('no route to the store')), 'the-key')
    try:
        with pytest.raises(OSError, match='no route to the store'):
            opening.take()
    finally:
        opening.close()
    assert not opening.thread.is_alive()


def test_a_restore_that_fails_before_its_download_closes_what_was_opened(artifact):
    repo = CatRepository(artifact)
    opening = restore._Opening(repo, 'the-key')
    opening.opened.wait()
    opening.close()  # the scratch database could not be created, say
    assert repo.closed == ['the-key'] and not opening.thread.is_alive()
    assert [t for t in threading.enumerate() if t.name == 'offsite-restore-open'] == []
