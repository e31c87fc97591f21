"""A PostgreSQL custom-format dump is stored as zstd frames that begin at known places of the
archive, and its manifest says where (pglayout): the end of the TOC, each table's data block
once a frame holds FRAME_MIN, every ~64 MiB cut of a large table. What a restore behind a slow
link needs to fetch pieces out of order.

Against real PostgreSQL, the engine's own dump: the manifest's layout is valid and its blocks
are the archive's table data and large objects (``pg_restore -l``); ``zstd -d`` reads the
artifact as one stream, into an archive pg_restore lists and restores to a copy of the source;
each frame, fetched alone, decompresses to exactly its raw span. A dump compressed otherwise or
encrypted carries no layout.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import zstandard

from tests.harness import pg
from tests.integration.helpers import pg_source

pytestmark = pytest.mark.integration


def engine():
    from ansible_collections.offsite.backup.plugins.module_utils._engine import operations, pgcustom, pglayout
    return operations, pgcustom, pglayout


def _dump(db, tmp_path, **options):
    operations, dummy, dummy2 = engine()
    made = operations.dump("crm", pg_source(db), str(tmp_path / "dest"), **options)["backup"]
    manifest = json.loads(Path(made["manifest"]).read_text())
    return made, manifest, Path(made["path"]).read_bytes()


def _data_entries(path) -> dict[int, str]:
    """pg_restore's listing of the archive: {dumpId: name} of its TABLE DATA and BLOBS entries."""
    listing = subprocess.run(["pg_restore", "-l", str(path)], capture_output=True, check=True, text=True).stdout
    return {int(m.group(1)): m.group(3)
            for m in re.finditer(r"^(\d+); \d+ \d+ (TABLE DATA|BLOBS) (.*)$", listing, re.M)}


def _check_frames(layout, stored, raw):
    for raw_start, raw_end, stored_start, stored_end in layout.spans():
        obj = zstandard.ZstdDecompressor().decompressobj()
        assert obj.decompress(stored[stored_start:stored_end]) == raw[raw_start:raw_end]
        assert obj.eof and obj.unused_data == b""


def test_a_dump_is_frames_each_readable_alone_and_zstd_d_reads_them_as_one(sample_db, tmp_path):
    dummy, pgcustom, pglayout = engine()
    made, manifest, stored = _dump(sample_db, tmp_path)
    assert manifest["format"] == "custom" and manifest["compression"] == "zstd" and manifest["format_version"] == 1
    layout = pglayout.read_layout(manifest)
    assert layout is not None and layout.size == len(stored) == made["size"]

    raw_path = tmp_path / "archive.dump"
    with open(raw_path, "wb") as out:
        subprocess.run(["zstd", "-d", "-c", made["path"]], stdout=out, check=True)
    raw = raw_path.read_bytes()
    assert len(raw) == manifest["raw_size"] == layout.raw_size

    entries = _data_entries(raw_path)
    assert any("users" in name for name in entries.values()) and len(entries) > 5
    assert {dump_id for dump_id, at in layout.blocks} == set(entries)
    recorder = pgcustom.OffsetRecorder()
    recorder.feed(raw)
    assert dict(layout.blocks) == recorder.result() and layout.toc_end == recorder.toc_end
    assert layout.frames[1][0] == layout.toc_end  # the TOC's frame comes alone
    _check_frames(layout, stored, raw)


def test_a_large_tables_cuts_begin_frames_and_the_archive_restores(sample_db, db_names, tmp_path, monkeypatch):
    """With a small segment the sample's 2 MiB bytea table (4 MiB as COPY text) is cut where
    the dump's feeds end: each cut begins a frame; the artifact, decompressed by zstd, restores
    with pg_restore to a copy of the source."""
    dummy, pgcustom, pglayout = engine()
    monkeypatch.setattr(pgcustom, "SEGMENT", 256 * 1024)
    made, manifest, stored = _dump(sample_db, tmp_path)
    layout = pglayout.read_layout(manifest)
    assert len(layout.cuts) >= 2
    starts = {raw for raw, at in layout.frames}
    assert all(at in starts for dump_id, at in layout.cuts)
    raw = zstandard.ZstdDecompressor().stream_reader(stored, read_across_frames=True).read()
    assert len(raw) == layout.raw_size
    _check_frames(layout, stored, raw)

    raw_path = tmp_path / "archive.dump"
    raw_path.write_bytes(raw)
    target = db_names("layout")
    pg.create_database(target)
    subprocess.run(["pg_restore", "-d", target, "-j", "2", str(raw_path)], env=pg.pg_env(), check=True,
                   capture_output=True)
    assert pg.fingerprint(target) == pg.fingerprint(sample_db)


@pytest.mark.parametrize("options", [{"compression": "gzip"}, {"compression": "none"},
                                     {"encryption": {"passphrase": "correct horse"}}])
def test_other_compressions_and_encryption_carry_no_layout(sample_db, tmp_path, options):
    made, manifest, stored = _dump(sample_db, tmp_path, **options)
    assert "layout" not in manifest
