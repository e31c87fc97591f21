# Copyright (c) offsite.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Metrics text, the kept success timestamp, and a down endpoint that is only logged."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import logging

from ansible_collections.offsite.backup.plugins.module_utils._engine import monitoring
from ansible_collections.offsite.backup.plugins.module_utils._engine.jobs import SetResult


def result(name, ok, size=100):
    res = SetResult(name)
    res.backup = {'id': name + '_20260101T000000Z', 'size': size}
    res.uploads = [{'location': 's3://b/p/%s/%s.dump.zst' % (name, res.backup['id']), 'repository': 's3://b/p',
                    'bytes': size, 'duration': 1.5}]
    res.finish('succeeded' if ok else 'failed', None if ok else Exception('boom'))
    return res


def test_metrics_for_success_and_failure():
    text = monitoring.render_metrics('crm', [result('db', True), result('files', False)], now=1700000000)
    assert 'backup_success{job="crm",source="db"} 1' in text
    assert 'backup_success{job="crm",source="files"} 0' in text
    assert 'backup_last_success_timestamp_seconds{job="crm",source="db"} 1700000000' in text
    assert 'source="files"} 1700000000' not in text  # no success, no timestamp
    assert 'backup_upload_bytes{job="crm",repository="s3://b/p",source="db"} 100' in text
    assert 'backup_upload_duration_seconds{job="crm",repository="s3://b/p",source="db"} 1.5' in text
    assert 'backup_size_bytes{job="crm",source="files"}' not in text
    assert text.count('# TYPE backup_success gauge') == 1


def test_failed_run_keeps_the_previous_success_timestamp():
    earlier = monitoring.render_metrics('crm', [result('db', True)], now=1600000000)
    previous = monitoring.previous_successes(earlier)
    assert previous == {'db': 1600000000.0}
    text = monitoring.render_metrics('crm', [result('db', False)], now=1700000000, previous=previous)
    assert 'backup_last_success_timestamp_seconds{job="crm",source="db"} 1600000000' in text


def test_label_values_are_escaped():
    text = monitoring.render_metrics('a"b', [result('db', True)], now=1)
    assert 'job="a\\"b"' in text


def test_down_endpoint_is_logged_without_its_path(caplog):
    monitor = monitoring.Monitor({'heartbeats': [{'url': 'http://127.0.0.1:9/ping/SECRET-TOKEN'}], 'timeout': 1},
                                 'crm', 'host1', logging.getLogger('test'))
    with caplog.at_level(logging.WARNING):
        monitor.start()
        assert monitor.finish([result('db', True)]) is True
    assert len(monitor.problems) == 2
    assert 'SECRET-TOKEN' not in caplog.text and 'http://127.0.0.1:9' in caplog.text


def test_heartbeat_urls_healthchecks_style_and_explicit():
    monitor = monitoring.Monitor({'heartbeats': [{'url': 'https://hc-ping.com/u/'}, {'success': 'https://ur/x'}]},
                                 'crm', 'h', logging.getLogger('test'))
    assert list(monitor._beats('start')) == ['https://hc-ping.com/u/start']
    assert list(monitor._beats('success')) == ['https://hc-ping.com/u', 'https://ur/x']
    assert list(monitor._beats('fail')) == ['https://hc-ping.com/u/fail']


def test_seed_names_must_be_a_boolean():
    import pytest
    from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import ConfigError
    assert monitoring.validate({'seed_names': True})
    with pytest.raises(ConfigError, match='seed_names must be true or false'):
        monitoring.validate({'seed_names': 'yes'})
