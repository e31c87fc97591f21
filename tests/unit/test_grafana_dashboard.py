# Copyright (c) offsite.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Grafana dashboard (extensions/grafana): valid against Grafana's dashboard types, and every
query asks for series our exporters write."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import copy
import datetime
import json
import os
import re

import jsonschema
import pytest

from ansible_collections.offsite.backup.plugins.module_utils._engine import drill_report, freshness, monitoring
from ansible_collections.offsite.backup.plugins.module_utils._engine.jobs import SetResult

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DASHBOARD = os.path.join(ROOT, 'extensions', 'grafana', 'dashboards', 'offsite-backup.json')
# derived from @grafana/schema 13.2.3 (the file's $comment says how)
SCHEMA = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures', 'grafana-dashboard.schema.json')
PROMQL_WORDS = {'time', 'max', 'min', 'by', 'label_values', 'job', 'source', 'set', 'repository', 'sum', 'rate'}


def load(path):
    with open(path) as handle:
        return json.load(handle)


def exported_names():
    """Metric names our exporters really write: the runner (with the seed's names), the drill and
    rebuild reports, and offsite-backup monitor."""
    result = SetResult('db', 'postgresql')
    result.backup = {'id': 'db_20260101T000000Z', 'size': 1}
    result.uploads = [{'repository': 'nas', 'bytes': 1, 'duration': 1.0}]
    result.finish('succeeded')
    texts = [monitoring.render_metrics('crm', [result], seed_names=True)]
    started = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    one_set = {'name': 'db', 'success': True, 'age_seconds': 1, 'recovery_seconds': 2, 'duration_seconds': 3}
    for kind in drill_report.KINDS:
        report = drill_report.build(kind, [one_set], started, started, rpo_seconds=10, rto_seconds=10,
                                    recovery_seconds=2)
        texts.append(drill_report.metrics(report))
    names = set(re.findall(r'^([a-z_][a-z0-9_]*)[{ ]', '\n'.join(texts), re.M))
    return names | set(name for name, text in freshness.FAMILIES) | {freshness.LAST_RUN[0]}


def queries(dashboard):
    for panel in dashboard['panels']:
        for target in panel.get('targets', []):
            yield panel['title'], target['expr']
    for variable in dashboard['templating']['list']:
        if variable['type'] == 'query':
            yield variable['name'], variable['query']['query']


def test_dashboard_is_valid_against_grafanas_dashboard_types():
    jsonschema.validate(load(DASHBOARD), load(SCHEMA), cls=jsonschema.Draft202012Validator)


@pytest.mark.parametrize('damage', [
    lambda d: d.pop('schemaVersion'),
    lambda d: d['panels'][1]['gridPos'].update(w=30),
    lambda d: d['panels'][1].update(colour='blue'),
    lambda d: d['panels'][0].pop('collapsed'),
    lambda d: d['templating']['list'][1].update(type='dropdown'),
    lambda d: d['panels'][1]['fieldConfig']['defaults'].update(unit=3),
])
def test_the_schema_refuses_a_damaged_dashboard(damage):
    dashboard = copy.deepcopy(load(DASHBOARD))
    damage(dashboard)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(dashboard, load(SCHEMA), cls=jsonschema.Draft202012Validator)


def test_every_query_asks_for_series_we_export():
    known = exported_names()
    assert {'backup_upload_duration_seconds', 'dr_drill_recovery_seconds', 'backup_repository_backups'} <= known
    for where, expr in queries(load(DASHBOARD)):
        words = set(re.findall(r'(?<![$"\w])([a-z_][a-z0-9_]*)', re.sub(r'"[^"]*"', '""', expr)))
        unknown = words - known - PROMQL_WORDS
        assert not unknown, '%s asks for %s, which no exporter writes' % (where, ', '.join(sorted(unknown)))


def test_one_row_per_set_with_every_view_and_no_overlap():
    dashboard = load(DASHBOARD)
    (row,) = [p for p in dashboard['panels'] if p['type'] == 'row']
    assert row['repeat'] == 'set'
    titles = [p['title'] for p in dashboard['panels'] if p['type'] != 'row']
    for view in ('Last success', 'RPO over time', 'Backup size', 'Duration', 'Upload rate per repository',
                 'Drill results', 'RTO over time', 'Repository divergence'):
        assert any(t.startswith(view) for t in titles), view
    cells = set()
    for panel in dashboard['panels']:
        pos = panel['gridPos']
        assert pos['x'] + pos['w'] <= 24
        area = {(x, y) for x in range(pos['x'], pos['x'] + pos['w']) for y in range(pos['y'], pos['y'] + pos['h'])}
        assert not area & cells, panel['title']
        cells |= area
