"""lifeline: who started us, whether they still live, and children that die with the engine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from ansible_collections.offsite.backup.plugins.module_utils._engine import lifeline
from ansible_collections.offsite.backup.plugins.module_utils._engine.commands import CommandLog, streaming


def test_ancestors_are_the_parent_chain():
    chain = lifeline.ancestors()
    assert chain[0][0] == os.getppid()
    assert all(lifeline.alive(pid, start) for pid, start in chain)
    assert 1 not in [pid for pid, dummy in chain]


def test_a_reused_pid_is_not_alive():
    pid, start = lifeline.ancestors()[0]
    assert not lifeline.alive(pid, start + 1)
    assert not lifeline.alive(2 ** 22 + 7, 0)


def test_check_refuses_after_the_controller_died():
    controller = subprocess.Popen(["sleep", "30"])
    with lifeline.guarded():
        lifeline.check()  # our real ancestors live
        lifeline._state["ancestors"].append((controller.pid, lifeline.process_start(controller.pid)[1]))
        controller.kill()
        controller.wait()
        with pytest.raises(lifeline.Interrupted, match="pid %d" % controller.pid):
            lifeline.check()
    assert lifeline._state["ancestors"] is None


def test_a_signal_raises_interrupted_and_is_remembered():
    before = signal.getsignal(signal.SIGTERM)
    with lifeline.guarded():
        with pytest.raises(lifeline.Interrupted, match="SIGTERM"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        with pytest.raises(lifeline.Interrupted, match="stopped before swapping"):
            lifeline.check()
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_watcher_interrupts_a_blocking_wait():
    controller = subprocess.Popen(["sleep", "30"])
    started = time.monotonic()
    with pytest.raises(lifeline.Interrupted, match="pid %d" % controller.pid):
        with lifeline.guarded():
            lifeline._state["ancestors"].append((controller.pid, lifeline.process_start(controller.pid)[1]))
            controller.kill()
            controller.wait()
            with streaming(["sleep", "30"], CommandLog()) as proc:
                proc.wait()
    assert time.monotonic() - started < 15


def test_children_die_with_a_sigkilled_engine(tmp_path):
    """An engine process starts a tool through commands.streaming and is SIGKILLed: the tool
    (here ``sleep``) is gone right after, not reparented to init."""
    pidfile = tmp_path / "child"
    engine = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""\
        from ansible_collections.offsite.backup.plugins.module_utils._engine.commands import CommandLog, streaming
        with streaming(["sleep", "60"], CommandLog()) as proc:
            open({str(pidfile)!r}, "w").write(str(proc.pid))
            proc.wait()
        """)], env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    deadline = time.monotonic() + 30
    while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(pidfile.read_text())
    engine.kill()
    engine.wait()
    deadline = time.monotonic() + 10
    while lifeline.process_start(child) and lifeline.process_start(child)[0] != "Z" and time.monotonic() < deadline:
        time.sleep(0.05)
    state = lifeline.process_start(child)
    assert state is None or state[0] == "Z", "sleep outlived the engine that started it"
