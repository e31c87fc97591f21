"""Fixtures for integration tests: real services on loopback.

Session-scoped: ``moto`` (MotoS3), ``sshd`` (Sshd), ``scram_pg`` (ScramPostgres, started only
when a test asks for it), ``sample_template`` (the sample database, generated once per process).
Function-scoped: ``bucket`` (fresh bucket name in moto), ``sample_db`` (fresh sample database
on 127.0.0.1:5432, a copy of ``sample_template``, dropped afterwards),
``unique_db_name`` (a free database name, dropped afterwards if a test created it),
``db_names`` (a factory of free database names, all dropped afterwards with their leftovers),
``big_db`` (module-scoped: ~170 MB of table data, so that pg_dump runs for about a second),
``workdir`` (a temporary directory).

Under pytest-xdist (scripts/test.sh runs ``pytest -n N --dist loadgroup``) every worker has its
own services, names and ports; the few tests that share something else are put in one
``xdist_group`` (``SERIAL_GROUPS``), and run on one worker, one after the other.
"""

from __future__ import annotations

import uuid

import pytest

from tests.harness import pg
from tests.harness.faults import seed
from tests.harness.services import MotoS3, ScramPostgres, Sshd


#: xdist group -> the tests in it ("file.py" for a whole module, "file.py::test_name" for one test
#: with all its parameters). tests/unit/test_parallel_tests.py checks that each one exists.
SERIAL_GROUPS = {
    # playbooks/dr_drill.yml restores set "crm" into a scratch database crm_drill_<time>_<random>
    # on 127.0.0.1:5432, and test_dr_drill asserts that no crm/erp scratch database is left over:
    # it would see the scratch database of a drill running at the same time
    "drill-crm": (
        "test_dr_drill.py",
        "test_encryption_cycle.py::test_dr_drill_restores_an_encrypted_backup",
        "test_signed_manifests.py::test_dr_drill_checks_signatures",
    ),
    # the client role's virtualenv (tests.harness.rolehost.RUNNER_DIR): two role runs at once
    # would pip-install into the same one
    "role-runner": (
        "test_roles.py",
        "test_drill_command.py::test_role_schedules_the_drill_and_the_monitor_and_cron_runs_them",
        "test_wal_archiving.py::test_the_client_role_turns_archiving_on_and_a_second_run_changes_nothing",
    ),
    # not a conflict: both use the module-scoped restic_pool (about 100 `restic backup` runs, the
    # longest set-up of the suite), built once per worker; on one worker it is built once
    # the same for the module-scoped PostgreSQL clusters of the point-in-time tests (one with a
    # base backup, one archiving its WAL): built once, not once per worker that gets a test
    "pitr-clusters": (
        "test_pitr_base.py",
    ),
    # not a conflict: test_failures.py's module-scoped `failures` fixture runs most of its cases
    # as one playbook (~26 CPU s), once per worker that gets one of them
    "failures-batch": (
        "test_failures.py",
    ),
    "restic-pool": (
        "test_restic.py::test_our_retention_plan_agrees_with_restic_forget",
        "test_restic.py::test_generated_sets_and_policies_plan_as_restic_forget",
    ),
}


#: Tests that take minutes (pytest --durations), in the same notation: they start first, so that
#: no worker begins one while the others are running out of work. (pytest-xdist hands out the
#: SERIAL_GROUPS first, the largest first, then single tests in this order.)
RUN_FIRST = (
    "test_fault_injection.py",
)


def member_of(item, members) -> bool:
    """``item`` (a collected test) is one of ``members`` ("file.py" or "file.py::test_name")."""
    return _member(item.path.name, getattr(item, "originalname", item.name), members)


def _member(file_name: str, function: str, members) -> bool:
    for member in members:
        path, dummy, name = member.partition("::")
        if file_name == path and name in ("", function):
            return True
    return False


def serial_group(item) -> str | None:
    """The SERIAL_GROUPS group of a collected test, or None."""
    for group, members in SERIAL_GROUPS.items():
        if member_of(item, members):
            return group
    return None


def serial_group_of_id(nodeid: str) -> str | None:
    """The SERIAL_GROUPS group of a test id ("tests/integration/test_x.py::test_y[param]"), or None."""
    path, dummy, rest = nodeid.partition("::")
    function = rest.rpartition("::")[2].partition("[")[0]
    for group, members in SERIAL_GROUPS.items():
        if _member(path.rpartition("/")[2], function, members):
            return group
    return None


def pytest_collection_modifyitems(config, items):
    for item in items:
        group = serial_group(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
    # the long ones first, the unit tests (a minute in all) last: they fill the workers' tail
    items.sort(key=lambda item: (not member_of(item, RUN_FIRST), item.path.parent.name == "unit"))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """--dist loadgroup with SERIAL_GROUPS read from the test ids. pytest-xdist (3.8) would read
    the xdist_group markers from an "@group" suffix that its worker appends to each test id, by
    setting ``item._nodeid``, which pytest 9 no longer reads: every group was ignored, and the
    drills and role runs ran on any worker at the same time."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class SerialGroupScheduling(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return serial_group_of_id(nodeid) or super()._split_scope(nodeid)

    return SerialGroupScheduling(config, log)


def pytest_configure(config):
    # the fault-injection seed is chosen once, before pytest-xdist starts its workers: they
    # inherit it, and every test of the run draws from the seed that the header prints
    seed()


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


@pytest.fixture(scope="session")
def sample_template():
    """The sample database (tests.harness.pg), generated once per test process (per pytest-xdist
    worker) for ``sample_db`` to copy. Nobody connects to it, not even autovacuum
    (ALLOW_CONNECTIONS false): CREATE DATABASE ... TEMPLATE needs it unused."""
    name = f"offsite_sampletpl_{_uid()}"
    pg.create_sample_database(name)
    pg.run_sql("postgres", f"ALTER DATABASE {pg.quote_ident(name)} WITH ALLOW_CONNECTIONS false;")
    try:
        yield name
    finally:
        pg.drop_database(name)


@pytest.fixture
def sample_db(sample_template):
    """Name of a fresh sample database (see tests.harness.pg), dropped after the test: a copy of
    ``sample_template``, the same as generating it again at a third of the cost."""
    name = f"offsite_sample_{_uid()}"
    pg.run_sql("postgres", f"CREATE DATABASE {pg.quote_ident(name)} TEMPLATE {pg.quote_ident(sample_template)};")
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
