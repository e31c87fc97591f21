"""Point-in-time recovery benchmark (issue 17, "Performance"): a base backup to S3 and a
point-in-time restore from S3, each side by side with PostgreSQL's own tools in one run.

A throwaway PostgreSQL cluster (tests/harness/walcluster.py: initdb, free port, temp dir) gets
the benchmark database (``bench.build_database``: pgbench tables plus incompressible bytes, ~1 GB
at ``--scale full``), archives its WAL with ``offsite-backup wal-push`` into moto S3 (loopback)
and, for the reference, with ``cp`` into a directory, then:

1. **base backup**, per round: ``pg_basebackup -Ft -D - -X fetch --checkpoint=fast > /dev/null``
   next to ``offsite-backup run`` of a job with one ``postgresql_physical`` source and the S3
   repository (pg_basebackup, zstd, sha256, the local copy and the upload in one pass, the
   manifest last). Target: run <= 1.3x pg_basebackup.
2. ``--wal-mib`` of WAL written by ``pgbench -c 4`` after the last base backup, a row committed
   before the target time T and one after it, everything archived.
3. **point-in-time restore to T**, per round: the reference extracts the same base backup with
   ``tar x`` (the plain tar, decompressed beforehand) and replays the same WAL from the local
   directory (``restore_command = 'cp .../%f %p'``, ``recovery_target_action = promote``) until
   the server is promoted; ours is ``operations.restore`` from S3 (download, sha256 and extract
   at once, ``wal-fetch`` per segment, pause at T, promote, restart on the port). Both restores
   are checked (the row before T is there, the one after it is not). Target: ours <= 1.3x.

Every restore runs in a process that is the child subreaper of everything it starts
(``PR_SET_CHILD_SUBREAPER``): the restored server, its startup process and every
restore_command are reaped by it once the server is stopped, so its CPU seconds are the whole
restore (server, replay, wal-fetch or cp, tar, the engine), not only the direct children. Base
backup rows are measured with GNU time (the process tree; the server's walsender and moto are
not in it). Wall ratios on a loaded machine are indicative: compare the CPU-second ratios next
to them, and the load average printed with every row.

    bench/run.sh --pitr [--scale small] [--wal-mib 256] [--repeat 2]
    .venv/bin/python bench/pitr.py --help
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import bench  # noqa: E402
from tests.harness.services import LOOPBACK, _as_postgres, free_port  # noqa: E402
from tests.harness.walcluster import CLI_MODULE, WalCluster, cli_prefix  # noqa: E402

SET = "bench_cluster"
TARGETS = {"base_backup_vs_pg_basebackup": 1.3, "restore_vs_local": 1.3}
DEFAULT_WAL_MIB = {"full": 1024, "small": 128}
PR_SET_CHILD_SUBREAPER = 36


def log(msg: str) -> None:
    print(f"[pitr {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load() -> list[float]:
    return [round(x, 1) for x in os.getloadavg()]


# ------------------------------------------------------------------------------------------
# child side: one restore, as the subreaper of everything it starts


def _cpu(usage) -> float:
    return usage.ru_utime + usage.ru_stime


def reap_main(spec_path: str, result_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    out: dict = {"load_before": load()}
    if spec["kind"] == "restore":
        bench._engine()  # imports first: not part of the timing (minutes against 0.3 s)
        from ansible_collections.offsite.backup.plugins.module_utils._engine import operations
        start = time.perf_counter()
        result = operations.restore(**spec["kwargs"])
        out["seconds"] = time.perf_counter() - start
        out["phases"] = (result.get("restored") or {}).get("phases")
        out["reached_time"] = (result.get("restored") or {}).get("reached_time")
    else:
        start = time.perf_counter()
        r = subprocess.run(["bash", "-euo", "pipefail", "-c", spec["script"]], capture_output=True, text=True,
                           check=False)
        out["seconds"] = time.perf_counter() - start
        if r.returncode != 0:
            server_log = Path(spec["datadir"] + ".log")
            tail = server_log.read_text(errors="replace")[-2000:] if server_log.exists() else ""
            raise RuntimeError(f"reference restore failed ({r.returncode}):\n{r.stdout[-2000:]}{r.stderr[-2000:]}\n{tail}")
        marks = dict(line.split()[:2] for line in r.stdout.splitlines() if line.startswith(("START ", "EXTRACTED ")))
        if len(marks) == 2:
            out["phases"] = {"extract_seconds": round(float(marks["EXTRACTED"]) - float(marks["START"]), 3)}
    out["load_after"] = load()
    out["check"] = bench_check(spec["port"])
    # stop the restored server, then reap it and every orphan it left (this process is their reaper)
    subprocess.run(_as_postgres([os.path.join(spec["bindir"], "pg_ctl"), "-D", spec["datadir"], "-m", "fast", "-w",
                                 "-t", "120", "stop"]), capture_output=True, check=False, cwd="/")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            pid, dummy = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.05)
    out["self_cpu_seconds"] = _cpu(resource.getrusage(resource.RUSAGE_SELF))
    out["children_cpu_seconds"] = _cpu(resource.getrusage(resource.RUSAGE_CHILDREN))
    Path(result_path).write_text(json.dumps(out, default=str))
    return 0


def bench_check(port: int) -> str:
    r = subprocess.run(["psql", "-X", "-A", "-t", "-q", "-h", LOOPBACK, "-p", str(port), "-U", "postgres", "-d",
                        "postgres", "-c", "SELECT string_agg(note, ',' ORDER BY id) FROM pitr_marks"],
                       capture_output=True, text=True, check=False)
    return r.stdout.strip() if r.returncode == 0 else "ERROR " + r.stderr.strip()


# ------------------------------------------------------------------------------------------
# parent side


class Bench:
    def __init__(self, args):
        self.args = args
        self.cfg = bench.SCALES[args.scale]
        self.wal_mib = args.wal_mib or DEFAULT_WAL_MIB[args.scale]
        self.s3, self.client, self.moto = bench.s3_bucket(args)
        self.prefix = "pitr-%s" % uuid.uuid4().hex[:8]
        self.pg = WalCluster(archive_timeout=60)
        self.pg.port = free_port()
        self.walcopy = self.pg.mkdir("walcopy")
        self.samples: dict[str, list] = {}
        self.facts: dict = {"scale": args.scale, "cores": os.cpu_count(), "load_start": load()}

    # -- the cluster ---------------------------------------------------------------------
    def env(self) -> dict:
        env = dict(os.environ)
        for k in ("PGPASSWORD", "PGDATABASE", "PGSERVICE"):
            env.pop(k, None)
        env.update({"PGHOST": LOOPBACK, "PGPORT": str(self.pg.port), "PGUSER": "postgres"})
        return env

    def repository(self) -> dict:
        return bench.repo_options(self.s3, self.prefix)

    def start(self) -> None:
        pg = self.pg
        pg.write_job({"name": "pitrbench", "local": {"path": pg.mkdir("local")},
                      "sources": [{"name": SET, "source": {"type": "postgresql_physical", "host": LOOPBACK,
                                                           "port": pg.port, "user": "postgres"}}],
                      "repositories": [self.repository()], "log": {"path": os.path.join(pg.home, "job.log")}})
        # archiving is switched on once the database is built (its WAL is before every base backup)
        pg.start(archive_command="/bin/true", max_wal_size="1GB", checkpoint_timeout="30s", shared_buffers="128MB")
        bench.pg_env = self.env  # bench.build_database and bench.psql talk to this cluster
        built = bench.build_database(self.cfg["database"], self.cfg, rebuild=False)
        self.facts.update(built)
        self.facts.update(bench.database_facts(self.cfg["database"]))
        self.facts["cluster_bytes"] = int(pg.sql("SELECT sum(pg_database_size(oid)) FROM pg_database"))
        command = f"cp %p {shlex.quote(self.walcopy)}/%f && {pg.push_command()}"
        pg.sql(f"ALTER SYSTEM SET archive_command = '{command}'")
        pg.sql("SELECT pg_reload_conf()")
        pg.sql("CREATE TABLE pitr_marks (id int PRIMARY KEY, note text)")
        pg.wait_archived(pg.switch_wal(), timeout=600)
        log(f"cluster on port {pg.port}: {self.facts['cluster_bytes'] / bench.MIB:.0f} MiB, archiving to S3")

    def settle(self) -> None:
        os.sync()
        self.pg.sql("CHECKPOINT")

    # -- 1. base backups -----------------------------------------------------------------
    def base_backups(self) -> None:
        pg_basebackup = os.path.join(self.pg.bindir, "pg_basebackup")
        ref = (f"{pg_basebackup} -h {LOOPBACK} -p {self.pg.port} -U postgres -Ft -D - -X fetch --checkpoint=fast "
               f"> /dev/null")
        run_env = dict(self.env(), PYTHONPATH=str(bench.COLLECTIONS))
        ours = [sys.executable, "-m", CLI_MODULE, "run", self.pg.job]
        for rep in range(self.args.repeat):
            log(f"base backup round {rep + 1}/{self.args.repeat}")
            self.settle()
            measured = bench.measure(["bash", "-o", "pipefail", "-c", ref], "pg_basebackup", env=self.env())
            self.record("pg_basebackup", measured)
            self.settle()  # context: the compression every stored base backup needs, as a shell pipeline
            zstd = ref.replace("> /dev/null", "| zstd -q -1 > /dev/null")
            measured = bench.measure(["bash", "-o", "pipefail", "-c", zstd], "pg_basebackup | zstd", env=self.env())
            self.record("pg_basebackup | zstd -1", measured)
            # one base backup in the repository and the local copy at a time (moto keeps it in memory)
            shutil.rmtree(os.path.join(self.pg.home, "local", SET), ignore_errors=True)
            bench.s3_clear(self.client, self.s3["bucket"], f"{self.prefix}/{SET}/")
            self.settle()
            measured = bench.measure(ours, "offsite-backup run", env=run_env)
            self.record("offsite-backup run", measured)
        [artifact] = (Path(self.pg.home) / "local" / SET).glob("*.tar.zst")
        self.artifact = artifact
        self.facts["base_backup_stored_bytes"] = artifact.stat().st_size

    def record(self, key: str, m: dict) -> None:
        self.samples.setdefault(key, []).append(m)
        log(f"  {key}: {m['seconds']:.2f} s, CPU {m.get('cpu_seconds', 0):.2f} s, load {m.get('load1')}")

    # -- 2. WAL after the base backup ----------------------------------------------------
    def write_wal(self) -> None:
        pg = self.pg
        db = self.cfg["database"]
        start_lsn = pg.sql("SELECT pg_current_wal_lsn()")
        pgbench = os.path.join(pg.bindir, "pgbench")
        started = time.time()
        written = 0
        while written < self.wal_mib * bench.MIB:
            subprocess.run([pgbench, "-c", "4", "-j", "2", "-T", "15", "-n", "-h", LOOPBACK, "-p", str(pg.port),
                            "-U", "postgres", db], check=True, capture_output=True)
            written = int(float(pg.sql(f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{start_lsn}')")))
            log(f"  WAL written: {written / bench.MIB:.0f} / {self.wal_mib} MiB")
        pg.sql("INSERT INTO pitr_marks VALUES (1, 'before')")
        # T: the next whole second after that commit (recovery_target_time is given to the second);
        # the row after T waits until a second has passed beyond it
        self.target = pg.sql("SELECT to_char((date_trunc('second', clock_timestamp()) + interval '1 second') "
                             "AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')")
        while pg.sql(f"SELECT clock_timestamp() > '{self.target}'::timestamptz + interval '1 second'") != "t":
            time.sleep(0.1)
        pg.sql("INSERT INTO pitr_marks VALUES (2, 'after')")
        last = pg.switch_wal()
        pg.wait_archived(last, timeout=3600)
        stored = [o for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.s3["bucket"], Prefix=f"{self.prefix}/.wal/") for o in page.get("Contents", [])]
        self.facts.update({
            "wal_written_bytes": written, "wal_seconds": round(time.time() - started, 1), "target_time": self.target,
            "wal_segments_archived": sum(1 for o in stored if o["Key"].endswith(".json")),
            "wal_stored_bytes": sum(o["Size"] for o in stored if not o["Key"].endswith(".json")),
            "wal_copied_files": len(os.listdir(self.walcopy))})
        log(f"WAL: {written / bench.MIB:.0f} MiB written, T = {self.target}, "
            f"{self.facts['wal_segments_archived']} files archived")
        # the reference's base backup: the same artifact as a plain tar (not timed)
        self.plain_tar = os.path.join(self.pg.home, "base.tar")
        subprocess.run(f"zstd -q -dc {shlex.quote(str(self.artifact))} > {shlex.quote(self.plain_tar)}",
                       shell=True, check=True)
        os.chmod(self.plain_tar, 0o644)

    # -- 3. restores ---------------------------------------------------------------------
    def run_reaped(self, spec: dict, key: str) -> dict:
        work = Path(self.pg.home)
        spec_path, result_path = work / "reap-spec.json", work / "reap-result.json"
        result_path.unlink(missing_ok=True)
        spec_path.write_text(json.dumps(spec))
        r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "_reap", str(spec_path), str(result_path)],
                           env=dict(os.environ, PYTHONPATH=str(bench.COLLECTIONS)), check=False, capture_output=True,
                           text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{key} failed:\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
        out = json.loads(result_path.read_text())
        out["cpu_seconds"] = out["self_cpu_seconds"] + out["children_cpu_seconds"]
        out["load1"] = out["load_after"][0]
        if out["check"] != "before":
            raise RuntimeError(f"{key}: the restored cluster has {out['check']!r} in pitr_marks, not 'before'")
        self.record(key, out)
        log(f"    phases {out.get('phases')}, engine process {out['self_cpu_seconds']:.1f} CPU s, "
            f"everything it started {out['children_cpu_seconds']:.1f} CPU s")
        shutil.rmtree(spec["datadir"], ignore_errors=True)
        return out

    def reference_restore(self) -> None:
        datadir = os.path.join(self.pg.home, "ref-%s" % uuid.uuid4().hex[:6])
        port = free_port()
        bindir = self.pg.bindir
        settings = (f"restore_command = 'cp {self.walcopy}/%f %p'\n"
                    f"recovery_target_time = '{self.target.replace('T', ' ').replace('Z', '+00')}'\nrecovery_target_action = 'promote'\n"
                    f"port = {port}\narchive_mode = 'off'\n")
        inner = (f"echo START $(date +%s.%N) && mkdir -m 700 {datadir} && tar -xf {self.plain_tar} -C {datadir} && echo EXTRACTED $(date +%s.%N) && "
                 f"printf %s {shlex.quote(settings)} >> {datadir}/postgresql.auto.conf && "
                 f"touch {datadir}/recovery.signal && "
                 f"{bindir}/pg_ctl -D {datadir} -l {datadir}.log -w -t 3600 start > /dev/null && "
                 f"until [ \"$({bindir}/psql -X -A -t -h {LOOPBACK} -p {port} -U postgres -d postgres "
                 f"-c 'SELECT pg_is_in_recovery()' 2>/dev/null)\" = f ]; do sleep 0.1; done")
        script = " ".join(shlex.quote(w) for w in _as_postgres(["bash", "-euo", "pipefail", "-c", inner]))
        self.settle()
        spec = {"kind": "shell", "script": script, "datadir": datadir, "port": port, "bindir": bindir}
        self.run_reaped(spec, "local tar x + cp replay")

    def our_restore(self) -> None:
        datadir = os.path.join(self.pg.home, "ours-%s" % uuid.uuid4().hex[:6])
        port = free_port()
        target = {"type": "postgresql_physical", "data_directory": datadir, "port": port,
                  "recovery_target_time": self.target, "offsite_backup_command": cli_prefix()}
        self.settle()
        spec = {"kind": "restore", "kwargs": {"name": SET, "repository": self.repository(), "target": target},
                "datadir": datadir, "port": port, "bindir": self.pg.bindir}
        self.run_reaped(spec, "ours: restore from S3")

    def restores(self) -> None:
        for rep in range(self.args.repeat):
            log(f"restore round {rep + 1}/{self.args.repeat}")
            if rep % 2 == 0:
                self.reference_restore()
                self.our_restore()
            else:
                self.our_restore()
                self.reference_restore()

    # -- report --------------------------------------------------------------------------
    def median(self, key: str, field: str = "seconds") -> float:
        return statistics.median(m[field] for m in self.samples[key])

    def report(self) -> dict:
        self.facts["load_end"] = load()
        rows = []
        for key in ("pg_basebackup", "pg_basebackup | zstd -1", "offsite-backup run", "local tar x + cp replay",
                    "ours: restore from S3"):
            rows.append((key, self.median(key), self.median(key, "cpu_seconds"),
                         max(m["load1"] for m in self.samples[key])))
        targets = []
        for name, ours, ref in (("base backup to S3 <= 1.3x pg_basebackup", "offsite-backup run", "pg_basebackup"),
                                ("PITR restore from S3 <= 1.3x local tar x + cp replay", "ours: restore from S3",
                                 "local tar x + cp replay")):
            wall = self.median(ours) / self.median(ref)
            cpu = self.median(ours, "cpu_seconds") / self.median(ref, "cpu_seconds")
            targets.append((name, wall, cpu, "PASS" if wall <= 1.3 else "MISS"))
        f = self.facts
        lines = [f"# PITR benchmark ({f['scale']}, {self.args.repeat} round(s), medians)", "",
                 f"Cluster {f['cluster_bytes'] / bench.MIB:.0f} MiB (database {f['database_bytes'] / bench.MIB:.0f} MiB), "
                 f"base backup stored {f['base_backup_stored_bytes'] / bench.MIB:.0f} MiB (zstd); "
                 f"WAL after it {f['wal_written_bytes'] / bench.MIB:.0f} MiB written by pgbench -c 4 "
                 f"({f['wal_segments_archived']} files, {f['wal_stored_bytes'] / bench.MIB:.0f} MiB stored); "
                 f"T = {f['target_time']}. {f['cores']} cores; load average {f['load_start']} at the start, "
                 f"{f['load_end']} at the end.", "",
                 "| row | wall s | CPU s | load1 (max) |", "|---|---:|---:|---:|"]
        lines += [f"| {k.replace('|', chr(92) + '|')} | {w:.2f} | {c:.2f} | {ld:.1f} |" for k, w, c, ld in rows]
        lines += ["", "| target | wall ratio | CPU-second ratio | verdict (wall) |", "|---|---:|---:|---|"]
        lines += [f"| {n} | {w:.2f}x | {c:.2f}x | **{v}** |" for n, w, c, v in targets]
        phases = [m.get("phases") for m in self.samples["ours: restore from S3"]]
        files = max(1, f["wal_segments_archived"])
        ours = self.samples["ours: restore from S3"]
        lines += ["", f"Our restore's phases: {phases}",
                  f"Per archived WAL file ({files}): our whole restore {self.median('ours: restore from S3') / files:.2f} s wall, "
                  f"{statistics.median(m['children_cpu_seconds'] for m in ours) / files:.2f} CPU s of everything our "
                  f"restore started (server, replay, wal-fetch); the reference's "
                  f"{self.median('local tar x + cp replay', 'cpu_seconds') / files:.2f} CPU s.",
                  f"Reference extract: {[m.get('phases') for m in self.samples['local tar x + cp replay']]}"]
        text = "\n".join(lines)
        print(text)
        out = {"facts": f, "samples": self.samples, "targets": targets}
        results = REPO / "bench" / "results"
        results.mkdir(exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        (results / f"pitr-{f['scale']}-{stamp}.json").write_text(json.dumps(out, indent=2, default=str))
        (results / f"pitr-{f['scale']}-{stamp}.md").write_text(text + "\n")
        return out

    def close(self) -> None:
        if self.args.keep:
            self.pg.stop()
            log(f"kept {self.pg.home}")
        else:
            self.pg.remove()
        bench.s3_clear(self.client, self.s3["bucket"], f"{self.prefix}/")
        if self.moto:
            self.moto.stop()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", choices=sorted(bench.SCALES), default="full",
                    help="the benchmark database (full: ~1 GB, small: ~100 MB)")
    ap.add_argument("--wal-mib", type=int, help="MiB of WAL pgbench writes after the base backup "
                                                "(default: 1024 full, 128 small)")
    ap.add_argument("--repeat", type=int, default=1, help="rounds of each measurement (medians)")
    ap.add_argument("--keep", action="store_true", help="leave the cluster's directory (and the database) behind")
    bench.s3_arguments(ap)
    args = ap.parse_args(argv)
    b = Bench(args)
    try:
        b.start()
        b.base_backups()
        b.write_wal()
        b.restores()
        b.report()
    finally:
        b.close()
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_reap":
        raise SystemExit(reap_main(sys.argv[2], sys.argv[3]))
    raise SystemExit(main())
