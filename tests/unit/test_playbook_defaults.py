# Copyright (c) offsite.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The playbooks take their defaults from roles/playbook_defaults (below the inventory), never
from play vars, which beat group_vars and host_vars and so hid the inventory from AWX jobs.
tests/integration/test_awx_runner.py proves the effect through ansible-runner."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROLE = os.path.join(ROOT, 'roles', 'playbook_defaults')
PLAYBOOKS = sorted(f[:-4] for f in os.listdir(os.path.join(ROOT, 'playbooks')) if f.endswith('.yml'))


def load(*parts):
    with open(os.path.join(*parts)) as handle:
        return yaml.safe_load(handle)


@pytest.mark.parametrize('playbook', PLAYBOOKS)
def test_playbook_loads_its_defaults_and_has_no_play_vars(playbook):
    for play in load(ROOT, 'playbooks', playbook + '.yml'):
        assert 'vars' not in play and 'vars_files' not in play, \
            '%s: play vars beat the inventory; put defaults in roles/playbook_defaults/defaults/%s.yml' % (playbook, playbook)
        first = play['tasks'][0]['ansible.builtin.import_role']
        assert first == {'name': 'offsite.backup.playbook_defaults', 'defaults_from': playbook}


@pytest.mark.parametrize('playbook', PLAYBOOKS)
def test_argument_specs_document_every_default_with_its_value(playbook):
    defaults = load(ROLE, 'defaults', playbook + '.yml')
    options = load(ROLE, 'meta', 'argument_specs.yml')['argument_specs'][playbook]['options']
    assert set(options) == set(defaults)
    for name, value in defaults.items():
        if '{{' not in str(value):          # computed defaults (backup_now) say what they follow
            assert options[name]['default'] == value, name
