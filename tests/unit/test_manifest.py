# Copyright (c) offsite.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Manifest, ids, names, legacy seed-script names and time parsing (pure logic)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import datetime
import json

import pytest

from ansible_collections.offsite.backup.plugins.module_utils._engine import manifest as mf
from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import ConfigError, IntegrityError

UTC = datetime.timezone.utc
try:
    from zoneinfo import ZoneInfo
except ImportError:  # pragma: no cover
    ZoneInfo = None


def utc(*args):
    return datetime.datetime(*args, tzinfo=UTC)


# -- ids -------------------------------------------------------------------------------------
@pytest.mark.parametrize('name, created, seq, expected', [
    ('crm', utc(2026, 11, 23, 3, 0, 0), 0, 'crm_20261123T030000Z'),
    ('crm', utc(2026, 11, 23, 3, 0, 0), 1, 'crm_20261123T030000Z-1'),
    ('crm', utc(2026, 11, 23, 3, 0, 0), 12, 'crm_20261123T030000Z-12'),
    ('my-app_db', utc(2024, 2, 29, 23, 59, 59), 0, 'my-app_db_20240229T235959Z'),
    # a local time is stored as UTC: 04:00 in Paris (CET) is 03:00Z
    ('crm', datetime.datetime(2026, 11, 23, 4, 0, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=1))), 0,
     'crm_20261123T030000Z'),
], ids=['plain', 'same-second-1', 'same-second-12', 'name-with-dash-underscore', 'offset-to-utc'])
def test_make_id_and_parse_id_round_trip(name, created, seq, expected):
    backup_id = mf.make_id(name, created, seq)
    assert backup_id == expected
    parsed_name, parsed_created = mf.parse_id(backup_id)
    assert parsed_name == name
    assert parsed_created == created.replace(microsecond=0)
    assert parsed_created.tzinfo is not None


def test_make_id_drops_sub_second_part():
    assert mf.make_id('crm', utc(2026, 11, 23, 3, 0, 0, 999999)) == 'crm_20261123T030000Z'


@pytest.mark.parametrize('text', [
    'crm_20261123T030000',          # no Z
    'crm_20261123_030000',          # legacy stamp, not an id
    'crm-20261123T030000Z',         # no underscore before the stamp
    '_20261123T030000Z',            # no name
    'crm_20261123T030000Z-',        # dangling sequence dash
    'crm_20261123T030000Z.dump',    # an artifact name, not an id
    '',
], ids=['no-z', 'legacy-stamp', 'dash-separator', 'no-name', 'dangling-dash', 'with-extension', 'empty'])
def test_parse_id_rejects_other_strings(text):
    assert mf.parse_id(text) is None


def test_keys_and_id_from_key():
    backup_id = mf.make_id('crm', utc(2026, 11, 23, 3), 1)
    assert mf.artifact_key('crm', backup_id, 'dump.zst') == 'crm/crm_20261123T030000Z-1.dump.zst'
    assert mf.manifest_key('crm', backup_id) == 'crm/crm_20261123T030000Z-1.manifest.json'
    assert mf.id_from_key(mf.artifact_key('crm', backup_id, 'dump.zst')) == backup_id
    assert mf.id_from_key(mf.manifest_key('crm', backup_id)) == backup_id


# -- names -----------------------------------------------------------------------------------
@pytest.mark.parametrize('name', ['crm', 'CRM-prod_2', '9lives', 'a' * 100])
def test_validate_name_accepts(name):
    assert mf.validate_name(name) == name


@pytest.mark.parametrize('name', [
    '', None, 'crm.prod', 'crm/prod', '../crm', 'crm prod', '-crm', '_crm', 'a' * 101, 'crm\n',
], ids=['empty', 'none', 'dot', 'slash', 'parent', 'space', 'leading-dash', 'leading-underscore',
        'too-long', 'newline'])
def test_validate_name_rejects(name):
    with pytest.raises(ConfigError) as err:
        mf.validate_name(name)
    assert 'letters, digits' in str(err.value)


# -- legacy (seed script) names ----------------------------------------------------------------
@pytest.mark.parametrize('key, name, expected_id, ext', [
    ('crm_backup_20251028_140000.sql.gz', 'crm', 'crm_backup_20251028_140000', 'sql.gz'),
    ('crm_20251028_140000.sql.gz', 'crm', 'crm_20251028_140000', 'sql.gz'),
    ('crm/crm_backup_20251028_140000.sql.gz', 'crm', 'crm_backup_20251028_140000', 'sql.gz'),
    ('crm/crm_20251028_140000.sql.gz', 'crm', 'crm_20251028_140000', 'sql.gz'),
    ('crm_20251028_140000.dump', 'crm', 'crm_20251028_140000', 'dump'),
    ('crm-alforis_backup_20251028_140000.sql.gz', 'crm-alforis', 'crm-alforis_backup_20251028_140000', 'sql.gz'),
    # a set literally named after the seeds' prefix finds the seeds' files too
    ('crm_backup_20251028_140000.sql.gz', 'crm_backup', 'crm_backup_20251028_140000', 'sql.gz'),
], ids=['root-backup-form', 'root-short-form', 'dir-backup-form', 'dir-short-form', 'dump-ext',
        'dashed-name', 'set-named-crm_backup'])
def test_parse_legacy_recognises_seed_files(key, name, expected_id, ext):
    backup_id, created, found_ext = mf.parse_legacy(key, name)
    assert backup_id == expected_id
    assert found_ext == ext
    assert created == utc(2025, 10, 28, 14, 0, 0)


@pytest.mark.parametrize('key, name', [
    ('crm2_20251028_140000.sql.gz', 'crm'),
    ('crm2_backup_20251028_140000.sql.gz', 'crm'),
    ('crmx_backup_20251028_140000.sql.gz', 'crm'),
    ('crm/crm2_20251028_140000.sql.gz', 'crm'),
    ('other/crm_20251028_140000.sql.gz', 'crm'),
    ('a/crm/crm_20251028_140000.sql.gz', 'crm'),
    ('crm_20251028_140000.sql.gz', 'cr'),
    ('crm_20251028_140000.txt', 'crm'),
    ('crm_20251028_1400.sql.gz', 'crm'),
    ('crm/crm_20251028T140000Z.dump', 'crm'),
    ('crm_backup_20251028_140000.sql.gz.partial', 'crm'),
], ids=['other-set-crm2', 'other-set-crm2-backup', 'other-set-crmx-backup', 'other-set-in-our-dir',
        'other-dir', 'nested-dir', 'prefix-of-name', 'unknown-ext', 'short-time', 'our-own-id',
        'partial'])
def test_parse_legacy_rejects_other_files(key, name):
    assert mf.parse_legacy(key, name) is None


@pytest.mark.skipif(ZoneInfo is None, reason='zoneinfo needs Python 3.9+')
@pytest.mark.parametrize('stamp, expected', [
    ('20251028_140000', utc(2025, 10, 28, 13, 0, 0)),   # CET, UTC+1 (after 2025-10-26)
    ('20250715_140000', utc(2025, 7, 15, 12, 0, 0)),    # CEST, UTC+2
    ('20250101_003000', utc(2024, 12, 31, 23, 30, 0)),  # crosses the date (and year) line
], ids=['winter-cet', 'summer-cest', 'previous-day'])
def test_parse_legacy_converts_local_stamp_to_utc(stamp, expected):
    created = mf.parse_legacy('crm_backup_%s.sql.gz' % stamp, 'crm', ZoneInfo('Europe/Paris'))[1]
    assert created == expected
    assert created.utcoffset() == datetime.timedelta(0)


# -- times -----------------------------------------------------------------------------------
@pytest.mark.parametrize('text, expected', [
    ('2026-11-23T03:00:00Z', utc(2026, 11, 23, 3)),
    ('2026-11-23T03:00:00+00:00', utc(2026, 11, 23, 3)),
    ('2026-11-23T04:00:00+01:00', utc(2026, 11, 23, 3)),
    ('2026-11-22T22:00:00-05:00', utc(2026, 11, 23, 3)),
    ('20261123T030000Z', utc(2026, 11, 23, 3)),
    ('2026-11-23T03:00:00', utc(2026, 11, 23, 3)),
    ('  2026-11-23T03:00:00Z  ', utc(2026, 11, 23, 3)),
    (datetime.datetime(2026, 11, 23, 3), utc(2026, 11, 23, 3)),
], ids=['z', 'utc-offset', 'plus-offset', 'minus-offset', 'compact', 'naive-is-utc', 'whitespace',
        'naive-datetime'])
def test_parse_time_accepts(text, expected):
    parsed = mf.parse_time(text)
    assert parsed == expected
    assert parsed.tzinfo is not None


@pytest.mark.parametrize('text', ['yesterday', '', '2026-13-01T00:00:00Z', '2026-11-23T25:00:00Z', None,
                                  'crm_20261123T030000Z'],
                         ids=['word', 'empty', 'month-13', 'hour-25', 'none', 'an-id'])
def test_parse_time_rejects_garbage(text):
    with pytest.raises(ConfigError) as err:
        mf.parse_time(text)
    assert 'ISO-8601' in str(err.value)


def test_format_time_is_utc_with_z():
    paris_winter = datetime.timezone(datetime.timedelta(hours=1))
    assert mf.format_time(datetime.datetime(2026, 11, 23, 4, 0, 0, 500000, tzinfo=paris_winter)) == \
        '2026-11-23T03:00:00Z'


# -- manifest documents ----------------------------------------------------------------------
def _manifest(**changes):
    data = mf.build('crm', 'crm_20261123T030000Z', utc(2026, 11, 23, 3), 'dump.zst', 'zstd', 'custom',
                    123, 'ab' * 32, 456, {'type': 'postgresql'}, ['daily'], 1.23456)
    data.update(changes)
    return data


def test_build_dumps_loads_round_trip():
    data = _manifest()
    assert data['artifact'] == 'crm_20261123T030000Z.dump.zst'
    assert data['created'] == '2026-11-23T03:00:00Z'
    assert data['duration_seconds'] == 1.235
    assert mf.loads(mf.dumps(data), 'here') == data


@pytest.mark.parametrize('raw, message', [
    (b'{"format_version": 1,', 'not valid JSON'),
    (b'\xff\xfe not utf-8', 'not valid JSON'),
    (b'', 'not valid JSON'),
    (json.dumps({'format_version': 1, 'name': 'crm'}).encode(), 'lacks id, created, artifact, size, sha256'),
    (b'{}', 'lacks format_version'),
    (b'[]', 'not a JSON object'),
    (b'null', 'not a JSON object'),
    (b'42', 'not a JSON object'),
    (b'"format_version name id created artifact size sha256"', 'not a JSON object'),
    (mf.dumps(_manifest(format_version=mf.FORMAT_VERSION + 1)), 'upgrade the offsite.backup collection'),
    (mf.dumps(_manifest(format_version='2')), 'format version'),
    (mf.dumps(_manifest(created='last tuesday')), 'created'),
    # a newer format may write things differently: the operator is told to upgrade, not "damaged"
    (mf.dumps(_manifest(format_version=mf.FORMAT_VERSION + 1, created=1795000000)), 'upgrade'),
], ids=['truncated-json', 'not-utf8', 'empty', 'missing-keys', 'empty-object', 'list', 'null', 'number',
        'string-with-key-names', 'future-version', 'version-not-a-number', 'created-not-a-time',
        'future-version-other-fields'])
def test_loads_rejects_damaged_manifests(raw, message):
    with pytest.raises(IntegrityError) as err:
        mf.loads(raw, 's3://bucket/crm/x.manifest.json')
    assert message in str(err.value)
    assert 's3://bucket/crm/x.manifest.json' in str(err.value)
