# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One MySQL / MariaDB database: ``mariadb-dump`` (or ``mysqldump``) out, ``mysql`` back in.

The dump is ``--single-transaction --routines --triggers --events`` of one database, without
``CREATE DATABASE`` / ``USE``, so it can be loaded under any name. The password only ever
travels in ``MYSQL_PWD``.

MySQL has no RENAME DATABASE, so a restore loads a scratch database, compares its row counts
with the manifest, and only then moves the tables with ONE ``RENAME TABLE`` statement (atomic:
the old tables go to a ``_previous_`` database in the same statement). Views, triggers,
routines and events cannot move between databases: they are read from the scratch database
and created again in the target right after the swap (this last step is not atomic; see
docs/sources-mysql.md).
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import contextlib
import re
import shutil
import subprocess
import tempfile

from .. import commands, lifeline
from .. import scratch as leases
from ..errors import BackupError, ConfigError, DependencyError, IntegrityError, NotFoundError, SourceError, TargetError
from ..pipeline import chunks
from ..schema import Option
from .base import (CONNECT_TIMEOUT, CONTAINER, Source, StreamingRestore, check_mode, database_options, password, scratch_name,
                   server)

SYSTEM_DATABASES = ('information_schema', 'mysql', 'performance_schema', 'sys')
# mysqldump --databases names a database at the start of these lines (the name is group 2)
DATABASE_STATEMENT = re.compile(br'^(CREATE DATABASE /\*!32312 IF NOT EXISTS\*/ |USE |/\*!40000 ALTER DATABASE |ALTER DATABASE )'
                                br'`((?:[^`]|``)+)`')
_UNESCAPE = {'\\\\': '\\', '\\n': '\n', '\\t': '\t', '\\0': '\0', '\\r': '\r'}


def quote_ident(name):
    return '`%s`' % name.replace('`', '``')


def quote_literal(text):
    return "'%s'" % text.replace('\\', '\\\\').replace("'", "''")


def unescape(field):
    """Undo the escaping of ``mysql --batch`` (tab, newline, NUL and backslash)."""
    return re.sub(r'\\[\\nt0r]', lambda m: _UNESCAPE[m.group(0)], field)


def count_mismatches(expected, actual):
    """Tables whose restored row count differs from the manifest's, as readable lines."""
    problems = []
    for table in sorted(set(expected) | set(actual)):
        if expected.get(table) != actual.get(table):
            problems.append('%s: %s rows in the backup, %s restored'
                            % (table, expected.get(table, 'no table'), actual.get(table, 'no table')))
    return problems


class DatabaseRenamer(object):
    """Streams a ``mysqldump --databases`` dump with every database renamed (``names``: old ->
    new) and the sections of databases not in ``names`` left out. mysqldump writes the
    statements that name a database (CREATE DATABASE, USE, ALTER DATABASE) at the start of a
    line; data never holds a raw newline (it is escaped), so only line starts are looked at and
    memory stays bounded by the longest line."""

    def __init__(self, names):
        self.names = names
        self.current = None
        self.pending = b''

    def feed(self, chunk):
        lines = (self.pending + chunk).split(b'\n')
        self.pending = lines.pop()
        return b''.join(self._line(line + b'\n') for line in lines)

    def finish(self):
        rest, self.pending = self.pending, b''
        return self._line(rest) if rest else b''

    def renamed(self, data):
        for chunk in data:
            yield self.feed(chunk)
        yield self.finish()

    def _line(self, line):
        match = DATABASE_STATEMENT.match(line)
        if match:
            name = match.group(2).replace(b'``', b'`').decode('utf-8')
            if match.group(1).startswith((b'CREATE', b'USE')):
                self.current = name
            if name not in self.names:
                return b''
            new = self.names[name].replace('`', '``').encode('utf-8')
            return line[:match.start(2)] + new + line[match.end(2):]
        return line if self.current is None or self.current in self.names else b''


class MysqlSource(StreamingRestore, Source):
    type = 'mysql'
    DESCRIPTION = ('C(mysql) for MySQL or MariaDB databases.',)
    OPTIONS = database_options([
        'Several databases instead of O(.database) - C([all]) (every database but the system ones) or a list of '
        'names, dumped in one consistent snapshot (C(--single-transaction --databases)) with the row counts of '
        'every table.',
        'A restore restores C([all]) or some of them by name, each loaded into its own scratch database and '
        'proven by its row counts before any is swapped in under its own name.',
    ]) + server(3306, 'root', 'User to connect as; a restore needs CREATE and DROP.') + (
        password('MYSQL_PWD'),
        CONNECT_TIMEOUT,
    ) + CONTAINER + (
        Option('exclude_tables', 'list', elements='str', roles=('dump',), description='Leave out these tables (names).'),
    )

    def __init__(self, options, log):
        super(MysqlSource, self).__init__(options, log)
        # ['all'] or names: several databases in one consistent snapshot
        self._database_or_databases('all, or a list of names')
        for name in [self.database] + self.databases:
            if name in SYSTEM_DATABASES:
                raise ConfigError('%s is a system database of MySQL/MariaDB' % name,
                                  'back up your application databases')
        self.host = self.options.get('host', '127.0.0.1')
        self.port = int(self.options.get('port', 3306))
        self.user = self.options.get('user', 'root')
        self._tools = {}
        self._after_counts = None

    def describe(self):
        where = '%s:%s' % (self.host, self.port)
        if self.options.get('container'):
            where += ' in container %s' % self.options['container']
        if self.databases:
            return 'MySQL databases %s on %s' % (', '.join(self.databases), where)
        return 'MySQL database %s on %s' % (self.database, where)

    # -- talking to the server -----------------------------------------------------------
    def _env(self):
        return {'MYSQL_PWD': self.options.get('password')}

    def _env_names(self):
        return ('MYSQL_PWD',) if self.options.get('password') else ()

    def _conn_args(self):
        args = ['--host=%s' % self.host, '--port=%d' % self.port, '--user=%s' % self.user]
        if self.options.get('connect_timeout'):
            args.append('--connect-timeout=%d' % int(self.options['connect_timeout']))
        return args

    def _tool(self, names, purpose):
        """The first of ``names`` that exists (MariaDB 11 ships only the ``mariadb-*`` names,
        MySQL only the ``mysql*`` ones); looked up inside the container when there is one."""
        key = names[0]
        if key not in self._tools:
            if self.options.get('container'):
                script = ' || '.join('command -v %s' % name for name in names)
                rc, out, dummy = commands.run(self.exec_argv(['sh', '-c', script]), self.log)
                found = out.strip().splitlines()[-1] if rc == 0 and out.strip() else None
                if not found:
                    raise DependencyError('none of %s exists in container %s (needed %s)'
                                          % (', '.join(names), self.options['container'], purpose),
                                          'use the database image, which ships them')
            else:
                found = next((path for path in (shutil.which(name) for name in names) if path), None)
                if not found:
                    raise DependencyError('none of %s is installed on this node (needed %s)' % (', '.join(names), purpose),
                                          'install it (Debian: mariadb-client or default-mysql-client)')
            self._tools[key] = found
        return self._tools[key]

    def _client(self):
        return self._tool(('mariadb', 'mysql'), 'to talk to MySQL/MariaDB')

    def _wrap(self, argv, stdin=False):
        return self.exec_argv(argv, env_names=self._env_names(), stdin=stdin)

    def _fail(self, what, stderr, database=None):
        """Turn client stderr into the error an operator can act on."""
        where = '%s:%s' % (self.host, self.port)
        database = database or self.database or ', '.join(self.databases)
        text = (stderr or '').strip()
        if 'Unknown database' in text:
            raise NotFoundError('database %s does not exist on MySQL at %s' % (database, where),
                                'create it or fix `database`')
        if 'Access denied for user' in text:
            raise SourceError('MySQL at %s refused user %s (wrong password, or no access to %s)' % (where, self.user, database),
                              'fix `password` (passed in MYSQL_PWD, never on the command line) or `user` and its grants')
        if "Can't connect" in text or 'Connection refused' in text or "Unknown MySQL server host" in text \
                or 'Lost connection' in text or 'server has gone away' in text:
            raise SourceError('cannot reach MySQL at %s during %s (%s)' % (where, what, text.splitlines()[-1]),
                              'check host/port and that the server is running')
        raise SourceError('%s failed on MySQL at %s: %s' % (what, where, text[-1500:] or 'no error output'))

    def _sql(self, sql, what, database=None, script=None):
        """Run ``sql`` (or feed ``script`` on stdin); rows of unescaped fields."""
        argv = [self._client(), '--batch', '--skip-column-names', '--default-character-set=utf8mb4']
        argv += self._conn_args()
        if sql is not None:
            argv += ['--execute=%s' % sql]
        if database:
            argv.append('--database=%s' % database)
        with tempfile.TemporaryFile() as stdin:  # 0600, gone when closed
            stdin.write((script or '').encode('utf-8'))
            stdin.seek(0)
            rc, out, err = commands.run(self._wrap(argv, stdin=script is not None), self.log, env=self._env(),
                                        stdin=stdin)
        if rc != 0:
            self._fail(what, err, database)
        return [[unescape(f) for f in line.split('\t')] for line in out.splitlines() if line]

    def _exists(self, name):
        return bool(self._sql('SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s' % quote_literal(name),
                              'connecting'))

    def _base_tables(self, database):
        return [row[0] for row in self._sql(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'BASE TABLE' "
            "ORDER BY TABLE_NAME" % quote_literal(database), 'listing tables')]

    def counts(self, database, label=None):
        """Exact row counts of every base table, keyed ``<label>.<table>``."""
        tables = self._base_tables(database)
        label = label or database
        result = {}
        for start in range(0, len(tables), 200):  # a bounded statement even with thousands of tables
            chunk = tables[start:start + 200]
            sql = ' UNION ALL '.join('SELECT %s, COUNT(*) FROM %s.%s' % (quote_literal(t), quote_ident(database), quote_ident(t))
                                     for t in chunk)
            for name, rows in self._sql(sql, 'counting rows'):
                result['%s.%s' % (label, name)] = int(rows)
        return result

    # -- backup side ---------------------------------------------------------------------
    def artifact(self):
        return 'sql', 'mysql'

    def _resolve(self):
        """The database names: ``databases: [all]`` is every database but the system ones."""
        if not self.databases:
            return [self.database]
        present = [row[0] for row in self._sql('SELECT SCHEMA_NAME FROM information_schema.SCHEMATA ORDER BY 1',
                                               'listing databases')]
        if self.databases == ['all']:
            return [name for name in present if name not in SYSTEM_DATABASES]
        missing = [name for name in self.databases if name not in present]
        if missing:
            raise NotFoundError('database %s does not exist on MySQL at %s:%s' % (', '.join(missing), self.host, self.port),
                                'create it or fix `databases`')
        return list(self.databases)

    def probe(self):
        names = self._resolve()
        rows = self._sql(
            'SELECT s.SCHEMA_NAME, VERSION(), s.DEFAULT_CHARACTER_SET_NAME, s.DEFAULT_COLLATION_NAME, '
            '(SELECT COALESCE(SUM(DATA_LENGTH + INDEX_LENGTH), 0) FROM information_schema.TABLES t '
            ' WHERE t.TABLE_SCHEMA = s.SCHEMA_NAME), '
            "(SELECT GROUP_CONCAT(TABLE_NAME) FROM information_schema.TABLES t WHERE t.TABLE_SCHEMA = s.SCHEMA_NAME "
            "  AND TABLE_TYPE = 'BASE TABLE' AND ENGINE <> 'InnoDB') "
            'FROM information_schema.SCHEMATA s WHERE s.SCHEMA_NAME IN (%s) ORDER BY 1'
            % ', '.join(quote_literal(n) for n in names), 'connecting')
        if not rows and not self.databases:
            raise NotFoundError('database %s does not exist on MySQL at %s:%s' % (self.database, self.host, self.port),
                                'create it or fix `database`')
        tool = self._tool(('mariadb-dump', 'mysqldump'), 'to dump MySQL/MariaDB')
        facts = {'type': self.type, 'host': self.host, 'port': self.port, 'user': self.user,
                 'server_version': rows[0][1] if rows else None,
                 'database_size': sum(int(row[4]) for row in rows), 'tool': tool.rsplit('/', 1)[-1],
                 # --single-transaction gives a consistent snapshot of InnoDB tables only
                 'not_transactional_tables': ['%s.%s' % (row[0], t) for row in rows
                                              for t in (row[5] or '').split(',') if t and t != 'NULL']}
        if self.databases:
            facts['databases'] = dict((row[0], {'charset': row[2], 'collation': row[3]}) for row in rows)
        else:
            facts.update(database=self.database, charset=rows[0][2], collation=rows[0][3])
        self._names = [row[0] for row in rows]
        self._before_counts = self._all_counts()
        return facts

    def _all_counts(self):
        counts = {}
        for name in self._names:
            counts.update(self.counts(name))
        return counts

    def dump_facts(self):
        """Row counts for the manifest, taken before and after the dump: a table whose count
        moved meanwhile cannot be verified and is listed in ``counts_changed_during_dump``."""
        before = getattr(self, '_before_counts', None)
        if before is None or self._after_counts is None:
            return {}
        stable = dict((t, n) for t, n in before.items() if self._after_counts.get(t) == n)
        changed = sorted((set(before) | set(self._after_counts)) - set(stable))
        return {'counts': {'tables': stable}, 'counts_changed_during_dump': changed}

    @contextlib.contextmanager
    def dump(self):
        argv = [self._tool(('mariadb-dump', 'mysqldump'), 'to dump MySQL/MariaDB'),
                '--single-transaction', '--routines', '--triggers', '--events', '--hex-blob',
                '--default-character-set=utf8mb4'] + self._conn_args()
        for table in self.options.get('exclude_tables') or []:
            argv.append('--ignore-table=%s' % (table if '.' in table else '%s.%s' % (self.database, table)))
        if self.databases:  # one snapshot of all of them, with CREATE DATABASE and USE
            argv += ['--databases'] + self._names
        else:
            argv.append(self.database)
        # block-buffered: 2,490 write() calls for 10 MB of rows became 12 (the client that loads
        # a dump reads with its own buffer, which stdbuf does not change)
        with commands.streaming(self._wrap(self.block_buffered(argv)), self.log, env=self._env()) as proc:
            yield proc.stdout
            rc = proc.wait()
            if commands.killed_by(rc):
                raise SourceError('%s of %s was killed by signal %s' % (argv[0], self.describe(), commands.killed_by(rc)),
                                  'the partial dump was discarded; run it again')
            if rc != 0:
                self._fail('the dump', commands.stderr_tail(proc))
        self._after_counts = self._all_counts()

    # -- restore side --------------------------------------------------------------------
    def check_target(self, mode):
        check_mode(mode)
        # with databases: [all] the names are known from the backup only: checked before each swap
        names = [self.database] if self.database else [name for name in self.databases if name != 'all']
        existing = [name for name in names if self._exists(name)]
        if existing and mode == 'create':
            raise TargetError('database %s already exists on MySQL at %s:%s and mode is create'
                              % (', '.join(existing), self.host, self.port),
                              'use mode: replace to swap it for the backup, or restore under another name')
        if not names:
            self._sql('SELECT 1', 'connecting')
        return {'exists': bool(existing)}

    def streams(self):
        """The mysql client reads the dump from a pipe: restore while downloading."""
        return True

    def restore(self, path, manifest, mode):
        with open(path, 'rb') as stream:
            return self._via_scratch(stream, manifest, mode)

    def restore_stream(self, stream, manifest, mode):
        proven = []

        def prove():
            stream.finish()  # the checksum, before any target is touched
            proven.append(True)
        try:
            return self._via_scratch(stream, manifest, mode, before_swap=prove)
        except TargetError:
            if not proven:
                stream.finish()  # damaged bytes make the loader choke: name that root cause first
            raise

    def _plan(self, facts):
        """{database in the backup: database to restore into} and their charsets."""
        if not facts.get('databases'):
            if self.databases:
                raise ConfigError('this backup holds one database (%s); restore it with database, not databases'
                                  % facts.get('database'))
            return {facts.get('database') or self.database: self.database}, \
                {self.database: {'charset': facts.get('charset'), 'collation': facts.get('collation')}}
        if self.database:
            raise ConfigError('this backup holds several databases (%s); restore them with databases: [all] or a list'
                              % ', '.join(sorted(facts['databases'])))
        chosen = sorted(facts['databases']) if self.databases == ['all'] else self.databases
        missing = [name for name in chosen if name not in facts['databases']]
        if missing:
            raise NotFoundError('the backup holds no database %s' % ', '.join(missing),
                                'it holds %s' % ', '.join(sorted(facts['databases'])))
        return dict((name, name) for name in chosen), facts['databases']

    def _via_scratch(self, stream, manifest, mode, before_swap=None):
        """Load every database of the backup into its own scratch database, prove all of them
        by their row counts, then swap each into place."""
        check_mode(mode)
        facts = manifest.get('source') or {}
        plan, charsets = self._plan(facts)
        if mode == 'create':
            existing = [target for target in plan.values() if self._exists(target)]
            if existing:
                raise TargetError('database %s already exists and mode is create' % ', '.join(existing),
                                  'use mode: replace')
        scratch = dict((name, scratch_name(target, 'restore')) for name, target in plan.items())
        try:
            for name, target in plan.items():
                charset = charsets.get(name if facts.get('databases') else target) or {}
                extra = ''
                if charset.get('charset'):
                    extra = ' CHARACTER SET %s COLLATE %s' % (charset['charset'], charset['collation'])
                self._sql('CREATE DATABASE %s%s' % (quote_ident(scratch[name]), extra),
                          'creating the scratch database %s' % scratch[name])
                self._mark_scratch(scratch[name])
            if facts.get('databases'):
                self._load(None, stream, DatabaseRenamer(scratch))
            else:
                self._load(scratch[list(plan)[0]], stream)
            if before_swap:
                before_swap()
            expected = (facts.get('counts') or {}).get('tables')
            verified = None
            if expected is not None:
                unstable = set(facts.get('counts_changed_during_dump') or ())
                actual = {}
                for name in plan:
                    actual.update(self.counts(scratch[name], label=name))
                wanted = dict((t, n) for t, n in expected.items() if t.split('.', 1)[0] in plan)
                problems = count_mismatches(wanted, dict((t, n) for t, n in actual.items() if t not in unstable))
                if problems:
                    raise IntegrityError('the restored rows do not match the backup: %s' % '; '.join(problems[:5]),
                                         'no target database was touched')
                verified = len(wanted)
            results = [self._swap(scratch[name], target, mode) for name, target in sorted(plan.items())]
        finally:
            for name in scratch.values():
                self._drop(name)
        if len(results) == 1 and not facts.get('databases'):
            result = results[0]
        else:
            result = {'databases': results}
        result['verified_tables'] = verified
        return result

    def _load(self, database, stream, renamer=None):
        argv = [self._client(), '--batch', '--binary-mode', '--default-character-set=utf8mb4'] + self._conn_args()
        if database:
            argv.append('--database=%s' % database)
        with commands.streaming(self._wrap(argv, stdin=True), self.log, env=self._env(), stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL) as proc:
            commands.feed(proc, chunks(stream) if renamer is None else renamer.renamed(chunks(stream)))
            rc = proc.wait()
            if rc != 0:
                raise TargetError('loading the dump into the scratch database failed: %s'
                                  % (commands.stderr_tail(proc)[-1500:] or 'exit status %d' % rc),
                                  'no target database was touched')

    def _objects(self, database):
        """CREATE statements of the views, triggers, routines and events of ``database``,
        unqualified (read with ``database`` as the current one), in a safe creation order."""
        lit = quote_literal(database)
        statements = []
        views = [r[0] for r in self._sql("SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = %s" % lit,
                                         'listing views')]
        for kind, sql in (('FUNCTION', "SELECT ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %s "
                                       "AND ROUTINE_TYPE = 'FUNCTION'"),
                          ('PROCEDURE', "SELECT ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %s "
                                        "AND ROUTINE_TYPE = 'PROCEDURE'"),
                          ('TRIGGER', 'SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s'),
                          ('EVENT', 'SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %s')):
            for row in self._sql(sql % lit, 'listing %ss' % kind.lower()):
                shown = self._sql('SHOW CREATE %s %s' % (kind, quote_ident(row[0])), 'reading %s %s' % (kind.lower(), row[0]),
                                  database=database)[0]
                # columns: name, sql_mode, statement, ... (event: name, sql_mode, time_zone, statement)
                statement = shown[3] if kind == 'EVENT' else shown[2]
                statements.append((kind, row[0], shown[1], statement))
        for name in views:
            shown = self._sql('SHOW CREATE VIEW %s' % quote_ident(name), 'reading view %s' % name, database=database)[0]
            statements.append(('VIEW', name, None, shown[1]))
        return statements

    def _swap(self, scratch, database, mode):
        """One RENAME TABLE moves every table (old ones out, restored ones in), then the objects
        that cannot move are created again in the target."""
        lifeline.check()
        objects = self._objects(scratch)
        target = quote_ident(database)
        existed = self._exists(database)
        if existed and mode == 'create':
            raise TargetError('database %s appeared while restoring and mode is create' % database,
                              'it was left alone; the restored copy was dropped')
        previous = None
        renames = []
        drops = []
        if existed:
            previous = scratch_name(database, 'previous')
            self._sql('CREATE DATABASE %s' % quote_ident(previous), 'creating %s' % previous)
            renames += ['%s.%s TO %s.%s' % (target, quote_ident(t), quote_ident(previous), quote_ident(t))
                        for t in self._base_tables(database)]
            old_objects = self._objects(database)
            drops = ['DROP %s IF EXISTS %s' % (kind, quote_ident(name)) for kind, name, dummy, dummy2 in old_objects]
        else:  # with the scratch database's character set and collation
            charset = self._sql('SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA '
                                'WHERE SCHEMA_NAME = %s' % quote_literal(scratch), 'reading the character set')[0]
            self._sql('CREATE DATABASE %s CHARACTER SET %s COLLATE %s' % (target, charset[0], charset[1]),
                      'creating database %s' % database)
        renames += ['%s.%s TO %s.%s' % (quote_ident(scratch), quote_ident(t), target, quote_ident(t))
                    for t in self._base_tables(scratch)]
        # triggers block a move between databases ("Trigger in wrong schema"): drop them on both
        # sides first; they are created again right after the swap
        trigger_drops = ['DROP TRIGGER IF EXISTS %s' % quote_ident(name) for kind, name, dummy, dummy2 in objects
                         if kind == 'TRIGGER']
        if trigger_drops:
            self._sql('; '.join(trigger_drops), 'dropping triggers of the scratch database', database=scratch)
        if drops:
            self._sql('; '.join(drops), 'dropping the old views, triggers, routines and events', database=database)
        if renames:
            try:
                self._sql('RENAME TABLE %s' % ', '.join(renames), 'swapping the restored tables into place')
            except BackupError:
                if previous:  # one statement: no table moved; put the old objects back
                    self._create_objects(old_objects, database)
                    self._drop(previous)
                raise
        if objects:
            try:
                self._create_objects(objects, database)
            except SourceError as exc:
                raise TargetError('the tables of %s were restored, but creating its views, triggers, routines or events '
                                  'failed: %s' % (database, exc.message),
                                  'the old tables are kept in %s' % previous if previous else None)
        result = {'database': database, 'replaced': existed, 'objects': len(objects)}
        if previous and self.options.get('keep_previous'):
            result['previous'] = previous
        elif previous:
            self._drop(previous)
        return result

    def _create_objects(self, objects, database):
        script = ['DELIMITER ;;']
        for kind, name, sql_mode, statement in objects:
            if sql_mode is not None:
                script.append('SET SESSION sql_mode = %s;;' % quote_literal(sql_mode))
            script.append(statement + ';;')
        script.append('DELIMITER ;')
        self._sql(None, 'creating views, triggers, routines and events', database=database,
                  script='\n'.join(script) + '\n')

    def _mark_scratch(self, name):
        """Name the owner in the scratch database's comment (MariaDB 10.5+), so that a later run
        can tell a killed restore's database from a live one's. MySQL has no database comments:
        there a killed run's scratch database is reported by cleanup, not removed."""
        try:
            self._sql('ALTER DATABASE %s COMMENT %s' % (quote_ident(name), quote_literal(leases.comment())),
                      'marking the scratch database %s' % name)
        except BackupError:
            pass

    def sweep_scratch(self, sweep):
        """Scratch databases of killed restores of this database (of any, with databases)."""
        query = ('SELECT SCHEMA_NAME, %s FROM information_schema.SCHEMATA WHERE SCHEMA_NAME REGEXP '
                 + quote_literal(self.scratch_pattern()))
        try:
            rows = self._sql(query % 'SCHEMA_COMMENT', 'looking for scratch databases of killed restores')
        except SourceError:  # MySQL: no SCHEMA_COMMENT, so no owner to tell
            rows = self._sql(query % "''", 'looking for scratch databases of killed restores')
        return self.judge_databases(sweep, rows, '%s:%s' % (self.host, self.port), lambda name: self._sql(
            'DROP DATABASE IF EXISTS %s' % quote_ident(name), 'dropping %s' % name))

    def _drop(self, name):
        try:
            self._sql('DROP DATABASE IF EXISTS %s' % quote_ident(name), 'dropping %s' % name)
        except Exception:
            pass  # best effort: the original error matters more
