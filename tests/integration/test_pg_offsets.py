"""Seekable archives for a parallel restore (issue 14, item 1): pg_dump writing custom format to
a pipe records no data offsets; the restore records them as the archive is written to its work
file and patches the TOC, so that ``pg_restore -j`` seeks instead of walking chunk headers.

Checked against PostgreSQL's own tools: a pipe's archive, patched, is the file pg_dump writes
when it can seek (hypothesis-generated tables, text of any character, bytea and large objects
of any bytes, including ones that look like block headers), and ``pg_restore -v`` prints the
same data positions for both. End to end: an engine restore with ``jobs: 2`` patches the
archive, and the restored database equals the source; a malformed archive whose checksum
matches its manifest fails with ``error: integrity`` and leaves no target behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import uuid

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness import pg
from tests.integration.helpers import local_repo, pg_source, pg_target

pytestmark = pytest.mark.integration

CREATED = slice(16, 51)  # the creation time in a version 1.14 header with 4-byte ints
FAKE_BLOCK = b"\x00\x00\x00\x00\x00\x01\x00\x01\x00\x00\x00\x00\x05\x00\x00\x00"


def engine():
    from ansible_collections.offsite.backup.plugins.module_utils._engine import operations, pgcustom
    return operations, pgcustom


def data_positions(path) -> list[str]:
    """pg_restore's own reading of the TOC: the ``-- Data Pos:`` line of every entry."""
    out = subprocess.run(["pg_restore", "-v", "-f", "-", str(path)], capture_output=True, check=True).stdout
    return re.findall(rb"-- Data for Name: (.*?); Type: (TABLE DATA|BLOBS).*\n-- Data Pos: (\d+)", out)


def masked(data: bytes) -> bytes:
    data = bytearray(data)
    data[CREATED] = bytes(CREATED.stop - CREATED.start)
    return bytes(data)


text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=60)
table = st.lists(st.tuples(st.one_of(st.none(), text), st.binary(max_size=80)), max_size=25)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tables=st.lists(table, min_size=1, max_size=3), blobs=st.lists(st.binary(max_size=3000), max_size=2),
       data=st.data())
def test_a_pipes_archive_patched_is_the_seekable_file_pg_dump_writes(tables, blobs, data, tmp_path):
    dummy, pgcustom = engine()
    db = f"offsite_offsets_{uuid.uuid4().hex[:10]}"
    pg.create_database(db)
    try:
        sql = []
        for n, rows in enumerate(tables):
            sql.append(f"CREATE TABLE t{n} (id serial PRIMARY KEY, t text, b bytea);")
            for value, raw in rows:
                t = "NULL" if value is None else pg.quote_literal(value)
                sql.append(f"INSERT INTO t{n} (t, b) VALUES ({t}, '\\x{raw.hex()}'::bytea);")
        for raw in blobs + [FAKE_BLOCK]:  # large objects of any bytes, one that looks like a block
            sql.append(f"SELECT lo_from_bytea(0, '\\x{raw.hex()}'::bytea);")
        pg.run_sql(db, "\n".join(sql))
        env = pg.pg_env()
        pipe = subprocess.run(["pg_dump", "-Fc", "-Z0", db], env=env, capture_output=True, check=True).stdout
        seekable = tmp_path / "seekable.dump"
        subprocess.run(["pg_dump", "-Fc", "-Z0", "-f", str(seekable), db], env=env, check=True)
    finally:
        pg.drop_database(db)
    written = tmp_path / "from-a-pipe.dump"
    written.write_bytes(pipe)
    unpatched = data_positions(written)
    assert unpatched and all(pos == b"0" for dummy, kind, pos in unpatched)

    recorder = pgcustom.OffsetRecorder()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(pipe)), max_size=8)))
    for start, end in zip([0] + cuts, cuts + [len(pipe)]):
        recorder.feed(pipe[start:end])
    summary = recorder.patch(str(written))
    assert summary == {"data_offsets": "recorded", "entries": len(tables) + 1, "patched": len(tables) + 1}
    assert masked(written.read_bytes()) == masked(seekable.read_bytes())
    positions = data_positions(written)
    assert positions == data_positions(seekable)
    assert len(positions) == len(tables) + 1 and all(int(pos) > 0 for dummy, kind, pos in positions)


def _dump_and_upload(source_db, tmp_path):
    operations, dummy = engine()
    repo = local_repo(tmp_path / "repo")
    (tmp_path / "repo").mkdir()
    made = operations.dump("crm", pg_source(source_db), str(tmp_path / "dest"))["backup"]
    operations.upload(made, [repo])
    return repo, made


def test_a_parallel_restore_seeks_and_equals_the_source(sample_db, unique_db_name, tmp_path):
    operations, dummy = engine()
    repo, made = _dump_and_upload(sample_db, tmp_path)
    result = operations.restore("crm", repo, pg_target(unique_db_name, jobs=2), work_dir=str(tmp_path))
    assert result["status"] == "restored"
    offsets = result["data_offsets"]
    assert offsets["data_offsets"] == "recorded" and offsets["entries"] == offsets["patched"] > 5
    assert pg.fingerprint(unique_db_name) == pg.fingerprint(sample_db)


def _rewrite(repo_root, made, change):
    """Replace the artifact's archive by ``change(archive)``, and make the manifest match it:
    the checksum proves the bytes, so only the archive's own structure can catch this."""
    artifact = repo_root / "crm" / os.path.basename(made["path"])
    manifest_path = repo_root / "crm" / f"{made['id']}.manifest.json"
    archive = zstandard.ZstdDecompressor().stream_reader(artifact.read_bytes()).read()
    changed = change(archive)
    stored = zstandard.ZstdCompressor().compress(changed)
    artifact.write_bytes(stored)
    manifest = json.loads(manifest_path.read_text())
    manifest.update(size=len(stored), sha256=hashlib.sha256(stored).hexdigest(), raw_size=len(changed))
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _blocks(archive):
    dummy, pgcustom = engine()
    recorder = pgcustom.OffsetRecorder()
    recorder.feed(archive)
    return sorted(recorder.result().values())


@pytest.mark.parametrize("change, says", [
    (lambda a: a[:_blocks(a)[-1] + 40], "it ends in the middle of the data block of dumpId"),
    (lambda a: a[:_blocks(a)[1]] + a[_blocks(a)[0]:_blocks(a)[1]] + a[_blocks(a)[1]:], "a second data block"),
    (lambda a: a + b"\x01", "1 byte(s) follow the last data block"),
])
def test_a_malformed_archive_with_a_matching_checksum_restores_nothing(sample_db, db_names, tmp_path, change, says):
    operations, dummy = engine()
    from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import IntegrityError
    repo, made = _dump_and_upload(sample_db, tmp_path)
    _rewrite(tmp_path / "repo", made, change)
    target = db_names("malformed")
    with pytest.raises(IntegrityError) as caught:
        operations.restore("crm", repo, pg_target(target, jobs=2), work_dir=str(tmp_path))
    assert "is not a valid pg_dump custom-format archive" in caught.value.message
    assert says in caught.value.message
    assert not pg.database_exists(target) and pg.leftover_databases(target) == []
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("offsite-restore")] == []
