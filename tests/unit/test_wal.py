"""WAL names, keys and segment manifests (wal.py), and push / fetch against local repositories.

The PostgreSQL side (archive_command, restore_command, outages, timelines) is
tests/integration/test_wal_archiving.py."""

import json
import os
import struct

import pytest

from ansible_collections.offsite.backup.plugins.module_utils._engine import catalog, wal
from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import ConfigError, IntegrityError
from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories import open_repository

SEGMENT = "00000001000000A0000000FF"


@pytest.mark.parametrize("name, kind, timeline, log, seg", [
    (SEGMENT, "segment", 1, 0xA0, 0xFF),
    ("0000000200000000000000010", None, None, None, None),
    ("00000002.history", "history", 2, None, None),
    ("0000000A000000000000000B.00000028.backup", "backup", 10, 0, 11),
    ("00000003000000000000000C.partial", "partial", 3, 0, 12),
])
def test_names_postgresql_archives_parse(name, kind, timeline, log, seg):
    if kind is None:
        with pytest.raises(ConfigError):
            wal.parse_name(name)
        return
    parsed = wal.parse_name(name)
    assert (parsed.kind, parsed.timeline, parsed.log, parsed.seg) == (kind, timeline, log, seg)


@pytest.mark.parametrize("name", ["", "../00000001.history", "0000000100000000000000ab", "RECOVERYXLOG",
                                  "00000001.history/x", SEGMENT + ".json", None, "00000001000000000000000G"])
def test_anything_else_is_refused_before_it_becomes_a_key(name):
    with pytest.raises(ConfigError, match="not the name of a WAL file"):
        wal.parse_name(name)


def test_layout_lies_beside_the_set_where_no_catalog_lists_it(tmp_path):
    assert wal.manifest_key("crm_cluster", SEGMENT) == ".wal/crm_cluster/%s.json" % SEGMENT
    assert wal.payload_extension("zstd", "age") == ".wal.zst.age"
    assert wal.payload_extension("none", None) == ".wal"
    repo = open_repository({"type": "local", "path": str(tmp_path)})
    for key in (wal.manifest_key("crm_cluster", SEGMENT), ".wal/crm_cluster/%s.wal.zst.age" % SEGMENT,
                ".wal/crm_cluster/%s.wal.zst.1a2b3c4d.partial" % SEGMENT):
        repo.put_bytes(key, b"x")
    for name in ("crm_cluster", "crm", "wal", ".wal"[1:]):
        found = catalog.Catalog(repo, name)
        assert found.backups == [] and found.leftovers == []


def test_system_identifier_from_the_long_page_header():
    header = struct.pack("<HHIQI4xQII", 0xD110, 0x0002 | 0x0004, 1, 0, 0, 7312345678901234567, 16 << 20, 8192)
    assert wal.system_identifier(header) == "7312345678901234567"
    assert wal.system_identifier(header[:20]) is None
    short = struct.pack("<HHIQI4xQII", 0xD110, 0, 1, 0, 0, 1, 0, 0)
    assert wal.system_identifier(short) is None


def test_the_set_is_the_physical_source_or_named():
    sources = [{"name": "crm_db", "source": {"type": "postgresql"}},
               {"name": "crm_cluster", "source": {"type": "postgresql_physical"}}]
    assert wal.choose_set(sources) == "crm_cluster"
    assert wal.choose_set(sources, "crm_db") == "crm_db"
    with pytest.raises(ConfigError, match="no backup set other"):
        wal.choose_set(sources, "other")
    with pytest.raises(ConfigError, match="--set NAME"):
        wal.choose_set(sources[:1])
    with pytest.raises(ConfigError, match="2 postgresql_physical sources"):
        wal.choose_set(sources + [{"name": "b", "source": {"type": "postgresql_physical"}}])


def _segment(path, fill=b"\x01"):
    header = struct.pack("<HHIQI4xQII", 0xD110, 0x0006, 1, 0, 0, 42, 16 << 20, 8192)
    data = header + fill * (1 << 20)
    path.write_bytes(data)
    return data


def _repos(tmp_path, count=2):
    paths = []
    for index in range(count):
        (tmp_path / ("repo%d" % index)).mkdir()
        paths.append({"type": "local", "path": str(tmp_path / ("repo%d" % index))})
    return paths


def test_push_writes_every_repository_manifest_last_and_is_idempotent(tmp_path):
    source = tmp_path / SEGMENT
    data = _segment(source)
    repos = _repos(tmp_path)
    result = wal.push("crm_cluster", str(source), repos)
    assert [o["status"] for o in result["repositories"]] == ["stored", "stored"]
    for repo in repos:
        manifest = json.loads(open(os.path.join(repo["path"], ".wal/crm_cluster/%s.json" % SEGMENT)).read())
        assert manifest["raw_size"] == len(data) and manifest["system_identifier"] == "42"
        assert manifest["artifact"] == SEGMENT + ".wal.zst" and manifest["timeline"] == 1
        payload = os.path.join(repo["path"], ".wal/crm_cluster", manifest["artifact"])
        assert os.path.getsize(payload) == manifest["size"] < len(data)
    again = wal.push("crm_cluster", str(source), repos)
    assert [o["status"] for o in again["repositories"]] == ["present", "present"]
    out = tmp_path / "fetched"
    fetched = wal.fetch("crm_cluster", SEGMENT, str(out), repos)
    assert out.read_bytes() == data and fetched["problems"] == []


def test_a_different_content_under_the_same_name_fails_and_overwrites_nothing(tmp_path):
    source = tmp_path / SEGMENT
    _segment(source)
    repos = _repos(tmp_path)
    wal.push("crm_cluster", str(source), repos)
    manifest_path = os.path.join(repos[0]["path"], ".wal/crm_cluster/%s.json" % SEGMENT)
    before = open(manifest_path).read()
    _segment(source, fill=b"\x02")
    with pytest.raises(IntegrityError, match="different content") as raised:
        wal.push("crm_cluster", str(source), repos)
    assert "held by 0 of 2 repositories" in str(raised.value)
    assert open(manifest_path).read() == before


def test_min_success_counts_repositories_that_hold_it(tmp_path):
    source = tmp_path / SEGMENT
    _segment(source)
    repos = _repos(tmp_path) + [{"type": "local", "path": str(tmp_path / "missing")}]
    with pytest.raises(Exception, match="held by 2 of 3 repositories, 3 needed"):
        wal.push("crm_cluster", str(source), repos)
    result = wal.push("crm_cluster", str(source), repos, min_success=2)
    assert [o["status"] for o in result["repositories"]] == ["present", "present", "failed"]


def test_an_interrupted_push_payload_without_manifest_is_written_again(tmp_path):
    source = tmp_path / SEGMENT
    data = _segment(source)
    repos = _repos(tmp_path, 1)
    payload = os.path.join(repos[0]["path"], ".wal/crm_cluster/%s.wal.zst" % SEGMENT)
    os.makedirs(os.path.dirname(payload))
    open(payload, "wb").write(b"half")
    with pytest.raises(wal.NotArchived):
        wal.fetch("crm_cluster", SEGMENT, str(tmp_path / "out"), repos)
    assert wal.push("crm_cluster", str(source), repos)["repositories"][0]["status"] == "stored"
    wal.fetch("crm_cluster", SEGMENT, str(tmp_path / "out"), repos)
    assert (tmp_path / "out").read_bytes() == data


def test_fetch_skips_a_damaged_copy_and_fails_when_none_is_good(tmp_path):
    source = tmp_path / SEGMENT
    data = _segment(source)
    repos = _repos(tmp_path)
    wal.push("crm_cluster", str(source), repos)
    payload = os.path.join(repos[0]["path"], ".wal/crm_cluster/%s.wal.zst" % SEGMENT)
    damaged = bytearray(open(payload, "rb").read())
    damaged[len(damaged) // 2] ^= 0xFF
    open(payload, "wb").write(bytes(damaged))
    out = tmp_path / "out"
    result = wal.fetch("crm_cluster", SEGMENT, str(out), repos)
    assert out.read_bytes() == data and "checksum" in result["problems"][0]["error"]
    os.unlink(out)
    os.unlink(os.path.join(repos[1]["path"], ".wal/crm_cluster/%s.json" % SEGMENT))
    with pytest.raises(IntegrityError, match="no good copy"):
        wal.fetch("crm_cluster", SEGMENT, str(out), repos)
    assert not out.exists() and os.listdir(tmp_path).count("out") == 0
    assert not [f for f in os.listdir(tmp_path) if f.startswith("out.")]


def test_a_manifest_copied_to_another_segment_is_refused(tmp_path):
    source = tmp_path / SEGMENT
    _segment(source)
    repos = _repos(tmp_path, 1)
    wal.push("crm_cluster", str(source), repos)
    other = "00000001000000A100000000"
    base = os.path.join(repos[0]["path"], ".wal/crm_cluster/")
    os.rename(base + SEGMENT + ".json", base + other + ".json")
    with pytest.raises(IntegrityError, match="describes"):
        wal.fetch("crm_cluster", other, str(tmp_path / "out"), repos)


def test_a_missing_file_everywhere_is_not_archived_but_an_unreachable_repository_is_a_failure(tmp_path):
    repos = _repos(tmp_path)
    with pytest.raises(wal.NotArchived):
        wal.fetch("crm_cluster", SEGMENT, str(tmp_path / "out"), repos)
    with pytest.raises(Exception) as raised:
        wal.fetch("crm_cluster", SEGMENT, str(tmp_path / "out"), repos + [{"type": "local", "path": "/nonexistent/r"}])
    assert not isinstance(raised.value, wal.NotArchived)


@pytest.mark.parametrize("key, expected", [
    (".wal/crm_cluster/000000010000000000000001.json", ("000000010000000000000001", "manifest")),
    (".wal/crm_cluster/000000010000000000000001.wal.zst.age", ("000000010000000000000001", "payload")),
    (".wal/crm_cluster/000000010000000000000001.wal", ("000000010000000000000001", "payload")),
    (".wal/crm_cluster/000000010000000000000001.wal.gz.1a2b3c4d.partial", ("000000010000000000000001", "upload")),
    (".wal/crm_cluster/00000002.history.json", ("00000002.history", "manifest")),
    (".wal/crm_cluster/000000010000000000000003.partial.wal.zst", ("000000010000000000000003.partial", "payload")),
    (".wal/crm_cluster/000000010000000000000003.00000028.backup.json",
     ("000000010000000000000003.00000028.backup", "manifest")),
    (".wal/crm_cluster/000000010000000000000001.json.bak", None),
    (".wal/crm_cluster/sub/000000010000000000000001.json", None),
    (".wal/crm_cluster2/000000010000000000000001.json", None),
    ("crm_cluster/000000010000000000000001.json", None),
    (".wal/crm_cluster/../x/000000010000000000000001.json", None),
    (".wal/crm_cluster/0000000100000000000000ab.json", None),
])
def test_keys_of_a_wal_directory(key, expected):
    parsed = wal.parse_key("crm_cluster", key)
    assert (parsed and (parsed[0].name, parsed[1])) == (expected or None)


def test_a_wal_push_process_imports_only_what_archiving_needs():
    """archive_command starts one wal-push per 16 MiB segment: what the command imports is its
    memory floor (issue 17: < 60 MB, bench/wal_push_memory.py). boto3 (the engine uses
    botocore), the log file's handlers (wal-push logs to no file) and zoneinfo (retention's
    time zones) stay out of it."""
    import subprocess
    import sys
    code = ("import sys\n"
            "from ansible_collections.offsite.backup.plugins.module_utils._engine import cli, wal\n"
            "print(' '.join(sorted(m for m in ('boto3', 'logging.handlers', 'zoneinfo') if m in sys.modules)))")
    module = os.path.abspath(wal.__file__)
    collections = module[:module.index(os.sep + "ansible_collections" + os.sep)]
    r = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=collections),
                       capture_output=True, text=True, check=True)
    assert r.stdout.split() == [], r.stdout
