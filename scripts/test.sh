#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a warm one:
#   unit tests, integration tests (real ansible-playbook runs against loopback services),
#   ansible-test sanity, ansible-lint.
# Exits non-zero when any stage fails. Extra arguments go to pytest.
#
# pytest runs the tests in TEST_WORKERS pytest-xdist workers (default 5: the integration tests
# mostly wait for servers and subprocesses; --dist loadgroup; tests that must not run at the same
# time are grouped in tests/integration/conftest.py, SERIAL_GROUPS), after a plain collection,
# and scripts/check_test_count.py then checks that every collected test ran. TEST_WORKERS=1 runs
# them in this process, one after the other.
#
# ansible-test sanity and ansible-lint compute while the tests wait: they run in the background
# (one after the other) during pytest, their output kept in tests/output/{sanity,lint}.log and
# printed after pytest's; TEST_CONCURRENT=0 runs them after pytest instead. Every stage runs to
# the end; the run fails when any of them failed. The last lines give each stage's wall-clock
# and CPU seconds (user + system of its processes), and the whole machine's busy and idle CPU.
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO" || exit 2

stage() { printf '\n=== %s ===\n' "$*"; }
# ansible-core 2.19 imports cryptography's DSA support (ansible/_internal/_ssh/_ssh_agent.py) and
# cryptography deprecates DSA: every ansible command printed a CryptographyDeprecationWarning.
# Only that message is silenced (a UserWarning subclass); the venv's cryptography stays current.
export PYTHONWARNINGS="${PYTHONWARNINGS:+$PYTHONWARNINGS,}ignore:DSA is deprecated:UserWarning"
# The engine runs as hundreds of short processes (the offsite-backup command, the fault-injection
# driver, archive_command): each compiled it from source again (~0.3 CPU s) where the
# environment forbids writing bytecode. The __pycache__ directories are ignored by git and by
# sanity.sh's copy.
unset PYTHONDONTWRITEBYTECODE

OUT="$REPO/tests/output"
mkdir -p "$OUT"
rm -f "$OUT"/stage-*.times "$OUT"/stage-*.cpu

# timed NAME COMMAND...: runs COMMAND, writes "NAME wall-seconds cpu-seconds status" to
# $OUT/stage-NAME.times (CPU: bash's `times` of the subshell, i.e. every process it waited for)
timed() {
    local name="$1"
    shift
    (
        started=$SECONDS
        "$@"
        status=$?
        # the second line of `times`: the children's user and system time, "XmY.YYYs XmY.YYYs"
        # (written by this shell: in a $(...) subshell it would count that subshell's children)
        times >"$OUT/stage-$name.cpu"
        cpu="$(sed -n 2p "$OUT/stage-$name.cpu" | awk '{ for (i = 1; i <= 2; i++) { split($i, t, /[ms]/); s += t[1] * 60 + t[2] } }
                                                      END { printf "%.1f", s }')"
        echo "$name $((SECONDS - started)) $cpu $status" >"$OUT/stage-$name.times"
        exit "$status"
    )
}

# sanity and lint, one after the other; the output of each in its log file
checks() {
    timed sanity scripts/sanity.sh >"$OUT/sanity.log" 2>&1
    timed lint scripts/lint.sh >"$OUT/lint.log" 2>&1
}
show_checks() {
    stage "ansible-test sanity (log: tests/output/sanity.log)"
    cat "$OUT/sanity.log"
    stage "ansible-lint (log: tests/output/lint.log)"
    cat "$OUT/lint.log"
}

# busy and idle CPU of the whole machine, in clock ticks (/proc/stat: user nice system idle
# iowait irq softirq steal): the servers (PostgreSQL, moto, sshd) and the kernel too
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat; }
read -r busy_before idle_before < <(machine_ticks)
started_at=$SECONDS

stage "bootstrap"
timed bootstrap scripts/bootstrap.sh || exit 1

checks_pid=""
# shellcheck disable=SC2317  # (called by the EXIT trap)
stop_checks() { if [ -n "$checks_pid" ]; then kill -- "-$checks_pid" 2>/dev/null || true; fi; }
if [ "${TEST_CONCURRENT:-1}" != 0 ]; then
    # a process group of its own, so that an interrupted run stops it whole
    set -m
    checks &
    checks_pid=$!
    set +m
    trap stop_checks EXIT
    echo "ansible-test sanity and ansible-lint run in the background while pytest runs"
fi

stage "unit and integration tests"
pytest_tests() {
    local workers="${TEST_WORKERS:-5}"
    if [ "$workers" -gt 1 ]; then
        .venv/bin/python -m pytest -p no:xdist --collect-only -q "$@" >"$OUT/collected.txt" || return
        .venv/bin/python -m pytest -n "$workers" --dist loadgroup --durations=50 --junitxml="$OUT/pytest.xml" "$@" || return
        .venv/bin/python scripts/check_test_count.py "$OUT/collected.txt" "$OUT/pytest.xml"
    else
        .venv/bin/python -m pytest --durations=50 "$@"
    fi
}
timed pytest pytest_tests "$@"

if [ -n "$checks_pid" ]; then
    wait "$checks_pid"
    checks_pid=""
else
    checks
fi
show_checks

stage "stages (wall-clock s, CPU s, exit status)"
failed=0
for name in bootstrap pytest sanity lint; do
    read -r _ wall cpu status <"$OUT/stage-$name.times" || { echo "$name: did not finish"; failed=1; continue; }
    printf '%-10s %5d s wall %7s CPU s   exit %d\n' "$name" "$wall" "$cpu" "$status"
    [ "$status" -eq 0 ] || failed=1
done
read -r busy_after idle_after < <(machine_ticks)
# On a 2-core machine the run is CPU-bound: its wall-clock time is close to busy / cores.
awk -v busy=$((busy_after - busy_before)) -v idle=$((idle_after - idle_before)) -v hz="$(getconf CLK_TCK)" \
    -v wall=$((SECONDS - started_at)) -v cores="$(nproc)" \
    'BEGIN { printf "%-10s %5d s wall %7.1f CPU s busy, %.1f idle, on %d cores (every process)\n",
                    "machine", wall, busy / hz, idle / hz, cores }'
uptime
if [ "$failed" -ne 0 ]; then
    stage "FAILED"
    exit 1
fi
stage "all tests passed"
