# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Names read from storage are input (issue 12, item 3).

A manifest's name, id, extension and artifact pass the rules of user-given names before they
become a key or a path (manifest.validate_stored_names), and every repository refuses a key
that would leave its root (base.checked_key) before it touches its store. Hypothesis generates
the hostile names; it prints the seed of a failing example (``--hypothesis-seed`` replays it)."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import datetime
import io
import json
import os
import posixpath

import pytest
from botocore.stub import Stubber
from hypothesis import given, settings, strategies as st

from ansible_collections.offsite.backup.plugins.module_utils._engine import manifest as mf
from ansible_collections.offsite.backup.plugins.module_utils._engine import operations
from ansible_collections.offsite.backup.plugins.module_utils._engine.catalog import Catalog
from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import ConfigError
from ansible_collections.offsite.backup.plugins.module_utils._engine import repositories
from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories import open_repository
from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories.base import ObjectInfo, checked_key
from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories.local import LocalRepository

CREATED = datetime.datetime(2026, 12, 6, 6, 0, 0, tzinfo=datetime.timezone.utc)
HOSTILE = ['../../../../../tmp/x', '..', '.', 'a/b', '/abs', 'crm/../x', 'x\n', 'a\\b', '', 'crm\x00']


def good_manifest(**changes):
    data = mf.build('crm', 'crm_20261206T060000Z', CREATED, 'sql.zst', 'zstd', 'custom', 3, 'ab' * 32, 3,
                    {'type': 'postgresql'}, [], 0.1)
    data.update(changes)
    return data


def loads(data):
    return mf.loads(json.dumps(data).encode(), 'test')


def test_a_manifest_dump_writes_is_accepted():
    assert loads(good_manifest())['artifact'] == 'crm_20261206T060000Z.sql.zst'
    tree = good_manifest(extension=None, format=mf.TREE_FORMAT, artifact='crm_20261206T060000Z')
    assert loads(tree)['artifact'] == 'crm_20261206T060000Z'


@pytest.mark.parametrize('field', ['name', 'id', 'extension', 'artifact'])
@pytest.mark.parametrize('value', HOSTILE + [None, 7, ['x']])
def test_hostile_names_in_a_manifest_are_a_config_error(field, value):
    with pytest.raises(ConfigError, match='manifest test'):
        loads(good_manifest(**{field: value}))


@pytest.mark.parametrize('changes', [
    {'id': 'other_20261206T060000Z'},                      # an id of another set
    {'id': 'crm_20261206T060000Z-1'},                      # the artifact still names the other id
    {'artifact': 'crm_20261206T060000Z.sql.zst/../../x'},
    {'extension': 'sql.zst', 'artifact': 'crm_20261206T060000Z.dump'},
    {'extension': None},                                   # only a tree has no extension
])
def test_names_that_disagree_are_a_config_error(changes):
    with pytest.raises(ConfigError):
        loads(good_manifest(**changes))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from('./\\\n\x00aZ9_-'), min_size=1, max_size=24))
def test_checked_keys_never_leave_the_root(key):
    try:
        checked_key(key)
    except ConfigError:
        return
    joined = posixpath.normpath(posixpath.join('/repo', key))
    assert joined == '/repo' or joined.startswith('/repo/'), key
    assert '..' not in key.split('/') and not key.startswith('/'), key


@settings(max_examples=200, deadline=None)
@given(field=st.sampled_from(['name', 'id', 'extension', 'artifact']),
       value=st.text(alphabet=st.sampled_from('./\\aZ9_-'), min_size=1, max_size=30))
def test_no_accepted_manifest_makes_a_key_with_a_dot_dot(field, value):
    try:
        data = loads(good_manifest(**{field: value}))
    except ConfigError:
        return
    for key in (mf.artifact_key(data['name'], data['id'], data['extension']), mf.manifest_key(data['name'], data['id'])):
        assert checked_key(key) == key
        assert key.count('/') == 1


@pytest.mark.parametrize('key', ['../x', 'crm/../../x', '/etc/x', 'crm//x', 'crm/./x'])
def test_a_local_repository_refuses_keys_outside_its_root(tmp_path, key):
    root = tmp_path / 'repo'
    root.mkdir()
    with open_repository({'type': 'local', 'path': str(root)}) as repo:
        for call in (lambda: repo.put_bytes(key, b'evil'), lambda: repo.get_bytes(key), lambda: repo.delete(key)):
            with pytest.raises(ConfigError, match='leave the repository'):
                call()
    assert sorted(os.listdir(tmp_path)) == ['repo'] and os.listdir(root) == []


@pytest.mark.parametrize('type_options', [
    {'type': 's3', 'bucket': 'b', 'endpoint_url': 'http://127.0.0.1:9', 'region': 'us-east-1',
     'access_key': 'k', 'secret_key': 's'},
])
def test_an_s3_repository_refuses_keys_before_any_request(type_options):
    repo = open_repository(type_options)
    with Stubber(repo.client):  # no answer queued: any request would fail the test with another error
        for key in ('../x', 'p/../../x', '/x'):
            with pytest.raises(ConfigError, match='leave the repository'):
                repo.put(key, io.BytesIO(b'evil'), 4, None)
            with pytest.raises(ConfigError, match='leave the repository'):
                repo.delete(key)


def test_upload_of_a_crafted_local_manifest_writes_nothing(tmp_path):
    """The issue's reproduction: "name": "../../../../../tmp/x" in the local manifest."""
    dest, repo_root, outside = tmp_path / 'dest' / 'crm', tmp_path / 'repo', tmp_path / 'outside'
    dest.mkdir(parents=True)
    repo_root.mkdir()
    artifact = dest / 'crm_20261206T060000Z.sql.zst'
    artifact.write_bytes(b'abc')
    crafted = good_manifest(name='../../../../../%s' % str(outside).lstrip('/'))
    (dest / 'crm_20261206T060000Z.manifest.json').write_bytes(mf.dumps(crafted))
    with pytest.raises(ConfigError) as caught:
        operations.upload(str(artifact), [{'type': 'local', 'path': str(repo_root)}])
    assert caught.value.kind == 'config'
    assert not outside.exists() and os.listdir(repo_root) == []


def test_a_crafted_manifest_in_a_repository_is_a_damaged_backup_not_a_path(tmp_path):
    root = tmp_path / 'repo'
    with open_repository({'type': 'local', 'path': str(root)}) as repo:
        root.mkdir()
        repo.put_bytes('crm/crm_20261206T060000Z.sql.zst', b'abc')
        repo.put_bytes('crm/crm_20261206T060000Z.manifest.json', mf.dumps(good_manifest(extension='../../x')))
        repo.put_bytes('crm/crm_20261206T070000Z.sql.zst', b'abc')
        repo.put_bytes('crm/crm_20261206T070000Z.manifest.json',
                       mf.dumps(good_manifest(id='crm_20261206T060000Z')))  # another backup's manifest
        catalog = Catalog(repo, 'crm')
    problems = dict((b.id, b.problem) for b in catalog.backups)
    assert catalog.complete == []
    assert 'extension' in problems['crm_20261206T060000Z']
    assert 'not crm_20261206T070000Z' in problems['crm_20261206T070000Z']


class HostileListing(LocalRepository):
    """A store whose listing also returns names no writer of ours makes (an SFTP server or an
    S3-compatible store answering what it likes)."""
    type = 'hostile'
    extra = ('crm/../../outside.partial', 'crm/./crm_20261206T050000Z.sql.zst', '/crm/x.partial',
             'crm/crm_20261206T040000Z.sql.zst\n.partial')

    def list(self, prefix):
        found = super(HostileListing, self).list(prefix)
        old = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
        return found + [ObjectInfo(key, 1, old) for key in self.extra]


def test_names_in_a_listing_never_reach_a_path_and_never_block_retention(tmp_path, monkeypatch):
    monkeypatch.setitem(repositories.TYPES, 'hostile', HostileListing)
    root = tmp_path / 'repo'
    root.mkdir()
    options = {'type': 'hostile', 'path': str(root)}
    with open_repository(options) as repo:
        repo.put_bytes('crm/crm_20261206T060000Z.sql.zst', b'abc')
        repo.put_bytes('crm/crm_20261206T060000Z.manifest.json', mf.dumps(good_manifest()))
        repo.put_bytes('crm/crm_20261101T060000Z.sql.zst.1234abcd.partial', b'half')  # a real leftover
        os.utime(str(root / 'crm' / 'crm_20261101T060000Z.sql.zst.1234abcd.partial'), (0, 0))
        catalog = Catalog(repo, 'crm')
    assert [b.id for b in catalog.complete] == ['crm_20261206T060000Z']
    assert [o.key for o in catalog.leftovers] == ['crm/crm_20261101T060000Z.sql.zst.1234abcd.partial']
    done = operations.retention('crm', options, {'keep_last': 1})
    assert done['incomplete_removed'] == ['crm/crm_20261101T060000Z.sql.zst.1234abcd.partial']
    assert sorted(os.listdir(str(root / 'crm'))) == ['crm_20261206T060000Z.manifest.json',
                                                     'crm_20261206T060000Z.sql.zst']
