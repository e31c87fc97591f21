# Copyright (c) offsite.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""verify's pure parts: durations, the read_data sample, the comparison of repositories."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import random

import pytest

from ansible_collections.offsite.backup.plugins.module_utils._engine import verify
from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import ConfigError


@pytest.mark.parametrize('text, seconds', [('26h', 93600), ('2d', 172800), ('90m', 5400), ('1w', 604800),
                                           ('45', 45), (3600, 3600), (None, None)])
def test_durations(text, seconds):
    assert verify.parse_duration(text) == seconds


@pytest.mark.parametrize('text', ['yesterday', '-1h', '2 days'])
def test_bad_durations(text):
    with pytest.raises(ConfigError, match='max_age'):
        verify.parse_duration(text)


@pytest.mark.parametrize('text, parsed', [('10%', ('percent', 10.0)), ('all', ('percent', 100)), ('3', ('count', 3)),
                                          (3, ('count', 3)), ('', None), ('2.5%', ('percent', 2.5))])
def test_read_data(text, parsed):
    assert verify.parse_read_data(text) == parsed


@pytest.mark.parametrize('text', ['0%', '150%', 'some', '1.5'])
def test_bad_read_data(text):
    with pytest.raises(ConfigError, match='read_data'):
        verify.parse_read_data(text)


def test_sample_always_holds_the_newest_and_rounds_up():
    backups = list(range(30))  # newest first
    for seed in range(20):
        sample = verify.choose_sample(backups, ('percent', 10), random.Random(seed))
        assert sample[0] == 0 and len(sample) == 3 and len(set(sample)) == 3
    assert verify.choose_sample(backups, ('percent', 1)) == [0]
    assert sorted(verify.choose_sample(backups, ('count', 99))) == backups
    assert verify.choose_sample([], ('count', 3)) == []
    assert verify.choose_sample(backups, None) == []
    # over many runs every backup is drawn: regular verifies cover the set
    drawn = set()
    for seed in range(200):
        drawn.update(verify.choose_sample(backups, ('count', 2), random.Random(seed)))
    assert drawn == set(backups)


def _report(location, *backups):
    return {'location': location,
            'backups': [{'id': i, 'created': c, 'sha256': s, 'status': st} for i, c, s, st in backups]}


def test_compare_repositories():
    a = _report('A', ('b3', '2026-11-03', 'x3', 'ok'), ('b2', '2026-11-02', 'x2', 'ok'), ('b1', '2026-11-01', 'x1', 'ok'))
    b = _report('B', ('b3', '2026-11-03', 'x3', 'ok'), ('b2', '2026-11-02', 'x2', 'ok'))
    assert verify._compare([a, b]) == []  # b1: older than anything B holds (retention), not compared
    c = _report('C', ('b3', '2026-11-03', 'OTHER', 'ok'), ('b1', '2026-11-01', 'x1', 'damaged'))
    failures = verify._compare([a, c])
    assert 'backup b2 is missing on C' in failures
    assert any(f.startswith('backup b3 differs between repositories') for f in failures)
    assert 'backup b1 is missing on C' in failures  # damaged: it does not hold it
    assert verify._compare([a, _report('D')]) == []  # an empty repository is reported on its own
    assert verify._compare([a, dict(b, error='unreachable')]) == []
