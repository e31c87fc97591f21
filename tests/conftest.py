"""Top-level pytest configuration: make ``import tests.harness`` work from any cwd; CPU seconds
per test (tests/output/cpu.tsv), and how many of them its ansible-playbook runs took
(tests/output/ansible.tsv)."""

import os
import resource
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.harness.ansible import RUN_CPU  # noqa: E402  (found through the path above)
from tests.harness import RESTIC_BIN  # noqa: E402

# restic for every test and what it starts (ansible-playbook, the engine)
os.environ["PATH"] = f"{RESTIC_BIN}{os.pathsep}{os.environ.get('PATH', '')}"


# -- CPU seconds per test: where a 2-core CI machine's time goes --------------------------------
#: junit property of every test: CPU seconds (user + system) of the test process and
#: of the children it waited for (ansible-playbook, the engine, pg_dump, pip...) from its setup to
#: its teardown. Servers shared by many tests (moto, sshd) are counted when they stop, and the
#: PostgreSQL/MariaDB/Redis servers not at all.
CPU_PROPERTY = "cpu_seconds"
#: of which ansible-playbook runs (tests.harness.ansible.run_playbook): [runs, CPU seconds]
ANSIBLE_PROPERTY = "ansible_playbook_runs_cpu_seconds"
_CPU_STARTED = pytest.StashKey[float]()
_CPU_LEDGER: list[tuple[float, str]] = []   # (CPU seconds, test id), in the process that reports
_ANSIBLE_LEDGER: list[tuple[float, int, str]] = []   # (CPU seconds, runs, test id)


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    item.stash[_CPU_STARTED] = _cpu_seconds()
    RUN_CPU.clear()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    yield
    if _CPU_STARTED in item.stash:
        item.user_properties.append((CPU_PROPERTY, round(_cpu_seconds() - item.stash[_CPU_STARTED], 2)))
        item.user_properties.append((ANSIBLE_PROPERTY, [len(RUN_CPU), round(sum(RUN_CPU), 2)]))


def pytest_runtest_logreport(report):
    # (in the controller of a pytest-xdist run too: the workers' reports carry the properties)
    properties = dict(report.user_properties) if report.when == "teardown" else {}
    if properties.get(CPU_PROPERTY) is not None:
        _CPU_LEDGER.append((properties[CPU_PROPERTY], report.nodeid))
    if properties.get(ANSIBLE_PROPERTY):
        runs, cpu = properties[ANSIBLE_PROPERTY]
        _ANSIBLE_LEDGER.append((cpu, runs, report.nodeid))


def pytest_terminal_summary(terminalreporter, config):
    """The CPU hogs, next to --durations' wall-clock list; all of them in tests/output/cpu.tsv."""
    if not _CPU_LEDGER or hasattr(config, "workerinput"):
        return
    ledger = sorted(_CPU_LEDGER, reverse=True)
    terminalreporter.write_sep("=", f"tests: {sum(cpu for cpu, dummy in ledger):.0f} CPU s "
                                    f"(test processes and their children), the 25 heaviest")
    for cpu, nodeid in ledger[:25]:
        terminalreporter.write_line(f"{cpu:8.1f} CPU s  {nodeid}")
    runs, cpu = (sum(entry[i] for entry in _ANSIBLE_LEDGER) for i in (1, 0))
    terminalreporter.write_line(f"of which ansible-playbook: {runs} runs, {cpu:.0f} CPU s (ansible.tsv)")
    out = Path(str(config.rootpath)) / "tests" / "output"
    out.mkdir(parents=True, exist_ok=True)
    (out / "cpu.tsv").write_text("".join(f"{cpu}\t{nodeid}\n" for cpu, nodeid in ledger))
    (out / "ansible.tsv").write_text("".join(f"{cpu}\t{runs}\t{nodeid}\n"
                                             for cpu, runs, nodeid in sorted(_ANSIBLE_LEDGER, reverse=True)))
