# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The manifest, and how backups are named in a repository.

A backup is two objects under ``<name>/``: the artifact ``<id>.<ext>`` and the manifest
``<id>.manifest.json``, written last. Ids sort by time: ``<name>_<YYYYMMDDTHHMMSSZ>`` with a
``-N`` suffix when several backups of a set start in the same second.

Backups made by the seed scripts (``<name>_YYYYMMDD_HHMMSS.sql.gz`` or
``<name>_backup_YYYYMMDD_HHMMSS.sql.gz``, no manifest) are recognised as *legacy* backups.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import datetime
import json
import re

from .errors import ConfigError, IntegrityError

FORMAT_VERSION = 1
ENGINE_VERSION = '0.1.0'
MANIFEST_SUFFIX = '.manifest.json'
# written beside a backup by a restore that proved it restorable (a DR drill); retention never
# deletes the newest proven backup of a set
PROVEN_SUFFIX = '.proven.json'
PARTIAL_SUFFIX = '.partial'
# format of a snapshot directory (rsync repositories): the artifact is <name>/<id>/, not a file
TREE_FORMAT = 'tree'

NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$')
_ID_RE = re.compile(r'^(?P<name>[A-Za-z0-9][A-Za-z0-9_-]*)_(?P<ts>\d{8}T\d{6}Z)(?:-(?P<seq>\d+))?$')
# an artifact's extension: what dump writes (sql.zst.age, tar.gz.gpg ...), never a path
_EXTENSION_RE = re.compile(r'^[A-Za-z0-9]{1,16}(?:\.[A-Za-z0-9]{1,16}){0,5}$')
_LEGACY_EXT = r'sql\.gz|sql\.zst|sql|dump|dump\.gz|tar\.gz'
# <name>_YYYYMMDD_HHMMSS.<ext>, or the seeds' own <name>_backup_YYYYMMDD_HHMMSS.<ext>
_LEGACY_PATTERN = r'^%s%s_(?P<date>\d{8})_(?P<time>\d{6})\.(?P<ext>' + _LEGACY_EXT + r')$'


def validate_name(name):
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):  # match() would let a trailing newline through
        raise ConfigError(
            'backup set name %r is not usable' % (name,),
            'use letters, digits, "_" and "-" only (it becomes part of every object name)')
    return name


def validate_id(backup_id, name):
    """An id read from storage must be one of ours, of backup set ``name``: it becomes part of
    a key or a path."""
    match = _ID_RE.fullmatch(backup_id) if isinstance(backup_id, str) else None
    if not match or match.group('name') != name:
        raise ConfigError('backup id %r is not an id of backup set %s' % (backup_id, name),
                          'ids look like %s; the manifest was altered or not written by offsite.backup'
                          % make_id(name, utcnow()))
    return backup_id


def validate_extension(extension):
    if not isinstance(extension, str) or not _EXTENSION_RE.fullmatch(extension):
        raise ConfigError('artifact extension %r is not usable' % (extension,),
                          'extensions are letters and digits joined by dots (sql.zst); the manifest was '
                          'altered or not written by offsite.backup')
    return extension


def validate_stored_names(manifest, where):
    """The names of a manifest read from storage (a local dump, a repository) pass the same
    rules as names a user gives, before any of them becomes a key or a path. ConfigError
    otherwise: such a manifest is not damage but input that must not be used."""
    try:
        name = validate_name(manifest['name'])
        validate_id(manifest['id'], name)
        extension = manifest.get('extension')
        if extension is None and manifest.get('format') == TREE_FORMAT:
            expected = manifest['id']  # a snapshot directory: the artifact is <id>/
        else:
            expected = '%s.%s' % (manifest['id'], validate_extension(extension))
        if manifest['artifact'] != expected:
            raise ConfigError('artifact %r is not %s' % (manifest['artifact'], expected),
                              'the manifest was altered or not written by offsite.backup')
    except ConfigError as exc:
        raise ConfigError('manifest %s: %s' % (where, exc.message),
                          '%s; nothing was written' % exc.hint if exc.hint else 'nothing was written')
    return manifest


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def format_time(dt):
    """ISO-8601 in UTC with a Z, to the second: what manifests and results carry."""
    return dt.astimezone(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


def parse_time(text):
    """Parse the ISO-8601 forms users and manifests write; naive times are UTC."""
    if isinstance(text, datetime.datetime):
        dt = text
    else:
        value = str(text).strip()
        if value.endswith('Z'):
            value = value[:-1] + '+00:00'
        if re.match(r'^\d{8}T\d{6}\+00:00$', value):
            value = '%s-%s-%sT%s:%s:%s+00:00' % (value[0:4], value[4:6], value[6:8],
                                                 value[9:11], value[11:13], value[13:15])
        try:
            dt = datetime.datetime.fromisoformat(value)
        except ValueError:
            raise ConfigError('%r is not a time' % (text,),
                              'write it as ISO-8601, e.g. 2026-11-23T03:00:00Z')
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return dt


_DURATION_RE = re.compile(r'^\s*(\d+)\s*([smhdw]?)\s*$')
_SECONDS = {'': 1, 's': 1, 'm': 60, 'h': 3600, 'd': 86400, 'w': 604800}
# how far in the future a backup may be dated before it is suspect (clocks of two machines differ)
DEFAULT_CLOCK_SKEW = '1h'


def parse_duration(value, what='max_age'):
    """Seconds in ``26h``, ``2d``, ``90m``, ``1w`` or a number of seconds; None for None or ''."""
    if value is None or value == '':
        return None
    match = _DURATION_RE.match(str(value).lower())
    if isinstance(value, bool) or not match:
        raise ConfigError('%s %r is not a duration' % (what, value),
                          'write it like 26h, 2d, 90m, 1w or a number of seconds')
    return int(match.group(1)) * _SECONDS[match.group(2)]


def format_duration(delta):
    """``1h``, ``3d``, ``2.5h``: a timedelta (or seconds) for messages, in its largest unit."""
    seconds = int(delta.total_seconds() if isinstance(delta, datetime.timedelta) else delta)
    for size, unit in ((86400, 'd'), (3600, 'h'), (60, 'm')):
        if abs(seconds) >= size:
            return ('%d%s' % (seconds // size, unit)) if seconds % size == 0 else '%.1f%s' % (seconds / float(size), unit)
    return '%ds' % seconds


def clock_skew(value):
    """The ``clock_skew`` option as a timedelta (default 1 hour): a backup dated further than
    this after now is suspect."""
    seconds = parse_duration(DEFAULT_CLOCK_SKEW if value is None or value == '' else value, 'clock_skew')
    return datetime.timedelta(seconds=seconds)


def make_id(name, created, seq=0):
    stamp = created.astimezone(datetime.timezone.utc).strftime('%Y%m%dT%H%M%SZ')
    return '%s_%s%s' % (name, stamp, '-%d' % seq if seq else '')


def parse_id(backup_id):
    """Return (name, created) for one of our ids, or None."""
    match = _ID_RE.match(backup_id)
    if not match:
        return None
    created = datetime.datetime.strptime(match.group('ts'), '%Y%m%dT%H%M%SZ')
    return match.group('name'), created.replace(tzinfo=datetime.timezone.utc)


def artifact_key(name, backup_id, extension):
    return '%s/%s.%s' % (name, backup_id, extension)


def manifest_key(name, backup_id):
    return '%s/%s%s' % (name, backup_id, MANIFEST_SUFFIX)


def proven_key(name, backup_id):
    return '%s/%s%s' % (name, backup_id, PROVEN_SUFFIX)


def id_from_key(key):
    """The id part of an artifact or manifest key (ids contain no dot)."""
    base = key.rsplit('/', 1)[-1]
    return base.split('.', 1)[0]


def parse_legacy(key, name, tz=datetime.timezone.utc, seed_form=True):
    """Recognise a seed-script backup of set ``name``; returns (id, created, ext) or None.

    The seeds stamp file names with the server's local time; ``tz`` says which one.
    ``seed_form=False``: ``<name>_backup_<stamp>`` is not ours (a set named ``<name>_backup``
    exists, and by exact name those files are its own).
    """
    parts = key.split('/')
    if len(parts) > 2 or (len(parts) == 2 and parts[0] != name):
        return None
    match = re.match(_LEGACY_PATTERN % (re.escape(name), '(?:_backup)?' if seed_form else ''), parts[-1])
    if not match:
        return None
    created = datetime.datetime.strptime(match.group('date') + match.group('time'), '%Y%m%d%H%M%S')
    created = created.replace(tzinfo=tz).astimezone(datetime.timezone.utc)
    return parts[-1][:-len(match.group('ext')) - 1], created, match.group('ext')


def build(name, backup_id, created, extension, compression, fmt, size, sha256, raw_size,
          source, tags, duration, encryption=None, layout=None):
    """A new manifest. ``layout`` (pglayout: where the zstd frames of a PostgreSQL
    custom-format dump begin) is written only when given; engines that do not know it ignore
    it, as ``loads`` ignores every key it does not know."""
    data = {
        'format_version': FORMAT_VERSION,
        'tool': 'offsite.backup',
        'tool_version': ENGINE_VERSION,
        'name': name,
        'id': backup_id,
        'created': format_time(created),
        'artifact': '%s.%s' % (backup_id, extension),
        'extension': extension,
        'format': fmt,
        'compression': compression,
        'encryption': encryption,
        'size': size,
        'sha256': sha256,
        'raw_size': raw_size,
        'source': source,
        'tags': list(tags or []),
        'duration_seconds': round(duration, 3),
    }
    if layout is not None:
        data['layout'] = layout
    return data


def dumps(manifest):
    return (json.dumps(manifest, indent=2, sort_keys=True) + '\n').encode('utf-8')


def loads(data, where):
    """Parse and sanity-check a manifest read from ``where`` (a location for messages)."""
    try:
        manifest = json.loads(data.decode('utf-8'))
    except (ValueError, UnicodeDecodeError) as exc:
        raise IntegrityError('manifest %s is not valid JSON (%s)' % (where, exc),
                             'the object is damaged; restore another backup')
    if not isinstance(manifest, dict):
        raise IntegrityError('manifest %s is not a JSON object' % where,
                             'the object is damaged; restore another backup')
    missing = [k for k in ('format_version', 'name', 'id', 'created', 'artifact', 'size', 'sha256')
               if k not in manifest]
    if missing:
        raise IntegrityError('manifest %s lacks %s' % (where, ', '.join(missing)),
                             'it was not written by offsite.backup or is damaged')
    if not isinstance(manifest['format_version'], int):
        raise IntegrityError('manifest %s has format version %r, not a number' % (where, manifest['format_version']),
                             'the object is damaged; restore another backup')
    if manifest['format_version'] > FORMAT_VERSION:
        raise IntegrityError(
            'manifest %s has format version %s; this offsite.backup understands up to %s'
            % (where, manifest['format_version'], FORMAT_VERSION),
            'upgrade the offsite.backup collection')
    try:
        parse_time(manifest['created'])
    except ConfigError:
        raise IntegrityError('manifest %s has created %r, not a time' % (where, manifest['created']),
                             'the object is damaged; restore another backup')
    return validate_stored_names(manifest, where)
