# Copyright (c) offsite.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The drill's moment inside a set's recovery window (the window itself is walchain's:
test_wal_retention.py), and a point-in-time set in the drill report and its metrics."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import datetime
import json
import random

import pytest

from ansible_collections.offsite.backup.plugins.module_utils._engine import drill_report, window
from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import NotFoundError

UTC = datetime.timezone.utc


def test_a_random_moment_is_a_whole_second_inside_the_window_before_its_margin():
    seed = random.randrange(2 ** 32)
    print("seed", seed)
    rng = random.Random(seed)
    w = {"earliest": "2026-12-06T12:00:00Z", "latest": "2026-12-06T12:02:00Z",
         "earliest_timestamp": 1796558400.0, "latest_timestamp": 1796558520.0}
    seen = set()
    for dummy in range(2000):  # (59/60)^2000 < 1e-14: both ends are drawn
        moment = window.choose_moment(w, "random", margin=60, rng=rng)
        assert moment.microsecond == 0 and moment.tzinfo is not None
        seen.add(moment.timestamp() - 1796558400)
    assert min(seen) == 1 and max(seen) == 60                                   # both ends reached
    with pytest.raises(NotFoundError, match="shorter than the margin"):
        window.choose_moment(w, "random", margin=120)
    assert window.choose_moment(w, "2026-12-06T12:01:30Z").timestamp() == 1796558490
    with pytest.raises(NotFoundError, match="outside the recovery window"):
        window.choose_moment(w, "2026-12-06T12:03:00Z")
    with pytest.raises(NotFoundError, match="no recovery window"):
        window.choose_moment(None, "random")


def _pit_set(**extra):
    return dict({"name": "crm_cluster", "success": True, "age_seconds": 42.5, "restore_seconds": 30,
                 "recovery_seconds": 31.25, "rpo_seconds": 3600, "rto_seconds": 14400,
                 "point_in_time": {"target": "2026-12-06T12:01:30Z", "chosen": "random",
                                   "reached": "2026-12-06T12:01:29.5Z", "window_start": "2026-12-06T12:00:00Z",
                                   "window_end": "2026-12-06T12:02:00Z", "newest_wal": "000000010000000000000009",
                                   "phases": {"recovery_seconds": "3.5"}}}, **extra)


def test_a_point_in_time_set_in_the_report_and_its_metrics(tmp_path):
    started = datetime.datetime(2026, 12, 6, 12, 3, tzinfo=UTC)
    report = drill_report.build("drill", [_pit_set(), {"name": "crm_db", "success": True, "age_seconds": 100}],
                                started, started + datetime.timedelta(minutes=1), host="drill1", rpo_seconds=93600,
                                rto_seconds=14400)
    pit = report["sets"][0]["point_in_time"]
    assert pit["phases"] == {"recovery_seconds": 3.5} and report["sets"][1]["point_in_time"] is None
    text = drill_report.metrics(report)
    assert 'dr_drill_pitr_rpo_seconds{set="crm_cluster"} 42.5' in text
    assert 'dr_drill_pitr_rto_seconds{set="crm_cluster"} 31.25' in text
    assert 'dr_drill_pitr_target_timestamp_seconds{set="crm_cluster"} 1796558490.0' in text
    assert 'dr_drill_pitr_reached_timestamp_seconds{set="crm_cluster"} 1796558489.5' in text
    assert 'set="crm_db"' not in "\n".join(line for line in text.splitlines() if "pitr" in line)
    paths = drill_report.write(report, str(tmp_path))
    md = open(paths["markdown"]).read()
    assert ("point in time 2026-12-06T12:01:30Z (random, in the window 2026-12-06T12:00:00Z .. 2026-12-06T12:02:00Z, "
            "newest WAL 000000010000000000000009), recovered to the last transaction at 2026-12-06T12:01:29.5Z; "
            "RPO achieved (now - newest archived WAL) 42.5 s, RTO 31.2 s") in md
    assert 'class="point-in-time"' in open(paths["html"]).read()
    assert json.load(open(paths["json"]))["sets"][0]["point_in_time"]["target"] == "2026-12-06T12:01:30Z"
    with pytest.raises(Exception, match="point_in_time must be a mapping with target"):
        drill_report.build("drill", [_pit_set(point_in_time={"chosen": "random"})], started, started)


def test_the_drill_section_takes_a_point_in_time_and_checks_it():
    from ansible_collections.offsite.backup.plugins.module_utils._engine import drill
    from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import ConfigError
    job = {"sources": [{"name": "crm_cluster"}]}
    assert drill.settings(dict(job, drill={"point_in_time": "random"}))["point_in_time_margin"] == 60
    assert drill.settings(dict(job, drill={"point_in_time": "2026-12-05T14:32:00Z", "point_in_time_margin": 5,
                                           "restore_options": {"crm_cluster": {"os_user": "postgres"}}}))
    for bad in ({"point_in_time": "yesterday"}, {"point_in_time_margin": -1}, {"point_in_time_margin": True},
                {"restore_options": {"erp": {}}}):
        with pytest.raises(ConfigError):
            drill.settings(dict(job, drill=bad))
