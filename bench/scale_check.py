"""Scale check (issue 14, item 5): dump + upload + restore of a ~1 GB and a ~10 GB database.

The engine streams: memory must stay flat (peak RSS of every engine process < 150 MB at either
size) and time must grow linearly (the 10 GB database takes 10x the 1 GB time, +-20 %).

Per size, as whole processes one after the other (each after sync + CHECKPOINT):

    dump      operations.dump (module defaults: custom format, zstd 1, sha256, manifest)
    upload    operations.upload of that artifact to S3 (moto on loopback, defaults)
    restore   operations.restore from S3 into a new database (jobs 2, mode create), checked
              (row count of pgbench_accounts, byte sum of bench_blobs) and dropped

For each step: wall seconds, CPU seconds of the process tree (the engine's Python, pg_dump,
pg_restore, psql: /usr/bin/time) plus the PostgreSQL backends it used (``proc_cpu``: found by
application_name and database name), the peak RSS of the engine's Python (VmHWM) and of the
largest process of the tree, and the load average. The 1 GB size runs before and after the
10 GB one (``--small-rounds 2``, the mean is the reference): the machine is shared, so its load
moves during the ~30 minutes of the 10 GB run. Under load, CPU seconds are the meaningful
figure for linearity; wall ratios are reported with the load average beside them.

The databases are built once (``bench.build_database``: pgbench scale 50 / 500 plus 160 / 1600
MiB of incompressible bytes; the 10 GB one takes ~10 GB of disk, the restore another ~10 GB plus
its ~8.5 GB work file) and kept for the next run; ``--drop-after`` removes them.

    bench/run.sh --scale-check                       # ~1 GB and ~10 GB (18 min at load 17-22, + the build)
    bench/run.sh --scale-check --large small         # smoke test: ~100 MB vs ~1 GB
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402
import proc_cpu  # noqa: E402

ENGINE_APP = "offsite.backup"  # the engine's PGAPPNAME
TARGETS = {"rss_mib": 150, "ratio": 10.0, "tolerance": 0.2}
STEPS = ("dump", "upload", "restore")


def measure_step(spec: dict, work: Path, what: str, database_prefix: str) -> dict:
    """One engine call in a fresh interpreter (bench.py's child), with the CPU of its tree and
    of the PostgreSQL backends of ``database_prefix*`` that it opened."""
    spec_path, result_path = work / "scale-spec.json", work / "scale-result.json"
    result_path.unlink(missing_ok=True)
    spec_path.write_text(json.dumps(spec))
    argv = [sys.executable, str(Path(bench.__file__).resolve()), "_child", str(spec_path), str(result_path)]
    with tempfile.NamedTemporaryFile(prefix="bench-time-", suffix=".txt") as stats:
        start = time.perf_counter()
        proc = subprocess.Popen([bench.TIME, "-q", "-f", "%M %U %S", "-o", stats.name] + argv, env=bench.pg_env(),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        sampler = proc_cpu.CpuSampler(proc.pid, (ENGINE_APP,), bench.pg_env(), bench.pg_tool("psql"),
                                      database_prefix=database_prefix)
        err = proc.communicate()[1]
        groups = sampler.stop()
        wall = time.perf_counter() - start
        fields = Path(stats.name).read_text().split()
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}): {err.decode(errors='replace')[-3000:]}")
    out = json.loads(result_path.read_text())
    tree = float(fields[-2]) + float(fields[-1])
    backend = groups.get("PostgreSQL backend", 0.0)
    return {"seconds": wall, "call_seconds": out["seconds"], "cpu_tree": tree, "cpu_backend": backend,
            "cpu_seconds": tree + backend, "py_rss_mib": out["self_rss_mib"],
            "tree_rss_mib": int(fields[-3]) / 1024, "load1": os.getloadavg()[0],
            "groups": groups, "result": out["result"]}


def run_size(label: str, db: str, facts: dict, s3: dict, client, work: Path) -> dict:
    """dump, upload, restore of ``db``; the steps' measurements."""
    bench.log(f"{label}: {db} ({facts['database_bytes'] / bench.MIB:.0f} MiB)")
    out = {}
    dest = work / f"dump-{label}"
    shutil.rmtree(dest, ignore_errors=True)
    bench.settle()
    dump = {"op": "dump", "kwargs": {"name": "bench", "source": bench.source_spec(db), "dest": str(dest)}}
    out["dump"] = logged(label, "dump", measure_step(dump, work, f"{label}: dump", db))
    backup = out["dump"]["result"]["backup"]
    prefix = f"scale-{label}-{os.getpid()}"
    # moto joins a multipart object in memory and MD5s it whole when the upload completes: ~2 GB
    # of it takes longer than the default 15 s per try on this loaded machine
    repository = dict(bench.repo_options(s3, prefix), timeout=600)
    bench.settle()
    upload = {"op": "upload", "kwargs": {"backup": backup["path"], "repositories": [repository]}}
    out["upload"] = logged(label, "upload", measure_step(upload, work, f"{label}: upload", db))
    shutil.rmtree(dest, ignore_errors=True)  # the disk is needed for the restore
    target = bench.scratch_database(db, "scale")
    bench.drop_db(target)
    bench.settle()
    try:
        out["restore"] = logged(label, "restore", measure_step(
            {"op": "restore", "kwargs": {"name": "bench", "repository": repository,
                                         "target": dict(bench.source_spec(target), jobs=2), "mode": "create",
                                         "work_dir": str(work)}},
            work, f"{label}: restore", target))
        bench.check_restored(target, facts)
    finally:
        bench.drop_db(target)
        bench.s3_clear(client, s3["bucket"], prefix + "/")
    for step in STEPS:
        out[step].pop("result", None)
    out["raw_size"] = backup.get("raw_size")
    out["size"] = backup.get("size")
    return out


def logged(label: str, step: str, m: dict) -> dict:
    bench.log(f"  {label} {step}: {m['seconds']:.1f} s, CPU {m['cpu_tree']:.1f} + backends {m['cpu_backend']:.1f} s, "
              f"engine {m['py_rss_mib']:.0f} MiB, largest {m['tree_rss_mib']:.0f} MiB, load {m['load1']:.1f}")
    return m


def total(run: dict, field: str) -> float:
    return sum(run[step][field] for step in STEPS)


def evaluate(small: list, large: dict) -> tuple[list, dict]:
    """Ratios large / small per step and in total, the small size's figure being the least of
    its runs: on a shared machine other work only ever adds (to wall time, and to the CPU of
    backends found by database name when another benchmark uses the same database); PASS/MISS
    on CPU seconds (and wall)."""
    def least(field, step=None):
        if step is None:
            return sum(least(field, s) for s in STEPS)
        return min(r[step][field] for r in small)
    ratios = {}
    for step in STEPS + (None,):
        key = step or "total"
        ratios[key] = {f: (total(large, f) if step is None else large[step][f]) / least(f, step)
                       for f in ("seconds", "cpu_seconds")}
    ratios["CPU s per GB of dump"] = {"small": least("cpu_seconds") / (small[0]["raw_size"] / 1e9),
                                      "large": total(large, "cpu_seconds") / (large["raw_size"] / 1e9)}
    bytes_ratio = large["raw_size"] / statistics.mean(r["raw_size"] for r in small)
    low, high = TARGETS["ratio"] * (1 - TARGETS["tolerance"]), TARGETS["ratio"] * (1 + TARGETS["tolerance"])
    peak = max(r[step]["py_rss_mib"] for r in small + [large] for step in STEPS)
    checks = [
        ("peak RSS of every engine process < 150 MB (both sizes)", f"{peak:.0f} MiB",
         peak * bench.MIB < TARGETS["rss_mib"] * 1e6),
        (f"CPU seconds, 10 GB / 1 GB in {low:g}–{high:g}×", f"{ratios['total']['cpu_seconds']:.2f}×",
         low <= ratios["total"]["cpu_seconds"] <= high),
        (f"wall time, 10 GB / 1 GB in {low:g}–{high:g}× (loaded machine: indicative)",
         f"{ratios['total']['seconds']:.2f}×", low <= ratios["total"]["seconds"] <= high),
    ]
    return checks, {"ratios": ratios, "bytes_ratio": bytes_ratio, "peak_engine_rss_mib": peak}


def markdown(small: list, large: dict, meta: dict) -> tuple[str, list]:
    checks, summary = evaluate(small, large)
    ratios = summary["ratios"]
    lines = [f"# Scale check: {meta['small_db']} ({meta['small_mib']:.0f} MiB) vs {meta['large_db']} "
             f"({meta['large_mib']:.0f} MiB)", "",
             f"Raw dump {statistics.mean(r['raw_size'] for r in small) / 1e9:.2f} GB vs "
             f"{large['raw_size'] / 1e9:.2f} GB ({summary['bytes_ratio']:.2f}×); {meta['cpus']} CPUs shared "
             f"with other sessions, load average {meta['load_start']:.1f} at start, {meta['load_end']:.1f} at the end. "
             f"The small size ran {len(small)}× (before and after the large one); its figures in the ratios are "
             f"the least of its runs (other work on the machine only ever adds).", "",
             "| step | size | wall s | CPU s tree | CPU s backends | CPU s total | engine RSS MiB | largest process MiB | load |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for step in STEPS:
        for name, runs in (("small", small), ("large", [large])):
            for r in runs:
                m = r[step]
                lines.append(f"| {step} | {name} | {m['seconds']:.1f} | {m['cpu_tree']:.1f} | {m['cpu_backend']:.1f} | "
                             f"{m['cpu_seconds']:.1f} | {m['py_rss_mib']:.0f} | {m['tree_rss_mib']:.0f} | {m['load1']:.1f} |")
    lines += ["", "| ratio large / small | wall | CPU s (tree + backends) |", "|---|---:|---:|"]
    for key in STEPS + ("total",):
        lines.append(f"| {key} | {ratios[key]['seconds']:.2f}× | {ratios[key]['cpu_seconds']:.2f}× |")
    per_gb = ratios["CPU s per GB of dump"]
    lines += ["", f"CPU seconds per GB of dump (raw custom format), all three steps: {per_gb['small']:.1f} small, "
                  f"{per_gb['large']:.1f} large (interpreter starts, connections and process starts are fixed costs "
                  f"that weigh more at the small size)."]
    lines += ["", "| target | measured | |", "|---|---:|---|"]
    lines += [f"| {name} | {text} | **{'PASS' if ok else 'MISS'}** |" for name, text, ok in checks]
    return "\n".join(lines) + "\n", checks


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", choices=sorted(bench.SCALES), default="full", help="the 1x size (default full)")
    ap.add_argument("--large", choices=sorted(bench.SCALES), default="10g", help="the 10x size (default 10g)")
    ap.add_argument("--small-database", help="database of the small size (default: the scale's name)")
    ap.add_argument("--large-database", help="database of the large size (default: the scale's name)")
    ap.add_argument("--small-rounds", type=int, default=2, help="runs of the small size around the large one")
    ap.add_argument("--drop-after", action="store_true", help="drop both databases at the end")
    ap.add_argument("--report", metavar="JSON", help="only print the table of a stored run (bench/results/scale-*.json)")
    ap.add_argument("--work-dir")
    ap.add_argument("--results-dir", default=str(bench.REPO / "bench" / "results"))
    bench.s3_arguments(ap)
    args = ap.parse_args(argv)
    if args.report:
        stored = json.loads(Path(args.report).read_text())
        print(markdown(stored["small"], stored["large"], stored["meta"])[0])
        return 0
    sizes = {}
    for which, scale, name in (("small", args.small, args.small_database), ("large", args.large, args.large_database)):
        db = name or bench.SCALES[scale]["database"]
        bench.build_database(db, bench.SCALES[scale], False)
        sizes[which] = (db, bench.database_facts(db))
    s3, client, svc = bench.s3_bucket(args)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="offsite-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    started, load_start = time.time(), os.getloadavg()[0]
    small, large = [], None
    try:
        order = ["small"] + ["large"] + ["small"] * max(0, args.small_rounds - 1)
        for which in order:
            db, facts = sizes[which]
            run = run_size(which, db, facts, s3, client, work)
            if which == "small":
                small.append(run)
            else:
                large = run
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
        if svc is not None:
            svc.stop()
        if args.drop_after:
            for db, dummy in sizes.values():
                bench.drop_db(db)
    meta = {"small_db": sizes["small"][0], "large_db": sizes["large"][0],
            "small_mib": sizes["small"][1]["database_bytes"] / bench.MIB,
            "large_mib": sizes["large"][1]["database_bytes"] / bench.MIB, "cpus": os.cpu_count(),
            "load_start": load_start, "load_end": os.getloadavg()[0],
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "duration_seconds": round(time.time() - started, 1)}
    text, checks = markdown(small, large, meta)
    print(text)
    out = Path(args.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
    (out / f"scale-{stamp}.json").write_text(json.dumps(
        {"meta": meta, "small": small, "large": large,
         "targets": [{"target": n, "measured": t, "pass": ok} for n, t, ok in checks]}, indent=2, default=str))
    (out / f"scale-{stamp}.md").write_text(text)
    bench.log(f"results: {out}/scale-{stamp}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
