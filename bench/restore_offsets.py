"""Restore with and without data offsets in the archive's TOC (issue 14, item 1).

pg_dump -Fc writing to a pipe (every dump of the engine) records no data offsets, so
``pg_restore -j`` has each worker walk the chunk headers (one per row) to find its table. The
restore now records the offsets while it writes the work file and patches the TOC
(``pgcustom.py``). This script times, as whole processes side by side in each round:

    local pg_restore -j2, seekable file   pg_dump -Fc -Z0 -f file: the reference (offsets set)
    local pg_restore -j2, pipe's file     pg_dump -Fc -Z0 | cat > file: what pg_restore got before
    ours from a local repository          operations.restore, jobs 2: offsets off (before) / on (after)
    ours from S3 (moto)                   the same from the S3 endpoint

with wall time, CPU seconds of the process tree (pg_restore and its workers included; the
PostgreSQL server's own CPU is not) and the load average, and prints medians and ratios to the
reference measured in the same run. "before" runs today's engine with the recorder switched
off in the benchmark's own child process (nothing in the product can switch it off).

    bench/run.sh --offsets [--scale small] [--repeat N]
    .venv/bin/python bench/restore_offsets.py --services-state STATE [--scale small]
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

ROWS = [
    ("local_seekable_j2", "local `pg_restore -j2`, seekable file (reference)"),
    ("local_pipe_j2", "local `pg_restore -j2`, the pipe's file (no offsets)"),
    ("ours_local_before", "ours from a local repository, jobs 2, offsets off (before)"),
    ("ours_local_after", "ours from a local repository, jobs 2, offsets patched (after)"),
    ("ours_s3_before", "ours from S3 (moto), jobs 2, offsets off (before)"),
    ("ours_s3_after", "ours from S3 (moto), jobs 2, offsets patched (after)"),
]


def child_main(spec_path: str, result_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    operations = bench._engine()
    from ansible_collections.offsite.backup.plugins.module_utils._engine import pgcustom
    if not spec["offsets"]:
        pgcustom.recorder_for = lambda *args, **kwargs: None
    import boto3  # noqa: F401  (the S3 repository imports it anyway)
    start = time.perf_counter()
    result = operations.restore(**spec["kwargs"])
    Path(result_path).write_text(json.dumps({"seconds": time.perf_counter() - start, "result": result},
                                            default=str))
    return 0


def engine_restore(work: Path, kwargs: dict, offsets: bool, what: str) -> dict:
    spec, out = work / "offsets-spec.json", work / "offsets-result.json"
    spec.write_text(json.dumps({"kwargs": kwargs, "offsets": offsets}))
    m = bench.measure([sys.executable, str(Path(__file__).resolve()), "_child", str(spec), str(out)],
                      what, env=bench.pg_env())
    got = json.loads(out.read_text())
    m["call_seconds"] = got["seconds"]
    m["download_seconds"] = got["result"].get("download_seconds")
    m["data_offsets"] = got["result"].get("data_offsets")
    return m


def run_round(rep: int, db: str, facts: dict, files: dict, repos: dict, work: Path, samples: dict) -> None:
    bench.log(f"round {rep + 1}")
    pg_restore = bench.pg_tool("pg_restore")
    target = bench.scratch_database(db, "offsets")
    create = f"psql -X -q -v ON_ERROR_STOP=1 -d postgres -c 'CREATE DATABASE \"{target}\"'"
    steps = [("local_seekable_j2", f"{pg_restore} --exit-on-error -j 2 -d \"{target}\" {files['seekable']}"),
             ("local_pipe_j2", f"{pg_restore} --exit-on-error -j 2 -d \"{target}\" {files['pipe']}")]
    for where in ("local", "s3"):
        for offsets in (False, True):
            steps.append((f"ours_{where}_{'after' if offsets else 'before'}",
                          {"name": "bench", "repository": repos[where], "mode": "create", "work_dir": str(work),
                           "target": dict(bench.source_spec(target), jobs=2)}, offsets))
    for step in steps:
        key = step[0]
        bench.drop_db(target)
        bench.settle()
        if isinstance(step[1], str):
            m = bench.shell(f"{create} && {step[1]}", key)
        else:
            m = engine_restore(work, step[1], step[2], key)
        bench.check_restored(target, facts)
        bench.drop_db(target)
        samples.setdefault(key, []).append(m)
        bench.log(f"  {key}: {m['seconds']:.2f} s, {m['cpu_seconds']:.2f} CPU s, load {m['load1']:.1f}"
                  + (f", {m['data_offsets']}" if m.get("data_offsets") else ""))


def prepare(db: str, work: Path, s3: dict) -> tuple[dict, dict]:
    """The two local files and one engine backup (default dump) in a local repository and in S3."""
    pg_dump = bench.pg_tool("pg_dump")
    files = {"seekable": work / "seekable.dump", "pipe": work / "pipe.dump"}
    subprocess.run([pg_dump, "-Fc", "-Z0", "-f", str(files["seekable"]), db], env=bench.pg_env(), check=True)
    subprocess.run(f"{pg_dump} -Fc -Z0 {db} | cat > {files['pipe']}", shell=True, env=bench.pg_env(), check=True)
    operations = bench._engine()
    made = operations.dump("bench", bench.source_spec(db), str(work / "dest"))["backup"]
    (work / "repo").mkdir(exist_ok=True)
    repos = {"local": {"type": "local", "path": str(work / "repo")},
             "s3": bench.repo_options(s3, "offsets")}
    operations.upload(made, [repos["local"], repos["s3"]])
    shutil.rmtree(work / "dest", ignore_errors=True)
    return files, repos


def markdown(samples: dict, meta: dict) -> str:
    ref = statistics.median(m["seconds"] for m in samples["local_seekable_j2"])
    ref_cpu = statistics.median(m["cpu_seconds"] for m in samples["local_seekable_j2"])
    lines = [f"# Restore with data offsets ({meta['database']}, {meta['raw_mib']:.0f} MiB archive, "
             f"{meta['repeat']} rounds, medians)", "",
             f"load average {meta['load_start']:.2f} at start, {meta['load_end']:.2f} at end; "
             f"{meta['cpus']} CPUs shared with other sessions", "",
             "| row | wall s | × reference | CPU s (tree) | × reference CPU | load (1 min) |",
             "|---|---:|---:|---:|---:|---:|"]
    for key, label in ROWS:
        rows = samples.get(key) or []
        if not rows:
            continue
        wall = statistics.median(m["seconds"] for m in rows)
        cpu = statistics.median(m["cpu_seconds"] for m in rows)
        load = statistics.median(m["load1"] for m in rows)
        lines.append(f"| {label} | {wall:.2f} | {wall / ref:.2f} | {cpu:.2f} | {cpu / ref_cpu:.2f} | {load:.1f} |")
    for where in ("local", "s3"):
        before, after = samples.get(f"ours_{where}_before"), samples.get(f"ours_{where}_after")
        if before and after:
            b = statistics.median(m["seconds"] for m in before)
            a = statistics.median(m["seconds"] for m in after)
            bc = statistics.median(m["cpu_seconds"] for m in before)
            ac = statistics.median(m["cpu_seconds"] for m in after)
            lines.append("")
            lines.append(f"{where}: after / before = {a / b:.2f} wall, {ac / bc:.2f} CPU "
                         f"({b:.2f} -> {a:.2f} s, {bc:.2f} -> {ac:.2f} CPU s)")
    s3_after = samples.get("ours_s3_after")
    if s3_after:
        ratio = statistics.median(m["seconds"] for m in s3_after) / ref
        lines.append("")
        lines.append(f"target: restore from S3 <= 1.15x local pg_restore -j2 of a seekable file: "
                     f"{ratio:.2f}x {'PASS' if ratio <= 1.15 else 'MISS'}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_child":
        return child_main(argv[1], argv[2])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=sorted(bench.SCALES), default="full")
    ap.add_argument("--repeat", type=int, default=3)
    bench.database_argument(ap)
    ap.add_argument("--work-dir")
    ap.add_argument("--results-dir", default=str(bench.REPO / "bench" / "results"))
    bench.s3_arguments(ap)
    args = ap.parse_args(argv)
    cfg = bench.SCALES[args.scale]
    db = args.database or cfg["database"]
    bench.build_database(db, cfg, False)
    facts = bench.database_facts(db)
    s3, client, svc = bench.s3_bucket(args)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="offsite-offsets-"))
    work.mkdir(parents=True, exist_ok=True)
    samples: dict = {}
    load_start = os.getloadavg()[0]
    started = time.time()
    try:
        files, repos = prepare(db, work, s3)
        raw_mib = files["pipe"].stat().st_size / bench.MIB
        for rep in range(args.repeat):
            run_round(rep, db, facts, files, repos, work, samples)
    finally:
        bench.drop_db(bench.scratch_database(db, "offsets"))
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
        try:
            bench.s3_clear(client, s3["bucket"], "offsets/")
        except Exception:
            pass
        if svc is not None:
            svc.stop()
    meta = {"database": db, "repeat": args.repeat, "raw_mib": raw_mib, "cpus": os.cpu_count(),
            "load_start": load_start, "load_end": os.getloadavg()[0],
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))}
    text = markdown(samples, meta)
    print(text)
    out = Path(args.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
    data = {"meta": meta, "samples": samples}
    (out / f"offsets-{args.scale}-{stamp}.json").write_text(json.dumps(data, indent=2, default=str))
    (out / f"offsets-{args.scale}-{stamp}.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
