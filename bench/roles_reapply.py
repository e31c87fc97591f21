"""Re-applying the roles (issue 15): a no-change apply of offsite.backup.client and
offsite.backup.storage_server on one host, over real SSH, with and without pipelining.

Target: < 30 s in both modes. The host is this machine, reached through the test harness's
root sshd on a loopback port (``tests.harness.rolehost.RootSshd``) with the same inventory, the
same variables and the same two plays as ``tests/integration/test_roles.py`` (one job with an S3
and an SFTP repository, SSH and signing keys, pinned host key; two storage clients). SSH runs
with Ansible's defaults (``ControlMaster=auto``, ``ControlPersist=60s``), as users get them.

One first apply installs everything (virtualenv from PyPI on the first run of a checkout, then
reused), then every round re-applies once without and once with pipelining; each re-apply must
report ``changed=0``. Printed: per mode the median and all times, the module round-trips (each
loop item counts, skipped tasks not) and the load average before and after; ``--tasks`` also
lists the round-trips per task. Nothing fails on a missed target: it is printed as MISS.

    .venv/bin/python bench/roles_reapply.py [--repeat 3] [--tasks]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.harness.ansible import run_playbook  # noqa: E402
from tests.harness.rolehost import RootSshd  # noqa: E402
from tests.harness.services import _ssh_keygen  # noqa: E402
from tests.integration.test_roles import client_vars, module_runs, module_runs_by_task, plays  # noqa: E402

TARGET_SECONDS = 30.0


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="re-applies per mode (median reported)")
    ap.add_argument("--tasks", action="store_true", help="list the module round-trips per task")
    args = ap.parse_args(argv)

    job_name = f"bench{uuid.uuid4().hex[:6]}"
    prefix = f"b{uuid.uuid4().hex[:6]}-"
    workdir = Path(tempfile.mkdtemp(prefix="offsite-roles-bench-"))
    storage_root = Path(f"/srv/offsite-roles-bench-{uuid.uuid4().hex[:8]}")
    sshd = RootSshd().start()
    try:
        (workdir / "bin").mkdir()
        rsync_pub = _ssh_keygen(str(workdir / "other_ed25519"), "other@offsite-roles-bench")
        inventory = sshd.inventory(workdir / "inventory")
        # the role writes these into the job file only: no S3, receiver or gateway is contacted
        moto = SimpleNamespace(access_key="AKIDBENCH", secret_key="bench-secret", endpoint_url="http://127.0.0.1:9",
                               region="us-east-1")
        web = SimpleNamespace(url="http://127.0.0.1:9")
        client = client_vars(workdir, job_name, moto, "bench-bucket", "benchdb", web, web, sshd, f"{prefix}target")
        the_plays = plays(client, storage_root, sshd, job_name, rsync_pub, prefix)
        first = run_playbook(the_plays, inventory=inventory, connection=None)
        if first.rc != 0:
            print(first.output, file=sys.stderr)
            return 1

        times: dict[str, list[float]] = {"False": [], "True": []}
        runs: dict[str, int] = {}
        loads = [uptime()]
        for _round in range(args.repeat):
            for pipelining in ("False", "True"):
                started = time.monotonic()
                again = run_playbook(the_plays, inventory=inventory, connection=None,
                                     env={"ANSIBLE_PIPELINING": pipelining})
                took = time.monotonic() - started
                if again.rc != 0 or again.stats["target"]["changed"] != 0:
                    print(again.output, file=sys.stderr)
                    return 1
                times[pipelining].append(took)
                runs[pipelining] = module_runs(again)
                if args.tasks and pipelining == "True" and len(times["True"]) == 1:
                    for task, n in module_runs_by_task(again).items():
                        print(f"{n:3d}  {task}")
        loads.append(uptime())

        print(f"\nno-change re-apply of client + storage_server over SSH, {args.repeat} rounds")
        print(f"load before: {loads[0]}\nload after:  {loads[1]}\n")
        print("| pipelining | module round-trips | median s | all s | < 30 s |")
        print("|---|---:|---:|---|---|")
        for pipelining, label in (("False", "off"), ("True", "on")):
            median = statistics.median(times[pipelining])
            print(f"| {label} | {runs[pipelining]} | {median:.1f} | "
                  f"{', '.join(f'{t:.1f}' for t in times[pipelining])} | "
                  f"{'PASS' if median < TARGET_SECONDS else 'MISS'} |")
        return 0
    finally:
        sshd.stop()
        subprocess.run(["userdel", f"{prefix}target"], capture_output=True, check=False)
        subprocess.run(["userdel", f"{prefix}other"], capture_output=True, check=False)
        subprocess.run(["groupdel", f"{prefix}sftp"], capture_output=True, check=False)
        Path(f"/etc/cron.d/offsite-backup-{job_name}").unlink(missing_ok=True)
        shutil.rmtree(storage_root, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
        os.sync()


if __name__ == "__main__":
    sys.exit(main())
