"""A laid-out backup restored from S3 frame by frame, out of order (issue 14): the frames with
the most raw bytes per stored byte first, over two ranged GETs, the sha256 proven over the
stored bytes in their order and every frame walked before anything is swapped in.

Against real PostgreSQL and moto, through ``ansible-playbook``: the restored database equals the
source; a byte changed in a frame fails with ``error: integrity`` (the checksum, the root cause)
and leaves the target, the server and the work directory as they were; a local repository (no
ranged reads) restores the same backup in order."""

from __future__ import annotations

from pathlib import Path

from tests.harness import pg
from tests.integration.helpers import local_repo, pg_source, pg_target, s3_repo
from tests.integration.test_failures import SET, assert_failed, make_small_db, play, scratch_databases, task

FAST = {"retries": 0, "timeout": 30}


def laid_out_db(name):
    """The sample database and two tables of more than a frame each (pglayout.FRAME_MIN, 1 MiB):
    6 MiB of random bytes (stored as large as they are: more than framefetch.SMALL_UNIT) before
    many small rows (compressing ~10:1)."""
    pg.run_sql(name, "CREATE TABLE aaa_noise AS SELECT i, decode(string_agg(md5(random()::text || i || g), ''), 'hex') "
                     "AS data FROM generate_series(1, 800) i, generate_series(1, 512) g GROUP BY i;"
                     "CREATE TABLE zzz_rows AS SELECT i, 'row ' || (i % 97) AS note FROM generate_series(1, 200000) i;"
                     "ALTER TABLE zzz_rows ADD PRIMARY KEY (i);")


def _backup(db, tmp_path, repos):
    r = play(task("dump", "dump", name=SET, source=pg_source(db), dest=str(tmp_path / "dest")))
    assert r.rc == 0, r.output
    made = r.result("dump")["backup"]
    r = play(task("upload", "upload", backup=made, repositories=repos))
    assert r.rc == 0, r.output
    return made


def test_a_laid_out_backup_is_fetched_frame_by_frame_and_equals_the_source(
        moto, bucket, sample_db, unique_db_name, tmp_path):
    laid_out_db(sample_db)
    (tmp_path / "repo").mkdir()
    s3, local = s3_repo(moto, bucket, **FAST), local_repo(tmp_path / "repo")
    made = _backup(sample_db, tmp_path, [s3, local])
    manifest = Path(made["manifest"]).read_text()
    assert '"layout"' in manifest
    r = play(task("restore", "restore", name=SET, repository=s3, work_dir=str(tmp_path),
                  target=pg_target(unique_db_name, jobs=2)))
    assert r.rc == 0, r.output
    offsets = r.result("restore")["data_offsets"]
    assert offsets["frames"] >= 3 and offsets["data_offsets"] == "recorded", offsets
    assert pg.fingerprint(unique_db_name) == pg.fingerprint(sample_db)
    assert scratch_databases(unique_db_name) == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("offsite-restore-")]
    # no ranged reads: the same backup, in order
    r = play(task("restore", "restore", name=SET, repository=local, work_dir=str(tmp_path),
                  target=pg_target(unique_db_name, mode="replace", terminate_connections=True, jobs=2)))
    assert r.rc == 0, r.output
    assert "frames" not in r.result("restore")["data_offsets"]
    assert pg.fingerprint(unique_db_name) == pg.fingerprint(sample_db)


def test_a_byte_changed_in_a_frame_fails_as_a_checksum_mismatch_and_changes_nothing(
        moto, bucket, sample_db, unique_db_name, tmp_path):
    laid_out_db(sample_db)
    repo = s3_repo(moto, bucket, **FAST)
    made = _backup(sample_db, tmp_path, [repo])
    client = moto.client()
    key = f"{repo['prefix']}/{SET}/{Path(made['path']).name}"
    obj = client.get_object(Bucket=bucket, Key=key)
    body = bytearray(obj["Body"].read())
    body[len(body) // 3] ^= 0xFF  # inside the random bytes: the frame still decompresses
    client.put_object(Bucket=bucket, Key=key, Body=bytes(body), Metadata=obj["Metadata"])
    make_small_db(unique_db_name)
    before = pg.fingerprint(unique_db_name)
    r = play(task("restore", "restore", name=SET, repository=repo, work_dir=str(tmp_path),
                  target=pg_target(unique_db_name, mode="replace", terminate_connections=True, jobs=2)))
    res = assert_failed(r, "restore", "integrity", "does not match its manifest checksum", made["sha256"])
    assert not any("RENAME TO" in c for c in res.get("executed_commands", []))
    assert pg.fingerprint(unique_db_name) == before
    assert scratch_databases(unique_db_name) == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("offsite-restore-")]


def test_frames_in_any_order_with_cut_tables_restore_the_source(
        moto, bucket, sample_db, unique_db_name, tmp_path, monkeypatch):
    """Tables cut every 64 KiB of rows, frames of every table and cut fetched in a random order
    (one GET each): pieces of a table can arrive before its first frame, and the restore still
    equals the source. In this process, with the sizes made small."""
    import random

    from ansible_collections.offsite.backup.plugins.module_utils._engine import (
        commands, framefetch, operations, pgcustom, pglayout)
    laid_out_db(sample_db)
    monkeypatch.setattr(pgcustom, "SEGMENT", 64 * 1024)
    monkeypatch.setattr(pglayout, "FRAME_MIN", 1)
    repo = s3_repo(moto, bucket, **FAST)
    made = operations.dump(SET, pg_source(sample_db), str(tmp_path / "dest"))["backup"]
    operations.upload(made, [repo])
    seed = random.randrange(2 ** 32)
    print("seed", seed)
    plan = framefetch.plan

    def shuffled(layout, **sizes):
        units = plan(layout, small=1, most=1)
        random.Random(seed).shuffle(units)
        return units
    monkeypatch.setattr(framefetch, "plan", shuffled)
    result = operations.restore(SET, repo, pg_target(unique_db_name, jobs=2), work_dir=str(tmp_path),
                                log=commands.CommandLog())
    offsets = result["data_offsets"]
    assert offsets["frames"] > 10 and offsets["loaded_in_pieces"] > offsets["entries"], offsets
    assert pg.fingerprint(unique_db_name) == pg.fingerprint(sample_db)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("offsite-restore-")]
