"""An sshd on a loopback port where root logs in with a test key, to apply roles over real
SSH to this machine, and where users that a role creates log in with their own
``~/.ssh/authorized_keys`` (forced commands, chroots from the drop-in directory).

    RootSshd()   .port, .private_key, .known_hosts, .host_key, .dropin_dir, .reload(), .inventory(path)
    RUNNER_DIR   the client role's install directory for the tests that apply the role
    runner_dir_lock()  take it first (another checkout may be using it)
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.harness.services import LOOPBACK, REPO_ROOT, Service, _kill, _run, _ssh_keygen, _wait_tcp, free_port

SSHD = "/usr/sbin/sshd"


def _runner_key() -> str:
    """What the client role installs into its virtualenv from PyPI: its defaults (the package
    list, pip arguments) and this Python. The engine wheel is not part of it: the role replaces
    the wheel in place when it changes (its own marker), in seconds."""
    defaults = (REPO_ROOT / "roles" / "client" / "defaults" / "main.yml").read_bytes()
    return hashlib.sha256(defaults + sys.version.encode()).hexdigest()[:12]


#: The client role's install directory (virtualenv from PyPI, engine wheel) for every test that
#: applies the role to this machine (tests/integration/test_roles.py, test_drill_command.py,
#: test_wal_archiving.py): built by the first of them and reused by the others, by later runs and
#: by other checkouts of the same role defaults, so that a fresh clone does not install the
#: virtualenv from PyPI again (about a minute of a CI run). Tests that use it hold
#: ``runner_dir_lock()`` first: two role runs at once would pip-install into the same one. Within
#: one run they are one xdist group ("role-runner", tests/integration/conftest.py) anyway; the
#: lock is for two checkouts testing at the same time.
RUNNER_DIR = Path("/var/tmp") / f"offsite-role-test-runner-{_runner_key()}"

_runner_lock = None


def runner_dir_lock() -> Path:
    """Take RUNNER_DIR for this test process until it exits (waiting while another process holds
    it); returns RUNNER_DIR."""
    global _runner_lock
    if _runner_lock is None:
        lock = open(f"{RUNNER_DIR}.lock", "a+")  # noqa: SIM115 - held until the process exits
        fcntl.flock(lock, fcntl.LOCK_EX)
        _runner_lock = lock
    return RUNNER_DIR


class RootSshd(Service):
    kind = "root-sshd"
    state_fields = ("port", "private_key", "known_hosts", "host_key", "dropin_dir", "root_keys", "config", "log",
                    "pidfile")

    def _start(self) -> None:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.tmpdir = tempfile.mkdtemp(prefix="offsite-rootsshd-")
        d = Path(self.tmpdir)
        self.port = free_port()
        hostkey = str(d / "ssh_host_ed25519_key")
        self.host_key = " ".join(_ssh_keygen(hostkey, "offsite-role-host").split()[:2])
        self.private_key = str(d / "root_ed25519")
        public = _ssh_keygen(self.private_key, "root@offsite-role-test")
        self.known_hosts = str(d / "known_hosts")
        Path(self.known_hosts).write_text(f"[{LOOPBACK}]:{self.port} {self.host_key}\n")
        root_ssh = Path("/root/.ssh")
        root_ssh.mkdir(mode=0o700, exist_ok=True)
        self.root_keys = str(root_ssh / f"authorized_keys.offsite-role-{self.port}")
        Path(self.root_keys).write_text(public + "\n")
        os.chmod(self.root_keys, 0o600)
        self.dropin_dir = str(d / "sshd_config.d")
        os.makedirs(self.dropin_dir)
        self.config = str(d / "sshd_config")
        self.log = str(d / "sshd.log")
        self.pidfile = str(d / "sshd.pid")
        Path(self.config).write_text(f"""\
ListenAddress {LOOPBACK}:{self.port}
HostKey {hostkey}
PidFile {self.pidfile}
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
AuthorizedKeysFile .ssh/authorized_keys
StrictModes yes
LogLevel VERBOSE
PrintMotd no
MaxStartups 50:30:100
Subsystem sftp internal-sftp
Include {self.dropin_dir}/*.conf

Match User root
    AuthorizedKeysFile {self.root_keys}
""")
        _run([SSHD, "-t", "-f", self.config])
        self._proc = subprocess.Popen([SSHD, "-D", "-f", self.config, "-E", self.log],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True)
        self.pid = self._proc.pid
        _wait_tcp(self.port, self._proc, self.log, banner=b"SSH-2.0-", what="sshd")

    def _stop(self) -> None:
        _kill(self.pid, self._proc, marker="sshd")
        if getattr(self, "root_keys", None) and os.path.exists(self.root_keys):
            os.unlink(self.root_keys)

    def reload_command(self) -> str:
        """What a role runs to make this sshd re-read its configuration (as systemctl reload)."""
        return f"kill -HUP {self.pid}"

    def reload(self) -> None:
        os.kill(self.pid, signal.SIGHUP)

    def inventory(self, path: Path, host: str = "target", interpreter: str = "/usr/bin/python3") -> str:
        Path(path).write_text(
            f"{host} ansible_host={LOOPBACK} ansible_port={self.port} ansible_user=root "
            f"ansible_connection=ssh ansible_ssh_private_key_file={self.private_key} "
            f"ansible_python_interpreter={interpreter} "
            f"ansible_ssh_common_args='-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes "
            f"-o IdentitiesOnly=yes -o GlobalKnownHostsFile=/dev/null'\n")
        return str(path)

    def ssh(self, user: str, key: str, *command: str, known_hosts: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["ssh", *self.client_args(key, known_hosts), "-p", str(self.port),
                               f"{user}@{LOOPBACK}", *command],
                              text=True, capture_output=True, timeout=60, check=False, stdin=subprocess.DEVNULL)

    def client_args(self, key: str, known_hosts: str | None = None) -> list[str]:
        return ["-i", key, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", f"UserKnownHostsFile={known_hosts or self.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "ConnectTimeout=10"]
