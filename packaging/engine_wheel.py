# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Build the engine (``plugins/module_utils/_engine``) as one wheel, ``offsite_backup``, with
the ``offsite-backup`` console script: what the client role installs on managed nodes.

A PEP 517 build backend (``pyproject.toml`` names it, so ``pip wheel .`` and ``python -m build``
work) and a command the role runs on the controller::

    python packaging/engine_wheel.py [OUT_DIR]    # prints the wheel's path and sha256 (JSON)

OUT_DIR defaults to ``$XDG_CACHE_HOME/offsite-backup/<checkout>`` (``~/.cache/...``, one directory
per collection path, so two checkouts never overwrite each other's wheel): one file, replaced in
place, nothing left behind per run.

Every file under the engine directory is packed (no list kept by hand: a new subpackage ships
by being there). The build is reproducible: same sources, same bytes, same hash, so a role
re-applied over unchanged sources installs nothing. No dependency beyond the standard library.
The wheel declares no requirements: the role installs them (client_pip_packages, the same as
requirements.txt) before it.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import base64
import hashlib
import io
import json
import os
import re
import sys
import tarfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENGINE = os.path.join('plugins', 'module_utils', '_engine')
PACKAGE = 'offsite_backup'
DIST = 'offsite_backup'
SCRIPT = 'offsite-backup = offsite_backup.cli:main'
# zip's earliest date: timestamps do not change the hash
EPOCH = (1980, 1, 1, 0, 0, 0)


def version(root=ROOT):
    """The collection's version (galaxy.yml), so the wheel and the collection agree."""
    with open(os.path.join(root, 'galaxy.yml')) as f:
        found = re.search(r'^version:\s*["\']?([0-9][^"\'\s]*)', f.read(), re.M)
    if not found:
        raise SystemExit('galaxy.yml has no version')
    return found.group(1)


def engine_files(root=ROOT):
    """(path in the wheel, path on disk) of every engine file, sorted; caches left out."""
    base = os.path.join(root, ENGINE)
    found = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if d != '__pycache__' and not d.startswith('.'))
        for name in filenames:
            if name.endswith(('.pyc', '.pyo')) or name.startswith('.'):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, base).replace(os.sep, '/')
            found.append((PACKAGE + '/' + rel, path))
    return sorted(found)


def _metadata(ver):
    return ('Metadata-Version: 2.1\nName: %s\nVersion: %s\n'
            'Summary: offsite.backup engine and the offsite-backup command (cron runner)\n'
            'License: GPL-3.0-or-later\nRequires-Python: >=3.8\n' % (DIST, ver))


def _record_hash(data):
    return 'sha256=' + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode('ascii')


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    """PEP 517: write the wheel into wheel_directory and return its file name."""
    ver = version()
    info = '%s-%s.dist-info' % (DIST, ver)
    entries = []
    for arcname, path in engine_files():
        with open(path, 'rb') as f:
            entries.append((arcname, f.read()))
    entries.append((info + '/METADATA', _metadata(ver).encode('utf-8')))
    entries.append((info + '/WHEEL', b'Wheel-Version: 1.0\nGenerator: offsite.backup engine_wheel\n'
                                     b'Root-Is-Purelib: true\nTag: py3-none-any\n'))
    entries.append((info + '/entry_points.txt', ('[console_scripts]\n%s\n' % SCRIPT).encode('utf-8')))
    record = ''.join('%s,%s,%d\n' % (name, _record_hash(data), len(data)) for name, data in entries)
    entries.append((info + '/RECORD', (record + info + '/RECORD,,\n').encode('utf-8')))
    name = '%s-%s-py3-none-any.whl' % (DIST, ver)
    if not os.path.isdir(wheel_directory):
        os.makedirs(wheel_directory)
    target = os.path.join(wheel_directory, name)
    part = '%s.%d.part' % (target, os.getpid())
    with zipfile.ZipFile(part, 'w', zipfile.ZIP_DEFLATED) as whl:
        for arcname, data in entries:
            member = zipfile.ZipInfo(arcname, EPOCH)
            member.external_attr = 0o644 << 16
            member.compress_type = zipfile.ZIP_DEFLATED
            whl.writestr(member, data)
    os.rename(part, target)
    return name


def build_sdist(sdist_directory, config_settings=None):
    """PEP 517: the sources of the wheel (engine, this backend, pyproject.toml, galaxy.yml)."""
    ver = version()
    base = '%s-%s' % (DIST, ver)
    members = [(rel, os.path.join(ROOT, rel)) for rel in ('pyproject.toml', 'galaxy.yml',
                                                          os.path.join('packaging', 'engine_wheel.py'))]
    members += [(os.path.join(ENGINE, arc[len(PACKAGE) + 1:]), path) for arc, path in engine_files()]
    pkg_info = _metadata(ver).encode('utf-8')
    name = base + '.tar.gz'
    if not os.path.isdir(sdist_directory):
        os.makedirs(sdist_directory)
    with tarfile.open(os.path.join(sdist_directory, name), 'w:gz') as tar:
        for rel, path in sorted(members):
            tar.add(path, arcname=base + '/' + rel.replace(os.sep, '/'), recursive=False)
        member = tarfile.TarInfo(base + '/PKG-INFO')
        member.size = len(pkg_info)
        tar.addfile(member, io.BytesIO(pkg_info))
    return name


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def default_out_dir():
    cache = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    checkout = hashlib.sha256(ROOT.encode('utf-8')).hexdigest()[:12]
    return os.path.join(cache, 'offsite-backup', checkout)


def main(argv):
    if len(argv) > 2 or argv[1:2] in (['-h'], ['--help']):
        sys.stderr.write('usage: engine_wheel.py [OUT_DIR]\n')
        return 2
    out_dir = os.path.abspath(argv[1] if len(argv) == 2 else default_out_dir())
    if not os.path.isdir(out_dir):
        os.makedirs(out_dir, 0o700)
    name = build_wheel(out_dir)
    path = os.path.join(out_dir, name)
    with open(path, 'rb') as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    sys.stdout.write(json.dumps({'path': path, 'name': name, 'sha256': digest}) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
