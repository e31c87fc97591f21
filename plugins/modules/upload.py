#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
module: upload
short_description: Copy a local backup to offsite repositories, verified
version_added: 0.1.0
description:
  - Streams the artifact of a backup made by M(offsite.backup.dump) to each repository
    (S3 and S3-compatible stores, SFTP servers, local disks), proves what landed (size and
    checksum), and only then writes the manifest. An interrupted upload never looks complete.
  - A repository that already holds the backup with the same sha256 is left alone
    (C(changed=false)); the decision uses our sha256, not the S3 ETag, which is no MD5 for
    multipart uploads.
  - Every repository is tried even when one fails; the task then fails and says which.
extends_documentation_fragment:
  - offsite.backup.attributes
  - offsite.backup.repository
  - offsite.backup.repository.REPOSITORIES
attributes:
  check_mode:
    description: Looks at each repository and reports whether it would upload; writes nothing.
    support: full
  idempotent:
    description: A backup already present with the same checksum is not uploaded again.
    support: full
options:
  backup:
    description:
      - The backup to upload, either the path of its artifact or the RV(offsite.backup.dump#module:backup)
        dict returned by M(offsite.backup.dump). Its manifest must sit next to the artifact.
    type: raw
    required: true
  name:
    description:
      - Backup set name. Optional; when given (for example through C(module_defaults)) the
        backup must belong to this set, a guard against uploading the wrong file.
    type: str
  repository:
    description:
      - A single repository, used when O(repositories) is not given; typically set once for
        a play with C(module_defaults) and C(group/offsite.backup.all).
requirements:
  - boto3 (Python) for C(s3) repositories
  - paramiko (Python) for C(sftp) repositories
author:
  - offsite.backup maintainers (!UNKNOWN)
'''

EXAMPLES = r'''
- name: Dump, then copy offsite to S3-compatible storage and a Hetzner Storage Box
  hosts: db
  tasks:
    - name: Dump
      offsite.backup.dump:
        name: crm
        source: {type: postgresql, database: crm_db}
        dest: /srv/backups
      register: dumped

    - name: Upload
      offsite.backup.upload:
        backup: "{{ dumped.backup }}"
        repositories:
          - type: s3
            bucket: crm-backups
            prefix: prod
            endpoint_url: https://s3.eu-central-003.backblazeb2.com
            access_key: "{{ vault_b2_key_id }}"
            secret_key: "{{ vault_b2_application_key }}"
          - type: sftp
            host: u123456.your-storagebox.de
            port: 23
            user: u123456
            private_key: /root/.ssh/id_ed25519_backup
            known_hosts: /etc/offsite-backup/known_hosts
            path: backups/crm
'''

RETURN = r'''
backup:
  description: The backup that was uploaded.
  returned: always
  type: dict
  contains:
    id:
      description: Backup id.
      type: str
    name:
      description: Backup set name.
      type: str
    size:
      description: Artifact size in bytes.
      type: int
    sha256:
      description: Artifact sha256.
      type: str
repositories:
  description: One entry per repository, in the order given.
  returned: always
  type: list
  elements: dict
  contains:
    type:
      description: Repository type.
      type: str
    location:
      description: Where the artifact is (no credentials).
      type: str
      sample: s3://crm-backups/prod/crm/crm_20261123T030000Z.dump.zst
    key:
      description: Key of the artifact inside the repository.
      type: str
    status:
      description: C(uploaded), C(unchanged), C(would upload) (check mode) or C(failed).
      type: str
    error:
      description: Why it failed.
      type: str
      returned: when status is failed
    duration:
      description: Seconds spent on this repository.
      type: float
executed_commands:
  description: Commands the module ran (none for the built-in repository types).
  returned: always
  type: list
  elements: str
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.offsite.backup.plugins.module_utils._common import repository_spec, run
from ansible_collections.offsite.backup.plugins.module_utils._engine import operations


def main():
    module = AnsibleModule(
        argument_spec=dict(
            backup=dict(type='raw', required=True),
            name=dict(type='str'),
            repository=dict(type='dict', options=repository_spec()),
            repositories=dict(type='list', elements='dict', options=repository_spec()),
        ),
        required_one_of=[('repository', 'repositories')],
        supports_check_mode=True,
    )
    p = module.params
    run(module, operations.upload, backup=p['backup'], name=p['name'],
        repositories=p['repositories'] or [p['repository']], check_mode=module.check_mode)


if __name__ == '__main__':
    main()
