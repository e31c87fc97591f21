"""The scheduled job's benchmark (issue 6, Performance): one ``offsite-backup run`` — dump, local
copy, upload to S3 (moto on loopback), retention — timed side by side with its references:

- ``pg_dump > /dev/null`` (plain: the source's own limit; target: the run within 1.5x of it),
  and ``pg_dump -Fc -Z0 > /dev/null`` for context;
- the seed script's pipeline, ``pg_dump | gzip > file`` then boto3 ``upload_file`` of the file
  (target: the run at least 3.5x faster);
- the same work as two separate module calls, ``dump`` then ``upload`` (what the runner's single
  pass replaces: it streams the dump to the local copy and to S3 at once).

Every step runs in its own process and is timed from outside, interpreter start included (for
the engine and boto3 steps too), so the rows compare what cron would wait for.

Each round runs twice: against moto on loopback, and against a store behind a link that passes
at most ``--link-mib`` MiB/s upstream, where the network rather than this machine's two cores
limits the upload. The link (``--link``) is shaped by the kernel where this machine can (root:
a second moto in a network namespace of its own, reached over a veth pair with tc's token
bucket, ``netlink.py``), else it is a loopback TCP proxy in this process (``fanout.Throttle``),
whose own copying takes CPU from the cores it measures. On loopback the S3 endpoint runs on the
same two cores as PostgreSQL, pg_dump and the engine, so the overlap of dump and upload has no
spare CPU to use.

The run is the real command exactly as cron starts it (a fresh interpreter, its job file and env
file, no terminal), timed from outside, interpreter start-up included. Its memory is the peak RSS
of the largest process of its tree (target: < 150 MB). Every step is preceded by a sync +
CHECKPOINT, and the medians of ``--repeat`` rounds are reported.

    bench/run.sh --scheduled                  # ~1 GB database (built once, then reused), 5 rounds
    bench/run.sh --scheduled --scale small    # smoke test
    bench/run.sh --scheduled --cpu --baseline REV   # CPU seconds per process per GB, REV's engine too
    bench/run.sh --scheduled --cpu --age            # the same, both encrypting for one age recipient

``--cpu`` (issue 14, item 4) measures CPU instead of wall time: the scheduled run's CPU seconds
per process (the engine's Python with its in-process zstd, hashes and S3 client; pg_dump; psql;
the PostgreSQL backends it uses, found by their application_name in pg_stat_activity) per GB of
dump (the raw custom-format bytes), against ``pg_dump -Fc -Z0 | zstd -1 > file`` (target: the
run's total including the backends <= 1.25x the reference's). With ``--baseline REV`` the engine
of git revision REV runs the same job in the same rounds (before / after, alternating order).
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import bench  # noqa: E402  (database builder, S3 settings, measurement helpers of the main benchmark)
import netlink  # noqa: E402  (the link: shaped by the kernel, or fanout.Throttle's proxy)
import proc_cpu  # noqa: E402  (CPU seconds per process, /proc sampled)

CLI_MODULE = "ansible_collections.offsite.backup.plugins.module_utils._engine.cli"
TARGETS = {"run_vs_pg_dump": 1.5, "seed_vs_run": 3.5, "run_rss_mib": 150}  # from issue 6
# issue 14: the seed pipeline >= 3x the two module calls and >= 4x the single pass; behind the
# link the single pass <= 1.05x max(pg_dump > /dev/null, our upload alone at that rate)
TARGETS_14 = {"seed_vs_two_calls": 3.0, "seed_vs_run": 4.0, "link_run_vs_limit": 1.05}
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


def write_job(work: Path, db: str, s3: dict, prefix: str, stem: str = "bench-job", copies: int = 1,
              age_recipient: str | None = None) -> Path:
    """The job a client role would install: secrets in a 0600 env file, not in the job file.
    ``copies``: S3 repositories (prefixes ``prefix``, ``prefix-2``, ...) fed by the one pass;
    ``age_recipient``: every backup encrypted for that public key."""
    repos = []
    for n in range(copies):
        repo = bench.repo_options(s3, prefix if n == 0 else f"{prefix}-{n + 1}")
        repo.update(access_key="${S3_ACCESS_KEY}", secret_key="${S3_SECRET_KEY}", name=f"s3-{n + 1}")
        repos.append(repo)
    job = {"name": "bench", "local": {"path": str(work / "local"), "retention": {"keep_last": 1}},
           "sources": [{"name": "bench", "source": bench.source_spec(db)}],
           "repositories": repos, "retention": {"keep_last": 2},
           "log": {"path": str(work / "log" / "bench.log")}}
    if age_recipient:
        job["encryption"] = {"recipients": [age_recipient]}
    path = work / f"{stem}.yml"
    path.write_text(json.dumps(job, indent=1))  # JSON is YAML
    env = work / f"{stem}.env"
    env.write_text(f"S3_ACCESS_KEY={s3['access_key']}\nS3_SECRET_KEY={s3['secret_key']}\n")
    env.chmod(0o600)
    return path


def cron_env() -> dict:
    return {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "LANG": "C",
            "PYTHONPATH": str(bench.COLLECTIONS)}


def run_round(rep: int, repeat: int, db: str, s3: dict, client, work: Path, samples: dict, suffix: str = "") -> None:
    """One round of every row against the store ``s3`` (loopback, or through the throttled
    link: ``suffix`` names the row set)."""
    pg_dump = bench.pg_tool("pg_dump")
    seed_file = work / "seed.sql.gz"  # made by the loopback round, uploaded by both
    bench.log(f"round {rep + 1}/{repeat}{' ' + suffix if suffix else ''}")
    if not suffix:
        bench.settle()
        bench.record(samples, "pg_dump_plain_null", bench.shell(f"{pg_dump} {db} > /dev/null", "pg_dump"))
        bench.settle()
        bench.record(samples, "pg_dump_custom_z0_null", bench.shell(f"{pg_dump} -Fc -Z0 {db} > /dev/null", "pg_dump -Fc"))
        bench.settle()
        bench.record(samples, "seed_dump_gzip", bench.shell(f"{pg_dump} {db} | gzip > {seed_file}", "pg_dump | gzip"))
    bench.settle()
    bench.record(samples, "seed_upload_boto3" + suffix, child(
        {"op": "boto3_upload", "s3": s3, "file": str(seed_file), "key": f"seed/r{rep}.sql.gz"}, work, "upload_file"))
    samples.setdefault("seed_total" + suffix, []).append(
        _total(samples["seed_dump_gzip"][-1], samples["seed_upload_boto3" + suffix][-1]))
    bench.s3_clear(client, s3["bucket"], "seed/")

    dest = work / "two-calls"
    shutil.rmtree(dest, ignore_errors=True)
    bench.settle()
    dumped = bench.record(samples, "ours_dump" + suffix, child(
        {"op": "dump", "kwargs": {"name": "bench", "source": bench.source_spec(db), "dest": str(dest)}}, work, "dump"))
    bench.settle()
    uploaded = bench.record(samples, "ours_upload" + suffix, child(
        {"op": "upload", "kwargs": {"backup": dumped["result"]["backup"]["path"],
                                    "repositories": [bench.repo_options(s3, "two-calls")]}}, work, "upload"))
    samples.setdefault("two_calls_total" + suffix, []).append(_total(dumped, uploaded))
    shutil.rmtree(dest, ignore_errors=True)
    bench.s3_clear(client, s3["bucket"], "two-calls/")

    job = write_job(work, db, s3, "scheduled", stem="job" + suffix)
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
    bench.record(samples, "scheduled_run" + suffix, m)


# -- CPU seconds per process (--cpu) -----------------------------------------------------------
CPU_TARGET = 1.25  # issue 14: the scheduled run's CPU <= 1.25x that of `pg_dump -Fc -Z0 | zstd -1 > file`
REFERENCE_APP = "offsite-bench-reference"
ENGINE_APP = "offsite.backup"  # the engine's PGAPPNAME


def measure_cpu(argv: list[str], what: str, env: dict, app: str, db: str, stdout=subprocess.DEVNULL) -> dict:
    """Run ``argv`` under /usr/bin/time with a CpuSampler on its tree and on the backends of
    application ``app``: wall seconds, the tree's exact CPU total, and CPU seconds per group."""
    with tempfile.NamedTemporaryFile(prefix="bench-time-", suffix=".txt") as stats:
        start = time.perf_counter()
        proc = subprocess.Popen([bench.TIME, "-q", "-f", "%M %U %S", "-o", stats.name] + argv, env=env,
                                stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.PIPE)
        sampler = proc_cpu.CpuSampler(proc.pid, (app,), bench.pg_env(), bench.pg_tool("psql"), database=db)
        err = proc.communicate()[1]
        groups = sampler.stop()
        wall = time.perf_counter() - start
        fields = Path(stats.name).read_text().split()
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}): {err.decode(errors='replace')[-3000:]}")
    tree = float(fields[-2]) + float(fields[-1])
    sampled_tree = sum(v for k, v in groups.items() if k != "PostgreSQL backend")
    groups["unattributed (tree total - sampled)"] = max(0.0, tree - sampled_tree)
    backend = groups.get("PostgreSQL backend", 0.0)
    return {"seconds": wall, "tree_rss_mib": int(fields[-3]) / 1024, "cpu_seconds": tree,
            "cpu_with_backend": tree + backend, "cpu_groups": groups, "load1": os.getloadavg()[0]}


def export_engine(rev: str, work: Path) -> Path:
    """The collection as it was at git revision ``rev``, importable as ansible_collections.offsite.backup."""
    root = work / f"engine-{rev}"
    target = root / "ansible_collections" / "offsite" / "backup"
    target.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return root


def cpu_round(rep: int, repeat: int, db: str, s3: dict, client, work: Path, samples: dict, engines: dict,
              copies: int = 1, age: bool = False) -> None:
    """The reference pipeline, then the scheduled run with each engine (order alternating).
    ``age``: both encrypt for one age recipient (the reference through ``| age -r``)."""
    bench.log(f"cpu round {rep + 1}/{repeat}")
    pg_dump = bench.pg_tool("pg_dump")
    out = work / "reference.dump.zst"
    recipient = bench.age_recipient(work) if age else None
    encrypt = f" | age -r {recipient}" if age else ""
    bench.settle()
    env = dict(bench.pg_env(), PGAPPNAME=REFERENCE_APP)
    bench.record(samples, "cpu_reference", measure_cpu(
        ["bash", "-o", "pipefail", "-c", f"{pg_dump} -Fc -Z0 {db} | zstd -q -1{encrypt} > {out}"],
        "pg_dump -Fc -Z0 | zstd -1" + encrypt, env, REFERENCE_APP, db))
    out.unlink()
    names = sorted(engines)
    for name in names if rep % 2 == 0 else names[::-1]:
        job = write_job(work, db, s3, f"cpu-{name}", stem=f"job-cpu-{name}", copies=copies,
                        age_recipient=recipient)
        bench.settle()
        argv = [sys.executable, "-m", CLI_MODULE, "run", str(job), "--env-file", str(job.with_suffix(".env")), "--json"]
        report_path = work / "run.json"
        with open(report_path, "w") as handle:
            m = measure_cpu(argv, f"offsite-backup run ({name})", dict(cron_env(), PYTHONPATH=str(engines[name])),
                            ENGINE_APP, db, stdout=handle)
        report = json.loads(report_path.read_text())
        if not report["ok"]:
            raise RuntimeError(f"the scheduled run ({name}) failed: {report}")
        [done] = report["sets"]
        m["raw_size"] = done["backup"]["raw_size"]
        m["size"] = done["backup"]["size"]
        bench.record(samples, f"cpu_run_{name}", m)
        bench.s3_clear(client, s3["bucket"], f"cpu-{name}")
        shutil.rmtree(work / "local", ignore_errors=True)


def cpu_markdown(samples: dict, meta: dict) -> tuple[str, list]:
    raw_gb = statistics.median(s["raw_size"] for k in samples if k.startswith("cpu_run_") for s in samples[k]) / 1e9
    keys = ["cpu_reference"] + sorted(k for k in samples if k.startswith("cpu_run_"))
    label = {"cpu_reference": "`pg_dump -Fc -Z0 | zstd -1%s > file`" % (" | age -r" if meta.get("age") else "")}
    groups = sorted(set(g for k in keys for s in samples[k] for g in s["cpu_groups"]))

    def med(key, field):
        return statistics.median(s[field] for s in samples[key])

    def med_group(key, group):
        return statistics.median(s["cpu_groups"].get(group, 0.0) for s in samples[key])
    lines = [f"CPU seconds per GB of dump ({raw_gb:.2f} GB raw custom format; {meta.get('s3_copies', 1)} S3 "
             f"repositories; {'encrypted for one age recipient; ' if meta.get('age') else ''}"
             f"{meta['rounds']} rounds, median; "
             f"load average {meta['load_start']:.1f} at start, {meta['load_end']:.1f} at the end; "
             f"{meta['cpus']} CPUs). Processes sampled from /proc every 20 ms; the backends by application_name.",
             "", "| process | " + " | ".join(label.get(k, "run: " + k[len("cpu_run_"):]) for k in keys) + " |",
             "|---|" + "---|" * len(keys)]
    for group in groups:
        lines.append(f"| {group} | " + " | ".join(f"{med_group(k, group) / raw_gb:.2f}" for k in keys) + " |")
    totals = [f"**{med(k, 'cpu_with_backend') / raw_gb:.2f}**" for k in keys]
    lines.append("| **total incl. backend** | " + " | ".join(totals) + " |")
    lines.append("| wall seconds | " + " | ".join(f"{med(k, 'seconds'):.2f}" for k in keys) + " |")
    lines.append("| peak RSS of the largest process, MiB (max) | "
                 + " | ".join(f"{max(s['tree_rss_mib'] for s in samples[k]):.0f}" for k in keys) + " |")
    reference = med("cpu_reference", "cpu_with_backend")
    checks = []
    for k in keys[1:]:
        ratio = med(k, "cpu_with_backend") / reference
        checks.append((f"CPU of the scheduled run ({k[len('cpu_run_'):]}) <= {CPU_TARGET}x the reference",
                       f"{ratio:.2f}x", ratio <= CPU_TARGET))
        rss = max(s["tree_rss_mib"] for s in samples[k])
        checks.append((f"peak memory of the scheduled run ({k[len('cpu_run_'):]}) < {TARGETS['run_rss_mib']} MB",
                       f"{rss:.0f} MiB", rss * 1.048576 < TARGETS["run_rss_mib"]))
    lines += ["", "| target | measured | |", "|---|---|---|"]
    lines += [f"| {name} | {text} | {'**PASS**' if ok else '**MISS**'} |" for name, text, ok in checks]
    return "\n".join(lines) + "\n", checks


def child(spec: dict, work: Path, what: str) -> dict:
    """bench.run_child, timed like the scheduled run: the whole process, from outside."""
    m = bench.run_child(spec, work, what)
    return dict(m, seconds=m["process_seconds"], call_seconds=m["seconds"])


def _total(a: dict, b: dict) -> dict:
    return {"seconds": a["seconds"] + b["seconds"], "tree_rss_mib": max(a["tree_rss_mib"], b["tree_rss_mib"]),
            "cpu_seconds": a["cpu_seconds"] + b["cpu_seconds"]}


def markdown(samples: dict, meta: dict) -> tuple[str, list]:
    def med(key, field="seconds"):
        return statistics.median(s[field] for s in samples[key])

    base = med("pg_dump_plain_null")
    lines = [f"Database {meta['database']}: {meta['database_bytes'] / bench.MIB:.0f} MiB on disk, "
             f"{meta['rounds']} rounds, median; load average {meta['load_start']:.1f} at start, "
             f"{meta['load_end']:.1f} at the end; {meta['cpus']} CPUs. Every row is a whole process "
             f"timed from outside.", "",
             "| step | loopback moto: median s | min–max s | × pg_dump | CPU s | peak RSS MiB | "
             f"behind a {meta['link_mib']:g} MiB/s link ({netlink.LINKS[meta.get('link', 'proxy')]}): median s | × pg_dump |",
             "|---|---|---|---|---|---|---|---|"]
    for key, label in ROWS:
        vals = [s["seconds"] for s in samples[key]]
        linked = samples.get(key + "_link")
        link_cells = f"{med(key + '_link'):.2f} | {med(key + '_link') / base:.2f}" if linked else "– | –"
        lines.append(f"| {label} | {med(key):.2f} | {min(vals):.2f}–{max(vals):.2f} | {med(key) / base:.2f} | "
                     f"{med(key, 'cpu_seconds'):.1f} | {max(s['tree_rss_mib'] for s in samples[key]):.0f} | "
                     f"{link_cells} |")
    checks = []
    for suffix, where in (("", "loopback moto"), ("_link", f"{meta['link_mib']:g} MiB/s link")):
        if "scheduled_run" + suffix not in samples:
            continue
        run = med("scheduled_run" + suffix)
        rss = max(s["tree_rss_mib"] for s in samples["scheduled_run" + suffix])
        seed = med("seed_total" + suffix)
        checks += [
            (f"{where}: scheduled run ≤ {TARGETS['run_vs_pg_dump']:.1f}× `pg_dump > /dev/null`",
             f"{run / base:.2f}×", run / base <= TARGETS["run_vs_pg_dump"]),
            (f"{where}: seed pipeline ≥ {TARGETS['seed_vs_run']:.1f}× the scheduled run",
             f"{seed / run:.2f}×", seed / run >= TARGETS["seed_vs_run"]),
            (f"{where}: peak memory < {TARGETS['run_rss_mib']} MB", f"{rss:.0f} MiB",
             rss * 1.048576 < TARGETS["run_rss_mib"]),
            (f"{where}: (context) two module calls / one pass", f"{med('two_calls_total' + suffix) / run:.2f}×", None),
            (f"{where}: (issue 14) seed pipeline ≥ {TARGETS_14['seed_vs_two_calls']:.0f}× the two module calls",
             f"{seed / med('two_calls_total' + suffix):.2f}×", seed / med("two_calls_total" + suffix) >= TARGETS_14["seed_vs_two_calls"]),
            (f"{where}: (issue 14) seed pipeline ≥ {TARGETS_14['seed_vs_run']:.0f}× the scheduled run",
             f"{seed / run:.2f}×", seed / run >= TARGETS_14["seed_vs_run"]),
        ]
        if suffix:
            limit = max(base, med("ours_upload" + suffix))
            checks.append((f"{where}: (issue 14) scheduled run ≤ {TARGETS_14['link_run_vs_limit']}× max(`pg_dump > "
                           f"/dev/null`, our upload alone at that rate)", f"{run / limit:.3f}×",
                           run / limit <= TARGETS_14["link_run_vs_limit"]))
    lines += ["", "| target | measured | |", "|---|---|---|"]
    lines += [f"| {name} | {text} | {'' if ok is None else '**PASS**' if ok else '**MISS**'} |"
              for name, text, ok in checks]
    return "\n".join(lines) + "\n", checks


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=sorted(bench.SCALES), default="full")
    ap.add_argument("--repeat", type=int, default=None, help="rounds (default 5 full, 1 small)")
    ap.add_argument("--link-mib", type=float, default=40, help="MiB/s of the throttled link (0: loopback only)")
    netlink.link_argument(ap)
    ap.add_argument("--results-dir", default=str(REPO / "bench" / "results"))
    ap.add_argument("--cpu", action="store_true", help="CPU seconds per process per GB (issue 14) instead")
    ap.add_argument("--baseline", help="with --cpu: a git revision whose engine runs the same job too")
    ap.add_argument("--s3-copies", type=int, default=1, help="with --cpu: S3 repositories the run feeds at once")
    ap.add_argument("--age", action="store_true", help="with --cpu: the run and the reference encrypt with age")
    bench.database_argument(ap)
    bench.s3_arguments(ap)
    args = ap.parse_args(argv)
    cfg = bench.SCALES[args.scale]
    repeat = args.repeat or (5 if args.scale == "full" else 1)
    db = args.database or cfg["database"]
    bench.build_database(db, cfg, rebuild=False)
    facts = bench.database_facts(db)
    s3, client, svc = bench.s3_bucket(args)
    work = Path(tempfile.mkdtemp(prefix="offsite-bench-run-"))
    link = link_s3 = link_client = None
    if not args.cpu and args.link_mib:
        link_s3, link = netlink.open_link(s3, args.link_mib * bench.MIB, "up", args.link)
        link_client = bench.s3_client(link_s3)
    samples: dict = {}
    started, load_start = time.time(), os.getloadavg()[0]
    engines = {"after": bench.COLLECTIONS}
    try:
        if args.cpu and args.baseline:
            engines = {"after": bench.COLLECTIONS, "before": export_engine(args.baseline, work)}
        bench.log("warm-up: pg_dump > /dev/null (untimed)")
        bench.shell(f"{bench.pg_tool('pg_dump')} {db} > /dev/null", "warm-up")
        for rep in range(repeat):
            if args.cpu:
                cpu_round(rep, repeat, db, s3, client, work, samples, engines, args.s3_copies, args.age)
                continue
            run_round(rep, repeat, db, s3, client, work, samples)
            if link_s3 is not None:
                run_round(rep, repeat, db, link_s3, link_client, work, samples, "_link")
    finally:
        if link is not None:
            link.close()
        shutil.rmtree(work, ignore_errors=True)
        try:
            bench.s3_clear(client, s3["bucket"])
        except Exception:
            pass
        if svc is not None:
            svc.stop()
    meta = {"database": db, "database_bytes": facts["database_bytes"], "rounds": repeat, "cpus": os.cpu_count(),
            "link_mib": args.link_mib, "link": args.link, "baseline": args.baseline, "s3_copies": args.s3_copies, "age": args.age,
            "load_start": load_start, "load_end": os.getloadavg()[0],
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))}
    text, checks = cpu_markdown(samples, meta) if args.cpu else markdown(samples, meta)
    print(text)
    out_dir = Path(args.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
    kind = "scheduled-cpu" if args.cpu else "scheduled"
    (out_dir / f"{kind}-{args.scale}-{stamp}.json").write_text(json.dumps(
        {"meta": meta, "targets": [{"target": n, "measured": t, "pass": ok} for n, t, ok in checks],
         "samples": {k: [{f: v for f, v in s.items() if f != "result"} for s in vals] for k, vals in samples.items()}},
        indent=2, default=str))
    (out_dir / f"{kind}-{args.scale}-{stamp}.md").write_text(text)
    bench.log(f"results: {out_dir}/{kind}-{args.scale}-{stamp}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
