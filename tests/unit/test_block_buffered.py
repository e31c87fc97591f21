# Copyright (c) offsite.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``commands.block_buffered``: a producer whose output the engine reads from a pipe (pg_dump)
runs under coreutils' ``stdbuf -o``, so that stdio hands the pipe blocks of PIPE_SIZE instead
of 4 KiB, each of which woke the reader. Tested with real processes: the blocks a reader gets,
the program's environment, and what happens where stdbuf is missing."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import shutil
import subprocess
import sys

import pytest

from ansible_collections.offsite.backup.plugins.module_utils._engine import commands

# a stdio writer: 8 MiB in lines of 100 bytes, as pg_dump writes a row at a time (awk's print
# goes through C stdio, which stdbuf configures; Python's own buffering would not listen)
WRITER = ["awk", "BEGIN { s = sprintf(\"%99s\", \"\"); for (i = 0; i < 83886; i++) print s }"]
SIZE = 83886 * 100
needs_stdbuf = pytest.mark.skipif(not (shutil.which("stdbuf") and shutil.which("awk")), reason="no stdbuf or awk")


def _writes(argv):
    """The write() calls ``argv`` made for its output, read by us from a pipe, and the bytes:
    counted by the kernel (/proc/PID/io, read before the exited process is reaped)."""
    with commands.streaming(argv, commands.CommandLog()) as proc:
        size = len(proc.stdout.read())
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        with open("/proc/%d/io" % proc.pid) as handle:
            io = dict(line.split(": ") for line in handle.read().splitlines())
        assert proc.wait() == 0
    return int(io["syscw"]), size


@needs_stdbuf
def test_a_stdio_writer_fills_the_pipe_in_large_blocks():
    plain, size = _writes(WRITER)
    buffered, size2 = _writes(commands.block_buffered(WRITER))
    assert size == size2 == SIZE
    print("write() calls for 8 MiB: %d plain, %d block-buffered" % (plain, buffered))
    assert plain >= SIZE // 8192  # stdio's block for a pipe: 4 KiB here
    assert buffered <= SIZE // commands.PIPE_SIZE + 1


def test_stdbuf_runs_the_program_in_its_place_with_its_exit_status():
    argv = commands.block_buffered([sys.executable, "-c", "import os, sys; print(os.getpid()); sys.exit(3)"])
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert proc.returncode == 3
    with commands.streaming(argv, commands.CommandLog()) as running:
        pid = int(running.stdout.read())
        assert running.wait() == 3
    assert pid == running.pid  # the same process: signals, pdeathsig and the exit status are the tool's


def test_without_stdbuf_the_program_runs_as_it_is(monkeypatch):
    monkeypatch.setattr(commands, "_STDBUF", [])
    monkeypatch.setattr(commands.shutil, "which", lambda name: None)
    assert commands.block_buffered(["pg_dump", "db"]) == ["pg_dump", "db"]


def test_a_stdbuf_that_cannot_run_a_program_is_not_used(tmp_path, monkeypatch):
    """A coreutils without libstdbuf.so: stdbuf exits 125 before it runs anything. Every dump
    would fail with it, so it is tried once and then left out."""
    broken = tmp_path / "stdbuf"
    broken.write_text("#!/bin/sh\necho \"stdbuf: failed to find 'libstdbuf.so'\" >&2\nexit 125\n")
    broken.chmod(0o755)
    monkeypatch.setattr(commands, "_STDBUF", [])
    monkeypatch.setenv("PATH", "%s:%s" % (tmp_path, os.environ["PATH"]))
    assert commands.block_buffered(["pg_dump", "db"]) == ["pg_dump", "db"]
    assert commands.block_buffered(["pg_restore"], stdin=True) == ["pg_restore"]  # tried once


@needs_stdbuf
def test_the_wrapped_program_keeps_its_environment(monkeypatch):
    program = "/usr/lib/postgresql/15/bin/pg_dump"
    monkeypatch.setattr(commands, "_PAST_WRAPPER", {program})
    monkeypatch.delenv("PGSYSCONFDIR", raising=False)
    argv = commands.block_buffered([program, "db"])
    assert argv[0] != program and commands._program(argv) == program
    assert commands.child_env({}, commands._program(argv))["PGSYSCONFDIR"] == "/etc/postgresql-common"
