#!/usr/bin/env bash
# The offsite.backup demo, end to end, on this machine. Works on a fresh clone, from any cwd.
#
#   scripts/demo.sh
#
# 1. scripts/bootstrap.sh: apt packages, PostgreSQL on 127.0.0.1:5432, .venv, collection link
# 2. starts throwaway services on loopback (tests/harness/services.py): an S3 endpoint (moto,
#    with real IAM authentication) and an OpenSSH sshd whose SFTP-only port behaves like a
#    Hetzner Storage Box (login user `offsite-demo`, pinned host key)
# 3. creates the PostgreSQL database `offsite_demo` with sample data and an S3 bucket
# 4. runs demo/playbook.yml: 3 dumps -> upload to S3 + Storage Box + a local disk -> list ->
#    retention (preview, then applied) -> restore into `offsite_demo_restored` -> verify ->
#    a short summary
# Everything it created (services, databases, files, the Storage Box directory) is removed on
# exit, also on failure or Ctrl-C. Secrets stay in 0600 files, never on a command line.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PY="$REPO/.venv/bin/python"
SSH_USER=offsite-demo
DATABASES=(offsite_demo offsite_demo_restored)

say() { printf '[demo] %s\n' "$*"; }

t0=$(date +%s.%N)
scripts/bootstrap.sh
t1=$(date +%s.%N)

WORK="$(mktemp -d "${TMPDIR:-/tmp}/offsite-demo.XXXXXX")"
chmod 0700 "$WORK"
STATE="$WORK/services.json"
VARS="$WORK/vars.json"
SFTP_SET_DIR=""

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    say "cleaning up"
    "$PY" - "${DATABASES[@]}" <<'EOF'
import sys
from tests.harness.pg import drop_database
for name in sys.argv[1:]:
    try:
        drop_database(name)
    except Exception as exc:
        print("[demo] could not drop %s: %s" % (name, getattr(exc, "stderr", exc)), file=sys.stderr)
EOF
    if [ -f "$STATE" ]; then
        "$PY" -m tests.harness.services down --state "$STATE"
    fi
    if [ -n "$SFTP_SET_DIR" ]; then
        rm -rf -- "$SFTP_SET_DIR"
    fi
    rm -rf -- "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "starting S3 (moto) and sshd on loopback"
"$PY" -m tests.harness.services up --state "$STATE" --ssh-user "$SSH_USER"

say "creating database offsite_demo with sample data, bucket offsite-demo, $VARS (0600)"
# One Python step: sample database, bucket, and the playbook's variables (with the S3 secret)
# written to a 0600 file for `-e @file`. Prints the Storage Box directory of the set, which
# cleanup removes.
SFTP_SET_DIR="$("$PY" - "$STATE" "$VARS" "$WORK" <<'EOF'
import json, os, shutil, sys
from tests.harness.pg import create_sample_database
from tests.harness.services import MotoS3

state_path, vars_path, work = sys.argv[1:]
state = json.load(open(state_path))
moto, sshd = state["moto"], state["sshd"]

create_sample_database("offsite_demo")
MotoS3.from_state(moto).create_bucket("offsite-demo")

demo_vars = {
    "ansible_python_interpreter": os.path.join(os.getcwd(), ".venv", "bin", "python"),
    "demo_work": work,
    "demo_pg": {"host": "127.0.0.1", "port": 5432, "user": "postgres"},
    "demo_s3": {"type": "s3", "bucket": "offsite-demo", "prefix": "prod",
                "endpoint_url": moto["endpoint_url"], "region": moto["region"],
                "access_key": moto["access_key"], "secret_key": moto["secret_key"]},
    # the SFTP-only port: no shell, no rsync, like a Hetzner Storage Box on port 23
    "demo_storagebox": {"type": "sftp", "host": "127.0.0.1", "port": sshd["sftp_only_port"],
                        "user": sshd["user"], "private_key": sshd["private_key"],
                        "known_hosts": sshd["known_hosts"], "path": "backups"},
    "demo_disk": {"type": "local", "path": os.path.join(work, "usb-disk")},
}
fd = os.open(vars_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as f:
    json.dump(demo_vars, f, indent=2)
set_dir = os.path.join(sshd["home"], "backups", "crm")
shutil.rmtree(set_dir, ignore_errors=True)  # left by an earlier demo that was killed
print(set_dir)
EOF
)"

say "running demo/playbook.yml"
t2=$(date +%s.%N)
ANSIBLE_COLLECTIONS_PATH="$REPO/.cache/collections" \
ANSIBLE_CALLBACK_RESULT_FORMAT=yaml \
ANSIBLE_PIPELINING=true \
ANSIBLE_RETRY_FILES_ENABLED=false \
ANSIBLE_LOCALHOST_WARNING=false \
PYTHONWARNINGS="ignore:DSA is deprecated:UserWarning" \
    "$REPO/.venv/bin/ansible-playbook" -i localhost, -c local -e "@$VARS" "$REPO/demo/playbook.yml"
t3=$(date +%s.%N)

say "$(awk -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" 'BEGIN {
    printf "done in %.1f s: bootstrap %.1f s, services and sample data %.1f s, playbook %.1f s",
        d - a, b - a, c - b, d - c }')"
