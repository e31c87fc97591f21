# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backups of one set in one repository: complete, incomplete and legacy.

A backup is complete when its manifest exists and its artifact has the recorded size.
Artifacts without a manifest (an interrupted upload or dump) are incomplete: never listed as
complete, never restored, never ``latest``; retention removes them after a grace period.

A complete backup dated more than ``clock_skew`` after now is *suspect* (the clock of the
machine that made it was ahead, or its manifest was edited): never ``latest``, never chosen
by time; only asking for its id restores it.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import datetime

from . import manifest as mf
from .errors import ConfigError, IntegrityError, NotFoundError
from .repositories.base import checked_key


def safe_key(key):
    try:
        return checked_key(key)
    except ConfigError:
        return None


def legacy_timezone(options):
    """The zone of a seed script's file name stamps in a repository (its ``legacy_timezone``
    option; UTC by default): what Catalog's ``legacy_tz`` takes."""
    name = (options or {}).get('legacy_timezone')
    if not name:
        return datetime.timezone.utc
    try:
        from zoneinfo import ZoneInfo
        return ZoneInfo(name)
    except Exception:
        raise ConfigError('legacy_timezone %r is not a known IANA time zone' % name)


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
        self.suspect = False  # dated too far in the future (set by the catalog)

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
        data['suspect'] = self.suspect
        if self.problem:
            data['problem'] = self.problem
        return data


class Catalog(object):
    """Reads a repository's listing once; manifests are fetched only for complete candidates."""

    def __init__(self, repository, name, legacy_tz=datetime.timezone.utc, clock_skew=None, now=None):
        self.repository = repository
        self.name = mf.validate_name(name)
        self.backups = []       # complete and incomplete, newest first
        self.leftovers = []     # ObjectInfo of partial uploads, and proven markers of deleted backups
        self.now = now or mf.utcnow()
        self.clock_skew = mf.clock_skew(clock_skew) if not isinstance(clock_skew, datetime.timedelta) else clock_skew
        self._load(legacy_tz)
        for backup in self.complete:
            backup.suspect = backup.created > self.now + self.clock_skew

    def _load(self, legacy_tz):
        objects = dict((o.key, o) for o in self.repository.list(self.name))
        artifacts, manifests, proven = {}, {}, {}
        # the seeds wrote <name>_backup_<stamp> for set <name>; but when a set named <name>_backup
        # lives in this repository, such files are its own (exact names), never ours to delete
        seed_form = not any(key.startswith(self.name + '_backup/') for key in objects)
        for key, info in objects.items():
            if not safe_key(key):
                continue  # a listing is input too: such a name was never ours, and must not reach delete
            if key.endswith(mf.PARTIAL_SUFFIX):
                if key.startswith(self.name + '/'):
                    self.leftovers.append(info)
                continue
            legacy = mf.parse_legacy(key, self.name, legacy_tz, seed_form)
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

    @property
    def trusted(self):
        """Complete backups that are not suspect, newest first."""
        return [b for b in self.backups if b.complete and not b.suspect]

    @property
    def suspect(self):
        return [b for b in self.backups if b.suspect]

    def describe_suspect(self, backup):
        """Why ``backup`` is suspect, for warnings and failures."""
        ahead = backup.created - self.now
        return ('backup %s of %s in %s is dated %s, %s after this machine\'s clock (more than clock_skew %s): '
                'the clock of the machine that made it was ahead, or its manifest was edited'
                % (backup.id, self.name, self.repository.location(), mf.format_time(backup.created),
                   mf.format_duration(ahead), mf.format_duration(self.clock_skew)))

    def newest_proven(self):
        proven = [b for b in self.trusted if b.proven_key]
        return proven[0] if proven else None

    def latest(self):
        trusted = self.trusted
        return trusted[0] if trusted else None

    def passed_over(self, chosen, wanted='latest'):
        """Warnings naming each backup newer than ``chosen`` that ``wanted`` (``latest`` or a
        time) skipped, and why (damaged, incomplete, suspect)."""
        limit = None if wanted in (None, '', 'latest') else mf.parse_time(wanted)
        warnings = []
        for backup in self.backups:
            if backup is chosen or backup.created < chosen.created:
                break
            if limit is not None and backup.created > limit:
                continue  # after the time asked for: not skipped, just not wanted
            if backup.suspect:
                warnings.append('skipped %s' % self.describe_suspect(backup))
            elif not backup.complete:
                warnings.append('skipped backup %s of %s, newer than %s: %s'
                                % (backup.id, self.name, chosen.id, backup.problem))
        return warnings

    def select(self, wanted):
        """``latest``, an id, or a time (the newest complete backup at or before it that is not
        suspect)."""
        complete = self.trusted
        where = self.repository.location()
        # an id asked for by name is judged first: "incomplete" says more than "no complete backup"
        for backup in self.backups:
            if backup.id == wanted:
                if not backup.complete:
                    raise NotFoundError('backup %s in %s is incomplete (%s)' % (wanted, where, backup.problem),
                                        'choose another backup')
                return backup
        if not complete:
            if self.suspect:
                raise NotFoundError('no complete backup of %s in %s that is not suspect: %s'
                                    % (self.name, where, '; '.join(self.describe_suspect(b) for b in self.suspect)),
                                    'check the clocks; to restore a suspect backup anyway, give its id')
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
