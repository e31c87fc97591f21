#!/usr/bin/env bash
# offsite.backup benchmark: bootstrap, loopback S3 (moto via the test harness), run, stop.
#
#   bench/run.sh                   # full: ~1 GB database (built once, then reused), 3 rounds
#   bench/run.sh --scale small     # ~100 MB, one round: smoke test of the script
#   bench/run.sh --quick           # only the rows the targets need (no parameter sweeps)
#   bench/run.sh --dr [--scale small]   # DR drill and rebuild times (bench/dr_bench.py)
#   bench/run.sh --rsync           # rsync snapshots of a 10,000-file tree, 1 % changed (bench_rsync.py)
#   bench/run.sh --scheduled [--scale small]   # the scheduled job, one pass (bench/scheduled_run.py)
#   bench/run.sh --offsets [--scale small]     # restore with/without TOC data offsets (bench/restore_offsets.py)
#   bench/run.sh --overlap [--scale small]     # restore overlapped with the download, targets PASS/MISS
#                                              # (bench/restore_overlap.py)
#   bench/run.sh --order [--scale small]       # restore behind a link: pg_dump's data order against the
#                                              # largest table's data first (bench/restore_order.py)
#   bench/run.sh --scale-check     # dump + upload + restore at ~1 GB and ~10 GB: memory flat, time
#                                  # linear (bench/scale_check.py; builds a 10 GB database once)
#   bench/run.sh --pitr [--scale small] [--wal-mib N]   # PITR: base backup to S3 and point-in-time
#                                              # restore from S3 against pg_basebackup / tar x + cp replay
#                                              # (bench/pitr.py); --pitr-memory: peak RSS of wal-push per
#                                              # repository type (bench/wal_push_memory.py)
#
# Other arguments go to bench/bench.py (see its --help). Results: Markdown on stdout, JSON and
# Markdown in bench/results/ (git-ignored).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$REPO/.venv/bin/python"

if [ "${1:-}" = "--rsync" ]; then  # rsync snapshots: needs only the harness's sshd
    shift
    "$REPO/scripts/bootstrap.sh" >&2
    exec "$PY" "$REPO/bench/bench_rsync.py" "$@"
fi

"$REPO/scripts/bootstrap.sh" >&2

if [ "${1:-}" = "--pitr-memory" ]; then  # starts its own cluster and moto
    shift
    exec "$PY" "$REPO/bench/wal_push_memory.py" "$@"
fi

mkdir -p "$REPO/bench/results"
STATE="$REPO/bench/results/.services-$$.json"
stop_services() {
    (cd "$REPO" && "$PY" -m tests.harness.services down --state "$STATE") || true
}
trap stop_services EXIT
(cd "$REPO" && "$PY" -m tests.harness.services up --state "$STATE" --services moto)

SCRIPT="$REPO/bench/bench.py"
if [ "${1:-}" = "--dr" ]; then
    shift
    SCRIPT="$REPO/bench/dr_bench.py"
elif [ "${1:-}" = "--scheduled" ]; then
    shift
    SCRIPT="$REPO/bench/scheduled_run.py"
elif [ "${1:-}" = "--offsets" ]; then
    shift
    SCRIPT="$REPO/bench/restore_offsets.py"
elif [ "${1:-}" = "--overlap" ]; then
    shift
    SCRIPT="$REPO/bench/restore_overlap.py"
elif [ "${1:-}" = "--order" ]; then
    shift
    SCRIPT="$REPO/bench/restore_order.py"
elif [ "${1:-}" = "--scale-check" ]; then
    shift
    SCRIPT="$REPO/bench/scale_check.py"
elif [ "${1:-}" = "--pitr" ]; then
    shift
    SCRIPT="$REPO/bench/pitr.py"
fi
"$PY" "$SCRIPT" --services-state "$STATE" "$@"
