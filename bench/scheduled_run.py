"""The scheduled job's benchmark (issue 6, Performance): one ``offsite-backup run`` — dump, local
copy, upload to S3 (moto on loopback), retention — timed side by side with its references:

- ``pg_dump > /dev/null`` (plain: the source's own limit; target: the run within 1.5x of it),
  and ``pg_dump -Fc -Z0 > /dev/null`` for context;
- the seed script's pipeline, ``pg_dump | gzip > file`` then boto3 ``upload_file`` of the file
  (target: the run at least 3.5x faster);
- the same work as two separate module calls, ``dump`` then ``upload`` (what the runner's single
  pass replaces: it streams the dump to the local copy and to S3 at once).

The run is the real command exactly as cron starts it (a fresh interpreter, its job file and env
file, no terminal), timed from outside, interpreter start-up included. Its memory is the peak RSS
of the largest process of its tree (target: < 150 MB). Rounds alternate nothing: every step is
preceded by a sync + CHECKPOINT, and the medians of ``--repeat`` rounds are reported.

    bench/run.sh --scheduled                  # ~1 GB database (built once, then reused), 5 rounds
    bench/run.sh --scheduled --scale small    # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import bench  # noqa: E402  (database builder, S3 settings, measurement helpers of the main benchmark)

CLI_MODULE = "ansible_collections.offsite.backup.plugins.module_utils._engine.cli"
TARGETS = {"run_vs_pg_dump": 1.5, "seed_vs_run": 3.5, "run_rss_mib": 150}
ROWS = [
    ("pg_dump_plain_null", "`pg_dump > /dev/null` (plain)"),
    ("pg_dump_custom_z0_null", "`pg_dump -Fc -Z0 > /dev/null`"),
    ("seed_total", "seed: `pg_dump | gzip > file` + boto3 `upload_file`"),
    ("seed_dump_gzip", "  of which `pg_dump | gzip`"),
    ("seed_upload_boto3", "  of which `upload_file`"),
    ("two_calls_total", "ours as two module calls: `dump`, then `upload`"),
    ("ours_dump", "  of which `dump`"),
    ("ours_upload", "  of which `upload`"),
    ("scheduled_run", "**`offsite-backup run`** (dump + local copy + S3 + retention, one pass)"),
]


def write_job(work: Path, db: str, s3: dict, prefix: str) -> Path:
    """The job a client role would install: secrets in a 0600 env file, not in the job file."""
    repo = bench.repo_options(s3, prefix)
    repo.update(access_key="${S3_ACCESS_KEY}", secret_key="${S3_SECRET_KEY}")
    job = {"name": "bench", "local": {"path": str(work / "local"), "retention": {"keep_last": 1}},
           "sources": [{"name": "bench", "source": bench.source_spec(db)}],
           "repositories": [repo], "retention": {"keep_last": 2},
           "log": {"path": str(work / "log" / "bench.log")}}
    path = work / "bench-job.yml"
    path.write_text(json.dumps(job, indent=1))  # JSON is YAML
    env = work / "bench-job.env"
    env.write_text(f"S3_ACCESS_KEY={s3['access_key']}\nS3_SECRET_KEY={s3['secret_key']}\n")
    env.chmod(0o600)
    return path


def cron_env() -> dict:
    return {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "LANG": "C",
            "PYTHONPATH": str(bench.COLLECTIONS)}


def run_round(rep: int, repeat: int, db: str, s3: dict, client, work: Path, job: Path, samples: dict) -> None:
    pg_dump = bench.pg_tool("pg_dump")
    bench.log(f"round {rep + 1}/{repeat}")
    bench.settle()
    bench.record(samples, "pg_dump_plain_null", bench.shell(f"{pg_dump} {db} > /dev/null", "pg_dump"))
    bench.settle()
    bench.record(samples, "pg_dump_custom_z0_null", bench.shell(f"{pg_dump} -Fc -Z0 {db} > /dev/null", "pg_dump -Fc"))

    seed_file = work / "seed.sql.gz"
    bench.settle()
    gz = bench.record(samples, "seed_dump_gzip", bench.shell(f"{pg_dump} {db} | gzip > {seed_file}", "pg_dump | gzip"))
    bench.settle()
    up = bench.record(samples, "seed_upload_boto3", bench.run_child(
        {"op": "boto3_upload", "s3": s3, "file": str(seed_file), "key": f"seed/r{rep}.sql.gz"},
        work, "boto3 upload_file (seed)"))
    samples.setdefault("seed_total", []).append(_total(gz, up))
    seed_file.unlink()
    bench.s3_clear(client, s3["bucket"], "seed/")

    dest = work / "two-calls"
    shutil.rmtree(dest, ignore_errors=True)
    bench.settle()
    dumped = bench.record(samples, "ours_dump", bench.run_child(
        {"op": "dump", "kwargs": {"name": "bench", "source": bench.source_spec(db), "dest": str(dest)}},
        work, "dump"))
    bench.settle()
    uploaded = bench.record(samples, "ours_upload", bench.run_child(
        {"op": "upload", "kwargs": {"backup": dumped["result"]["backup"]["path"],
                                    "repositories": [bench.repo_options(s3, "two-calls")]}},
        work, "upload"))
    samples.setdefault("two_calls_total", []).append(_total(dumped, uploaded))
    shutil.rmtree(dest, ignore_errors=True)
    bench.s3_clear(client, s3["bucket"], "two-calls/")

    bench.settle()
    argv = [sys.executable, "-m", CLI_MODULE, "run", str(job), "--env-file", str(job.with_suffix(".env")), "--json"]
    out = work / "run.json"
    with open(out, "w") as handle:
        m = bench.measure(argv, "offsite-backup run", env=cron_env(), stdout=handle)
    report = json.loads(out.read_text())
    if not report["ok"]:
        raise RuntimeError(f"the scheduled run failed: {report}")
    [done] = report["sets"]
    m["detail"] = {"backup_size": done["backup"]["size"], "upload": done["repositories"][0]["status"],
                   "upload_seconds": done["repositories"][0]["duration"], "set_seconds": done["duration"]}
    bench.record(samples, "scheduled_run", m)


def _total(a: dict, b: dict) -> dict:
    return {"seconds": a["seconds"] + b["seconds"], "tree_rss_mib": max(a["tree_rss_mib"], b["tree_rss_mib"]),
            "cpu_seconds": a["cpu_seconds"] + b["cpu_seconds"]}


def markdown(samples: dict, meta: dict) -> tuple[str, list]:
    def med(key, field="seconds"):
        return statistics.median(s[field] for s in samples[key])

    base = med("pg_dump_plain_null")
    lines = [f"Database {meta['database']}: {meta['database_bytes'] / bench.MIB:.0f} MiB on disk, "
             f"{meta['rounds']} rounds, median; load average {meta['load_start']:.1f} at start, "
             f"{meta['load_end']:.1f} at the end; {meta['cpus']} CPUs.", "",
             "| step | median s | min–max s | × pg_dump | CPU s | peak RSS MiB (largest process) |",
             "|---|---|---|---|---|---|"]
    for key, label in ROWS:
        vals = [s["seconds"] for s in samples[key]]
        lines.append(f"| {label} | {med(key):.2f} | {min(vals):.2f}–{max(vals):.2f} | {med(key) / base:.2f} | "
                     f"{med(key, 'cpu_seconds'):.1f} | {max(s['tree_rss_mib'] for s in samples[key]):.0f} |")
    run = med("scheduled_run")
    rss = max(s["tree_rss_mib"] for s in samples["scheduled_run"])
    checks = [
        ("scheduled run ≤ %.1f× `pg_dump > /dev/null`" % TARGETS["run_vs_pg_dump"],
         f"{run / base:.2f}×", run / base <= TARGETS["run_vs_pg_dump"]),
        ("seed pipeline ≥ %.1f× the scheduled run" % TARGETS["seed_vs_run"],
         f"{med('seed_total') / run:.2f}×", med("seed_total") / run >= TARGETS["seed_vs_run"]),
        ("peak memory < %d MB" % TARGETS["run_rss_mib"], f"{rss:.0f} MiB", rss * 1.048576 < TARGETS["run_rss_mib"]),
        ("(context) one pass vs two module calls", f"{run / med('two_calls_total'):.2f}×", True),
    ]
    lines += ["", "| target | measured | |", "|---|---|---|"]
    lines += [f"| {name} | {text} | **{'PASS' if ok else 'MISS'}** |" for name, text, ok in checks]
    return "\n".join(lines) + "\n", checks


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=sorted(bench.SCALES), default="full")
    ap.add_argument("--repeat", type=int, default=None, help="rounds (default 5 full, 1 small)")
    ap.add_argument("--results-dir", default=str(REPO / "bench" / "results"))
    ap.add_argument("--services-state", help="state file of `python -m tests.harness.services up`")
    ap.add_argument("--endpoint-url")
    ap.add_argument("--access-key")
    ap.add_argument("--secret-key")
    args = ap.parse_args(argv)
    cfg = bench.SCALES[args.scale]
    repeat = args.repeat or (5 if args.scale == "full" else 1)
    db = cfg["database"]
    bench.build_database(db, cfg, rebuild=False)
    facts = bench.database_facts(db)
    s3, svc = bench.s3_settings(args)
    client = bench.s3_client(s3)
    try:
        client.create_bucket(Bucket=s3["bucket"])
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    work = Path(tempfile.mkdtemp(prefix="offsite-bench-run-"))
    job = write_job(work, db, s3, "scheduled")
    samples: dict = {}
    started, load_start = time.time(), os.getloadavg()[0]
    try:
        bench.log("warm-up: pg_dump > /dev/null (untimed)")
        bench.shell(f"{bench.pg_tool('pg_dump')} {db} > /dev/null", "warm-up")
        for rep in range(repeat):
            run_round(rep, repeat, db, s3, client, work, job, samples)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        try:
            bench.s3_clear(client, s3["bucket"])
        except Exception:
            pass
        if svc is not None:
            svc.stop()
    meta = {"database": db, "database_bytes": facts["database_bytes"], "rounds": repeat, "cpus": os.cpu_count(),
            "load_start": load_start, "load_end": os.getloadavg()[0],
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))}
    text, checks = markdown(samples, meta)
    print(text)
    out_dir = Path(args.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
    (out_dir / f"scheduled-{args.scale}-{stamp}.json").write_text(json.dumps(
        {"meta": meta, "targets": [{"target": n, "measured": t, "pass": ok} for n, t, ok in checks],
         "samples": {k: [{f: v for f, v in s.items() if f != "result"} for s in vals] for k, vals in samples.items()}},
        indent=2, default=str))
    (out_dir / f"scheduled-{args.scale}-{stamp}.md").write_text(text)
    bench.log(f"results: {out_dir}/scheduled-{args.scale}-{stamp}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
