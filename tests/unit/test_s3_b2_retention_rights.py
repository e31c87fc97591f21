"""Retention with a B2 key that lacks deleteFiles (issue 3, item 9), against b2sdk's simulator:
a clear error naming the capability, and every backup still complete (nothing half-deleted)."""
import os
import time

import pytest

pytest.importorskip('b2sdk.v2')

from ansible_collections.offsite.backup.plugins.module_utils._engine import operations  # noqa: E402
from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import RepositoryError  # noqa: E402
from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories import b2 as b2repo  # noqa: E402
from tests.harness.b2sim import Simulated  # noqa: E402


@pytest.fixture
def sim(monkeypatch):
    """b2sdk's simulator behind the engine (test_b2_repository's account and bucket)."""
    simulated = Simulated()
    monkeypatch.setattr(b2repo, 'API_FACTORY', lambda: simulated.api)
    return simulated


def test_retention_with_a_key_without_delete_files_changes_nothing(sim, tmp_path):
    source = tmp_path / 'site'
    source.mkdir()
    (source / 'a.bin').write_bytes(os.urandom(4096))
    ids = []
    for attempt in range(2):
        if attempt:
            time.sleep(1.1)  # ids have one-second resolution
        dumped = operations.dump('site', {'type': 'files', 'paths': [str(source)]}, str(tmp_path / 'local'),
                                 compression='none')
        operations.upload(dumped['backup']['path'], [sim.options()])
        ids.append(dumped['backup']['id'])

    sim.api.authorize_account('production', sim.key_id, sim.key)
    created = sim.api.create_key(['listBuckets', 'listFiles', 'readFiles', 'writeFiles'], 'no-delete')
    restricted = sim.options(key_id=created.id_, application_key=created.application_key)
    planned = operations.retention('site', restricted, {'keep_last': 1}, check_mode=True)
    assert planned['remove'] == [ids[0]] and planned['removed'] == []

    with pytest.raises(RepositoryError) as caught:
        operations.retention('site', restricted, {'keep_last': 1})
    message = str(caught.value)
    assert 'B2 refused deleting' in message and 'site/%s.manifest.json' % ids[0] in message
    assert 'give the key the deleteFiles capability' in message
    # the manifest goes first and was refused: both backups are still complete and restorable
    listed = operations.info('site', sim.options())
    assert listed['count'] == 2 and [b['complete'] for b in listed['backups']] == [True, True]

    # a key with deleteFiles (the account's) then removes it whole
    assert operations.retention('site', sim.options(), {'keep_last': 1})['removed'] == [ids[0]]
    assert sim.versions('backups/site/%s.tar' % ids[0]) == []
