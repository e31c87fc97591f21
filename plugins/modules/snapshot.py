#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
module: snapshot
short_description: Copy file trees to an rsync repository as hard-linked snapshots
version_added: 0.1.0
description:
  - Copies O(source.paths) with rsync over SSH into O(repository) (C(type=rsync)) as a complete
    snapshot directory C(<name>/<id>/). Files unchanged since the previous snapshot are hard
    links to it (C(--link-dest)), so each snapshot is complete but costs only what changed.
  - The snapshot is written under a temporary name, made final once complete, and only then
    gets its manifest; an interrupted or failed run (a full server, a lost connection) never
    leaves a snapshot that looks complete. M(offsite.backup.retention),
    M(offsite.backup.backup_info) and M(offsite.backup.restore) (into a C(files) target)
    work on snapshots like on any other backup.
  - When nothing changed since the newest snapshot, no new one is made (C(changed=false)).
  - Works with a key the server restricts to C(rrsync) (a forced command in authorized_keys),
    because every step is an rsync transfer, never a shell command.
extends_documentation_fragment:
  - offsite.backup.attributes
  - offsite.backup.repository
  - offsite.backup.source.snapshot
  - offsite.backup.signing
attributes:
  check_mode:
    description: Compares the tree with the newest snapshot (an rsync dry run) and writes nothing.
    support: full
  idempotent:
    description: A tree that did not change since the newest snapshot is not copied again.
    support: full
options:
  name:
    description: Backup set name; snapshots live in C(<name>/) of the repository.
    type: str
    required: true
  repository:
    description: The repository; it must be of C(type=rsync).
    required: true
  tags:
    description: Free-form tags recorded in the manifest (retention can keep by tag).
    type: list
    elements: str
requirements:
  - rsync (3.2.3 or later) and the OpenSSH client on the node running the module
  - rsync on the server
notes:
  - Owners and groups are kept only as far as the server account can keep them (a non-root
    account owns every file it receives); a restore gives the files to the restoring user and
    keeps permissions, times and symlinks.
seealso:
  - module: offsite.backup.restore
  - module: offsite.backup.retention
author:
  - offsite.backup maintainers (!UNKNOWN)
'''

EXAMPLES = r'''
- name: Daily snapshot of the web root to a backup server
  offsite.backup.snapshot:
    name: www
    source:
      type: files
      paths: [/srv/www]
      exclude: ['*.tmp', cache/]
    repository:
      type: rsync
      host: backup.example.net
      user: host1
      private_key: /root/.ssh/id_ed25519_backup
      known_hosts: /etc/offsite-backup/known_hosts
      path: snapshots

- name: Restore the newest snapshot next to the original
  offsite.backup.restore:
    name: www
    repository:
      type: rsync
      host: backup.example.net
      user: host1
      private_key: /root/.ssh/id_ed25519_backup
      known_hosts: /etc/offsite-backup/known_hosts
      path: snapshots
    target:
      type: files
      path: /srv/www-restored
'''

RETURN = r'''
status:
  description: C(snapshot) (made), C(unchanged) (nothing changed since the newest snapshot) or C(would snapshot) (check mode).
  returned: always
  type: str
  sample: "snapshot"
previous:
  description: Id of the newest complete snapshot before this run (the C(--link-dest) one), if any.
  returned: always
  type: str
  sample: "www/www_20261122T030000Z"
location:
  description: Where the set's snapshots are (no credentials).
  returned: always
  type: str
  sample: "rsync://backup@nas.example.com:22/srv/backups/www/www_20261123T030000Z"
changes:
  description: Entries rsync would change (check mode or unchanged); unknown without a previous snapshot.
  returned: when no snapshot was made
  type: int
  sample: 12
backup:
  description: The snapshot that was made.
  returned: when status is snapshot
  type: dict
  sample:
    id: www_20261123T030000Z
    files: 4211
    size: 734003200
    sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
  contains:
    id:
      description: Backup id.
      type: str
    files:
      description: Regular files in the snapshot.
      type: int
    size:
      description: Total bytes of those files (hard-linked ones included).
      type: int
    sha256:
      description: sha256 of the snapshot's sorted listing, checked again on restore.
      type: str
transfer:
  description:
    - rsync's figures for the copy pass (C(bytes_sent), C(bytes_received), C(transferred_bytes), C(files_transferred),
      C(source_bytes)), and C(wire_bytes), the bytes of all passes of this snapshot.
  returned: when status is snapshot
  type: dict
  sample:
    bytes_sent: 1052331
    bytes_received: 4211
    transferred_bytes: 1048576
    files_transferred: 12
    source_bytes: 734003200
    wire_bytes: 1056542
executed_commands:
  description: Commands the module ran (rsync with its ssh command line; no secrets).
  returned: always
  type: list
  sample: ["rsync -a --link-dest=../www_20261122T030000Z ..."]
  elements: str
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.offsite.backup.plugins.module_utils._common import repository_spec, signing_spec, source_spec, run
from ansible_collections.offsite.backup.plugins.module_utils._engine import operations


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type='str', required=True),
            source=dict(type='dict', required=True, options=source_spec('snapshot')),
            repository=dict(type='dict', required=True, options=repository_spec()),
            tags=dict(type='list', elements='str'),
            signing=dict(type='dict', options=signing_spec()),
        ),
        supports_check_mode=True,
    )
    p = module.params
    run(module, operations.snapshot, name=p['name'], source=p['source'], repository=p['repository'],
        tags=p['tags'], check_mode=module.check_mode,
        signing=p['signing'])


if __name__ == '__main__':
    main()
