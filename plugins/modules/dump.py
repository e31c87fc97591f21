#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
module: dump
short_description: Dump a database or files into a compressed, checksummed local backup
version_added: 0.1.0
description:
  - Streams a dump of O(source) through compression and a sha256 hash into O(dest), the local
    copy of a 3-2-1 backup, then writes the backup's manifest. The manifest is written last, so
    a dump that fails or is interrupted leaves nothing that looks like a complete backup.
  - PostgreSQL is dumped with C(pg_dump) custom format, uncompressed, and compressed with zstd
    on the fly, which is several times faster than C(pg_dump)'s built-in gzip and lets
    M(offsite.backup.restore) run C(pg_restore -j).
  - Each run creates a new backup, so the module always reports a change; in check mode it
    connects to the source and reports what it would create without writing anything.
  - Passwords are passed through the environment (E(PGPASSWORD)), never on a command line.
  - With O(encryption), the compressed dump is encrypted (age or gpg) before it is hashed and
    written; the manifest records the scheme and the recipients, never a secret.
extends_documentation_fragment:
  - offsite.backup.attributes
  - offsite.backup.source
  - offsite.backup.encryption
  - offsite.backup.signing
attributes:
  check_mode:
    description: Connects to the source and predicts the backup; writes nothing.
    support: full
  idempotent:
    description: Every run creates a new backup.
    support: none
options:
  name:
    description:
      - Name of the backup set, for example C(crm). Letters, digits, C(_) and C(-).
      - Backups are stored as C(<name>/<name>_<YYYYMMDDTHHMMSSZ>.<ext>) next to their manifest.
    type: str
    required: true
  dest:
    description:
      - Local directory that keeps the local copies; created if missing, with each set in a C(<name>) subdirectory of mode 0700.
      - It has the layout of a C(local) repository, so M(offsite.backup.retention) and
        M(offsite.backup.backup_info) work on it with O(offsite.backup.retention#module:repository.type=local).
    type: path
    required: true
  compression:
    description: Compression of the artifact.
    type: str
    choices: [zstd, gzip, none]
    default: zstd
  compression_level:
    description: Compression level; defaults to 1 for zstd (higher levels cost 2-4x the CPU on dumps for little gain), 6 for gzip.
    type: int
  compression_threads:
    description:
      - Worker threads for zstd; C(0) compresses in the reading thread, C(-1) uses one per CPU.
      - At level 1 the reading thread keeps up with C(pg_dump); a worker thread only adds CPU
        and copies on the database server (measured in bench/).
    type: int
    default: 0
  repository:
    description:
      - Not used by dump (it writes to O(dest)); accepted so that C(module_defaults) for
        C(group/offsite.backup.all) can set O(repository) once for every module of a play.
        Copy offsite with M(offsite.backup.upload).
    type: dict
  tags:
    description: Tags recorded in the manifest; M(offsite.backup.retention) can keep backups by tag.
    type: list
    elements: str
    default: []
requirements:
  - C(pg_dump) and C(psql) of the server's major version (postgresql source), GNU C(tar) (files source)
  - C(mariadb-dump) or C(mysqldump) and the C(mariadb) or C(mysql) client (mysql source), C(redis-cli) (redis source)
  - zstandard (Python) for zstd compression
seealso:
  - module: offsite.backup.upload
  - module: offsite.backup.restore
  - module: offsite.backup.retention
author:
  - offsite.backup maintainers (!UNKNOWN)
'''

EXAMPLES = r'''
- name: Dump the CRM database into the local backup directory
  offsite.backup.dump:
    name: crm
    source:
      type: postgresql
      database: crm_db
      host: 127.0.0.1
      user: crm_user
      password: "{{ vault_crm_db_password }}"
    dest: /srv/backups
    tags: [postgres, daily]
  register: dumped

- name: Keep the seed script's format (.sql.gz) during a migration
  offsite.backup.dump:
    name: crm
    source:
      type: postgresql
      database: crm_db
      format: plain
    compression: gzip
    dest: /srv/backups

- name: Encrypt for two age public keys; this server can never decrypt its backups
  offsite.backup.dump:
    name: crm
    source:
      type: postgresql
      database: crm_db
    dest: /srv/backups
    encryption:
      recipients:
        - age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p
      recipients_file: /etc/offsite-backup/recipients.txt

- name: Archive application files
  offsite.backup.dump:
    name: uploads
    source:
      type: files
      paths: [/srv/crm/uploads]
      exclude: ['*.tmp']
    dest: /srv/backups
'''

RETURN = r'''
backup:
  description: The backup that was created (in check mode, the one that would be).
  returned: always
  type: dict
  sample:
    id: crm_20261123T030000Z
    name: crm
    path: /var/backups/offsite/crm/crm_20261123T030000Z.dump.zst
    manifest: /var/backups/offsite/crm/crm_20261123T030000Z.manifest.json
    size: 48213377
    raw_size: 212443136
    sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
    format: custom
    compression: zstd
    tags:
    - nightly
    duration: 41.7
  contains:
    id:
      description: Backup id, C(<name>_<YYYYMMDDTHHMMSSZ>).
      type: str
      sample: crm_20261123T030000Z
    name:
      description: Backup set name.
      type: str
      sample: crm
    created:
      description: When the dump started, UTC.
      type: str
      sample: "2026-11-23T03:00:00Z"
    path:
      description: Path of the artifact.
      type: str
      sample: /srv/backups/crm/crm_20261123T030000Z.dump.zst
    manifest:
      description: Path of the manifest.
      type: str
      sample: /srv/backups/crm/crm_20261123T030000Z.manifest.json
    size:
      description: Artifact size in bytes (not in check mode).
      type: int
      sample: 2411724
    raw_size:
      description: Size of the dump before compression (not in check mode).
      type: int
    sha256:
      description: sha256 of the artifact (not in check mode).
      type: str
    compression:
      description: Compression used.
      type: str
      sample: zstd
    format:
      description: Dump format.
      type: str
      sample: custom
    source:
      description: Facts about the source (type, database, server and tool versions, size).
      type: dict
    tags:
      description: Tags recorded in the manifest.
      type: list
      elements: str
    duration:
      description: Seconds the dump took (not in check mode).
      type: float
    encryption:
      description: The manifest's C(encryption) field (scheme, tool, recipients); null when not encrypted.
      type: dict
      sample: {"scheme": "age", "tool": "age", "recipients": ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"]}
    signed_by:
      description: The public key the manifest was signed with (O(signing.key_file)); null when not signed.
      type: str
      sample: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFVtErYayOWAU4HUDQa9AY3fyUCD6AYuU+eCaxJ/a7YM
executed_commands:
  description: Commands the module ran, without secrets.
  returned: always
  type: list
  elements: str
  sample: ["pg_dump -h 127.0.0.1 -p 5432 -U postgres --no-password --format=custom --compress=0 crm_db"]
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.offsite.backup.plugins.module_utils._common import encryption_spec, signing_spec, source_spec, run
from ansible_collections.offsite.backup.plugins.module_utils._engine import operations


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type='str', required=True),
            source=dict(type='dict', required=True, options=source_spec('dump')),
            dest=dict(type='path', required=True),
            compression=dict(type='str', choices=['zstd', 'gzip', 'none'], default='zstd'),
            compression_level=dict(type='int'),
            compression_threads=dict(type='int', default=0),
            tags=dict(type='list', elements='str', default=[]),
            repository=dict(type='dict'),
            encryption=dict(type='dict', options=encryption_spec()),
            signing=dict(type='dict', options=signing_spec()),
        ),
        supports_check_mode=True,
    )
    p = module.params
    run(module, operations.dump, name=p['name'], source=p['source'], dest=p['dest'],
        compression=p['compression'], level=p['compression_level'], threads=p['compression_threads'],
        tags=p['tags'], encryption=p['encryption'], check_mode=module.check_mode,
        signing=p['signing'])


if __name__ == '__main__':
    main()
