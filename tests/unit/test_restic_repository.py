"""Pure parts of the restic repository: options, environment, names, parsing restic's JSON.
Everything that runs restic is in tests/integration/test_restic.py (the real restic)."""
import datetime
import io

import pytest

from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import ConfigError, LockedError, NotFoundError
from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import RepositoryError
from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories import open_repository
from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories import restic


def _repo(**extra):
    options = {'type': 'restic', 'restic_repository': 's3:http://127.0.0.1:9000/bucket/restic',
               'restic_password': 'pw-secret'}
    options.update(extra)
    return open_repository(options)


def test_password_and_credentials_go_to_the_environment_never_argv():
    repo = _repo(access_key='AKID', secret_key='s3-secret', region='eu-west-1', restic_env={'GOOGLE_PROJECT_ID': 'p1'})
    assert repo._env['RESTIC_PASSWORD'] == 'pw-secret' and repo._env['RESTIC_PASSWORD_FILE'] == ''
    assert repo._env['RESTIC_REPOSITORY'] == 's3:http://127.0.0.1:9000/bucket/restic'
    assert repo._env['AWS_ACCESS_KEY_ID'] == 'AKID' and repo._env['AWS_SECRET_ACCESS_KEY'] == 's3-secret'
    assert repo._env['AWS_DEFAULT_REGION'] == 'eu-west-1' and repo._env['GOOGLE_PROJECT_ID'] == 'p1'
    assert repo._env['TZ'] == 'UTC'
    argv = repo._argv('snapshots', '--json')
    assert not any('secret' in a or 'pw-' in a or '127.0.0.1' in a for a in argv)
    assert set(['pw-secret', 's3-secret', 'p1']) <= set(repo.secrets())


def test_password_file_is_passed_by_name(tmp_path):
    secret = tmp_path / 'pw'
    secret.write_text('x')
    repo = _repo(restic_password=None, restic_password_file=str(secret))
    assert repo._env['RESTIC_PASSWORD_FILE'] == str(secret) and repo._env['RESTIC_PASSWORD'] == ''


@pytest.mark.parametrize('extra, words', [
    ({'restic_password': None}, 'neither restic_password nor restic_password_file'),
    ({'restic_password_file': '/etc/hostname'}, 'both'),
    ({'restic_password': None, 'restic_password_file': '/nonexistent/pw'}, 'does not exist'),
    ({'restic_env': ['AWS_ACCESS_KEY_ID=x']}, 'restic_env must be a dict'),
    ({'restic_repository': None}, 'needs restic_repository'),
])
def test_bad_options_are_config_errors(extra, words):
    with pytest.raises(ConfigError, match=words):
        _repo(**extra)


def test_location_hides_credentials_of_rest_urls():
    repo = _repo(restic_repository='rest:https://user:hunter2@backup.example.com:8000/repo')
    assert 'hunter2' not in repo.location('a/b.dump')
    assert repo.location('a/b.dump') == 'rest:https://user:***@backup.example.com:8000/repo:/a/b.dump'


@pytest.mark.parametrize('stderr, error, words', [
    ('Fatal: wrong password or no key found\n', RepositoryError, 'wrong password'),
    ('Fatal: unable to open config file: stat /x/config: no such file\nIs there a repository at the following location?',
     NotFoundError, 'no restic repository'),
    ('unable to create lock in backend: repository is already locked by PID 7', LockedError, 'restic unlock'),
    ('Fatal: s3 said pw-secret is bad', RepositoryError, r'\*\*\*'),
])
def test_restic_failures_become_clear_errors(stderr, error, words):
    with pytest.raises(error, match=words) as caught:
        _repo()._fail('listing', 1, stderr)
    assert 'pw-secret' not in str(caught.value)


def test_a_killed_restic_says_so():
    with pytest.raises(RepositoryError, match='killed by SIGKILL'):
        _repo()._fail('uploading', -9, '')


def test_snapshot_json_maps_to_keys_sizes_and_times():
    snapshot = {'time': '2026-11-23T04:02:03.123456789+01:00', 'paths': ['/crm/crm_20261123T030203Z.dump.zst'],
                'tags': ['offsite.backup', 'set:crm', 'size:1234'], 'id': 'abc'}
    assert restic.snapshot_key(snapshot) == 'crm/crm_20261123T030203Z.dump.zst'
    info = _repo()._info('crm/crm_20261123T030203Z.dump.zst', snapshot)
    assert info.size == 1234 and info.metadata['snapshot'] == 'abc'
    assert info.modified == datetime.datetime(2026, 11, 23, 3, 2, 3, tzinfo=datetime.timezone.utc)
    assert restic._time('2026-11-23T03:02:03Z').hour == 3 and restic._time('garbage') is None


def test_summary_is_the_last_summary_line():
    out = '{"message_type":"status"}\nnoise\n{"message_type":"summary","snapshot_id":"f00","total_bytes_processed":3}\n'
    assert restic._summary(out) == {'message_type': 'summary', 'snapshot_id': 'f00', 'total_bytes_processed': 3}
    assert restic._summary('nothing') == {}


def test_manifests_are_tagged_with_their_source_type():
    body = io.BytesIO(b'{"source": {"type": "postgresql"}}')
    assert restic.extra_tags('crm/crm_20261123T030203Z.manifest.json', body) == ['source:postgresql']
    assert restic.extra_tags('crm/crm_20261123T030203Z.dump', body) == []
    assert restic.extra_tags('crm/crm_20261123T030203Z.manifest.json', io.BytesIO(b'not json')) == []


def test_check_rejects_a_subset_restic_would_not_understand():
    with pytest.raises(ConfigError, match='not a restic subset'):
        repo = _repo()
        repo._exists = True
        repo.check('lots')
