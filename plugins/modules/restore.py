#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
module: restore
short_description: Restore a verified backup into a database or a directory
version_added: 0.1.0
description:
  - Downloads the chosen backup of O(name) from O(repository), checks its sha256 and size
    against the manifest before anything is written to the target, decompresses it and
    restores it, with C(pg_restore -j) for PostgreSQL custom-format dumps.
  - The restore goes into a scratch database (or directory) first. Only when it fully
    succeeded is it renamed into place; with O(target.mode=replace) the old database is swapped
    out in the same transaction. A failed restore leaves the target exactly as it was.
  - Seed-script backups (C(<name>_YYYYMMDD_HHMMSS.sql.gz)) are restorable too.
  - A restore stops, removes its scratch work and never swaps the target when it receives SIGTERM, SIGINT or SIGHUP,
    or when the process that started it (C(ansible-playbook), the SSH connection) ended; it fails with
    C(error=interrupted). Work left by a killed restore (SIGKILL) is removed by the next restore of the same target
    and by M(offsite.backup.cleanup).
  - Encrypted backups are decrypted while streaming with the key in O(encryption). A wrong key, a
    tampered or truncated ciphertext, a missing key, or an unencrypted backup where encryption is
    required fail with a clear error before the target is touched.
extends_documentation_fragment:
  - offsite.backup.attributes
  - offsite.backup.source.RESTORE
  - offsite.backup.repository
  - offsite.backup.encryption
  - offsite.backup.clock_skew
  - offsite.backup.signing
attributes:
  check_mode:
    description: Chooses the backup and checks the target (connection, existence for O(target.mode=create)); changes nothing.
    support: full
  idempotent:
    description: Every run restores again.
    support: none
options:
  name:
    description: Backup set name.
    type: str
    required: true
  repository:
    required: true
  backup:
    description:
      - C(latest), a backup id, or an ISO-8601 time (the newest complete backup at or before it).
      - C(latest) and a time skip damaged and incomplete backups and those dated more than O(clock_skew) in the
        future, with a warning naming each skipped newer backup and why; an id restores even a suspect backup.
    type: str
    default: latest
  mark_proven:
    description:
      - After a successful restore, write C(<id>.proven.json) beside the backup in the repository
        (what a DR drill does). Retention never deletes the newest proven backup of a set,
        whatever its policy says.
    type: bool
    default: false
  work_dir:
    description:
      - Directory for the downloaded, decompressed dump (C(pg_restore -j) needs a file).
        It must hold the uncompressed size; this is checked before anything is downloaded.
        Defaults to the system temporary directory.
    type: path
seealso:
  - module: offsite.backup.backup_info
  - module: offsite.backup.verify
  - module: offsite.backup.cleanup
author:
  - offsite.backup maintainers (!UNKNOWN)
'''

EXAMPLES = r'''
- name: Restore the newest backup into a new database (a restore test)
  offsite.backup.restore:
    name: crm
    repository:
      type: s3
      bucket: crm-backups
    target:
      type: postgresql
      database: crm_restore_test

- name: Disaster recovery - replace the production database with the backup of last night
  offsite.backup.restore:
    name: crm
    backup: "2026-11-23T03:30:00Z"
    repository: {type: sftp, host: u123456.your-storagebox.de, port: 23, user: u123456,
                 private_key: /root/.ssh/id_ed25519_backup, known_hosts: /etc/offsite-backup/known_hosts,
                 path: backups/crm}
    target:
      type: postgresql
      database: crm_db
      mode: replace
      terminate_connections: true

- name: Point-in-time recovery of a whole cluster into a new data directory on port 5433
  offsite.backup.restore:
    name: crm_cluster
    repository: {type: s3, bucket: crm-backups}
    encryption:
      identity_file: /root/dr/offsite-backup.agekey
    target:
      type: postgresql_physical
      data_directory: /var/lib/postgresql/15/restored
      port: 5433
      recovery_target_time: "2026-12-05T14:32:00Z"

- name: Restore an age-encrypted backup with the private key kept off the backed-up server
  offsite.backup.restore:
    name: crm
    repository: {type: s3, bucket: crm-backups}
    encryption:
      identity_file: /root/dr/offsite-backup.agekey
    target:
      type: postgresql
      database: crm_restore_test
'''

RETURN = r'''
backup:
  description: The backup that was restored (as in M(offsite.backup.backup_info)).
  returned: always
  type: dict
  sample: {"id": "crm_20261123T030000Z", "name": "crm", "created": "2026-11-23T03:00:00Z", "size": 48213377}
target:
  description: The target, described.
  returned: always
  type: str
  sample: PostgreSQL database crm_db on 127.0.0.1:5432
mode:
  description: The restore mode.
  returned: always
  type: str
  sample: "create"
age_seconds:
  description: Age of the backup when restored (the recovery point actually achieved).
  returned: always
  type: int
  sample: 25200
status:
  description: C(restored), or C(would restore) in check mode.
  returned: always
  type: str
  sample: "restored"
restored:
  description:
    - What was restored (database or path, whether it replaced one).
    - For a C(postgresql_physical) target (point-in-time recovery, docs/pitr.md) the V(data_directory) and V(port) of
      the restored server, its V(state) (V(running), V(paused) or V(stopped), after O(target.recovery_target_action)),
      V(reached_time) (the last transaction replayed) and V(reached_lsn), the V(timeline), and V(phases)
      (V(extract_seconds), V(recovery_seconds), V(promote_seconds), V(restart_seconds) or V(stop_seconds)); when
      paused, V(socket_directory) (its only socket) and V(resume) (the command that ends recovery there).
  returned: when restored
  type: dict
  sample: {"type": "postgresql", "database": "crm_db_test"}
duration:
  description: Seconds from start to restored.
  returned: when restored
  type: float
  sample: 312.4
download_seconds:
  description:
    - Seconds spent downloading, verifying and decompressing.
    - When loading follows the download (PostgreSQL, O(target.jobs) > 1), the download overlaps
      the loading and waits for loaders that fall more than 128 MiB behind, so this is the time
      until the checksum was proven, not the store's speed.
  returned: when restored
  type: float
  sample: 18.2
data_offsets:
  description:
    - For a PostgreSQL custom-format archive restored through a work file (O(target.jobs) > 1),
      what was done to its table of contents so that C(pg_restore -j) seeks to each table's data.
    - V(data_offsets=recorded) with the number of V(entries) with data and how many offsets were
      V(patched) (0 when pg_dump wrote them itself), or V(data_offsets=left as dumped) with the
      V(reason) (an archive version this collection does not know).
    - V(loaded_while_downloading) is the number of those entries whose data was loaded into the
      scratch database while the download was still running (the rest, with the indexes and
      constraints, follows once the checksum is proven); V(loaded_in_pieces) how many pieces the loaders
      loaded (a large table is cut about every 64 MiB of rows, so that several loaders COPY it at once);
      V(built_while_downloading) how many indexes and constraints were built as soon as their tables' data was
      loaded, rather than by the final C(pg_restore -j).
    - V(frames) is the number of zstd frames when the artifact was fetched frame by frame rather than in
      order (a repository with ranged reads, S3, and a dump not encrypted whose manifest records where its
      frames begin), over two connections, those with the most raw bytes per stored byte first, so that
      the tables slowest to load arrive first.
  returned: when restored from a PostgreSQL custom-format archive through a work file
  type: dict
  sample: {"data_offsets": "recorded", "entries": 12, "patched": 12, "loaded_while_downloading": 9,
           "loaded_in_pieces": 20, "built_while_downloading": 14, "frames": 7}
proven_marker:
  description: Where the proof of restorability was written.
  returned: when O(mark_proven=true) and restored
  type: str
  sample: "s3://crm-backups/prod/crm/crm_20261123T030000Z.proven.json"
cleaned:
  description:
    - What killed restores of this target left (scratch databases, work directories) and this run removed before
      it started, one line each; see M(offsite.backup.cleanup).
  returned: when restored
  type: list
  sample: []
  elements: str
restore_seconds:
  description: Seconds spent loading the target.
  returned: when restored
  type: float
  sample: 290.1
executed_commands:
  description: Commands the module ran, without secrets.
  returned: always
  type: list
  sample: ["pg_restore --exit-on-error --jobs=2 --dbname=crm_db_test_restore_1a2b3c"]
  elements: str
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.offsite.backup.plugins.module_utils._common import clock_skew_spec, encryption_spec, repository_spec, signing_spec, source_spec, run
from ansible_collections.offsite.backup.plugins.module_utils._engine import operations


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type='str', required=True),
            repository=dict(type='dict', required=True, options=repository_spec()),
            backup=dict(type='str', default='latest'),
            target=dict(type='dict', required=True, options=source_spec('restore')),
            work_dir=dict(type='path'),
            mark_proven=dict(type='bool', default=False),
            encryption=dict(type='dict', options=encryption_spec()),
            clock_skew=clock_skew_spec(),
            signing=dict(type='dict', options=signing_spec()),
        ),
        supports_check_mode=True,
    )
    p = module.params
    run(module, operations.restore, name=p['name'], repository=p['repository'], target=p['target'],
        backup=p['backup'], mode=p['target']['mode'], work_dir=p['work_dir'], mark_proven=p['mark_proven'],
        encryption=p['encryption'], check_mode=module.check_mode, clock_skew=p['clock_skew'],
        signing=p['signing'])


if __name__ == '__main__':
    main()
