# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the PostgreSQL source asks the server and the pure logic around it, shared by one
database (postgresql.py) and a whole cluster (postgresql_cluster.py): the facts and row-count
queries, quoting, database settings, client/server versions, row count comparison."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import re

from ..errors import IntegrityError, SourceError

FACTS_SQL = ("SELECT current_setting('server_version'), current_setting('server_version_num'), "
             "pg_database_size(d.oid), pg_encoding_to_char(d.encoding), d.datcollate, d.datctype, "
             "pg_get_userbyid(d.datdba), (SELECT array_to_json(s.setconfig) FROM pg_db_role_setting s "
             "WHERE s.setrole = 0 AND s.setdatabase = d.oid) "
             "FROM pg_database d WHERE d.datname = current_database()")
# Rows of every ordinary table (partitions counted once, as leaves), one statement so that it
# runs inside the dump's snapshot. count(*) reads each table once more: the price of a restore
# that proves it got every row.
COUNT_SQL = ("SELECT n.nspname || '.' || c.relname, (xpath('/row/c/text()', query_to_xml(format("
             "'SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname), false, true, '')))[1]::text "
             "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' "
             "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
             "AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)' ORDER BY 1")
# settings whose value is a list of quoted elements (pg_dump's variable_is_guc_list_quote)
_LIST_SETTINGS = ('local_preload_libraries', 'search_path', 'session_preload_libraries',
                  'shared_preload_libraries', 'temp_tablespaces', 'unix_socket_directories')


def parse_version(text):
    match = re.search(r'\d+(?:\.\d+)+', text)
    return match.group(0) if match else None


def major(version):
    """The major version as a comparable tuple: server_version_num 150004 or '15.4' -> (15,),
    90624 or '9.6.24' -> (9, 6)."""
    if isinstance(version, int):
        return (version // 10000,) if version >= 100000 else (version // 10000, version // 100 % 100)
    parts = [int(p) for p in version.split('.')[:2]]
    return tuple(parts[:1] if parts[0] >= 10 else parts)


def check_tool_version(tool, tool_version, server_version_num, server_version, where):
    """pg_dump refuses a newer server only after connecting: say it first, with what to install."""
    if not tool_version:
        return
    server_major = major(server_version_num)
    if major(tool_version) < server_major:
        wanted = '.'.join(str(p) for p in server_major)
        raise SourceError('%s %s is older than the PostgreSQL %s server at %s and cannot dump it'
                          % (tool, tool_version, server_version, where),
                          'install postgresql-client-%s on this node (Debian: from apt.postgresql.org; a newer '
                          'client dumps older servers too)' % wanted)


def setting_statement(database, entry):
    """``ALTER DATABASE ... SET`` for one pg_db_role_setting entry (``name=value``)."""
    name, value = entry.split('=', 1)
    if name.lower() in _LIST_SETTINGS:
        values = ', '.join(quote_literal(v) for v in split_list_setting(value))
    else:
        values = quote_literal(value)
    return 'ALTER DATABASE %s SET %s TO %s' % (quote_ident(database), quote_ident(name), values or "''")


def split_list_setting(value):
    """Elements of a list setting as stored (``"$user", public``): comma separated,
    double-quoted where needed (``""`` is a quote inside)."""
    items, i = [], 0
    while i < len(value):
        while i < len(value) and value[i] in ' ,':
            i += 1
        if i >= len(value):
            break
        if value[i] == '"':
            j, item = i + 1, ''
            while j < len(value):
                if value[j] == '"' and value[j + 1:j + 2] == '"':
                    item, j = item + '"', j + 2
                elif value[j] == '"':
                    break
                else:
                    item, j = item + value[j], j + 1
            items.append(item)
            i = j + 1
        else:
            j = value.find(',', i)
            j = len(value) if j < 0 else j
            items.append(value[i:j].strip())
            i = j
    return items


def compare_counts(expected, actual, where):
    """Raise IntegrityError naming the first tables whose rows differ from the manifest's."""
    wrong = ['%s: %s rows, %s restored' % (t, n, actual.get(t, 'table missing, 0'))
             for t, n in sorted(expected.items()) if actual.get(t) != n]
    wrong += ['%s: not in the backup, %s rows restored' % (t, actual[t]) for t in sorted(actual) if t not in expected]
    if wrong:
        raise IntegrityError('the restored %s does not hold the rows the backup recorded (%d table(s) differ): %s'
                             % (where, len(wrong), '; '.join(wrong[:5])),
                             'the target was not touched; the backup or the restore is incomplete')


def quote_ident(name):
    return '"%s"' % name.replace('"', '""')


def quote_literal(text):
    return "'%s'" % text.replace("'", "''")


def database_facts(row):
    """A FACTS_SQL row: what restoring the database needs besides its dump."""
    return {'database_size': int(row[2]), 'encoding': row[3], 'collate': row[4], 'ctype': row[5],
            'owner': row[6], 'settings': json.loads(row[7]) if len(row) > 7 and row[7] else []}
