"""Pure logic of the PostgreSQL source: version checks, database settings, row-count comparison."""

import pytest

from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import IntegrityError, SourceError
from ansible_collections.offsite.backup.plugins.module_utils._engine.sources.postgresql_sql import (
    check_tool_version, compare_counts, major, setting_statement, split_list_setting)


def test_major_versions():
    assert major(150004) == (15,) and major('15.4') == (15,)
    assert major(90624) == (9, 6) and major('9.6.24') == (9, 6)
    assert major(90624) < major(100001) < major('16.1')


def test_older_pg_dump_names_both_versions_and_the_package():
    with pytest.raises(SourceError) as exc:
        check_tool_version('pg_dump', '15.20', 160002, '16.2 (Debian 16.2-1)', '127.0.0.1:5432')
    text = str(exc.value)
    assert 'pg_dump 15.20 is older than the PostgreSQL 16.2' in text
    assert 'postgresql-client-16' in text


@pytest.mark.parametrize('tool,server', [('15.20', 150020), ('16.1', 150004), ('15.0', 90624), (None, 160000)])
def test_same_or_newer_client_is_fine(tool, server):
    check_tool_version('pg_dump', tool, server, str(server), 'here')


def test_list_settings_are_split_like_postgres_stores_them():
    assert split_list_setting('"$user", public') == ['$user', 'public']
    assert split_list_setting('app,"we""ird, name"') == ['app', 'we"ird, name']
    assert split_list_setting('') == []


def test_setting_statements():
    assert setting_statement('db', 'search_path="$user", app') == \
        'ALTER DATABASE "db" SET "search_path" TO \'$user\', \'app\''
    assert setting_statement('d"b', "work_mem=8MB") == 'ALTER DATABASE "d""b" SET "work_mem" TO \'8MB\''
    assert setting_statement('db', "application_name=it's") == \
        'ALTER DATABASE "db" SET "application_name" TO \'it\'\'s\''


def test_counts_match():
    compare_counts({'public.a': 3}, {'public.a': 3}, 'database x')


def test_count_mismatch_names_the_tables():
    with pytest.raises(IntegrityError) as exc:
        compare_counts({'public.a': 3, 'public.b': 5, 'app.c': 1}, {'public.a': 3, 'public.b': 4, 'x.y': 2},
                       'database x')
    text = str(exc.value)
    assert '3 table(s) differ' in text
    assert 'public.b: 5 rows, 4 restored' in text and 'app.c: 1 rows, table missing' in text
    assert 'x.y: not in the backup' in text and 'not touched' in text


class _RecordingSource(object):
    """A PostgresqlSource whose psql calls are recorded and answered from ``answers``."""

    @staticmethod
    def make(database, answers, **options):
        from ansible_collections.offsite.backup.plugins.module_utils._engine.commands import CommandLog
        from ansible_collections.offsite.backup.plugins.module_utils._engine.sources.postgresql import PostgresqlSource
        source = PostgresqlSource(dict({'type': 'postgresql', 'database': database}, **options), CommandLog())
        source.calls = []

        def psql(sql, db, what):
            source.calls.append(sql)
            return next((rows for start, rows in answers if sql.startswith(start)), [])
        source._psql = psql
        return source


@pytest.mark.parametrize('exists', [False, True])
def test_the_swap_commits_synchronously_in_the_renaming_transaction(exists, monkeypatch):
    """The loaders commit without waiting for the WAL flush; the rename that makes their work
    visible commits with synchronous_commit on whatever the server's default, in the same
    session and transaction as the rename (one psql call, SET first), so the restored database
    is durable before it is in place."""
    answers = [('SELECT 1 FROM pg_database', [['1']] if exists else []), ('SELECT pid', [])]
    source = _RecordingSource.make('crm', answers)
    from ansible_collections.offsite.backup.plugins.module_utils._engine import lifeline
    monkeypatch.setattr(lifeline, 'check', lambda: None)  # another test's guard may linger in this worker
    result = source._swap('crm_restore_0123abcd', 'replace')
    [rename] = [sql for sql in source.calls if 'RENAME TO' in sql]
    statements = [part.strip() for part in rename.split(';')]
    assert statements[0] == 'SET synchronous_commit = on'
    assert 'ALTER DATABASE "crm_restore_0123abcd" RENAME TO "crm"' in statements
    assert result['replaced'] is exists


@pytest.mark.parametrize('superuser', ['f', 't'])
def test_loaders_commit_asynchronously_with_more_memory_for_index_builds(superuser):
    """And a superuser's loaders do not zero-fill the WAL files they create (a setting only a
    superuser may change: anyone else's connection would be refused with it)."""
    source = _RecordingSource.make('crm', [('SELECT greatest', [['262144', superuser]])])
    options = source.load_env()['PGOPTIONS'].split()
    assert options == ['-c', 'synchronous_commit=off', '-c', 'maintenance_work_mem=262144kB'] + (
        ['-c', 'wal_init_zero=off'] if superuser == 't' else [])
