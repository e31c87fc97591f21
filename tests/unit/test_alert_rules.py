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
"""


def promtool():
    tool = shutil.which('promtool')
    if tool is None:
        pytest.fail('promtool is missing: scripts/bootstrap.sh installs the prometheus package')
    return tool


def test_rules_are_valid():
    r = subprocess.run([promtool(), 'check', 'rules', RULES], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'SUCCESS: 4 rules found' in r.stdout


def test_alerts_fire_when_they_should(tmp_path):
    tests = tmp_path / 'tests.yml'
    tests.write_text(TESTS % {'rules': RULES})
    r = subprocess.run([promtool(), 'test', 'rules', str(tests)], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
