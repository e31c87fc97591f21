#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a warm one:
#   unit tests, integration tests (real ansible-playbook runs against loopback services),
#   ansible-test sanity, ansible-lint.
# Exits non-zero on the first failing stage. Extra arguments go to pytest.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

stage() { printf '\n=== %s ===\n' "$*"; }

stage "bootstrap"
scripts/bootstrap.sh

stage "unit and integration tests"
.venv/bin/python -m pytest "$@"

stage "ansible-test sanity"
scripts/sanity.sh

stage "ansible-lint"
scripts/lint.sh

stage "all tests passed"
