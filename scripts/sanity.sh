#!/usr/bin/env bash
# Run `ansible-test sanity` over the collection, the way CI does on a fresh clone.
#
#   scripts/sanity.sh [extra ansible-test sanity arguments, e.g. --test pylint]
#
# Needs: .venv from scripts/bootstrap.sh (ansible-core brings ansible-test), network access to
# PyPI the first time. Works from any cwd; exits non-zero when any sanity test fails.
#
# How it works:
#   * ansible-test insists on running inside .../ansible_collections/<namespace>/<name>, so the
#     files git knows about (tracked + untracked-but-not-ignored: `git ls-files -co
#     --exclude-standard`) are copied into $WORK/ansible_collections/offsite/backup. A copy,
#     not a symlink: ansible-test resolves the real path, and the repo holds .venv/.cache
#     (with a symlink back to itself) that must stay out of the tests. Without a .git directory
#     in the copy ansible-test lists the files itself (it skips tests/output, __pycache__ ...).
#   * ansible-test runs in host mode (no --docker, no --venv, no --requirements). Every sanity
#     test that needs tools (pylint, pycodestyle, yamllint, voluptuous, antsibull-docs-parser,
#     antsibull-changelog ...) gets its own virtualenv under
#     ~/.ansible/test/venv/sanity.<test>/<py>/<hash>, which ansible-test creates itself with its
#     pinned requirements from PyPI (that is the same with --venv, which only adds one more venv
#     for the controller; --requirements would pip-install ansible-test's pins into .venv).
#     Those venvs are reused by later runs: cold ~2 min, warm ~1 min (mostly pylint).
#   * ansible-test bootstraps pip into each new venv with a get-pip script from
#     ci-files.testing.ansible.com; when that is not cached yet, a stand-in that uses ensurepip
#     + PyPI is put in its cache (see below), so only PyPI has to be reachable.
#   * --python <the venv's version> (3.11 on Debian 12) limits the multi-version tests (compile,
#     import) to the controller Python; other interpreters need not be installed.
#   * Results (junit xml) are copied back to tests/output/sanity/ for CI to archive.
#
# Environment:
#   SANITY_PYTHON    Python version for the multi-version tests (default: the venv's)
#   SANITY_WORKDIR   use this directory instead of a fresh temp dir (kept afterwards)
#   KEEP_WORKDIR=1   keep the temp dir (printed) for inspection
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$REPO/.venv}"
NAMESPACE=offsite
NAME=backup

say() { printf '[sanity] %s\n' "$*"; }

if [ ! -x "$VENV/bin/ansible-test" ]; then
    say "ERROR: $VENV/bin/ansible-test not found; run scripts/bootstrap.sh first" >&2
    exit 2
fi
PYVER="${SANITY_PYTHON:-$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')}"

if [ -n "${SANITY_WORKDIR:-}" ]; then
    WORK="$SANITY_WORKDIR"
    mkdir -p "$WORK"
    KEEP_WORKDIR=1
else
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/offsite-sanity.XXXXXX")"
fi
# shellcheck disable=SC2317  # (called by the EXIT trap)
cleanup() {
    if [ "${KEEP_WORKDIR:-0}" = 1 ]; then
        say "work tree kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

DEST="$WORK/ansible_collections/$NAMESPACE/$NAME"
rm -rf "$DEST"
mkdir -p "$DEST"

# --- copy the collection -----------------------------------------------------------------
# (tracked files deleted from the work tree are still listed by `git ls-files -c`: skip them)
say "copying collection to $DEST"
(
    cd "$REPO"
    git ls-files -z -co --exclude-standard |
        while IFS= read -r -d '' f; do
            if [ -f "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi
        done |
        tar --null -T - -cf - |
        tar -xf - -C "$DEST"
)

# --- pip bootstrap for ansible-test's sanity venvs -------------------------------------------
# ansible-test creates each sanity venv without pip and then runs a get-pip script that it
# downloads from ci-files.testing.ansible.com into ~/.ansible/test/cache/get_pip_<ver>.py.
# That host is not reachable from every CI network (PyPI is). When no get-pip script is cached,
# put a stand-in there that does the same job offline: ensurepip (pip bundled with Python),
# then `pip install <ansible-test's options and pinned pip>` from PyPI.
PIP_VERSION="$("$VENV/bin/python" - "$PYVER" <<'PY' 2>/dev/null || true
import sys, types
from ansible_test._internal.python_requirements import get_venv_packages
print(get_venv_packages(types.SimpleNamespace(version=sys.argv[1]))['pip'])
PY
)"
if [ -n "$PIP_VERSION" ]; then
    GET_PIP="$HOME/.ansible/test/cache/get_pip_${PIP_VERSION//./_}.py"
    if [ ! -s "$GET_PIP" ]; then
        say "writing pip bootstrap stand-in $GET_PIP"
        mkdir -p "$(dirname "$GET_PIP")"
        cat >"$GET_PIP.tmp" <<'PY'
"""Stand-in for get-pip.py, written by offsite.backup scripts/sanity.sh instead of a download from ci-files.testing.ansible.com.

Run by ansible-test as: python quiet_pip.py [pip options] pip==X [--no-setuptools] [--no-wheel]
"""
import subprocess
import sys

args = sys.argv[1:]
no_setuptools = '--no-setuptools' in args
no_wheel = '--no-wheel' in args
args = [a for a in args if a not in ('--no-setuptools', '--no-wheel')]

subprocess.check_call([sys.executable, '-m', 'ensurepip', '--default-pip'], stdout=subprocess.DEVNULL)
subprocess.check_call([sys.executable, '-m', 'pip', 'install', '-q'] + args)
# ensurepip of Python < 3.12 also installs setuptools; get-pip --no-setuptools would not have.
drop = [name for name, flag in (('setuptools', no_setuptools), ('wheel', no_wheel)) if flag]
if drop:
    subprocess.call([sys.executable, '-m', 'pip', 'uninstall', '-q', '-y'] + drop,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
PY
        mv "$GET_PIP.tmp" "$GET_PIP"
    fi
else
    say "WARNING: could not tell which pip ansible-test bootstraps; leaving get-pip to ansible-test"
fi

# --- run ------------------------------------------------------------------------------------
# Tests skipped explicitly (each needs something this project does not have):
SKIP_TESTS=()
# The shellcheck test needs the `shellcheck` program (apt package shellcheck). Without it ansible-test
# would only warn and go on; say so loudly instead, and skip it explicitly.
if ! command -v shellcheck >/dev/null 2>&1; then
    say "WARNING: shellcheck not installed: skipping the shellcheck sanity test (apt-get install shellcheck)"
    SKIP_TESTS+=(shellcheck)
fi
skip_args=()
for t in "${SKIP_TESTS[@]+"${SKIP_TESTS[@]}"}"; do
    skip_args+=(--skip-test "$t")
done

# ansible-test runs from the collection root and finds its own python via the venv's PATH.
export PATH="$VENV/bin:$PATH"
unset ANSIBLE_COLLECTIONS_PATH ANSIBLE_COLLECTIONS_PATHS || true

sanity() { (cd "$DEST" && ansible-test sanity --python "$PYVER" --color no --junit "$@"); }

status=0
sanity "${skip_args[@]+"${skip_args[@]}"}" "$@" || status=$?

# --- keep the results -----------------------------------------------------------------------
if [ -d "$DEST/tests/output" ]; then
    mkdir -p "$REPO/tests/output"
    rm -rf "$REPO/tests/output/sanity"
    cp -r "$DEST/tests/output" "$REPO/tests/output/sanity"
fi

if [ "$status" -ne 0 ]; then
    say "FAILED (exit $status); results in tests/output/sanity/"
else
    say "passed"
fi
exit "$status"
