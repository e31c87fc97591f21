# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Error kinds (issue 12, item 11): ordinary OS conditions become config / io / disk_full with a
hint, never internal; only a bug is internal (with its traceback); every kind errors.py defines
is documented in docs/errors.md, and nothing else is."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import errno
import os
import re
import socket

import pytest

from ansible_collections.offsite.backup.plugins.module_utils import _common
from ansible_collections.offsite.backup.plugins.module_utils._engine import errors
from ansible_collections.offsite.backup.plugins.module_utils._engine import operations

DOCS = os.path.join(os.path.dirname(__file__), '..', '..', 'docs', 'errors.md')


@pytest.mark.parametrize('code, kind', [
    (errno.ENOSPC, 'disk_full'), (errno.EDQUOT, 'disk_full'),
    (errno.EROFS, 'io'), (errno.EIO, 'io'), (errno.EBUSY, 'io'), (errno.ENXIO, 'io'),
    (errno.EACCES, 'config'), (errno.EPERM, 'config'), (errno.ENOENT, 'config'), (errno.ENOTDIR, 'config'),
    (errno.EISDIR, 'config'), (errno.EEXIST, 'config'), (errno.ENAMETOOLONG, 'config'),
    (errno.ETIMEDOUT, 'unreachable'), (errno.ECONNREFUSED, 'unreachable'),
])
def test_os_errors_have_a_kind_and_a_hint(code, kind):
    error = errors.as_backup_error(OSError(code, os.strerror(code), '/srv/backups/x'), 'writing the dump')
    assert error.kind == kind
    assert error.hint and '/srv/backups/x' in error.message and os.strerror(code) in error.message
    assert error.message.startswith('writing the dump: ')


def test_a_socket_timeout_is_unreachable_and_a_bug_is_internal():
    assert errors.as_backup_error(socket.timeout('timed out'), 'listing').kind == 'unreachable'
    with pytest.raises(TypeError) as caught:
        None + 1
    bug = errors.as_backup_error(caught.value, 'listing')
    assert bug.kind == 'internal' and 'TypeError' in bug.message
    assert 'Traceback' in bug.details['exception'] and 'None + 1' in bug.details['exception']
    same = errors.NotFoundError('x')
    assert errors.as_backup_error(same, 'listing') is same


class FakeModule(object):
    """What _common.run needs of an AnsibleModule: params, no_log_values, exit/fail."""

    def __init__(self, params=None):
        self.params = params or {}
        self.no_log_values = set()
        self.result = None

    def fail_json(self, **kwargs):
        self.result = dict(kwargs, failed=True)
        raise SystemExit(1)

    def exit_json(self, **kwargs):
        self.result = kwargs
        raise SystemExit(0)


def _run(operation, **kwargs):
    module = FakeModule()
    with pytest.raises(SystemExit):
        _common.run(module, operation, **kwargs)
    return module.result


def test_ebusy_on_a_mount_point_is_io_with_a_hint(tmp_path, monkeypatch):
    """A files restore in replace mode whose target is a mount point: renaming it fails with EBUSY
    (simulated at the os boundary: a real mount point needs a mount)."""
    src = tmp_path / 'src'
    src.mkdir()
    (src / 'a.txt').write_text('x')
    backup = operations.dump('site', {'type': 'files', 'paths': [str(src)]}, str(tmp_path / 'dest'))['backup']
    target = tmp_path / 'mnt'
    target.mkdir()
    real_rename = os.rename

    def rename(source, destination, *args, **kwargs):
        if os.path.abspath(source) == str(target):
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(source))
        return real_rename(source, destination, *args, **kwargs)
    monkeypatch.setattr(os, 'rename', rename)
    result = _run(operations.restore, name='site', repository={'type': 'local', 'path': str(tmp_path / 'dest')},
                  target={'type': 'files', 'path': str(target)}, mode='replace', work_dir=str(tmp_path))
    assert backup['id'] and result['failed']
    assert result['error'] == 'io', result
    assert 'Device or resource busy' in result['msg'] and 'mount point' in result['msg'], result['msg']
    assert str(target) in result['msg'] and not result.get('exception')
    assert target.is_dir()


def test_a_bug_is_internal_with_its_traceback_and_ordinary_errors_carry_none():
    def buggy(log=None):
        return {}['missing']

    def disk(log=None):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), '/mnt/usb/x')
    bug, ordinary = _run(buggy), _run(disk)
    assert bug['error'] == 'internal' and 'KeyError' in bug['msg'] and 'Traceback' in bug['exception']
    assert ordinary['error'] == 'io' and ordinary['exception'] == '' and 'remount' in ordinary['msg']


def _documented_kinds():
    with open(DOCS) as handle:
        text = handle.read()
    return set(re.findall(r'^\| `([a-z_]+)` \|', text, re.M))


def _defined_kinds():
    """The kind of BackupError and of every subclass the engine defines (not the tests')."""
    found, classes = set(), [errors.BackupError]
    while classes:
        cls = classes.pop()
        if cls.__module__.startswith(errors.__name__.rsplit('.', 1)[0]):
            found.add(cls.kind)
        classes.extend(cls.__subclasses__())
    return found


def test_every_error_kind_is_documented_and_only_those():
    assert _documented_kinds() == _defined_kinds()
    assert {'config', 'io', 'disk_full', 'unreachable', 'internal'} <= _defined_kinds()
