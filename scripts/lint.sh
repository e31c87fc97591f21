#!/usr/bin/env bash
# Run ansible-lint (profile production, offline) over the collection, and ruff over the Python
# code (plugins/, tests/, scripts/, bench/; rules in ruff.toml), the way CI does.
#
#   scripts/lint.sh [extra ansible-lint arguments or paths]
#
# Needs: .venv from scripts/bootstrap.sh. Works from any cwd, needs no network; exits non-zero
# on any violation. Configuration: .ansible-lint at the repo root (profile, offline, excludes).
#
# How it works:
#   * ansible-lint runs from the repo root, which is the collection root: it finds galaxy.yml
#     and lints the collection metadata, meta/runtime.yml, changelogs/, roles/, playbooks/,
#     demo/ and any other Ansible YAML (see exclude_paths in .ansible-lint).
#   * offline: true in .ansible-lint: no Galaxy, no collection install. ansible-lint then uses
#     $ANSIBLE_HOME as its cache, so we point ANSIBLE_HOME at .cache/ansible-lint (gitignored)
#     instead of ~/.ansible, and ANSIBLE_COLLECTIONS_PATH at .cache/collections, where
#     offsite.backup is a symlink to this checkout (created here when missing, as
#     scripts/bootstrap.sh does): tasks using offsite.backup.* resolve to the working tree,
#     never to an older copy installed in ~/.ansible/collections.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$REPO/.venv}"

say() { printf '[lint] %s\n' "$*"; }

for tool in ansible-lint ruff; do
    if [ ! -x "$VENV/bin/$tool" ]; then
        say "ERROR: $VENV/bin/$tool not found; run scripts/bootstrap.sh first" >&2
        exit 2
    fi
done

COLLECTIONS="$REPO/.cache/collections"
LINK="$COLLECTIONS/ansible_collections/offsite/backup"
if [ ! -L "$LINK" ] || [ "$(readlink "$LINK")" != "$REPO" ]; then
    mkdir -p "$(dirname "$LINK")"
    rm -rf "$LINK"
    ln -s "$REPO" "$LINK"
fi
mkdir -p "$REPO/.cache/ansible-lint"

export ANSIBLE_HOME="$REPO/.cache/ansible-lint"
export ANSIBLE_COLLECTIONS_PATH="$COLLECTIONS"
unset ANSIBLE_COLLECTIONS_PATHS ANSIBLE_CONFIG || true
export PATH="$VENV/bin:$PATH"
# ansible-core 2.19 imports cryptography's DSA support (ansible/_internal/_ssh/_ssh_agent.py) and
# cryptography deprecates DSA: every ansible command printed a CryptographyDeprecationWarning.
# Only that message is silenced (a UserWarning subclass); the venv's cryptography stays current.
export PYTHONWARNINGS="${PYTHONWARNINGS:+$PYTHONWARNINGS,}ignore:DSA is deprecated:UserWarning"
# (ansible-lint warns "PATH altered" when its venv's bin is not first on PATH: it is now.)

cd "$REPO"
status=0
# ansible-lint records every warning itself (whatever PYTHONWARNINGS says): ansible's ssh-agent
# module, which imports DSA, is imported first with that one warning ignored, then the linter runs.
"$VENV/bin/python" -c '
import sys, warnings
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "DSA is deprecated")
    import ansible._internal._ssh._ssh_agent
from ansiblelint.__main__ import _run_cli_entrypoint
sys.argv[0] = "ansible-lint"
sys.exit(_run_cli_entrypoint())
' --nocolor --config-file "$REPO/.ansible-lint" "$@" || status=$?
say "ruff check (rules: ruff.toml)"
"$VENV/bin/ruff" check --no-cache --config "$REPO/ruff.toml" plugins tests scripts bench || status=$?
if [ "$status" -ne 0 ]; then
    say "FAILED (exit $status)"
else
    say "passed"
fi
exit "$status"
