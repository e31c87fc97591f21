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
  - With several repositories the artifact is read once and streamed to all of them at the
    same time (one reader, one bounded queue of 1 MiB pieces per repository), so two
    repositories take about as long as the slowest one, not the sum. Repositories that
    already hold the backup are found first and not sent anything.
  - One failing repository does not stop the others, and each is reported with its status. The
    task fails unless at least O(min_success) repositories hold the backup afterwards; a
    repository's manifest is written only once its artifact landed and the bytes read
    locally matched the dump's sha256.
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
  min_success:
    description:
      - How many repositories must hold the backup (C(uploaded) or C(unchanged)) for the task
        to succeed. Default is all of them.
      - When fewer failed than this allows, the task succeeds, lists them in
        RV(failed_repositories) and warns; C(changed) still says whether anything was uploaded.
      - Must be between 1 and the number of repositories.
    type: int
  repository:
    description:
      - A single repository, used when O(repositories) is not given; typically set once for
        a play with C(module_defaults) and C(group/offsite.backup.all).
requirements:
  - boto3 (Python) for C(s3) repositories
  - paramiko (Python) for C(sftp) repositories
seealso:
  - module: offsite.backup.dump
  - module: offsite.backup.backup_info
  - module: offsite.backup.retention
  - module: offsite.backup.s3_bucket
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
  sample:
    id: crm_20261123T030000Z
    name: crm
    size: 48213377
    sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
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
  sample:
    - type: s3
      repository: offsite-eu
      key: crm/crm_20261123T030000Z.dump.zst
      location: s3://crm-backups/prod/crm/crm_20261123T030000Z.dump.zst
      status: uploaded
      bytes: 48213377
      duration: 6.2
  elements: dict
  contains:
    type:
      description: Repository type.
      type: str
    location:
      description: Where the artifact is (no credentials).
      type: str
      sample: s3://crm-backups/prod/crm/crm_20261123T030000Z.dump.zst
    repository:
      description: The repository's stable name (its O(repositories[].name), else its root location), the
        C(repository) label of the metrics.
      type: str
      sample: s3://crm-backups/prod
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
    error_kind:
      description: The kind of failure (C(repository), C(not_found), C(integrity), ...).
      type: str
      returned: when status is failed
    duration:
      description: Seconds spent on this repository.
      type: float
    bytes:
      description: Bytes of the artifact sent to this repository (0 when unchanged or in check mode).
      type: int
failed_repositories:
  description: Locations of the repositories that failed while the task still met O(min_success).
  returned: when some repositories failed and the task did not
  type: list
  elements: str
  sample: [sftp://backup@192.0.2.7:23/backups/crm/crm_20261123T030000Z.dump.zst]
executed_commands:
  description:
    - Commands the module ran, without secrets; C(restic) calls, C(rsync) transfers and the C(ssh) that
      ends their connection. Local, S3, SFTP and B2 repositories run no command (an empty list).
  returned: always
  type: list
  sample: ["/usr/bin/restic cat config --no-lock", "/usr/bin/restic backup --json --quiet --stdin --stdin-filename crm/crm_20261122T030000Z.dump.zst ..."]
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
            min_success=dict(type='int'),
            repository=dict(type='dict', options=repository_spec()),
            repositories=dict(type='list', elements='dict', options=repository_spec()),
        ),
        required_one_of=[('repository', 'repositories')],
        supports_check_mode=True,
    )
    p = module.params
    run(module, operations.upload, backup=p['backup'], name=p['name'], min_success=p['min_success'],
        repositories=p['repositories'] or [p['repository']], check_mode=module.check_mode)


if __name__ == '__main__':
    main()
