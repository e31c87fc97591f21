"""Each repository and source type declares its options (schema.Option); the module argument
specs, the engine's check of an options dict and the environment fallbacks come from there."""
import pytest

from ansible_collections.offsite.backup.plugins.module_utils import _common
from ansible_collections.offsite.backup.plugins.module_utils._engine import schema
from ansible_collections.offsite.backup.plugins.module_utils._engine.commands import CommandLog
from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import ConfigError
from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories import (
    REPOSITORY_CLASSES, TYPES as REPOSITORY_TYPES, open_repository)
from ansible_collections.offsite.backup.plugins.module_utils._engine.sources import (
    SOURCE_CLASSES, TYPES as SOURCE_TYPES, open_source)

SSH = dict(host='backup.example.net', user='u1', path='/srv/backups', host_key='ssh-ed25519 AAAA')


def test_choices_come_from_the_registries():
    assert _common.repository_spec()['type']['choices'] == sorted(REPOSITORY_TYPES)
    assert _common.source_spec('dump')['type']['choices'] == sorted(SOURCE_TYPES)
    assert _common.source_spec('restore')['type']['choices'] == sorted(SOURCE_TYPES)


def test_the_module_spec_is_the_union_of_the_declared_options():
    declared = set(n for cls in REPOSITORY_CLASSES for n in schema.declared(cls)) | {'type'}
    assert set(_common.repository_spec()) == declared
    dump, restore = _common.source_spec('dump'), _common.source_spec('restore')
    assert 'format' in dump and 'format' not in restore
    assert 'owner' in restore and 'owner' not in dump
    # accepted by dump only so that one dict serves both modules
    assert {'maintenance_db', 'jobs', 'data_dir'} <= set(dump)


def test_secrets_are_no_log_and_derived_secret_options():
    spec = _common.repository_spec()
    for name in ('secret_key', 'session_token', 'application_key', 'private_key_passphrase', 'restic_password',
                 'restic_env'):
        assert spec[name]['no_log'] is True, name
    assert spec['access_key']['no_log'] is False
    assert REPOSITORY_TYPES['restic'].secret_options == ('restic_password', 'secret_key', 'session_token',
                                                         'application_key')
    assert REPOSITORY_TYPES['sftp'].required == ('host', 'user', 'path')
    assert _common.source_spec('dump')['password']['no_log'] is True


def test_a_default_only_where_every_type_shares_it():
    # verify: every repository type, same default; part_size: s3 only (b2 has its own), so the
    # engine fills it in per type and the module passes None
    assert _common.repository_spec()['verify']['default'] == 'full'
    assert 'default' not in _common.repository_spec()['part_size']
    assert open_repository(dict(type='s3', bucket='b')).part_size == 8 * 1024 * 1024
    assert _common.source_spec('restore')['mode']['default'] == 'create'
    assert 'default' not in _common.source_spec('restore')['no_owner']


@pytest.mark.parametrize('options, message', [
    (dict(SSH, type='sftp', bucket='b'), 'a sftp repository does not take the option bucket'),
    (dict(type='local', path='/srv', bucket='b', prefix='p'), 'a local repository does not take the options bucket, prefix'),
    (dict(type='s3', bucket='b', object_lock_day=3), 'a s3 repository does not take the option object_lock_day'),
    (dict(type='b2', bucket='b', restic_init=True), 'a b2 repository does not take the option restic_init'),
])
def test_a_repository_refuses_options_its_type_does_not_declare(options, message):
    with pytest.raises(ConfigError) as caught:
        open_repository(options)
    assert str(caught.value.message) == message
    assert caught.value.hint.startswith('a %s repository takes: type, ' % options['type'])


def test_none_values_are_not_options():
    # what AnsibleModule passes for every option of the union that was not given
    spec = _common.repository_spec()
    given = dict((name, None) for name in spec)
    given.update(SSH, type='sftp')
    assert open_repository(given).root == '/srv/backups'


@pytest.mark.parametrize('options, bad', [
    (dict(type='mysql', database='app', ssl_mode='require'), 'ssl_mode'),
    (dict(type='redis', database='app'), 'database'),
    (dict(type='files', paths=['/etc'], container='c1'), 'container'),
])
def test_a_source_refuses_options_its_type_does_not_declare(options, bad):
    with pytest.raises(ConfigError, match='a %s source does not take the option %s' % (options['type'], bad)):
        open_source(options, CommandLog())


def test_password_falls_back_to_pgpassword_for_postgresql_only(monkeypatch):
    monkeypatch.setenv('PGPASSWORD', 'pg-secret')
    assert open_source(dict(type='postgresql', database='app'), CommandLog()).options['password'] == 'pg-secret'
    assert 'password' not in open_source(dict(type='mysql', database='app'), CommandLog()).options
    assert 'password' not in open_source(dict(type='redis'), CommandLog()).options
    given = open_source(dict(type='postgresql', database='app', password='given'), CommandLog())
    assert given.options['password'] == 'given'


def test_environment_fallbacks_are_per_type(monkeypatch):
    monkeypatch.setenv('AWS_SECRET_ACCESS_KEY', 'aws-secret')
    monkeypatch.setenv('B2_APPLICATION_KEY', 'b2-secret')
    assert open_repository(dict(type='s3', bucket='b')).options['secret_key'] == 'aws-secret'
    assert 'secret_key' not in open_repository(dict(type='b2', bucket='b')).options
    assert open_repository(dict(type='b2', bucket='b')).options['application_key'] == 'b2-secret'
    assert 'application_key' not in open_repository(dict(type='s3', bucket='b')).options


def test_choices_are_checked_by_the_engine_too():
    with pytest.raises(ConfigError, match="object_lock_mode: 'forever' is not known"):
        open_repository(dict(type='s3', bucket='b', object_lock_mode='forever'))


def test_every_type_documents_itself_and_every_option():
    for cls in REPOSITORY_CLASSES + SOURCE_CLASSES:
        assert cls.DESCRIPTION and all(line.startswith('C(%s)' % cls.type) for line in cls.DESCRIPTION), cls
        for option in schema.declared(cls).values():
            assert option.description, (cls.type, option.name)


def test_one_type_per_option_name():
    # the union raises when two types declare one name with different types
    schema.union(REPOSITORY_CLASSES)
    schema.union(SOURCE_CLASSES)


# -- the job file: the same checks, the same messages ------------------------------------------

def _job(**extra):
    job = {'name': 'crm', 'local': {'path': '/var/backups/offsite'},
           'sources': [{'name': 'crm_db', 'source': {'type': 'postgresql', 'database': 'crm'}}]}
    job.update(extra)
    return job


def _module_message(check):
    with pytest.raises(ConfigError) as caught:
        check()
    return caught.value


@pytest.mark.parametrize('repository', [
    dict(type='s3', bucket='b', object_lock_day=3),       # a typo: no type takes it
    dict(SSH, type='sftp', bucket='b'),                   # another type's option
    dict(type='s3', bucket='b', checksums='sometimes'),   # not one of its choices
])
def test_the_job_file_refuses_what_the_module_refuses_with_its_message(repository):
    from ansible_collections.offsite.backup.plugins.module_utils._engine import jobs
    engine = _module_message(lambda: open_repository(repository))
    refused = _module_message(lambda: jobs.validate(_job(repositories=[repository])))
    assert refused.message == 'job.repositories[0]: ' + engine.message and refused.hint == engine.hint


def test_the_job_file_refuses_source_options_of_another_type_or_of_restore():
    from ansible_collections.offsite.backup.plugins.module_utils._engine import jobs
    source = {'type': 'mysql', 'database': 'crm', 'ssl_mode': 'require'}
    refused = _module_message(lambda: jobs.validate(_job(sources=[{'name': 'crm_db', 'source': source}])))
    assert refused.message == 'job.sources[0].source: a mysql source does not take the option ssl_mode'
    # a restore option in a dump's source: the dump module refuses it too (not in its spec)
    source = {'type': 'postgresql', 'database': 'crm', 'owner': 'app'}
    refused = _module_message(lambda: jobs.validate(_job(sources=[{'name': 'crm_db', 'source': source}])))
    assert refused.message == 'job.sources[0].source: a postgresql source does not take the option owner'
    # what dump accepts and ignores (one dict for dump and restore) passes
    source = {'type': 'postgresql', 'database': 'crm', 'jobs': 2, 'maintenance_db': 'postgres'}
    jobs.validate(_job(sources=[{'name': 'crm_db', 'source': source}]))


def test_job_file_names_are_the_modules_and_the_old_ones_still_read():
    from ansible_collections.offsite.backup.plugins.module_utils._engine import jobs
    job = jobs.validate(_job(compression_level=3, compression_threads=2))
    assert (job['compression_level'], job['compression_threads']) == (3, 2)
    job = jobs.validate(_job(level=5, threads=4))
    assert (job['compression_level'], job['compression_threads']) == (5, 4) and 'level' not in job
    with pytest.raises(ConfigError, match='sets both compression_level and level'):
        jobs.validate(_job(level=5, compression_level=3))


# -- capabilities: declared interfaces, asked with isinstance -----------------------------------

def test_capabilities_are_declared_by_the_types():
    from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories.base import (
        SelfCheckingStore, StreamingStore, TreeStore)
    from ansible_collections.offsite.backup.plugins.module_utils._engine.sources.base import FileTree, StreamingRestore
    streaming = sorted(t for t, cls in REPOSITORY_TYPES.items() if issubclass(cls, StreamingStore))
    assert streaming == ['local', 's3', 'sftp']
    assert [t for t, cls in REPOSITORY_TYPES.items() if issubclass(cls, TreeStore)] == ['rsync']
    assert all(cls.TOOL for cls in REPOSITORY_CLASSES if issubclass(cls, TreeStore))  # the manifests' tool
    assert [t for t, cls in REPOSITORY_TYPES.items() if issubclass(cls, SelfCheckingStore)] == ['restic']
    assert all(cls.streams == issubclass(cls, StreamingStore) for cls in REPOSITORY_CLASSES)
    assert sorted(t for t, cls in SOURCE_TYPES.items() if issubclass(cls, StreamingRestore)) == [
        'mysql', 'postgresql', 'postgresql_physical']
    from ansible_collections.offsite.backup.plugins.module_utils._engine.sources.base import ReplaysArchive
    assert [t for t, cls in SOURCE_TYPES.items() if issubclass(cls, ReplaysArchive)] == ['postgresql_physical']
    assert [t for t, cls in SOURCE_TYPES.items() if issubclass(cls, FileTree)] == ['files']
    assert schema.capabilities(REPOSITORY_TYPES['rsync']) == ['file-tree snapshots']


def test_stores_reading_the_local_file_declare_it():
    """upload names the local artifact only to the stores that declare they read it (no
    attribute set on the reader for them to probe)."""
    from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories.base import LocalFileStore
    assert sorted(t for t, cls in REPOSITORY_TYPES.items() if issubclass(cls, LocalFileStore)) == ['b2', 'rsync']
    from ansible_collections.offsite.backup.plugins.module_utils._engine.fanout import ChannelReader
    assert not hasattr(ChannelReader(None), 'source')


def test_a_capability_without_its_methods_fails_at_once():
    from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories.base import TreeStore
    from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories.local import LocalRepository

    class HalfTree(TreeStore, LocalRepository):
        type = 'half'

        def snapshot(self, name, paths, exclude, created, previous, check_mode):
            return {}

    with pytest.raises(TypeError, match='fetch_tree'):
        HalfTree({'type': 'half', 'path': '/srv'})  # pylint: disable=abstract-class-instantiated


def test_the_use_cases_ask_capabilities_not_attributes():
    import os
    import re
    engine = os.path.dirname(schema.__file__)
    probing = re.compile(r"\b(hasattr|getattr)\((repo|tgt|src|target|source|job\.repo)\b|\.type [!=]= '")
    found = []
    for folder in ('usecases', ''):
        for name in sorted(os.listdir(os.path.join(engine, folder))):
            if name.endswith('.py') and name not in ('schema.py',):
                text = open(os.path.join(engine, folder, name)).read()
                found += ['%s: %s' % (name, m.group(0)) for m in probing.finditer(text)]
    assert not found
