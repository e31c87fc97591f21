# Copyright (c) offsite.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Debian's PostgreSQL client commands are links to postgresql-common's pg_wrapper, a Perl script
that picks a version and execs it (~25 ms of CPU each time; a restore starts dozens).
``commands.which`` gives the program the wrapper would run when given a host, as the engine
always gives one: the newest installed version that has the command, with the wrapper's
PGSYSCONFDIR default."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import subprocess

import pytest

from ansible_collections.offsite.backup.plugins.module_utils._engine import commands

DEBIAN_WRAPPER = "/usr/share/postgresql-common/pg_wrapper"


def _layout(tmp_path, versions):
    """A binroot with ``versions`` ({version: [commands]}) and a bin directory whose commands
    (and pg_isready, which no version has) are links to a pg_wrapper."""
    binroot = tmp_path / "lib" / "postgresql"
    for version, tools in versions.items():
        bindir = binroot / version / "bin"
        bindir.mkdir(parents=True)
        for tool in tools:
            (bindir / tool).write_text("#!/bin/sh\n")
            (bindir / tool).chmod(0o755)
    wrapper = tmp_path / "share" / "postgresql-common" / "pg_wrapper"
    wrapper.parent.mkdir(parents=True)
    wrapper.write_text("#!/usr/bin/perl\n")
    wrapper.chmod(0o755)
    links = tmp_path / "bin"
    links.mkdir()
    for tool in set(t for tools in versions.values() for t in tools) | {"pg_isready"}:
        (links / tool).symlink_to(wrapper)
    return binroot, links


@pytest.fixture
def layout(tmp_path, monkeypatch):
    binroot, links = _layout(tmp_path, {"9.6": ["psql", "pg_restore", "pg_dump"], "10": ["pg_dump"],
                                        "15": ["psql", "pg_restore"], "16": ["psql"]})
    monkeypatch.setattr(commands, "PG_BINROOT", str(binroot))
    monkeypatch.setenv("PATH", str(links))
    monkeypatch.delenv("PGSYSCONFDIR", raising=False)
    return binroot, links


def test_the_newest_version_that_has_the_command(layout):
    binroot, links = layout
    assert commands.which("psql", "x") == str(binroot / "16" / "bin" / "psql")
    assert commands.which("pg_restore", "x") == str(binroot / "15" / "bin" / "pg_restore")  # 16 has none
    assert commands.which("pg_dump", "x") == str(binroot / "10" / "bin" / "pg_dump")  # 10 is newer than 9.6
    assert commands.which("pg_isready", "x") == str(links / "pg_isready")  # none has it: the wrapper says so


def test_the_wrappers_environment_default_and_nothing_else(layout, monkeypatch):
    program = commands.which("psql", "x")
    assert commands.child_env({}, program)["PGSYSCONFDIR"] == "/etc/postgresql-common"
    assert commands.child_env({"PGSYSCONFDIR": "/mine"}, program)["PGSYSCONFDIR"] == "/mine"
    monkeypatch.setenv("PGSYSCONFDIR", "/ours")
    assert commands.child_env({}, program)["PGSYSCONFDIR"] == "/ours"
    monkeypatch.delenv("PGSYSCONFDIR")
    assert "PGSYSCONFDIR" not in commands.child_env({}, "/usr/bin/tar")
    assert "PGSYSCONFDIR" not in commands.child_env({})


def test_other_programs_and_a_missing_binroot_are_left_alone(layout, tmp_path, monkeypatch):
    binroot, links = layout
    own = tmp_path / "own"
    own.mkdir()
    (own / "pg_restore").write_text("#!/bin/sh\n")  # a pg_restore of one's own, first on PATH
    (own / "pg_restore").chmod(0o755)
    monkeypatch.setenv("PATH", "%s:%s" % (own, links))
    assert commands.which("pg_restore", "x") == str(own / "pg_restore")
    monkeypatch.setattr(commands, "PG_BINROOT", str(tmp_path / "nowhere"))
    assert commands.which("psql", "x") == str(links / "psql")


@pytest.mark.skipif(not os.path.exists(DEBIAN_WRAPPER), reason="no postgresql-common here")
@pytest.mark.parametrize("tool", ["psql", "pg_dump", "pg_restore"])
def test_this_nodes_wrapper_runs_the_same_program(tool):
    wrapped = subprocess.run([os.path.join("/usr/bin", tool), "--version", "-h", "127.0.0.1"], capture_output=True,
                             text=True, check=True).stdout
    direct = subprocess.run([commands.which(tool, "x"), "--version"], capture_output=True, text=True,
                            check=True).stdout
    assert commands.which(tool, "x").startswith(commands.PG_BINROOT + "/") and direct == wrapped
