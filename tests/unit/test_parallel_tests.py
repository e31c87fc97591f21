# Copyright (c) offsite.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The tests may run in pytest-xdist workers: the groups of tests that must not run at the same
time name tests that exist."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import re
import types

import pytest

from tests.integration.conftest import SERIAL_GROUPS, serial_group

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INTEGRATION = os.path.join(REPO_ROOT, 'tests', 'integration')


@pytest.mark.parametrize('member', [m for members in SERIAL_GROUPS.values() for m in members])
def test_every_serial_group_member_exists(member):
    path, dummy, name = member.partition('::')
    with open(os.path.join(INTEGRATION, path)) as f:
        text = f.read()
    if name:
        assert re.search(r'^def %s\(' % re.escape(name), text, re.M), member


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

