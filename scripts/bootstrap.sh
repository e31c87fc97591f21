#!/usr/bin/env bash
# Set up everything the tests and the demo need on a fresh machine.
# Idempotent and quick when everything is already in place. Works from any cwd.
#
#   scripts/bootstrap.sh
#
# Steps:
#   1. apt packages (only missing ones; apt-get update only when something is missing)
#   2. PostgreSQL running on 127.0.0.1:5432 (trust auth for postgres)
#   3. .venv at the repo root with requirements-dev.txt (re-installed only when the
#      requirements files change; stamp: .venv/.requirements.sha256)
#   4. .cache/collections/ansible_collections/offsite/backup -> repo root (symlink)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
APT_PACKAGES=(openssh-server rsync restic age zstd postgresql-client shellcheck chromium prometheus-pushgateway cron prometheus faketime)
export DEBIAN_FRONTEND=noninteractive

say() { printf '[bootstrap] %s\n' "$*"; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

APT_UPDATED=0
apt_install() {
    # apt_install PKG... : installs the given packages, running apt-get update once.
    if [ "$APT_UPDATED" -eq 0 ]; then
        say "apt-get update"
        $SUDO apt-get update -qq
        APT_UPDATED=1
    fi
    say "apt-get install $*"
    $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- 1. apt packages -------------------------------------------------------------------
missing=()
for p in "${APT_PACKAGES[@]}"; do
    pkg_installed "$p" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}"
else
    say "apt packages: all present"
fi

# --- 2. PostgreSQL on 127.0.0.1:5432 ---------------------------------------------------
pg_ready() { pg_isready -q -h 127.0.0.1 -p 5432 >/dev/null 2>&1; }

pg_wait() {
    for _ in $(seq 1 60); do
        pg_ready && return 0
        sleep 0.5
    done
    return 1
}

if pg_ready; then
    say "postgresql: running on 127.0.0.1:5432"
else
    installed_pg=0
    if [ -z "$(ls /etc/postgresql 2>/dev/null || true)" ]; then
        apt_install postgresql
        installed_pg=1
    fi
    PGVER="$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n1)"
    if [ ! -d "/etc/postgresql/$PGVER/main" ]; then
        say "creating cluster $PGVER/main"
        $SUDO pg_createcluster "$PGVER" main >/dev/null
        installed_pg=1
    fi
    if [ "$installed_pg" -eq 1 ]; then
        # We created the cluster: make the postgres user reachable without a password on
        # loopback TCP and the local socket, as the tests expect.
        HBA="/etc/postgresql/$PGVER/main/pg_hba.conf"
        if ! grep -q '^# offsite.backup bootstrap' "$HBA"; then
            say "configuring trust auth for 127.0.0.1 in $HBA"
            tmp="$(mktemp)"
            {
                echo '# offsite.backup bootstrap: trust on loopback for tests'
                echo 'local   all   all                 trust'
                echo 'host    all   all   127.0.0.1/32  trust'
                echo 'host    all   all   ::1/128       trust'
                cat "$HBA"
            } >"$tmp"
            $SUDO install -o postgres -g postgres -m 0640 "$tmp" "$HBA"
            rm -f "$tmp"
        fi
        CONF="/etc/postgresql/$PGVER/main/postgresql.conf"
        if ! grep -qE "^port *= *5432" "$CONF"; then
            say "setting port 5432 in $CONF"
            $SUDO sed -i -E 's/^#?port *=.*/port = 5432/' "$CONF"
        fi
    fi
    say "starting postgresql $PGVER/main"
    # (fails harmlessly with "already running" when the server was only starting up)
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$PGVER" main start || true
    if ! pg_wait; then
        say "ERROR: postgresql did not become ready on 127.0.0.1:5432" >&2
        pg_lsclusters >&2 || true
        tail -n 20 "/var/log/postgresql/postgresql-$PGVER-main.log" >&2 || true
        exit 1
    fi
    say "postgresql: running on 127.0.0.1:5432"
fi

# --- 3. virtualenv -----------------------------------------------------------------------
VENV="$REPO/.venv"
STAMP="$VENV/.requirements.sha256"
if [ ! -x "$VENV/bin/python" ]; then
    say "creating venv $VENV"
    "$PYTHON" -m venv "$VENV"
fi
want="$(cd "$REPO" && cat requirements-dev.txt requirements.txt | sha256sum | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [ "$want" != "$have" ]; then
    say "pip install -r requirements-dev.txt (this takes a while the first time)"
    # (the machine's pip config lists local indexes that may not exist: drop those warnings)
    (cd "$REPO" && "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
        -r requirements-dev.txt) \
        2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
    echo "$want" >"$STAMP"
else
    say "venv: requirements up to date"
fi

# --- 4. collection tree for ansible --------------------------------------------------------
COLL_PARENT="$REPO/.cache/collections/ansible_collections/offsite"
LINK="$COLL_PARENT/backup"
mkdir -p "$COLL_PARENT"
if [ -L "$LINK" ] && [ "$(readlink "$LINK")" = "$REPO" ]; then
    say "collection link: present"
else
    rm -rf "$LINK"
    ln -s "$REPO" "$LINK"
    say "collection link: $LINK -> $REPO"
fi

# --- 5. awx.awx, for linting and checking the AWX definitions (extensions/awx) -------------
# Galaxy is out of reach; the `ansible` package on PyPI carries awx.awx. Only that collection is
# unpacked from its wheel (pinned, so lint results do not drift).
AWX_ANSIBLE_VERSION="11.13.0"
AWX_DIR="$REPO/.cache/collections/ansible_collections/awx/awx"
AWX_STAMP="$AWX_DIR/.from-ansible-$AWX_ANSIBLE_VERSION"
if [ -f "$AWX_STAMP" ]; then
    say "awx.awx: present"
else
    say "awx.awx: unpacking it from the ansible $AWX_ANSIBLE_VERSION wheel"
    wheels="$REPO/.cache/wheels"
    mkdir -p "$wheels"
    "$VENV/bin/python" -m pip download -q --disable-pip-version-check --no-deps -d "$wheels" \
        "ansible==$AWX_ANSIBLE_VERSION" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
    rm -rf "$AWX_DIR"
    "$VENV/bin/python" - "$wheels/ansible-$AWX_ANSIBLE_VERSION-py3-none-any.whl" "$REPO/.cache/collections" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    wheel.extractall(sys.argv[2], [n for n in wheel.namelist() if n.startswith('ansible_collections/awx/awx/')])
PY
    touch "$AWX_STAMP"
fi

say "done"
