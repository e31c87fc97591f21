# Copyright (c) offsite.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Table-driven tests for the retention planner (restic ``forget`` semantics).

Expected results are derived by hand from restic's rules (internal/data/snapshot_policy.go,
doc/060_forget.rst); a few cases restate restic's own documented examples in our own data.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import importlib.util
import pathlib
import sys
from datetime import datetime, timedelta

import pytest

try:
    from ansible_collections.offsite.backup.plugins.module_utils._engine import retention as R
except ImportError:  # plain pytest from the repository root
    _PATH = pathlib.Path(__file__).resolve().parents[2] / "plugins/module_utils/_engine/retention.py"
    _SPEC = importlib.util.spec_from_file_location("offsite_backup_retention", str(_PATH))
    R = importlib.util.module_from_spec(_SPEC)
    sys.modules[_SPEC.name] = R  # dataclasses look their module up while building classes
    _SPEC.loader.exec_module(R)

BackupRef, PolicyError, plan_retention = R.BackupRef, R.PolicyError, R.plan_retention


def ts(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def backups(*rows):
    """rows: (id, ISO time[, tag, ...])"""
    return [BackupRef(row[0], ts(row[1]), tuple(row[2:])) for row in rows]


# --- data sets --------------------------------------------------------------------------------

SAME_SECOND = backups(
    ("a", "2024-05-01T10:00:00Z"), ("b", "2024-05-01T10:00:00Z"),
    ("c", "2024-05-01T10:00:00Z"), ("old", "2024-05-01T09:00:00Z"))

# Paris leaves summer time on 2024-10-27 at 01:00Z (03:00 CEST -> 02:00 CET).
PARIS_FALL = backups(
    ("p1", "2024-10-26T21:30:00Z"),  # Paris 2024-10-26 23:30 CEST
    ("p2", "2024-10-26T22:30:00Z"),  # Paris 2024-10-27 00:30 CEST
    ("p3", "2024-10-27T22:30:00Z"),  # Paris 2024-10-27 23:30 CET
    ("p4", "2024-10-27T23:30:00Z"))  # Paris 2024-10-28 00:30 CET
PARIS_REPEATED_HOUR = backups(
    ("h0", "2024-10-26T23:30:00Z"),  # Paris 01:30 CEST
    ("h1", "2024-10-27T00:30:00Z"),  # Paris 02:30 CEST
    ("h2", "2024-10-27T01:30:00Z"),  # Paris 02:30 CET: same wall-clock hour as h1
    ("h3", "2024-10-27T02:30:00Z"))  # Paris 03:30 CET

ISO_2025_W01 = backups(
    ("w1", "2024-12-28T12:00:00Z"),  # Sat 2024-W52
    ("w2", "2024-12-29T12:00:00Z"),  # Sun 2024-W52
    ("w3", "2024-12-30T12:00:00Z"),  # Mon 2025-W01
    ("w4", "2025-01-01T12:00:00Z"))  # Wed 2025-W01
SUNDAY_NIGHT = backups(
    ("x0", "2024-12-29T10:00:00Z"),  # Sun 2024-W52 everywhere
    ("x1", "2024-12-29T23:30:00Z"),  # Sun 2024-W52 in UTC, Mon 00:30 2025-W01 in Paris
    ("x2", "2025-01-02T10:00:00Z"))  # Thu 2025-W01
ISO_2020_W53 = backups(
    ("y1", "2020-12-27T12:00:00Z"),  # Sun 2020-W52
    ("y2", "2020-12-28T12:00:00Z"),  # Mon 2020-W53
    ("y3", "2021-01-03T12:00:00Z"),  # Sun 2020-W53
    ("y4", "2021-01-04T12:00:00Z"))  # Mon 2021-W01

MONTHS = backups(
    ("m1", "2022-06-15T12:00:00Z"),
    ("m2", "2022-12-31T23:00:00Z"),  # 2023-01-01 00:00 in Paris
    ("m3", "2023-01-01T01:00:00Z"),
    ("m4", "2023-03-10T12:00:00Z"),
    ("m5", "2023-03-20T12:00:00Z"),
    ("m6", "2024-02-29T12:00:00Z"))

TWICE_A_DAY = backups(
    ("o1", "2024-06-01T08:00:00Z"), ("o2", "2024-06-01T20:00:00Z"),
    ("o3", "2024-06-02T08:00:00Z"), ("o4", "2024-06-02T20:00:00Z"),
    ("o5", "2024-06-03T08:00:00Z"), ("o6", "2024-06-03T20:00:00Z"))

WITHIN = backups(
    ("n4", "2024-03-01T12:00:00Z"),
    ("n2", "2024-03-08T12:00:00Z"),  # exactly 2d before the newest: outside (exclusive bound)
    ("n3", "2024-03-08T12:01:00Z"),
    ("n1", "2024-03-10T12:00:00Z"))
MONTH_END = backups(
    ("d", "2024-03-01T12:00:00Z"),
    ("b", "2024-03-02T12:00:00Z"),  # 2024-03-31 minus 1m = "Feb 31" = Mar 2 (Go AddDate)
    ("c", "2024-03-02T13:00:00Z"),
    ("a", "2024-03-31T12:00:00Z"))
LEAP_DAY = backups(
    ("l3", "2023-02-28T13:00:00Z"),
    ("l2", "2023-03-01T12:00:00Z"),  # 2024-02-29 minus 1y = "2023-02-29" = 2023-03-01
    ("l1", "2023-03-01T13:00:00Z"),
    ("l0", "2024-02-29T12:00:00Z"))
# Paris enters summer time on 2024-03-31: that day has 23 hours.
SPRING = backups(
    ("z2", "2024-03-30T10:30:00Z"),  # Paris 11:30 CET
    ("z1", "2024-03-31T10:00:00Z"))  # Paris 12:00 CEST

# restic's doc/060_forget.rst example: weekdays for two weeks, extra evening backup on Fridays,
# Wednesday 2025-04-30 missed.
DOC_WEEKS = backups(
    ("d01", "2025-04-21T11:00:00Z"), ("d02", "2025-04-22T11:00:00Z"),
    ("d03", "2025-04-23T11:00:00Z"), ("d04", "2025-04-24T11:00:00Z"),
    ("d05", "2025-04-25T11:00:00Z"), ("d06", "2025-04-25T23:00:00Z"),
    ("d07", "2025-04-28T11:00:00Z"), ("d08", "2025-04-29T11:00:00Z"),
    ("d09", "2025-05-01T11:00:00Z"), ("d10", "2025-05-02T11:00:00Z"),
    ("d11", "2025-05-02T23:00:00Z"))

TAGGED = backups(
    ("t1", "2024-01-01T00:00:00Z", "prod", "db"),
    ("t2", "2024-01-02T00:00:00Z", "prod"),
    ("t3", "2024-01-03T00:00:00Z"),
    ("t4", "2024-01-04T00:00:00Z", "db"),
    ("t5", "2024-01-05T00:00:00Z", "prod", "db", "weekly"),
    ("t6", "2024-01-06T00:00:00Z", "staging"))

NOW = ts("2024-06-30T03:00:00Z")
AGES = backups(
    ("k0", "2024-07-01T03:00:00Z"),  # in the future: age < 0, kept
    ("k1", "2024-06-29T03:00:00Z"),
    ("k2", "2024-06-27T03:00:00Z"),  # exactly 3 days old: kept (inclusive)
    ("k3", "2024-06-27T02:59:59Z"),
    ("k4", "2024-06-20T03:00:00Z"))
STOPPED = backups(("g2", "2024-04-30T03:00:00Z"), ("g1", "2024-05-01T03:00:00Z"))


# --- planner cases: (backups, policy, kwargs, expected keep ids newest first, expected reasons) --

CASES = [
    # keep_last: equal times count separately, ordered by id descending
    pytest.param(SAME_SECOND, {"keep_last": 2}, {}, ["c", "b"],
                 {"c": ["last snapshot"], "b": ["last snapshot"]}, id="last-2-same-second"),
    pytest.param(SAME_SECOND, {"keep_last": 3}, {}, ["c", "b", "a"], {}, id="last-3-same-second"),
    pytest.param(SAME_SECOND, {"keep_daily": 1}, {}, ["c"], {"c": ["daily snapshot"]},
                 id="daily-same-second-only-first-fills-bucket"),
    pytest.param(SAME_SECOND, {"keep_hourly": 2}, {}, ["c", "old"], {}, id="hourly-same-second"),
    pytest.param(TWICE_A_DAY, {"keep_last": 10}, {}, ["o6", "o5", "o4", "o3", "o2", "o1"],
                 {"o1": ["last snapshot"]}, id="last-more-than-available-no-oldest-wording"),

    # daily / hourly in a time zone with DST
    pytest.param(PARIS_FALL, {"keep_daily": 2}, {"tz": "Europe/Paris"}, ["p4", "p3"], {},
                 id="daily-paris-2330utc-is-next-day"),
    pytest.param(PARIS_FALL, {"keep_daily": 2}, {"tz": "UTC"}, ["p4", "p2"], {}, id="daily-utc-same-data"),
    pytest.param(PARIS_FALL, {"keep_daily": 3}, {"tz": "Europe/Paris"}, ["p4", "p3", "p1"],
                 {"p1": ["daily snapshot"]}, id="daily-paris-oldest-in-new-bucket"),
    pytest.param(PARIS_REPEATED_HOUR, {"keep_hourly": 3}, {"tz": "Europe/Paris"}, ["h3", "h2", "h0"], {},
                 id="hourly-paris-repeated-wall-clock-hour-is-one-bucket"),
    pytest.param(PARIS_REPEATED_HOUR, {"keep_hourly": 3}, {}, ["h3", "h2", "h1"], {}, id="hourly-utc"),

    # ISO weeks
    pytest.param(ISO_2025_W01, {"keep_weekly": 2}, {}, ["w4", "w2"], {}, id="weekly-2024-12-30-is-2025-W01"),
    pytest.param(ISO_2025_W01, {"keep_weekly": 3}, {}, ["w4", "w2", "w1"],
                 {"w1": ["oldest weekly snapshot"]}, id="weekly-counts-left-keeps-oldest"),
    pytest.param(SUNDAY_NIGHT, {"keep_weekly": 2}, {"tz": "Europe/Paris"}, ["x2", "x0"], {},
                 id="weekly-sunday-night-utc-is-monday-in-paris"),
    pytest.param(SUNDAY_NIGHT, {"keep_weekly": 2}, {}, ["x2", "x1"], {}, id="weekly-sunday-night-utc"),
    pytest.param(ISO_2020_W53, {"keep_weekly": 2}, {}, ["y4", "y3"], {}, id="weekly-2020-W53"),
    pytest.param(ISO_2020_W53, {"keep_weekly": 3}, {}, ["y4", "y3", "y1"],
                 {"y1": ["weekly snapshot"]}, id="weekly-2020-W52-after-W53"),

    # monthly / yearly
    pytest.param(MONTHS, {"keep_monthly": 3}, {}, ["m6", "m5", "m3"], {}, id="monthly-3"),
    pytest.param(MONTHS, {"keep_yearly": 2}, {}, ["m6", "m5"], {"m6": ["yearly snapshot"]}, id="yearly-2"),
    pytest.param(MONTHS, {"keep_yearly": 5}, {}, ["m6", "m5", "m2", "m1"],
                 {"m1": ["oldest yearly snapshot"]}, id="yearly-5-keeps-oldest-of-2022"),
    pytest.param(MONTHS, {"keep_yearly": 5}, {"tz": "Europe/Paris"}, ["m6", "m5", "m1"],
                 {"m1": ["yearly snapshot"]}, id="yearly-5-paris-new-year-eve-is-2023"),
    pytest.param(MONTHS, {"keep_monthly": 1, "keep_yearly": 3}, {}, ["m6", "m5", "m2"],
                 {"m6": ["monthly snapshot", "yearly snapshot"], "m2": ["yearly snapshot"]},
                 id="monthly-and-yearly-reasons-accumulate"),

    # -1 / "unlimited"
    pytest.param(TWICE_A_DAY, {"keep_daily": -1}, {}, ["o6", "o4", "o2", "o1"],
                 {"o1": ["oldest daily snapshot"]}, id="daily-unlimited-also-keeps-oldest"),
    pytest.param(TWICE_A_DAY, {"keep_daily": "unlimited"}, {}, ["o6", "o4", "o2", "o1"], {},
                 id="daily-unlimited-string"),
    pytest.param(TWICE_A_DAY, {"keep_last": -1}, {}, ["o6", "o5", "o4", "o3", "o2", "o1"], {},
                 id="last-unlimited-keeps-all"),
    pytest.param(TWICE_A_DAY, {"keep_hourly": -1}, {}, ["o6", "o5", "o4", "o3", "o2", "o1"],
                 {"o3": ["hourly snapshot"]}, id="hourly-unlimited"),

    # the oldest backup is kept while a bucket rule has counts left
    pytest.param(TWICE_A_DAY, {"keep_daily": 7}, {}, ["o6", "o4", "o2", "o1"],
                 {"o2": ["daily snapshot"], "o1": ["oldest daily snapshot"]}, id="daily-7-of-3-days-keeps-oldest"),
    pytest.param(TWICE_A_DAY, {"keep_daily": 3}, {}, ["o6", "o4", "o2"], {}, id="daily-3-exhausted-no-oldest"),
    pytest.param(TWICE_A_DAY, {"keep_daily": 3, "keep_weekly": 1}, {}, ["o6", "o4", "o2"],
                 {"o6": ["daily snapshot", "weekly snapshot"]}, id="daily-and-weekly-exhausted"),
    pytest.param(TWICE_A_DAY, {"keep_within_daily": "7d"}, {}, ["o6", "o4", "o2", "o1"],
                 {"o6": ["daily within 7d"], "o1": ["oldest daily within 7d"]},
                 id="within-daily-keeps-oldest-inside-window"),
    pytest.param(TWICE_A_DAY, {"keep_within_daily": "2d"}, {}, ["o6", "o4"], {},
                 id="within-daily-oldest-outside-window-not-kept"),
    # like restic's golden case keep-within-yearly 9999y: the cut-off is before year 1, so no limit
    pytest.param(TWICE_A_DAY, {"keep_within_yearly": "9999y"}, {}, ["o6", "o1"],
                 {"o6": ["yearly within 9999y"], "o1": ["oldest yearly within 9999y"]},
                 id="within-yearly-9999y-keeps-newest-and-oldest"),

    # keep_within: from the newest backup, exclusive bound, Go AddDate arithmetic
    pytest.param(WITHIN, {"keep_within": "2d"}, {"now": ts("2025-01-01T00:00:00Z")}, ["n1", "n3"],
                 {"n1": ["within 2d"], "n3": ["within 2d"]}, id="within-2d-from-newest-not-now"),
    pytest.param(WITHIN + backups(("f", "2024-03-20T00:00:00Z")), {"keep_within": "2d"},
                 {"now": ts("2024-03-11T00:00:00Z")}, ["f", "n1", "n3"], {},
                 id="within-ignores-future-backup-as-reference"),
    pytest.param(MONTH_END, {"keep_within": "1m"}, {}, ["a", "c"], {}, id="within-1m-from-march-31"),
    pytest.param(LEAP_DAY, {"keep_within": "1y"}, {}, ["l0", "l1"], {}, id="within-1y-from-leap-day"),
    pytest.param(SPRING, {"keep_within": "1d"}, {"tz": "Europe/Paris"}, ["z1"], {},
                 id="within-1d-is-calendar-day-in-tz"),
    pytest.param(SPRING, {"keep_within": "24h"}, {"tz": "Europe/Paris"}, ["z1", "z2"], {},
                 id="within-24h-is-absolute"),
    pytest.param(SPRING, {"keep_within": "1d"}, {}, ["z1", "z2"], {}, id="within-1d-utc"),
    pytest.param(WITHIN, {"keep_within": "0d", "keep_last": 1}, {}, ["n1"], {"n1": ["last snapshot"]},
                 id="within-zero-is-off"),

    # restic's documented example (doc/060_forget.rst)
    pytest.param(DOC_WEEKS, {"keep_daily": 5}, {}, ["d11", "d09", "d08", "d07", "d06"], {},
                 id="restic-doc-keep-daily-5"),
    pytest.param(DOC_WEEKS, {"keep_within_daily": "7d"}, {}, ["d11", "d09", "d08", "d07"],
                 {"d11": ["daily within 7d"]}, id="restic-doc-keep-within-daily-7d"),

    # keep_tags
    pytest.param(TAGGED, {"keep_tags": [["prod", "db"]]}, {}, ["t6", "t5", "t1"],
                 {"t6": ["newest backup"], "t5": ["has tags [prod, db]"]}, id="tags-all-of-one-list"),
    pytest.param(TAGGED, {"keep_tags": ["prod,db"]}, {}, ["t6", "t5", "t1"], {}, id="tags-comma-string"),
    pytest.param(TAGGED, {"keep_tags": "prod, db"}, {}, ["t6", "t5", "t1"], {}, id="tags-single-string"),
    pytest.param(TAGGED, {"keep_tags": ["prod", "db"]}, {}, ["t6", "t5", "t4", "t2", "t1"],
                 {"t5": ["has tags [prod]", "has tags [db]"], "t4": ["has tags [db]"]}, id="tags-any-list"),
    pytest.param(TAGGED, {"keep_tags": [""]}, {}, ["t6", "t3"], {"t3": ["has tags []"]},
                 id="tags-empty-tag-matches-untagged"),
    pytest.param(TAGGED, {"keep_tags": [["staging"]]}, {}, ["t6"], {"t6": ["has tags [staging]"]},
                 id="tags-newest-kept-by-rule"),

    # keep_days: measured from now, inclusive
    pytest.param(AGES, {"keep_days": 3}, {"now": NOW}, ["k0", "k1", "k2"],
                 {"k2": ["within 3 days of now"]}, id="keep-days-from-now"),
    pytest.param(AGES, {"keep_within": "3d"}, {"now": NOW}, ["k0", "k1", "k2", "k3"], {},
                 id="keep-within-same-data-from-newest"),
    pytest.param(STOPPED, {"keep_days": 30}, {"now": NOW}, ["g1"], {"g1": ["newest backup"]},
                 id="keep-days-stopped-backups-newest-survives"),
    pytest.param(STOPPED, {"keep_within": "30d"}, {"now": NOW}, ["g1", "g2"], {},
                 id="keep-within-stopped-backups"),

    # empty inputs
    pytest.param([], {"keep_daily": 7}, {}, [], {}, id="no-backups"),
    pytest.param(TAGGED, {}, {}, ["t6", "t5", "t4", "t3", "t2", "t1"], {"t1": ["no policy"]}, id="empty-policy"),
    pytest.param(TAGGED, {"keep_daily": 0, "keep_within": "0d", "keep_tags": [], "keep_last": None}, {},
                 ["t6", "t5", "t4", "t3", "t2", "t1"], {"t6": ["no policy"]}, id="all-rules-off-is-empty-policy"),
]


@pytest.mark.parametrize("items, policy, kwargs, keep, reasons", CASES)
def test_plan(items, policy, kwargs, keep, reasons):
    plan = plan_retention(list(reversed(items)), policy, **kwargs)  # input order must not matter
    assert [b.id for b in plan.keep] == keep
    kept = set(keep)
    everything = sorted(items, key=lambda b: (b.time, b.id), reverse=True)
    assert [b.id for b in plan.remove] == [b.id for b in everything if b.id not in kept]
    assert set(plan.reasons) == kept
    for backup_id, expected in reasons.items():
        assert plan.reasons[backup_id] == expected


# --- one year of the seed's backups: every 6 hours through 2023 (UTC) ----------------------------
# Newest: Sun 2023-12-31 18:00. Each kept backup is the 18:00 one of its day.
# prod 30/12/12: daily Dec 2..31 (30); weekly = 12 Sundays Dec 31 .. Oct 15, of which Dec 3, 10,
#   17, 24, 31 are already daily (7 new); monthly = 12 month ends, Dec 31 already daily, no other
#   is a kept Sunday (11 new). 30 + 7 + 11 = 48. Every count is used up, so the oldest is removed.
# prod with 13 months: only 12 months exist, one count left -> 2023-01-01 00:00 kept too (49).
# staging 7/4/3: daily Dec 25..31 (7); Sundays Dec 31 (dup), 24, 17, 10 (3 new); month ends
#   Dec 31 (dup), Nov 30, Oct 31 (2 new) = 12.
# dev 3/2/0: daily Dec 29..31 (3); Sundays Dec 31 (dup), Dec 24 (1 new); monthly off = 4.
YEAR = [BackupRef("2023-%04d" % i, ts("2023-01-01T00:00:00Z") + timedelta(hours=6 * i)) for i in range(365 * 4)]


@pytest.mark.parametrize("policy, tz, kept, oldest_kept", [
    pytest.param({"keep_daily": 30, "keep_weekly": 12, "keep_monthly": 12}, "UTC", 48,
                 "2023-01-31T18:00:00+00:00", id="prod"),
    pytest.param({"keep_daily": 30, "keep_weekly": 12, "keep_monthly": 12}, "Europe/Paris", 48,
                 "2023-01-31T18:00:00+00:00", id="prod-paris"),
    pytest.param({"keep_daily": 30, "keep_weekly": 12, "keep_monthly": 13}, "UTC", 49,
                 "2023-01-01T00:00:00+00:00", id="prod-13-months-keeps-oldest"),
    pytest.param({"keep_daily": 7, "keep_weekly": 4, "keep_monthly": 3}, "UTC", 12,
                 "2023-10-31T18:00:00+00:00", id="staging"),
    pytest.param({"keep_daily": 3, "keep_weekly": 2, "keep_monthly": 0}, "UTC", 4,
                 "2023-12-24T18:00:00+00:00", id="dev"),
])
def test_one_year_every_six_hours(policy, tz, kept, oldest_kept):
    assert YEAR[-1].time == ts("2023-12-31T18:00:00Z") and len(YEAR) == 1460
    plan = plan_retention(YEAR, policy, tz=tz)
    assert len(plan.keep) == kept
    assert len(plan.remove) == 1460 - kept
    assert plan.keep[0].time == ts("2023-12-31T18:00:00Z")
    assert plan.keep[-1].time.isoformat() == oldest_kept
    for unit in ("daily", "weekly", "monthly"):
        count = policy["keep_" + unit]
        matched = sum(1 for r in plan.reasons.values() if "%s snapshot" % unit in r)
        assert matched == min(count, 12) if unit == "monthly" else matched == count


def test_year_reasons_prod():
    plan = plan_retention(YEAR, {"keep_daily": 30, "keep_weekly": 12, "keep_monthly": 12})
    by_time = {b.time.isoformat()[:10]: plan.reasons[b.id] for b in plan.keep}
    assert by_time["2023-12-31"] == ["daily snapshot", "weekly snapshot", "monthly snapshot"]
    assert by_time["2023-12-03"] == ["daily snapshot", "weekly snapshot"]
    assert by_time["2023-11-30"] == ["monthly snapshot"]
    assert by_time["2023-10-15"] == ["weekly snapshot"]
    assert "2023-10-08" not in by_time and "2023-12-01" not in by_time


# --- inputs ---------------------------------------------------------------------------------------

def test_dict_inputs_and_as_dict():
    items = [
        {"id": "x", "time": "2024-01-01T00:00:00Z"},
        {"id": "y", "time": datetime(2024, 1, 2)},  # naive: UTC
        {"id": "z", "time": "2024-01-01T23:30:00-01:00", "tags": ["prod"]},  # 2024-01-02T00:30Z
    ]
    plan = plan_retention(items, {"keep_last": 1})
    assert plan.keep == [BackupRef("z", ts("2024-01-01T23:30:00-01:00"), ("prod",))]
    assert plan.as_dict() == {"keep": ["z"], "remove": ["y", "x"], "reasons": {"z": ["last snapshot"]},
                              "suspect": []}


def test_local_times_in_repeated_hour_are_ordered_by_instant():
    # Both are 02:30 wall clock in Paris on 2024-10-27; Python compares aware datetimes that
    # share a tzinfo by wall clock, so the planner must order by the UTC instant.
    paris = pytest.importorskip("zoneinfo").ZoneInfo("Europe/Paris")
    earlier = BackupRef("q2", datetime(2024, 10, 27, 2, 30, tzinfo=paris))          # 00:30Z CEST
    later = BackupRef("q1", datetime(2024, 10, 27, 2, 30, fold=1, tzinfo=paris))   # 01:30Z CET
    plan = plan_retention([earlier, later], {"keep_last": 1}, tz="Europe/Paris")
    assert [b.id for b in plan.keep] == ["q1"]


def test_policy_object_and_parse_duration():
    policy = R.parse_policy({"keep_within": " 4h3d ", "keep_daily": "7", "keep_tags": ["a, b", ["c"]]})
    assert policy.keep_within == R.Duration(days=3, hours=4) and str(policy.keep_within) == "3d4h"
    assert policy.keep_daily == 7 and policy.keep_tags == (("a", "b"), ("c",))
    assert R.parse_policy(policy) is policy
    assert str(R.parse_duration("1y2m3d4h")) == "1y2m3d4h"
    assert R.parse_duration("1y1d1m") == R.Duration(years=1, months=1, days=1)


@pytest.mark.parametrize("policy, tz, culprit", [
    pytest.param({"keep_within": "5x"}, "UTC", "keep_within: '5x'", id="bad-duration-unit"),
    pytest.param({"keep_within": "2w"}, "UTC", "'2w'", id="weeks-are-not-a-unit"),
    pytest.param({"keep_within": "1d2d"}, "UTC", "'d' given twice", id="duration-unit-twice"),
    pytest.param({"keep_within_daily": "-1d"}, "UTC", "keep_within_daily: '-1d'", id="negative-duration"),
    pytest.param({"keep_within": ""}, "UTC", "keep_within: ''", id="empty-duration"),
    pytest.param({"keep_within": 30}, "UTC", "keep_within: 30 is not a duration", id="duration-not-string"),
    pytest.param({"keep_daily": -2}, "UTC", "keep_daily: -2", id="negative-count"),
    pytest.param({"keep_daily": "seven"}, "UTC", "keep_daily: 'seven'", id="count-not-a-number"),
    pytest.param({"keep_daily": True}, "UTC", "keep_daily: True", id="count-bool"),
    pytest.param({"keep_days": -1}, "UTC", "keep_days: -1", id="negative-keep-days"),
    pytest.param({"keep_dayly": 7, "keep_daily": 7}, "UTC", "keep_dayly", id="unknown-key"),
    pytest.param({"keep_tags": 5}, "UTC", "keep_tags", id="tags-not-a-list"),
    pytest.param({"keep_tags": [[]]}, "UTC", "keep_tags: an empty tag list", id="tags-empty-entry"),
    pytest.param(["keep_daily"], "UTC", "must be a mapping", id="policy-not-a-dict"),
    pytest.param({"keep_daily": 7}, "Mars/Olympus", "'Mars/Olympus'", id="bad-timezone"),
    pytest.param({"keep_daily": 7}, "../etc/passwd", "'../etc/passwd'", id="bad-timezone-path"),
])
def test_invalid_policy(policy, tz, culprit):
    with pytest.raises(PolicyError) as err:
        plan_retention(SAME_SECOND, policy, tz=tz)
    assert culprit in str(err.value)
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("text", ["5x", "", "d", "1.5d", "3 d", "-1d", None])
def test_parse_duration_errors_state_the_syntax(text):
    with pytest.raises(PolicyError, match="y \\(years\\), m \\(months\\), d \\(days\\) or h \\(hours\\)"):
        R.parse_duration(text)


@pytest.mark.parametrize("items, message", [
    pytest.param([{"id": "a", "time": "yesterday"}], "backup a time: 'yesterday'", id="bad-time"),
    pytest.param([{"time": "2024-01-01"}], "expected a BackupRef or a dict", id="missing-id"),
    pytest.param(SAME_SECOND + SAME_SECOND[:1], "'a' appears twice", id="duplicate-id"),
])
def test_invalid_backups(items, message):
    with pytest.raises(ValueError) as err:
        plan_retention(items, {"keep_last": 1})
    assert message in str(err.value)
