"""A parallel PostgreSQL restore loads while it downloads (issue 14, item 2): the schema once
the TOC is in the work file, each table's data as its block arrives (a loader follows a block
still being written), the rest with ``pg_restore -j`` once the checksum is proven; swapped in
only after that and the row counts.

Against real PostgreSQL and moto: the restored database equals the source and the commands
show the three steps; a download held back before its last byte finds tables already loaded in
the scratch database; an artifact damaged late in the stream fails with ``error: integrity``
after the loaders started, and leaves the target, the server (no scratch database) and the
work directory as they were.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from pathlib import Path

import pytest

from tests.harness import pg
from tests.integration.helpers import local_repo, pg_source, pg_target, s3_repo
from tests.integration.test_failures import (SET, assert_failed, make_small_db, play, scratch_databases,
                                             task)

FAST = {"retries": 0, "timeout": 30}


def engine():
    from ansible_collections.offsite.backup.plugins.module_utils._engine import commands, operations
    from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories import local
    return operations, commands, local


def _backup(source_db, tmp_path, repo):
    operations, dummy, dummy2 = engine()
    made = operations.dump(SET, pg_source(source_db), str(tmp_path / "dest"))["backup"]
    operations.upload(made, [repo])
    return made


def test_a_restore_from_s3_loads_while_downloading_and_equals_the_source(moto, bucket, sample_db,
                                                                         unique_db_name, tmp_path):
    repo = s3_repo(moto, bucket, **FAST)
    _backup(sample_db, tmp_path, repo)
    r = play(task("restore", "restore", name=SET, repository=repo, work_dir=str(tmp_path),
                  target=pg_target(unique_db_name, jobs=2)))
    assert r.rc == 0, r.output
    res = r.result("restore")
    assert pg.fingerprint(unique_db_name) == pg.fingerprint(sample_db)
    assert res["restored"]["verified_tables"] > 5
    offsets = res["data_offsets"]
    assert offsets["data_offsets"] == "recorded" and offsets["entries"] == offsets["patched"] > 5
    restores = [c for c in res["executed_commands"] if "pg_restore" in c]
    # the schema first, from the work file; then loaders reading a pipe (-L, no file), and the
    # keys and indexes of the tables loaded, from the work file's TOC (-L); the rest last
    assert "--section=pre-data" in restores[0] and restores[0].endswith("artifact.dump")
    loaders = restores[1:-1]
    assert loaders and all(" -L " in c for c in loaders)
    built = [c for c in loaders if c.endswith("artifact.dump")]
    assert built and len(built) < len(loaders)
    assert offsets["built_while_downloading"] >= len(built)
    assert "-j 2 --section=data --section=post-data -L" in restores[-1]
    assert "PGOPTIONS" not in " ".join(res["executed_commands"])  # settings travel in the environment
    assert scratch_databases(unique_db_name) == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("offsite-restore-")]


def _hold_the_last_byte(monkeypatch, target_db, sql):
    """The local repository's artifact read as it is, but its last byte only once ``sql`` counts
    more than 0 in the scratch database of a restore into ``target_db`` (up to 120 s). Returns
    {"seen": that count}, filled when the last byte is let through."""
    dummy, dummy2, local = engine()
    seen = {}

    def counted():
        names = pg.run_sql("postgres", "SELECT datname FROM pg_database WHERE datname LIKE "
                                       f"{pg.quote_literal(target_db + '_restore_%')};").split()
        if not names:
            return 0
        try:
            return int(pg.run_sql(names[0], sql).strip())
        except Exception:  # the schema is not there yet
            return 0

    class HeldBack:
        def __init__(self, handle):
            self.handle = handle
            self.size = Path(handle.name).stat().st_size

        def read(self, size=-1):
            pos = self.handle.tell()
            if pos >= self.size - 1 and "seen" not in seen:
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline and not counted():
                    time.sleep(0.1)
                seen["seen"] = counted()
            limit = self.size - 1 - pos if pos < self.size - 1 else size
            return self.handle.read(min(size, limit) if size and size > 0 else limit)

    original = local.LocalRepository.get

    @contextlib.contextmanager
    def held_back(self, key):
        with original(self, key) as handle:
            yield HeldBack(handle) if key.endswith(".zst") else handle
    monkeypatch.setattr(local.LocalRepository, "get", held_back)
    return seen


def test_tables_are_loaded_before_the_last_byte_has_arrived(sample_db, unique_db_name, tmp_path, monkeypatch):
    """The download is held back before its last byte until the scratch database has rows of a
    table: with loading after the download, it would wait in vain (and the test fail)."""
    operations, commands, dummy = engine()
    (tmp_path / "repo").mkdir()
    repo = local_repo(tmp_path / "repo")
    _backup(sample_db, tmp_path, repo)
    seen = _hold_the_last_byte(monkeypatch, unique_db_name, "SELECT (SELECT count(*) FROM billing.invoice_lines) "
                                                            "+ (SELECT count(*) FROM billing.invoices)")
    log = commands.CommandLog()
    result = operations.restore(SET, repo, pg_target(unique_db_name, jobs=2), work_dir=str(tmp_path), log=log)
    assert seen["seen"] > 0
    assert result["data_offsets"]["loaded_while_downloading"] > 0
    assert pg.fingerprint(unique_db_name) == pg.fingerprint(sample_db)


# keys, indexes and foreign keys of every shape pg_restore orders (both ways between two tables,
# on a partitioned table and its partitions, to it), beside what must not run before all data is
# in: a trigger that writes on every insert, a materialized view and its index
KEYS_SCHEMA = """
CREATE TABLE a (id int PRIMARY KEY, b_id int, note text);
CREATE TABLE b (id int PRIMARY KEY, a_id int REFERENCES a (id), note text);
ALTER TABLE a ADD FOREIGN KEY (b_id) REFERENCES b (id);
CREATE INDEX a_note ON a (note);
CREATE TABLE p (id int, k int, PRIMARY KEY (id, k)) PARTITION BY RANGE (k);
CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (500);
CREATE TABLE p2 PARTITION OF p FOR VALUES FROM (500) TO (1000);
CREATE INDEX p_k ON p (k);
CREATE TABLE c (id int PRIMARY KEY, p_id int, p_k int, FOREIGN KEY (p_id, p_k) REFERENCES p,
                EXCLUDE USING btree (id WITH =));
CREATE TABLE audit (c_id int);
CREATE FUNCTION audit_c() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN INSERT INTO audit VALUES (NEW.id); RETURN NEW; END$$;
INSERT INTO a SELECT i, NULL, repeat(md5(i::text), 40) FROM generate_series(1, 3000) i;
INSERT INTO b SELECT i, 3001 - i, repeat(md5(i::text), 40) FROM generate_series(1, 3000) i;
UPDATE a SET b_id = id;
INSERT INTO p SELECT i, i % 1000 FROM generate_series(1, 5000) i;
INSERT INTO c SELECT i, i, i % 1000 FROM generate_series(1, 5000) i;
INSERT INTO audit SELECT id FROM c WHERE id % 7 = 0;
CREATE TRIGGER c_audit AFTER INSERT ON c FOR EACH ROW EXECUTE FUNCTION audit_c();
CREATE MATERIALIZED VIEW totals AS SELECT count(*) AS n, (SELECT count(*) FROM c) AS m FROM a;
CREATE UNIQUE INDEX totals_n ON totals (n);
"""


def test_keys_and_indexes_are_built_while_other_tables_still_download(
        unique_db_name, db_names, tmp_path, monkeypatch):
    """Once a table's data is all loaded, its keys and indexes are built (pg_restore's rules:
    everything an entry depends on restored, no two builds on one table at once) while the
    download is held back before its last byte; triggers, the materialized view's refresh and
    the rest wait for the final restore. The restored database equals the source: the trigger
    fired on no restored row, the view holds every table's rows."""
    operations, commands, dummy = engine()
    from ansible_collections.offsite.backup.plugins.module_utils._engine import pgcustom
    monkeypatch.setattr(pgcustom, "SEGMENT", 64 * 1024)  # a and b cut into pieces too
    source = db_names("keys")
    pg.create_database(source)
    pg.run_sql(source, KEYS_SCHEMA)
    (tmp_path / "repo").mkdir()
    repo = local_repo(tmp_path / "repo")
    _backup(source, tmp_path, repo)
    seen = _hold_the_last_byte(monkeypatch, unique_db_name, "SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'")
    log = commands.CommandLog()
    result = operations.restore(SET, repo, pg_target(unique_db_name, jobs=2), work_dir=str(tmp_path), log=log)
    assert seen["seen"] > 0
    assert result["data_offsets"]["built_while_downloading"] >= seen["seen"]
    assert pg.fingerprint(unique_db_name) == pg.fingerprint(source)
    assert pg.run_sql(unique_db_name, "SELECT count(*) FROM audit").strip() == str(5000 // 7)
    assert pg.run_sql(unique_db_name, "SELECT n || ' ' || m FROM totals").strip() == "3000 5000"


def test_a_damaged_artifact_fails_after_loading_began_and_changes_nothing(moto, bucket, sample_db,
                                                                          unique_db_name, tmp_path):
    repo = s3_repo(moto, bucket, **FAST)
    made = _backup(sample_db, tmp_path, repo)
    s3 = moto.client()
    key = f"{repo['prefix']}/{SET}/{Path(made['path']).name}"
    obj = s3.get_object(Bucket=bucket, Key=key)
    body = bytearray(obj["Body"].read())
    body[len(body) * 3 // 4] ^= 0xFF  # late, in incompressible bytes: the stream decompresses
    s3.put_object(Bucket=bucket, Key=key, Body=bytes(body), Metadata=obj["Metadata"])
    make_small_db(unique_db_name)
    before = pg.fingerprint(unique_db_name)
    # Whether loading begins before the last byte arrives is up to the scheduler: on a loaded
    # machine the small artifact can arrive whole before pg_restore starts (seen once in CI).
    # Every attempt must change nothing; at least one must fail after loading began.
    for dummy in range(3):
        r = play(task("restore", "restore", name=SET, repository=repo, work_dir=str(tmp_path),
                      target=pg_target(unique_db_name, mode="replace", terminate_connections=True, jobs=2)))
        res = assert_failed(r, "restore", "integrity", "does not match its manifest checksum", made["sha256"])
        commands = res.get("executed_commands", [])
        assert not any("--section=post-data" in c or "RENAME TO" in c for c in commands)
        assert pg.fingerprint(unique_db_name) == before
        assert scratch_databases(unique_db_name) == []
        assert not [p for p in tmp_path.iterdir() if p.name.startswith("offsite-restore-")]
        if any("--section=pre-data" in c for c in commands):  # loading had begun
            break
    else:
        pytest.fail("loading never began before the checksum failed, in 3 attempts")
    assert hashlib.sha256(bytes(body)).hexdigest() != made["sha256"]


def test_a_large_table_is_loaded_in_pieces_by_several_loaders(sample_db, unique_db_name, tmp_path, monkeypatch):
    """Cut every 64 KiB of rows (64 MiB in production), public.attachments (2 MiB of
    incompressible rows) is COPYed in many pieces, each by its own pg_restore: the rows are all
    there, once (the row counts and the fingerprint)."""
    operations, commands, dummy = engine()
    from ansible_collections.offsite.backup.plugins.module_utils._engine import pgcustom
    from ansible_collections.offsite.backup.plugins.module_utils._engine.sources import postgresql_following
    monkeypatch.setattr(pgcustom, "SEGMENT", 64 * 1024)
    # the work file once loaded: the pieces the loaders read are holes now (their blocks freed);
    # the TOC and the header of each cut block, which every piece after a cut repeats, are not
    work_files = []
    finish = postgresql_following.FollowingLoad.finish

    def finish_and_look(self):
        done = finish(self)
        st = Path(self.path).stat()
        work_files.append((st.st_size, st.st_blocks * 512))
        return done
    monkeypatch.setattr(postgresql_following.FollowingLoad, "finish", finish_and_look)
    (tmp_path / "repo").mkdir()
    repo = local_repo(tmp_path / "repo")
    _backup(sample_db, tmp_path, repo)
    log = commands.CommandLog()
    result = operations.restore(SET, repo, pg_target(unique_db_name, jobs=2), work_dir=str(tmp_path), log=log)
    offsets = result["data_offsets"]
    assert offsets["loaded_in_pieces"] > offsets["entries"]  # more pieces than tables with data
    loaders = [c for c in log.commands if "pg_restore" in c and " -L " in c and "--section" not in c]
    assert len(loaders) >= offsets["loaded_in_pieces"] // 2  # each run loads one piece of a table
    assert result["restored"]["verified_tables"] > 5
    assert pg.fingerprint(unique_db_name) == pg.fingerprint(sample_db)
    [(size, allocated)] = work_files
    print(f"the work file once loaded: {size} bytes, {allocated} allocated")
    assert allocated < size - 2 ** 20  # public.attachments alone is 2 MiB of rows, all read by loaders


def test_a_download_that_ends_before_the_scheduler_looks_still_loads_in_pieces(
        sample_db, unique_db_name, tmp_path, monkeypatch):
    """A fast download (a local disk, a small database) can end before the scheduler's first
    look at the file. The restore then used to give everything to the final ``pg_restore -j``
    (no table cut into pieces, no schema first): which way it loaded depended on that race, and
    a test of the pieces failed now and then. Here the scheduler starts only once the download
    has ended."""
    operations, commands, dummy = engine()
    from ansible_collections.offsite.backup.plugins.module_utils._engine import pgcustom
    from ansible_collections.offsite.backup.plugins.module_utils._engine.sources import postgresql_following
    monkeypatch.setattr(pgcustom, "SEGMENT", 64 * 1024)
    load = postgresql_following.FollowingLoad
    finish = load.finish
    monkeypatch.setattr(load, "start", lambda self: None)

    def late_start_then_finish(self):
        with self.cond:  # the scheduler's first look waits until finish has looked
            self.thread.start()
            return finish(self)
    monkeypatch.setattr(load, "finish", late_start_then_finish)
    (tmp_path / "repo").mkdir()
    repo = local_repo(tmp_path / "repo")
    _backup(sample_db, tmp_path, repo)
    log = commands.CommandLog()
    result = operations.restore(SET, repo, pg_target(unique_db_name, jobs=2), work_dir=str(tmp_path), log=log)
    assert result["data_offsets"]["loaded_while_downloading"] == 0
    assert result["data_offsets"]["loaded_in_pieces"] > result["data_offsets"]["entries"]
    restores = [c for c in log.commands if "pg_restore" in c]
    assert "--section=pre-data" in restores[0] and "--section=post-data" in restores[-1]
    assert pg.fingerprint(unique_db_name) == pg.fingerprint(sample_db)


def _watch_the_download(monkeypatch, lead, feed_step):
    """FollowingLoad with ``LEAD`` and ``FEED_STEP`` set small, recording after each of the
    download's chunks how far it was ahead of the loaders and what the work file held."""
    from ansible_collections.offsite.backup.plugins.module_utils._engine import pgcustom
    from ansible_collections.offsite.backup.plugins.module_utils._engine.sources import postgresql_following
    load = postgresql_following.FollowingLoad
    monkeypatch.setattr(pgcustom, "SEGMENT", 64 * 1024)
    monkeypatch.setattr(postgresql_following, "LEAD", lead)
    monkeypatch.setattr(postgresql_following, "FEED_STEP", feed_step)
    monkeypatch.setattr(postgresql_following, "LEAD_WAIT_SECONDS", 60)  # a busy CI machine is no stall
    seen = {"ahead": [], "held": [], "chunks": [], "toc_end": None, "free": None}
    tap = load.tap

    def tap_and_look(self, data):
        # the schema first, as from a store slower than this test's small local archive: no
        # loader runs before it, and until then the download does not wait
        deadline = time.monotonic() + 60
        while self.plan.toc_ready(self._written()) and self.schema != "loaded" and time.monotonic() < deadline:
            time.sleep(0.01)
        tap(self, data)
        written = self._written()
        st = Path(self.path).stat()
        seen["ahead"].append(written - self._unread(written))
        seen["held"].append(st.st_blocks * 512)
        seen["chunks"].append(len(data))
        seen["toc_end"], seen["free"] = self.recorder.toc_end, self.held_back
    monkeypatch.setattr(load, "tap", tap_and_look)
    return seen


def test_the_download_waits_for_the_loaders_and_the_work_file_stays_small(
        sample_db, unique_db_name, tmp_path, monkeypatch):
    """A download faster than its loaders is held back within ``LEAD`` of what they have still
    to read, so the work file holds about ``LEAD`` of rows at any time, not the archive; the
    restored database is the source's all the same."""
    operations, commands, dummy = engine()
    lead = 256 * 1024
    seen = _watch_the_download(monkeypatch, lead, 64 * 1024)
    (tmp_path / "repo").mkdir()
    repo = local_repo(tmp_path / "repo")
    made = _backup(sample_db, tmp_path, repo)
    result = operations.restore(SET, repo, pg_target(unique_db_name, jobs=2), work_dir=str(tmp_path),
                                log=commands.CommandLog())
    assert pg.fingerprint(unique_db_name) == pg.fingerprint(sample_db)
    assert result["data_offsets"]["loaded_in_pieces"] > result["data_offsets"]["entries"]
    # what the engine wrote: the raw archive, several times the bound below
    bound = seen["toc_end"] + lead + max(seen["chunks"]) + 64 * 4096  # + the cut blocks' headers
    print(f"raw {made['raw_size']} bytes; ahead at most {max(seen['ahead'])}, held at most {max(seen['held'])}, "
          f"bound {bound}; chunks {len(seen['chunks'])} of at most {max(seen['chunks'])}")
    assert made["raw_size"] > 2 * bound
    assert seen["free"] is True  # never timed out: every hold ended when the loaders caught up
    assert max(seen["ahead"]) <= lead
    assert max(seen["held"]) <= bound


def test_loaders_that_stall_let_the_download_run_free_and_the_restore_completes(
        sample_db, unique_db_name, tmp_path, monkeypatch):
    """The hold is a courtesy to the page cache, never a wait without end: loaders that stop
    reading for longer than ``LEAD_WAIT_SECONDS`` let the download write the rest of the work
    file as before, and the restore completes."""
    operations, commands, dummy = engine()
    from ansible_collections.offsite.backup.plugins.module_utils._engine.sources import postgresql_following
    seen = _watch_the_download(monkeypatch, 64 * 1024, 64 * 1024)
    monkeypatch.setattr(postgresql_following, "LEAD_WAIT_SECONDS", 0.3)
    copy = postgresql_following.FollowingLoad._copy
    stalled = []

    def stall_once(archive, pipe, start, end):
        if start > 0 and not stalled:  # the first rows a loader reads: it stops for a while
            stalled.append(start)
            time.sleep(1.5)
        return copy(archive, pipe, start, end)
    monkeypatch.setattr(postgresql_following.FollowingLoad, "_copy", staticmethod(stall_once))
    (tmp_path / "repo").mkdir()
    repo = local_repo(tmp_path / "repo")
    _backup(sample_db, tmp_path, repo)
    operations.restore(SET, repo, pg_target(unique_db_name, jobs=2), work_dir=str(tmp_path),
                       log=commands.CommandLog())
    assert stalled and seen["free"] is False  # the hold gave up once, and the download ran free
    assert pg.fingerprint(unique_db_name) == pg.fingerprint(sample_db)


def test_a_role_that_is_no_superuser_restores_too(sample_db, unique_db_name, tmp_path):
    """A superuser's loaders do not zero-fill the WAL files they create (``load_env``); the
    setting is a superuser's only, and anyone else's connection would be refused with it. A
    role with CREATEDB restores as it did, its loaders with their other settings."""
    operations, commands, dummy = engine()
    (tmp_path / "repo").mkdir()
    repo = local_repo(tmp_path / "repo")
    _backup(sample_db, tmp_path, repo)
    role = "offsite_loader_%s" % unique_db_name[-8:]
    pg.run_sql("postgres", "CREATE ROLE %s LOGIN CREATEDB" % pg.quote_ident(role))
    try:
        operations.restore(SET, repo, pg_target(unique_db_name, user=role, jobs=2, no_owner=True),
                           work_dir=str(tmp_path), log=commands.CommandLog())
        assert pg.fingerprint(unique_db_name)["tables"] == pg.fingerprint(sample_db)["tables"]
        assert pg.run_sql("postgres", "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s"
                          % pg.quote_literal(unique_db_name)).strip() == role
    finally:
        pg.drop_database(unique_db_name)
        pg.run_sql("postgres", "DROP ROLE IF EXISTS %s" % pg.quote_ident(role))
