#!/usr/bin/env bash
# Set up everything the tests and the demo need on a fresh machine.
# Idempotent and quick when everything is already in place. Works from any cwd.
#
#   scripts/bootstrap.sh [step...]       (default: every step, in this order)
#
# Steps:
#   apt         apt packages (only missing ones; apt-get update only when something is missing)
#   postgresql  PostgreSQL running on 127.0.0.1:5432 (trust auth for postgres)
#   mariadb     MariaDB running on 127.0.0.1:3306, root without a password over TCP
#   redis       Redis running on 127.0.0.1:6379
#   venv        .venv at the repo root with requirements-dev.txt (re-installed only when the
#               requirements files change; stamp: .venv/.requirements.sha256). Where there is no
#               .venv yet (a fresh clone), .venv becomes a link to a virtualenv kept for this
#               machine, <cache>/venv-<hash of the requirements files and the Python> (<cache>:
#               /var/cache/offsite-backup-dev for root, else ~/.cache/offsite-backup), built once
#               and shared by every clone with the same requirements; it is checked (python runs,
#               `pip freeze` as recorded when it was built) before each use and rebuilt when that
#               fails. OFFSITE_VENV_CACHE=0: a .venv of the clone's own.
#   controller  .cache/controller-venv: where the tests' ansible-playbook and its modules run
#               (tests/harness/ansible.py). The distribution's Python (/usr/bin/python3, or
#               OFFSITE_CONTROLLER_PYTHON) when it is another one than the venv's, with ansible-core
#               and the engine's requirements (requirements.txt, prometheus_client for its monitor
#               command) at the venv's versions: Debian's
#               build is optimised (PGO, LTO) where pyenv's is not, and ansible-playbook runs are
#               most of the tests' CPU (a one-task run: controller 20%, module 35% less CPU).
#               It is also the Python our users' Debian nodes run the modules with (3.11.2: no
#               tarfile extraction filter, the engine's own checks alone). It keeps the code that
#               its modules compile from their AnsiballZ zips (tests/harness/zip_bytecode.py: 0.45
#               CPU s less per task) and the parsed routing metadata of ansible-core
#               (routing_cache.py: 0.1 CPU s less per run). The tests' offsite-backup command
#               runs on it too (tests/integration/helpers.py cli); the tests themselves stay on the
#               venv's Python, and the PITR clusters' archive/restore commands on the system
#               python3 -S with the venv's site-packages (tests/harness/walcluster.py, as the
#               postgres user runs them). Otherwise a link to .venv. Kept for the machine like the venv.
#   collection  .cache/collections/ansible_collections/offsite/backup -> repo root (symlink)
#   awx         awx.awx, for linting and checking the AWX definitions
#   s3rver      s3rver (npm) in .cache/npm: the second S3 implementation of the repository
#               contract suite (tests/integration/test_repository_contract.py)
#
# A server that already answers is left alone. Where bootstrap starts MariaDB and Redis itself
# (no systemd needed) can be moved, e.g. to prove the start on free ports (tests/integration/
# test_bootstrap.py): OFFSITE_MARIADB_PORT, OFFSITE_MARIADB_DATADIR (default: the package's
# /var/lib/mysql), OFFSITE_MARIADB_SOCKET, OFFSITE_REDIS_PORT, OFFSITE_REDIS_DIR.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
APT_PACKAGES=(openssh-server rsync restic age zstd postgresql-client awscli jq shellcheck chromium prometheus-pushgateway cron prometheus faketime)
export DEBIAN_FRONTEND=noninteractive

say() { printf '[bootstrap] %s\n' "$*"; }

VENV="$REPO/.venv"
STEPS=" ${*:-apt postgresql mariadb redis venv controller collection awx s3rver} "
step() { [[ "$STEPS" == *" $1 "* ]]; }

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
if step apt; then
    missing=()
    for p in "${APT_PACKAGES[@]}"; do
        pkg_installed "$p" || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        apt_install "${missing[@]}"
    else
        say "apt packages: all present"
    fi
fi

# --- 2. PostgreSQL on 127.0.0.1:5432 ---------------------------------------------------
if step postgresql; then
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
fi

# --- 3. MariaDB on 127.0.0.1:3306, root without a password over TCP ------------------------
MARIADB_PORT="${OFFSITE_MARIADB_PORT:-3306}"
MARIADB_DATADIR="${OFFSITE_MARIADB_DATADIR:-/var/lib/mysql}"
MARIADB_SOCKET="${OFFSITE_MARIADB_SOCKET:-/run/mysqld/mysqld.sock}"
mariadb_ready() {   # what the tests do: root, no password, TCP
    mariadb-admin --no-defaults --protocol=tcp -h 127.0.0.1 -P "$MARIADB_PORT" -u root ping >/dev/null 2>&1
}
mariadb_local() {   # root over the socket: Debian's root logs in there by unix_socket authentication
    $SUDO mariadb-admin --no-defaults --socket="$MARIADB_SOCKET" -u root ping >/dev/null 2>&1
}

if step mariadb; then
    if mariadb_ready; then
        say "mariadb: running on 127.0.0.1:$MARIADB_PORT"
    else
        pkg_installed mariadb-server || apt_install mariadb-server
        if ! mariadb_local; then   # (the package may have started its own server)
            $SUDO install -d -o mysql -g mysql "$MARIADB_DATADIR" "$(dirname "$MARIADB_SOCKET")"
            if [ ! -d "$MARIADB_DATADIR/mysql" ]; then
                say "mariadb: creating the data directory $MARIADB_DATADIR"
                $SUDO mariadb-install-db --no-defaults --user=mysql --datadir="$MARIADB_DATADIR" \
                    --auth-root-authentication-method=normal --skip-test-db >/dev/null
            fi
            say "starting mariadb on 127.0.0.1:$MARIADB_PORT"
            $SUDO setsid mariadbd --no-defaults --user=mysql --datadir="$MARIADB_DATADIR" \
                --port="$MARIADB_PORT" --bind-address=127.0.0.1 --skip-name-resolve --socket="$MARIADB_SOCKET" \
                --pid-file="$MARIADB_DATADIR/mariadbd.pid" --log-error="$MARIADB_DATADIR/mariadbd.err" \
                --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \
                </dev/null >/dev/null 2>&1 &
            for _ in $(seq 1 60); do mariadb_local && break; sleep 0.5; done
        fi
        # root without a password over loopback TCP, as the tests connect (the server listens on
        # 127.0.0.1 only); root@localhost keeps the socket login of Debian's package
        $SUDO mariadb --no-defaults --socket="$MARIADB_SOCKET" -u root -e "
            CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
            ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY '';
            GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
            ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('');" \
            || true
        if ! mariadb_ready; then
            say "ERROR: mariadb did not become ready on 127.0.0.1:$MARIADB_PORT" >&2
            tail -n 20 "$MARIADB_DATADIR/mariadbd.err" >&2 || true
            exit 1
        fi
        say "mariadb: running on 127.0.0.1:$MARIADB_PORT"
    fi
fi

# --- 4. Redis on 127.0.0.1:6379 ----------------------------------------------------------------
REDIS_PORT="${OFFSITE_REDIS_PORT:-6379}"
REDIS_DIR="${OFFSITE_REDIS_DIR:-/var/lib/redis}"
redis_ready() { [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = "PONG" ]; }

if step redis; then
    if redis_ready; then
        say "redis: running on 127.0.0.1:$REDIS_PORT"
    else
        pkg_installed redis-server || apt_install redis-server
        if ! redis_ready; then     # (the package may have started its own server)
            say "starting redis on 127.0.0.1:$REDIS_PORT"
            $SUDO mkdir -p "$REDIS_DIR"
            $SUDO redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize yes --dir "$REDIS_DIR" \
                --pidfile "$REDIS_DIR/redis-server.pid" --logfile "$REDIS_DIR/redis-server.log"
            for _ in $(seq 1 40); do redis_ready && break; sleep 0.25; done
        fi
        if ! redis_ready; then
            say "ERROR: redis did not become ready on 127.0.0.1:$REDIS_PORT" >&2
            tail -n 20 "$REDIS_DIR/redis-server.log" >&2 || true
            exit 1
        fi
        say "redis: running on 127.0.0.1:$REDIS_PORT"
    fi
fi

# --- 5. virtualenv -----------------------------------------------------------------------
# venv_install DIR: DIR is a virtualenv with requirements-dev.txt installed (stamp: its
# .requirements.sha256, the hash of the requirements files)
requirements_hash() { (cd "$REPO" && cat requirements-dev.txt requirements.txt | sha256sum | cut -d' ' -f1); }
venv_install() {
    local dir="$1" want have
    if [ ! -x "$dir/bin/python" ]; then
        say "creating venv $dir"
        "$PYTHON" -m venv "$dir"
    fi
    want="$(requirements_hash)"
    have="$(cat "$dir/.requirements.sha256" 2>/dev/null || true)"
    if [ "$want" != "$have" ]; then
        say "pip install -r requirements-dev.txt (this takes a while the first time)"
        # (the machine's pip config lists local indexes that may not exist: drop those warnings)
        (cd "$REPO" && "$dir/bin/python" -m pip install -q --disable-pip-version-check \
            -r requirements-dev.txt) \
            2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
        echo "$want" >"$dir/.requirements.sha256"
    else
        say "venv: requirements up to date"
    fi
}
venv_freeze() { "$1/bin/python" -m pip freeze --all --disable-pip-version-check 2>/dev/null | sha256sum | cut -d' ' -f1; }

# the machine's virtualenvs. Root's is /var/cache, not ~/.cache: the tests run the engine as the
# postgres user too (archive_command, restore_command of the PITR clusters they create), which
# cannot enter /root.
if [ "$(id -u)" -eq 0 ]; then
    CACHE_DIR="${OFFSITE_CACHE_DIR:-/var/cache/offsite-backup-dev}"
else
    CACHE_DIR="${OFFSITE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/offsite-backup}"
fi

if step venv; then
    own_venv=0      # the clone's own virtualenv, or one it links to (a developer's), or no cache wanted
    if [ "${OFFSITE_VENV_CACHE:-1}" = 0 ]; then
        own_venv=1
    elif [ -e "$VENV" ] || [ -L "$VENV" ]; then
        [[ "$(readlink "$VENV" 2>/dev/null)" == "$CACHE_DIR"/venv-* ]] || own_venv=1
    fi
    if [ "$own_venv" = 1 ]; then
        venv_install "$VENV"
    else
        # a fresh clone: the machine's virtualenv for these requirements and this Python,
        # built once (under a lock: clones bootstrapping at the same time wait for each other)
        python_id="$("$PYTHON" -c 'import sys; print(sys.executable, sys.version)')"
        key="$( { requirements_hash; echo "$python_id"; } | sha256sum | cut -c1-16)"
        cached="$CACHE_DIR/venv-$key"
        install -d -m 0755 "$CACHE_DIR"
        exec {lock}>"$cached.lock"
        flock "$lock"
        # built completely (the freeze stamp is written last) and unchanged since: reuse it
        if [ -f "$cached/.freeze.sha256" ] && "$cached/bin/python" -c 'import ansible, pytest' 2>/dev/null \
                && [ "$(venv_freeze "$cached")" = "$(cat "$cached/.freeze.sha256")" ]; then
            say "venv: $cached (the machine's, for these requirements)"
        else
            [ -e "$cached" ] && say "venv: $cached is incomplete or changed: building it again"
            rm -rf "$cached"
            venv_install "$cached"
            venv_freeze "$cached" >"$cached/.freeze.sha256"
        fi
        flock -u "$lock"
        exec {lock}>&-
        if [ "$(readlink "$VENV" 2>/dev/null)" != "$cached" ]; then
            rm -f "$VENV"
            ln -s "$cached" "$VENV"
            say "venv: $VENV -> $cached"
        fi
    fi
fi

# --- 5b. the tests' ansible controller ------------------------------------------------------
if step controller; then
    CONTROLLER_LINK="$REPO/.cache/controller-venv"
    mkdir -p "$REPO/.cache"
    controller_python="${OFFSITE_CONTROLLER_PYTHON:-/usr/bin/python3}"
    venv_python="$(readlink -f "$VENV/bin/python")"
    target="$VENV"
    # (ansible-core 2.19 needs Python >= 3.11 on the controller, and a venv module)
    if [ -x "$controller_python" ] && [ "$(readlink -f "$controller_python")" != "$venv_python" ] \
            && "$controller_python" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
            && [ "$("$controller_python" -c 'import sys; print(sys.version_info[:2])')" \
                 = "$("$VENV/bin/python" -c 'import sys; print(sys.version_info[:2])')" ]; then
        # ansible-core and the engine's requirements, each package at the version the venv has
        pins="$("$VENV/bin/python" -m pip freeze --disable-pip-version-check 2>/dev/null | grep -E '^[A-Za-z0-9_.-]+==' | sort -f)"
        ansible_core="$(grep -i '^ansible-core==' <<<"$pins")"
        key="$( { echo "$pins"; cat "$REPO/requirements.txt"; echo prometheus_client; "$controller_python" -c 'import sys; print(sys.executable, sys.version)'; } \
                | sha256sum | cut -c1-16)"
        cached="$CACHE_DIR/controller-$key"
        install -d -m 0755 "$CACHE_DIR"
        exec {lock}>"$cached.lock"
        flock "$lock"
        if [ -f "$cached/.done" ] && "$cached/bin/ansible-playbook" --version >/dev/null 2>&1; then
            say "controller: $cached (the distribution's Python)"
        else
            rm -rf "$cached"
            say "controller: creating $cached with $controller_python"
            "$controller_python" -m venv "$cached"
            # (prometheus_client: the engine's monitor command, which the client role installs
            # on the nodes that run it)
            "$cached/bin/python" -m pip install -q --disable-pip-version-check "$ansible_core" \
                -r "$REPO/requirements.txt" prometheus_client -c <(echo "$pins") \
                2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
            touch "$cached/.done"
        fi
        # kept between runs: the code modules compile from their AnsiballZ zips, the parsed
        # routing metadata (tests/harness/zip_bytecode.py, routing_cache.py)
        site="$("$cached/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
        for hook in zip_bytecode routing_cache; do
            if ! cmp -s "$REPO/tests/harness/$hook.py" "$site/offsite_$hook.py"; then
                install -m 0644 "$REPO/tests/harness/$hook.py" "$site/offsite_$hook.py"
                echo "import offsite_$hook; offsite_$hook.install()" >"$site/offsite_$hook.pth"
            fi
        done
        flock -u "$lock"
        exec {lock}>&-
        target="$cached"
    else
        say "controller: the venv's Python"
    fi
    if [ "$(readlink "$CONTROLLER_LINK" 2>/dev/null)" != "$target" ]; then
        rm -rf "$CONTROLLER_LINK"
        ln -s "$target" "$CONTROLLER_LINK"
        say "controller: $CONTROLLER_LINK -> $target"
    fi
fi

# --- 6. collection tree for ansible --------------------------------------------------------
if step collection; then
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
fi

# --- 7. awx.awx, for linting and checking the AWX definitions (extensions/awx) -------------
if step awx; then
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
fi

# --- 8. s3rver, a second S3 implementation (tests/harness/services.S3rver) ------------------
if step s3rver; then
    # Pinned; installed into .cache/npm with npm's own client (no global install, no root).
    S3RVER_VERSION="3.7.1"
    NPM_PREFIX="$REPO/.cache/npm"
    if [ -x "$NPM_PREFIX/node_modules/.bin/s3rver" ] \
            && grep -q "\"version\": \"$S3RVER_VERSION\"" "$NPM_PREFIX/node_modules/s3rver/package.json" 2>/dev/null; then
        say "s3rver: present"
    else
        command -v npm >/dev/null 2>&1 || apt_install nodejs npm
        say "npm install s3rver@$S3RVER_VERSION into $NPM_PREFIX"
        mkdir -p "$NPM_PREFIX"
        npm install --silent --no-audit --no-fund --prefix "$NPM_PREFIX" "s3rver@$S3RVER_VERSION" >/dev/null
    fi
fi

say "done"
