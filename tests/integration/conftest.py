"""Fixtures for integration tests: real services on loopback.

Session-scoped: ``moto`` (MotoS3), ``sshd`` (Sshd), ``scram_pg`` (ScramPostgres, started only
when a test asks for it). Function-scoped: ``bucket`` (fresh bucket name in moto),
``sample_db`` (fresh sample database on 127.0.0.1:5432, dropped afterwards),
``unique_db_name`` (a free database name, dropped afterwards if a test created it),
``db_names`` (a factory of free database names, all dropped afterwards with their leftovers),
``big_db`` (module-scoped: ~170 MB of table data, so that pg_dump runs for about a second),
``workdir`` (a temporary directory).
"""

from __future__ import annotations

import uuid

import pytest

from tests.harness import pg
from tests.harness.faults import seed
from tests.harness.services import MotoS3, ScramPostgres, Sshd


def pytest_report_header(config):
    return f"fault injection seed: {seed()} (OFFSITE_FAULT_SEED={seed()} chooses the same kill points)"


def _uid() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def moto():
    svc = MotoS3().start()
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture(scope="session")
def sshd():
    svc = Sshd(user="offsite-t1").start()
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture(scope="session")
def scram_pg():
    svc = ScramPostgres().start()
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture
def bucket(moto) -> str:
    """Name of a new, empty bucket in moto (unique per test)."""
    return moto.create_bucket(f"offsite-test-{_uid()}")


@pytest.fixture
def sample_db():
    """Name of a fresh sample database (see tests.harness.pg), dropped after the test."""
    name = f"offsite_sample_{_uid()}"
    pg.create_sample_database(name)
    try:
        yield name
    finally:
        pg.drop_database(name)


@pytest.fixture
def unique_db_name():
    """A database name that does not exist yet (e.g. a restore target); dropped afterwards."""
    name = f"offsite_restore_{_uid()}"
    try:
        yield name
    finally:
        pg.drop_database(name)


@pytest.fixture
def db_names():
    """A factory of database names that do not exist yet; all dropped after the test, with
    whatever a failed restore into them left behind (pg.leftover_databases)."""
    made = []

    def make(label: str = "restore") -> str:
        name = f"offsite_{label}_{_uid()}"
        made.append(name)
        return name

    try:
        yield make
    finally:
        for name in made:
            pg.drop_database(name)
            for leftover in pg.leftover_databases(name):
                pg.drop_database(leftover)


@pytest.fixture
def workdir(tmp_path):
    return tmp_path


@pytest.fixture(scope="module")
def big_db():
    """~170 MB of table data, so that pg_dump runs for about a second."""
    name = f"offsite_big_{_uid()}"
    pg.drop_database(name)
    pg.create_database(name)
    pg.run_sql(name, "CREATE UNLOGGED TABLE big AS SELECT i, repeat(md5(i::text), 4) AS t "
                     "FROM generate_series(1, 1000000) AS i;")
    try:
        yield name
    finally:
        pg.drop_database(name)
