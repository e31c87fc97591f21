# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``retention`` and ``plan`` use cases: a policy applied to a repository's backups
(locks, proven backups, incomplete leftovers) or planned over a list; cost estimates."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import datetime

from .. import costs
from .. import manifest as mf
from .. import wal, walchain
from ..catalog import Catalog, legacy_timezone
from ..commands import CommandLog
from ..errors import BackupError, ConfigError
from ..locks import lock_horizon
from ..repositories import open_repository
from ..retention import BackupRef, PolicyError, plan_retention
from ..signing import Verifier

DEFAULT_GRACE_HOURS = 24


def _refs(items):
    return [BackupRef(b.id, b.created, tuple(b.tags), b.proven_key is not None) for b in items]


ESTIMATE_KEYS = ('providers', 'backup_size', 'interval_hours', 'growth_percent_per_month', 'days', 'start', 'prices')


def estimate_cost(estimate, policy, timezone='UTC', newest=None):
    """``estimate`` options (ESTIMATE_KEYS) priced by costs.estimate; ``backup_size`` defaults to
    the size of ``newest``, the newest complete backup in the repository."""
    options = dict((k, v) for k, v in (estimate or {}).items() if v is not None)
    unknown = sorted(str(k) for k in options if k not in ESTIMATE_KEYS)
    if unknown:
        raise ConfigError('estimate_cost: unknown option(s) %s; valid: %s' % (', '.join(unknown), ', '.join(ESTIMATE_KEYS)))
    size_from = 'backup_size'
    if not options.get('backup_size'):
        if newest is None:
            raise ConfigError('estimate_cost needs backup_size: there is no complete backup to take the size from',
                              'give estimate_cost.backup_size in bytes (the size of one compressed backup)')
        options['backup_size'] = newest.size
        size_from = 'backup %s' % newest.id
    result = costs.estimate(policy, timezone=timezone, **options)
    result['backup_size_from'] = size_from
    return result


def plan(backups, policy, timezone='UTC', now=None, estimate=None, clock_skew=None, log=None):
    """Planning only (no repository): ``backups`` is a list of {id, time, tags}. Runs no
    command: ``log`` (the caller's executed_commands) stays empty."""
    try:
        refs = [BackupRef(str(b['id']), mf.parse_time(b['time']), tuple(b.get('tags') or ())) for b in backups]
        result = plan_retention(refs, policy, tz=timezone, now=now, clock_skew=mf.clock_skew(clock_skew)).as_dict()
    except (KeyError, TypeError) as exc:
        raise ConfigError('each entry of backups needs id and time (%s)' % exc)
    except PolicyError as exc:
        raise ConfigError(str(exc))
    result['changed'] = False
    if estimate:
        result['cost'] = estimate_cost(estimate, policy, timezone)
    return result


def retention(name, repository, policy, timezone='UTC', incomplete_grace=DEFAULT_GRACE_HOURS,
              check_mode=False, now=None, estimate=None, clock_skew=None, signing=None, log=None, grace_hours=None):
    """Apply ``policy`` to the complete backups of ``name``; clean incomplete leftovers older than
    ``incomplete_grace`` hours (the module's and the job file's name; ``grace_hours`` is its older one).

    With trusted keys (``signing``), a backup not signed by one of them takes no part: it is
    never the newest, fills no slot, and is never deleted (reported in ``unauthentic``)."""
    now = now or mf.utcnow()
    grace_hours = incomplete_grace if grace_hours is None else grace_hours
    check_grace(grace_hours)
    log = log or CommandLog()
    verifier = Verifier(signing, log, required=True)
    with open_repository(repository, log) as repo:
        catalog = Catalog(repo, name, legacy_tz=legacy_timezone(repository), clock_skew=clock_skew, now=now)
        problems = [(b, verifier.problem(b)) for b in catalog.complete]
        unauthentic = [dict(id=b.id, problem=problem) for b, problem in problems if problem]
        complete = [b for b, problem in problems if not problem]
        try:
            # the newest proven backup and every suspect one are kept by the planner
            decided = plan_retention(_refs(complete), policy, tz=timezone, now=now, clock_skew=catalog.clock_skew)
        except PolicyError as exc:
            raise ConfigError(str(exc))
        newest = next((b for b in complete if not b.suspect), None)  # not catalog.latest(): it may be unauthentic
        # before any deletion: a bad estimate_cost option must not leave a half-applied policy
        cost = estimate_cost(estimate, policy, timezone, newest) if estimate else None
        remove_ids = set(b.id for b in decided.remove)
        if newest is not None and newest.id in remove_ids:  # deleting it would be unrecoverable
            raise BackupError('internal error: retention planned to delete the newest backup %s' % newest.id)
        by_id = dict((b.id, b) for b in complete)
        cutoff = now - datetime.timedelta(hours=grace_hours)
        leftovers = [b for b in catalog.incomplete if b.manifest_key is None and b.modified < cutoff]
        partials = [o for o in catalog.leftovers if o.modified < cutoff]
        removed, cleaned, locked = [], [], []
        for backup_id in sorted(remove_ids, key=lambda i: by_id[i].created):
            backup = by_id[backup_id]
            keys = [k for k in (backup.manifest_key, backup.artifact_key, backup.proven_key) if k]
            # asked before deleting anything: deleting the manifest of a backup whose artifact
            # is locked would leave an invisible orphan that is billed and never cleaned
            until = [u for u in (repo.locked_until(k) for k in keys) if u is not None]
            if until:
                locked.append({'id': backup_id, 'retain_until': mf.format_time(max(until))})
                continue
            if not check_mode:
                # manifest first: an interrupted deletion leaves an incomplete backup, never a
                # complete-looking one without data
                for key in keys:
                    repo.delete(key)
                removed.append(backup_id)
        # after the base backups: what remains of them decides which WAL is still needed
        gone = set(removed) if not check_mode else remove_ids - set(entry['id'] for entry in locked)
        wal_result = _wal_retention(repo, name, catalog, gone, check_mode)
        lock_extended = _extend_locks(repo, by_id, decided, policy, now, repository, check_mode)
        aborted = repo.abort_incomplete_uploads(name + '/', cutoff, dry_run=check_mode)
        if not check_mode:
            for key in [b.artifact_key for b in leftovers] + [o.key for o in partials]:
                if repo.locked_until(key) is None:  # a locked leftover waits for its lock to expire
                    repo.delete(key)
                    cleaned.append(key)
        result = dict(decided.as_dict(), **{
            'changed': bool(len(locked) < len(remove_ids) or cleaned or lock_extended or aborted
                            or (check_mode and (leftovers or partials)) or (wal_result and wal_result['remove'])),
            'removed': removed,
            'locked': locked,
            'lock_extended': lock_extended,
            'incomplete_uploads_aborted': aborted,
            'incomplete': [b.artifact_key for b in leftovers] + [o.key for o in partials],
            'incomplete_removed': cleaned,
            'kept_as_proven': decided.kept_as_proven,
            'damaged': [dict(id=b.id, problem=b.problem) for b in catalog.incomplete if b.manifest_key],
            'location': repo.location(name),
        })
        if wal_result is not None:
            result['wal'] = wal_result
            if wal_result.get('note'):
                result.setdefault('warnings', []).append(wal_result['note'])
        if unauthentic:
            result['unauthentic'] = unauthentic
            result.setdefault('warnings', []).append(
                '%d backup(s) of %s are not signed by a trusted key and were left alone: %s'
                % (len(unauthentic), name, '; '.join(u['problem'] for u in unauthentic[:5])))
        if cost:
            result['cost'] = cost
        if catalog.suspect:
            result.setdefault('warnings', []).extend(
                '%s; it is kept and not counted as the newest backup: check it, and delete it '
                'by hand if it is bogus' % catalog.describe_suspect(b) for b in catalog.suspect)
        return result


def _wal_retention(repo, name, catalog, gone, check_mode):
    """The WAL of ``name`` (``.wal/<name>/``) that no remaining base backup needs, deleted oldest
    first, each file's manifest before its payload (docs/pitr.md, "Retention"). Only for a set
    with base backups (a manifest recording ``wal_start``); None otherwise. ``gone``: the ids
    this run deletes (or would). Nothing outside the set's WAL directory is touched."""
    if not walchain.has_base_backups(catalog.backups):
        return None
    stored, dummy = wal.list_stored(repo, name)
    result = {'location': repo.location(wal.directory(name)), 'files': len(stored), 'remove': [], 'removed': [],
              'locked': [], 'kept': len(stored), 'removed_bytes': 0, 'oldest_needed': None, 'anchor': None}
    anchors, problems = [], []
    for backup in catalog.complete:  # every complete base backup this run leaves, whatever kept it
        if backup.id in gone:
            continue
        anchor, problem = walchain.anchor_of(backup)
        if anchor:
            anchors.append(anchor)
        elif problem:
            problems.append(problem)
    if problems or not anchors:
        if stored:
            result['note'] = ('all %d WAL files of %s in %s are kept: %s' % (
                len(stored), name, result['location'], '; '.join(problems[:3]) if problems else
                'no complete base backup of the set is kept there, so nothing says which WAL is needed'))
        return result
    oldest = min(anchors, key=lambda a: (a.log, a.seg, a.timeline))
    result['oldest_needed'], result['anchor'] = oldest.start, oldest.backup
    keep, remove = walchain.plan_retention([s.file for s in stored.values()], anchors)
    for wal_file in remove:
        entry = stored[wal_file.name]
        keys = [o.key for o in entry.objects]
        until = [u for u in (repo.locked_until(k) for k in keys) if u is not None]
        if until:  # nothing of a locked file is deleted: its manifest would go and its payload stay
            result['locked'].append({'file': wal_file.name, 'retain_until': mf.format_time(max(until))})
            continue
        result['remove'].append(wal_file.name)
        result['removed_bytes'] += entry.stored_bytes
        if not check_mode:
            for key in keys:  # manifest first: what is left of an interrupted run is no archived file
                repo.delete(key)
            result['removed'].append(wal_file.name)
    result['kept'] = len(stored) - len(result['remove'])
    return result


def check_grace(hours):
    """``incomplete_grace``: hours before an incomplete upload is removed; 0 or more."""
    if isinstance(hours, bool) or not isinstance(hours, int) or hours < 0:
        raise ConfigError('incomplete_grace is %r; it must be a whole number of hours, 0 or more' % (hours,),
                          'a negative grace would delete uploads still running; the default is %d'
                          % DEFAULT_GRACE_HOURS)


def _extend_locks(repo, by_id, decided, policy, now, repository, check_mode):
    """Backups kept as monthly or yearly copies stay locked for as long as the policy keeps them."""
    extended = []
    for ref in decided.keep:
        backup = by_id[ref.id]
        horizon = lock_horizon(backup.created, decided.reasons.get(ref.id, ()), policy, now,
                               repository.get('object_lock_days'))
        if horizon is None:
            continue
        done = [repo.extend_lock(k, horizon, dry_run=check_mode) for k in (backup.artifact_key, backup.manifest_key) if k]
        if any(done):
            extended.append({'id': ref.id, 'retain_until': mf.format_time(horizon)})
    return extended
