"""A link shaped by the kernel: moto_server in a network namespace of its own, reached over a
veth pair whose ends pass at most ``rate`` bytes/s (tc's token bucket filter).

Why: ``fanout.Throttle`` is a proxy in this benchmark's Python, so its own receiving and sending
take CPU from the two cores it measures, most when the machine is busiest (the scheduled run:
pg_dump, its backend, the engine and moto at once), and a link that slows down when the sender
is busy is no link. Its SLACK makes up for time it lost, within 4 MiB. Here the kernel paces the
packets and nothing in user space stands between the client and moto. Measured alone, 100 MiB
through "40 MiB/s" took 2.59 s (38.6 MiB/s, connection and TCP's start included) while the
test suite kept both cores busy.

Needs root (``ip netns``, ``tc``); ``available()`` says whether this machine can. The namespace,
the veth pair and the moto in it are removed by ``close()``.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.harness.services import MotoS3, venv_executable  # noqa: E402

BURST = "1mb"  # at least the largest (GSO) packet veth hands to the qdisc, 64 KiB


def available() -> bool:
    return os.geteuid() == 0 and bool(shutil.which("ip")) and bool(shutil.which("tc"))


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


class ShapedLink(MotoS3):
    """moto_server (IAM authentication as the harness's) at ``endpoint_url`` in namespace
    ``offsite-link-<pid>``; ``direction`` "up" shapes what this machine sends to it (an
    upload), "down" what it sends back (a download). The other direction is not shaped."""

    def __init__(self, rate: float, direction: str = "up"):
        super().__init__()
        if direction not in ("up", "down"):
            raise ValueError(f"direction {direction!r}: up or down")
        self.rate, self.direction = rate, direction
        n = os.getpid() % 250 + 1
        self.netns = f"offsite-link-{os.getpid()}"
        self.host_dev, self.ns_dev = f"olh{os.getpid()}"[:15], f"oln{os.getpid()}"[:15]
        self.host_ip, self.ns_ip = f"10.251.{n}.1", f"10.251.{n}.2"

    def _start(self) -> None:
        _run("ip", "netns", "add", self.netns)
        _run("ip", "link", "add", self.host_dev, "type", "veth", "peer", "name", self.ns_dev)
        _run("ip", "link", "set", self.ns_dev, "netns", self.netns)
        _run("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_dev)
        _run("ip", "link", "set", self.host_dev, "up")
        inside = ("ip", "netns", "exec", self.netns)
        _run(*inside, "ip", "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_dev)
        _run(*inside, "ip", "link", "set", self.ns_dev, "up")
        _run(*inside, "ip", "link", "set", "lo", "up")
        shaped = (self.host_dev,) if self.direction == "up" else (self.ns_dev,)
        tc = ("tc",) if self.direction == "up" else inside + ("tc",)
        _run(*tc, "qdisc", "add", "dev", *shaped, "root", "tbf", "rate", f"{int(self.rate * 8)}bit",
             "burst", BURST, "latency", "100ms")

        self.tmpdir = tempfile.mkdtemp(prefix="offsite-moto-link-")
        self.log = os.path.join(self.tmpdir, "moto.log")
        self.port = 5000
        self.endpoint_url = f"http://{self.ns_ip}:{self.port}"
        env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT=str(self.SETUP_ACTIONS))
        with open(self.log, "ab") as logf:
            self._proc = subprocess.Popen(
                list(inside) + [venv_executable("moto_server"), "-H", self.ns_ip, "-p", str(self.port)],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                start_new_session=True, env=env, cwd=self.tmpdir)
        self.pid = self._proc.pid  # ip netns exec execs moto_server in its place
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection((self.ns_ip, self.port), timeout=2).close()
                break
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server in {self.netns} did not start:\n"
                                       + Path(self.log).read_text()[-2000:])
                time.sleep(0.1)
        self._setup_iam()

    def s3(self, bucket: str) -> dict:
        """The benchmark's S3 settings for this moto (bench.s3_settings' shape)."""
        return {"endpoint_url": self.endpoint_url, "access_key": self.access_key, "secret_key": self.secret_key,
                "region": self.region, "bucket": bucket}

    def _stop(self) -> None:
        try:
            super()._stop()
        finally:  # the namespace goes with its end of the pair; the host's end, if left, too
            subprocess.run(["ip", "netns", "delete", self.netns], capture_output=True, check=False)
            subprocess.run(["ip", "link", "delete", self.host_dev], capture_output=True, check=False)
            shutil.rmtree(self.tmpdir or "", ignore_errors=True)

    def close(self) -> None:
        self.stop()


def open_link(s3: dict, rate: float, direction: str, kind: str) -> tuple[dict, object]:
    """A store behind a link of ``rate`` bytes/s: its S3 settings and the link (``close()``).
    ``kind`` "kernel": a ShapedLink's own moto, its bucket created; "proxy": fanout.Throttle in
    front of the moto of ``s3``."""
    if kind == "proxy":
        import fanout
        proxy = fanout.Throttle(int(s3["endpoint_url"].rsplit(":", 1)[1]), rate, direction=direction)
        return dict(s3, endpoint_url=proxy.endpoint_url), proxy
    link = ShapedLink(rate, direction).start()
    try:
        import bench
        bench.s3_client(link.s3(s3["bucket"])).create_bucket(Bucket=s3["bucket"])
    except BaseException:
        link.close()
        raise
    return link.s3(s3["bucket"]), link


def link_argument(ap) -> None:
    ap.add_argument("--link", choices=("kernel", "proxy"), default="kernel" if available() else "proxy",
                    help="the link: shaped by the kernel (netlink.py, root; the default where it can) "
                         "or fanout.Throttle's loopback proxy")


LINKS = {"kernel": "shaped by the kernel, netlink.py", "proxy": "fanout.Throttle's proxy"}
