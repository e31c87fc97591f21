#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
module: cleanup
short_description: Remove what killed restores left behind
version_added: 0.2.0
description:
  - A restore that was killed (SIGKILL, a crashed node) cannot clean up after itself. Its scratch work names its
    owner (host, boot, process id and start time) - a scratch database (C(<database>_restore_<hex>)) in its
    comment, a work directory (C(offsite-restore-*), C(offsite-redis-*)) in its C(owner.json), a files scratch
    directory (C(.<name>.restore-<hex>)) in a C(.owner) file beside it.
  - This module removes that work when its owner provably ended (same host, and that process no longer runs or
    the host rebooted since), and reports what it removed. Work of a restore that still runs is never touched;
    work whose owner cannot be told (another host, written by an older version) is listed in RV(kept), not removed.
  - Every restore does the same for its own target and work directory before it starts (its C(cleaned) result).
extends_documentation_fragment:
  - offsite.backup.attributes
  - offsite.backup.source.CLEANUP
attributes:
  check_mode:
    description: Reports what it would remove; removes nothing.
    support: full
  idempotent:
    description: A second run finds nothing left and reports C(changed=false).
    support: full
options:
  work_dir:
    description: The O(offsite.backup.restore#module:work_dir) of the restores; the system temp directory is always swept too.
    type: path
  name:
    description: Not used; accepted so that C(module_defaults) for C(group/offsite.backup.all) apply.
    type: str
  repository:
    description: Not used; accepted so that C(module_defaults) for C(group/offsite.backup.all) apply.
    type: dict
seealso:
  - module: offsite.backup.restore
  - module: offsite.backup.retention
author:
  - offsite.backup maintainers (!UNKNOWN)
'''

EXAMPLES = r'''
- name: Remove what a killed restore of crm_db left
  offsite.backup.cleanup:
    target:
      type: postgresql
      database: crm_db
    work_dir: /var/tmp/offsite
  register: cleaned

- name: Say what was removed
  ansible.builtin.debug:
    var: cleaned.removed

- name: Only work directories, dry run
  offsite.backup.cleanup:
  check_mode: true
'''

RETURN = r'''
removed:
  description: What was removed (or would be, in check mode), one line each.
  returned: always
  type: list
  elements: str
  sample:
    - scratch database crm_db_restore_1a2b3c4d on 127.0.0.1:5432
    - work directory /var/tmp/offsite/offsite-restore-k2j4h1
kept:
  description: Scratch work found but not removed because its owner cannot be told from here, with why.
  returned: always
  type: list
  elements: dict
  sample:
    - what: work directory /tmp/offsite-restore-abc123
      why: 'owner unknown: no owner recorded (an older version, or killed while creating it)'
executed_commands:
  description: Commands the module ran, without secrets.
  returned: always
  type: list
  sample: ["psql -X -h 127.0.0.1 -U postgres -d postgres -c DROP DATABASE crm_restore_1a2b3c"]
  elements: str
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.offsite.backup.plugins.module_utils._common import source_spec, run
from ansible_collections.offsite.backup.plugins.module_utils._engine import operations

CLEANUP_TARGET_OPTIONS = ('type', 'database', 'databases', 'host', 'port', 'user', 'password', 'ssl_mode',
                          'connect_timeout', 'maintenance_db', 'container', 'compose_project', 'compose_file',
                          'data_dir', 'path')


def main():
    # The connection options of a restore target that say where scratch work may be left.
    target = source_spec('restore', only=CLEANUP_TARGET_OPTIONS)
    module = AnsibleModule(
        argument_spec=dict(
            target=dict(type='dict', options=target),
            work_dir=dict(type='path'),
            name=dict(type='str'),
            repository=dict(type='dict'),
        ),
        supports_check_mode=True,
    )
    p = module.params
    run(module, operations.cleanup, target=p['target'], work_dir=p['work_dir'], check_mode=module.check_mode)


if __name__ == '__main__':
    main()
