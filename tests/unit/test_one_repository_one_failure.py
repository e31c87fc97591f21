# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One repository, one failure (issue 12, item 4): whatever one repository raises in its put,
its manifest or its first look (an OSError of any errno, a library's bug), the others complete
with their manifests, ``min_success`` decides, and the result names the failure and its cause.

The failing repository is a local one whose calls into the operating system or into its own
library fail (a subclass raising where the store would); the others are real local directories.
Both fan-outs are covered: upload (operations._send) and the scheduled job's streamed pass
(operations.backup, _Tee)."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import errno
import os

import pytest

from ansible_collections.offsite.backup.plugins.module_utils._engine import manifest as mf
from ansible_collections.offsite.backup.plugins.module_utils._engine import operations
from ansible_collections.offsite.backup.plugins.module_utils._engine import repositories
from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import BackupError
from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories.local import LocalRepository

FAULTS = {
    'erofs': (OSError(errno.EROFS, 'Read-only file system'), 'io', 'Read-only file system'),
    'eio': (OSError(errno.EIO, 'Input/output error'), 'io', 'Input/output error'),
    'eacces': (PermissionError(errno.EACCES, 'Permission denied'), 'config', 'Permission denied'),
    'enospc': (OSError(errno.ENOSPC, 'No space left on device'), 'disk_full', 'No space left'),
    'bug': (TypeError("unsupported operand type(s) for +: 'int' and 'NoneType'"), 'internal', 'TypeError'),
}


class Broken(LocalRepository):
    """A local repository whose ``where`` call raises ``fault`` (set by the test)."""
    type = 'broken'
    where, fault = '', RuntimeError('set by the test')

    def put(self, key, reader, size, sha256):
        manifest = key.endswith(mf.MANIFEST_SUFFIX)
        if self.where == ('manifest' if manifest else 'put'):
            reader.read(1000)  # midway: some bytes were taken
            raise self.fault
        return super(Broken, self).put(key, reader, size, sha256)

    def stat(self, key):
        if self.where == 'stat':
            raise self.fault
        return super(Broken, self).stat(key)


@pytest.fixture
def broken(monkeypatch):
    monkeypatch.setitem(repositories.TYPES, 'broken', Broken)
    return Broken


@pytest.fixture
def dumped(tmp_path):
    src = tmp_path / 'src'
    src.mkdir()
    (src / 'data.bin').write_bytes(os.urandom(300 * 1024))
    return operations.dump('crm', {'type': 'files', 'paths': [str(src)]}, str(tmp_path / 'dest'),
                           compression='none')['backup']


def _dirs(tmp_path, count):
    made = []
    for index in range(count):
        path = tmp_path / ('repo%d' % index)
        path.mkdir()
        made.append(str(path))
    return made


def _complete_in(path, backup):
    """The backup is complete in the local directory ``path``: manifest and artifact as dumped."""
    name, backup_id = backup['name'], backup['id']
    with open(os.path.join(path, mf.manifest_key(name, backup_id)), 'rb') as handle:
        data = mf.loads(handle.read(), path)
    with open(os.path.join(path, mf.artifact_key(name, backup_id, data['extension'])), 'rb') as handle:
        return handle.read() == open(backup['path'], 'rb').read() and data['sha256'] == backup['sha256']


@pytest.mark.parametrize('where', ['put', 'manifest', 'stat'])
@pytest.mark.parametrize('fault', sorted(FAULTS))
def test_upload_one_repository_raising_anything_fails_alone(broken, dumped, tmp_path, where, fault):
    exc, kind, words = FAULTS[fault]
    broken.where, broken.fault = where, exc
    first, second, third = _dirs(tmp_path, 3)
    repos = [{'type': 'broken', 'path': first}, {'type': 'local', 'path': second}, {'type': 'local', 'path': third}]
    result = operations.upload(dumped['path'], repos, min_success=1)
    statuses = [r['status'] for r in result['repositories']]
    assert statuses == ['failed', 'uploaded', 'uploaded'], result
    failed = result['repositories'][0]
    assert failed['error_kind'] == kind and words in failed['error'], failed
    assert (kind == 'internal') == ('exception' in failed), failed
    assert result['failed_repositories'] == [failed['location']] if 'location' in failed else True
    assert words in result['warnings'][0]
    assert _complete_in(second, dumped) and _complete_in(third, dumped)
    assert not os.path.exists(os.path.join(first, mf.manifest_key('crm', dumped['id'])))

    # min_success decides: all three required -> the task fails, naming the cause
    with pytest.raises(BackupError) as caught:
        operations.upload(dumped['path'], repos)
    assert words in str(caught.value) and caught.value.kind == kind
    assert [r['status'] for r in caught.value.details['repositories']] == ['failed', 'unchanged', 'unchanged']


@pytest.mark.parametrize('fault', ['erofs', 'bug'])
def test_streamed_backup_one_repository_raising_anything_fails_alone(broken, tmp_path, fault):
    """operations.backup: the repositories read the dump while it is written (local streams)."""
    exc, kind, words = FAULTS[fault]
    broken.where, broken.fault = 'put', exc
    src = tmp_path / 'src'
    src.mkdir()
    (src / 'data.bin').write_bytes(os.urandom(300 * 1024))
    first, second, third = _dirs(tmp_path, 3)
    repos = [{'type': 'broken', 'path': first}, {'type': 'local', 'path': second}, {'type': 'local', 'path': third}]
    done = operations.backup('crm', {'type': 'files', 'paths': [str(src)]}, str(tmp_path / 'dest'), repos,
                             min_success=2, compression='none')
    uploaded = done['upload']
    assert [r['status'] for r in uploaded['repositories']] == ['failed', 'uploaded', 'uploaded'], uploaded
    assert uploaded['repositories'][0]['error_kind'] == kind and words in uploaded['repositories'][0]['error']
    assert _complete_in(second, done['backup']) and _complete_in(third, done['backup'])
