"""CPU seconds per process of a measured command, and of the PostgreSQL backends it talks to,
without psutil: ``/proc/<pid>/stat`` (utime + stime) sampled every ``interval`` seconds.

- the command's process tree: every process whose parent chain leads to the measured pid,
  grouped by what it is (the engine's Python, pg_dump, psql, zstd, ...);
- the server side: the backends whose ``application_name`` is one of ``app_names`` (the engine
  sets PGAPPNAME=offsite.backup; the reference pipelines run with their own), found in
  ``pg_stat_activity`` by a psql session kept open for the measurement.

A process's last sample is at most ``interval`` before it ended, so the figures are a little
low (a few tens of ms each); ``/usr/bin/time``'s total of the tree is the exact sum, and the
difference is reported as ``unattributed``."""

from __future__ import annotations

import os
import subprocess
import threading
import time

TICK = os.sysconf("SC_CLK_TCK")
_MARK = "__proc_cpu__"


def read_stat(pid: int) -> tuple[str, int, float, int] | None:
    """(comm, ppid, cpu seconds, start time in ticks) of ``pid``, None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read().decode(errors="replace")
    except OSError:
        return None
    comm = raw[raw.index("(") + 1:raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2:].split()
    # fields[0] is state (field 3): ppid 4, utime 14, stime 15, starttime 22
    return comm, int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK, int(fields[19])


def group_of(comm: str) -> str:
    if comm.startswith("python"):
        return "engine (Python: zstd, hashes, S3 client)"
    return comm


class CpuSampler:
    def __init__(self, root_pid: int, app_names: tuple[str, ...], pg_env: dict, psql: str = "psql",
                 interval: float = 0.02, database: str | None = None, database_prefix: str | None = None):
        self.root_pid = root_pid
        self.app_names = app_names
        self.database = database  # other engines (tests running meanwhile) share the application_name
        self.database_prefix = database_prefix  # or: databases whose name starts so (a restore's scratch)
        self.interval = interval
        self.seen: dict[tuple[int, int], tuple[str, float]] = {}  # (pid, start) -> (group, cpu)
        self.backends: set[int] = set()
        self.stopped = threading.Event()
        self.session = subprocess.Popen([psql, "-X", "-A", "-t", "-q", "-d", "postgres"], env=pg_env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _find_backends(self) -> None:
        names = ", ".join("'%s'" % n for n in self.app_names)
        where = f" AND datname = '{self.database}'" if self.database else ""
        if self.database_prefix:
            where += f" AND starts_with(datname, '{self.database_prefix}')"
        self.session.stdin.write(f"SELECT pid FROM pg_stat_activity WHERE application_name IN ({names}){where};\n"
                                 f"\\echo {_MARK}\n")
        self.session.stdin.flush()
        for line in iter(self.session.stdout.readline, ""):
            line = line.strip()
            if line == _MARK:
                return
            if line:
                self.backends.add(int(line))

    def _poll(self) -> None:
        children: dict[int, list[int]] = {}
        stats = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                stat = read_stat(int(entry))
                if stat is not None:
                    stats[int(entry)] = stat
                    children.setdefault(stat[1], []).append(int(entry))
        tree, todo = set(), [self.root_pid]
        while todo:
            pid = todo.pop()
            if pid not in tree:
                tree.add(pid)
                todo.extend(children.get(pid, []))
        if self.database_prefix:
            self.backends.update(pid for pid, stat in stats.items()
                                 if stat[0] == "postgres" and self._backend_of_prefix(pid))
        for pid in tree | self.backends:
            stat = stats.get(pid)
            if stat is None:
                continue
            comm, dummy, cpu, start = stat
            group = "PostgreSQL backend" if pid in self.backends else group_of(comm)
            self.seen[(pid, start)] = (group, cpu)

    def _backend_of_prefix(self, pid: int) -> bool:
        """A backend connected to a database named ``database_prefix``...: its title is
        ``postgres: [<cluster_name>:] <user> <database> <client> <activity>`` (also catches connections that live
        shorter than ``_find_backends``' period, e.g. pg_restore's)."""
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                title = handle.read().decode(errors="replace").split()
        except OSError:
            return False
        if not title or title[0] != "postgres:":
            return False
        fields = title[2:] if len(title) > 1 and title[1].endswith(":") else title[1:]  # cluster_name
        return len(fields) > 1 and fields[1].startswith(self.database_prefix)

    def _run(self) -> None:
        polls = 0
        while not self.stopped.is_set():
            if polls % 5 == 0:
                self._find_backends()
            self._poll()
            polls += 1
            time.sleep(self.interval)

    def stop(self) -> dict[str, float]:
        """CPU seconds per group."""
        self.stopped.set()
        self.thread.join()
        self.session.stdin.close()
        self.session.wait()
        groups: dict[str, float] = {}
        for group, cpu in self.seen.values():
            groups[group] = groups.get(group, 0.0) + cpu
        return groups
