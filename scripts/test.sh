#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a warm one:
#   unit tests, integration tests (real ansible-playbook runs against loopback services),
#   ansible-test sanity, ansible-lint.
# Exits non-zero on the first failing stage. Extra arguments go to pytest.
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
.venv/bin/python -m pytest "$@"

stage "ansible-test sanity"
scripts/sanity.sh

stage "ansible-lint"
scripts/lint.sh

stage "all tests passed"
