"""Real services on loopback for integration tests and the demo.

Each service binds a free port on 127.0.0.1, keeps its files in its own temporary directory,
and has ``start()`` / ``stop()`` (also usable as a context manager). ``to_state()`` returns a
JSON-able dict (ports, paths, pids, credentials) and ``from_state()`` rebuilds an object whose
``stop()`` works from another process: this is what the command line uses.

    python -m tests.harness.services up --state FILE [--services moto,sshd,scram_pg,root_sshd]
                                        [--ssh-user offsite-demo]
    python -m tests.harness.services down --state FILE

Classes:
    MotoS3         moto_server with IAM authentication enabled; one IAM user whose key may s3:*
    S3rver         s3rver (npm): a second S3 implementation, independent of moto
    Sshd           private OpenSSH sshd: a normal port and an SFTP-only port (Storage Box)
    ScramPostgres  throwaway PostgreSQL cluster with scram-sha-256 password authentication
"""

from __future__ import annotations

import argparse
import atexit
import fcntl
import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"


# --------------------------------------------------------------------------------------------
# helpers


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (bind port 0)."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (the sockets are held open until all are found)."""
    socks = []
    try:
        for dummy in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((LOOPBACK, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def venv_executable(name: str) -> str:
    """An executable of the venv: next to sys.executable first, then <repo>/.venv/bin."""
    for d in (Path(sys.executable).parent, REPO_ROOT / ".venv" / "bin"):
        p = d / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(f"{name} not found next to {sys.executable} nor in {REPO_ROOT}/.venv/bin "
                            "(run scripts/bootstrap.sh)")


def _tail(path: str | Path, n: int = 40) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _pid_cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _kill(pid: int | None, proc: subprocess.Popen | None = None, marker: str | None = None,
          timeout: float = 10.0) -> None:
    """Terminate a process we started (in its own session: its whole group), then SIGKILL.

    ``marker``: when we only know the pid (from a state file), a substring its command line
    must contain; protects against killing a recycled pid.
    """
    if not pid:
        return
    if proc is None and marker and marker not in _pid_cmdline(pid):
        return
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        pgid = None

    def send(sig: int) -> None:
        try:
            if pgid == pid:
                os.killpg(pgid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass

    send(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None:
            if proc.poll() is not None:
                break
        elif not _pid_alive(pid):
            break
        time.sleep(0.05)
    else:
        send(signal.SIGKILL)
        if proc is not None:
            proc.wait(timeout=5)
    if proc is not None and proc.poll() is None:
        proc.wait(timeout=5)
    # leftover members of the group (e.g. sshd per-connection children)
    if pgid == pid:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _wait_tcp(port: int, proc: subprocess.Popen | None, log: str | Path, timeout: float = 30.0,
              banner: bytes | None = None, what: str = "service") -> None:
    deadline = time.monotonic() + timeout
    last_err: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} during start-up:\n{_tail(log)}")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=2) as s:
                if banner is None:
                    return
                s.settimeout(5)
                data = s.recv(256)
                if data.startswith(banner):
                    return
                last_err = RuntimeError(f"unexpected banner {data!r}")
        except OSError as e:
            last_err = e
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready on {LOOPBACK}:{port} after {timeout}s ({last_err}):\n{_tail(log)}")


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    kw.setdefault("text", True)
    r = subprocess.run(cmd, check=False, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"command failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
    return r


# --------------------------------------------------------------------------------------------
# base class


class Service:
    """Common start/stop/state plumbing. Subclasses implement ``_start`` and ``_stop``."""

    kind = "service"
    #: attributes saved to / restored from the state file
    state_fields: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.tmpdir: str | None = None
        self.pid: int | None = None
        self._proc: subprocess.Popen | None = None
        self.running = False
        #: when True (the CLI), the service outlives this Python process
        self.detached = False

    # public API ---------------------------------------------------------------------------
    def start(self):
        if self.running:
            return self
        try:
            self._start()
        except BaseException:
            self._safe_stop()
            raise
        self.running = True
        if not self.detached:
            atexit.register(self._safe_stop)
        return self

    def stop(self) -> None:
        self._safe_stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def to_state(self) -> dict:
        d = {"kind": self.kind, "tmpdir": self.tmpdir, "pid": self.pid}
        for f in self.state_fields:
            d[f] = getattr(self, f)
        return d

    @classmethod
    def from_state(cls, state: dict):
        obj = cls.__new__(cls)
        Service.__init__(obj)
        for k, v in state.items():
            if k != "kind":
                setattr(obj, k, v)
        obj.running = True
        obj.detached = True
        return obj

    # internals ----------------------------------------------------------------------------
    def _safe_stop(self) -> None:
        try:
            self._stop()
        finally:
            if self.tmpdir and os.path.isdir(self.tmpdir):
                shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.running = False
            self._proc = None
            self.pid = None
            try:
                atexit.unregister(self._safe_stop)
            except Exception:
                pass

    def _start(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _stop(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


# --------------------------------------------------------------------------------------------
# S3: moto


class MotoS3(Service):
    """moto_server on 127.0.0.1:PORT with IAM authentication enabled.

    moto accepts any key unless ``INITIAL_NO_AUTH_ACTION_COUNT`` is set: after that many
    authenticated-capable actions it checks SigV4 signatures against its IAM backend and
    evaluates IAM policies. We start moto with INITIAL_NO_AUTH_ACTION_COUNT=3 and spend the
    three free actions on CreateUser, PutUserPolicy (s3:* on *) and CreateAccessKey. From then
    on only that key works: a wrong secret gives SignatureDoesNotMatch, an unknown key id
    InvalidAccessKeyId (HTTP 403). Start-up verifies both and falls back to
    ``POST /moto-api/reset-auth`` with 0 if a moto version counted differently.
    """

    kind = "moto"
    host = LOOPBACK
    region = "us-east-1"
    iam_user = "offsite-test"
    SETUP_ACTIONS = 3
    state_fields = ("port", "endpoint_url", "access_key", "secret_key", "region", "log")

    def __init__(self) -> None:
        super().__init__()
        self.port: int | None = None
        self.endpoint_url: str | None = None
        self.access_key: str | None = None
        self.secret_key: str | None = None
        self.log: str | None = None

    def _start(self) -> None:
        self.tmpdir = tempfile.mkdtemp(prefix="offsite-moto-")
        self.log = os.path.join(self.tmpdir, "moto.log")
        self.port = free_port()
        self.endpoint_url = f"http://{LOOPBACK}:{self.port}"
        env = dict(os.environ)
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(self.SETUP_ACTIONS)
        with open(self.log, "ab") as logf:
            self._proc = subprocess.Popen(
                [venv_executable("moto_server"), "-H", LOOPBACK, "-p", str(self.port)],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                start_new_session=True, env=env, cwd=self.tmpdir)
        self.pid = self._proc.pid
        _wait_tcp(self.port, self._proc, self.log, what="moto_server")
        self._setup_iam()

    def _setup_iam(self) -> None:
        import botocore.exceptions

        iam = self.client("iam", access_key="offsite-setup", secret_key="offsite-setup")
        iam.create_user(UserName=self.iam_user)
        iam.put_user_policy(
            UserName=self.iam_user, PolicyName="s3-all",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName=self.iam_user)["AccessKey"]
        self.access_key = key["AccessKeyId"]
        self.secret_key = key["SecretAccessKey"]

        def wrong_key_rejected() -> bool:
            try:
                self.client(secret_key="wrong-" + self.secret_key).list_buckets()
            except botocore.exceptions.ClientError:
                return True
            return False

        if not wrong_key_rejected():
            import urllib.request
            urllib.request.urlopen(urllib.request.Request(
                f"{self.endpoint_url}/moto-api/reset-auth", data=b"0", method="POST"), timeout=10).read()
            if not wrong_key_rejected():
                raise RuntimeError("moto does not enforce authentication")
        self.client().list_buckets()  # the right key works

    def _stop(self) -> None:
        _kill(self.pid, self._proc, marker="moto_server")

    # API ------------------------------------------------------------------------------------
    def client(self, service: str = "s3", access_key: str | None = None, secret_key: str | None = None):
        """A boto3 client for this moto (path-style, checksums only when required)."""
        import boto3
        from botocore.config import Config

        cfg = Config(s3={"addressing_style": "path"},
                     request_checksum_calculation="when_required",
                     response_checksum_validation="when_required",
                     retries={"max_attempts": 1, "mode": "standard"})
        return boto3.client(service, endpoint_url=self.endpoint_url, region_name=self.region,
                            aws_access_key_id=access_key or self.access_key,
                            aws_secret_access_key=secret_key or self.secret_key, config=cfg)

    def create_bucket(self, name: str, **kwargs) -> str:
        """Create a bucket (kwargs go to boto3 create_bucket, e.g. ObjectLockEnabledForBucket)."""
        self.client().create_bucket(Bucket=name, **kwargs)
        return name

    def env(self) -> dict:
        """AWS_* environment variables for subprocesses (restic, aws cli...)."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": self.region, "AWS_REGION": self.region,
                "AWS_ENDPOINT_URL": self.endpoint_url}


# --------------------------------------------------------------------------------------------
# S3: s3rver, a second implementation independent of moto


S3RVER = REPO_ROOT / ".cache" / "npm" / "node_modules" / ".bin" / "s3rver"


class S3rver(Service):
    """s3rver (npm, installed by scripts/bootstrap.sh into .cache/npm) on 127.0.0.1:PORT.

    It keeps objects on disk in its own directory and checks SigV4 signatures against its
    one fixed key pair (S3RVER / S3RVER). An S3 implementation written independently of moto:
    the repository contract suite runs against both, so one emulator's quirks do not define
    what works (docs/repositories-s3.md lists where they disagree).
    """

    kind = "s3rver"
    host = LOOPBACK
    region = "us-east-1"
    access_key = "S3RVER"
    secret_key = "S3RVER"
    state_fields = ("port", "endpoint_url", "log")

    def __init__(self) -> None:
        super().__init__()
        self.port: int | None = None
        self.endpoint_url: str | None = None
        self.log: str | None = None

    def _start(self) -> None:
        if not S3RVER.exists():
            raise FileNotFoundError(f"{S3RVER} not found (run scripts/bootstrap.sh)")
        self.tmpdir = tempfile.mkdtemp(prefix="offsite-s3rver-")
        self.log = os.path.join(self.tmpdir, "s3rver.log")
        self.port = free_port()
        self.endpoint_url = f"http://{LOOPBACK}:{self.port}"
        os.mkdir(os.path.join(self.tmpdir, "data"))
        with open(self.log, "ab") as logf:
            self._proc = subprocess.Popen(
                [str(S3RVER), "-d", os.path.join(self.tmpdir, "data"), "-a", LOOPBACK, "-p", str(self.port),
                 "--no-vhost-buckets", "--silent"],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=self.tmpdir)
        self.pid = self._proc.pid
        _wait_tcp(self.port, self._proc, self.log, what="s3rver")

    def _stop(self) -> None:
        _kill(self.pid, self._proc, marker="s3rver")

    # the same API as MotoS3, so a test takes either
    client = MotoS3.client
    create_bucket = MotoS3.create_bucket
    env = MotoS3.env


# --------------------------------------------------------------------------------------------
# SSH / SFTP: OpenSSH sshd


SSHD = "/usr/sbin/sshd"


def _ssh_keygen(path: str, comment: str) -> str:
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path])
    os.chmod(path, 0o600)
    return Path(path + ".pub").read_text().strip()


LOGIN_USERS_LOCK = "/tmp/offsite-login-users.lock"


def ensure_login_user(user: str) -> pwd.struct_passwd:
    """Create (if missing) a login user with a home, and make key logins possible. One process
    at a time: the tests' workers start their sshd at once, and on a new machine two of them
    both found the user missing, so the second ``useradd`` failed ("already exists"); useradd
    and usermod also fail, rather than wait, while another holds /etc/passwd's lock."""
    if user in ("backup", "root"):
        raise ValueError(f"refusing to use {user!r} as a throwaway test user")
    with open(LOGIN_USERS_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _ensure_login_user(user)


def _ensure_login_user(user: str) -> pwd.struct_passwd:
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        _run(["useradd", "--create-home", "--home-dir", f"/home/{user}", "--shell", "/bin/bash", user])
        pw = pwd.getpwnam(user)
    # useradd leaves the password '!' (locked): with UsePAM no, sshd then refuses key logins.
    _run(["usermod", "-p", "*", user])
    home = Path(pw.pw_dir)
    home.mkdir(parents=True, exist_ok=True)
    os.chown(home, pw.pw_uid, pw.pw_gid)
    os.chmod(home, 0o755)  # StrictModes: not group/world writable
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(exist_ok=True)
    os.chown(ssh_dir, pw.pw_uid, pw.pw_gid)
    os.chmod(ssh_dir, 0o700)
    return pw


class Sshd(Service):
    """Private OpenSSH sshd on 127.0.0.1 with a normal port and an SFTP-only port.

    ``port``: shell, exec (rsync) and sftp. ``sftp_only_port``: ``ForceCommand internal-sftp``,
    like a Hetzner Storage Box (rsync and shell refused).
    The login user's authorized key lives in ``~/.ssh/authorized_keys.offsite-<port>`` (one
    file per instance, so concurrent instances with the same user do not clash).
    """

    kind = "sshd"
    host = LOOPBACK
    state_fields = ("user", "port", "sftp_only_port", "private_key", "public_key", "wrong_private_key",
                    "host_key", "known_hosts", "home", "authorized_keys", "config", "log")

    def __init__(self, user: str = "offsite-t1") -> None:
        super().__init__()
        self.user = user
        self.port: int | None = None
        self.sftp_only_port: int | None = None
        self.private_key: str | None = None
        self.public_key: str | None = None
        self.wrong_private_key: str | None = None
        self.host_key: str | None = None
        self.known_hosts: str | None = None
        self.home: str | None = None
        self.authorized_keys: str | None = None
        self.config: str | None = None
        self.log: str | None = None

    def _start(self) -> None:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.tmpdir = tempfile.mkdtemp(prefix="offsite-sshd-")
        d = Path(self.tmpdir)
        pw = ensure_login_user(self.user)
        self.home = pw.pw_dir
        backups = Path(self.home) / "backups"
        backups.mkdir(exist_ok=True)
        os.chown(backups, pw.pw_uid, pw.pw_gid)

        self.port, self.sftp_only_port = free_ports(2)
        hostkey = str(d / "ssh_host_ed25519_key")
        self.host_key = " ".join(_ssh_keygen(hostkey, "offsite-test-host").split()[:2])
        self.private_key = str(d / "id_ed25519")
        self.public_key = _ssh_keygen(self.private_key, f"{self.user}@offsite-test")
        self.wrong_private_key = str(d / "id_ed25519_wrong")
        _ssh_keygen(self.wrong_private_key, "not-authorized@offsite-test")

        self.known_hosts = str(d / "known_hosts")
        Path(self.known_hosts).write_text(
            f"[{LOOPBACK}]:{self.port} {self.host_key}\n[{LOOPBACK}]:{self.sftp_only_port} {self.host_key}\n")

        ak_name = f"authorized_keys.offsite-{self.port}"
        self.authorized_keys = str(Path(self.home) / ".ssh" / ak_name)
        Path(self.authorized_keys).write_text(self.public_key + "\n")
        os.chown(self.authorized_keys, pw.pw_uid, pw.pw_gid)
        os.chmod(self.authorized_keys, 0o600)

        self.config = str(d / "sshd_config")
        self.log = str(d / "sshd.log")
        Path(self.config).write_text(f"""\
ListenAddress {LOOPBACK}:{self.port}
ListenAddress {LOOPBACK}:{self.sftp_only_port}
HostKey {hostkey}
PidFile {d / 'sshd.pid'}
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin no
AllowUsers {self.user}
AuthorizedKeysFile .ssh/{ak_name}
StrictModes yes
LogLevel VERBOSE
X11Forwarding no
PrintMotd no
MaxStartups 50:30:100
MaxSessions 20
Subsystem sftp internal-sftp

Match LocalPort {self.sftp_only_port}
    ForceCommand internal-sftp
    AllowTcpForwarding no
    AllowAgentForwarding no
    PermitTTY no
""")
        _run([SSHD, "-t", "-f", self.config])
        self._proc = subprocess.Popen([SSHD, "-D", "-f", self.config, "-E", self.log],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True)
        self.pid = self._proc.pid
        for p in (self.port, self.sftp_only_port):
            _wait_tcp(p, self._proc, self.log, banner=b"SSH-2.0-", what="sshd")

    def _stop(self) -> None:
        _kill(self.pid, self._proc, marker="sshd")
        if self.authorized_keys:
            try:
                os.unlink(self.authorized_keys)
            except FileNotFoundError:
                pass

    # API ------------------------------------------------------------------------------------
    def make_dir(self, relpath: str) -> str:
        """Create ``home/relpath`` (and parents below home) owned by the login user."""
        pw = pwd.getpwnam(self.user)
        target = Path(self.home) / relpath
        parts = Path(relpath).parts
        cur = Path(self.home)
        for part in parts:
            cur = cur / part
            if not cur.exists():
                cur.mkdir()
                os.chown(cur, pw.pw_uid, pw.pw_gid)
        return str(target)

    def add_key(self, label: str, forced_dir: str | None = None, passphrase: str = "") -> str:
        """A new client key allowed on this sshd; returns its private key path.

        ``forced_dir``: the key may only run ``rrsync <forced_dir>`` (``restrict``): no shell,
        no other command, rsync confined to that directory, like a backup server's per-client
        key. ``passphrase``: the private key is encrypted with it."""
        key = str(Path(self.tmpdir) / f"id_ed25519_{label}")
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", f"{label}@offsite-test", "-f", key])
        public = Path(key + ".pub").read_text().strip()
        line = f'command="/usr/bin/rrsync {forced_dir}",restrict {public}' if forced_dir else public
        with open(self.authorized_keys, "a") as f:
            f.write(line + "\n")
        return key

    def ssh_args(self, port: int | None = None, key: str | None = None) -> list[str]:
        """Arguments for the OpenSSH client (batch mode, strict host key checking)."""
        return ["-p", str(port or self.port), "-i", key or self.private_key,
                "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "ConnectTimeout=10"]


# --------------------------------------------------------------------------------------------
# PostgreSQL with password authentication


def pg_bindir() -> str:
    """The newest /usr/lib/postgresql/*/bin that has initdb."""
    cands = [d for d in glob.glob("/usr/lib/postgresql/*/bin") if os.path.exists(os.path.join(d, "initdb"))]
    if not cands:
        raise FileNotFoundError("no /usr/lib/postgresql/*/bin/initdb (apt-get install postgresql)")
    cands.sort(key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0)
    return cands[-1]


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--"] + cmd
    return cmd


class ScramPostgres(Service):
    """A throwaway PostgreSQL cluster with ``scram-sha-256`` auth (wrong passwords refused)."""

    kind = "scram_pg"
    host = LOOPBACK
    user = "postgres"
    state_fields = ("port", "user", "password", "datadir", "sockdir", "bindir", "log")

    def __init__(self) -> None:
        super().__init__()
        self.port: int | None = None
        self.password: str | None = None
        self.datadir: str | None = None
        self.sockdir: str | None = None
        self.bindir: str | None = None
        self.log: str | None = None

    def _chown_pg(self, path: str) -> None:
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def _start(self) -> None:
        self.bindir = pg_bindir()
        self.tmpdir = tempfile.mkdtemp(prefix="offsite-scrampg-")
        self._chown_pg(self.tmpdir)
        d = Path(self.tmpdir)
        self.datadir = str(d / "data")
        self.sockdir = str(d / "sock")
        os.mkdir(self.sockdir, 0o700)
        self._chown_pg(self.sockdir)
        self.log = str(d / "postgres.log")
        self.password = secrets.token_urlsafe(18)
        pwfile = d / "pwfile"
        pwfile.write_text(self.password + "\n")
        os.chmod(pwfile, 0o600)
        self._chown_pg(str(pwfile))
        _run(_as_postgres([os.path.join(self.bindir, "initdb"), "-D", self.datadir, "-U", self.user,
                           "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--no-locale",
                           "--no-sync"]), cwd=self.tmpdir)
        pwfile.unlink()
        self.port = free_port()
        opts = f"-p {self.port} -k {self.sockdir} -c listen_addresses={LOOPBACK} -c fsync=off"
        _run(_as_postgres([os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "-o", opts,
                           "-l", self.log, "-w", "-t", "60", "start"]),
             cwd=self.tmpdir, stdin=subprocess.DEVNULL)
        with open(os.path.join(self.datadir, "postmaster.pid")) as f:
            self.pid = int(f.readline().strip())

    def _stop(self) -> None:
        if self.datadir and os.path.exists(os.path.join(self.datadir, "postmaster.pid")):
            r = subprocess.run(_as_postgres([os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir,
                                             "-m", "fast", "-w", "-t", "30", "stop"]),
                               cwd="/", stdin=subprocess.DEVNULL, capture_output=True, check=False)
            if r.returncode != 0:
                _kill(self.pid, None, marker="postgres")

    # API ------------------------------------------------------------------------------------
    def env(self, password: str | None = None) -> dict:
        """PG* environment variables for psql/pg_dump (password: override, e.g. a wrong one)."""
        return {"PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": self.user,
                "PGPASSWORD": self.password if password is None else password}

    @property
    def dsn(self) -> str:
        return f"host={self.host} port={self.port} user={self.user} password={self.password} dbname=postgres"


# --------------------------------------------------------------------------------------------
# command line


SERVICE_CLASSES = {"moto": MotoS3, "s3rver": S3rver, "sshd": Sshd, "scram_pg": ScramPostgres}


def service_classes() -> dict:
    """Every service the command line starts, the root sshd of the role tests included (its
    module imports this one, so it is loaded late)."""
    from tests.harness.rolehost import RootSshd
    return dict(SERVICE_CLASSES, root_sshd=RootSshd)


def _cmd_up(args: argparse.Namespace) -> int:
    classes = service_classes()
    names = [n.strip() for n in args.services.split(",") if n.strip()]
    for n in names:
        if n not in classes:
            raise SystemExit(f"unknown service {n!r} (choose from {', '.join(classes)})")
    started: list[Service] = []
    state: dict = {}
    try:
        for n in names:
            svc = Sshd(user=args.ssh_user) if n == "sshd" else classes[n]()
            svc.detached = True
            svc.start()
            started.append(svc)
            state[n] = svc.to_state()
            if hasattr(svc, "inventory"):   # root sshd: an inventory to apply the roles through it
                state[n]["inventory"] = svc.inventory(Path(svc.tmpdir) / "inventory")
            print(f"[harness] {n} up" + (f" on {LOOPBACK}:{svc.port}" if getattr(svc, "port", None) else ""),
                  file=sys.stderr)
    except BaseException:
        for svc in reversed(started):
            svc.stop()
        raise
    path = Path(args.state)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds credentials
    with os.fdopen(fd, "w") as f:
        json.dump(state, f, indent=2)
    os.replace(tmp, path)
    print(f"[harness] state written to {path}", file=sys.stderr)
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    path = Path(args.state)
    if not path.exists():
        print(f"[harness] no state file {path}: nothing to stop", file=sys.stderr)
        return 0
    state = json.loads(path.read_text())
    rc = 0
    for n, st in reversed(list(state.items())):
        cls = {c.kind: c for c in service_classes().values()}.get(st.get("kind", n))
        if cls is None:
            continue
        try:
            cls.from_state(st).stop()
            print(f"[harness] {n} down", file=sys.stderr)
        except Exception as e:  # keep stopping the others
            print(f"[harness] stopping {n} failed: {e}", file=sys.stderr)
            rc = 1
    path.unlink()
    return rc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.harness.services",
                                 description="Start/stop loopback test services for offsite.backup.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start services and write the state file (JSON, mode 0600)")
    up.add_argument("--state", required=True)
    up.add_argument("--services", default="moto,sshd",
                    help="comma list of: moto, sshd, scram_pg, root_sshd (root logs in with a key: the role tests' host)")
    up.add_argument("--ssh-user", default="offsite-demo", help="throwaway login user for sshd")
    down = sub.add_parser("down", help="stop the services listed in the state file and delete it")
    down.add_argument("--state", required=True)
    args = ap.parse_args(argv)
    return _cmd_up(args) if args.cmd == "up" else _cmd_down(args)


if __name__ == "__main__":
    sys.exit(main())
