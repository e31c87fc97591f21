# Copyright (c) offsite.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The client role documents the job file option by option (meta/argument_specs.yml, shown by
``ansible-doc -t role offsite.backup.client``); this keeps it equal to what the engine's job
validator accepts: same keys at every level, same types, same choices."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from ansible_collections.offsite.backup.plugins.module_utils._engine import drill, jobs, monitoring, signing
from ansible_collections.offsite.backup.plugins.module_utils._engine.encryption import DUMP_OPTIONS
from ansible_collections.offsite.backup.plugins.module_utils._engine.pipeline import COMPRESSIONS
from ansible_collections.offsite.backup.plugins.module_utils._engine.retention import POLICY_KEYS

SPEC = Path(__file__).resolve().parents[2] / "roles" / "client" / "meta" / "argument_specs.yml"
PY_TYPES = {str: "str", list: "list", dict: "dict", int: "int", (str, int): "raw"}


def job_spec():
    spec = yaml.safe_load(SPEC.read_text())["argument_specs"]["main"]["options"]
    return spec["client_jobs"]["options"]["job"]


def options(path: str) -> dict:
    node = job_spec()
    for part in path.split(".") if path else []:
        node = node["options"][part]
    return node["options"]


@pytest.mark.parametrize("path, keys", [
    ("", set(jobs.TOP_KEYS) - {"name"}),           # the role writes name from client_jobs[].name
    ("local", set(jobs.LOCAL_KEYS)),
    ("local.retention", set(POLICY_KEYS)),
    ("retention", set(POLICY_KEYS)),
    ("sources", set(jobs.SOURCE_KEYS)),
    ("log", set(jobs.LOG_KEYS)),
    ("encryption", set(DUMP_OPTIONS)),
    ("signing", set(signing.OPTIONS)),
    ("monitoring", set(monitoring.KEYS)),
    ("monitoring.heartbeats", set(monitoring.HEARTBEAT_KEYS)),
    ("monitoring.webhooks", set(monitoring.WEBHOOK_KEYS)),
    ("monitoring.pushgateway", set(monitoring.PUSHGATEWAY_KEYS)),
    ("monitoring.textfile", set(monitoring.TEXTFILE_KEYS)),
    ("drill", set(drill.KEYS)),
    ("drill.pushgateway", set(monitoring.PUSHGATEWAY_KEYS)),
])
def test_the_documented_keys_are_the_accepted_keys(path, keys):
    assert set(options(path)) == keys


@pytest.mark.parametrize("path, table", [
    ("", {k: v for k, v in jobs.TOP_KEYS.items() if k != "name"}),
    ("local", jobs.LOCAL_KEYS),
    ("sources", jobs.SOURCE_KEYS),
    ("log", jobs.LOG_KEYS),
])
def test_types_and_required_match_the_validator(path, table):
    documented = options(path)
    for key, (kind, required) in table.items():
        assert documented[key]["type"] == PY_TYPES[kind], key
        assert bool(documented[key].get("required")) == required, key


def test_drill_defaults_are_the_engine_defaults():
    documented = options("drill")
    assert {k: documented[k]["default"] for k in drill.DEFAULTS} == drill.DEFAULTS


def test_encryption_types_and_choices_match():
    documented = options("encryption")
    assert {k: documented[k]["type"] for k in DUMP_OPTIONS} == {k: PY_TYPES[v] for k, v in DUMP_OPTIONS.items()}
    assert tuple(options("")["compression"]["choices"]) == COMPRESSIONS
    hooks = options("monitoring.webhooks")
    assert tuple(hooks["format"]["choices"]) == monitoring.WEBHOOK_FORMATS
    assert tuple(hooks["on"]["choices"]) == monitoring.WEBHOOK_EVENTS


def test_a_job_with_every_documented_key_is_accepted_by_the_validator():
    """Walk the spec and build a job that uses every documented option: the validator takes it."""
    job = {"name": "every_key", "local": {"path": "/var/backups/offsite", "retention": {"keep_last": 3}},
           "sources": [{"name": "crm_db", "source": {"type": "postgresql", "database": "crm"}, "tags": ["x"]}],
           "repositories": [{"type": "local", "path": "/mnt/offsite"}],
           "retention": {"keep_daily": 7, "keep_within": "30d", "keep_tags": ["keep"]},
           "min_success": 1, "compression": "gzip", "compression_level": 6, "compression_threads": 2, "tags": ["nightly"],
           "timezone": "Europe/Berlin", "clock_skew": "2h", "incomplete_grace": 12,
           "encryption": {"recipients": ["age1" + "q" * 58]},
           "signing": {"trusted_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFVtErYayOWAU4HUDQa9AY3fyUCD6AYuU+eCaxJ/a7YM"]},
           "log": {"path": "/var/log/offsite-backup/x.log", "max_bytes": 1024, "backups": 2},
           "monitoring": {"heartbeats": [{"url": "https://hc-ping.com/u"},
                                         {"start": "https://m.example/s", "success": "https://m.example/ok",
                                          "fail": "https://m.example/f"}],
                          "webhooks": [{"url": "https://hooks.slack.com/x", "format": "json", "on": ["success"]}],
                          "pushgateway": {"url": "http://pg:9091"}, "textfile": {"path": "/var/lib/node/x.prom"},
                          "timeout": 5, "instance": "crm1"},
           "drill": {"report_dir": "/var/lib/offsite-backup/drills", "scratch_root": "/var/tmp", "rpo_seconds": 90000,
                     "rto_seconds": 3600, "mark_proven": False, "pushgateway": {"url": "http://pg:9091"},
                     "queries": {"crm_db": [{"name": "users", "sql": "SELECT count(*) FROM users", "min": 1}]}}}
    assert set(job) - {"name"} == set(options("")) - set(jobs.ALIASES)   # an older name and its new one: refused
    jobs.validate(job)


FRAGMENT = re.compile(r"`job\.([a-z_.]+): (.+?)`")
DOCS = Path(__file__).resolve().parents[2] / "docs"


def _unknown_keys(value, spec, where):
    """Keys of an example value that the spec (a node's ``options``) does not document."""
    if isinstance(value, list):
        return [k for item in value for k in _unknown_keys(item, spec, where)]
    if not isinstance(value, dict) or spec is None:
        return []
    found = []
    for key, sub in value.items():
        if key == "...":                       # an ellipsis in an example: "and so on"
            continue
        if key not in spec:
            found.append(f"{where}.{key}")
        else:
            found += _unknown_keys(sub, spec[key].get("options"), f"{where}.{key}")
    return found


def test_job_fragments_in_the_docs_use_the_documented_names():
    """`job.monitoring.heartbeats: [{success: ...}]` in a table is an example too: each key it
    uses is an option of the job file, under the same name."""
    fragments = [(page.name, m.group(1), m.group(2)) for page in sorted(DOCS.glob("*.md"))
                 for m in FRAGMENT.finditer(page.read_text())]
    assert len(fragments) >= 8
    for page, path, text in fragments:
        *parents, leaf = path.split(".")
        node = options(".".join(parents)) if parents else options("")
        assert leaf in node, f"{page}: job.{path}"
        assert _unknown_keys(yaml.safe_load(text), node[leaf].get("options"), f"job.{path}") == [], (page, text)
