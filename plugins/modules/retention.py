#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
module: retention
short_description: Apply a restic-compatible retention policy to a backup set
version_added: 0.1.0
description:
  - Decides which backups of O(name) to keep with exactly the semantics of C(restic forget)
    (calendar buckets, ISO weeks Monday to Sunday, only buckets holding a backup count,
    durations measured back from the newest backup, C(-1) for unlimited, the oldest backup
    kept while a bucket rule has counts left as in restic 0.16+), and deletes the others
    from O(repository), the manifest first, then the artifact.
  - It never deletes the newest complete backup, nor a backup dated more than O(clock_skew) in the future
    (it warns instead), nor the newest backup a drill proved
    restorable (M(offsite.backup.restore) with O(offsite.backup.restore#module:mark_proven=true)). Incomplete leftovers (an artifact without
    manifest, a partial upload) older than O(incomplete_grace) hours are removed.
  - With O(backups) instead of O(repository) it only plans, touching nothing, so you can see
    what a policy keeps over a year.
  - Calendar buckets are taken in O(timezone), so an operator in Paris gets Paris days and weeks.
  - For a set of base backups (C(postgresql_physical)) it also deletes the archived WAL that no remaining base
    backup needs - everything before the oldest remaining base backup's start segment, and what lies on
    earlier timelines - oldest first, each file's manifest before its payload (RV(wal)). The newest base
    backup and all WAL from its start on always stay. With no remaining base backup that records where its WAL
    starts, all WAL is kept, with a warning. Nothing outside the set's C(.wal/<name>/) directory is touched.
    See docs/pitr.md.
extends_documentation_fragment:
  - offsite.backup.attributes
  - offsite.backup.repository
  - offsite.backup.clock_skew
  - offsite.backup.signing
attributes:
  check_mode:
    description: A dry run that returns what would be deleted.
    support: full
  idempotent:
    description: A second run with the same policy and backups deletes nothing.
    support: full
options:
  name:
    description: Backup set name. Required with O(repository).
    type: str
  backups:
    description:
      - Plan only, for these backups, each C({id, time, tags}); C(time) is ISO-8601.
      - When given, O(repository) is ignored (so C(module_defaults) may still set it) and
        nothing is deleted.
    type: list
    elements: dict
  policy:
    description: The retention policy; at least one rule, else everything is kept.
    type: dict
    required: true
    suboptions:
      keep_last:
        description: Keep the N newest backups (C(-1) all).
        type: int
      keep_hourly:
        description: Keep the newest backup of each of the last N hours that have one.
        type: int
      keep_daily:
        description: Keep the newest backup of each of the last N days that have one.
        type: int
      keep_weekly:
        description: Keep the newest backup of each of the last N ISO weeks that have one.
        type: int
      keep_monthly:
        description: Keep the newest backup of each of the last N months that have one.
        type: int
      keep_yearly:
        description: Keep the newest backup of each of the last N years that have one.
        type: int
      keep_within:
        description: Keep every backup within this duration of the newest one, restic syntax (C(1y2m3d4h)).
        type: str
      keep_within_hourly:
        description: Keep the newest backup per hour within this duration of the newest backup.
        type: str
      keep_within_daily:
        description: Keep the newest backup per day within this duration of the newest backup.
        type: str
      keep_within_weekly:
        description: Keep the newest backup per ISO week within this duration of the newest backup.
        type: str
      keep_within_monthly:
        description: Keep the newest backup per month within this duration of the newest backup.
        type: str
      keep_within_yearly:
        description: Keep the newest backup per year within this duration of the newest backup.
        type: str
      keep_tags:
        description:
          - Keep backups that have all tags of any entry; an entry is a list or a comma-separated string.
        type: list
        elements: raw
      keep_days:
        description:
          - The seed scripts' C(BACKUP_RETENTION_DAYS) - keep every backup at most N days old,
            measured from now (unlike O(policy.keep_within), measured from the newest backup).
        type: int
  timezone:
    description: IANA time zone for the calendar buckets, for example C(Europe/Paris).
    type: str
    default: UTC
  estimate_cost:
    description:
      - Also estimate what O(policy) costs - simulate O(estimate_cost.days) days of backups made every
        O(estimate_cost.interval_hours) hours, apply the policy after each one exactly as this module
        would, and price the bytes stored per month with each provider's prices. See C(docs/costs.md).
      - Pure computation; nothing is stored or deleted for it, and check mode gives the same estimate.
    type: dict
    suboptions:
      providers:
        description:
          - Names from the price table - C(s3_standard), C(s3_glacier), C(s3_deep_archive), C(b2), C(wasabi),
            C(hetzner_bx11), C(gcs_standard), C(gcs_nearline) - or added under O(estimate_cost.prices).
          - Default is every provider in the table.
        type: list
        elements: str
      backup_size:
        description:
          - Bytes of one backup as stored (compressed).
          - Default is the size of the newest complete backup in O(repository); required with O(backups).
        type: int
      interval_hours:
        description: Hours between two backups (C(24) daily, C(6) as in the restic runbook). Default C(24).
        type: int
      growth_percent_per_month:
        description: Monthly growth of the backup size in percent, compounded. Default C(0).
        type: float
      days:
        description: Days simulated (at most 3660). Default C(365).
        type: int
      start:
        description: Time of the first simulated backup (ISO-8601). Default the first day of next month at 03:00 UTC.
        type: str
      prices:
        description:
          - Price-table overrides, a mapping of provider names to mappings of fields; a new provider needs C(currency) and
            C(storage_per_gb_month) with C(gb_bytes), or C(flat_per_month) with C(capacity_bytes).
          - Fields are C(storage_per_gb_month), C(gb_bytes), C(min_storage_days), C(free_bytes), C(min_billed_bytes),
            C(flat_per_month), C(capacity_bytes), C(put_per_1000), C(retrieval_per_gb), C(egress_per_gb),
            C(currency), C(name), C(source), C(as_of).
        type: dict
  incomplete_grace:
    description: Hours (0 or more) after which incomplete leftovers are removed (so a running upload is never touched).
    type: int
    default: 24
  repository:
    description: The repository to apply the policy to. Ignored when O(backups) is given.
seealso:
  - module: offsite.backup.backup_info
  - module: offsite.backup.upload
  - module: offsite.backup.s3_bucket
author:
  - offsite.backup maintainers (!UNKNOWN)
'''

EXAMPLES = r'''
- name: The seed's production policy, in Paris days
  offsite.backup.retention:
    name: crm
    repository:
      type: s3
      bucket: crm-backups
    policy:
      keep_daily: 30
      keep_weekly: 12
      keep_monthly: 12
    timezone: Europe/Paris

- name: What a policy would keep (plan only, nothing is touched)
  offsite.backup.retention:
    backups:
      - {id: crm_a, time: "2026-10-31T03:00:00Z", tags: [monthly]}
      - {id: crm_b, time: "2026-11-22T03:00:00Z"}
      - {id: crm_c, time: "2026-11-23T03:00:00Z"}
    policy: {keep_last: 1, keep_tags: [monthly]}
  register: planned

- name: What the seed's production policy costs over a year, 20 GB a day, on B2 and S3
  offsite.backup.retention:
    backups: []
    policy: {keep_daily: 30, keep_weekly: 12, keep_monthly: 12}
    estimate_cost:
      backup_size: 20000000000
      providers: [b2, s3_standard, hetzner_bx11]
      prices:
        b2: {storage_per_gb_month: 0.006}
  register: estimate

- name: Show the steady-state monthly cost per provider
  ansible.builtin.debug:
    msg: "{{ estimate.cost.providers | dict2items | map(attribute='value.last_month') }}"

- name: Same as the seed's find -mtime +30 -delete
  offsite.backup.retention:
    name: crm
    repository: {type: local, path: /srv/backups}
    policy: {keep_days: 31}
'''

RETURN = r'''
keep:
  description: Ids of the backups kept, newest first.
  returned: always
  type: list
  sample: ["crm_20261123T030000Z", "crm_20261122T030000Z"]
  elements: str
remove:
  description: Ids of the backups the policy removes (removed, or would be in check mode and planning).
  returned: always
  type: list
  sample: ["crm_20261020T030000Z"]
  elements: str
reasons:
  description: For each kept id, why (restic's wording, e.g. C(daily snapshot), C(within 7d)).
  returned: always
  type: dict
  sample: {"crm_20261123T030000Z": ["last snapshot", "daily snapshot"], "crm_20261122T030000Z": ["daily snapshot"]}
removed:
  description: Ids actually deleted.
  returned: with repository
  type: list
  sample: ["crm_20261020T030000Z"]
  elements: str
incomplete:
  description: Keys of incomplete leftovers past the grace period.
  returned: with repository
  type: list
  sample: ["crm/crm_20261121T030000Z.dump.zst"]
  elements: str
incomplete_removed:
  description: Keys of incomplete leftovers actually deleted.
  returned: with repository
  type: list
  sample: ["crm/crm_20261121T030000Z.dump.zst"]
  elements: str
suspect:
  description:
    - Ids of the backups dated more than O(clock_skew) in the future. They are kept (never deleted
      automatically), take no part in the rules, and each gives a warning.
  returned: always
  type: list
  sample: []
  elements: str
kept_as_proven:
  description: Id of the newest proven backup, kept although the policy would have removed it.
  returned: with repository
  type: str
  sample: "crm_20261123T030000Z"
unauthentic:
  description:
    - With trusted signing keys, the complete backups no trusted key signed, each C({id, problem}). They
      take no part in the policy (never the newest, never in a slot) and are never deleted automatically.
  returned: with O(signing) and such backups
  type: list
  elements: dict
  sample: [{"id": "crm_20261206T030000Z", "problem": "backup crm_20261206T030000Z is not signed"}]
locked:
  description:
    - Backups the policy removes but that are still under S3 Object Lock, each C({id, retain_until}).
      Nothing of them was deleted (the lock is checked before the manifest is touched); a later run
      deletes them once the lock has expired.
  returned: with repository
  type: list
  sample: [{"id": "crm_20261019T030000Z", "retain_until": "2026-12-19T03:00:00Z"}]
  elements: dict
lock_extended:
  description:
    - Backups kept as monthly or yearly copies whose Object Lock was (or in check mode would be)
      extended to cover how long the policy keeps them, each C({id, retain_until}).
  returned: with repository
  type: list
  sample: [{"id": "crm_20261101T030000Z", "retain_until": "2027-11-01T03:00:00Z"}]
  elements: dict
incomplete_uploads_aborted:
  description:
    - Keys of S3 multipart uploads started before the grace period and never completed, now aborted
      (in check mode, the ones that would be).
  returned: with repository
  type: list
  sample: []
  elements: str
damaged:
  description: Backups whose manifest and artifact disagree; never deleted automatically.
  returned: with repository
  type: list
  sample: []
  elements: dict
wal:
  description:
    - The archived WAL of a set of base backups (C(postgresql_physical)), in C(.wal/<name>/) of the repository.
  returned: with repository, for a set with base backups
  type: dict
  sample: {"location": "s3://crm-backups/prod/.wal/crm_cluster/", "files": 412, "kept": 301,
           "remove": ["000000010000000A000000FE", "000000010000000A000000FF"],
           "removed": ["000000010000000A000000FE", "000000010000000A000000FF"], "removed_bytes": 4194304,
           "locked": [], "oldest_needed": "000000010000000B00000000", "anchor": "crm_cluster_20261129T020000Z"}
  contains:
    location:
      description: The set's WAL directory, without credentials.
      type: str
    files:
      description: WAL files found (segments, C(.partial), C(.backup) and C(.history) files).
      type: int
    kept:
      description: WAL files that stay.
      type: int
    remove:
      description: Names of the WAL files no remaining base backup needs, oldest first (in check mode, deleted by a real run).
      type: list
      elements: str
    removed:
      description: Names of the WAL files deleted (empty in check mode).
      type: list
      elements: str
    removed_bytes:
      description: Bytes of RV(wal.remove) (manifests, payloads, leftover uploads).
      type: int
    locked:
      description: WAL files to remove that are still under S3 Object Lock, each C({file, retain_until}); nothing of them was deleted.
      type: list
      elements: dict
    oldest_needed:
      description: The start segment of the oldest remaining base backup; null when all WAL is kept.
      type: str
    anchor:
      description: The id of that base backup.
      type: str
    note:
      description: Why all WAL was kept (no remaining base backup says where its WAL starts); also a warning.
      type: str
      returned: when all WAL is kept for that reason
cost:
  description: The estimate asked for with O(estimate_cost); amounts in each provider's currency.
  returned: when O(estimate_cost) is given
  type: dict
  sample: {"backups_made": 365, "backups_kept": 53, "stored_bytes_max": 2555322981, "months": 12}
  contains:
    backups_made:
      description: Backups simulated.
      type: int
    backups_kept:
      description: Backups the policy holds at the end.
      type: int
    stored_bytes_max:
      description: The most bytes stored on any day.
      type: int
    backup_size_from:
      description: Where the backup size came from (C(backup_size) or the newest backup's id).
      type: str
    months:
      description: Per calendar month - C(month), C(days), C(stored_bytes_average), C(stored_bytes_max), C(backups_kept).
      type: list
      elements: dict
    providers:
      description:
        - Per provider - C(name), C(currency), C(monthly) (per month C(storage), C(early_deletion), C(requests), C(total)),
          C(total) for the whole period, C(monthly_average), C(last_month), C(restore_newest) (retrieval and egress
          of the newest backup), C(warnings), C(source), C(as_of).
      type: dict
executed_commands:
  description:
    - Commands the module ran, without secrets; C(restic) calls (C(snapshots), C(dump) of the manifests, C(forget), C(prune)),
      C(rsync --list-only) and the deleting transfers. Local, S3, SFTP and B2 repositories run no command (an empty list).
  returned: always
  type: list
  sample: []
  elements: str
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.offsite.backup.plugins.module_utils._common import clock_skew_spec, repository_spec, signing_spec, run
from ansible_collections.offsite.backup.plugins.module_utils._engine import operations
from ansible_collections.offsite.backup.plugins.module_utils._engine.retention import COUNTS, DURATIONS


def main():
    policy = dict((key, dict(type='int')) for key in COUNTS)
    policy.update((key, dict(type='str')) for key in DURATIONS)
    policy['keep_tags'] = dict(type='list', elements='raw')
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type='str'),
            repository=dict(type='dict', options=repository_spec()),
            backups=dict(type='list', elements='dict'),
            policy=dict(type='dict', required=True, options=policy),
            timezone=dict(type='str', default='UTC'),
            incomplete_grace=dict(type='int', default=24),
            clock_skew=clock_skew_spec(),
            estimate_cost=dict(type='dict', options=dict(
                providers=dict(type='list', elements='str'),
                backup_size=dict(type='int'),
                interval_hours=dict(type='int'),
                growth_percent_per_month=dict(type='float'),
                days=dict(type='int'),
                start=dict(type='str'),
                prices=dict(type='dict'),
            )),
            signing=dict(type='dict', options=signing_spec()),
        ),
        required_one_of=[('repository', 'backups')],
        supports_check_mode=True,
    )
    p = module.params
    rules = dict((k, v) for k, v in p['policy'].items() if v is not None)
    if p['backups'] is not None:
        run(module, operations.plan, backups=p['backups'], policy=rules, timezone=p['timezone'],
            estimate=p['estimate_cost'], clock_skew=p['clock_skew'])
    if not p['name']:
        module.fail_json(msg='name is required to apply a policy to a repository')
    run(module, operations.retention, name=p['name'], repository=p['repository'], policy=rules,
        timezone=p['timezone'], incomplete_grace=p['incomplete_grace'], check_mode=module.check_mode,
        estimate=p['estimate_cost'], clock_skew=p['clock_skew'],
        signing=p['signing'])


if __name__ == '__main__':
    main()
