# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``snapshot`` use case: a hard-linked tree snapshot of a files source in a repository
that keeps trees (rsync)."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import time

from .. import manifest as mf
from ..catalog import Catalog, legacy_timezone
from ..commands import CommandLog
from ..errors import ConfigError
from ..repositories import open_repository
from ..repositories.base import TreeStore
from ..signing import Signer
from ..sources import open_source
from ..sources.base import FileTree


def snapshot(name, source, repository, tags=None, signing=None, check_mode=False, log=None):
    """A hard-linked tree snapshot of a files source in a repository that keeps trees
    (``type: rsync``). Its manifest is written last like any other, so catalog, retention,
    backup_info and restore need nothing else. Nothing changed since the newest snapshot:
    no new one (changed=false)."""
    log = log or CommandLog()
    mf.validate_name(name)
    src = open_source(source, log)
    if not isinstance(src, FileTree):
        raise ConfigError('snapshot copies file trees, not a %s source' % src.type,
                          'dump databases with offsite.backup.dump and copy them with offsite.backup.upload')
    probed = src.probe()
    signer = Signer(signing, log)
    started = time.time()
    created = mf.utcnow()
    with open_repository(repository, log) as repo:
        if not isinstance(repo, TreeStore):
            raise ConfigError('%s repositories hold artifacts, not file trees' % repo.type,
                              'use type: rsync for snapshots, or offsite.backup.dump and offsite.backup.upload')
        facts = dict(probed, tool=repo.TOOL, tool_version=None)
        catalog = Catalog(repo, name, legacy_tz=legacy_timezone(repository))
        previous = next((b.id for b in catalog.complete if b.manifest.get('format') == mf.TREE_FORMAT), None)
        done = repo.snapshot(name, src.paths, source.get('exclude'), created, previous, check_mode)
        result = {'changed': done['status'] != 'unchanged', 'status': done['status'], 'previous': previous,
                  'location': repo.location(name)}
        if done['status'] != 'snapshot':
            return dict(result, changes=done['changes'])
        data = mf.build(name, done['id'], created, None, 'none', mf.TREE_FORMAT, done['size'], done['sha256'],
                        done['size'], facts, tags, time.time() - started)
        data.update(artifact=done['id'], files=done['files'])
        data = signer.sign(data)
        repo.put_bytes(mf.manifest_key(name, done['id']), mf.dumps(data))  # last: now it exists
    transfer = dict((k, done[k]) for k in ('entries', 'files_transferred', 'source_bytes', 'transferred_bytes',
                                           'bytes_sent', 'bytes_received', 'wire_bytes') if k in done)
    return dict(result, backup={'id': done['id'], 'name': name, 'created': data['created'], 'files': done['files'],
                                'size': done['size'], 'sha256': done['sha256'], 'artifact': done['artifact_key'],
                                'manifest': mf.manifest_key(name, done['id']), 'tags': data['tags'],
                                'signed_by': signer.public_key},
                transfer=transfer, duration=round(time.time() - started, 3))
