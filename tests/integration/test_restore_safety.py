"""A killed restore is a stopped restore, and a replace checks before it downloads (issue 12,
items 6 and 11).

The kill tests runs a real ``replace`` restore through ``ansible-playbook`` with a ``pg_restore``
that first waits (a shim on PATH that sleeps, then execs the real one, so the kill lands while
the restore is loading), kills something, and then checks the state: the target database is
exactly the old one, no process of the restore is left (``pgrep``), and what the killed run
left behind is removed by the ``cleanup`` action.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.harness import COLLECTIONS_PATH, VENV_BIN, pg
from tests.harness.ansible import run_playbook
from tests.integration.helpers import CLI_MODULE, _descendants, cli, engine_dump, local_repo, pg_source, pg_target

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
    """A local repository holding a backup of ``source_db``, dumped by the engine in this process
    (what is tested here is restore and cleanup, not the dump module)."""
    dest = tmp_path_factory.mktemp("killdump")
    engine_dump(SET, pg_source(source_db), dest)
    return str(dest)


@pytest.fixture(scope="module")
def slow_tools(tmp_path_factory):
    """A directory for PATH holding ``pg_restore``: sleeps ``OFFSITE_TEST_DELAY`` seconds (or, with
    ``OFFSITE_TEST_GATE``, until that file exists: a test that must hold the restore while it
    does something of unknown length, however loaded the machine), then execs the real one
    (same process: what kills the shim kills pg_restore)."""
    bin_dir = tmp_path_factory.mktemp("slowbin")
    real = shutil.which("pg_restore")
    shim = bin_dir / "pg_restore"
    shim.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import os, sys, time
        gate = os.environ.get("OFFSITE_TEST_GATE")
        if gate:
            deadline = time.monotonic() + 600
            while not os.path.exists(gate) and time.monotonic() < deadline:
                time.sleep(0.1)
        else:
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


def start_replace(dumped, db, workdir, slow_tools, delay=8, gate=None):
    env = {"PATH": f"{slow_tools}:{os.environ['PATH']}", "OFFSITE_TEST_DELAY": str(delay)}
    if gate:
        env["OFFSITE_TEST_GATE"] = str(gate)
    play = Playbook([task("restore", "restore", name=SET, repository=local_repo(dumped), work_dir=str(workdir),
                          target=pg_target(db, mode="replace", terminate_connections=True))], env=env)
    play.start()
    # loading: the scratch database exists and pg_restore (still the sleeping shim) runs
    assert wait_until(lambda: scratch_databases(db) and processes_naming(f"pg_restore .*{db}")), \
        "the restore never started loading"
    return play


def assert_untouched(db, fingerprint):
    assert pg.fingerprint(db) == fingerprint, "the target database changed"


def assert_no_process_naming(db):
    """No process names ``db``. A backend ends when it sees its client's socket close (the
    fingerprint's pg_dump, or a killed client): on a loaded machine that takes a moment, so the
    check waits for it, bounded."""
    assert wait_until(lambda: processes_naming(db) == [], timeout=60), processes_naming(db)


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
    assert_no_process_naming(db)
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
    assert_no_process_naming(db)
    assert scratch_databases(db) == []
    assert not list(tmp_path.glob("offsite-restore-*"))


def kill_engine(dumped, db, workdir, slow_tools):
    """SIGKILL the restore module while it loads: no handler runs. Returns (the scratch
    databases, the work directories) it left."""
    play = start_replace(dumped, db, workdir, slow_tools)
    module = play.module_pid()
    assert module, "the restore module process not found"
    os.kill(module, signal.SIGKILL)
    play.join(120)
    return scratch_databases(db), sorted(str(p) for p in workdir.glob("offsite-restore-*"))


def test_engine_killed_takes_its_children(dumped, victim, tmp_path, slow_tools):
    """SIGKILL of the module itself: pg_restore dies with it (parent-death signal), the target is
    untouched; the leftovers are removed by the cleanup module (check mode first), which
    reports them, and a second run finds nothing (changed=false)."""
    db, before = victim
    left_dbs, left_dirs = kill_engine(dumped, db, tmp_path, slow_tools)
    assert wait_until(lambda: not processes_naming(f"pg_restore .*{db}"), timeout=10), processes_naming(db)
    time.sleep(10)  # longer than the shim's delay: an orphaned pg_restore would be loading now
    assert processes_naming(db) == []
    assert_untouched(db, before)
    assert len(left_dbs) == 1 and len(left_dirs) == 1, (left_dbs, left_dirs)
    assert oct(os.stat(left_dirs[0]).st_mode & 0o777) == "0o700"
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in Path(left_dirs[0]).iterdir())

    cleanup = task("cleanup", "cleanup", target={"type": "postgresql", "database": db, "host": "127.0.0.1",
                                                 "user": "postgres"}, work_dir=str(tmp_path))
    r = run_playbook([cleanup], check=True)
    assert r.rc == 0, r.output
    expected = [f"scratch database {left_dbs[0]} on 127.0.0.1:5432", f"work directory {left_dirs[0]}"]
    assert r.result("cleanup")["removed"] == expected and r.result("cleanup")["changed"], r.output
    assert scratch_databases(db) == left_dbs  # check mode removed nothing
    r = run_playbook([cleanup, dict(cleanup, name="again")])
    assert r.rc == 0, r.output
    assert r.result("cleanup")["removed"] == expected and r.status("cleanup") == "changed"
    assert r.result("again")["removed"] == [] and r.status("again") == "ok"
    assert scratch_databases(db) == []
    assert not list(tmp_path.glob("offsite-restore-*"))
    assert_untouched(db, before)


def test_the_next_restore_removes_what_a_killed_one_left(dumped, victim, tmp_path, slow_tools, source_db):
    db, before = victim
    left_dbs, left_dirs = kill_engine(dumped, db, tmp_path, slow_tools)
    assert left_dbs and left_dirs
    r = play_restore(dumped, db, tmp_path, mode="replace")
    assert r.rc == 0, r.output
    assert r.result("restore")["cleaned"] == [f"scratch database {left_dbs[0]} on 127.0.0.1:5432",
                                              f"work directory {left_dirs[0]}"]
    assert scratch_databases(db) == []
    assert not list(tmp_path.glob("offsite-restore-*"))
    assert pg.fingerprint(db) == pg.fingerprint(source_db)
    # the scratch database's owner mark went away with the rename: the restored one has none
    assert pg.run_sql("postgres", "SELECT coalesce(shobj_description(oid, 'pg_database'), 'none') FROM pg_database "
                                  f"WHERE datname = {pg.quote_literal(db)};").strip() == "none"


def test_cleanup_never_touches_a_live_restore(dumped, victim, tmp_path, slow_tools, source_db):
    """While a restore loads, cleanup (module and CLI) leaves its scratch database and work
    directory alone; the restore then completes."""
    db, before = victim
    # pg_restore waits until the two cleanup runs (ansible-playbook, then the CLI) are done and
    # checked, however long they take on a loaded machine: the restore is loading all along
    gate = tmp_path / "pg_restore.gate"
    play = start_replace(dumped, db, tmp_path, slow_tools, gate=gate)
    live_dbs, live_dirs = scratch_databases(db), list(tmp_path.glob("offsite-restore-*"))
    r = run_playbook([task("cleanup", "cleanup", target={"type": "postgresql", "database": db},
                           work_dir=str(tmp_path))])
    assert r.rc == 0, r.output
    assert not [item for item in r.result("cleanup")["removed"] if db in item or str(tmp_path) in item]
    job = write_job(tmp_path, dumped, db)
    out = cli("cleanup", str(job), "--work-dir", str(tmp_path), "--json")
    assert out.returncode == 0, out.stderr
    assert not [item for item in json.loads(out.stdout)["removed"] if db in item or str(tmp_path) in item]
    assert scratch_databases(db) == live_dbs and list(tmp_path.glob("offsite-restore-*")) == live_dirs
    gate.touch()
    play.join(180)
    assert play.result.rc == 0, play.result.output
    assert pg.fingerprint(db) == pg.fingerprint(source_db)


def test_cli_cleanup_reports_and_removes(dumped, victim, tmp_path, slow_tools):
    db, before = victim
    left_dbs, left_dirs = kill_engine(dumped, db, tmp_path, slow_tools)
    job = write_job(tmp_path, dumped, db)
    out = cli("cleanup", str(job), "--work-dir", str(tmp_path), "--dry-run")
    assert out.returncode == 0, out.stderr
    assert f"would remove scratch database {left_dbs[0]}" in out.stdout
    assert f"would remove work directory {left_dirs[0]}" in out.stdout
    assert scratch_databases(db) == left_dbs
    out = cli("cleanup", str(job), "--work-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert f"removed scratch database {left_dbs[0]}" in out.stdout, out.stdout
    assert scratch_databases(db) == [] and not list(tmp_path.glob("offsite-restore-*"))
    assert_untouched(db, before)


def write_job(workdir, dumped, db):
    path = workdir / "job.yml"
    path.write_text(yaml.safe_dump({
        "name": "cleanupjob", "local": {"path": str(workdir / "local")},
        "sources": [{"name": SET, "source": pg_source(db)}], "repositories": [local_repo(dumped)],
        "log": {"path": str(workdir / "log" / "cleanupjob.log")}}))
    return path


def test_cli_parent_killed_never_swaps(dumped, victim, tmp_path, slow_tools):
    """SIGKILL of the shell that runs ``offsite-backup restore`` (as cron would): the restore
    notices its parent is gone, stops and removes its scratch work; the target is untouched."""
    db, before = victim
    job = write_job(tmp_path, dumped, db)
    env = {"PATH": f"{slow_tools}:/usr/bin:/bin", "HOME": "/root", "LANG": "C", "OFFSITE_TEST_DELAY": "8",
           "PYTHONPATH": str(COLLECTIONS_PATH)}
    shell = subprocess.Popen(["/bin/sh", "-c", f"{VENV_BIN / 'python'} -m {CLI_MODULE} restore {job} --set {SET} "
                              f"--mode replace --work-dir {tmp_path}; echo finished"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: scratch_databases(db) and processes_naming(f"pg_restore .*{db}")), \
            "the restore never started loading"
        family = _descendants(shell.pid)
        shell.kill()
        shell.wait()
        assert wait_until(lambda: not [p for p in family if Path(f"/proc/{p}").exists()], timeout=120), \
            [cmdline(p) for p in family]
    finally:
        if shell.poll() is None:
            shell.kill()
    time.sleep(10)  # longer than the shim's delay: a restore still running would have swapped by now
    assert_untouched(db, before)
    assert_no_process_naming(db)
    assert scratch_databases(db) == []
    assert not list(tmp_path.glob("offsite-restore-*"))


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


# --- MySQL/MariaDB: the same leases, in the scratch database's comment -------------------------

MYSQL = ["mysql", "--host=127.0.0.1", "--port=3306", "--user=root", "--batch", "--skip-column-names"]


def mysql(statement: str) -> str:
    return subprocess.run(MYSQL + ["--execute", statement], capture_output=True, text=True, check=True).stdout


def lease_of(pid: int) -> str:
    """The comment a restore running as ``pid`` on this host writes on its scratch database."""
    start = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return "offsite.backup scratch " + json.dumps({"host": socket.gethostname(), "boot": boot, "pid": pid,
                                                   "start": start}, sort_keys=True)


def test_mysql_scratch_databases_of_dead_owners_are_removed(tmp_path):
    """A MariaDB scratch database carries its owner in its comment; cleanup drops the dead
    owner's, leaves the live one's alone and lists the one without an owner."""
    db = f"offsite_mykill_{_uid()}"
    dead, live, unowned = (f"{db}_restore_{_uid()}" for dummy in range(3))
    gone = subprocess.Popen(["sleep", "30"])
    try:
        for name in (dead, live, unowned):
            mysql(f"CREATE DATABASE `{name}`")
        mysql(f"ALTER DATABASE `{live}` COMMENT '{lease_of(os.getpid())}'")
        dead_lease = lease_of(gone.pid)
        gone.kill()
        gone.wait()
        mysql(f"ALTER DATABASE `{dead}` COMMENT '{dead_lease}'")
        r = run_playbook([task("cleanup", "cleanup", target={"type": "mysql", "database": db, "host": "127.0.0.1"},
                               work_dir=str(tmp_path))])
        assert r.rc == 0, r.output
        res = r.result("cleanup")
        assert res["removed"] == [f"scratch database {dead} on 127.0.0.1:3306"], res
        assert [k["what"] for k in res["kept"] if "database" in k["what"]] == \
            [f"scratch database {unowned} on 127.0.0.1:3306"], res
        left = set(mysql(f"SHOW DATABASES LIKE '{db}%'").split())
        assert left == {live, unowned}
    finally:
        for name in (dead, live, unowned):
            mysql(f"DROP DATABASE IF EXISTS `{name}`")
