#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
module: backup_info
short_description: List the backups of a set in a repository
version_added: 0.1.0
description:
  - Lists the backups of O(name) in O(repository), newest first, complete or not, including
    legacy backups written by the seed scripts (C(<name>_YYYYMMDD_HHMMSS.sql.gz)).
  - A backup is complete when its manifest exists and its artifact has the recorded size;
    only complete backups count as RV(latest).
extends_documentation_fragment:
  - offsite.backup.attributes
  - offsite.backup.repository
  - offsite.backup.clock_skew
  - offsite.backup.signing
attributes:
  check_mode:
    description: Read-only; runs the same in check mode.
    support: full
  idempotent:
    description: Never changes anything.
    support: full
options:
  name:
    description: Backup set name.
    type: str
    required: true
  repository:
    required: true
  query:
    description:
      - A JMESPath expression applied to the list of backups, for example
        C([?complete] | [?size > `1000000`].id). RV(backups) then holds its result.
    type: str
  repository_check:
    description:
      - Also check the repository's own integrity (C(restic) repositories only), with
        C(restic check --read-data-subset) of this much pack data, re-read and decrypted, for example
        C(10%), C(1/5) (the first of five parts) or C(500M).
      - Damage fails the task with C(error=integrity).
    type: str
requirements:
  - jmespath (Python) for O(query)
seealso:
  - module: offsite.backup.upload
  - module: offsite.backup.retention
  - module: offsite.backup.restore
  - module: offsite.backup.verify
author:
  - offsite.backup maintainers (!UNKNOWN)
'''

EXAMPLES = r'''
- name: What is in the bucket?
  offsite.backup.backup_info:
    name: crm
    repository:
      type: s3
      bucket: crm-backups
      endpoint_url: https://s3.eu-central-003.backblazeb2.com
  register: info

- name: Fail when the newest backup is older than a day
  ansible.builtin.assert:
    that: (now(utc=true) - (info.latest.created | to_datetime('%Y-%m-%dT%H:%M:%SZ'))).total_seconds() < 86400

- name: Bytes stored per repository (what each provider bills)
  offsite.backup.backup_info:
    name: crm
    repository: "{{ item }}"
  loop: "{{ offsite_repositories }}"
  loop_control:
    label: "{{ item.type }}"
  register: stored

- name: Only the ids of incomplete backups
  offsite.backup.backup_info:
    name: crm
    repository: {type: local, path: /srv/backups}
    query: "[?!complete].id"

- name: List a restic repository and re-read a tenth of its data
  offsite.backup.backup_info:
    name: crm
    repository:
      type: restic
      restic_repository: sftp:backup@storagebox.example.com:/restic
      restic_password_file: /root/.restic-password
    repository_check: 10%
'''

RETURN = r'''
backups:
  description: Backups, newest first (or the result of O(query)).
  returned: always
  type: list
  sample:
    - id: crm_20261123T030000Z
      name: crm
      created: '2026-11-23T03:00:00Z'
      size: 48213377
      sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
      complete: true
      legacy: false
      proven: true
      suspect: false
      tags:
      - nightly
      stored_bytes: 48214102
  elements: dict
  contains:
    id:
      description: Backup id.
      type: str
    created:
      description: Creation time, UTC.
      type: str
    size:
      description: Artifact size in bytes.
      type: int
    sha256:
      description: Artifact sha256 (none for legacy backups).
      type: str
    complete:
      description: Whether the backup is complete (manifest present, sizes agree).
      type: bool
    legacy:
      description: Whether it is a seed-script backup without manifest.
      type: bool
    proven:
      description: Whether a restore with O(offsite.backup.restore#module:mark_proven=true) proved it restorable.
      type: bool
    signed:
      description: Whether the manifest carries a signature (checked only with trusted keys, see RV(backups[].authentic)).
      type: bool
    authentic:
      description:
        - With O(signing.trusted_keys) or O(signing.trusted_keys_file), for complete backups - whether
          a trusted key signed this manifest. Restore refuses a backup that is not.
      type: bool
    authenticity_problem:
      description: Why RV(backups[].authentic) is false (unsigned, bad signature, manifest of another backup).
      type: str
    tags:
      description: Tags from the manifest.
      type: list
      elements: str
    stored_bytes:
      description: Bytes the backup occupies in the repository (artifact, manifest, proven marker).
      type: int
    suspect:
      description: Whether it is dated more than O(clock_skew) in the future (never C(latest), never deleted automatically).
      type: bool
    problem:
      description: Why the backup is not complete.
      type: str
      returned: when not complete
latest:
  description: The newest complete backup that is not suspect, or null.
  returned: always
  type: dict
  sample:
    id: crm_20261123T030000Z
    created: '2026-11-23T03:00:00Z'
    size: 48213377
    complete: true
    legacy: false
    tags:
    - nightly
suspect:
  description:
    - Ids of the complete backups dated more than O(clock_skew) in the future, newest first; each also
      gives a warning. Check the clock of the machine that made them; delete them by hand if they are bogus.
  returned: always
  type: list
  sample: []
  elements: str
count:
  description: Number of complete backups.
  returned: always
  type: int
  sample: 30
total_size:
  description: Bytes stored by all listed artifacts.
  returned: always
  type: int
  sample: 1446401310
stored_bytes:
  description:
    - Bytes the set occupies in the repository, what the provider bills - artifacts and manifests of
      complete and of incomplete backups (with proven markers), and leftovers.
  returned: always
  type: dict
  contains:
    complete:
      description: Complete backups (artifacts and manifests).
      type: int
    incomplete:
      description: Incomplete or damaged backups.
      type: int
    leftovers:
      description: Partial uploads (C(.partial) objects) and proven markers of deleted backups.
      type: int
    total:
      description: All of the above.
      type: int
  sample: {complete: 1048576000, incomplete: 0, leftovers: 0, total: 1048576000}
recovery_window:
  description:
    - For a set of base backups (C(postgresql_physical)), the moments point-in-time recovery from this repository
      can reach, from its base backups and the archived WAL in C(.wal/<name>/) (docs/pitr.md, "The recovery window").
      Null for other sets, and when the repository holds no WAL of the set.
    - Only listings and a few small objects are read (the manifests of the segments a chain ends on, the timeline
      history files when not encrypted); M(offsite.backup.verify) reads every WAL manifest.
  returned: always
  type: dict
  sample:
    set: crm_cluster
    location: s3://crm-backups/prod/.wal/crm_cluster/
    earliest: '2026-11-29T02:04:11Z'
    earliest_backup: crm_cluster_20261129T020000Z
    latest: '2026-12-06T14:31:40Z'
    latest_segment: 000000020000000B0000003C
    newest_wal: 000000020000000B0000003C
    earliest_timestamp: 1796436251.0
    latest_timestamp: 1796999500.0
    continuous: true
    gaps: []
    segments: 1517
    files: 1519
    segment_size: 16777216
    segment_size_from: base backup crm_cluster_20261206T020000Z
    timelines:
      - {timeline: 1, segments: 1401, first: 000000010000000A000000C4, last: 000000010000000B00000020, history: false}
      - {timeline: 2, segments: 116, first: 000000020000000B00000020, last: 000000020000000B0000003C, history: true}
    notes: []
    problems: []
  contains:
    earliest:
      description:
        - The earliest reachable moment - C(source.stop_time) of the oldest complete, trusted base backup (it is
          consistent from then on). Null without one.
      type: str
    earliest_backup:
      description: That base backup's id.
      type: str
    latest:
      description:
        - The latest reachable moment - when C(wal-push) stored the newest segment of an unbroken chain from a base
          backup (the C(created) of its WAL manifest), or that base backup's C(stop_time) if later. Every transaction
          in that chain committed before this time; the last one can be up to C(archive_timeout) plus the archive
          lag earlier. A O(offsite.backup.restore#module:target.recovery_target_time) needs a commit after it in the
          archive, so the practical limit is the last commit before RV(recovery_window.latest).
      type: str
    latest_segment:
      description: The segment RV(recovery_window.latest) is the time of.
      type: str
    newest_wal:
      description: The same as RV(recovery_window.latest_segment) (the name the DR drill reports).
      type: str
    earliest_timestamp:
      description: RV(recovery_window.earliest) as Unix time.
      type: float
    latest_timestamp:
      description: RV(recovery_window.latest) as Unix time.
      type: float
    continuous:
      description: Whether recovery from the oldest base backup reaches RV(recovery_window.latest_segment) without a gap.
      type: bool
    gaps:
      description:
        - Missing segments on the paths recovery takes, each C({timeline, first_missing, last_missing, segments});
          C(last_missing) null when nothing is archived after C(first_missing). Recovery to C(latest) across a gap
          ends early, at the segment before it.
      type: list
      elements: dict
    timelines:
      description: Per timeline - C(timeline), C(segments), C(first), C(last), C(history) (its C(.history) file is archived).
      type: list
      elements: dict
    segments:
      description: Complete segments (manifest and payload) of all timelines.
      type: int
    files:
      description: WAL files with a manifest (segments, C(.partial), C(.backup) and C(.history) files).
      type: int
    stored_bytes:
      description: Bytes of the set's WAL directory.
      type: int
    segment_size:
      description: The WAL segment size the names are read with.
      type: int
    segment_size_from:
      description: Where it came from - the base backup recording it, or C(assumed) (16 MiB, PostgreSQL's default).
      type: str
    base_backups:
      description:
        - Per base backup, newest first - C(id), C(stop_time), C(start_segment), C(timeline), C(recovery_timeline)
          (the timeline recovery to C(latest) ends on), C(reaches_segment), C(reaches_time), C(newest_segment),
          C(first_missing), C(switches_inferred) (the timeline switches were inferred from names, as a history file is
          encrypted), C(problem).
      type: list
      elements: dict
    notes:
      description: What the figures rest on (an assumed segment size, switches inferred, no base backup).
      type: list
      elements: str
    problems:
      description: What M(offsite.backup.verify) would fail on that this listing already shows (gaps, unreadable history files).
      type: list
      elements: str
repository_check:
  description: The result of O(repository_check).
  returned: when O(repository_check) is set
  type: dict
  contains:
    ok:
      description: True (damage fails the task instead).
      type: bool
    read_data_subset:
      description: The subset of pack data that was read.
      type: str
    location:
      description: The repository checked (no credentials).
      type: str
  sample: {ok: true, read_data_subset: "10%", location: /srv/restic}
location:
  description: Where the set lives (no credentials).
  returned: always
  type: str
  sample: "s3://crm-backups/prod/crm"
repository:
  description: The repository's stable name (its O(repository.name), else its root location), as metrics label it.
  returned: always
  type: str
  sample: "offsite-eu"
executed_commands:
  description:
    - Commands the module ran, without secrets; C(restic) calls (C(snapshots), C(dump) of the manifests),
      C(rsync --list-only). Local, S3, SFTP and B2 repositories run no command (an empty list).
  returned: always
  type: list
  sample: []
  elements: str
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.offsite.backup.plugins.module_utils._common import clock_skew_spec, repository_spec, signing_spec, run
from ansible_collections.offsite.backup.plugins.module_utils._engine import operations


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type='str', required=True),
            repository=dict(type='dict', required=True, options=repository_spec()),
            query=dict(type='str'),
            repository_check=dict(type='str'),
            clock_skew=clock_skew_spec(),
            signing=dict(type='dict', options=signing_spec()),
        ),
        supports_check_mode=True,
    )
    p = module.params
    run(module, operations.info, name=p['name'], repository=p['repository'], query=p['query'],
        repository_check=p['repository_check'], clock_skew=p['clock_skew'],
        signing=p['signing'])


if __name__ == '__main__':
    main()
