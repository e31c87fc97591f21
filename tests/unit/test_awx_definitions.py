# Copyright (c) offsite.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The AWX definitions (extensions/awx, playbooks/awx_configure.yml) against the real awx.awx
modules' documented options, and every survey variable against the playbook that reads it."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import ast
import os
import re

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AWX = os.path.join(ROOT, '.cache', 'collections', 'ansible_collections', 'awx', 'awx', 'plugins', 'modules')
SURVEY_TYPES = {'text', 'textarea', 'password', 'integer', 'float', 'multiplechoice', 'multiselect'}


def load(*parts):
    with open(os.path.join(ROOT, *parts)) as handle:
        return yaml.safe_load(handle)


def awx_options(module):
    path = os.path.join(AWX, module + '.py')
    if not os.path.exists(path):
        pytest.fail('awx.awx is missing under .cache/collections: run scripts/bootstrap.sh')
    with open(path) as handle:
        tree = ast.parse(handle.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], 'id', None) == 'DOCUMENTATION':
            return set(yaml.safe_load(node.value.value)['options'])
    raise AssertionError('no DOCUMENTATION in %s' % path)


def awx_tasks():
    (play,) = load('playbooks', 'awx_configure.yml')
    return [(name, task[name]) for task in play['tasks'] for name in task if name.startswith('awx.awx.')]


def playbook_text(playbook):
    texts = [open(os.path.join(ROOT, 'playbooks', playbook)).read()]
    tasks = os.path.join(ROOT, 'playbooks', 'tasks')
    texts += [open(os.path.join(tasks, f)).read() for f in sorted(os.listdir(tasks))]
    return '\n'.join(texts)


def test_every_awx_task_uses_only_documented_options():
    tasks = awx_tasks()
    assert {name for name, dummy in tasks} == {'awx.awx.credential_type', 'awx.awx.project',
                                               'awx.awx.job_template', 'awx.awx.schedule'}
    for name, args in tasks:
        unknown = set(args) - awx_options(name.split('.')[-1])
        assert not unknown, '%s: %s are not options of the module' % (name, sorted(unknown))


def _fallbacks():
    """Every environment variable some repository or source type falls back to."""
    from ansible_collections.offsite.backup.plugins.module_utils._engine import schema
    from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories import REPOSITORY_CLASSES
    from ansible_collections.offsite.backup.plugins.module_utils._engine.sources import SOURCE_CLASSES
    return set(v for cls in REPOSITORY_CLASSES + SOURCE_CLASSES for o in schema.declared(cls).values() for v in o.env)


FALLBACKS = _fallbacks()


def test_the_credential_type_injects_what_the_modules_read():
    definitions = load('extensions', 'awx', 'job_templates.yml')
    ctype = definitions['offsite_awx_credential_type']
    fields = {f['id'] for f in ctype['inputs']['fields']}
    env = ctype['injectors']['env']
    for var in ('AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'B2_APPLICATION_KEY_ID', 'B2_APPLICATION_KEY', 'PGPASSWORD'):
        assert var in env
        # each env var names an existing input, and the modules have an env fallback for it
        assert re.search(r"\}\} (\w+) \{\{", env[var]).group(1) in fields
        assert var in FALLBACKS, var
    secret = {f['id'] for f in ctype['inputs']['fields'] if f.get('secret')}
    assert secret == {'aws_secret_access_key', 'b2_application_key', 'pgpassword', 'age_identity'}


@pytest.mark.parametrize('template', load('extensions', 'awx', 'job_templates.yml')['offsite_awx_job_templates'],
                         ids=lambda t: t['name'])
def test_each_template_runs_a_playbook_that_reads_its_survey(template):
    wrapper = load('extensions', 'awx', 'project', template['playbook'])
    target = wrapper[0]['ansible.builtin.import_playbook']
    assert target == 'offsite.backup.' + template['playbook'][:-4]
    text = playbook_text(template['playbook'])
    for question in template['survey']:
        assert question['type'] in SURVEY_TYPES
        assert re.search(r'\b%s\b' % question['variable'], text), \
            '%s: survey variable %s is not read by playbooks/%s' % (template['name'], question['variable'], template['playbook'])
        if question['type'] == 'multiplechoice':
            assert question.get('default') in question['choices']


def test_schedules_point_at_templates():
    definitions = load('extensions', 'awx', 'job_templates.yml')
    names = {t['name'] for t in definitions['offsite_awx_job_templates']}
    for schedule in definitions['offsite_awx_schedules']:
        assert schedule['template'] in names
        assert 'RRULE:FREQ=' in schedule['rrule']


def test_execution_environment_metadata_names_existing_files():
    meta = load('meta', 'execution-environment.yml')
    for kind in ('python', 'system'):
        assert os.path.exists(os.path.join(ROOT, meta['dependencies'][kind]))
