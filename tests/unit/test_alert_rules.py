# Copyright (c) offsite.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The shipped Prometheus alert rules, checked and unit-tested with promtool (Debian's
prometheus package, installed by scripts/bootstrap.sh): each alert fires when it should and
stays quiet when it should not."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import shutil
import subprocess

import pytest
import yaml

from ansible_collections.offsite.backup.plugins.module_utils._engine import monitoring
from ansible_collections.offsite.backup.plugins.module_utils._engine.jobs import SetResult

RULES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                     'roles', 'client', 'files', 'offsite-backup.rules.yml')

# promtool's rule unit tests: series over time, then the alerts expected at given instants
TESTS = """
rule_files:
  - %(rules)s
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'backup_success{job="crm", source="crm_db", instance="srv1"}'
        values: '1 1 1 0x20'
      - series: 'backup_success{job="erp", source="erp_db", instance="srv1"}'
        values: '1x30'
      - series: 'backup_last_success_timestamp_seconds{job="crm", source="crm_db", instance="srv1"}'
        values: '0x30'
      - series: 'dr_drill_success{set="crm", instance="drill1"}'
        values: '1 0x5'
    alert_rule_test:
      - eval_time: 2m
        alertname: BackupFailed
        exp_alerts: []
      - eval_time: 10m
        alertname: BackupFailed
        exp_alerts:
          - exp_labels: {severity: critical, job: crm, source: crm_db, instance: srv1}
            exp_annotations:
              summary: "Backup crm/crm_db failed on srv1"
              description: "The last run failed; see /var/log/offsite-backup/crm.log on the host."
      - eval_time: 3m
        alertname: DrDrillFailed
        exp_alerts:
          - exp_labels: {severity: critical, set: crm, instance: drill1}
            exp_annotations:
              summary: "The DR drill could not prove that set crm restores"
              description: "See the drill report (playbooks/dr_drill.yml, offsite_dr_report_dir) on drill1."
  - interval: 1m
    input_series:
      - series: 'dr_drill_recovery_seconds{set="crm", instance="drill1"}'
        values: '600x10'
      - series: 'dr_drill_rto_seconds{set="crm", instance="drill1"}'
        values: '14400x10'
      - series: 'dr_drill_recovery_seconds{set="erp", instance="drill1"}'
        values: '18000x10'
      - series: 'dr_drill_rto_seconds{set="erp", instance="drill1"}'
        values: '14400x10'
      - series: 'dr_rebuild_recovery_seconds{instance="new1"}'
        values: '20000x10'
      - series: 'dr_rebuild_rto_seconds{instance="new1"}'
        values: '14400x10'
      - series: 'dr_drill_backup_age_seconds{set="crm", instance="drill1"}'
        values: '100000x10'
      - series: 'dr_drill_rpo_seconds{set="crm", instance="drill1"}'
        values: '93600x10'
    alert_rule_test:
      - eval_time: 5m
        alertname: DrRtoExceeded
        exp_alerts:
          - exp_labels: {severity: warning, set: erp, instance: drill1}
            exp_annotations:
              summary: "Recovery took 5h 0m 0s, longer than the RTO objective (set erp)"
              description: "A real recovery would miss its time objective: see the report on drill1."
          - exp_labels: {severity: warning, instance: new1}
            exp_annotations:
              summary: "Recovery took 5h 33m 20s, longer than the RTO objective"
              description: "A real recovery would miss its time objective: see the report on new1."
      - eval_time: 5m
        alertname: DrRpoExceeded
        exp_alerts:
          - exp_labels: {severity: warning, set: crm, instance: drill1}
            exp_annotations:
              summary: "The newest backup of set crm was 1d 3h 46m 40s old at the drill"
              description: "A real recovery would lose more data than the RPO objective allows."
  - interval: 1m
    input_series:
      - series: 'backup_last_success_timestamp_seconds{job="crm", source="crm_db", instance="srv1"}'
        values: '0x1800'
    alert_rule_test:
      - eval_time: 20h
        alertname: BackupStale
        exp_alerts: []
      - eval_time: 28h
        alertname: BackupStale
        exp_alerts:
          - exp_labels: {severity: warning, job: crm, source: crm_db, instance: srv1}
            exp_annotations:
              summary: "No successful backup of crm/crm_db for 1d 4h 0m 0s"
              description: "The schedule did not run or kept failing on srv1."
  - interval: 1m
    input_series:
      # archived every minute until 10m, then nothing more
      - series: 'backup_wal_last_archived_timestamp_seconds{job="crm", source="crm_cluster", repository="nas", instance="db1"}'
        values: '0+60x10 600x30'
      - series: 'backup_wal_archive_failures_total{job="crm", source="crm_cluster", repository="nas", instance="db1"}'
        values: '0x40'
      # two failures at 6m and 7m, then none
      - series: 'backup_wal_archive_failures_total{job="crm", source="crm_cluster", repository="usb", instance="db1"}'
        values: '0x5 1 2x33'
      # a repository whose first push failed: the series appears at 1
      - series: 'backup_wal_archive_failures_total{job="crm", source="crm_cluster", repository="b2", instance="db1"}'
        values: '_x10 1x30'
    alert_rule_test:
      - eval_time: 15m
        alertname: WalArchiveStale
        exp_alerts: []
      - eval_time: 16m
        alertname: WalArchiveStale
        exp_alerts:
          - exp_labels: {severity: warning, job: crm, source: crm_cluster, repository: nas, instance: db1}
            exp_annotations:
              summary: "No WAL of crm/crm_cluster reached nas for 6m 0s"
              description: "Point-in-time recovery from this repository ends that long ago. See pg_stat_archiver and the PostgreSQL log on db1."
      - eval_time: 5m
        alertname: WalArchiveFailing
        exp_alerts: []
      - eval_time: 8m
        alertname: WalArchiveFailing
        exp_alerts:
          - exp_labels: {severity: critical, job: crm, source: crm_cluster, repository: usb, instance: db1}
            exp_annotations:
              summary: "WAL archiving of crm/crm_cluster to usb is failing"
              description: "Below min_success PostgreSQL keeps its segments and pg_wal grows; see the PostgreSQL log on db1."
      - eval_time: 12m
        alertname: WalArchiveFailing
        exp_alerts:
          - exp_labels: {severity: critical, job: crm, source: crm_cluster, repository: usb, instance: db1}
            exp_annotations:
              summary: "WAL archiving of crm/crm_cluster to usb is failing"
              description: "Below min_success PostgreSQL keeps its segments and pg_wal grows; see the PostgreSQL log on db1."
          - exp_labels: {severity: critical, job: crm, source: crm_cluster, repository: b2, instance: db1}
            exp_annotations:
              summary: "WAL archiving of crm/crm_cluster to b2 is failing"
              description: "Below min_success PostgreSQL keeps its segments and pg_wal grows; see the PostgreSQL log on db1."
      - eval_time: 35m
        alertname: WalArchiveFailing
        exp_alerts: []
  # WalArchiveStale with wal-status: every cluster archived until 10m, then nothing more
  - interval: 1m
    input_series:
      - series: 'backup_wal_last_archived_timestamp_seconds{job="crm", source="crm_cluster", repository="nas", instance="idle"}'
        values: '0+60x10 600x30'
      - series: 'backup_wal_last_archived_timestamp_seconds{job="crm", source="crm_cluster", repository="nas", instance="busy"}'
        values: '0+60x10 600x30'
      - series: 'backup_wal_last_archived_timestamp_seconds{job="crm", source="crm_cluster", repository="nas", instance="failing"}'
        values: '0+60x10 600x30'
      - series: 'backup_wal_last_archived_timestamp_seconds{job="crm", source="crm_cluster", repository="nas", instance="blind"}'
        values: '0+60x10 600x30'
      # idle: wal-status reads every minute that no completed segment waits
      - series: 'backup_wal_status_timestamp_seconds{job="crm", source="crm_cluster", instance="idle"}'
        values: '0+60x40'
      - series: 'backup_wal_unarchived_segments{job="crm", source="crm_cluster", instance="idle"}'
        values: '0x40'
      # busy: written from 11m on, a segment switched and not archived (archive_command hangs)
      - series: 'backup_wal_status_timestamp_seconds{job="crm", source="crm_cluster", instance="busy"}'
        values: '0+60x40'
      - series: 'backup_wal_unarchived_segments{job="crm", source="crm_cluster", instance="busy"}'
        values: '0x10 1x30'
      # failing: every push fails from 11m on, segments pile up
      - series: 'backup_wal_status_timestamp_seconds{job="crm", source="crm_cluster", instance="failing"}'
        values: '0+60x40'
      - series: 'backup_wal_unarchived_segments{job="crm", source="crm_cluster", instance="failing"}'
        values: '0x10 1+1x30'
      - series: 'backup_wal_archive_failures_total{job="crm", source="crm_cluster", repository="nas", instance="failing"}'
        values: '0x10 1+1x30'
      # blind: wal-status stopped at 5m (its last reading: nothing waits): staleness alone decides
      - series: 'backup_wal_status_timestamp_seconds{job="crm", source="crm_cluster", instance="blind"}'
        values: '0+60x5 300x35'
      - series: 'backup_wal_unarchived_segments{job="crm", source="crm_cluster", instance="blind"}'
        values: '0x40'
    alert_rule_test:
      - eval_time: 15m
        alertname: WalArchiveStale
        exp_alerts: []
      - eval_time: 16m
        alertname: WalArchiveStale
        exp_alerts:
          - exp_labels: {severity: warning, job: crm, source: crm_cluster, repository: nas, instance: busy}
            exp_annotations:
              summary: "No WAL of crm/crm_cluster reached nas for 6m 0s"
              description: "Point-in-time recovery from this repository ends that long ago. See pg_stat_archiver and the PostgreSQL log on busy."
          - exp_labels: {severity: warning, job: crm, source: crm_cluster, repository: nas, instance: failing}
            exp_annotations:
              summary: "No WAL of crm/crm_cluster reached nas for 6m 0s"
              description: "Point-in-time recovery from this repository ends that long ago. See pg_stat_archiver and the PostgreSQL log on failing."
          - exp_labels: {severity: warning, job: crm, source: crm_cluster, repository: nas, instance: blind}
            exp_annotations:
              summary: "No WAL of crm/crm_cluster reached nas for 6m 0s"
              description: "Point-in-time recovery from this repository ends that long ago. See pg_stat_archiver and the PostgreSQL log on blind."
      - eval_time: 16m
        alertname: WalArchiveFailing
        exp_alerts:
          - exp_labels: {severity: critical, job: crm, source: crm_cluster, repository: nas, instance: failing}
            exp_annotations:
              summary: "WAL archiving of crm/crm_cluster to nas is failing"
              description: "Below min_success PostgreSQL keeps its segments and pg_wal grows; see the PostgreSQL log on failing."
      - eval_time: 40m
        alertname: WalArchiveStale
        exp_alerts:
          - exp_labels: {severity: warning, job: crm, source: crm_cluster, repository: nas, instance: busy}
            exp_annotations:
              summary: "No WAL of crm/crm_cluster reached nas for 30m 0s"
              description: "Point-in-time recovery from this repository ends that long ago. See pg_stat_archiver and the PostgreSQL log on busy."
          - exp_labels: {severity: warning, job: crm, source: crm_cluster, repository: nas, instance: failing}
            exp_annotations:
              summary: "No WAL of crm/crm_cluster reached nas for 30m 0s"
              description: "Point-in-time recovery from this repository ends that long ago. See pg_stat_archiver and the PostgreSQL log on failing."
          - exp_labels: {severity: warning, job: crm, source: crm_cluster, repository: nas, instance: blind}
            exp_annotations:
              summary: "No WAL of crm/crm_cluster reached nas for 30m 0s"
              description: "Point-in-time recovery from this repository ends that long ago. See pg_stat_archiver and the PostgreSQL log on blind."
"""


def promtool():
    tool = shutil.which('promtool')
    if tool is None:
        pytest.fail('promtool is missing: scripts/bootstrap.sh installs the prometheus package')
    return tool


def test_rules_are_valid():
    r = subprocess.run([promtool(), 'check', 'rules', RULES], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'SUCCESS: 15 rules found' in r.stdout


def test_alerts_fire_when_they_should(tmp_path):
    tests = tmp_path / 'tests.yml'
    tests.write_text(TESTS % {'rules': RULES})
    r = subprocess.run([promtool(), 'test', 'rules', str(tests)], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


SEED_RULES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures', 'seed001-prometheus-alerts.yml')


def _input_series(text):
    """promtool input series holding each sample of ``text`` (our exporter's output) steady."""
    from prometheus_client.parser import text_string_to_metric_families
    series = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ', '.join('%s="%s"' % item for item in sorted(sample.labels.items()))
            series.append({'series': '%s{%s}' % (sample.name, labels), 'values': '%sx720' % sample.value})
    return series


def _seed_rule_test(tmp_path, text, alerts):
    tests = {'rule_files': [SEED_RULES], 'evaluation_interval': '1m',
             'tests': [{'interval': '1m', 'input_series': _input_series(text), 'alert_rule_test': alerts}]}
    path = tmp_path / 'seed-tests.yml'
    path.write_text(yaml.safe_dump(tests))
    return subprocess.run([promtool(), 'test', 'rules', str(path)], capture_output=True, text=True, check=False)


def _run(name, ok, source_type='postgresql'):
    res = SetResult(name, source_type)
    res.backup = {'id': name + '_19700101T000000Z', 'size': 10737418240}
    res.finish('succeeded' if ok else 'failed', None if ok else Exception('boom'))
    return res


def test_seed_alert_rules_work_on_the_seed_names(tmp_path):
    """The seed's BackupFailed and BackupStale, unchanged, fire on the runner's metrics written
    with seed_names (a success at time 0, then no run: stale after 8 h plus its 1 h ``for``)."""
    text = monitoring.render_metrics('crm', [_run('postgres', True), _run('redis', False, 'redis')],
                                     now=0, seed_names=True)
    base = {'job': 'crm', 'source': 'postgres', 'source_type': 'postgresql'}
    r = _seed_rule_test(tmp_path, text, [
        {'eval_time': '30m', 'alertname': 'BackupFailed', 'exp_alerts': []},
        {'eval_time': '61m', 'alertname': 'BackupFailed', 'exp_alerts': [
            {'exp_labels': {'severity': 'critical', 'job': 'crm', 'source': 'redis', 'source_type': 'redis',
                            'mode': 'redis'},
             'exp_annotations': {'summary': 'Restic backup failed'}}]},
        {'eval_time': '8h50m', 'alertname': 'BackupStale', 'exp_alerts': []},
        {'eval_time': '9h05m', 'alertname': 'BackupStale', 'exp_alerts': [
            {'exp_labels': dict(base, severity='warning'),
             'exp_annotations': {'summary': 'No backup in last 8 hours'}}]},
    ])
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'backup_total_size_bytes{job="crm",source="postgres",source_type="postgresql"} 10737418240' in text


def test_seed_names_are_off_by_default(tmp_path):
    """Without seed_names the seed's BackupStale has no series to see: the silent loss that the
    option (and docs/migrating-from-seed-scripts.md) is there for."""
    text = monitoring.render_metrics('crm', [_run('postgres', True)], now=0)
    assert 'backup_timestamp' not in text and 'backup_total_size_bytes' not in text and 'mode=' not in text
    r = _seed_rule_test(tmp_path, text, [{'eval_time': '10h', 'alertname': 'BackupStale', 'exp_alerts': []}])
    assert r.returncode == 0, r.stdout + r.stderr
