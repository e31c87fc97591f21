# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backups of one set in one repository: complete, incomplete and legacy.

A backup is complete when its manifest exists and its artifact has the recorded size.
Artifacts without a manifest (an interrupted upload or dump) are incomplete: never listed as
complete, never restored, never ``latest``; retention removes them after a grace period.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import datetime

from . import manifest as mf
from .errors import ConfigError, IntegrityError, NotFoundError


class Backup(object):
    def __init__(self, backup_id, name, created, artifact_key=None, manifest_key=None, size=None,
                 sha256=None, manifest=None, legacy=False, complete=False, modified=None, problem=None,
                 proven_key=None, manifest_size=None, proven_size=None):
        self.id = backup_id
        self.name = name
        self.created = created
        self.artifact_key = artifact_key
        self.manifest_key = manifest_key
        self.size = size
        self.sha256 = sha256
        self.manifest = manifest or {}
        self.legacy = legacy
        self.complete = complete
        self.modified = modified
        self.problem = problem
        self.proven_key = proven_key
        self.manifest_size = manifest_size
        self.proven_size = proven_size

    @property
    def stored_bytes(self):
        """What the backup occupies in the repository: artifact, manifest and proven marker."""
        return (self.size or 0) + (self.manifest_size or 0) + (self.proven_size or 0)

    @property
    def tags(self):
        return list(self.manifest.get('tags') or (['legacy'] if self.legacy else []))

    @property
    def compression(self):
        if self.legacy:
            key = self.artifact_key
            return 'gzip' if key.endswith('.gz') else 'zstd' if key.endswith('.zst') else 'none'
        return self.manifest.get('compression', 'none')

    def as_dict(self):
        data = {'id': self.id, 'name': self.name, 'created': mf.format_time(self.created),
                'size': self.size, 'sha256': self.sha256, 'complete': self.complete,
                'legacy': self.legacy, 'tags': self.tags, 'artifact': self.artifact_key,
                'manifest': self.manifest_key, 'compression': self.compression, 'stored_bytes': self.stored_bytes}
        if self.manifest:
            data['format'] = self.manifest.get('format')
            data['source'] = self.manifest.get('source')
        data['proven'] = self.proven_key is not None
        if self.problem:
            data['problem'] = self.problem
        return data


class Catalog(object):
    """Reads a repository's listing once; manifests are fetched only for complete candidates."""

    def __init__(self, repository, name, legacy_tz=datetime.timezone.utc):
        self.repository = repository
        self.name = mf.validate_name(name)
        self.backups = []       # complete and incomplete, newest first
        self.leftovers = []     # ObjectInfo of partial uploads, and proven markers of deleted backups
        self._load(legacy_tz)

    def _load(self, legacy_tz):
        objects = dict((o.key, o) for o in self.repository.list(self.name))
        artifacts, manifests, proven = {}, {}, {}
        for key, info in objects.items():
            if key.endswith(mf.PARTIAL_SUFFIX):
                if key.startswith(self.name + '/'):
                    self.leftovers.append(info)
                continue
            legacy = mf.parse_legacy(key, self.name, legacy_tz)
            if legacy:
                backup_id, created, dummy = legacy
                self.backups.append(Backup(backup_id, self.name, created, artifact_key=key, size=info.size,
                                           legacy=True, complete=True, modified=info.modified))
                continue
            if not key.startswith(self.name + '/') or key.count('/') != 1:
                continue
            parsed = mf.parse_id(mf.id_from_key(key))
            if not parsed or parsed[0] != self.name:
                continue
            if key.endswith(mf.PROVEN_SUFFIX):
                proven[mf.id_from_key(key)] = info
                continue
            (manifests if key.endswith(mf.MANIFEST_SUFFIX) else artifacts)[mf.id_from_key(key)] = info
        for backup_id in set(artifacts) | set(manifests):
            created = mf.parse_id(backup_id)[1]
            art, man = artifacts.get(backup_id), manifests.get(backup_id)
            backup = Backup(backup_id, self.name, created,
                            artifact_key=art.key if art else None, manifest_key=man.key if man else None,
                            size=art.size if art else None, modified=(art or man).modified,
                            proven_key=proven[backup_id].key if backup_id in proven else None,
                            proven_size=proven[backup_id].size if backup_id in proven else None,
                            manifest_size=man.size if man else None)
            if man is None:
                backup.problem = 'no manifest (interrupted upload or dump)'
            elif art is None:
                backup.problem = 'manifest without artifact'
            else:
                self._read_manifest(backup)
            self.backups.append(backup)
        # a marker whose backup is gone (deletion interrupted after the manifest) is a leftover
        self.leftovers.extend(info for backup_id, info in proven.items()
                              if backup_id not in artifacts and backup_id not in manifests)
        self.backups.sort(key=lambda b: (b.created, b.id), reverse=True)

    def _read_manifest(self, backup):
        try:
            data = mf.loads(self.repository.get_bytes(backup.manifest_key),
                            self.repository.location(backup.manifest_key))
        except (IntegrityError, ConfigError) as exc:  # damaged, or names that must not be used
            backup.problem = exc.message
            return
        if (data['name'], data['id']) != (self.name, backup.id):
            backup.problem = 'manifest describes %s of set %s, not %s' % (data['id'], data['name'], backup.id)
            return
        backup.manifest = data
        backup.sha256 = data['sha256']
        backup.created = mf.parse_time(data['created'])
        expected_key = '%s/%s' % (self.name, data['artifact'])
        if expected_key != backup.artifact_key:
            backup.problem = 'manifest names artifact %s, found %s' % (data['artifact'], backup.artifact_key)
        elif data['size'] != backup.size:
            backup.problem = 'artifact has %s bytes, manifest records %s' % (backup.size, data['size'])
        else:
            backup.complete = True

    def stored_bytes(self):
        """Bytes the set occupies: complete backups, incomplete ones, leftovers (partial uploads,
        markers of deleted backups), total."""
        complete = sum(b.stored_bytes for b in self.complete)
        incomplete = sum(b.stored_bytes for b in self.incomplete)
        leftovers = sum(o.size or 0 for o in self.leftovers)
        return {'complete': complete, 'incomplete': incomplete, 'leftovers': leftovers,
                'total': complete + incomplete + leftovers}

    @property
    def complete(self):
        return [b for b in self.backups if b.complete]

    @property
    def incomplete(self):
        return [b for b in self.backups if not b.complete]

    def newest_proven(self):
        proven = [b for b in self.complete if b.proven_key]
        return proven[0] if proven else None

    def latest(self):
        complete = self.complete
        return complete[0] if complete else None

    def select(self, wanted):
        """``latest``, an id, or a time (the newest complete backup at or before it)."""
        complete = self.complete
        where = self.repository.location()
        # an id asked for by name is judged first: "incomplete" says more than "no complete backup"
        for backup in self.backups:
            if backup.id == wanted:
                if not backup.complete:
                    raise NotFoundError('backup %s in %s is incomplete (%s)' % (wanted, where, backup.problem),
                                        'choose another backup')
                return backup
        if not complete:
            raise NotFoundError('no complete backup of %s in %s' % (self.name, where),
                                'run a backup first, or check `name` and the repository options')
        if wanted in (None, '', 'latest'):
            return complete[0]
        try:
            moment = mf.parse_time(wanted)
        except ConfigError:
            raise NotFoundError('no backup %s of %s in %s' % (wanted, self.name, where),
                                'give latest, an id from backup_info, or an ISO-8601 time')
        for backup in complete:
            if backup.created <= moment:
                return backup
        raise NotFoundError('no complete backup of %s in %s at or before %s (oldest is %s)'
                            % (self.name, where, mf.format_time(moment), mf.format_time(complete[-1].created)))
