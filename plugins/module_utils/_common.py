# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every offsite.backup module shares: option specs and the call into the engine.

Modules stay thin: build an AnsibleModule from these specs, call ``run`` with an engine
operation, and the result (with ``executed_commands``) or a clear failure comes back.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from ansible_collections.offsite.backup.plugins.module_utils._engine import repositories, schema, sources
from ansible_collections.offsite.backup.plugins.module_utils._engine.commands import CommandLog
from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import as_backup_error
from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories.base import url_secret


def repository_spec():
    """The options of a ``repository`` dict: those of every repository type, derived from the
    types' declarations (the engine then refuses an option the chosen type does not take)."""
    return schema.argument_spec(repositories.REPOSITORY_CLASSES)


def s3_connection_spec(names):
    """The S3 connection options ``names`` as the s3 repository type declares them."""
    spec = schema.argument_spec([repositories.TYPES['s3']])
    return dict((name, spec[name]) for name in names)


def source_spec(role, only=None):
    """The options of a ``source`` (``role='dump'``) or restore ``target`` (``role='restore'``)
    dict (``role='snapshot'``: snapshot's ``source``): those of every source type of that role, from
    the types' declarations; ``only`` limits them."""
    return schema.argument_spec(sources.classes_for(role), role, only)


def clock_skew_spec():
    """How far in the future a backup may be dated before it is suspect; documented in
    doc_fragments/clock_skew.py."""
    return dict(type='str', default='1h')


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
