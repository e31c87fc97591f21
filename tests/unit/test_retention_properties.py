# Copyright (c) offsite.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Properties of the retention planner over generated backup sets and policies (issue 12, item 2).

Backup sets: irregular times over 400 days, several backups in one second (``-N`` ids), backups
dated in the future (inside and beyond ``clock_skew``), seed-script (legacy) ids, tags, proven
markers; policies: any mix of the rules (counts including -1, durations, tags, keep_days), in
several time zones. Invariants:

* every backup is either kept or removed, never both; every suspect backup is kept;
* the newest backup that is not suspect, and the newest proven one, are always kept;
* applying the plan and planning again removes nothing more;
* the plan does not depend on the order of the listing.

The agreement with restic itself (``restic forget --dry-run``) on the inputs restic accepts is
in tests/integration/test_restic.py.

Reproducing a failure: the examples come from ``SEED`` (random per run unless the environment
sets ``RETENTION_PROPERTY_SEED``); a failure shows ``seed <N>`` in its falsifying example, and
``RETENTION_PROPERTY_SEED=<N> pytest tests/unit/test_retention_properties.py`` runs the same
examples again (Hypothesis' ``@reproduce_failure`` blob is printed too).
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import datetime
import os
import random

from hypothesis import HealthCheck, given, note, seed, settings, strategies as st

from ansible_collections.offsite.backup.plugins.module_utils._engine import manifest as mf
from ansible_collections.offsite.backup.plugins.module_utils._engine.retention import (
    PROVEN_REASON, BackupRef, plan_retention)

SEED = int(os.environ.get('RETENTION_PROPERTY_SEED') or random.SystemRandom().randrange(2 ** 32))
UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 12, 6, 6, 0, 0, tzinfo=UTC)
SKEW = datetime.timedelta(hours=1)
ZONES = ['UTC', 'Europe/Paris', 'Pacific/Honolulu', 'Australia/Lord_Howe']  # Lord Howe: 30-minute DST
PROPERTIES = settings(max_examples=300, deadline=None, print_blob=True,
                      suppress_health_check=[HealthCheck.too_slow])

# seconds relative to NOW: mostly the past, some within the tolerance, some far ahead
offsets = st.one_of(
    st.integers(-400 * 86400, 0),
    st.integers(-3 * 86400, 0),                       # dense: several per hour and day
    st.integers(1, int(SKEW.total_seconds())),        # ahead, but within clock_skew
    st.integers(int(SKEW.total_seconds()) + 1, 3 * 365 * 86400),  # suspect
)
entries = st.tuples(offsets, st.integers(0, 2),        # extra backups in the same second
                    st.booleans(),                    # legacy (seed script) id
                    st.sets(st.sampled_from(['prod', 'db', 'monthly'])),
                    st.booleans())                    # proven marker


@st.composite
def backup_sets(draw):
    refs = {}
    for offset, extra, legacy, tags, proven in draw(st.lists(entries, max_size=40)):
        when = NOW + datetime.timedelta(seconds=offset)
        for seq in range(extra + 1):
            if legacy:
                backup_id = 's_backup_%s' % when.strftime('%Y%m%d_%H%M%S') + ('_%d' % seq if seq else '')
            else:
                backup_id = mf.make_id('s', when, seq)
            refs[backup_id] = BackupRef(backup_id, when, tuple(sorted(tags)), proven and draw(st.booleans()))
    return list(refs.values())


counts = st.one_of(st.none(), st.integers(-1, 6))
durations = st.one_of(st.none(), st.sampled_from(['0d', '2h', '1d', '3d12h', '7d', '1m', '1y', '2m3d']))
policies = st.fixed_dictionaries({}, optional={
    'keep_last': counts, 'keep_hourly': counts, 'keep_daily': counts, 'keep_weekly': counts,
    'keep_monthly': counts, 'keep_yearly': counts,
    'keep_within': durations, 'keep_within_hourly': durations, 'keep_within_daily': durations,
    'keep_within_weekly': durations, 'keep_within_monthly': durations, 'keep_within_yearly': durations,
    'keep_tags': st.lists(st.sampled_from(['prod', 'db', 'prod,db', '']), max_size=2),
    'keep_days': st.one_of(st.none(), st.integers(0, 30)),
})


def planner_property(*more):
    """The seed, the settings and the generated (backups, policy, tz, *more) of every test here."""
    def decorate(test):
        return seed(SEED)(PROPERTIES(given(backup_sets(), policies, st.sampled_from(ZONES), *more)(test)))
    return decorate


def _plan(backups, policy, tz):
    return plan_retention(backups, policy, tz=tz, now=NOW, clock_skew=SKEW)


def _newest(refs):
    return max(refs, key=lambda r: (r.time, r.id)) if refs else None


@planner_property()
def test_kept_and_removed_partition_and_the_ones_that_matter_are_kept(backups, policy, tz):
    note('seed %d' % SEED)
    plan = _plan(backups, policy, tz)
    kept, removed = set(b.id for b in plan.keep), set(b.id for b in plan.remove)
    assert not kept & removed
    assert kept | removed == set(b.id for b in backups)
    assert set(plan.reasons) == kept
    suspect = [b for b in backups if b.time > NOW + SKEW]
    assert set(b.id for b in plan.suspect) == set(b.id for b in suspect) <= kept
    trusted = [b for b in backups if b not in suspect]
    if trusted:
        assert _newest(trusted).id in kept
    proven = _newest([b for b in trusted if b.proven])
    if proven is not None:
        assert proven.id in kept
        if plan.kept_as_proven:
            assert plan.kept_as_proven == proven.id and plan.reasons[proven.id] == [PROVEN_REASON]
    assert [b.id for b in plan.keep] == [b.id for b in sorted(plan.keep, key=lambda r: (r.time, r.id), reverse=True)]


@planner_property()
def test_planning_again_after_applying_removes_nothing_more(backups, policy, tz):
    note('seed %d' % SEED)
    first = _plan(backups, policy, tz)
    again = _plan(first.keep, policy, tz)
    assert again.remove == []
    assert set(b.id for b in again.keep) == set(b.id for b in first.keep)


@planner_property(st.randoms(use_true_random=False))
def test_the_order_of_the_listing_does_not_matter(backups, policy, tz, rng):
    note('seed %d' % SEED)
    shuffled = list(backups)
    rng.shuffle(shuffled)
    one, two = _plan(backups, policy, tz), _plan(shuffled, policy, tz)
    assert one.as_dict() == two.as_dict() and one.kept_as_proven == two.kept_as_proven
