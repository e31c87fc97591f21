# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every offsite.backup module shares: option specs and the call into the engine.

Modules stay thin: build an AnsibleModule from these specs, call ``run`` with an engine
operation, and the result (with ``executed_commands``) or a clear failure comes back.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from ansible.module_utils.basic import env_fallback
from ansible_collections.offsite.backup.plugins.module_utils._engine.commands import CommandLog
from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import as_backup_error
from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories.base import url_secret


def repository_spec():
    return dict(
        type=dict(type='str', required=True, choices=['b2', 'local', 'restic', 'rsync', 's3', 'sftp']),
        name=dict(type='str'),
        bucket=dict(type='str'),
        prefix=dict(type='str'),
        endpoint_url=dict(type='str', fallback=(env_fallback, ['AWS_ENDPOINT_URL'])),
        region=dict(type='str', fallback=(env_fallback, ['AWS_REGION', 'AWS_DEFAULT_REGION'])),
        access_key=dict(type='str', no_log=False, fallback=(env_fallback, ['AWS_ACCESS_KEY_ID'])),
        secret_key=dict(type='str', no_log=True, fallback=(env_fallback, ['AWS_SECRET_ACCESS_KEY'])),
        session_token=dict(type='str', no_log=True, fallback=(env_fallback, ['AWS_SESSION_TOKEN'])),
        key_id=dict(type='str', no_log=False, fallback=(env_fallback, ['B2_APPLICATION_KEY_ID'])),
        application_key=dict(type='str', no_log=True, fallback=(env_fallback, ['B2_APPLICATION_KEY'])),
        hide_only=dict(type='bool'),
        storage_class=dict(type='str'),
        server_side_encryption=dict(type='str'),
        object_lock_mode=dict(type='str', choices=['governance', 'compliance']),
        object_lock_days=dict(type='int'),
        part_size=dict(type='int'),
        concurrency=dict(type='int'),
        checksums=dict(type='str', choices=['auto', 'when_required', 'when_supported']),
        host=dict(type='str'),
        port=dict(type='int'),
        user=dict(type='str'),
        private_key=dict(type='path', no_log=False),
        private_key_passphrase=dict(type='str', no_log=True),
        known_hosts=dict(type='path'),
        host_key=dict(type='str', no_log=False),
        path=dict(type='str'),
        timeout=dict(type='int'),
        retries=dict(type='int'),
        verify=dict(type='str', choices=['full', 'size'], default='full'),
        legacy_timezone=dict(type='str'),
        restic_repository=dict(type='str', no_log=False),
        restic_password=dict(type='str', no_log=True, fallback=(env_fallback, ['RESTIC_PASSWORD'])),
        restic_password_file=dict(type='path', no_log=False),
        restic_env=dict(type='dict', no_log=True),
        restic_init=dict(type='bool', default=False),
    )


def clock_skew_spec():
    """How far in the future a backup may be dated before it is suspect; documented in
    doc_fragments/clock_skew.py."""
    return dict(type='str', default='1h')


def database_spec():
    """Connection options shared by a database source (dump) and target (restore)."""
    return dict(
        type=dict(type='str', required=True, choices=['files', 'mysql', 'postgresql', 'redis']),
        database=dict(type='str'),
        databases=dict(type='list', elements='str'),
        host=dict(type='str'),
        port=dict(type='int'),
        user=dict(type='str'),
        password=dict(type='str', no_log=True, fallback=(env_fallback, ['PGPASSWORD'])),
        ssl_mode=dict(type='str'),
        connect_timeout=dict(type='int'),
        maintenance_db=dict(type='str'),
        jobs=dict(type='int'),
        container=dict(type='str'),
        compose_project=dict(type='str'),
        compose_file=dict(type='path'),
        tls=dict(type='bool'),
        tls_ca_file=dict(type='path'),
        tls_cert_file=dict(type='path'),
        tls_key_file=dict(type='path'),
        data_dir=dict(type='path'),
    )


def encryption_spec():
    """Client-side encryption (dump) and the keys to undo it (restore, verify); one dict for both
    sides so that C(module_defaults) can carry it. Documented in doc_fragments/encryption.py."""
    return dict(
        recipients=dict(type='list', elements='str'),
        recipients_file=dict(type='path'),
        gpg_recipients=dict(type='list', elements='str'),
        gpg_homedir=dict(type='path'),
        passphrase=dict(type='str', no_log=True),
        identity_file=dict(type='path', no_log=False),
        required=dict(type='bool'),
    )


def _hide_url_credentials(module, value):
    """Credentials written into an ``endpoint_url`` (https://user:pass@host) are masked like a
    ``no_log`` option wherever Ansible shows them (the invocation's module_args, any output)."""
    if isinstance(value, dict):
        secret = url_secret(value.get('endpoint_url')) if isinstance(value.get('endpoint_url'), str) else None
        if secret:
            module.no_log_values.add(secret)
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            _hide_url_credentials(module, item)


def signing_spec():
    """Signing key (dump, snapshot) and trusted public keys (restore, verify, backup_info,
    retention); one dict for both sides. Documented in doc_fragments/signing.py."""
    return dict(
        key_file=dict(type='path', no_log=False),
        trusted_keys=dict(type='list', elements='str', no_log=False),
        trusted_keys_file=dict(type='path'),
    )


def run(module, operation, **kwargs):
    """Call an engine operation and exit the module with its result or a clear failure."""
    _hide_url_credentials(module, module.params)
    log = CommandLog()
    try:
        result = operation(log=log, **kwargs)
    except Exception as exc:
        # an OSError is an ordinary condition (config, io, disk_full); anything else not a
        # BackupError is a bug: error=internal with the traceback in `exception`, never in msg
        error = as_backup_error(exc, getattr(operation, '__name__', 'the operation'))
        # exception='': no traceback of a failure the message explains (ansible-core 2.19 would
        # capture the pending one); an internal error brings its own in details['exception']
        extra = dict({'exception': ''}, **(error.details or {}))
        module.fail_json(msg=str(error), error=error.kind, executed_commands=log.commands, **extra)
    result['executed_commands'] = log.commands
    module.exit_json(**result)
