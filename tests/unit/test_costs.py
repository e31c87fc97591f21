# Copyright (c) offsite.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Cost estimates: every expected figure below is computed by hand in the comments, several from
the seed runbooks' own estimates (shared/seeds/001: "54 x 20GB = 1.08TB, S3 Standard $24.84/mois,
B2 $5.40/mois")."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import pytest

from ansible_collections.offsite.backup.plugins.module_utils._engine import costs
from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import ConfigError
from ansible_collections.offsite.backup.plugins.module_utils._engine.prices import GB, GIB, PRICES, TB

SEED_POLICY = {'keep_daily': 30, 'keep_weekly': 12, 'keep_monthly': 12}
JAN_2027 = '2027-01-01T03:00:00Z'  # a Friday; 2027 is not a leap year


def estimate(policy, size, **options):
    options.setdefault('start', JAN_2027)
    return costs.estimate(policy, size, **options)


def test_the_seeds_by_hand_estimate_is_reproduced_with_their_prices():
    # 54 snapshots of 20 GB (decimal) = 1080 GB; at $0.023 -> $24.84, at B2's old $0.005 -> $5.40.
    # keep_last 54 holds 54 backups from day 54 on, so February (days 32-59) is not yet full, but
    # every day of March..December stores exactly 54 x 20 GB.
    prices = {'s3_standard': {'gb_bytes': GB}, 'b2': {'storage_per_gb_month': 0.005, 'free_bytes': 0}}
    result = estimate({'keep_last': 54}, 20 * GB, providers=['s3_standard', 'b2'], prices=prices)
    assert result['backups_kept'] == 54
    assert result['stored_bytes_end'] == 1080 * GB
    s3, b2 = result['providers']['s3_standard'], result['providers']['b2']
    assert [m['month'] for m in s3['monthly']][-1] == '2027-12'
    # December: storage 24.84 + requests 31 backups x 2 PUTs x $0.005/1000 = 0.00031
    assert s3['monthly'][-1]['storage'] == pytest.approx(24.84)
    assert s3['monthly'][-1]['requests'] == pytest.approx(0.0003)
    assert b2['last_month'] == pytest.approx(5.40)
    assert b2['currency'] == 'USD' and s3['currency'] == 'USD'


def test_the_seed_policy_keeps_47_backups_not_the_54_counted_by_hand():
    # Daily backups through 2027, checked on Friday 2027-12-31 (restic forget semantics):
    #   keep_daily 30  : Dec 2 .. Dec 31                                   30
    #   keep_weekly 12 : ISO weeks W41..W52; W48..W52 end inside the daily span,
    #                    W41..W47 add their Sundays Oct 17 .. Nov 28        7
    #   keep_monthly 12: Jan..Dec month ends; Dec 31 is daily, Oct 31 (a Sunday) is weekly,
    #                    the other 10 (Jan 31 .. Sep 30, Nov 30) are new   10
    # = 47 backups, 940 GB, not the 54 (1080 GB) of the seed, which counts overlaps twice.
    result = estimate(SEED_POLICY, 20 * GB, providers=['b2'])
    assert result['backups_made'] == 365
    assert result['backups_kept'] == 47
    assert result['stored_bytes_end'] == 940 * GB
    # December holds 45 to 47 backups as weeks and days roll over; B2 bills its average minus
    # the 10 GB free tier at $0.006 (at most (940 - 10) x 0.006 = $5.58)
    december = result['months'][-1]
    assert december['backups_kept'] == 47 and december['stored_bytes_max'] == 940 * GB
    assert 45 * 20 * GB <= december['stored_bytes_average'] <= 47 * 20 * GB
    assert result['providers']['b2']['last_month'] == pytest.approx(
        (december['stored_bytes_average'] - 10 * GB) / GB * 0.006, abs=1e-4)


def test_storage_is_the_daily_average_and_glacier_bills_its_90_days_minimum():
    # keep_last 7, 1 GiB a day, January only. Stored at day ends: 1, 2, .. 7, then 7 GiB for
    # the 24 days Jan 8..31 -> 28 + 168 = 196 GiB-days; storage = 196 / 31 x $0.0036.
    # From Jan 8 each backup removes one that lived 7 days: 24 removals, each billed for the
    # 83 missing days at 1/30 of the monthly price: 24 x 0.0036 x 83 / 30.
    # Requests: 31 backups x 2 PUTs x $0.03/1000.
    result = estimate({'keep_last': 7}, GIB, days=31, providers=['s3_glacier'])
    january = result['providers']['s3_glacier']['monthly'][0]
    assert january['days'] == 31
    assert january['storage'] == pytest.approx(196 / 31.0 * 0.0036, abs=1e-4)
    assert january['early_deletion'] == pytest.approx(24 * 0.0036 * 83 / 30.0, abs=1e-4)
    assert january['requests'] == pytest.approx(31 * 2 * 0.03 / 1000, abs=1e-4)
    assert result['providers']['s3_glacier']['total'] == pytest.approx(
        january['storage'] + january['early_deletion'] + january['requests'], abs=1e-4)
    # the same set on S3 Standard has no minimum duration
    standard = estimate({'keep_last': 7}, GIB, days=31, providers=['s3_standard'])
    assert standard['providers']['s3_standard']['monthly'][0]['early_deletion'] == 0


def test_backups_kept_longer_than_the_minimum_pay_no_early_deletion():
    # keep_last 100 with daily backups: removals start on day 101 and each lived 100 days > 90
    result = estimate({'keep_last': 100}, GB, providers=['s3_glacier', 'wasabi'])
    for provider in ('s3_glacier', 'wasabi'):
        assert all(m['early_deletion'] == 0 for m in result['providers'][provider]['monthly'])


def test_hetzner_is_a_flat_price_per_box_prorated_and_warns_when_one_box_is_not_enough():
    result = estimate({'keep_last': 3}, 10 * GB, providers=['hetzner_bx11'])
    box = result['providers']['hetzner_bx11']
    assert box['currency'] == 'EUR'
    assert [m['total'] for m in box['monthly']] == [3.81] * 12
    assert box['total'] == pytest.approx(12 * 3.81)
    assert box['restore_newest'] == 0 and box['warnings'] == []
    # 10 days of a 31-day month: 10/31 of the month
    short = estimate({'keep_last': 3}, 10 * GB, days=10, providers=['hetzner_bx11'])
    assert short['providers']['hetzner_bx11']['total'] == pytest.approx(3.81 * 10 / 31, abs=1e-4)
    # 3 x 400 GB = 1.2 TB from Jan 3 on: two boxes
    big = estimate({'keep_last': 3}, 400 * GB, days=31, providers=['hetzner_bx11'])
    box = big['providers']['hetzner_bx11']
    assert box['monthly'][0]['total'] == pytest.approx(2 * 3.81)
    assert box['warnings'] == ['2027-01: %d bytes stored need 2 boxes of %d bytes' % (1200 * GB, TB)]


def test_free_tier_and_minimum_billed_size():
    # 3 x 1 GB: within B2's 10 GB free
    result = estimate({'keep_last': 3}, GB, providers=['b2'])
    assert result['providers']['b2']['total'] == 0
    # at most 365 GB, nothing deleted: Wasabi bills at least 1 TB a month = $6.99
    result = estimate({'keep_last': -1}, GB, providers=['wasabi'])
    assert result['stored_bytes_end'] == 365 * GB
    assert [m['total'] for m in result['providers']['wasabi']['monthly']] == [6.99] * 12
    assert result['providers']['wasabi']['last_month'] == pytest.approx(6.99)


def test_restore_cost_is_retrieval_plus_egress_of_the_newest_backup():
    result = estimate({'keep_last': 2}, 10 * GIB, days=5, providers=['s3_standard', 's3_glacier', 'b2'])
    assert result['providers']['s3_standard']['restore_newest'] == pytest.approx(10 * 0.09)
    assert result['providers']['s3_glacier']['restore_newest'] == pytest.approx(10 * (0.01 + 0.09))
    assert result['providers']['b2']['restore_newest'] == 0


def test_growth_compounds_monthly_and_cadence_is_honoured():
    # 12 months of 10 % growth: the backup made 365 days after the first is 1.1^12 times bigger
    grown = estimate({'keep_last': 1}, 1000 * GB, days=366, growth_percent_per_month=10, providers=['b2'])
    assert grown['stored_bytes_end'] == pytest.approx(1000 * GB * 1.1 ** 12, rel=1e-9)
    # every 6 hours for 2 days: 8 backups, keep_last 4 keeps 4
    frequent = estimate({'keep_last': 4}, GB, days=2, interval_hours=6, providers=['b2'])
    assert frequent['backups_made'] == 8 and frequent['backups_kept'] == 4


def test_the_seed_scripts_30_day_find_delete():
    # find -mtime +30 -delete keeps 31 daily files, which keep_days 31 reproduces
    result = estimate({'keep_days': 31}, GB, providers=['b2'])
    assert result['backups_kept'] == 31 and result['backups_kept_max'] == 31


def test_a_user_provider_and_overrides_do_not_touch_the_shipped_table():
    prices = {'ovh': {'currency': 'EUR', 'storage_per_gb_month': 0.007, 'gb_bytes': GB},
              's3_standard': {'storage_per_gb_month': '0.025'}}
    result = estimate({'keep_last': 10}, GB, providers=['ovh', 's3_standard'], prices=prices)
    assert result['providers']['ovh']['last_month'] == pytest.approx(10 * 0.007)
    assert result['providers']['ovh']['name'] == 'ovh'
    assert result['providers']['s3_standard']['monthly'][-1]['storage'] == pytest.approx(10 * GB / GIB * 0.025, abs=1e-4)
    assert PRICES['s3_standard']['storage_per_gb_month'] == 0.023


def test_every_provider_by_default():
    assert sorted(estimate({'keep_last': 1}, GB, days=1)['providers']) == sorted(PRICES)


@pytest.mark.parametrize('call, message', [
    (dict(providers=['s3_platinum']), 'unknown provider(s) s3_platinum; known: b2,'),
    (dict(prices={'b2': {'storage_per_tb': 6}}), 'prices.b2: unknown field(s) storage_per_tb'),
    (dict(prices={'b2': {'storage_per_gb_month': 'cheap'}}), "prices.b2.storage_per_gb_month: 'cheap' is not a number"),
    (dict(prices={'b2': {'storage_per_gb_month': -1}}), 'prices.b2.storage_per_gb_month: -1 is below the minimum 0'),
    (dict(prices={'b2': 6}), 'prices.b2: expected a mapping of price fields'),
    (dict(prices={'ovh': {'storage_per_gb_month': 0.007, 'gb_bytes': GB}}), 'prices.ovh: a currency is needed'),
    (dict(prices={'ovh': {'currency': 'EUR'}}), 'prices.ovh: give storage_per_gb_month or flat_per_month'),
    (dict(prices={'box': {'currency': 'EUR', 'flat_per_month': 3}}), 'prices.box: flat_per_month needs capacity_bytes'),
    (dict(policy={'keep_daily': -5}), 'keep_daily: -5 is not allowed'),
    (dict(policy={'keep_forever': 1}), 'unknown retention policy key(s) keep_forever'),
    (dict(size=0), 'backup_size: 0 is below the minimum 1'),
    (dict(size='big'), "backup_size: 'big' is not a number"),
    (dict(days=4000), 'days: 4000 is more than the 3660 days'),
    (dict(interval_hours=0), 'interval_hours: 0 is below the minimum 1'),
    (dict(growth_percent_per_month=-100), 'growth_percent_per_month: -100 is below the minimum -99'),
    (dict(start='next tuesday'), "start: 'next tuesday' is not an ISO-8601 time"),
    (dict(timezone='Mars/Olympus'), "unknown time zone 'Mars/Olympus'"),
])
def test_bad_input_is_a_config_error(call, message):
    policy = call.pop('policy', {'keep_last': 3})
    size = call.pop('size', GB)
    call.setdefault('days', 3)
    with pytest.raises(ConfigError) as caught:
        estimate(policy, size, **call)
    assert message in caught.value.message
    assert caught.value.kind == 'config'
