"""Command construction for sources in containers (Source.exec_argv) and the PostgreSQL
commands built on it: the forms the seed scripts use, secrets passed by name only."""

import os

import pytest

from ansible_collections.offsite.backup.plugins.module_utils._engine.commands import CommandLog, which
from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import DependencyError
from ansible_collections.offsite.backup.plugins.module_utils._engine.sources.base import Source
from ansible_collections.offsite.backup.plugins.module_utils._engine.sources.postgresql import PostgresqlSource

FAKE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'harness', 'fake_docker')


@pytest.fixture(autouse=True)
def docker_on_path(monkeypatch):
    monkeypatch.setenv('PATH', FAKE_DIR + os.pathsep + os.environ.get('PATH', ''))
    return os.path.join(FAKE_DIR, 'docker')


def make(**options):
    return Source(options, CommandLog())


def test_without_container_argv_is_unchanged():
    assert make().exec_argv(['pg_dump', 'db'], env_names=['PGPASSWORD'], stdin=True) == ['pg_dump', 'db']


def test_docker_exec_form(docker_on_path):
    src = make(container='crm-db')
    assert src.exec_argv(['pg_dump', '-Fc', 'crm'], env_names=['PGPASSWORD', 'PGUSER']) == \
        [docker_on_path, 'exec', '-e', 'PGPASSWORD', '-e', 'PGUSER', 'crm-db', 'pg_dump', '-Fc', 'crm']


def test_docker_exec_with_stdin_adds_i(docker_on_path):
    assert make(container='db').exec_argv(['psql'], stdin=True) == [docker_on_path, 'exec', '-i', 'db', 'psql']


def test_compose_form_like_the_seed(docker_on_path):
    # seed: docker compose -f docker-compose.prod.yml exec -T postgres pg_dump ...
    src = make(container='postgres', compose_file='/srv/crm/docker-compose.prod.yml', compose_project='crm')
    assert src.exec_argv(['pg_dump', 'crm_db'], env_names=['PGPASSWORD'], stdin=True) == \
        [docker_on_path, 'compose', '-f', '/srv/crm/docker-compose.prod.yml', '-p', 'crm', 'exec', '-T',
         '-e', 'PGPASSWORD', 'postgres', 'pg_dump', 'crm_db']


def test_compose_project_alone(docker_on_path):
    assert make(container='postgres', compose_project='crm').exec_argv(['psql']) == \
        [docker_on_path, 'compose', '-p', 'crm', 'exec', '-T', 'postgres', 'psql']


def test_missing_docker_is_a_clear_dependency_error(monkeypatch):
    monkeypatch.setenv('PATH', '/nonexistent')
    with pytest.raises(DependencyError, match='docker is not installed.*container db'):
        make(container='db').exec_argv(['psql'])


def test_tool_is_a_bare_name_in_a_container():
    assert make(container='db').tool('pg_dump', 'x') == 'pg_dump'
    assert make().tool('pg_dump', 'x') == which('pg_dump', 'x')  # on this node: a path (past pg_wrapper)


def test_postgresql_in_container_passes_password_by_name_only(monkeypatch):
    log = CommandLog()
    src = PostgresqlSource({'type': 'postgresql', 'database': 'crm', 'container': 'db',
                            'password': 's3cret-value'}, log)
    argv = src._argv(['pg_dump'] + src._conn_args() + ['crm'])
    assert 's3cret-value' not in ' '.join(argv)
    assert argv[argv.index('-e', argv.index('exec')) + 1:].count('PGPASSWORD') == 1
    # no host: the tools use the container's own socket, not this node's 127.0.0.1
    assert '-h' not in argv and 'PGHOST' not in argv
    assert 'container db' in src.describe()


def test_postgresql_container_restores_stream_through_stdin():
    src = PostgresqlSource({'type': 'postgresql', 'database': 'crm', 'container': 'db', 'jobs': 4}, CommandLog())
    assert src.streams()
    assert not PostgresqlSource({'type': 'postgresql', 'database': 'crm', 'jobs': 4}, CommandLog()).streams()
