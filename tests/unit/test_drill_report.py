# Copyright (c) offsite.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Drill reports: verdicts, RPO objective, Markdown, metrics, and the HTML page's history."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import datetime

import pytest

from ansible_collections.offsite.backup.plugins.module_utils._engine import drill_report
from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import ConfigError

T0 = datetime.datetime(2026, 11, 23, 4, 0, tzinfo=datetime.timezone.utc)
T1 = T0 + datetime.timedelta(seconds=95)


def ok_set(**extra):
    result = {'name': 'crm', 'success': True, 'backup_id': 'crm_20261123T030000Z', 'repository': 's3://b/crm',
              'age_seconds': '3600', 'restore_seconds': 40.5, 'duration_seconds': 42.25,
              'checks': [{'name': 'users', 'ok': True, 'detail': 'answered 3'}]}
    result.update(extra)
    return result


def test_a_passing_drill():
    report = drill_report.build('drill', [ok_set()], T0, T1, host='drill1', rpo_seconds=86400)
    assert report['success'] is True and report['duration_seconds'] == 95
    assert report['sets'][0]['age_seconds'] == 3600.0 and report['sets'][0]['rpo_met'] is True
    md = drill_report.markdown(report)
    assert md.startswith('# DR drill PASSED') and '| crm | ok | crm_20261123T030000Z |' in md and '1/1' in md


def test_a_backup_older_than_its_objective_fails_the_set():
    report = drill_report.build('drill', [ok_set(rpo_seconds=1800)], T0, T1, rpo_seconds=86400)
    (crm,) = report['sets']
    assert crm['success'] is False and crm['rpo_met'] is False and report['success'] is False
    assert crm['error'] == 'backup is 60.0 min old, older than the RPO objective of 30.0 min'


def test_no_sets_is_no_success_and_bad_input_is_refused():
    assert drill_report.build('drill', [], T0, T1)['success'] is False
    with pytest.raises(ConfigError):
        drill_report.build('drill', [{'success': True}], T0, T1)
    with pytest.raises(ConfigError):
        drill_report.build('nap', [ok_set()], T0, T1)
    with pytest.raises(ConfigError):
        drill_report.build('drill', [ok_set(age_seconds='old')], T0, T1)


def test_metrics_in_prometheus_text_format():
    report = drill_report.build('drill', [ok_set(), ok_set(name='erp "x"', success=False, age_seconds=None)], T0, T1)
    text = drill_report.metrics(report)
    assert 'dr_drill_success{set="crm"} 1\n' in text and 'dr_drill_success{set="erp \\"x\\""} 0\n' in text
    assert 'dr_drill_duration_seconds{set="crm"} 42.25\n' in text
    assert 'dr_drill_backup_age_seconds{set="erp' not in text          # unknown age: no sample
    assert 'dr_drill_last_run_timestamp_seconds %d\n' % int(T1.timestamp()) in text


def test_files_are_written_and_the_page_carries_the_history(tmp_path):
    first = drill_report.build('drill', [ok_set()], T0, T1)
    drill_report.write(first, str(tmp_path))
    later = T0 + datetime.timedelta(days=7)
    second = drill_report.build('drill', [ok_set(name='</script><b>x')], later, later + datetime.timedelta(seconds=5))
    paths = drill_report.write(second, str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ['drill-20261123T040000Z.json', 'drill-20261123T040000Z.md', 'drill-20261123T040000Z.html',
         'drill-20261130T040000Z.json', 'drill-20261130T040000Z.md', 'drill-20261130T040000Z.html'])
    page = open(paths['html']).read()
    # both drills in both charts, from the JSON history; no script at all in the page
    assert page.count('data-points="2"') == 2 and '<script' not in page
    assert '<title>crm 2026-11-23 04:00: ' in page and '2026-11-30 04:00' in page
    assert '&lt;/script&gt;&lt;b&gt;x' in page and '</script><b>' not in page   # names are escaped


def test_check_mode_writes_nothing(tmp_path):
    report = drill_report.build('rebuild', [ok_set()], T0, T1)
    paths = drill_report.write(report, str(tmp_path / 'reports'), check_mode=True)
    assert paths['json'].endswith('rebuild-20261123T040000Z.json')
    assert not (tmp_path / 'reports').exists()


def test_a_recovery_slower_than_its_rto_objective_fails_the_set_and_is_marked():
    report = drill_report.build('drill', [ok_set(recovery_seconds=41.0), ok_set(name='erp', recovery_seconds=900)],
                                T0, T1, rpo_seconds=86400, rto_seconds=600)
    crm, erp = report['sets']
    assert crm['success'] is True and crm['rto_met'] is True and crm['rto_seconds'] == 600
    assert erp['success'] is False and erp['rto_met'] is False
    assert erp['error'] == 'recovery took 15.0 min, longer than the RTO objective of 10.0 min'
    assert report['success'] is False and report['recovery_seconds'] == 900 and report['rto_met'] is False
    md = drill_report.markdown(report)
    assert '| erp | FAILED |' in md and '15.0 min (objective 10.0 min, MISSED)' in md
    assert 'RTO (start of the restore to the target answering its checks): 15.0 min' in md
    text = drill_report.metrics(report)
    assert 'dr_drill_recovery_seconds{set="erp"} 900.0\n' in text and 'dr_drill_rto_seconds{set="erp"} 600.0\n' in text


def test_rebuild_has_one_rto_figure_the_whole_recovery():
    """The rebuild's RTO is start to the server answering its checks: one figure, judged once."""
    report = drill_report.build('rebuild', [ok_set(recovery_seconds=5.0)], T0, T1, rto_seconds=10,
                                recovery_seconds=18.6)
    assert report['recovery_seconds'] == 18.6 and report['rto_met'] is False and report['success'] is False
    assert report['sets'][0]['rto_met'] is None and report['sets'][0]['success'] is True
    assert 'the rebuild took 18.6 s to answer its checks' in report['error']
    md = drill_report.markdown(report)
    figures = [line for line in md.splitlines() if 'RTO' in line and 'objective of' not in line]
    assert len(figures) == 1  # one RTO figure; the sets say when they were ready, not "RTO"
    assert 'RTO (start of the restore to the target answering its checks): 18.6 s (objective 10.0 s, MISSED)' in md
    text = drill_report.metrics(report)
    assert 'dr_rebuild_recovery_seconds 18.6\n' in text and 'dr_rebuild_rto_seconds 10.0\n' in text
    assert 'dr_rebuild_recovery_seconds{' not in text


def test_an_objective_given_as_none_falls_back_to_the_default():
    report = drill_report.build('drill', [ok_set(rto_seconds=None, rpo_seconds='', recovery_seconds=1)], T0, T1,
                                rpo_seconds=86400, rto_seconds=60)
    assert report['sets'][0]['rto_seconds'] == 60 and report['sets'][0]['rpo_seconds'] == 86400
