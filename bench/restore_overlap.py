"""Restore overlapped with the download (issue 14, item 2), against the targets, in one run.

A parallel restore used to download, verify and decompress the whole archive into its work
file, then run ``pg_restore -j``. It now follows the work file as it is written
(``sources/postgresql_following.py``): the schema once the TOC is in, each table's data as its
block completes, the rest with ``pg_restore -j`` once the checksum is proven; the loaders'
sessions run with ``synchronous_commit=off`` and a larger ``maintenance_work_mem``. Rows, as
whole processes side by side in each round:

    local_seekable_j2   pg_restore -j2 of a seekable custom file (pg_dump -Fc -Z0 -f): best local restore
    seed_gunzip_psql    the seed scripts' restore: gunzip -c file.sql.gz | psql (local file)
    ours_s3_serial      ours from S3 (moto, loopback), jobs 2, download then restore (before)
    ours_s3             ours from S3 (moto, loopback), jobs 2, overlapped (after)
    download_link       the artifact alone, boto3 get_object behind a --link-mib MiB/s link
    ours_link           ours from S3 behind that link, jobs 2, overlapped

Targets (PASS/MISS on medians): ours_s3 <= 1.15x local_seekable_j2; ours_link <= 1.15x
max(download_link, local_seekable_j2); seed_gunzip_psql >= 1.25x ours_s3. Wall times under
load are indicative only: the table also gives CPU seconds of each process tree (pg_restore,
psql and the engine; the PostgreSQL server's backends are not included) and the load average.
"before" switches the overlap off in the benchmark's own child process (the product cannot).

    bench/run.sh --overlap [--scale small] [--repeat N] [--link-mib 40]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402
import fanout  # noqa: E402  (Throttle)

ROWS = [
    ("local_seekable_j2", "local `pg_restore -j2`, seekable custom file (best local restore)"),
    ("seed_gunzip_psql", "seed: `gunzip -c file.sql.gz | psql` (local file)"),
    ("ours_s3_serial", "ours from S3 (loopback), jobs 2, download then restore (before)"),
    ("ours_s3", "ours from S3 (loopback), jobs 2, overlapped"),
    ("download_link", "download alone behind the link (boto3 get_object)"),
    ("ours_link", "ours from S3 behind the link, jobs 2, overlapped"),
]
TARGETS = {"s3_vs_local": 1.15, "link_vs_limit": 1.15, "seed_vs_s3": 1.25}


class DownThrottle(fanout.Throttle):
    """The same proxy, limiting the other direction: server to client (a download)."""

    def _accept(self) -> None:
        while True:
            try:
                client, addr = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.port))
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()


def child_main(spec_path: str, result_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    import boto3  # noqa: F401  (the S3 repository imports it anyway: not timed)
    if spec["op"] == "download":
        s3 = spec["s3"]
        start = time.perf_counter()
        body = bench.s3_client(s3).get_object(Bucket=s3["bucket"], Key=spec["key"])["Body"]
        size = 0
        for chunk in iter(lambda: body.read(1024 * 1024), b""):
            size += len(chunk)
        result = {"size": size}
    else:
        operations = bench._engine()
        if not spec["follow"]:
            from ansible_collections.offsite.backup.plugins.module_utils._engine.sources import postgresql
            postgresql.PostgresqlSource.follows = lambda self, manifest: False
        start = time.perf_counter()
        result = operations.restore(**spec["kwargs"])
    Path(result_path).write_text(json.dumps({"seconds": time.perf_counter() - start, "result": result},
                                            default=str))
    return 0


def child(work: Path, spec: dict, what: str) -> dict:
    spec_path, out = work / "overlap-spec.json", work / "overlap-result.json"
    spec_path.write_text(json.dumps(spec))
    m = bench.measure([sys.executable, str(Path(__file__).resolve()), "_child", str(spec_path), str(out)],
                      what, env=bench.pg_env())
    got = json.loads(out.read_text())
    m["call_seconds"] = got["seconds"]
    result = got["result"]
    for key in ("download_seconds", "restore_seconds"):
        if key in result:
            m[key] = result[key]
    if result.get("data_offsets"):
        m["loaded_while_downloading"] = result["data_offsets"].get("loaded_while_downloading")
    return m


def run_round(rep: int, db: str, facts: dict, files: dict, s3: dict, link: str | None, key: str,
              work: Path, samples: dict) -> None:
    bench.log(f"round {rep + 1}")
    pg_restore = bench.pg_tool("pg_restore")
    target = bench.scratch_database(db, "overlap")
    create = f"psql -X -q -v ON_ERROR_STOP=1 -d postgres -c 'CREATE DATABASE \"{target}\"'"

    def restore(endpoint: str, follow: bool) -> dict:
        repo = bench.repo_options(dict(s3, endpoint_url=endpoint), "overlap")
        return {"op": "restore", "follow": follow,
                "kwargs": {"name": "bench", "repository": repo, "mode": "create", "work_dir": str(work),
                           "target": dict(bench.source_spec(target), jobs=2)}}
    steps = [("local_seekable_j2", f"{pg_restore} --exit-on-error -j 2 -d \"{target}\" {files['seekable']}"),
             ("seed_gunzip_psql", f"gunzip -c {files['seed']} | psql -X -q -v ON_ERROR_STOP=1 -d \"{target}\" "
                                  "> /dev/null"),
             ("ours_s3_serial", restore(s3["endpoint_url"], False)),
             ("ours_s3", restore(s3["endpoint_url"], True))]
    if link:
        steps += [("download_link", {"op": "download", "s3": dict(s3, endpoint_url=link), "key": key}),
                  ("ours_link", restore(link, True))]
    for name, step in steps:
        bench.drop_db(target)
        bench.settle()
        if isinstance(step, str):
            m = bench.shell(f"{create} && {step}", name)
        else:
            m = child(work, step, name)
        if name != "download_link":
            bench.check_restored(target, facts)
        bench.drop_db(target)
        samples.setdefault(name, []).append(m)
        bench.log(f"  {name}: {m['seconds']:.2f} s, {m['cpu_seconds']:.2f} CPU s, load {m['load1']:.1f}"
                  + (f", download {m['download_seconds']:.2f} s" if m.get("download_seconds") else "")
                  + (f", {m['loaded_while_downloading']} tables loaded while downloading"
                     if m.get("loaded_while_downloading") is not None else ""))


def prepare(db: str, work: Path, s3: dict) -> tuple[dict, str]:
    """The local files and one engine backup (module defaults) in S3; returns them and its key."""
    pg_dump = bench.pg_tool("pg_dump")
    files = {"seekable": work / "seekable.dump", "seed": work / "seed.sql.gz"}
    subprocess.run([pg_dump, "-Fc", "-Z0", "-f", str(files["seekable"]), db], env=bench.pg_env(), check=True)
    subprocess.run(f"{pg_dump} {db} | gzip > {files['seed']}", shell=True, env=bench.pg_env(), check=True)
    operations = bench._engine()
    made = operations.dump("bench", bench.source_spec(db), str(work / "dest"))["backup"]
    operations.upload(made, [bench.repo_options(s3, "overlap")])
    shutil.rmtree(work / "dest", ignore_errors=True)
    return files, f"overlap/bench/{os.path.basename(made['path'])}"


def evaluate(samples: dict) -> list:
    def med(key, field="seconds"):
        rows = samples.get(key) or []
        return statistics.median(m[field] for m in rows) if rows else None
    local, s3, seed = med("local_seekable_j2"), med("ours_s3"), med("seed_gunzip_psql")
    checks = []
    if local and s3:
        r = s3 / local
        checks.append((f"restore from S3 <= {TARGETS['s3_vs_local']}x best local restore", r,
                       r <= TARGETS["s3_vs_local"]))
    down, link = med("download_link"), med("ours_link")
    if down and link and local:
        r = link / max(down, local)
        checks.append((f"restore behind the link <= {TARGETS['link_vs_limit']}x max(download alone, "
                       "best local restore)", r, r <= TARGETS["link_vs_limit"]))
    if seed and s3:
        r = seed / s3
        checks.append((f"restore from S3 faster than the seed's `gunzip | psql` by >= {TARGETS['seed_vs_s3']}x",
                       r, r >= TARGETS["seed_vs_s3"]))
    return checks


def markdown(samples: dict, meta: dict) -> str:
    ref = statistics.median(m["seconds"] for m in samples["local_seekable_j2"])
    lines = [f"# Restore overlapped with the download ({meta['database']}, {meta['raw_mib']:.0f} MiB archive, "
             f"{meta['repeat']} rounds, medians; link {meta['link_mib']} MiB/s)", "",
             f"load average {meta['load_start']:.2f} at start, {meta['load_end']:.2f} at end; "
             f"{meta['cpus']} CPUs shared with other sessions", "",
             "| row | wall s | x best local | CPU s (tree) | download s | load (1 min) |",
             "|---|---:|---:|---:|---:|---:|"]
    for key, label in ROWS:
        rows = samples.get(key) or []
        if not rows:
            continue
        wall = statistics.median(m["seconds"] for m in rows)
        cpu = statistics.median(m["cpu_seconds"] for m in rows)
        load = statistics.median(m["load1"] for m in rows)
        down = [m["download_seconds"] for m in rows if m.get("download_seconds") is not None]
        lines.append(f"| {label} | {wall:.2f} | {wall / ref:.2f} | {cpu:.2f} | "
                     f"{statistics.median(down) if down else float('nan'):.2f} | {load:.1f} |")
    lines += ["", "| target | measured | |", "|---|---:|---|"]
    lines += [f"| {name} | {ratio:.2f}x | **{'PASS' if ok else 'MISS'}** |" for name, ratio, ok in evaluate(samples)]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_child":
        return child_main(argv[1], argv[2])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=sorted(bench.SCALES), default="full")
    ap.add_argument("--repeat", type=int, default=None, help="rounds (default 3 full, 1 small)")
    ap.add_argument("--link-mib", type=float, default=40, help="MiB/s of the throttled link (0: loopback only)")
    bench.database_argument(ap)
    ap.add_argument("--work-dir")
    ap.add_argument("--results-dir", default=str(bench.REPO / "bench" / "results"))
    bench.s3_arguments(ap)
    args = ap.parse_args(argv)
    cfg = bench.SCALES[args.scale]
    repeat = args.repeat or cfg["repeat"]
    db = args.database or cfg["database"]
    bench.build_database(db, cfg, False)
    facts = bench.database_facts(db)
    s3, client, svc = bench.s3_bucket(args)
    proxy = DownThrottle(int(s3["endpoint_url"].rsplit(":", 1)[1]), args.link_mib * bench.MIB) \
        if args.link_mib else None
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="offsite-overlap-"))
    work.mkdir(parents=True, exist_ok=True)
    samples: dict = {}
    load_start = os.getloadavg()[0]
    started = time.time()
    try:
        files, key = prepare(db, work, s3)
        raw_mib = files["seekable"].stat().st_size / bench.MIB
        for rep in range(repeat):
            run_round(rep, db, facts, files, s3, proxy.endpoint_url if proxy else None, key, work, samples)
    finally:
        bench.drop_db(bench.scratch_database(db, "overlap"))
        if proxy is not None:
            proxy.close()
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
        try:
            bench.s3_clear(client, s3["bucket"], "overlap/")
        except Exception:
            pass
        if svc is not None:
            svc.stop()
    meta = {"database": db, "repeat": repeat, "raw_mib": raw_mib, "cpus": os.cpu_count(),
            "link_mib": args.link_mib, "load_start": load_start, "load_end": os.getloadavg()[0],
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))}
    text = markdown(samples, meta)
    print(text)
    out = Path(args.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
    checks = [{"target": n, "ratio": r, "pass": ok} for n, r, ok in evaluate(samples)]
    (out / f"overlap-{args.scale}-{stamp}.json").write_text(json.dumps(
        {"meta": meta, "targets": checks, "samples": samples}, indent=2, default=str))
    (out / f"overlap-{args.scale}-{stamp}.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
