# Copyright (c) offsite.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""scripts/test.sh runs the tests in pytest-xdist workers: the groups of tests that must not run
at the same time name tests that exist, and a parallel run that drops a test fails."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import re
import subprocess
import sys
import types

import pytest

from tests.integration.conftest import RUN_FIRST, SERIAL_GROUPS, serial_group, serial_group_of_id

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INTEGRATION = os.path.join(REPO_ROOT, 'tests', 'integration')
CHECK = os.path.join(REPO_ROOT, 'scripts', 'check_test_count.py')


@pytest.mark.parametrize('member', [m for members in SERIAL_GROUPS.values() for m in members])
def test_every_serial_group_member_exists(member):
    path, dummy, name = member.partition('::')
    with open(os.path.join(INTEGRATION, path)) as f:
        text = f.read()
    if name:
        assert re.search(r'^def %s\(' % re.escape(name), text, re.M), member


@pytest.mark.parametrize('member', RUN_FIRST)
def test_every_run_first_member_exists(member):
    test_every_serial_group_member_exists(member)


def test_serial_group_matches_modules_and_functions_with_all_parameters():
    def item(path, name, originalname=None):
        return types.SimpleNamespace(path=types.SimpleNamespace(name=path), name=name,
                                     originalname=originalname or name)

    assert serial_group(item('test_dr_drill.py', 'test_anything[x]', 'test_anything')) == 'drill-crm'
    assert serial_group(item('test_signed_manifests.py', 'test_dr_drill_checks_signatures')) == 'drill-crm'
    assert serial_group(item('test_signed_manifests.py', 'test_something_else')) is None
    assert serial_group(item('test_drill_command.py',
                             'test_role_schedules_the_drill_and_the_monitor_and_cron_runs_them[a]',
                             'test_role_schedules_the_drill_and_the_monitor_and_cron_runs_them')) == 'role-runner'
    assert serial_group(item('test_other.py', 'test_dr_drill_checks_signatures')) is None


def test_serial_group_of_a_test_id_as_the_scheduler_sees_it():
    assert serial_group_of_id('tests/integration/test_dr_drill.py::test_anything[x-1]') == 'drill-crm'
    assert serial_group_of_id('tests/integration/test_signed_manifests.py::test_dr_drill_checks_signatures') \
        == 'drill-crm'
    assert serial_group_of_id('tests/integration/test_signed_manifests.py::test_something_else') is None
    assert serial_group_of_id('tests/integration/test_roles.py::TestX::test_y') == 'role-runner'
    assert serial_group_of_id('tests/unit/test_other.py::test_dr_drill_checks_signatures') is None


SUITE = '''
import os
import pytest

@pytest.mark.parametrize("n", range(5))
def test_numbers(n):
    assert n < 5

@pytest.mark.xdist_group("together")
def test_grouped():
    pass

def test_skipped():
    pytest.skip("not here")

@pytest.mark.xfail(reason="expected")
def test_xfailed():
    assert False
'''

# a plugin that hides one test from the xdist workers only: what the count check is for
DROP_IN_WORKERS = '''
import os

def pytest_collection_modifyitems(config, items):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items[:] = [i for i in items if i.name != "test_grouped"]
'''


def run_checked(tmp_path):
    """scripts/test.sh's three steps on a small suite: collect, run with -n 2, check."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE='1')
    env.pop('PYTEST_XDIST_WORKER', None)
    env.pop('PYTEST_ADDOPTS', None)
    base = [sys.executable, '-m', 'pytest', '-p', 'no:cacheprovider', '-c', os.devnull, '--rootdir', str(tmp_path),
            str(tmp_path)]
    collected = subprocess.run(base[:3] + ['-p', 'no:xdist'] + base[3:] + ['--collect-only', '-q'],
                               cwd=str(tmp_path), env=env, capture_output=True, text=True, check=True).stdout
    (tmp_path / 'collected.txt').write_text(collected)
    junit = tmp_path / 'junit.xml'
    run = subprocess.run(base + ['-n', '2', '--dist', 'loadgroup', '--junitxml', str(junit)],
                         cwd=str(tmp_path), env=env, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    return subprocess.run([sys.executable, CHECK, str(tmp_path / 'collected.txt'), str(junit)],
                          capture_output=True, text=True, check=False)


def test_the_count_check_passes_when_every_collected_test_has_a_testcase(tmp_path):
    (tmp_path / 'collected.txt').write_text('t.py::a\nt.py::b[1]\nt.py::b[2]\n\n3 tests collected in 0.01s\n')
    (tmp_path / 'junit.xml').write_text('<testsuites><testsuite><testcase classname="t" name="a"/>'
                                        '<testcase classname="t" name="b[1]"><skipped/></testcase>'
                                        '<testcase classname="t" name="b[2]"><failure/></testcase>'
                                        '</testsuite></testsuites>')
    check = subprocess.run([sys.executable, CHECK, str(tmp_path / 'collected.txt'), str(tmp_path / 'junit.xml')],
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    assert '3 tests run, as many as collected' in check.stdout


def test_a_test_dropped_by_the_workers_fails_the_count_check(tmp_path):
    (tmp_path / 'test_suite.py').write_text(SUITE)
    (tmp_path / 'conftest.py').write_text(DROP_IN_WORKERS)
    check = run_checked(tmp_path)
    assert check.returncode == 1
    assert '8 tests collected, 7 reported by the parallel run' in check.stderr


# the integration conftest's hook, in a small suite whose files are named like members of
# SERIAL_GROUPS: each test writes down the pytest-xdist worker that ran it
GROUPS_FROM_THE_CONFTEST = '''
import sys
sys.path.insert(0, %r)
from tests.integration.conftest import pytest_collection_modifyitems, pytest_xdist_make_scheduler  # noqa: F401
'''
RECORDS_ITS_WORKER = '''
import os
import time
import pytest

@pytest.mark.parametrize("n", range(6))
def test_records_its_worker(n):
    time.sleep(0.2)
    with open(os.path.join(%r, "%s-%%d" %% n), "w") as f:
        f.write(os.environ["PYTEST_XDIST_WORKER"])
'''


def test_serial_groups_run_on_one_worker_under_xdist(tmp_path):
    """SERIAL_GROUPS are markers added at collection: pytest-xdist must see them."""
    suite, seen = tmp_path / 'suite', tmp_path / 'seen'
    suite.mkdir()
    seen.mkdir()
    (suite / 'conftest.py').write_text(GROUPS_FROM_THE_CONFTEST % REPO_ROOT)
    (suite / 'test_dr_drill.py').write_text(RECORDS_ITS_WORKER % (str(seen), 'drill'))
    (suite / 'test_elsewhere.py').write_text(RECORDS_ITS_WORKER % (str(seen), 'elsewhere'))
    check = run_checked(suite)
    assert check.returncode == 0, check.stderr
    workers = {p.name: p.read_text() for p in seen.iterdir()}
    assert len(workers) == 12
    assert len({w for name, w in workers.items() if name.startswith('drill-')}) == 1, workers
