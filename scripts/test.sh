#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a warm one:
#   unit tests, integration tests (real ansible-playbook runs against loopback services),
#   ansible-test sanity, ansible-lint.
# Exits non-zero on the first failing stage. Extra arguments go to pytest.
#
# TEST_WORKERS=N (N > 1) runs the tests in N pytest-xdist workers (--dist loadgroup; tests
# that must not run at the same time are grouped in tests/integration/conftest.py, SERIAL_GROUPS),
# after a plain collection, and scripts/check_test_count.py then checks that every collected
# test ran. The default, 1, runs them in this process, one after the other.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

stage() { printf '\n=== %s ===\n' "$*"; }
# ansible-core 2.19 imports cryptography's DSA support (ansible/_internal/_ssh/_ssh_agent.py) and
# cryptography deprecates DSA: every ansible command printed a CryptographyDeprecationWarning.
# Only that message is silenced (a UserWarning subclass); the venv's cryptography stays current.
export PYTHONWARNINGS="${PYTHONWARNINGS:+$PYTHONWARNINGS,}ignore:DSA is deprecated:UserWarning"

stage "bootstrap"
scripts/bootstrap.sh

stage "unit and integration tests"
workers="${TEST_WORKERS:-1}"
if [ "$workers" -gt 1 ]; then
    mkdir -p tests/output
    .venv/bin/python -m pytest -p no:xdist --collect-only -q "$@" >tests/output/collected.txt
    .venv/bin/python -m pytest -n "$workers" --dist loadgroup --junitxml=tests/output/pytest.xml "$@"
    .venv/bin/python scripts/check_test_count.py tests/output/collected.txt tests/output/pytest.xml
else
    .venv/bin/python -m pytest "$@"
fi

stage "ansible-test sanity"
scripts/sanity.sh

stage "ansible-lint"
scripts/lint.sh

stage "all tests passed"
