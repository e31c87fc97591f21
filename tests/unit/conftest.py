"""Unit-test configuration: make ``ansible_collections.offsite.backup`` importable.

The collection is the repository root; ansible-core expects it at
``ansible_collections/offsite/backup``. ``.cache/collections`` holds that layout as a symlink
to the repository, and is put first on ``sys.path``.
"""

import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS = os.path.join(REPO_ROOT, '.cache', 'collections')
_LINK = os.path.join(COLLECTIONS, 'ansible_collections', 'offsite', 'backup')

if not os.path.lexists(_LINK):
    os.makedirs(os.path.dirname(_LINK), exist_ok=True)
    os.symlink(REPO_ROOT, _LINK)
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)


# -- shared fixtures (imports after the sys.path set-up above) -----------------------------------
import hashlib  # noqa: E402

import pytest  # noqa: E402

from ansible_collections.offsite.backup.plugins.module_utils._engine import manifest as mf  # noqa: E402
from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories.local import (  # noqa: E402
    LocalRepository)


@pytest.fixture(autouse=True)
def _fresh_lifeline():
    """Each test starts with lifeline's process-wide state as a new process has it. A test that
    stops a guarded restore with a signal leaves ``stopped`` set (a real process ends there), and
    ``lifeline.check()`` in a later test on the same worker would then refuse to swap."""
    from ansible_collections.offsite.backup.plugins.module_utils._engine import lifeline
    saved = dict(lifeline._state)
    lifeline._state.update(ancestors=None, stopped=None, raised=False)
    yield
    lifeline._state.clear()
    lifeline._state.update(saved)


@pytest.fixture
def repo_options(tmp_path):
    """Options of a local repository in an existing, empty directory."""
    root = tmp_path / 'repo'
    root.mkdir()
    return {'type': 'local', 'path': str(root)}


@pytest.fixture
def repo(repo_options):
    return LocalRepository(repo_options)


def _store_backup(repo, name, created, data=b'backup bytes', tags=(), seq=0, extension='dump',
                  artifact=True, manifest=True, manifest_size=None):
    """Write one backup (artifact, then manifest) straight into ``repo``; returns its id."""
    backup_id = mf.make_id(name, created, seq)
    if artifact:
        repo.put_bytes(mf.artifact_key(name, backup_id, extension), data)
    if manifest:
        doc = mf.build(name, backup_id, created, extension, 'none', 'custom',
                       len(data) if manifest_size is None else manifest_size,
                       hashlib.sha256(data).hexdigest(), len(data), {'type': 'postgresql'}, tags, 1.0)
        repo.put_bytes(mf.manifest_key(name, backup_id), mf.dumps(doc))
    return backup_id


@pytest.fixture
def store_backup():
    """``store_backup(repo, name, created, data=..., tags=..., seq=..., artifact=..., manifest=...,
    manifest_size=...)`` writes one backup straight into ``repo`` and returns its id."""
    return _store_backup


@pytest.fixture(scope='module')
def store_backup_module():
    """``store_backup`` for module-scoped fixtures."""
    return _store_backup
