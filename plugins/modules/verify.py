#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
module: verify
short_description: Prove that the offsite copies of a backup set exist, are intact and can be restored
version_added: 0.1.0
description:
  - For each repository, checks that every manifest of backup set O(name) parses and that its
    artifact exists with the recorded size. A damaged backup (manifest without artifact, wrong
    size, unreadable manifest) is a failure; an artifact without manifest is an upload in flight
    and only reported.
  - With O(read_data), downloads a sample of the backups (the newest always) and checks size and
    sha256. With the private key in O(encryption), it also decrypts and decompresses them to the
    end and validates the dump with the tool that restores it (C(pg_restore --list) for
    PostgreSQL custom dumps, C(tar -t) for file archives, the header of a Redis RDB file).
    Without a key, encrypted backups are checked as ciphertext (size and sha256) only.
  - With O(max_age), a set whose newest complete backup is older is a failure (a stale backup).
  - With several repositories, they must hold the same backups with the same checksums; a copy
    missing or different on one provider is a failure. Backups older than the oldest one some
    repository holds are not compared, since retention may keep more in one place.
  - For a set of base backups (C(postgresql_physical)), the archived WAL too - every WAL manifest is read and must
    be well-formed with its payload of the recorded size, and from each complete base backup's start segment to the
    newest archived segment, across timeline switches (following the C(.history) files, read with the key in
    O(encryption) when they are encrypted), no segment may be missing. A gap is a failure naming the first missing
    segment and the repository; recovery to C(latest) across it would end early without an error. With trusted keys
    in O(signing), every WAL manifest must be signed by one of them, as C(offsite-backup wal-fetch) requires; an
    unsigned, wrongly signed or changed one is a failure naming the file (C(error=integrity)), and counts as missing.
    See docs/pitr.md.
  - A repository type with its own integrity check (restic) has it run too.
  - Fails when any check failed, with every result in RV(repositories) and RV(failures).
extends_documentation_fragment:
  - offsite.backup.attributes
  - offsite.backup.repository
  - offsite.backup.repository.REPOSITORIES
  - offsite.backup.encryption
  - offsite.backup.clock_skew
  - offsite.backup.signing
attributes:
  check_mode:
    description: Verifying only reads; check mode runs the same checks.
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
    description:
      - A single repository, used when O(repositories) is not given; typically set once for
        a play with C(module_defaults) and C(group/offsite.backup.all).
  repositories:
    description:
      - The repositories to verify, each a dict with a O(repositories[].type). Each is checked
        even when another fails, and they are compared with each other.
      - One of O(repositories) and O(repository) is required; O(repositories) wins when both are set.
  read_data:
    description:
      - Which backups to download and read to the end. A percentage such as C(10%) (of the
        complete backups of each repository, rounded up), a count such as C(3), or C(all).
      - The newest backup is always part of the sample; the others are drawn at random, so
        regular runs cover the whole set over time.
      - Not set, nothing is downloaded (only listings and manifests are read).
    type: str
  max_age:
    description:
      - The newest complete backup of each repository must be younger than this, for example
        C(26h) for a nightly backup, C(8d) for a weekly one. Units are C(s), C(m), C(h), C(d), C(w).
    type: str
requirements:
  - C(pg_restore) and GNU C(tar) to validate PostgreSQL and file backups; C(age) or C(gpg) to decrypt
seealso:
  - module: offsite.backup.backup_info
  - module: offsite.backup.restore
  - module: offsite.backup.dr_report
author:
  - offsite.backup maintainers (!UNKNOWN)
'''

EXAMPLES = r'''
- name: Weekly proof that both offsite copies are complete, identical and restorable
  offsite.backup.verify:
    name: crm
    repositories:
      - {type: s3, bucket: crm-backups, prefix: prod}
      - {type: sftp, host: u123456.your-storagebox.de, port: 23, user: u123456, path: backups,
         private_key: /root/.ssh/id_ed25519_backup, known_hosts: /etc/offsite-backup/known_hosts}
    read_data: 10%
    max_age: 26h
    encryption:
      identity_file: /root/dr/offsite-backup.agekey
  register: verified

- name: Daily, cheap - listings and sizes only, and not older than a day
  offsite.backup.verify:
    name: crm
    repository: {type: s3, bucket: crm-backups, prefix: prod}
    max_age: 26h
'''

RETURN = r'''
ok:
  description: Whether every check passed (the task fails otherwise).
  returned: always
  type: bool
  sample: true
failures:
  description: One line per failed check, naming the repository and the backup.
  returned: always
  type: list
  elements: str
  sample:
    - 's3://crm-backups/prod/crm at https://s3.amazonaws.com: the newest backup crm_20261120T030000Z is 3.1d
      old, more than max_age 26.0h'
checked:
  description: Number of backups listed, over all repositories.
  returned: always
  type: int
  sample: 30
read:
  description: Number of backups downloaded and read, over all repositories.
  returned: always
  type: int
  sample: 3
consistent:
  description: With several repositories, whether they hold the same backups with the same checksums.
  returned: when several repositories are given
  type: bool
  sample: true
repositories:
  description: Per repository, in the order given.
  returned: always
  type: list
  sample:
    - type: s3
      location: s3://crm-backups/prod/crm
      newest: crm_20261123T030000Z
      backups:
      - id: crm_20261123T030000Z
        status: ok
        read: true
  elements: dict
  contains:
    type:
      description: Repository type.
      type: str
    location:
      description: Where the set lives, without credentials.
      type: str
    newest:
      description: The newest complete backup (id, created, age_seconds).
      type: dict
    error:
      description: Why the repository could not be checked at all.
      type: str
      returned: on failure
    repository_check:
      description: The result of the repository's own check (restic).
      type: dict
      returned: when the repository type has one
    wal:
      description:
        - For a set of base backups, its recovery window as M(offsite.backup.backup_info) returns it
          (RV(offsite.backup.backup_info#module:recovery_window)), from every manifest read, plus C(damaged) (the WAL
          files whose manifest is unreadable or whose payload is missing or of another size, or that are not
          authentic) and C(unauthentic) (those of them whose signature is missing or does not verify with a
          trusted key).
      type: dict
      returned: for a set with base backups
    backups:
      description: Every backup found, newest first.
      type: list
      elements: dict
      contains:
        id:
          description: Backup id.
          type: str
        status:
          description:
            - C(ok), C(damaged) (manifest without a matching artifact), C(incomplete) (no manifest yet), C(failed)
              (a read check failed) or C(suspect) (dated more than O(clock_skew) in the future; a failure).
          type: str
        read:
          description: Whether it was downloaded and read.
          type: bool
        decrypted:
          description: Whether it was decrypted while read.
          type: bool
        validated:
          description: What validated the dump, for example C(pg_restore --list).
          type: str
        error:
          description: What is wrong with it.
          type: str
executed_commands:
  description:
    - Commands the module ran, without secrets; the archive checks (C(pg_restore --list), C(tar -t)), C(gpg) or
      C(age) decryption, and the C(restic) or C(rsync) calls of those repositories.
  returned: always
  type: list
  sample: []
  elements: str
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.offsite.backup.plugins.module_utils._common import clock_skew_spec, encryption_spec, repository_spec, signing_spec, run
from ansible_collections.offsite.backup.plugins.module_utils._engine import verify


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type='str', required=True),
            repository=dict(type='dict', options=repository_spec()),
            repositories=dict(type='list', elements='dict', options=repository_spec()),
            read_data=dict(type='str'),
            max_age=dict(type='str'),
            encryption=dict(type='dict', options=encryption_spec()),
            clock_skew=clock_skew_spec(),
            signing=dict(type='dict', options=signing_spec()),
        ),
        required_one_of=[('repository', 'repositories')],
        supports_check_mode=True,
    )
    p = module.params
    run(module, verify.verify, name=p['name'], repositories=p['repositories'] or [p['repository']],
        read_data=p['read_data'], max_age=p['max_age'], encryption=p['encryption'], check_mode=module.check_mode,
        clock_skew=p['clock_skew'],
        signing=p['signing'])


if __name__ == '__main__':
    main()
