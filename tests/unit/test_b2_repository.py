"""The b2 repository against b2sdk's own API simulator (RawSimulator): no mocks of our code."""
import hashlib
import io
import os

import pytest

b2sdk_v2 = pytest.importorskip('b2sdk.v2')

from ansible_collections.offsite.backup.plugins.module_utils._engine import operations  # noqa: E402
from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import (  # noqa: E402
    NotFoundError, RepositoryError)
from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories import (  # noqa: E402
    b2 as b2repo, open_repository)
from tests.harness.b2sim import Simulated  # noqa: E402

MIB = 1024 * 1024


@pytest.fixture
def sim(monkeypatch):
    simulated = Simulated()
    monkeypatch.setattr(b2repo, 'API_FACTORY', lambda: simulated.api)
    return simulated


def put(repo, key, data):
    return repo.put(key, io.BytesIO(data), len(data), hashlib.sha256(data).hexdigest())


def test_round_trip(sim):
    data = b'a small backup' * 10
    with open_repository(sim.options()) as repo:
        result = put(repo, 'crm/crm_20250101T000000Z.dump', data)
        assert result.verification == 'sha1'
        assert repo.get_bytes('crm/crm_20250101T000000Z.dump') == data
        put(repo, 'crm/crm_20250101T000000Z.manifest.json', b'{}')
        put(repo, 'crm_backup_20240101_000000.sql.gz', b'legacy')
        assert sorted(i.key for i in repo.list('crm')) == [
            'crm/crm_20250101T000000Z.dump', 'crm/crm_20250101T000000Z.manifest.json',
            'crm_backup_20240101_000000.sql.gz']
        assert [i.key for i in repo.list('crm/')] == ['crm/crm_20250101T000000Z.dump',
                                                      'crm/crm_20250101T000000Z.manifest.json']
        info = repo.stat('crm/crm_20250101T000000Z.dump')
        assert info.size == len(data)
        assert info.metadata['sha256'] == hashlib.sha256(data).hexdigest()
        assert info.modified is not None
        assert repo.stat('crm/missing.dump') is None
        assert repo.location('crm/x') == 'b2://offsite-test/backups/crm/x'
        assert sim.key not in repo.location() and repo.secrets() == [sim.key]
        repo.delete('crm/crm_20250101T000000Z.dump')
        assert repo.stat('crm/crm_20250101T000000Z.dump') is None
        repo.delete('crm/never-existed.dump')  # not an error
    # the prefix is real: the objects live under backups/
    assert sim.versions('backups/crm/crm_20250101T000000Z.manifest.json')


def test_get_of_a_missing_file_is_not_found(sim):
    with open_repository(sim.options()) as repo:
        with pytest.raises(NotFoundError) as caught:
            with repo.get('crm/nope.dump'):
                pass
    assert 'b2://offsite-test/backups/crm/nope.dump does not exist' in str(caught.value)


def test_large_file_goes_up_in_parts_and_reads_back(sim):
    data = os.urandom(3 * MIB + 12345)
    with open_repository(sim.options(part_size=1, concurrency=2)) as repo:
        result = put(repo, 'big/big_20250101T000000Z.dump', data)
        assert result.verification == 'sha1 per part + large_file_sha1'
        with repo.get('big/big_20250101T000000Z.dump') as reader:
            chunks = iter(lambda: reader.read(100000), b'')
            assert b''.join(chunks) == data
    version = sim.bucket.get_file_info_by_name('backups/big/big_20250101T000000Z.dump')
    assert version.content_sha1 in (None, 'none')  # B2 keeps no whole-file SHA-1 for a large file
    assert version.file_info['large_file_sha1'] == hashlib.sha1(data).hexdigest()
    assert version.file_info['sha256'] == hashlib.sha256(data).hexdigest()
    assert not list(sim.bucket.list_unfinished_large_files())


class Stream(object):
    """A reader that cannot be rewound (a pipe)."""

    def __init__(self, data):
        self.inner = io.BytesIO(data)

    def read(self, size=-1):
        return self.inner.read(size)


def test_large_file_from_a_stream_still_checks_every_part(sim):
    data = os.urandom(2 * MIB + 1)
    with open_repository(sim.options(part_size=1)) as repo:
        result = repo.put('s/s.dump', Stream(data), len(data), hashlib.sha256(data).hexdigest())
        assert result.verification == 'sha1 per part'
        assert repo.get_bytes('s/s.dump') == data


def test_a_short_stream_is_not_left_behind(sim):
    data = os.urandom(1000)
    with open_repository(sim.options()) as repo:
        with pytest.raises(Exception) as caught:
            repo.put('s/short.dump', io.BytesIO(data), 2000, hashlib.sha256(data).hexdigest())
        assert 'truncated' in str(caught.value)
        assert repo.stat('s/short.dump') is None
    assert sim.versions('backups/s/short.dump') == []


def test_busy_and_expired_upload_urls_are_retried_on_a_new_url(sim):
    exc = b2sdk_v2.exception
    sim.api.session.raw_api.set_upload_errors([
        exc.ServiceError('503 service_unavailable'),
        exc.InvalidAuthToken('upload token expired', 'expired_auth_token'),
        exc.BadUploadUrl('upload URL no longer valid'),
    ])
    with open_repository(sim.options()) as repo:
        assert put(repo, 'crm/a.dump', b'data').verification == 'sha1'
        assert repo.get_bytes('crm/a.dump') == b'data'
    assert sim.api.session.raw_api.upload_errors == []


def test_delete_removes_every_version(sim):
    with open_repository(sim.options()) as repo:
        put(repo, 'crm/a.dump', b'first')
        put(repo, 'crm/a.dump', b'second')
        put(repo, 'crm/a.dump.other', b'neighbour')
        assert len(sim.versions('backups/crm/a.dump')) == 2
        repo.delete('crm/a.dump')
        assert sim.versions('backups/crm/a.dump') == []
        assert repo.stat('crm/a.dump.other').size == 9


def test_hide_only_hides_instead(sim):
    with open_repository(sim.options(hide_only=True)) as repo:
        put(repo, 'crm/a.dump', b'first')
        repo.delete('crm/a.dump')
        assert repo.stat('crm/a.dump') is None
        assert repo.list('crm') == []
        repo.delete('crm/a.dump')  # already hidden: nothing more to do
    assert sim.versions('backups/crm/a.dump') == [('backups/crm/a.dump', 'hide'), ('backups/crm/a.dump', 'upload')]


def test_missing_bucket(sim):
    with open_repository(sim.options(bucket='no-such-bucket')) as repo:
        with pytest.raises(NotFoundError) as caught:
            repo.list('crm')
    assert 'bucket no-such-bucket does not exist (or the key cannot see it)' in str(caught.value)


def test_wrong_key(sim):
    with open_repository(sim.options(application_key='wrong-secret')) as repo:
        with pytest.raises(RepositoryError) as caught:
            repo.list('crm')
    message = str(caught.value)
    assert 'B2 refused the application key %s' % sim.key_id in message
    assert 'wrong-secret' not in message


def test_missing_key_is_a_config_error(sim):
    options = sim.options()
    del options['application_key']
    with open_repository(options) as repo:
        with pytest.raises(Exception) as caught:
            repo.list('crm')
    assert getattr(caught.value, 'kind', None) == 'config'


# b2sdk's RawSimulator refuses b2_get_upload_url and b2_delete_file_version to every
# bucket-restricted key (it checks the bucket restriction without passing the bucket id), so
# these tests upload with the account's master key, use the bucket-restricted key to find the
# bucket, list and read, and a key without a bucket restriction to miss deleteFiles. Real B2
# lets a key restricted to the bucket and prefix do all five verbs.
def test_a_key_restricted_to_bucket_and_prefix_is_enough(sim):
    with open_repository(sim.options()) as repo:
        put(repo, 'crm/a.dump', b'data')
        put(repo, 'crm/a.dump', b'data2')
    key_id, key = sim.restricted_key(['listFiles', 'readFiles', 'writeFiles', 'deleteFiles'])
    # no listBuckets: the bucket is found through the key's own restriction
    with open_repository(sim.options(key_id=key_id, application_key=key)) as repo:
        assert repo.get_bytes('crm/a.dump') == b'data2'
        assert [i.key for i in repo.list('crm')] == ['crm/a.dump']
        assert repo.stat('crm/a.dump').size == 5


def test_a_key_without_delete_capability_is_named(sim):
    with open_repository(sim.options()) as repo:
        put(repo, 'crm/a.dump', b'data')
    sim.api.authorize_account('production', sim.key_id, sim.key)
    created = sim.api.create_key(['listBuckets', 'listFiles', 'readFiles', 'writeFiles'], 'no-delete')
    key_id, key = created.id_, created.application_key
    with open_repository(sim.options(key_id=key_id, application_key=key)) as repo:
        with pytest.raises(RepositoryError) as caught:
            repo.delete('crm/a.dump')
    assert 'give the key the deleteFiles capability' in str(caught.value)
    assert sim.versions('backups/crm/a.dump')  # still there


def test_engine_without_b2sdk_reports_a_dependency_error(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_b2sdk(name, *args, **kwargs):
        if name.startswith('b2sdk'):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, '__import__', no_b2sdk)
    with pytest.raises(Exception) as caught:
        b2repo._b2()
    assert caught.value.kind == 'dependency' and 'pip install b2sdk' in str(caught.value)


# -- the real engine path -------------------------------------------------------------------
def test_upload_info_retention_restore_of_a_files_backup(sim, tmp_path):
    source = tmp_path / 'site'
    (source / 'sub').mkdir(parents=True)
    (source / 'index.html').write_text('hello')
    (source / 'sub' / 'data.bin').write_bytes(os.urandom(MIB + 50000))  # > part_size: a large file
    dest = tmp_path / 'local'
    options = sim.options(part_size=1)

    ids = []
    for attempt in range(2):
        dumped = operations.dump('site', {'type': 'files', 'paths': [str(source)]}, str(dest), compression='none')
        ids.append(dumped['backup']['id'])
        uploaded = operations.upload(dumped['backup']['path'], [options])
        assert [r['status'] for r in uploaded['repositories']] == ['uploaded']
        again = operations.upload(dumped['backup']['path'], [options])
        assert [r['status'] for r in again['repositories']] == ['unchanged']
        if attempt == 0:
            import time
            time.sleep(1.1)  # ids have one-second resolution

    # the engine hands put() a hashing reader over the local file: it is rewound for large_file_sha1
    with open(os.path.join(str(dest), 'site', '%s.tar' % ids[-1]), 'rb') as handle:
        local_sha1 = hashlib.sha1(handle.read()).hexdigest()
    landed = sim.bucket.get_file_info_by_name('backups/site/%s.tar' % ids[-1])
    assert landed.file_info['large_file_sha1'] == local_sha1

    found = operations.info('site', options)
    assert found['count'] == 2 and found['latest']['id'] == ids[-1]
    assert found['location'] == 'b2://offsite-test/backups/site'

    kept = operations.retention('site', options, {'keep_last': 1})
    assert kept['removed'] == [ids[0]]
    assert operations.info('site', options)['count'] == 1
    # deleted, not hidden: no version of the old backup is left in the bucket
    assert sim.versions('backups/site/%s.tar' % ids[0]) == []
    assert sim.versions('backups/site/%s.manifest.json' % ids[0]) == []

    target = tmp_path / 'restored'
    restored = operations.restore('site', options, {'type': 'files', 'path': str(target)})
    assert restored['status'] == 'restored'
    matches = [os.path.join(root, name) for root, dirs, files in os.walk(str(target)) for name in files]
    assert sorted(os.path.basename(m) for m in matches) == ['data.bin', 'index.html']
    back = [m for m in matches if m.endswith('data.bin')][0]
    with open(back, 'rb') as handle:
        assert handle.read() == (source / 'sub' / 'data.bin').read_bytes()
