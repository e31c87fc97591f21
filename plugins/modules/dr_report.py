#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
module: dr_report
short_description: Write the report of a DR drill or rebuild, with its history chart and metrics
version_added: 0.1.0
description:
  - Turns the per-set outcomes of C(playbooks/dr_drill.yml) or C(playbooks/dr_rebuild.yml) into a
    report kept in O(report_dir) as JSON (the record), Markdown and a self-contained HTML page that
    charts recovery time and backup age, with their objectives, over the past reports of the same O(kind).
  - Judges each set against its recovery point objective (RPO, the age of the backup restored) and
    its recovery time objective (RTO). A backup older than the RPO objective, or a recovery slower
    than the RTO objective, fails the set.
  - RTO has one definition, the seconds from the start of the restore to the target answering its
    checks (C(recovery_seconds)). A drill measures it per set. A rebuild measures it once, from
    its start to the server answering every check (O(recovery_seconds)).
  - Returns the report in Prometheus text format (C(dr_drill_success), C(dr_drill_duration_seconds),
    C(dr_drill_backup_age_seconds)) for a Pushgateway.
  - It never fails because a set failed. The playbook decides, after it has alerted.
attributes:
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
  check_mode:
    description: Builds the report and returns it without writing files.
    support: full
  idempotent:
    description: Every run writes a new report.
    support: none
options:
  kind:
    description: What is reported.
    type: str
    choices: [drill, rebuild]
    default: drill
  results:
    description:
      - One entry per backup set, with keys C(name), C(success), C(backup_id), C(repository),
        C(skipped_repositories), C(age_seconds), C(restore_seconds), C(recovery_seconds) (start of the
        restore to the checks answered), C(duration_seconds), C(checks) (a list of C(name), C(ok),
        C(query), C(expected), C(got), C(detail)), C(error), and optionally C(rpo_seconds) and C(rto_seconds).
    type: list
    elements: dict
    required: true
  started:
    description: When the drill or rebuild started (ISO-8601, UTC).
    type: str
    required: true
  finished:
    description: When it finished (ISO-8601). Defaults to now.
    type: str
  host:
    description: The host the report is about.
    type: str
  rpo_seconds:
    description: Recovery point objective for sets that do not set their own.
    type: int
  rto_seconds:
    description:
      - Recovery time objective. For a drill, of each set that does not set its own; for a rebuild,
        of the whole rebuild (O(recovery_seconds)).
    type: int
  recovery_seconds:
    description:
      - The RTO achieved by the whole recovery (a rebuild, start to the server answering its checks).
        Defaults to the longest set's C(recovery_seconds).
    type: float
  steps:
    description: Timed steps (C(name), C(seconds)) shown in the report.
    type: list
    elements: dict
  report_dir:
    description: Directory that keeps the reports (the history of the chart).
    type: path
    required: true
seealso:
  - module: offsite.backup.restore
  - module: offsite.backup.verify
  - module: offsite.backup.backup_info
author:
  - offsite.backup maintainers (!UNKNOWN)
'''

EXAMPLES = r'''
- name: Write the drill report
  offsite.backup.dr_report:
    kind: drill
    started: "{{ drill_started }}"
    results: "{{ drill_results }}"
    rpo_seconds: 86400
    rto_seconds: 14400
    report_dir: /var/lib/offsite-backup/drills
  register: report
'''

RETURN = r'''
report:
  description: The report (as written to the JSON file).
  returned: always
  type: dict
  sample:
    kind: drill
    success: true
    sets:
    - name: crm
      success: true
      age_seconds: 25200.0
      recovery_seconds: 312.4
      checks: []
success:
  description: Whether every set was restored, passed its checks and met its RPO and RTO objectives.
  returned: always
  type: bool
  sample: true
paths:
  description: Paths of the C(json), C(markdown) and C(html) files.
  returned: always
  type: dict
  sample:
    markdown: /var/lib/offsite-dr/reports/drill-20261123T080000Z.md
    json: /var/lib/offsite-dr/reports/drill-20261123T080000Z.json
    html: /var/lib/offsite-dr/reports/drill-20261123T080000Z.html
markdown:
  description: The Markdown report.
  returned: always
  type: str
  sample: "# DR drill 2026-11-23T08:00:00Z: passed\n..."
metrics:
  description: The report in Prometheus text format.
  returned: always
  type: str
  sample: "dr_drill_success{set=\"crm\"} 1\n"
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.offsite.backup.plugins.module_utils._engine import drill_report
from ansible_collections.offsite.backup.plugins.module_utils._engine import manifest as mf
from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import BackupError


def main():
    module = AnsibleModule(
        argument_spec=dict(
            kind=dict(type='str', choices=list(drill_report.KINDS), default='drill'),
            results=dict(type='list', elements='dict', required=True),
            started=dict(type='str', required=True),
            finished=dict(type='str'),
            host=dict(type='str'),
            rpo_seconds=dict(type='int'),
            rto_seconds=dict(type='int'),
            recovery_seconds=dict(type='float'),
            steps=dict(type='list', elements='dict'),
            report_dir=dict(type='path', required=True),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        started = mf.parse_time(p['started'])
        finished = mf.parse_time(p['finished']) if p['finished'] else mf.utcnow()
        report = drill_report.build(p['kind'], p['results'], started, finished, host=p['host'],
                                    rpo_seconds=p['rpo_seconds'], steps=p['steps'], rto_seconds=p['rto_seconds'],
                                    recovery_seconds=p['recovery_seconds'])
        paths = drill_report.write(report, p['report_dir'], check_mode=module.check_mode)
    except BackupError as exc:
        module.fail_json(msg=str(exc), error=exc.kind)
    except OSError as exc:
        module.fail_json(msg='cannot write the report in %s: %s' % (p['report_dir'], exc), error='config')
    module.exit_json(changed=not module.check_mode, report=report, success=report['success'], paths=paths,
                     markdown=drill_report.markdown(report), metrics=drill_report.metrics(report))


if __name__ == '__main__':
    main()
