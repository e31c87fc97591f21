"""Run ansible-playbook from tests and get structured results.

    r = run_playbook([{"hosts": "localhost", "gather_facts": False, "tasks": [...]}],
                     extravars={"secret": "x"})
    assert r.rc == 0, r.output
    r.tasks["my task"]["status"]          # "ok" | "changed" | "failed" | "skipped" | "unreachable"
    r.tasks["my task"]["result"]          # the module's result dict (host localhost)
    r.stats["localhost"]["changed"]

How results are captured: ansible-core 2.19 ships no JSON stdout callback (``json`` lives in
the ansible.posix collection, which is not installed), and parsing the default callback's text
is fragile. So each run writes a tiny *notification* callback into its own temporary directory
(outside the collection, pointed to by ANSIBLE_CALLBACK_PLUGINS and enabled by
ANSIBLE_CALLBACKS_ENABLED) that appends one JSON line per task result and one for the final
stats. stdout keeps the normal human-readable output (useful in assertion messages).
Extra vars go through a 0600 JSON file (``-e @file``), never on the command line.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
#: CPU seconds of each ansible-playbook run (the controller, its workers and the modules), in the
#: order of the runs; tests/conftest.py files them under the test that ran them
RUN_CPU: list[float] = []
COLLECTIONS_PATH = REPO_ROOT / ".cache" / "collections"

_CALLBACK_NAME = "offsite_harness_results"
_CALLBACK_SOURCE = r'''
from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: offsite_harness_results
    type: notification
    short_description: JSON lines of task results for the offsite.backup test harness
    description: Appends one JSON object per task result and one for the stats to $OFFSITE_HARNESS_RESULTS.
"""


def _res(result):
    try:
        return result.result            # ansible-core >= 2.19 (native types)
    except AttributeError:
        return result._result


def _host(result):
    try:
        return result.host
    except AttributeError:
        return result._host


def _task(result):
    try:
        return result.task
    except AttributeError:
        return result._task


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "offsite_harness_results"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._path = os.environ.get("OFFSITE_HARNESS_RESULTS")

    def _write(self, obj):
        if not self._path:
            return
        with open(self._path, "a", encoding="utf-8") as f:
            f.write(json.dumps(obj, default=repr, ensure_ascii=False) + "\n")

    def _event(self, status, result, **extra):
        task = _task(result)
        res = _res(result)
        try:
            name = result.task_name
        except AttributeError:
            name = task.get_name()
        self._write(dict(type="task", status=status, task=str(name), action=str(task.action),
                         host=_host(result).get_name(), result=dict(res), at=time.time(), **extra))

    def v2_runner_on_ok(self, result):
        self._event("changed" if _res(result).get("changed") else "ok", result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._event("failed", result, ignored=bool(ignore_errors))

    def v2_runner_on_skipped(self, result):
        self._event("skipped", result)

    def v2_runner_on_unreachable(self, result):
        self._event("unreachable", result)

    def v2_playbook_on_stats(self, stats):
        hosts = {}
        for h in sorted(stats.processed.keys()):
            s = stats.summarize(h)
            hosts[h] = {"ok": s.get("ok", 0), "changed": s.get("changed", 0),
                        "failed": s.get("failures", 0), "unreachable": s.get("unreachable", 0),
                        "skipped": s.get("skipped", 0), "rescued": s.get("rescued", 0),
                        "ignored": s.get("ignored", 0)}
        self._write(dict(type="stats", stats=hosts))
'''


@dataclass
class PlaybookResult:
    rc: int
    stdout: str
    stderr: str
    #: task name -> {"status", "changed", "failed", "skipped", "ignored", "action", "host", "result", "at"}
    #: ("at": the controller's time.time() when the result came in)
    #: for host ``localhost`` (else the first host seen); a repeated name keeps the last one
    tasks: dict = field(default_factory=dict)
    #: host -> {"ok", "changed", "failed", "unreachable", "skipped", "rescued", "ignored"}
    stats: dict = field(default_factory=dict)
    #: every task result in order, all hosts (dicts as in ``tasks`` plus "task")
    events: list = field(default_factory=list)
    playbook: str = ""
    cmd: list = field(default_factory=list)

    @property
    def output(self) -> str:
        """stdout + stderr, for assertion messages."""
        return f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"

    def result(self, task_name: str) -> dict:
        """The module result dict of ``task_name`` (KeyError with the output when missing)."""
        if task_name not in self.tasks:
            raise KeyError(f"task {task_name!r} not run; tasks: {list(self.tasks)}\n{self.output}")
        return self.tasks[task_name]["result"]

    def status(self, task_name: str) -> str:
        return self.tasks[task_name]["status"] if task_name in self.tasks else "not run"

    @property
    def failed_tasks(self) -> list[str]:
        return [n for n, t in self.tasks.items() if t["failed"] and not t.get("ignored")]


#: where ansible-playbook comes from, and the Python its modules run with: scripts/bootstrap.sh's
#: controller virtualenv (ansible-core and the engine's requirements on the distribution's
#: optimised Python: most of the tests' CPU is ansible-playbook runs), else the venv
CONTROLLER_BIN = REPO_ROOT / ".cache" / "controller-venv" / "bin"


def controller_bin(name: str) -> str:
    for d in (CONTROLLER_BIN, Path(sys.executable).parent, REPO_ROOT / ".venv" / "bin"):
        p = d / name
        if p.exists():
            return str(p)
    raise FileNotFoundError(f"{name} not found in the venv (run scripts/bootstrap.sh)")


def _normalise_plays(plays: list) -> list:
    """A list of plays; a list of bare tasks (no ``hosts`` key) becomes one localhost play."""
    if plays and all(isinstance(p, dict) and "hosts" not in p and "import_playbook" not in p
                     and "ansible.builtin.import_playbook" not in p for p in plays):
        return [{"name": "harness", "hosts": "localhost", "gather_facts": False, "tasks": plays}]
    return plays


def run_playbook(playbook, extravars: dict | None = None, check: bool = False, env: dict | None = None,
                 inventory: str = "localhost,", connection: str | None = "local", diff: bool = False,
                 verbosity: int = 0, tags: list[str] | None = None, cwd: str | Path | None = None,
                 timeout: float | None = 900, extra_args: list[str] | None = None) -> PlaybookResult:
    """Run ``ansible-playbook`` (CONTROLLER_BIN) against ``inventory`` and collect the results.

    ``playbook``: a path, or a list of play dicts (or of task dicts, wrapped in a localhost
    play) written to a temporary .yml. ``env`` is added to the environment (e.g. AWS_* or PG*).
    The collection is found through ANSIBLE_COLLECTIONS_PATH=<repo>/.cache/collections
    (scripts/bootstrap.sh creates the symlink).
    """
    with tempfile.TemporaryDirectory(prefix="offsite-ansible-") as td:
        tdp = Path(td)
        if isinstance(playbook, (list, tuple)):
            pb_path = tdp / "playbook.yml"
            plays = _normalise_plays(list(playbook))
            try:
                import yaml
                pb_path.write_text(yaml.safe_dump(plays, sort_keys=False, allow_unicode=True))
            except ImportError:  # JSON is YAML
                pb_path.write_text(json.dumps(plays, indent=2))
        else:
            pb_path = Path(playbook).resolve()
        pb_text = pb_path.read_text() if pb_path.exists() else ""

        cb_dir = tdp / "callback_plugins"
        cb_dir.mkdir()
        (cb_dir / f"{_CALLBACK_NAME}.py").write_text(_CALLBACK_SOURCE)
        results_path = tdp / "results.jsonl"
        # an (empty) ansible.cfg in the run directory: no ansible.cfg of the cwd, ~ or /etc applies
        (tdp / "ansible.cfg").write_text("[defaults]\n")

        ev = {"ansible_python_interpreter": controller_bin("python")}
        if extravars:
            ev.update(extravars)
        ev_path = tdp / "extravars.json"
        fd = os.open(ev_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(ev, f, default=str)

        run_env = dict(os.environ)
        for k in list(run_env):
            if k.startswith("ANSIBLE_") or k == "PYTHONDONTWRITEBYTECODE":
                del run_env[k]
        run_env.update({
            "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS_PATH),
            "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "False",
            "ANSIBLE_CALLBACK_PLUGINS": str(cb_dir),
            "ANSIBLE_CALLBACKS_ENABLED": _CALLBACK_NAME,
            "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_LOCALHOST_WARNING": "False",
            "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
            "ANSIBLE_LOCAL_TEMP": str(tdp / "local_tmp"),
            "ANSIBLE_CONFIG": str(tdp / "ansible.cfg"),
            "OFFSITE_HARNESS_RESULTS": str(results_path),
            # compiled plugins and module sources outside the collection's tree (the repository)
            "PYTHONPYCACHEPREFIX": str(REPO_ROOT / ".cache" / "pycache"),
            # ansible-core 2.19 imports cryptography's deprecated DSA: silence only that warning
            "PYTHONWARNINGS": "ignore:DSA is deprecated:UserWarning",
        })
        if env:
            run_env.update({k: str(v) for k, v in env.items()})

        cmd = [controller_bin("ansible-playbook"), "-i", inventory, "-e", f"@{ev_path}"]
        if connection:
            cmd += ["-c", connection]
        if check:
            cmd.append("--check")
        if diff:
            cmd.append("--diff")
        if verbosity:
            cmd.append("-" + "v" * verbosity)
        if tags:
            cmd += ["--tags", ",".join(tags)]
        cmd += list(extra_args or [])
        cmd.append(str(pb_path))

        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run(cmd, env=run_env, cwd=str(cwd) if cwd else td, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        RUN_CPU.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)

        events, stats = [], {}
        if results_path.exists():
            for line in results_path.read_text(encoding="utf-8").splitlines():
                if not line.strip():
                    continue
                obj = json.loads(line)
                if obj.get("type") == "stats":
                    stats = obj["stats"]
                elif obj.get("type") == "task":
                    events.append(_task_entry(obj))

        tasks: dict = {}
        for e in events:  # localhost wins, otherwise the first host seen for a task name
            name = e["task"]
            prev = tasks.get(name)
            if prev is None or e["host"] == "localhost" or prev["host"] == e["host"]:
                tasks[name] = e
        return PlaybookResult(rc=proc.returncode, stdout=proc.stdout, stderr=proc.stderr, tasks=tasks,
                              stats=stats, events=events, playbook=pb_text, cmd=cmd)


def _task_entry(obj: dict) -> dict:
    status = obj["status"]
    return {
        "task": obj["task"],
        "host": obj["host"],
        "action": obj.get("action"),
        "status": status,
        "changed": bool(obj["result"].get("changed", False)),
        "failed": status in ("failed", "unreachable"),
        "skipped": status == "skipped",
        "ignored": bool(obj.get("ignored", False)),
        "result": obj["result"],
        "at": obj.get("at"),
    }
