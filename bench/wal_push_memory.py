"""Peak memory and CPU of one ``offsite-backup wal-push`` (issue 17: wal-push < 60 MB), per
repository type, on real WAL segments written by pgbench.

A throwaway PostgreSQL cluster (tests/harness/walcluster.py) copies its WAL into a directory
(``archive_command = cp``) while ``pgbench -c 4`` writes; the last ``--segments`` segments are
then pushed one process each, exactly as PostgreSQL's archive_command runs it (the system
``python3 -S`` with the venv's site-packages, tests/harness/walcluster.py), under
``/usr/bin/time``: peak RSS (``%M``, the process's VmHWM), user + system CPU seconds, wall.
Jobs: one local repository; one S3 repository (moto on loopback); optionally age encryption
(``--age``: the age child's CPU is counted, its memory is its own process's).

``--collections DIR`` runs another checkout's engine (e.g. ``/work/main/.cache/collections``)
for a before/after comparison with the same segments; ``--importtime`` prints the modules a
push imports, slowest first (``python -X importtime``).

    .venv/bin/python bench/wal_push_memory.py [--segments 8] [--age] [--collections DIR] [--importtime]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.harness import COLLECTIONS_PATH  # noqa: E402
from tests.harness.services import MotoS3  # noqa: E402
from tests.harness.walcluster import CLI_MODULE, SYSTEM_PYTHON, WalCluster, _venv_site  # noqa: E402

TARGET_MIB = 60 * 1000 * 1000 / 1024 / 1024  # "60 MB": 57.2 MiB, the stricter reading


def segments(pg: WalCluster, count: int) -> list[str]:
    """``count`` full segments written by pgbench (not by its initial load), copied aside."""
    copy = pg.mkdir("walcopy")
    pg.start(archive_command=f"cp %p {copy}/%f", max_wal_size="1GB", checkpoint_timeout="30s")
    conn = ["-h", pg.sockdir, "-p", str(pg.port), "-U", "postgres"]
    pgbench = os.path.join(pg.bindir, "pgbench")
    subprocess.run([pgbench, "-i", "-q", "-s", "10", *conn, "postgres"], check=True, capture_output=True)
    pg.wait_archived(pg.switch_wal(), timeout=300)
    before = set(os.listdir(copy))
    while len(set(os.listdir(copy)) - before) < count + 1:
        subprocess.run([pgbench, "-c", "4", "-j", "2", "-T", "5", "-n", *conn, "postgres"], check=True,
                       capture_output=True)
        pg.wait_archived(pg.switch_wal(), timeout=300)
    names = sorted(n for n in set(os.listdir(copy)) - before if len(n) == 24)[:count]
    return [os.path.join(copy, n) for n in names]


def push(collections: str, job: str, segment: str, importtime: bool = False) -> dict:
    env = dict(os.environ, PYTHONPATH=f"{collections}:{_venv_site()}", PYTHONWARNINGS="ignore")
    with tempfile.NamedTemporaryFile(prefix="walmem-", suffix=".txt") as stats:
        argv = ["/usr/bin/time", "-q", "-f", "%M %U %S %e", "-o", stats.name, SYSTEM_PYTHON, "-S"]
        argv += ["-X", "importtime"] if importtime else []
        r = subprocess.run(argv + ["-m", CLI_MODULE, "wal-push", job, os.path.basename(segment)],
                           cwd=os.path.dirname(segment), env=env, capture_output=True, text=True, check=False)
        fields = Path(stats.name).read_text().split()
    if r.returncode != 0:
        raise RuntimeError(f"wal-push failed ({r.returncode}): {r.stderr[-3000:]}")
    rss, user, system, wall = int(fields[-4]), float(fields[-3]), float(fields[-2]), float(fields[-1])
    out = {"rss_mib": rss / 1024, "cpu_seconds": user + system, "wall_seconds": wall}
    if importtime:
        rows = [line.split("|") for line in r.stderr.splitlines() if line.startswith("import time:")]
        out["imports"] = [(int(cum), name.rstrip()) for dummy, cum, name in rows[1:] if cum.strip().isdigit()]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--segments", type=int, default=8)
    ap.add_argument("--age", action="store_true", help="encrypt for an age recipient")
    ap.add_argument("--collections", default=str(COLLECTIONS_PATH),
                    help="the ansible_collections directory whose engine runs (default: this checkout's)")
    ap.add_argument("--importtime", action="store_true", help="also print the slowest imports of one push")
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args(argv)

    moto = MotoS3().start()
    pg = WalCluster()
    try:
        files = segments(pg, args.segments)
        raw = sum(os.path.getsize(f) for f in files)
        bucket = moto.create_bucket("walmem-%s" % uuid.uuid4().hex[:8])
        extra = {}
        if args.age:
            key = os.path.join(pg.home, "age.key")
            subprocess.run(["age-keygen", "-o", key], check=True, capture_output=True)
            recipient = subprocess.run(["age-keygen", "-y", key], check=True, capture_output=True,
                                       text=True).stdout.strip()
            extra["encryption"] = {"recipients": [recipient]}
        jobs = {
            "local": {"type": "local", "path": pg.mkdir("nas")},
            "s3": {"type": "s3", "bucket": bucket, "prefix": "prod", "endpoint_url": moto.endpoint_url,
                   "region": moto.region, "access_key": moto.access_key, "secret_key": moto.secret_key},
        }
        result = {"collections": args.collections, "segments": len(files), "raw_bytes": raw, "age": args.age,
                  "loadavg_before": [round(x, 2) for x in os.getloadavg()], "jobs": {}}
        for name, repo in jobs.items():
            job = pg.write_job(dict({"name": "walmem-%s" % name, "local": {"path": pg.mkdir("local")},
                                     "sources": [{"name": "crm_cluster", "source": {"type": "postgresql_physical"}}],
                                     "repositories": [repo]}, **extra), name="job-%s.yml" % name)
            runs = [push(args.collections, job, f) for f in files]
            result["jobs"][name] = {
                "peak_rss_mib_max": round(max(r["rss_mib"] for r in runs), 1),
                "peak_rss_mib_median": round(statistics.median(r["rss_mib"] for r in runs), 1),
                "cpu_seconds_median": round(statistics.median(r["cpu_seconds"] for r in runs), 3),
                "wall_seconds_median": round(statistics.median(r["wall_seconds"] for r in runs), 3),
                "verdict": "PASS" if max(r["rss_mib"] for r in runs) < TARGET_MIB else "MISS"}
            if args.importtime:
                again = os.path.join(pg.mkdir("again-%s" % name), os.path.basename(files[0]))
                subprocess.run(["cp", files[0], again], check=True)
                # a fresh repository: the push does all its work, not "present"
                job = pg.write_job(yaml_job(pg, name, repo, extra), name="job-%s-imports.yml" % name)
                imports = push(args.collections, job, again, importtime=True)["imports"]
                result["jobs"][name]["slowest_imports_us"] = sorted(imports, reverse=True)[:15]
        stored = sum(os.path.getsize(os.path.join(root, f)) for root, dummy, names in os.walk(jobs["local"]["path"])
                     for f in names if not f.endswith(".json"))
        result["stored_bytes_local"] = stored
        result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
        result["target_mib"] = round(TARGET_MIB, 1)
        print(json.dumps(result, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))
        return 0
    finally:
        pg.remove()
        moto.stop()


def yaml_job(pg: WalCluster, name: str, repo: dict, extra: dict) -> dict:
    repo = dict(repo)
    if repo["type"] == "local":
        repo["path"] = pg.mkdir("nas-imports")
    else:
        repo["prefix"] = "imports"
    return dict({"name": "walmem-%s-imports" % name, "local": {"path": pg.mkdir("local")},
                 "sources": [{"name": "crm_cluster", "source": {"type": "postgresql_physical"}}],
                 "repositories": [repo]}, **extra)


if __name__ == "__main__":
    raise SystemExit(main())
