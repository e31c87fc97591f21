"""PostgreSQL helpers for tests: sample databases and data fingerprints.

Everything runs ``psql`` / ``pg_dump`` subprocesses against the machine's PostgreSQL on
127.0.0.1:5432 as user ``postgres`` without a password (trust auth), unless ``env`` overrides
PG* variables (e.g. ``ScramPostgres.env()``).

    create_sample_database(name, scale=1.0)   # ~2 MB at scale 1
    drop_database(name)
    database_exists(name) -> bool
    fingerprint(name) -> {"schema": str, "tables": {schema.table: (rows, md5)}, "large_objects": [md5...]}
    run_sql(db, sql) -> stdout (unaligned, tuples only, "|" separated)
"""

from __future__ import annotations

import functools
import os
import re
import subprocess

PG_ENV = {"PGHOST": "127.0.0.1", "PGPORT": "5432", "PGUSER": "postgres"}

#: rows in public.users at scale 1
USERS_PER_SCALE = 200
#: bytes of incompressible data in public.attachments at scale 1 (32 rows x 64 KiB)
ATTACHMENT_BYTES_PER_SCALE = 2 * 1024 * 1024


def pg_env(env: dict | None = None) -> dict:
    """os.environ + defaults for 127.0.0.1:5432/postgres + ``env``; UTC and ISO dates."""
    e = dict(os.environ)
    e.pop("PGPASSWORD", None)
    e.pop("PGDATABASE", None)
    e.pop("PGSERVICE", None)
    e.update(PG_ENV)
    e.update({"PGTZ": "UTC", "PGDATESTYLE": "ISO", "PGCLIENTENCODING": "UTF8", "PGCONNECT_TIMEOUT": "10"})
    if env:
        e.update({k: str(v) for k, v in env.items()})
    return e


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@functools.lru_cache(maxsize=None)
def client(name: str) -> str:
    """The path of PostgreSQL's client program ``name`` as the engine runs it (commands.which:
    past Debian's pg_wrapper, whose Perl start cost ~25 ms of CPU on each of the ~3,000 calls
    of a test run), or the bare name where the collection is not importable."""
    try:
        from ansible_collections.offsite.backup.plugins.module_utils._engine.commands import which
    except ImportError:
        return name
    return which(name, "for the tests")


def run_sql(db: str, sql: str, env: dict | None = None, tuples_only: bool = True) -> str:
    """Run ``sql`` (any number of statements) in ``db``; returns psql's stdout.

    With ``tuples_only`` (default) the output is unaligned (``-At``): one row a line, columns
    separated by ``|``. Raises ``subprocess.CalledProcessError`` (with stderr) on any error.
    """
    cmd = [client("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db, "-f", "-"]
    if tuples_only:
        cmd[1:1] = ["-A", "-t"]
    r = subprocess.run(cmd, input=sql, env=pg_env(env), capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise subprocess.CalledProcessError(r.returncode, cmd, r.stdout, r.stderr)
    return r.stdout


def database_exists(name: str, env: dict | None = None) -> bool:
    out = run_sql("postgres", f"SELECT 1 FROM pg_database WHERE datname = {quote_literal(name)};", env)
    return out.strip() == "1"


def drop_database(name: str, env: dict | None = None) -> None:
    """Drop ``name`` if it exists, terminating its connections first."""
    run_sql("postgres", f"""
SELECT pg_terminate_backend(pid) FROM pg_stat_activity
 WHERE datname = {quote_literal(name)} AND pid <> pg_backend_pid();
DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE);
""", env)


def leftover_databases(name: str, env: dict | None = None) -> list[str]:
    """What a restore into ``name`` may leave behind: its scratch (``<name>_restore_*``) and
    previous (``<name>_previous_*``) databases, or any other ``<name>_*`` database."""
    out = run_sql("postgres", "SELECT datname FROM pg_database WHERE datname LIKE "
                  + quote_literal(name[:40] + "\\_%") + " ORDER BY 1;", env)
    return out.split()


def create_database(name: str, env: dict | None = None) -> None:
    """An empty UTF8 database (template0, C collation so ordering is the same everywhere)."""
    run_sql("postgres", f"CREATE DATABASE {quote_ident(name)} TEMPLATE template0 ENCODING 'UTF8' "
                        "LC_COLLATE 'C' LC_CTYPE 'C';", env)


_SAMPLE_SQL = r"""
CREATE SCHEMA crm;
CREATE SCHEMA billing;

-- people, with non-ASCII names and NULLs
CREATE TABLE public.users (
    id          integer PRIMARY KEY,
    email       text NOT NULL UNIQUE,
    display_name text NOT NULL,
    bio         text,
    created_at  timestamptz NOT NULL,
    active      boolean NOT NULL DEFAULT true
);
INSERT INTO public.users (id, email, display_name, bio, created_at, active)
SELECT i,
       'user' || i || '@example.org',
       (ARRAY['Élodie Lefèvre','François Müller','山田太郎','Zoë 🚀 Ørsted','Łukasz Żółć',
              'Ñandú García','Ærøskøbing Åse','김민준','Dvořák Antonín','naïve café'])[1 + i % 10]
           || ' #' || i,
       CASE WHEN i % 3 = 0 THEN NULL
            ELSE 'Bio ' || i || ': ' || repeat('€ déjà vu 日本語 ', 1 + i % 4) END,
       timestamptz '2024-01-01 00:00:00+00' + make_interval(hours => i * 7, secs => i % 60),
       i % 11 <> 0
FROM generate_series(1, :n_users) AS i;

CREATE TABLE crm.companies (
    id      bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name    text NOT NULL,
    country char(2),
    notes   text
);
INSERT INTO crm.companies (id, name, country, notes)
SELECT i,
       (ARRAY['Société Générale de Test','Müller & Söhne GmbH','株式会社テスト','Café ☕ Ltd',
              'Ödegaard AS'])[1 + i % 5] || ' ' || i,
       (ARRAY['FR','DE','JP',NULL,'NO'])[1 + i % 5],
       CASE WHEN i % 4 = 0 THEN NULL ELSE 'note « ' || i || ' »' END
FROM generate_series(1, :n_companies) AS i;
SELECT setval(pg_get_serial_sequence('crm.companies', 'id'), :n_companies);

CREATE TABLE crm.contacts (
    id         serial PRIMARY KEY,
    company_id bigint NOT NULL REFERENCES crm.companies (id) ON DELETE CASCADE,
    user_id    integer REFERENCES public.users (id),
    full_name  text NOT NULL,
    phone      text,
    tags       text[],
    extra      jsonb
);
CREATE INDEX contacts_company_idx ON crm.contacts (company_id);
INSERT INTO crm.contacts (company_id, user_id, full_name, phone, tags, extra)
SELECT 1 + i % :n_companies,
       CASE WHEN i % 5 = 0 THEN NULL ELSE 1 + i % :n_users END,
       'Contact ' || i || ' – Hélène',
       CASE WHEN i % 2 = 0 THEN '+33 1 23 45 ' || lpad((i % 100)::text, 2, '0') END,
       ARRAY['tag' || i % 3, 'étiquette'],
       jsonb_build_object('score', i % 17, 'vip', i % 7 = 0, 'note', 'ünïcødé ' || i)
FROM generate_series(1, :n_contacts) AS i;

CREATE SEQUENCE billing.invoice_number_seq START 1000;
CREATE TABLE billing.invoices (
    id         integer PRIMARY KEY,
    number     bigint NOT NULL UNIQUE DEFAULT nextval('billing.invoice_number_seq'),
    company_id bigint NOT NULL REFERENCES crm.companies (id),
    issued_on  date NOT NULL,
    amount     numeric(12,2) NOT NULL,
    paid_at    timestamptz,
    memo       text
);
INSERT INTO billing.invoices (id, company_id, issued_on, amount, paid_at, memo)
SELECT i,
       1 + i % :n_companies,
       date '2024-01-01' + i % 365,
       round((i * 37.13) % 10000, 2),
       CASE WHEN i % 3 = 0 THEN NULL
            ELSE timestamptz '2024-02-01 12:00:00+00' + make_interval(days => i % 200) END,
       CASE WHEN i % 6 = 0 THEN 'Facture n° ' || i || ' — merci 🙏' END
FROM generate_series(1, :n_invoices) AS i;

CREATE TABLE billing.invoice_lines (
    invoice_id integer NOT NULL REFERENCES billing.invoices (id) ON DELETE CASCADE,
    line_no    integer NOT NULL,
    description text NOT NULL,
    quantity   integer NOT NULL,
    unit_price numeric(10,2) NOT NULL,
    PRIMARY KEY (invoice_id, line_no)
);
INSERT INTO billing.invoice_lines
SELECT inv, ln, 'Prestation ' || ln || ' (œuvre)', 1 + (inv + ln) % 9, ((inv * ln) % 500) + 0.99
FROM generate_series(1, :n_invoices) AS inv, generate_series(1, 1 + inv % 4) AS ln;

CREATE VIEW billing.unpaid_invoices AS
SELECT i.id, i.number, c.name AS company, i.amount
FROM billing.invoices i JOIN crm.companies c ON c.id = i.company_id
WHERE i.paid_at IS NULL;

-- incompressible bytes: concatenated SHA-256 digests (deterministic, not compressible)
CREATE TABLE public.attachments (
    id       integer PRIMARY KEY,
    filename text NOT NULL,
    payload  bytea NOT NULL
);
ALTER TABLE public.attachments ALTER COLUMN payload SET STORAGE EXTERNAL;
INSERT INTO public.attachments (id, filename, payload)
SELECT r, 'pièce-jointe-' || r || '.bin',
       (SELECT string_agg(sha256(int8send(r::bigint * 1000003 + j)), ''::bytea ORDER BY j)
          FROM generate_series(1, :blocks_per_row) AS j)
FROM generate_series(1, :n_attachments) AS r;

-- large objects: a UTF-8 text and a block of random bytes
SELECT lo_from_bytea(0, convert_to('Grand objet: façade, 日本, 🚀' || repeat(' lorem ipsum', 200), 'UTF8'));
SELECT lo_from_bytea(0, (SELECT string_agg(sha256(int8send(-j::bigint)), ''::bytea ORDER BY j)
                           FROM generate_series(1, :lo_blocks) AS j));
ANALYZE;
"""


def create_sample_database(name: str, scale: float = 1.0, env: dict | None = None,
                           drop_existing: bool = True) -> dict:
    """Create ``name`` with realistic, deterministic data; returns the row counts used.

    Schemas public, crm, billing; foreign keys, an index, a view, a sequence, identity and
    serial columns, non-ASCII text (accents, emoji, CJK), NULLs, jsonb and arrays, a bytea
    table of incompressible bytes (``2 MiB * scale``) and two large objects. ``public.users``
    has ``200 * scale`` rows.
    """
    if drop_existing:
        drop_database(name, env)
    create_database(name, env)
    blocks_per_row = 2048  # 2048 * 32 bytes = 64 KiB per attachment row
    params = {
        "n_users": max(1, int(USERS_PER_SCALE * scale)),
        "n_companies": max(1, int(25 * scale)),
        "n_contacts": max(1, int(300 * scale)),
        "n_invoices": max(1, int(400 * scale)),
        "n_attachments": max(1, int(ATTACHMENT_BYTES_PER_SCALE * scale) // (blocks_per_row * 32)),
        "blocks_per_row": blocks_per_row,
        "lo_blocks": max(1, int(8192 * min(scale, 4.0))),  # 256 KiB at scale 1
    }
    sql = re.sub(r":(\w+)", lambda m: str(params[m.group(1)]) if m.group(1) in params else m.group(0),
                 _SAMPLE_SQL)
    run_sql(name, "BEGIN;\n" + sql + "\nCOMMIT;\n", env)
    return params


# --------------------------------------------------------------------------------------------
# fingerprints


_SCHEMA_DROP = re.compile(r"^(--|SET |SELECT pg_catalog\.set_config|\\restrict|\\unrestrict)")


def schema_text(name: str, env: dict | None = None) -> str:
    """``pg_dump --schema-only --no-owner`` with comments, SET lines and blank lines removed."""
    cmd = [client("pg_dump"), "--schema-only", "--no-owner", "--restrict-key=offsite", "-d", name]
    r = subprocess.run(cmd, env=pg_env(env), capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise subprocess.CalledProcessError(r.returncode, cmd, r.stdout, r.stderr)
    lines = [ln.rstrip() for ln in r.stdout.splitlines()]
    return "\n".join(ln for ln in lines if ln.strip() and not _SCHEMA_DROP.match(ln)) + "\n"


def list_tables(name: str, env: dict | None = None) -> list[tuple[str, str]]:
    out = run_sql(name, """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
  AND n.nspname NOT LIKE 'pg_temp%'
ORDER BY 1, 2;
""", env)
    return [tuple(line.split("|", 1)) for line in out.splitlines() if line]


def fingerprint(name: str, env: dict | None = None) -> dict:
    """A comparable summary of a database: equal fingerprints mean the same schema and data.

    ``schema``: normalised schema-only dump; ``tables``: {"schema.table": (row_count, md5 of
    all rows as text, sorted with C collation)}; ``large_objects``: sorted md5s of contents.
    """
    tables: dict[str, tuple[int, str]] = {}
    tlist = list_tables(name, env)
    if tlist:
        parts = []
        for schema, table in tlist:
            q = f"{quote_ident(schema)}.{quote_ident(table)}"
            label = quote_literal(f"{schema}.{table}")
            parts.append(
                f"SELECT {label}, count(*), "
                f"md5(coalesce(string_agg(x, E'\\n' ORDER BY x COLLATE \"C\"), '')) "
                f"FROM (SELECT t::text AS x FROM {q} t) s")
        out = run_sql(name, "\nUNION ALL\n".join(parts) + ";", env)
        for line in out.splitlines():
            if line:
                key, count, digest = line.rsplit("|", 2)
                tables[key] = (int(count), digest)
    los = run_sql(name, "SELECT md5(lo_get(oid)) FROM pg_largeobject_metadata ORDER BY 1;", env)
    return {
        "schema": schema_text(name, env),
        "tables": tables,
        "large_objects": sorted(line for line in los.splitlines() if line),
    }
