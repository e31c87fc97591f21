"""A killed restore is a stopped restore, and a replace checks before it downloads (issue 12,
items 6 and 11).

The kill tests runs a real ``replace`` restore through ``ansible-playbook`` with a ``pg_restore``
that first waits (a shim on PATH that sleeps, then execs the real one, so the kill lands while
the restore is loading), kills something, and then checks the state: the target database is
exactly the old one, no process of the restore is left (``pgrep``), and what the killed run
left behind is removed by the ``cleanup`` action.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.harness import pg
from tests.harness.ansible import run_playbook
from tests.integration.helpers import _descendants, local_repo, pg_source, pg_target

pytestmark = pytest.mark.integration

SET = "killset"


def _uid() -> str:
    return uuid.uuid4().hex[:8]


def task(title: str, module: str, /, **args) -> dict:
    return {"name": title, f"offsite.backup.{module}": args}


def scratch_databases(db: str) -> list[str]:
    out = pg.run_sql("postgres", "SELECT datname FROM pg_database WHERE datname <> "
                                 f"{pg.quote_literal(db)} AND datname LIKE {pg.quote_literal(db[:30] + '%')};")
    return [line for line in out.splitlines() if line]


def processes_naming(text: str) -> list[str]:
    """Command lines of every process whose command line holds ``text`` (pgrep -f)."""
    r = subprocess.run(["pgrep", "-a", "-f", text], capture_output=True, text=True, check=False)
    return [line for line in r.stdout.splitlines() if str(os.getpid()) != line.split()[0]]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def wait_until(predicate, timeout: float = 90, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


@pytest.fixture(scope="module")
def source_db():
    name = f"offsite_killsrc_{_uid()}"
    pg.create_sample_database(name)
    try:
        yield name
    finally:
        pg.drop_database(name)


@pytest.fixture(scope="module")
def dumped(source_db, tmp_path_factory):
    dest = tmp_path_factory.mktemp("killdump")
    r = run_playbook([task("dump", "dump", name=SET, source=pg_source(source_db), dest=str(dest))])
    assert r.rc == 0, r.output
    return str(dest)


@pytest.fixture(scope="module")
def slow_tools(tmp_path_factory):
    """A directory for PATH holding ``pg_restore``: sleeps ``OFFSITE_TEST_DELAY`` seconds, then
    execs the real one (same process: what kills the shim kills pg_restore)."""
    bin_dir = tmp_path_factory.mktemp("slowbin")
    real = shutil.which("pg_restore")
    shim = bin_dir / "pg_restore"
    shim.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import os, sys, time
        time.sleep(float(os.environ.get("OFFSITE_TEST_DELAY", "8")))
        os.execv({real!r}, [{real!r}] + sys.argv[1:])
        """))
    shim.chmod(0o755)
    return str(bin_dir)


@pytest.fixture
def victim(tmp_path):
    """An existing database with known content (the replace target) and its fingerprint."""
    name = f"offsite_victim_{_uid()}"
    pg.create_database(name)
    pg.run_sql(name, "CREATE TABLE keep_me (id int PRIMARY KEY, note text);"
                     "INSERT INTO keep_me VALUES (1, 'précieux'), (2, 'do not lose');")
    try:
        yield name, pg.fingerprint(name)
    finally:
        for db in scratch_databases(name) + [name]:
            pg.drop_database(db)


class Playbook(threading.Thread):
    """ansible-playbook running in the background; ``pid`` once it started."""

    def __init__(self, tasks, env):
        super().__init__(daemon=True)
        self.tasks, self.env, self.result = tasks, env, None

    def run(self):
        self.result = run_playbook(self.tasks, env=self.env, timeout=300)

    def pid(self) -> int | None:
        for pid in _descendants(os.getpid()):
            if "ansible-playbook" in cmdline(pid) and "AnsiballZ" not in cmdline(pid):
                return pid
        return None

    def module_pid(self) -> int | None:
        for pid in _descendants(os.getpid()):
            if "AnsiballZ_restore" in cmdline(pid) and "/bin/sh" not in cmdline(pid):
                return pid
        return None


def start_replace(dumped, db, workdir, slow_tools, delay=8):
    play = Playbook([task("restore", "restore", name=SET, repository=local_repo(dumped), work_dir=str(workdir),
                          target=pg_target(db, mode="replace", terminate_connections=True))],
                    env={"PATH": f"{slow_tools}:{os.environ['PATH']}", "OFFSITE_TEST_DELAY": str(delay)})
    play.start()
    # loading: the scratch database exists and pg_restore (still the sleeping shim) runs
    assert wait_until(lambda: scratch_databases(db) and processes_naming(f"pg_restore .*{db}")), \
        "the restore never started loading"
    return play


def assert_untouched(db, fingerprint):
    assert pg.fingerprint(db) == fingerprint, "the target database changed"


def test_controller_killed_never_swaps(dumped, victim, tmp_path, slow_tools):
    """SIGKILL of ansible-playbook while loading: the module stops, removes its scratch
    database and work directory, and never swaps (on the old code it swapped ~8 s later)."""
    db, before = victim
    play = start_replace(dumped, db, tmp_path, slow_tools)
    controller = play.pid()
    assert controller, "ansible-playbook not found"
    family = _descendants(controller)
    os.kill(controller, signal.SIGKILL)
    assert wait_until(lambda: not [p for p in family if Path(f"/proc/{p}").exists()
                                   and "(Z)" not in Path(f"/proc/{p}/stat").read_text()], timeout=120), \
        [cmdline(p) for p in family]
    play.join(60)
    time.sleep(10)  # longer than the shim's delay: a restore still running would have swapped by now
    assert_untouched(db, before)
    assert processes_naming(db) == []
    assert scratch_databases(db) == []
    assert not list(tmp_path.glob("offsite-restore-*"))


def test_sigterm_stops_and_cleans_up(dumped, victim, tmp_path, slow_tools):
    """SIGTERM of the module: pg_restore stops, the scratch database and the work directory
    are removed, the module fails with error: interrupted."""
    db, before = victim
    play = start_replace(dumped, db, tmp_path, slow_tools)
    module = play.module_pid()
    assert module, "the restore module process not found"
    os.kill(module, signal.SIGTERM)
    play.join(120)
    r = play.result
    assert r is not None and r.status("restore") == "failed", r.output if r else "no result"
    assert r.result("restore")["error"] == "interrupted", r.output
    assert "SIGTERM" in r.result("restore")["msg"]
    assert_untouched(db, before)
    assert processes_naming(db) == []
    assert scratch_databases(db) == []
    assert not list(tmp_path.glob("offsite-restore-*"))


def test_engine_killed_takes_its_children(dumped, victim, tmp_path, slow_tools):
    """SIGKILL of the module itself: no handler runs, but pg_restore dies with it (parent-death
    signal), and the target is untouched."""
    db, before = victim
    play = start_replace(dumped, db, tmp_path, slow_tools)
    module = play.module_pid()
    assert module, "the restore module process not found"
    os.kill(module, signal.SIGKILL)
    play.join(120)
    assert wait_until(lambda: not processes_naming(f"pg_restore .*{db}"), timeout=10), processes_naming(db)
    time.sleep(10)  # longer than the shim's delay: an orphaned pg_restore would be loading now
    assert processes_naming(db) == []
    assert_untouched(db, before)


def play_restore(dumped, db, workdir, **target):
    return run_playbook([task("restore", "restore", name=SET, repository=local_repo(dumped), work_dir=str(workdir),
                              target=pg_target(db, **target))])


def test_replace_a_database_whose_name_fills_63_bytes(dumped, tmp_path):
    """Scratch and previous names of a 62-byte name (31 two-byte characters) used to be cut to
    the same identifier: the swap failed. Both restores (create, then replace) succeed now."""
    db = "é" * 30 + _uid()[:2]
    assert len(db.encode("utf-8")) == 62
    try:
        r = play_restore(dumped, db, tmp_path)
        assert r.rc == 0, r.output
        first = pg.fingerprint(db)
        pg.run_sql(db, "CREATE TABLE changed_since (id int);")
        r = play_restore(dumped, db, tmp_path, mode="replace")
        assert r.rc == 0, r.output
        assert r.result("restore")["restored"]["replaced"] is True
        assert pg.fingerprint(db) == first
        assert scratch_databases(db) == []
    finally:
        for name in scratch_databases(db) + [db]:
            pg.drop_database(name)


def test_busy_target_is_refused_before_anything_is_downloaded(dumped, victim, tmp_path):
    """replace without terminate_connections onto a database in use fails at once: no work
    file, no scratch database, no pg_restore (it used to load everything first)."""
    db, before = victim
    session = subprocess.Popen(["psql", "-X", "-q", "-h", "127.0.0.1", "-U", "postgres", "-d", db,
                                "-c", "SELECT pg_sleep(120)"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: pg.run_sql("postgres", "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                                             f"{pg.quote_literal(db)};").strip() == "1", timeout=30)
        r = play_restore(dumped, db, tmp_path, mode="replace")
        assert r.rc != 0, r.output
        res = r.result("restore")
        assert res["error"] == "target", res
        assert "open session" in res["msg"] and db in res["msg"]
        assert not [c for c in res["executed_commands"] if "pg_restore" in c or "CREATE DATABASE" in c]
        assert not list(tmp_path.glob("offsite-restore-*"))
        assert scratch_databases(db) == []
        assert_untouched(db, before)
    finally:
        session.kill()
        session.wait()
