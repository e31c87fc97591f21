"""Restore overlapped with the download (issue 14, item 2), against the targets, in one run.

A parallel restore used to download, verify and decompress the whole archive into its work
file, then run ``pg_restore -j``. It now follows the work file as it is written
(``sources/postgresql_following.py``): the schema once the TOC is in, each table's data as its
block completes, the rest with ``pg_restore -j`` once the checksum is proven; the loaders'
sessions run with ``synchronous_commit=off`` and a larger ``maintenance_work_mem`` (the swap
commits synchronously). Rows, as whole processes side by side in each round:

    local_seekable_j2   pg_restore -j2 of a seekable custom file (pg_dump -Fc -Z0 -f): best local restore
    seed_gunzip_psql    the seed scripts' restore: gunzip -c file.sql.gz | psql (local file)
    ours_s3_serial      ours from S3 (moto, loopback), jobs 2, download then restore (before)
    ours_s3_unheld      the same overlapped, the download never held back for the loaders (before)
    ours_s3_in_order    ours from S3 (moto, loopback), jobs 2, overlapped, read in order (before)
    ours_s3             ours from S3 (moto, loopback), jobs 2, overlapped, frame by frame (after)
    download_link       the artifact alone, boto3 get_object behind a --link-mib MiB/s link
    ours_link_in_order  ours from S3 behind that link, jobs 2, overlapped, read in order (before)
    ours_link           ours from S3 behind that link, jobs 2, overlapped, frame by frame (after)

Targets (PASS/MISS on medians): ours_s3 <= 1.15x local_seekable_j2; ours_link <= 1.15x
max(download_link, local_seekable_j2); seed_gunzip_psql >= 1.25x ours_s3. Wall times under
load are indicative only: the table also gives CPU seconds of each process tree (pg_restore,
psql and the engine; the PostgreSQL server's backends are not included) and the load average.
"before" switches the overlap (or the download's hold) off in the benchmark's own child process (the
product cannot).
The rounds, the child and the table are ``restore_rounds.py``'s; the link (``--link``) is shaped
by the kernel where this machine can (``netlink.py``: a moto of its own in a network namespace,
its replies paced by tc), else ``fanout.Throttle`` pacing the server's replies in this process.

    bench/run.sh --overlap [--scale small] [--repeat N] [--link-mib 40]
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402
import netlink  # noqa: E402  (the link: shaped by the kernel, or fanout.Throttle's proxy)
import restore_rounds  # noqa: E402

SCRIPT = str(Path(__file__).resolve())
KIND = "overlap"
ROWS = [
    ("local_seekable_j2", "local `pg_restore -j2`, seekable custom file (best local restore)"),
    ("seed_gunzip_psql", "seed: `gunzip -c file.sql.gz \\| psql` (local file)"),
    ("ours_s3_serial", "ours from S3 (loopback), jobs 2, download then restore (before)"),
    ("ours_s3_unheld", "ours from S3 (loopback), jobs 2, overlapped, the download not held back (before)"),
    ("ours_s3_in_order", "ours from S3 (loopback), jobs 2, overlapped, read in order (before)"),
    ("ours_s3_keys_last", "ours from S3 (loopback), jobs 2, overlapped, frame by frame, keys built last (before)"),
    ("ours_s3", "ours from S3 (loopback), jobs 2, overlapped, frame by frame"),
    ("download_link", "download alone behind the link (boto3 get_object)"),
    ("ours_link_in_order", "ours from S3 behind the link, jobs 2, overlapped, read in order (before)"),
    ("ours_link_keys_last", "ours from S3 behind the link, jobs 2, overlapped, frame by frame, keys built last "
                            "(before)"),
    ("ours_link", "ours from S3 behind the link, jobs 2, overlapped, frame by frame"),
]
TARGETS = {"s3_vs_local": 1.15, "link_vs_limit": 1.15, "seed_vs_s3": 1.25}
LINK_MIB, LINK = [], []  # --link-mib and --link, read by prepare


def prepare(db: str, work: Path, s3: dict) -> dict:
    """The local files, one engine backup (module defaults) in S3, and the store behind the link
    (a store of its own when the kernel shapes the link: the backup is uploaded there too)."""
    pg_dump = bench.pg_tool("pg_dump")
    files = {"seekable": work / "seekable.dump", "seed": work / "seed.sql.gz"}
    subprocess.run([pg_dump, "-Fc", "-Z0", "-f", str(files["seekable"]), db], env=bench.pg_env(), check=True)
    subprocess.run(f"{pg_dump} {db} | gzip > {files['seed']}", shell=True, env=bench.pg_env(), check=True)
    operations = bench._engine()
    made = operations.dump("bench", bench.source_spec(db), str(work / "dest"))["backup"]
    operations.upload(made, [bench.repo_options(s3, KIND)])
    link_mib, link_s3, link = LINK_MIB[0], None, None
    if link_mib:
        link_s3, link = netlink.open_link(s3, link_mib * bench.MIB, "down", LINK[0])
        if link_s3["access_key"] != s3["access_key"]:
            operations.upload(made, [bench.repo_options(link_s3, KIND)])
    shutil.rmtree(work / "dest", ignore_errors=True)
    return {"files": files, "s3": s3, "link_s3": link_s3, "link": link,
            "key": f"{KIND}/bench/{os.path.basename(made['path'])}",
            "raw_mib": files["seekable"].stat().st_size / bench.MIB,
            "meta": {"link_mib": link_mib, "link": LINK[0] if link_mib else None}}


def run_round(rep: int, db: str, facts: dict, context: dict, work: Path, samples: dict) -> None:
    pg_restore = bench.pg_tool("pg_restore")
    target = bench.scratch_database(db, KIND)
    files, s3, link_s3 = context["files"], context["s3"], context["link_s3"]

    def restore(store: dict, follow: bool, held: bool = True, frames: bool = True, keys: bool = True) -> dict:
        return restore_rounds.restore_spec(bench.repo_options(store, KIND), target, work, follow=follow, held=held,
                                           frames=frames, keys=keys)
    steps = [("local_seekable_j2", f"{pg_restore} --exit-on-error -j 2 -d \"{target}\" {files['seekable']}"),
             ("seed_gunzip_psql", f"gunzip -c {files['seed']} | psql -X -q -v ON_ERROR_STOP=1 -d \"{target}\" "
                                  "> /dev/null"),
             ("ours_s3_serial", restore(s3, False)),
             ("ours_s3_unheld", restore(s3, True, held=False)),
             ("ours_s3_in_order", restore(s3, True, frames=False)),
             ("ours_s3_keys_last", restore(s3, True, keys=False)),
             ("ours_s3", restore(s3, True))]
    if link_s3 is not None:
        steps += [("download_link", {"op": "download", "s3": link_s3, "key": context["key"]}),
                  ("ours_link_in_order", restore(link_s3, True, frames=False)),
                  ("ours_link_keys_last", restore(link_s3, True, keys=False)),
                  ("ours_link", restore(link_s3, True))]
    restore_rounds.run_steps(SCRIPT, steps, target, facts, work, samples)


def evaluate(samples: dict) -> list:
    med = restore_rounds.median
    local, s3, seed = med(samples, "local_seekable_j2"), med(samples, "ours_s3"), med(samples, "seed_gunzip_psql")
    down, link = med(samples, "download_link"), med(samples, "ours_link")
    checks = []
    if local and s3:
        checks.append((f"restore from S3 <= {TARGETS['s3_vs_local']}x best local restore", s3 / local,
                       s3 / local <= TARGETS["s3_vs_local"]))
    if down and link and local:
        r = link / max(down, local)
        checks.append((f"restore behind the link <= {TARGETS['link_vs_limit']}x max(download alone, "
                       "best local restore)", r, r <= TARGETS["link_vs_limit"]))
    if seed and s3:
        checks.append((f"restore from S3 faster than the seed's `gunzip | psql` by >= {TARGETS['seed_vs_s3']}x",
                       seed / s3, seed / s3 >= TARGETS["seed_vs_s3"]))
    return checks


def markdown(samples: dict, meta: dict) -> tuple[str, list]:
    lines = restore_rounds.header(meta, f"; link {meta['link_mib']} MiB/s"
                                  + (f", {netlink.LINKS[meta['link']]}" if meta.get("link") else ""))
    lines += restore_rounds.table(samples, ROWS, "local_seekable_j2", download=True)
    checks = evaluate(samples)
    lines += ["", "| target | measured | |", "|---|---:|---|"]
    lines += [f"| {name} | {ratio:.2f}x | **{'PASS' if ok else 'MISS'}** |" for name, ratio, ok in checks]
    return "\n".join(lines) + "\n", [{"target": n, "ratio": r, "pass": ok} for n, r, ok in checks]


def main(argv=None) -> int:
    return restore_rounds.main_behind_link(argv, __doc__, KIND, "Restore overlapped with the download", prepare,
                                           run_round, markdown, LINK_MIB,
                                           help_text="MiB/s of the throttled link (0: loopback only)", link=LINK)


if __name__ == "__main__":
    sys.exit(main())
