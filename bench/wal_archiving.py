"""WAL archiving under a write-heavy load (issue 17, item 2 and Performance): does
``offsite-backup wal-push`` as archive_command keep up, and what does one segment cost?

A throwaway PostgreSQL 15 cluster (tests/harness/walcluster.py: initdb, free port, temp dir)
archives with ``wal-push`` into moto S3 (its own instance on loopback) and a local repository,
age-encrypted, while ``pgbench -c 4`` writes for ``--seconds`` (default 120). Every second the
archiver's state is read (pg_stat_archiver):

- archive lag: now - last_archived_time (target: never above 60 s);
- backlog: segments waiting (``.ready`` files in pg_wal/archive_status).

Each wal-push runs under ``/usr/bin/time``: wall, user and system CPU seconds and peak RSS of the
command (target: < 60 MB), interpreter start-up included. The age child's CPU is included in
user+sys (time counts waited-for children); its RSS is not in the command's peak. Reported with
the load average, since the machine is shared.

    .venv/bin/python bench/wal_archiving.py [--seconds 120] [--clients 4] [--scale 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.harness.services import MotoS3  # noqa: E402
from tests.harness.walcluster import WalCluster  # noqa: E402

# "< 60 MB" read strictly, as bench/wal_push_memory.py does: 57.2 MiB
TARGETS = {"max_lag_seconds": 60, "peak_rss_mib": round(60 * 1000 * 1000 / 1024 / 1024, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--scale", type=int, default=20, help="pgbench -i scale (20: ~300 MB)")
    parser.add_argument("--no-s3", action="store_true", help="local repository only")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args(argv)

    moto = None if args.no_s3 else MotoS3().start()
    pg = WalCluster(archive_timeout=60)
    try:
        subprocess.run(["age-keygen", "-o", os.path.join(pg.home, "age.key")], check=True, capture_output=True)
        recipient = subprocess.run(["age-keygen", "-y", os.path.join(pg.home, "age.key")], check=True,
                                   capture_output=True, text=True).stdout.strip()
        repos = [{"type": "local", "path": pg.mkdir("nas")}]
        if moto:
            bucket = moto.create_bucket("wal-bench-%s" % uuid.uuid4().hex[:8])
            repos.insert(0, {"type": "s3", "bucket": bucket, "prefix": "prod", "endpoint_url": moto.endpoint_url,
                             "region": moto.region, "access_key": moto.access_key, "secret_key": moto.secret_key})
        pg.write_job({"name": "walbench", "local": {"path": pg.mkdir("local")},
                      "sources": [{"name": "crm_cluster", "source": {"type": "postgresql", "database": "postgres"}}],
                      "repositories": repos, "encryption": {"recipients": [recipient]},
                      "log": {"path": os.path.join(pg.home, "job.log")}})
        times = pg.write("push-times", "")
        command = "/usr/bin/time -a -o %s -f '%%e %%U %%S %%M' %s" % (times, pg.push_command(extra="--set crm_cluster"))
        pg.start(archive_command=command, max_wal_size="1GB", checkpoint_timeout="5min",
                 shared_buffers="128MB")
        bindir = pg.bindir
        conn = ["-h", pg.sockdir, "-p", str(pg.port), "-U", "postgres"]
        subprocess.run([os.path.join(bindir, "pgbench"), "-i", "-q", "-s", str(args.scale), *conn, "postgres"],
                       check=True, capture_output=True)
        pg.wait_archived(pg.switch_wal(), timeout=600)
        open(times, "w").close()  # the initial load's segments are not part of the measurement
        start_archived = pg.archiver()["archived_count"]
        load_before = os.getloadavg()
        bench = subprocess.Popen([os.path.join(bindir, "pgbench"), "-c", str(args.clients), "-j", "2", "-T",
                                  str(args.seconds), "-n", *conn, "postgres"],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        samples = []
        started = time.time()
        while bench.poll() is None:
            state = pg.archiver()
            ready = [f for f in os.listdir(os.path.join(pg.datadir, "pg_wal", "archive_status")) if f.endswith(".ready")]
            now = time.time()
            samples.append({"t": round(now - started, 1), "lag": round(now - state["last_archived_time"], 1),
                            "backlog": len(ready), "failed": state["failed_count"]})
            time.sleep(1)
        load_during = os.getloadavg()
        output = bench.communicate()[0]
        drained_at = time.time()
        last = pg.switch_wal()
        pg.wait_archived(last, timeout=900)
        drain_seconds = time.time() - drained_at
        rows = [line.split() for line in open(times) if line.strip() and line.split()[0][0].isdigit()]
        pushes = [tuple(float(x) for x in row[:4]) for row in rows]
        cpu = [u + s for dummy, u, s, dummy2 in pushes]
        result = {
            "seconds": args.seconds, "clients": args.clients, "scale": args.scale,
            "repositories": [r["type"] for r in repos], "encryption": "age",
            "tps": next((line.split("=")[1].split()[0] for line in output.splitlines() if line.startswith("tps")), None),
            "segments_archived": pg.archiver()["archived_count"] - start_archived,
            "max_lag_seconds": max(s["lag"] for s in samples), "max_backlog_segments": max(s["backlog"] for s in samples),
            "failed_count": samples[-1]["failed"], "drain_after_load_seconds": round(drain_seconds, 1),
            "push_count": len(pushes),
            "push_wall_seconds_median": round(statistics.median(p[0] for p in pushes), 3),
            "push_cpu_seconds_median": round(statistics.median(cpu), 3),
            "push_cpu_seconds_mean": round(statistics.mean(cpu), 3),
            "push_cpu_seconds_total": round(sum(cpu), 1),
            "peak_rss_mib": round(max(p[3] for p in pushes) / 1024, 1),
            "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in load_during],
            "cores": os.cpu_count(), "targets": TARGETS,
        }
        result["ok"] = (result["max_lag_seconds"] < TARGETS["max_lag_seconds"]
                        and result["peak_rss_mib"] < TARGETS["peak_rss_mib"])
        print(json.dumps(result, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(dict(result, samples=samples), indent=2))
        return 0 if result["ok"] else 1
    finally:
        pg.remove()
        if moto:
            moto.stop()


if __name__ == "__main__":
    raise SystemExit(main())
