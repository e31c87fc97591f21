# Copyright (c) offsite.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure retention planner with restic ``forget`` semantics.

No Ansible imports and no I/O: the Ansible modules and the plain-Python cron
runner both call :func:`plan_retention` and then apply its decisions. Grouping
(host, set name, ...) is the caller's job: pass one backup set per call.

Policy keys (all optional; ``None`` means the rule is not used):

``keep_last``, ``keep_hourly``, ``keep_daily``, ``keep_weekly``, ``keep_monthly``, ``keep_yearly``
    Counts as restic's ``--keep-*``: ``0`` turns the rule off, ``-1`` (or the
    string ``"unlimited"``) keeps every bucket, other negatives are errors.
    Calendar buckets are taken in the time zone ``tz``: hour = date + wall-clock
    hour, day = date, week = ISO year + ISO week (Monday-Sunday, so 2024-12-30
    is 2025-W01), month, year. Only buckets holding a backup count; the newest
    backup of each bucket is kept until the count is used up.
``keep_within``, ``keep_within_hourly`` ... ``keep_within_yearly``
    restic durations (``"30d"``, ``"1y6m"``, ``"2d12h"``), measured back from the
    NEWEST backup (not from now), as restic does. ``keep_within`` keeps every
    backup after the cut-off, the ``_hourly`` ... ``_yearly`` variants keep the
    newest backup of each bucket after it. ``"0d"`` turns the rule off.
``keep_tags``
    As restic's ``--keep-tag``: a list of entries, each a list of tags or a
    comma-separated string (``"prod,db"`` means both). A backup is kept when it
    has ALL tags of ANY entry. The entry ``""`` matches untagged backups.
``keep_days``
    Ours, for the seed scripts' ``find -mtime +N -delete``: keeps every backup
    whose age measured from ``now`` (default: the current UTC time) is at most N
    x 24 hours. Unlike ``keep_within`` this is relative to NOW, so when backups
    stop, old ones still age out (the safety rule below keeps the newest one).
    ``find -mtime +N`` effectively keeps up to N+1 days (it rounds ages down
    to whole days); use ``keep_days: N+1`` for exactly the same files.
    ``0`` turns the rule off.

Semantics follow restic's ``ApplyPolicy`` (internal/data/snapshot_policy.go):

* backups are walked newest first; equal times are ordered by id descending so
  plans are deterministic. Each backup counts separately for ``keep_last``;
  only the first of equal-time backups fills a calendar bucket;
* duration cut-offs use Go's ``AddDate`` calendar arithmetic in ``tz`` for
  years/months/days (2024-03-31 minus ``1m`` is "Feb 31" = 2024-03-02), then
  subtract hours as absolute time. The bound is EXCLUSIVE: a backup exactly at
  the cut-off is outside. Backups dated after ``now`` are not used as the
  reference "newest" (clock skew), like restic; they are always inside;
* oldest rule (restic 0.16+): the oldest backup is also kept when a bucket rule
  (count rule with counts left, including ``-1``; or a ``keep_within_*`` bucket
  rule whose window contains it) would otherwise drop it because it shares a
  bucket with a newer kept backup. Its reason is prefixed ``oldest``. With
  ``keep_last`` this never applies: every backup is its own bucket;
* a backup is kept if any rule keeps it; reasons accumulate.

Ours, beyond restic:

* a backup dated more than ``clock_skew`` (default 1 hour) after ``now`` is
  *suspect* (a server whose clock jumped ahead, an edited manifest): it is
  always kept (never deleted automatically: a human decides), but takes no
  part in the rules -- it is not the newest, fills no ``keep_last`` or
  calendar slot, and is not the reference of the ``keep_within`` windows --
  so one bogus date can never push the real backups out. Its reason is
  ``"suspect: dated <time>, more than <skew> in the future"``;
* the newest backup that is not suspect is always kept; when no rule kept it
  its reason is ``"newest backup"`` (e.g. a ``keep_tags``-only policy);
* the newest backup marked ``proven`` (a drill restored it) that is not
  suspect is always kept, reason ``"newest backup proven restorable by a drill"``;
* an empty policy (no rule, or every rule off) keeps everything with reason
  ``"no policy"`` -- restic refuses to run instead; we never delete on it.

Reason strings (restic's wording, ``<d>`` is the normalised duration, e.g. ``7d``):
``"last snapshot"``, ``"hourly snapshot"``, ``"daily snapshot"``,
``"weekly snapshot"``, ``"monthly snapshot"``, ``"yearly snapshot"``,
``"oldest <unit> snapshot"``, ``"within <d>"``, ``"<unit> within <d>"``,
``"oldest <unit> within <d>"``, ``"has tags [a, b]"``,
``"within <N> days of now"`` (keep_days), ``"newest backup"``, ``"no policy"``,
``"newest backup proven restorable by a drill"``, ``"suspect: ..."``.
"""

from __future__ import (absolute_import, division, print_function)
from __future__ import annotations

__metaclass__ = type

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone, tzinfo

from .manifest import clock_skew as parse_clock_skew, format_duration

UNITS = ("hourly", "daily", "weekly", "monthly", "yearly")
COUNT_KEYS = ("keep_last",) + tuple("keep_" + u for u in UNITS)
WITHIN_KEYS = ("keep_within",) + tuple("keep_within_" + u for u in UNITS)
POLICY_KEYS = COUNT_KEYS + WITHIN_KEYS + ("keep_tags", "keep_days")
# the rules by the type of their value: counts (whole numbers) and durations (DURATION_SYNTAX)
COUNTS = COUNT_KEYS + ("keep_days",)
DURATIONS = WITHIN_KEYS

DURATION_SYNTAX = ("a duration like restic's: whole numbers each followed by y (years), "
                   "m (months), d (days) or h (hours), e.g. '30d', '1y6m', '2d12h'")

# Calendar bucket of a local (tz-aware, already converted) time, per unit.
BUCKETS = {
    "hourly": lambda t: (t.year, t.month, t.day, t.hour),
    "daily": lambda t: (t.year, t.month, t.day),
    "weekly": lambda t: tuple(t.isocalendar()[:2]),
    "monthly": lambda t: (t.year, t.month),
    "yearly": lambda t: t.year,
}


DEFAULT_CLOCK_SKEW = parse_clock_skew(None)  # 1 hour, as every module's clock_skew
PROVEN_REASON = "newest backup proven restorable by a drill"


class PolicyError(ValueError):
    """Invalid retention policy, duration or time zone; the message is for operators."""


@dataclass(frozen=True)
class BackupRef:
    """One backup as the planner sees it."""
    id: str
    time: datetime  # timezone-aware
    tags: tuple = ()
    proven: bool = False  # a drill restored it (its proven marker exists)


@dataclass(frozen=True)
class Duration:
    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0

    def __str__(self):
        parts = zip((self.years, self.months, self.days, self.hours), "ymdh")
        return "".join("%d%s" % (n, u) for n, u in parts if n)

    @property
    def zero(self):
        return not (self.years or self.months or self.days or self.hours)

    def before(self, ref, zone):
        """UTC cut-off ``ref - self`` (Go ``AddDate`` in ``zone``, then hours); None if before year 1."""
        local = ref.astimezone(zone)
        month0 = local.year * 12 + local.month - 1 - self.years * 12 - self.months
        try:
            # Go normalises month overflow into the year, then adds day overflow as days.
            day = date(month0 // 12, month0 % 12 + 1, 1) + timedelta(days=local.day - 1 - self.days)
            wall = datetime.combine(day, local.time()).replace(tzinfo=zone)
            return wall.astimezone(timezone.utc) - timedelta(hours=self.hours)
        except (ValueError, OverflowError):
            return None


@dataclass(frozen=True)
class Policy:
    keep_last: int = None
    keep_hourly: int = None
    keep_daily: int = None
    keep_weekly: int = None
    keep_monthly: int = None
    keep_yearly: int = None
    keep_within: Duration = None
    keep_within_hourly: Duration = None
    keep_within_daily: Duration = None
    keep_within_weekly: Duration = None
    keep_within_monthly: Duration = None
    keep_within_yearly: Duration = None
    keep_tags: tuple = ()  # tuple of tuples of tags
    keep_days: int = None

    @property
    def empty(self):
        return (not any(getattr(self, k) for k in COUNT_KEYS + ("keep_days", "keep_tags"))
                and all(getattr(self, k) is None or getattr(self, k).zero for k in WITHIN_KEYS))


@dataclass
class RetentionPlan:
    keep: list = field(default_factory=list)     # BackupRef, newest first
    remove: list = field(default_factory=list)   # BackupRef, newest first
    reasons: dict = field(default_factory=dict)  # id of each kept backup -> [reason, ...]
    suspect: list = field(default_factory=list)  # BackupRef dated too far in the future, newest first
    kept_as_proven: str = None  # id of the newest proven backup, kept although no rule kept it

    def as_dict(self):
        return {
            "keep": [b.id for b in self.keep],
            "remove": [b.id for b in self.remove],
            "reasons": {k: list(v) for k, v in self.reasons.items()},
            "suspect": [b.id for b in self.suspect],
        }


def parse_duration(text):
    """Parse a restic duration such as ``"1y2m3d4h"``; raise PolicyError otherwise."""
    if not isinstance(text, str):
        raise PolicyError("%r is not a duration: expected %s" % (text, DURATION_SYNTAX))
    compact = text.strip()
    if not re.fullmatch(r"([0-9]+[ymdh])+", compact):
        raise PolicyError("%r is not a valid duration: expected %s" % (text, DURATION_SYNTAX))
    values = {}
    for number, unit in re.findall(r"([0-9]+)([ymdh])", compact):
        if unit in values:
            raise PolicyError("%r is not a valid duration: unit %r given twice; expected %s"
                              % (text, unit, DURATION_SYNTAX))
        values[unit] = int(number)
    return Duration(values.get("y", 0), values.get("m", 0), values.get("d", 0), values.get("h", 0))


def _count(key, value):
    if isinstance(value, str) and value.strip().lower() == "unlimited":
        return -1
    if isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]+\s*", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyError("%s: %r is not a count; use a whole number >= 0, or -1 ('unlimited') "
                          "to keep all" % (key, value))
    if value < -1:
        raise PolicyError("%s: %d is not allowed; use a whole number >= 0 (0 turns the rule off), "
                          "or -1 ('unlimited') to keep all" % (key, value))
    return value


def _tags(value):
    entries = [value] if isinstance(value, str) else value
    if not isinstance(entries, (list, tuple)):
        raise PolicyError("keep_tags: expected a list of tag lists or comma-separated strings, "
                          "got %r" % (value,))
    result = []
    for entry in entries:
        if isinstance(entry, str):
            entry = [t.strip() for t in entry.split(",")]  # restic's --keep-tag a,b
        if not isinstance(entry, (list, tuple)) or not all(isinstance(t, str) for t in entry):
            raise PolicyError("keep_tags: entry %r is not a list of tags or a comma-separated "
                              "string" % (entry,))
        if not entry:  # would match every backup; use "" to match untagged backups
            raise PolicyError("keep_tags: an empty tag list would keep every backup; "
                              "use '' to keep untagged backups")
        result.append(tuple(entry))
    return tuple(result)


def parse_policy(policy):
    """Validate a policy dict (keys in the module docstring) into a Policy."""
    if isinstance(policy, Policy):
        return policy
    if policy is None:
        policy = {}
    if not isinstance(policy, dict):
        raise PolicyError("retention policy must be a mapping of keep_* rules, got %r" % (policy,))
    unknown = sorted(str(k) for k in policy if k not in POLICY_KEYS)
    if unknown:
        raise PolicyError("unknown retention policy key(s) %s; valid keys: %s"
                          % (", ".join(unknown), ", ".join(POLICY_KEYS)))
    values = {}
    for key, value in policy.items():
        if value is None:
            continue
        if key in COUNT_KEYS:
            values[key] = _count(key, value)
        elif key in WITHIN_KEYS:
            try:
                values[key] = parse_duration(value)
            except PolicyError as exc:
                raise PolicyError("%s: %s" % (key, exc)) from None
        elif key == "keep_tags":
            values[key] = _tags(value)
        else:
            days = _count(key, value)
            if days < 0:
                raise PolicyError("keep_days: %d is not allowed; use a number of days >= 0" % days)
            values[key] = days
    return Policy(**values)


def _zone(tz):
    if isinstance(tz, tzinfo):
        return tz
    if tz in ("UTC", "Etc/UTC", None):
        return timezone.utc
    try:  # imported here: wal-push (a process per WAL segment) never needs it
        from zoneinfo import ZoneInfo
    except ImportError:  # pragma: no cover  (Python < 3.9: only UTC)
        raise PolicyError("time zone %r needs Python 3.9+ (zoneinfo); use 'UTC'" % (tz,))
    try:
        return ZoneInfo(tz)
    except (KeyError, ValueError, TypeError, OSError):
        raise PolicyError("unknown time zone %r: use an IANA name such as 'Europe/Paris' or 'UTC'"
                          % (tz,)) from None


def _aware(value, what):
    if isinstance(value, str):
        try:  # Python < 3.11 fromisoformat does not accept a trailing Z
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError("%s: %r is not an ISO-8601 time" % (what, value)) from None
    if not isinstance(value, datetime):
        raise ValueError("%s: expected a datetime or ISO-8601 string, got %r" % (what, value))
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def _ref(item):
    if isinstance(item, BackupRef):
        when = _aware(item.time, "backup %s time" % item.id)
        return item if when is item.time else BackupRef(item.id, when, tuple(item.tags), item.proven)
    if not isinstance(item, dict) or "id" not in item or "time" not in item:
        raise ValueError("backup %r: expected a BackupRef or a dict with id and time" % (item,))
    return BackupRef(str(item["id"]), _aware(item["time"], "backup %s time" % item["id"]),
                     tuple(item.get("tags") or ()), bool(item.get("proven")))


def plan_retention(backups, policy, tz="UTC", now=None, clock_skew=DEFAULT_CLOCK_SKEW):
    """Decide which backups of one set to keep and remove (see module docstring)."""
    policy = parse_policy(policy)
    zone = _zone(tz)
    now = datetime.now(timezone.utc) if now is None else _aware(now, "now").astimezone(timezone.utc)
    if not isinstance(clock_skew, timedelta) or clock_skew < timedelta(0):
        raise PolicyError("clock_skew must be a duration of 0 or more, not %r" % (clock_skew,))

    refs = [_ref(b) for b in backups]
    seen = set()
    for r in refs:
        if r.id in seen:
            raise ValueError("backup id %r appears twice in one backup set" % r.id)
        seen.add(r.id)
    # Compare in UTC: aware datetimes sharing a tzinfo compare by wall clock, wrong at DST folds.
    utc = {r.id: r.time.astimezone(timezone.utc) for r in refs}
    refs.sort(key=lambda r: (utc[r.id], r.id), reverse=True)
    ordered = list(refs)

    plan = RetentionPlan()
    horizon = now + clock_skew
    plan.suspect = [r for r in refs if utc[r.id] > horizon]
    for ref in plan.suspect:  # kept, and out of every rule: a wrong clock must not push real backups out
        plan.reasons[ref.id] = ["suspect: dated %s, more than %s in the future"
                                % (utc[ref.id].strftime("%Y-%m-%dT%H:%M:%SZ"), format_duration(clock_skew))]
    refs = [r for r in refs if utc[r.id] <= horizon]
    if policy.empty:
        plan.reasons.update((r.id, ["no policy"]) for r in refs)
        refs = []

    # restic ignores backups from the future when picking the newest (clock skew); None = none left,
    # in which case (as in restic, whose reference is then year 1) every backup is inside the windows.
    past = [utc[r.id] for r in refs if utc[r.id] <= now]
    newest = max(past) if past else None

    def cutoff(duration):
        return None if newest is None else duration.before(newest, zone)

    within = None
    if policy.keep_within is not None and not policy.keep_within.zero:
        within = (str(policy.keep_within), cutoff(policy.keep_within))
    days_cutoff = now - timedelta(days=policy.keep_days) if policy.keep_days else None

    # [unit, count left (-1 = unlimited), bucket of the last backup this rule kept]
    counted = [["last", policy.keep_last, None]]
    counted += [[u, getattr(policy, "keep_" + u), None] for u in UNITS]
    counted = [c for c in counted if c[1]]
    # [unit, duration text, cut-off, bucket of the last backup this rule kept]
    windowed = [[u, d, cutoff(d), None] for u, d in
                ((u, getattr(policy, "keep_within_" + u)) for u in UNITS) if d is not None and not d.zero]

    last_index = len(refs) - 1
    newest_proven = next((r.id for r in refs if r.proven), None)
    for nr, ref in enumerate(refs):
        t = utc[ref.id]
        local = t.astimezone(zone)
        oldest = nr == last_index
        why = ["has tags [%s]" % ", ".join(tags) for tags in policy.keep_tags if _has_tags(ref, tags)]
        if within and (within[1] is None or t > within[1]):
            why.append("within %s" % within[0])
        if days_cutoff is not None and t >= days_cutoff:
            why.append("within %d days of now" % policy.keep_days)

        for rule in counted:
            unit, left, last = rule
            if left == 0:  # count used up
                continue
            bucket = nr if unit == "last" else BUCKETS[unit](local)
            # restic also keeps the oldest backup while the rule has counts left,
            # to stretch the kept history as far back as possible.
            if bucket != last or oldest:
                why.append(("oldest " if bucket == last else "") + unit + " snapshot")
                rule[1] = left - 1 if left > 0 else left
                rule[2] = bucket

        for rule in windowed:
            unit, duration, limit, last = rule
            if limit is None or t > limit:
                bucket = BUCKETS[unit](local)
                if bucket != last or oldest:
                    why.append("%s%s within %s" % ("oldest " if bucket == last else "", unit, duration))
                    rule[3] = bucket

        if nr == 0 and not why:
            why.append("newest backup")  # ours: never delete the newest backup of a set
        if not why and ref.id == newest_proven:
            why.append(PROVEN_REASON)  # ours: the one a drill proved good survives any policy
            plan.kept_as_proven = ref.id
        if why:
            plan.reasons[ref.id] = why
        else:
            plan.remove.append(ref)
    plan.keep = [r for r in ordered if r.id in plan.reasons]
    return plan


def _has_tags(ref, tags):
    # restic HasTags: all tags present; the empty tag matches only untagged backups.
    return all((tag == "" and not ref.tags) or tag in ref.tags for tag in tags)
