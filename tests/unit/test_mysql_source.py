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


def test_database_renamer_renames_and_leaves_out_sections():
    dump = (b"-- Current Database: `shop`\n"
            b"CREATE DATABASE /*!32312 IF NOT EXISTS*/ `shop` /*!40100 DEFAULT CHARACTER SET utf8mb4 */;\n"
            b"USE `shop`;\nINSERT INTO t VALUES ('USE `other`;\\n');\n"
            b"CREATE DATABASE /*!32312 IF NOT EXISTS*/ `skip``me` /*!40100 DEFAULT CHARACTER SET utf8mb4 */;\n"
            b"USE `skip``me`;\nINSERT INTO secret VALUES (1);\n"
            b"USE `shop`;\n/*!40000 ALTER DATABASE `shop` CHARACTER SET utf8mb4 */ ;\nCREATE VIEW v AS SELECT 1;\n")
    renamer = mysql.DatabaseRenamer({"shop": "shop_restore_1"})
    out = b"".join(renamer.feed(dump[i:i + 7]) for i in range(0, len(dump), 7)) + renamer.finish()
    assert out == (b"-- Current Database: `shop`\n"
                   b"CREATE DATABASE /*!32312 IF NOT EXISTS*/ `shop_restore_1` /*!40100 DEFAULT CHARACTER SET utf8mb4 */;\n"
                   b"USE `shop_restore_1`;\nINSERT INTO t VALUES ('USE `other`;\\n');\n"
                   b"USE `shop_restore_1`;\n/*!40000 ALTER DATABASE `shop_restore_1` CHARACTER SET utf8mb4 */ ;\n"
                   b"CREATE VIEW v AS SELECT 1;\n")


def test_database_or_databases():
    with pytest.raises(ConfigError):
        mysql.MysqlSource({"type": "mysql"}, CommandLog())
    with pytest.raises(ConfigError):
        mysql.MysqlSource({"type": "mysql", "database": "a", "databases": ["all"]}, CommandLog())
