"""pg_dump, mariadb-dump and the loaders that read a pipe (``pg_restore`` in a following
restore, psql or pg_restore in a streaming one) run under ``stdbuf`` (``commands.block_buffered``):
stdio then moves 1 MiB per system call on the pipe instead of 4 KiB. Counted by the kernel
(``/proc/PID/io``, read before the exited process is reaped), with the real tools on an
archive of 100,000 rows of 100 bytes, as pgbench's; the restores' own tests prove what they
load."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest

from tests.harness import pg

pytestmark = pytest.mark.skipif(not shutil.which("stdbuf"), reason="no coreutils stdbuf here")


def engine_commands():
    from ansible_collections.offsite.backup.plugins.module_utils._engine import commands
    return commands


def _io(proc) -> dict:
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    with open("/proc/%d/io" % proc.pid) as handle:
        io = dict((k, int(v)) for k, v in (line.split(": ") for line in handle.read().splitlines()))
    assert proc.wait() == 0
    return io


def test_pg_dump_writes_and_pg_restore_reads_the_pipe_in_large_blocks(unique_db_name):
    commands = engine_commands()
    pg.create_database(unique_db_name)
    pg.run_sql(unique_db_name, "CREATE TABLE rows AS SELECT g AS id, repeat('x', 90) AS filler "
                               "FROM generate_series(1, 100000) g;")
    dump = [commands.which("pg_dump", "x"), "-Fc", "-Z0", "-h", "127.0.0.1", "-U", "postgres", unique_db_name]
    restore = [commands.which("pg_restore", "x"), "-f", os.devnull]  # reads the archive on stdin
    writes, archive = {}, {}
    for buffered in (False, True):
        argv = commands.block_buffered(dump) if buffered else dump
        with commands.streaming(argv, commands.CommandLog(), env=pg.pg_env()) as proc:
            archive[buffered] = proc.stdout.read()
            writes[buffered] = _io(proc)["syscw"]
    assert archive[False][:5] == b"PGDMP" and len(archive[True]) == len(archive[False])
    size = len(archive[True])
    reads = {}
    for buffered in (False, True):
        argv = commands.block_buffered(restore, stdin=True) if buffered else restore
        with commands.streaming(argv, commands.CommandLog(), stdin=subprocess.PIPE) as proc:
            commands.feed(proc, [archive[True][i:i + commands.PIPE_SIZE] for i in range(0, size, commands.PIPE_SIZE)])
            reads[buffered] = _io(proc)["syscr"]
    print(f"archive {size} bytes; pg_dump write() calls {writes}; pg_restore read() calls {reads}")
    assert writes[False] >= size // 8192 and writes[True] <= size // commands.PIPE_SIZE + 20
    assert reads[False] >= size // 8192 and reads[True] < reads[False] // 8


MYSQL = ["mysql", "--host=127.0.0.1", "--port=3306", "--user=root", "--batch"]


def test_mariadb_dump_writes_the_pipe_in_large_blocks():
    commands = engine_commands()
    name = "offsite_bb_%s" % uuid.uuid4().hex[:8]
    rows = ("INSERT INTO r VALUES %s;" % ",".join("(%d,'%s')" % (n, "x" * 90) for n in range(k, k + 10000))
            for k in range(1, 100001, 10000))
    subprocess.run(MYSQL, check=True, capture_output=True, text=True, input=(
        f"CREATE DATABASE {name}; USE {name}; CREATE TABLE r (id INT PRIMARY KEY, f VARCHAR(100));\n"
        + "\n".join(rows)))
    try:
        tool = shutil.which("mariadb-dump") or shutil.which("mysqldump")
        dump = [tool, "--host=127.0.0.1", "--port=3306", "--user=root", "--single-transaction", name]
        writes, sizes = {}, {}
        for buffered in (False, True):
            argv = commands.block_buffered(dump) if buffered else dump
            with commands.streaming(argv, commands.CommandLog()) as proc:
                sizes[buffered] = len(proc.stdout.read())
                writes[buffered] = _io(proc)["syscw"]
        print(f"dump {sizes} bytes; write() calls {writes}")
        assert sizes[True] > 9 * 10 ** 6
        assert writes[False] >= sizes[False] // 8192 and writes[True] <= sizes[True] // commands.PIPE_SIZE + 20
    finally:
        subprocess.run(MYSQL + ["-e", f"DROP DATABASE IF EXISTS {name}"], check=False, capture_output=True)
