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
  source:
    description: What to back up.
    type: dict
    required: true
    suboptions:
      type:
        description:
          - C(postgresql) for a PostgreSQL database or cluster, C(files) for files and directories.
          - C(mysql) for one MySQL or MariaDB database, C(redis) for a snapshot of a Redis server.
        type: str
        required: true
        choices: [files, mysql, postgresql, redis]
      database:
        description: Database to dump (C(postgresql), C(mysql)).
        type: str
      databases:
        description:
          - The whole cluster (C(postgresql)) instead of O(source.database) - C([all]) (every database that accepts
            connections except templates and the maintenance database) or a list of names.
          - One artifact (format C(cluster), a tar) holds C(pg_dumpall --globals-only) (roles with their password
            hashes, tablespaces) and one custom-format dump per database, each taken in its own exported snapshot
            with its row counts. Each database is spooled once to an unlinked file in O(dest).
          - For C(mysql), C([all]) (every database but the system ones) or a list of names, dumped in one consistent
            snapshot (C(--single-transaction --databases)) with the row counts of every table.
        type: list
        elements: str
      host:
        description: Server host (C(postgresql), C(mysql), C(redis)). Defaults to C(127.0.0.1).
        type: str
      port:
        description: Server port. Defaults to C(5432) (C(postgresql)), C(3306) (C(mysql)), C(6379) (C(redis)).
        type: int
      user:
        description: User to connect as. Defaults to C(postgres) (C(postgresql)), C(root) (C(mysql)); the ACL user for C(redis).
        type: str
      password:
        description: Password; passed in E(PGPASSWORD) (C(postgresql)), E(MYSQL_PWD) (C(mysql)), E(REDISCLI_AUTH) (C(redis)). Falls back to E(PGPASSWORD).
        type: str
      ssl_mode:
        description: libpq C(sslmode) (C(postgresql)), for example C(require).
        type: str
      connect_timeout:
        description: Seconds to wait for a connection (C(postgresql), C(mysql)). Defaults to 10 (C(postgresql)).
        type: int
      maintenance_db:
        description: Not used by dump; accepted so that one dict can serve dump and restore.
        type: str
      jobs:
        description: Not used by dump; accepted so that one dict can serve dump and restore.
        type: int
      tls:
        description: Connect to Redis over TLS (C(redis), C(redis-cli --tls)).
        type: bool
      tls_ca_file:
        description: CA certificate that signed the Redis server's certificate (C(redis)).
        type: path
      tls_cert_file:
        description: Client certificate for Redis TLS (C(redis)).
        type: path
      tls_key_file:
        description: Key of O(source.tls_cert_file) (C(redis)).
        type: path
      data_dir:
        description: Not used by dump; accepted so that one dict can serve dump and restore.
        type: path
      format:
        description:
          - C(custom) (default) is C(pg_dump -Fc), restorable in parallel.
          - C(plain) is SQL text, the seed scripts' C(.sql.gz) when used with O(compression=gzip).
        type: str
        choices: [custom, plain]
        default: custom
      schemas:
        description: Dump only these schemas (C(postgresql)).
        type: list
        elements: str
      exclude_tables:
        description: Leave out these tables, C(pg_dump --exclude-table) patterns (C(postgresql)) or table names (C(mysql)).
        type: list
        elements: str
      container:
        description:
          - Run the database tools inside this container, the way the seed scripts do
            (C(docker exec -i <container> ...)). With O(source.compose_project) or
            O(source.compose_file), the name of the compose service instead, run with C(docker compose exec -T).
          - Passwords cross into the container by name (C(-e PGPASSWORD)), never on the command line.
          - Without O(source.host), the tools connect to the server on the container's own socket.
        type: str
      compose_project:
        description: Compose project of O(source.container) (C(docker compose -p)).
        type: str
      compose_file:
        description: Compose file of O(source.container) (C(docker compose -f)).
        type: path
      paths:
        description: Files and directories to archive (C(files)).
        type: list
        elements: path
      exclude:
        description: C(tar --exclude) patterns (C(files)).
        type: list
        elements: str
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
      - One worker at level 1 keeps up with C(pg_dump); more only compete for the CPU (measured in bench/).
    type: int
    default: 1
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
from ansible_collections.offsite.backup.plugins.module_utils._common import database_spec, encryption_spec, signing_spec, run
from ansible_collections.offsite.backup.plugins.module_utils._engine import operations


def main():
    source = database_spec()
    source.update(
        format=dict(type='str', choices=['custom', 'plain'], default='custom'),
        schemas=dict(type='list', elements='str'),
        exclude_tables=dict(type='list', elements='str'),
        paths=dict(type='list', elements='path'),
        exclude=dict(type='list', elements='str'),
    )
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type='str', required=True),
            source=dict(type='dict', required=True, options=source),
            dest=dict(type='path', required=True),
            compression=dict(type='str', choices=['zstd', 'gzip', 'none'], default='zstd'),
            compression_level=dict(type='int'),
            compression_threads=dict(type='int', default=1),
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
