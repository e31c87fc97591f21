# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the archived WAL of a set is for: which files the kept base backups need (retention),
how far recovery from each base backup gets (backup_info's recovery window), and where it
would stop early (verify). docs/pitr.md is the contract.

The first half is pure (names, numbers, plans); ``inspect`` at the end reads a repository.

Segment arithmetic: a segment's name is ``TTTTTTTTXXXXXXXXYYYYYYYY`` (timeline, then the
segment number split in two: ``XXXXXXXX`` counts 4 GiB of WAL, ``YYYYYYYY`` the segments
within it, ``0 .. 4 GiB / segment size - 1``: ``00 .. FF`` with 16 MiB segments). The segment
size comes from the base backups' manifests (``source.wal_segment_size``); without one it is
assumed to be PostgreSQL's default, 16 MiB, and the result says so. Retention compares names
only and needs no segment size.

Timelines: recovery to ``latest`` (and to a time, whose target timeline is ``latest`` too)
reads the base backup's timeline up to the point where the next timeline branched off, then
that timeline, and so on to the newest one. PostgreSQL finds the newest timeline by probing
``<T+1>.history``, ``<T+2>.history``, ... from the base backup's timeline until one is missing,
and reads the switch points from that newest timeline's history file. Where that file cannot
be read here (encrypted, no key given), the switches are inferred from the names: each later
timeline begins at its lowest archived segment (``switches_inferred``).
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import bisect
import collections
import os
import re
import tempfile

from . import manifest as mf
from . import wal
from .errors import BackupError, ConfigError, IntegrityError

DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024
MIN_SEGMENT_SIZE, MAX_SEGMENT_SIZE = 1 << 20, 1 << 30
# a history file is a few lines per timeline switch; anything bigger is not one
MAX_HISTORY_BYTES = 1 << 20
_LSN_RE = re.compile(r'^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$')

Anchor = collections.namedtuple('Anchor', 'backup timeline log seg start stop_time segment_size')


# -- segment arithmetic ----------------------------------------------------------------------
def segment_size_ok(size):
    """A segment size PostgreSQL allows: a power of two from 1 MiB to 1 GiB."""
    return (isinstance(size, int) and not isinstance(size, bool) and MIN_SEGMENT_SIZE <= size <= MAX_SEGMENT_SIZE
            and size & (size - 1) == 0)


def per_log(size):
    """Segments per ``XXXXXXXX`` value: 256 with 16 MiB segments."""
    return 0x100000000 // size


def segno(wal_file, size):
    """The segment number of a segment (or ``.partial`` / ``.backup``) file: XLogFromFileName."""
    return wal_file.log * per_log(size) + wal_file.seg


def fits(wal_file, size):
    """Whether the name is one PostgreSQL writes with ``size`` segments (``YYYYYYYY`` in range)."""
    return wal_file.seg < per_log(size)


def segment_name(timeline, number, size):
    """XLogFileName: the name of segment ``number`` on ``timeline``."""
    per = per_log(size)
    return '%08X%08X%08X' % (timeline, number // per, number % per)


def parse_lsn(text):
    match = _LSN_RE.match(text or '')
    if not match:
        raise ValueError('%r is not an LSN' % (text,))
    return (int(match.group(1), 16) << 32) + int(match.group(2), 16)


def parse_history(text, timeline):
    """The lines of ``<timeline>.history``: ``[(parent timeline, switch LSN), ...]``, oldest
    first. Anything else (a parent at or after ``timeline``, parents out of order, switch
    points going back, a line that is not ``TLI<tab>X/X<tab>reason``) is ValueError."""
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].isdigit():
            raise ValueError('line %r is not "timeline<TAB>LSN<TAB>reason"' % line[:80])
        parent, lsn = int(parts[0]), parse_lsn(parts[1])
        if not 1 <= parent < timeline or (entries and (parent <= entries[-1][0] or lsn < entries[-1][1])):
            raise ValueError('line %r does not continue the history of timeline %d' % (line[:80], timeline))
        entries.append((parent, lsn))
    return entries


# -- which base backups need WAL, from where -------------------------------------------------
def anchor_of(backup):
    """``(Anchor, None)`` for a base backup whose manifest says where its WAL starts; ``(None,
    problem)`` for one that needs WAL but does not say (or says nonsense); ``(None, None)``
    for a backup that needs no WAL (its manifest records no ``wal_start``, and is no base backup)."""
    facts = (backup.manifest or {}).get('source')
    if not isinstance(facts, dict) or (facts.get('format') != 'basebackup' and 'wal_start' not in facts):
        return None, None
    start = facts.get('wal_start')
    try:
        parsed = wal.parse_name(start)
    except ConfigError:
        parsed = None
    if parsed is None or parsed.kind != 'segment':
        return None, 'base backup %s records no WAL start segment (wal_start %r)' % (backup.id, start)
    size = facts.get('wal_segment_size')
    stop = None
    try:
        stop = mf.parse_time(facts['stop_time']) if isinstance(facts.get('stop_time'), str) else None
    except ConfigError:
        stop = None
    return Anchor(backup.id, parsed.timeline, parsed.log, parsed.seg, parsed.name, stop,
                  size if segment_size_ok(size) else None), None


def has_base_backups(backups):
    """Whether any of ``backups`` (catalog Backups) is a base backup: the sets whose WAL
    retention, backup_info and verify look at (one more listing, for those sets only)."""
    return any(anchor or problem for anchor, problem in (anchor_of(b) for b in backups if b.manifest))


def choose_segment_size(anchors):
    """``(size, where it came from)``: the newest base backup's recorded size, else 16 MiB."""
    for anchor in anchors:
        if anchor.segment_size:
            return anchor.segment_size, 'base backup %s' % anchor.backup
    return DEFAULT_SEGMENT_SIZE, 'assumed: PostgreSQL\'s default (no base backup records wal_segment_size)'


# -- retention -------------------------------------------------------------------------------
def needed(wal_file, anchors):
    """Whether a kept base backup needs ``wal_file``: a segment (``.partial``, ``.backup``) at or
    after some base backup's start segment, on its timeline or a later one; a timeline history
    file of such a timeline. Names are compared, not numbers: no segment size needed."""
    if wal_file.kind == 'history':
        return any(a.timeline <= wal_file.timeline for a in anchors)
    return any(a.timeline <= wal_file.timeline and (wal_file.log, wal_file.seg) >= (a.log, a.seg) for a in anchors)


def deletion_order(wal_file):
    """Oldest first (an interrupted run leaves a suffix of the archive: no holes), history
    files after the segments."""
    if wal_file.kind == 'history':
        return (1, 0, 0, wal_file.timeline, wal_file.name)
    return (0, wal_file.log, wal_file.seg, wal_file.timeline, wal_file.name)


def plan_retention(files, anchors):
    """``(keep, remove)``: lists of the WalFiles in ``files``; ``remove`` in deletion order.
    Without an anchor nothing is removed: there is no base backup to say what is needed."""
    files = list(files)
    if not anchors:
        return sorted(files, key=deletion_order), []
    keep, remove = [], []
    for wal_file in files:
        (keep if needed(wal_file, anchors) else remove).append(wal_file)
    return sorted(keep, key=deletion_order), sorted(remove, key=deletion_order)


# -- recovery paths and gaps -----------------------------------------------------------------
class Archive(object):
    """The complete WAL files of a set (names only; the caller decides what complete means),
    seen with one segment size."""

    def __init__(self, wal_files, size):
        self.size = size
        self.present = {}       # timeline -> sorted segment numbers
        self.misfits = []       # segment names impossible with this segment size
        self.history_tls = set()
        self.histories = {}     # timeline -> parse_history entries, where readable
        for wal_file in wal_files:
            if wal_file.kind == 'history':
                self.history_tls.add(wal_file.timeline)
            elif wal_file.kind == 'segment':
                if fits(wal_file, size):
                    self.present.setdefault(wal_file.timeline, []).append(segno(wal_file, size))
                else:
                    self.misfits.append(wal_file.name)
        for numbers in self.present.values():
            numbers.sort()

    def name(self, timeline, number):
        return segment_name(timeline, number, self.size)

    def target_timeline(self, timeline):
        """The timeline recovery to ``latest`` ends on: probing history files upwards."""
        while timeline + 1 in self.history_tls:
            timeline += 1
        return timeline

    def path(self, anchor):
        """``(target timeline, [(timeline, first, end)], inferred, problem)``: the segment ranges
        recovery reads from ``anchor``'s start, ``end`` exclusive (None: open). ``problem`` when
        PostgreSQL would refuse the target timeline."""
        start = anchor.log * per_log(self.size) + anchor.seg
        target = self.target_timeline(anchor.timeline)
        if target == anchor.timeline:
            return target, [(target, start, None)], False, None
        entries = self.histories.get(target)
        problem = None
        if entries is None:
            # each later timeline begins at its lowest segment from the start on (what is below the
            # start is not read, and retention may have removed it)
            tls, begins = [anchor.timeline], [0]
            for timeline in range(anchor.timeline + 1, target + 1):
                numbers = self.present.get(timeline, [])
                index = bisect.bisect_left(numbers, start)
                if index < len(numbers):
                    tls.append(timeline)
                    begins.append(max(numbers[index], begins[-1]))
        else:
            tls = [p for p, dummy in entries] + [target]
            begins = [0] + [lsn // self.size for dummy, lsn in entries]
            if anchor.timeline not in tls:
                return target, [], False, (
                    'timeline %d is the newest (%08X.history), and it does not descend from timeline %d of base '
                    'backup %s: PostgreSQL refuses to recover to latest ("requested timeline %d is not a child of '
                    'this server\'s history")' % (target, target, anchor.timeline, anchor.backup, target))
            index = tls.index(anchor.timeline)
            tls, begins = tls[index:], [0] + begins[index + 1:]
            if len(begins) > 1 and begins[1] < start:
                problem = ('timeline %d branched off timeline %d at segment %s, before base backup %s started (%s): '
                           'PostgreSQL refuses to recover it to latest'
                           % (tls[1], anchor.timeline, self.name(anchor.timeline, begins[1]), anchor.backup,
                              anchor.start))
                return target, [], False, problem
        ranges = []
        for index, timeline in enumerate(tls):
            low = max(begins[index], start)
            high = begins[index + 1] if index + 1 < len(tls) else None
            if high is None or high > low:
                ranges.append((timeline, low, high))
        return target, ranges, entries is None, problem

    def follow(self, anchor):
        """How far recovery from ``anchor`` gets: a dict with ``target`` (timeline), ``newest``
        (the newest archived segment on its path), ``reached`` (the last segment before the
        first gap), ``first_missing``, ``gaps`` [(timeline, first, last)], ``inferred``,
        ``problem``; segments as (timeline, number)."""
        target, ranges, inferred, problem = self.path(anchor)
        result = {'target': target, 'newest': None, 'reached': None, 'first_missing': None, 'gaps': [],
                  'inferred': inferred, 'problem': problem, 'ranges': ranges}
        if not ranges:
            return result
        newest, last_range = None, None
        for position in range(len(ranges) - 1, -1, -1):
            timeline, low, high = ranges[position]
            numbers = self.present.get(timeline, [])
            index = len(numbers) if high is None else bisect.bisect_left(numbers, high)
            if index and numbers[index - 1] >= low:
                newest, last_range = (timeline, numbers[index - 1]), position
                break
        if newest is None:  # nothing archived from the start on
            result['first_missing'] = (ranges[0][0], ranges[0][1])
            result['gaps'] = [(ranges[0][0], ranges[0][1], None)]
            return result
        result['newest'] = newest
        for position in range(last_range + 1):
            timeline, low, high = ranges[position]
            last = newest[1] if position == last_range else high - 1
            numbers = self.present.get(timeline, [])
            index = bisect.bisect_left(numbers, low)
            expect = low
            while index < len(numbers) and numbers[index] <= last:
                if numbers[index] > expect:
                    result['gaps'].append((timeline, expect, numbers[index] - 1))
                if not result['gaps']:
                    result['reached'] = (timeline, numbers[index])
                expect = numbers[index] + 1
                index += 1
            if expect <= last:
                result['gaps'].append((timeline, expect, last))
        if result['gaps']:
            result['first_missing'] = result['gaps'][0][:2]
        return result

    def timelines(self):
        found = sorted(set(self.present) | self.history_tls)
        return [{'timeline': t, 'segments': len(self.present.get(t, [])),
                 'first': self.name(t, self.present[t][0]) if self.present.get(t) else None,
                 'last': self.name(t, self.present[t][-1]) if self.present.get(t) else None,
                 'history': t in self.history_tls} for t in found]


# -- reading a repository --------------------------------------------------------------------
def read_manifest(repo, set_name, stored):
    """The checked manifest of a listed WAL file: wal.loads, plus a parseable ``created``, the
    timeline of its name, and a payload of the recorded size. IntegrityError otherwise."""
    where = repo.location(stored.manifest.key)
    manifest = wal.loads(repo.get_bytes(stored.manifest.key), where, set_name, stored.name)
    try:
        mf.parse_time(manifest['created'])
    except (ConfigError, TypeError, AttributeError):
        raise IntegrityError('WAL manifest %s has no readable time (created %r)' % (where, manifest['created']),
                             'the object is damaged')
    size, raw_size = manifest['size'], manifest['raw_size']
    if (not _count(size) or not _count(raw_size) or not isinstance(manifest['sha256'], str)
            or not isinstance(manifest['raw_sha256'], str) or not isinstance(manifest.get('encryption') or {}, dict)
            or manifest.get('timeline') not in (None, stored.file.timeline)):
        raise IntegrityError('WAL manifest %s is not well-formed: size %r, raw_size %r, sha256 %r, raw_sha256 %r, '
                             'encryption %r, timeline %r (of %s)'
                             % (where, size, raw_size, manifest['sha256'], manifest['raw_sha256'],
                                manifest.get('encryption'), manifest.get('timeline'), stored.name),
                             'the object is damaged or was not written by wal-push')
    payload = wal.directory(set_name) + manifest['artifact']
    sizes = [o.size for o in stored.payloads if o.key == payload]
    if not sizes:
        raise IntegrityError('WAL file %s has a manifest but no payload %s' % (where, manifest['artifact']),
                             'the payload was deleted or never landed; another repository may hold a good copy')
    if sizes[0] != size:
        raise IntegrityError('the payload of %s has %s bytes, its manifest records %s' % (where, sizes[0], size),
                             'the copy is damaged; another repository may hold a good copy')
    return manifest


def _count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_history(repo, set_name, stored, enc, manifest=None):
    """The entries of a history file, fetched and proven as wal-fetch does; ValueError or
    BackupError when it cannot be read (encrypted without a key) or is not a history.
    ``manifest``: its read_manifest, when the caller has it already."""
    manifest = manifest or read_manifest(repo, set_name, stored)
    if manifest['raw_size'] > MAX_HISTORY_BYTES:
        raise IntegrityError('%s records %r bytes: not a timeline history file' % (stored.name, manifest['raw_size']))
    fd, path = tempfile.mkstemp(prefix='offsite-history-')
    os.close(fd)
    try:
        key = wal.directory(set_name) + manifest['artifact']
        wal._fetch_one(repo, key, manifest, path, enc, repo.location(key))
        with open(path, 'rb') as handle:
            text = handle.read(MAX_HISTORY_BYTES + 1).decode('utf-8', 'replace')
    finally:
        if os.path.exists(path):
            os.unlink(path)
    return parse_history(text, stored.file.timeline)


def _time(value):
    return mf.format_time(value) if value else None


def inspect(repo, set_name, backups, enc, check_manifests=False, stored=None, verifier=None):
    """The recovery window of ``set_name`` in ``repo`` from its trusted ``backups`` (newest
    first) and its WAL: the dict backup_info returns as ``recovery_window`` (None when the set
    has neither WAL nor base backups here), and a list of problems (verify's failures: a gap
    in a base backup's path, damaged manifests; only with ``check_manifests`` are all
    manifests read, and with a ``verifier`` (signing.Verifier) their signatures checked as
    wal-fetch checks them: a file wal-fetch would refuse counts as missing)."""
    if stored is None:
        stored, dummy = wal.list_stored(repo, set_name)
    manifests = {}

    def manifest_of(name):
        """read_manifest once per file: verify reads them all, then the chains' ends again."""
        if name not in manifests:
            manifests[name] = read_manifest(repo, set_name, stored[name])
        return manifests[name]

    anchors, problems, notes = [], [], []
    for backup in backups:
        anchor, problem = anchor_of(backup)
        if anchor:
            anchors.append(anchor)
        elif problem:
            problems.append(problem)
    if not stored and not anchors and not problems:
        return None, []
    size, size_from = choose_segment_size(anchors)
    damaged, unauthentic = {}, []
    if check_manifests:
        for name in sorted(stored):
            if stored[name].manifest is None:
                continue
            try:
                manifest = manifest_of(name)
            except Exception as exc:  # storage is input: whatever a manifest holds ends here
                damaged[name] = _said(exc)
                problems.append('WAL file %s is damaged: %s' % (name, _said(exc)))
                continue
            # the very check wal-fetch makes before it serves the file (None without trusted keys)
            forged = verifier.problem(wal._Signed(set_name, name, manifest)) if verifier else None
            if forged:
                damaged[name] = forged
                unauthentic.append(name)
                problems.append('WAL file %s is not authentic (wal-fetch refuses it): %s' % (name, forged))
    complete = [s.file for s in stored.values() if s.complete and s.name not in damaged]
    archive = Archive(complete, size)
    for name in archive.misfits:
        problems.append('WAL file %s is no segment name with %d-byte segments (%s)' % (name, size, size_from))
    unreadable = []
    for timeline in sorted(archive.history_tls):
        entry = stored[wal_history_name(timeline)]
        try:
            archive.histories[timeline] = read_history(repo, set_name, entry, enc, manifest_of(entry.name))
        except ConfigError:  # encrypted, and no key here (backup_info never has one)
            unreadable.append(timeline)
        except Exception as exc:  # damaged, forged, not a history: reported, never a crash
            unreadable.append(timeline)
            problems.append('timeline history %s cannot be read: %s' % (entry.name, _said(exc)))
    if unreadable:
        notes.append('timeline history files %s could not be read here; switches between timelines are '
                     'inferred from the segment names' % ', '.join(wal_history_name(t) for t in unreadable))
    times = {}

    def pushed(point):
        if point is None:
            return None
        name = archive.name(*point)
        if name not in times:
            try:
                times[name] = mf.parse_time(manifest_of(name)['created'])
            except Exception as exc:
                problems.append('WAL file %s: %s' % (name, _said(exc)))
                times[name] = None
        return times[name]

    bases, gaps = [], []
    for anchor in anchors:
        chain = archive.follow(anchor)
        reached_time = pushed(chain['reached'])
        latest = max([t for t in (anchor.stop_time, reached_time) if t is not None], default=None)
        entry = {'id': anchor.backup, 'stop_time': _time(anchor.stop_time), 'start_segment': anchor.start,
                 'timeline': anchor.timeline, 'recovery_timeline': chain['target'],
                 'reaches_segment': archive.name(*chain['reached']) if chain['reached'] else None,
                 'reaches_time': _time(latest),
                 'newest_segment': archive.name(*chain['newest']) if chain['newest'] else None,
                 'first_missing': archive.name(*chain['first_missing']) if chain['first_missing'] else None,
                 'switches_inferred': chain['inferred'], '_latest': latest}
        if chain['problem']:
            entry['problem'] = chain['problem']
            problems.append(chain['problem'])
        elif chain['first_missing']:
            if chain['newest'] is None:
                problems.append('no WAL is archived from segment %s on (the start of base backup %s): it can be '
                                'recovered to the end of its own backup only' % (entry['first_missing'], anchor.backup))
            else:
                problems.append('segment %s is missing: recovery from base backup %s ends at %s, before the newest '
                                'archived segment %s' % (entry['first_missing'], anchor.backup,
                                                         entry['reaches_segment'] or 'its own end',
                                                         entry['newest_segment']))
        for timeline, first, last in chain['gaps']:
            gap = {'timeline': timeline, 'first_missing': archive.name(timeline, first),
                   'last_missing': archive.name(timeline, last) if last is not None else None,
                   'segments': last - first + 1 if last is not None else None}
            if gap not in gaps:
                gaps.append(gap)
        bases.append(entry)
    oldest = bases[-1] if bases else None
    best = max(bases, key=lambda b: (b['_latest'] is not None, b['_latest'] or 0, b['id'])) if bases else None
    for entry in bases:
        entry.pop('_latest')
    if not anchors:
        notes.append('no base backup of %s here: the WAL anchors no point in time' % set_name)
    if size_from.startswith('assumed'):
        notes.append('segment size %s' % size_from)
    window = {
        'set': set_name, 'location': repo.location(wal.directory(set_name)),
        'files': sum(1 for s in stored.values() if s.manifest is not None),
        'segments': sum(len(v) for v in archive.present.values()),
        'stored_bytes': sum(s.stored_bytes for s in stored.values()),
        'segment_size': size, 'segment_size_from': size_from,
        'timelines': archive.timelines(),
        'earliest': oldest['stop_time'] if oldest else None,
        'earliest_backup': oldest['id'] if oldest else None,
        'latest': best['reaches_time'] if best else None,
        'latest_segment': best['reaches_segment'] if best else None,
        # the DR drill's names (playbooks/tasks/point_in_time.yml)
        'newest_wal': best['reaches_segment'] if best else None,
        'earliest_timestamp': mf.parse_time(oldest['stop_time']).timestamp() if oldest and oldest['stop_time'] else None,
        'latest_timestamp': mf.parse_time(best['reaches_time']).timestamp() if best and best['reaches_time'] else None,
        'continuous': bool(oldest) and not oldest.get('problem') and oldest['first_missing'] is None,
        'gaps': gaps, 'base_backups': bases, 'notes': notes,
    }
    if damaged:
        window['damaged'] = sorted(damaged)
    if unauthentic:
        window['unauthentic'] = unauthentic
    return window, problems


def _said(exc):
    """A BackupError's message; anything else (a bug meeting hostile input) with its type."""
    return str(exc) if isinstance(exc, (BackupError, ValueError)) else '%s: %s' % (type(exc).__name__, exc)


def wal_history_name(timeline):
    return '%08X.history' % timeline
