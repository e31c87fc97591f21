"""Pure parts of the MySQL source: batch-output unescaping, quoting, count comparison, the
counts that go into the manifest, and the commands built (with and without a container)."""

from __future__ import annotations

import pytest

from ansible_collections.offsite.backup.plugins.module_utils._engine.commands import CommandLog
from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import ConfigError
from ansible_collections.offsite.backup.plugins.module_utils._engine.sources import mysql


def test_unescape_batch_fields():
    assert mysql.unescape(r"a\tb\nc\\n\0") == "a\tb\nc\\n\0"


def test_quoting():
    assert mysql.quote_ident("we`ird") == "`we``ird`"
    assert mysql.quote_literal("it's a \\ test") == "'it''s a \\\\ test'"


def test_count_mismatches_names_each_table():
    assert mysql.count_mismatches({"d.a": 1, "d.b": 2}, {"d.a": 1, "d.b": 2}) == []
    problems = mysql.count_mismatches({"d.a": 1, "d.b": 2}, {"d.a": 1, "d.b": 3, "d.c": 0})
    assert problems == ["d.b: 2 rows in the backup, 3 restored", "d.c: no table rows in the backup, 0 restored"]


def test_counts_that_moved_during_the_dump_are_not_recorded():
    src = mysql.MysqlSource({"type": "mysql", "database": "shop"}, CommandLog())
    src._before_counts = {"shop.a": 1, "shop.b": 5}
    src._after_counts = {"shop.a": 1, "shop.b": 6, "shop.c": 0}
    assert src.dump_facts() == {"counts": {"tables": {"shop.a": 1}}, "counts_changed_during_dump": ["shop.b", "shop.c"]}


def test_system_database_refused():
    with pytest.raises(ConfigError):
        mysql.MysqlSource({"type": "mysql", "database": "mysql"}, CommandLog())


def test_password_goes_by_name_into_a_container():
    src = mysql.MysqlSource({"type": "mysql", "database": "shop", "password": "s3cret", "container": "db"}, CommandLog())
    argv = src._wrap(["mariadb-dump", "shop"])
    assert argv[1:] == ["exec", "-e", "MYSQL_PWD", "db", "mariadb-dump", "shop"]
    assert "s3cret" not in " ".join(argv)
    assert src._env() == {"MYSQL_PWD": "s3cret"}
