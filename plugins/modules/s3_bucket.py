#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
module: s3_bucket
short_description: Ensure a hardened S3 bucket for backups and return its least-privilege IAM policy
version_added: 0.1.0
description:
  - Ensures that O(bucket) exists with versioning, optional Object Lock (with a default
    retention), lifecycle rules (archive after N days, expire noncurrent versions, abort
    incomplete multipart uploads), a public access block and default encryption.
  - Only settings that differ are changed; settings that are not asked for are left alone, and
    lifecycle rules other than its own (ids C(offsite-backup-archive) and C(offsite-backup-cleanup))
    are kept.
  - Returns RV(iam_policy), the least-privilege policy for the key of the hosts that upload to
    O(prefix). It allows listing, reading and writing; deleting only with O(policy_allows_delete),
    needed when M(offsite.backup.retention) runs with that key. Give retention its own key to keep
    delete rights off the backed-up hosts.
  - Run it with an administrator's credentials, not with the backup key.
extends_documentation_fragment:
  - offsite.backup.attributes
attributes:
  action_group:
    description:
      - Not in C(group/offsite.backup.all), whose defaults (O(offsite.backup.upload#module:repository)
        and the like) this module does not take.
    support: none
    membership: []
  check_mode:
    description: A real dry run; reads the bucket and reports what would change.
    support: full
  diff_mode:
    description: Shows the bucket's settings before and after.
    support: full
  idempotent:
    description: A second run with the same options changes nothing.
    support: full
options:
  bucket:
    description: Bucket name.
    type: str
    required: true
  prefix:
    description:
      - Key prefix of the backups (the repositories' C(prefix)). Scopes the lifecycle rules and the
        IAM policy; empty means the whole bucket.
    type: str
  endpoint_url:
    description: URL of an S3-compatible endpoint; omit for AWS. Falls back to E(AWS_ENDPOINT_URL).
    type: str
  region:
    description: Region of the bucket. Falls back to E(AWS_REGION), then E(AWS_DEFAULT_REGION).
    type: str
  access_key:
    description: Access key id. Falls back to E(AWS_ACCESS_KEY_ID).
    type: str
  secret_key:
    description: Secret access key. Falls back to E(AWS_SECRET_ACCESS_KEY). Never logged.
    type: str
  session_token:
    description: Session token of temporary credentials. Falls back to E(AWS_SESSION_TOKEN).
    type: str
  timeout:
    description: Seconds to wait when connecting.
    type: int
  retries:
    description: Attempts per S3 request.
    type: int
  versioning:
    description: Turn versioning on (V(true)) or suspend it (V(false)). Object Lock needs it on.
    type: bool
    default: true
  object_lock_enabled:
    description:
      - Create the bucket with Object Lock, or enable it on an existing versioned bucket (some
        S3-compatible stores only allow that on an empty bucket).
      - S3 cannot turn Object Lock off again; V(false) on a locked bucket fails.
      - Uploads lock each object with the repository options C(object_lock_mode) and C(object_lock_days).
    type: bool
  object_lock_default_mode:
    description:
      - Mode of the bucket's default retention, applied to objects uploaded without their own lock.
      - C(governance) can be lifted with C(s3:BypassGovernanceRetention); C(compliance) by nobody.
    type: str
    choices: [governance, compliance]
  object_lock_default_days:
    description: Days of the bucket's default retention; required with O(object_lock_default_mode).
    type: int
  transition_days:
    description:
      - Move backup artifacts to O(transition_storage_class) this many days after upload.
      - Objects smaller than 128 KiB (the manifests) are never moved (the lifecycle is written with
        C(TransitionDefaultMinimumObjectSize=all_storage_classes_128K)), so that listing, retention
        and the choice of a backup keep working. Check that an S3-compatible store honours that
        before using this option there.
      - An archived artifact must be restored (C(aws s3api restore-object)) before
        M(offsite.backup.restore) can read it; until then restore fails with a message saying so.
    type: int
  transition_storage_class:
    description: Storage class of O(transition_days).
    type: str
    default: GLACIER
    choices: [GLACIER, DEEP_ARCHIVE, GLACIER_IR, STANDARD_IA, ONEZONE_IA, INTELLIGENT_TIERING]
  noncurrent_expiration_days:
    description:
      - Delete noncurrent versions (overwritten or deleted objects) this many days after they
        became noncurrent. Versions still under Object Lock are kept by S3 until the lock expires.
    type: int
  abort_incomplete_upload_days:
    description:
      - Abort multipart uploads that have not completed after this many days (a killed upload
        leaves invisible parts that are billed). M(offsite.backup.retention) also aborts them
        after its O(offsite.backup.retention#module:incomplete_grace).
    type: int
    default: 7
  block_public_access:
    description: Turn on all four public access block settings. V(false) leaves them as they are.
    type: bool
    default: true
  encryption:
    description: Default server-side encryption. C(none) leaves the current setting.
    type: str
    default: AES256
    choices: [AES256, aws:kms, none]
  kms_key_id:
    description: KMS key id or ARN for O(encryption=aws:kms).
    type: str
  policy_allows_delete:
    description:
      - Whether RV(iam_policy) grants C(s3:DeleteObject) and C(s3:DeleteObjectVersion), which
        M(offsite.backup.retention) needs. Set V(false) for the key of the hosts that only upload.
    type: bool
    default: true
notes:
  - Supports AWS S3 and S3-compatible stores that implement these bucket APIs; a store that lacks
    one fails with the S3 error of that setting.
seealso:
  - module: offsite.backup.upload
  - module: offsite.backup.retention
author:
  - offsite.backup maintainers (!UNKNOWN)
'''

EXAMPLES = r'''
- name: Bucket whose backups ransomware cannot delete for 30 days
  offsite.backup.s3_bucket:
    bucket: acme-backups
    prefix: backups
    region: eu-central-1
    object_lock_enabled: true
    transition_days: 30
    transition_storage_class: DEEP_ARCHIVE
    noncurrent_expiration_days: 90
    policy_allows_delete: false
  register: hardened

- name: Give the backup user exactly the rights it needs
  ansible.builtin.copy:
    content: "{{ hardened.iam_policy_json }}"
    dest: /root/offsite-backup-policy.json
    mode: "0600"

- name: Uploads then lock each object for 30 days
  offsite.backup.upload:
    path: "{{ dumped.backup.path }}"
    repository:
      type: s3
      bucket: acme-backups
      prefix: backups
      object_lock_mode: compliance
      object_lock_days: 30
'''

RETURN = r'''
bucket:
  description: The bucket name.
  returned: always
  type: str
  sample: "crm-backups"
created:
  description: Whether the bucket was (or in check mode would be) created.
  returned: always
  type: bool
  sample: true
changes:
  description: Settings that were (or would be) changed, for example C(lifecycle), C(versioning).
  returned: always
  type: list
  sample: ["versioning", "lifecycle", "block_public_access"]
  elements: str
state:
  description:
    - The bucket's settings afterwards (in check mode, as they would be) with keys C(exists),
      C(versioning), C(object_lock), C(object_lock_default), C(lifecycle), C(block_public_access)
      and C(encryption).
  returned: always
  type: dict
  sample:
    exists: true
    versioning: Enabled
    object_lock: true
    object_lock_default: null
    lifecycle:
    - ID: offsite-abort-incomplete-uploads
      Status: Enabled
    block_public_access: true
    encryption: AES256
iam_policy:
  description: Least-privilege IAM policy for the backup key, scoped to the bucket and O(prefix).
  returned: always
  type: dict
  sample:
    Version: '2012-10-17'
    Statement:
    - Effect: Allow
      Action:
      - s3:PutObject
      - s3:GetObject
      Resource: arn:aws:s3:::crm-backups/*
iam_policy_json:
  description: RV(iam_policy) as indented JSON, ready for C(aws iam put-user-policy).
  returned: always
  type: str
  sample: "{\"Version\": \"2012-10-17\", \"Statement\": [...]}"
diff:
  description: Settings before and after.
  returned: always
  type: dict
  sample: {"before": {}, "after": {"versioning": "Enabled"}}
executed_commands:
  description: Commands the module ran (none; it talks to S3 directly).
  returned: always
  type: list
  sample: []
  elements: str
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.offsite.backup.plugins.module_utils._common import s3_connection_spec, run
from ansible_collections.offsite.backup.plugins.module_utils._engine import s3_bucket

CONNECTION = ('endpoint_url', 'region', 'access_key', 'secret_key', 'session_token', 'timeout', 'retries')


def main():
    spec = s3_connection_spec(CONNECTION)
    spec.update(
        bucket=dict(type='str', required=True),
        prefix=dict(type='str'),
        versioning=dict(type='bool', default=True),
        object_lock_enabled=dict(type='bool'),
        object_lock_default_mode=dict(type='str', choices=['governance', 'compliance']),
        object_lock_default_days=dict(type='int'),
        transition_days=dict(type='int'),
        transition_storage_class=dict(type='str', default='GLACIER', choices=list(s3_bucket.STORAGE_CLASSES)),
        noncurrent_expiration_days=dict(type='int'),
        abort_incomplete_upload_days=dict(type='int', default=7),
        block_public_access=dict(type='bool', default=True),
        encryption=dict(type='str', default='AES256', choices=list(s3_bucket.ENCRYPTIONS)),
        kms_key_id=dict(type='str'),
        policy_allows_delete=dict(type='bool', default=True),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True,
                           required_together=[('object_lock_default_mode', 'object_lock_default_days')])
    run(module, s3_bucket.ensure_bucket, options=dict(module.params), check_mode=module.check_mode)


if __name__ == '__main__':
    main()
