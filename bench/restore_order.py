"""What the order of the table data in an archive costs a restore behind a link (issue 14).

``pg_dump`` writes table data in name order. In the benchmark database ``bench_blobs`` (160 MiB
of incompressible bytes, about 90 % of the stored artifact) comes before ``pgbench_accounts``
(90 % of the rows, about a tenth of the artifact after zstd). Behind a slow link nearly the whole
download is the blob table, and the largest load (the accounts' COPY, then their primary key)
can only start once the download has ended. A local ``pg_restore -j2`` loads both side by side.

This benchmark measures how much of the gap to max(download, local restore) that order
explains, and so what a restore that fetches the archive out of order (independent zstd frames
and a table layout in the manifest, fetched by ranged reads, largest load first: not built)
could gain. It restores, behind the same throttled link, the benchmark database's backup and
the backup of a copy whose largest table (by rows) was renamed so that its data comes first.
Rows, as whole processes side by side in each round:

    local_seekable_j2   pg_restore -j2 of a seekable custom file of the database (reference)
    download_link       the artifact alone, boto3 get_object behind the link
    ours_link           ours from S3 behind the link: pg_dump's order, the blob table first
    ours_link_first     the same restore of the copy: the largest table's data first

    bench/run.sh --order [--scale small] [--repeat N] [--link-mib 40]
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402
import fanout  # noqa: E402  (Throttle)
import restore_rounds  # noqa: E402

SCRIPT = str(Path(__file__).resolve())
KIND = "order"
FIRST = "aaaa_"  # the prefix that sorts the renamed table before every other table of the database
ROWS = [
    ("local_seekable_j2", "local `pg_restore -j2`, seekable custom file (best local restore)"),
    ("download_link", "download alone behind the link (boto3 get_object)"),
    ("ours_link", "ours from S3 behind the link: pg_dump's order (the blob table first)"),
    ("ours_link_first", "ours from S3 behind the link: the largest table's data first (the copy)"),
]
LINK_MIB = []  # --link-mib, read by prepare


def _largest_table(db: str) -> str:
    return bench.psql(db, "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                          "WHERE c.relkind = 'r' AND n.nspname = 'public' ORDER BY c.reltuples DESC LIMIT 1").strip()


def _data_order(pg_restore: str, artifact: str) -> list:
    """The tables whose data an engine artifact holds, in the archive's order (``pg_restore -l``
    reads the table of contents at the start of the stream)."""
    listing = subprocess.run(f"zstd -dcq {artifact} | {pg_restore} -l", shell=True, capture_output=True, text=True,
                             check=False).stdout
    return [line.split()[-2] for line in listing.splitlines() if " TABLE DATA " in line]


def prepare(db: str, work: Path, s3: dict) -> dict:
    """The local reference file, the copy with its largest table first, one engine backup of
    each in S3, and the throttled link."""
    pg_dump, pg_restore = bench.pg_tool("pg_dump"), bench.pg_tool("pg_restore")
    seekable = work / "seekable.dump"
    subprocess.run([pg_dump, "-Fc", "-Z0", "-f", str(seekable), db], env=bench.pg_env(), check=True)
    copy = f"{db}_{KIND}"
    bench.drop_db(copy)
    bench.psql("postgres", f'CREATE DATABASE "{copy}" TEMPLATE "{db}"')
    largest = _largest_table(copy)
    bench.psql(copy, f'ALTER TABLE public."{largest}" RENAME TO "{FIRST}{largest}"')
    # under its old name too, so that the benchmark's checks of a restore read it as they are
    bench.psql(copy, f'CREATE VIEW public."{largest}" AS SELECT * FROM public."{FIRST}{largest}"')
    operations = bench._engine()
    orders, keys = {}, {}
    for name, source in (("orig", db), ("first", copy)):
        made = operations.dump("bench", bench.source_spec(source), str(work / "dest"))["backup"]
        orders[name] = _data_order(pg_restore, made["path"])
        operations.upload(made, [bench.repo_options(s3, f"{KIND}/{name}")])
        keys[name] = f"{KIND}/{name}/bench/{os.path.basename(made['path'])}"
        shutil.rmtree(work / "dest", ignore_errors=True)
    if not orders["first"] or orders["first"][0] != FIRST + largest:
        raise RuntimeError(f"the copy's archive does not begin with {FIRST}{largest}'s data: {orders['first']}")
    bench.log(f"data order: {', '.join(orders['orig'])}; in the copy: {', '.join(orders['first'])}")
    link_mib = LINK_MIB[0]
    proxy = fanout.Throttle(int(s3["endpoint_url"].rsplit(":", 1)[1]), link_mib * bench.MIB, direction="down")
    return {"seekable": seekable, "s3": s3, "proxy": proxy, "copy": copy, "keys": keys,
            "copy_facts": bench.database_facts(copy), "raw_mib": seekable.stat().st_size / bench.MIB,
            "meta": {"link_mib": link_mib, "largest": largest, "orders": orders}}


def run_round(rep: int, db: str, facts: dict, context: dict, work: Path, samples: dict) -> None:
    """The reference, the download alone, then both restores behind the link (alternating)."""
    pg_restore = bench.pg_tool("pg_restore")
    target = bench.scratch_database(db, KIND)
    s3, proxy = context["s3"], context["proxy"]
    linked = dict(s3, endpoint_url=proxy.endpoint_url)

    def restore(name: str) -> dict:
        return restore_rounds.restore_spec(bench.repo_options(linked, f"{KIND}/{name}"), target, work)
    restore_rounds.run_steps(SCRIPT, [
        ("local_seekable_j2", f"{pg_restore} --exit-on-error -j 2 -d \"{target}\" {context['seekable']}"),
        ("download_link", {"op": "download", "s3": linked, "key": context["keys"]["orig"]})], target, facts, work,
        samples)
    runs = [("ours_link", restore("orig"), facts), ("ours_link_first", restore("first"), context["copy_facts"])]
    for name, spec, expected in runs if rep % 2 == 0 else runs[::-1]:
        restore_rounds.run_steps(SCRIPT, [(name, spec)], target, expected, work, samples)


def markdown(samples: dict, meta: dict) -> tuple[str, list]:
    med = restore_rounds.median
    lines = restore_rounds.header(meta, f"; link {meta['link_mib']} MiB/s")
    lines += [f"Data order of the archive: {', '.join(meta['orders']['orig'])}; of the copy: "
              f"{', '.join(meta['orders']['first'])}.", ""]
    lines += restore_rounds.table(samples, ROWS, "local_seekable_j2", download=True)
    local, down = med(samples, "local_seekable_j2"), med(samples, "download_link")
    checks = []
    for key, label in (("ours_link", "pg_dump's order"), ("ours_link_first", "the largest table first")):
        if med(samples, key) and local and down:
            checks.append((f"behind the link, {label}: x max(download alone, best local restore)",
                           med(samples, key) / max(local, down)))
    lines += ["", "| restore behind the link | × max(download alone, best local restore) (target ≤ 1.15) |",
              "|---|---:|"]
    lines += [f"| {name} | {ratio:.2f}x |" for name, ratio in checks]
    return "\n".join(lines) + "\n", [{"what": n, "ratio": r} for n, r in checks]


def main(argv=None) -> int:
    def drop_copy(context):
        if context.get("copy"):
            bench.drop_db(context["copy"])
    return restore_rounds.main_behind_link(argv, __doc__, KIND, "What the archive's data order costs a restore "
                                           "behind a link", prepare, run_round, markdown, LINK_MIB, cleanup=drop_copy)


if __name__ == "__main__":
    sys.exit(main())
