"""One dump uploaded to two repositories at once versus twice in sequence (issue 3, "Performance":
target under 1.3x one upload).

The artifact is one ``operations.dump`` of a files source of ``--mib`` random MiB, uncompressed
(incompressible data, so its size is what travels). Each upload runs in its own interpreter
through bench.py's child runner and is timed around the ``operations.upload`` call:

    one          upload to repository A
    at once      one upload call with repositories [A, B]: the artifact is read once and fed
                 to both repositories in parallel (operations.upload fans out)
    in sequence  upload to A, then a second call for B (the sum of both calls)

in three settings of the two S3 stores (moto on loopback, IAM keys, started here through
tests.harness.services):

    one moto      A and B are two buckets of one moto_server process
    two motos     A and B each have their own moto_server process
    16 MiB/s      each repository reaches its own moto through a loopback TCP proxy that lets at
                  most --link-mib MiB/s upstream: a store behind a slow link, i.e. a real
                  offsite store where the network, not the CPU, is the limit

    .venv/bin/python bench/fanout.py --mib 128 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO))

import bench  # noqa: E402  (bench.py next to this file: child runner, engine import, logging)

MIB = 1024 * 1024
CHUNK = 64 * 1024
SLACK = 0.1  # seconds of the link's time that Throttle makes up (see _pace)
TARGET = 1.3


class Throttle:
    """A loopback TCP proxy to ``port`` passing at most ``rate`` bytes/s from clients to the
    server (``direction="up"``: an upload) or from the server to clients (``"down"``: a
    download), shared by all connections (one link); the other direction passes unthrottled."""

    def __init__(self, port: int, rate: float, direction: str = "up"):
        if direction not in ("up", "down"):
            raise ValueError(f"direction {direction!r}: up or down")
        self.port, self.rate, self.up = port, rate, direction == "up"
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint_url = "http://127.0.0.1:%d" % self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.free_at = time.monotonic()
        threading.Thread(target=self._accept, daemon=True).start()

    def _pace(self, size: int) -> None:
        # each chunk leaves when the link has sent everything queued before it. The link's
        # clock may run up to SLACK behind the wall clock: time this proxy lost between chunks
        # (its own recv and sendall, or waiting for a core while the machine is busy) is the
        # proxy's, not the link's, and is made up; a real link does not slow down when the
        # receiving machine's cores are busy. Measured, 176 MiB through "40 MiB/s" as a whole
        # download: without it 34.1 MiB/s on an idle machine and 26-29 MiB/s beside four busy
        # processes, with it 38.0-38.1 and 35.1-35.3 MiB/s (the request's start included). A
        # sender or receiver that stalls for longer still leaves the link idle; after an idle
        # spell the link may pass SLACK x rate (4 MiB at 40 MiB/s) at once.
        with self.lock:
            now = time.monotonic()
            self.free_at = max(now - SLACK, self.free_at) + size / self.rate
            wait = self.free_at - now
        if wait > 0:
            time.sleep(wait)

    def _accept(self) -> None:
        while True:
            try:
                client, addr = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.port))
            threading.Thread(target=self._pump, args=(client, server, self.up), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, not self.up), daemon=True).start()

    def _pump(self, source, sink, paced: bool) -> None:
        try:
            while True:
                data = source.recv(CHUNK)
                if not data:
                    break
                if paced:
                    self._pace(len(data))
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (sink, source):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


CONCURRENCY = {}  # repository option "concurrency" when --concurrency is given (else the default)


def repository(moto, bucket: str, prefix: str, endpoint_url: str | None = None) -> dict:
    return dict({"type": "s3", "bucket": bucket, "prefix": prefix, "endpoint_url": endpoint_url or moto.endpoint_url,
                 "region": moto.region, "access_key": moto.access_key, "secret_key": moto.secret_key}, **CONCURRENCY)


def upload(artifact: str, repos: list, work: Path, what: str) -> dict:
    m = bench.run_child({"op": "upload", "kwargs": {"backup": artifact, "repositories": repos}}, work, what)
    statuses = [r["status"] for r in m["result"]["repositories"]]
    if statuses != ["uploaded"] * len(repos):
        raise RuntimeError(f"{what}: {statuses}")
    return {"seconds": m["seconds"], "cpu_seconds": m["cpu_seconds"], "py_rss_mib": m["py_rss_mib"]}


def clear(motos) -> None:
    for moto, bucket in motos:
        bench.s3_clear(moto.client(), bucket)


def measure_setting(name: str, artifact: str, a: tuple, b: tuple, work: Path, repeat: int) -> dict:
    """``a``, ``b``: (moto, bucket, endpoint_url or None)."""
    samples = {"one": [], "at_once": [], "sequence": []}
    for rep in range(repeat):
        repo_a = repository(a[0], a[1], f"r{rep}", a[2])
        repo_b = repository(b[0], b[1], f"r{rep}", b[2])
        bench.settle()
        samples["one"].append(upload(artifact, [repo_a], work, f"{name}: one"))
        clear([a[:2], b[:2]])
        bench.settle()
        samples["at_once"].append(upload(artifact, [repo_a, repo_b], work, f"{name}: two at once"))
        clear([a[:2], b[:2]])
        bench.settle()
        first = upload(artifact, [repo_a], work, f"{name}: first of two")
        second = upload(artifact, [repo_b], work, f"{name}: second of two")
        samples["sequence"].append({k: first[k] + second[k] for k in ("seconds", "cpu_seconds")})
        clear([a[:2], b[:2]])
        bench.log(f"{name} round {rep + 1}: one {samples['one'][-1]['seconds']:.2f} s, "
                  f"at once {samples['at_once'][-1]['seconds']:.2f} s, "
                  f"in sequence {samples['sequence'][-1]['seconds']:.2f} s")
    med = {k: statistics.median(s["seconds"] for s in v) for k, v in samples.items()}
    cpu = {k: statistics.median(s["cpu_seconds"] for s in v) for k, v in samples.items()}
    return {"setting": name, "samples": samples, "median_seconds": med, "median_cpu_seconds": cpu,
            "at_once_vs_one": med["at_once"] / med["one"], "sequence_vs_one": med["sequence"] / med["one"],
            "peak_py_rss_mib": max(s["py_rss_mib"] for s in samples["at_once"])}


def markdown(results: list, meta: dict) -> str:
    lines = [f"## Two repositories at once vs twice in sequence ({meta['mib']} MiB artifact, "
             f"{meta['repeat']} round(s), median; {meta['cpus']} CPUs, load {meta['load_start']:.1f} -> "
             f"{meta['load_end']:.1f})", "",
             "| stores | one upload s | two at once s | two in sequence s | at once / one | sequence / one | "
             "CPU s one / at once | target < 1.3x |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        med, cpu = r["median_seconds"], r["median_cpu_seconds"]
        ok = "PASS" if r["at_once_vs_one"] < TARGET else "MISS"
        lines.append(f"| {r['setting']} | {med['one']:.2f} | {med['at_once']:.2f} | {med['sequence']:.2f} | "
                     f"{r['at_once_vs_one']:.2f}x | {r['sequence_vs_one']:.2f}x | "
                     f"{cpu['one']:.1f} / {cpu['at_once']:.1f} | **{ok}** |")
    lines += ["", "CPU s: user + system of the uploading process tree (not moto's). Peak RSS of the "
              "two-at-once process: %.0f MiB." % max(r["peak_py_rss_mib"] for r in results)]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=128, help="artifact size in MiB (random, uncompressed)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds per setting (median reported)")
    ap.add_argument("--link-mib", type=float, default=16, help="MiB/s of each throttled store's link")
    ap.add_argument("--settings", default="one-moto,two-motos,throttled",
                    help="comma-separated subset of one-moto, two-motos, throttled")
    ap.add_argument("--concurrency", type=int, help="parts in flight per repository (default: the module's)")
    ap.add_argument("--results-dir", default=str(BENCH / "results"))
    args = ap.parse_args(argv)
    if args.concurrency:
        CONCURRENCY["concurrency"] = args.concurrency
    wanted = args.settings.split(",")

    from tests.harness.services import MotoS3
    work = Path(tempfile.mkdtemp(prefix="offsite-fanout-"))
    motos, proxies = [], []
    started, load_start = time.time(), os.getloadavg()[0]
    try:
        motos = [MotoS3().start(), MotoS3().start()]
        for moto in motos:
            for bucket in ("fanout-a", "fanout-b"):
                moto.create_bucket(bucket)
        src = work / "src"
        src.mkdir()
        with open(src / "random.bin", "wb") as out:
            for count in range(args.mib):
                out.write(os.urandom(MIB))
        dumped = bench._engine().dump("fanout", {"type": "files", "paths": [str(src)]}, str(work / "dest"),
                                      compression="none")
        artifact = dumped["backup"]["path"]
        shutil.rmtree(src)
        bench.log(f"artifact {artifact}: {dumped['backup']['size'] / MIB:.0f} MiB")

        first, second = motos
        results = []
        if "one-moto" in wanted:
            results.append(measure_setting("one moto, two buckets", artifact, (first, "fanout-a", None),
                                           (first, "fanout-b", None), work, args.repeat))
        if "two-motos" in wanted:
            results.append(measure_setting("two motos", artifact, (first, "fanout-a", None),
                                           (second, "fanout-a", None), work, args.repeat))
        if "throttled" in wanted:
            proxies = [Throttle(int(m.endpoint_url.rsplit(":", 1)[1]), args.link_mib * MIB) for m in motos]
            results.append(measure_setting(f"two motos behind {args.link_mib:g} MiB/s links", artifact,
                                           (first, "fanout-a", proxies[0].endpoint_url),
                                           (second, "fanout-a", proxies[1].endpoint_url), work, args.repeat))
    finally:
        for proxy in proxies:
            proxy.close()
        for moto in motos:
            moto.stop()
        shutil.rmtree(work, ignore_errors=True)
    meta = {"mib": args.mib, "repeat": args.repeat, "link_mib": args.link_mib, "cpus": os.cpu_count(),
            "concurrency": args.concurrency,
            "load_start": load_start, "load_end": os.getloadavg()[0],
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))}
    text = markdown(results, meta)
    print(text)
    out = Path(args.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
    (out / f"fanout-{stamp}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    (out / f"fanout-{stamp}.md").write_text(text)
    bench.log(f"results: {out}/fanout-{stamp}.json (.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
