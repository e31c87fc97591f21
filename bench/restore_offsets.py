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
off in the benchmark's own child process (nothing in the product can switch it off). The
rounds, the child and the table are ``restore_rounds.py``'s, shared with ``restore_overlap.py``.

    bench/run.sh --offsets [--scale small] [--repeat N]
    .venv/bin/python bench/restore_offsets.py --services-state STATE [--scale small]
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402
import restore_rounds  # noqa: E402

SCRIPT = str(Path(__file__).resolve())
KIND = "offsets"
ROWS = [
    ("local_seekable_j2", "local `pg_restore -j2`, seekable file (reference)"),
    ("local_pipe_j2", "local `pg_restore -j2`, the pipe's file (no offsets)"),
    ("ours_local_before", "ours from a local repository, jobs 2, offsets off (before)"),
    ("ours_local_after", "ours from a local repository, jobs 2, offsets patched (after)"),
    ("ours_s3_before", "ours from S3 (moto), jobs 2, offsets off (before)"),
    ("ours_s3_after", "ours from S3 (moto), jobs 2, offsets patched (after)"),
]


def prepare(db: str, work: Path, s3: dict) -> dict:
    """The two local files and one engine backup (default dump) in a local repository and in S3."""
    pg_dump = bench.pg_tool("pg_dump")
    files = {"seekable": work / "seekable.dump", "pipe": work / "pipe.dump"}
    subprocess.run([pg_dump, "-Fc", "-Z0", "-f", str(files["seekable"]), db], env=bench.pg_env(), check=True)
    subprocess.run(f"{pg_dump} -Fc -Z0 {db} | cat > {files['pipe']}", shell=True, env=bench.pg_env(), check=True)
    operations = bench._engine()
    made = operations.dump("bench", bench.source_spec(db), str(work / "dest"))["backup"]
    (work / "repo").mkdir(exist_ok=True)
    repos = {"local": {"type": "local", "path": str(work / "repo")}, "s3": bench.repo_options(s3, KIND)}
    operations.upload(made, [repos["local"], repos["s3"]])
    shutil.rmtree(work / "dest", ignore_errors=True)
    return {"files": files, "repos": repos, "raw_mib": files["pipe"].stat().st_size / bench.MIB}


def run_round(rep: int, db: str, facts: dict, context: dict, work: Path, samples: dict) -> None:
    pg_restore = bench.pg_tool("pg_restore")
    target = bench.scratch_database(db, KIND)
    files = context["files"]
    steps = [("local_seekable_j2", f"{pg_restore} --exit-on-error -j 2 -d \"{target}\" {files['seekable']}"),
             ("local_pipe_j2", f"{pg_restore} --exit-on-error -j 2 -d \"{target}\" {files['pipe']}")]
    for where in ("local", "s3"):
        for offsets in (False, True):
            steps.append((f"ours_{where}_{'after' if offsets else 'before'}",
                          restore_rounds.restore_spec(context["repos"][where], target, work, offsets=offsets)))
    restore_rounds.run_steps(SCRIPT, steps, target, facts, work, samples)


def markdown(samples: dict, meta: dict) -> tuple[str, list]:
    med = restore_rounds.median
    lines = restore_rounds.header(meta) + restore_rounds.table(samples, ROWS, "local_seekable_j2")
    for where in ("local", "s3"):
        b, a = med(samples, f"ours_{where}_before"), med(samples, f"ours_{where}_after")
        if b and a:
            bc, ac = med(samples, f"ours_{where}_before", "cpu_seconds"), med(samples, f"ours_{where}_after", "cpu_seconds")
            lines += ["", f"{where}: after / before = {a / b:.2f} wall, {ac / bc:.2f} CPU "
                          f"({b:.2f} -> {a:.2f} s, {bc:.2f} -> {ac:.2f} CPU s)"]
    checks = []
    if med(samples, "ours_s3_after"):
        ratio = med(samples, "ours_s3_after") / med(samples, "local_seekable_j2")
        checks.append({"target": "restore from S3 <= 1.15x local pg_restore -j2 of a seekable file",
                       "ratio": ratio, "pass": ratio <= 1.15})
        lines += ["", f"target: restore from S3 <= 1.15x local pg_restore -j2 of a seekable file: "
                      f"{ratio:.2f}x {'PASS' if ratio <= 1.15 else 'MISS'}"]
    return "\n".join(lines) + "\n", checks


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_child":
        return restore_rounds.child_main(argv[1], argv[2])
    args = restore_rounds.arguments(__doc__, 3).parse_args(argv)
    return restore_rounds.run(args, KIND, "Restore with data offsets", prepare, run_round, markdown)


if __name__ == "__main__":
    sys.exit(main())
