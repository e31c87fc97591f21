"""offsite.backup performance benchmark (the issue's "Performance" section).

Builds (once) a PostgreSQL database of pgbench tables plus a table of incompressible bytes,
then times side by side, in one run, the source's limit (``pg_dump > /dev/null``), the seed
scripts' pipeline (``pg_dump | gzip > file`` + upload of the file, ``gunzip -c | psql``),
boto3's own ``upload_file`` and local ``pg_restore -j2``, against the engine's ``dump``,
``upload`` and ``restore`` (S3 = moto on loopback, started by the test harness).

Every measured step runs in its own child process; its wall time is taken around the work
itself and its peak memory is the child's ``ru_maxrss`` (for engine calls: the Python
process that runs the engine, and separately the largest process of its tree, e.g.
pg_dump or pg_restore). Results: a Markdown table on stdout and JSON in bench/results/.

    bench/run.sh                    # full: ~1 GB database, plain dump ~800 MB
    bench/run.sh --scale small      # ~100 MB, smoke-tests this script
    python bench/bench.py --help    # moto must then be given (--services-state) or it is
                                    # started in-process through tests.harness.services
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COLLECTIONS = REPO / ".cache" / "collections"
MIB = 1024 * 1024
TIME = "/usr/bin/time"  # GNU time (Debian package: time)

# pgbench scale and MiB of random bytes. Plain dump ~ 9.5 MB per pgbench scale + 2x the
# random bytes (bytea is hex in COPY): full ~ 475 + 320 = ~795 MB, database ~ 1 GB.
SCALES = {
    "full": {"pgbench_scale": 50, "random_mib": 160, "database": "offsite_bench", "repeat": 3},
    "small": {"pgbench_scale": 5, "random_mib": 16, "database": "offsite_bench_small", "repeat": 1},
    # the scale check (bench/scale_check.py): 10x full; pgbench generates it server-side (G)
    "10g": {"pgbench_scale": 500, "random_mib": 1600, "database": "offsite_bench_10g", "repeat": 1,
            "init_steps": "dtGvp"},
}
MARKER_VERSION = 1
BLOB_ROW_KIB = 64

# the engine's dump variants: (zstd level, compression_threads); MODULE_DEFAULT is what the
# dump module does when nothing is set (compression_level unset -> 1, compression_threads 0); the
# upload rows upload its artifact, so every list holds it
DUMP_VARIANTS = [(3, 0), (3, -1), (1, 0), (1, -1), (3, 1), (1, 1)]
DUMP_VARIANTS_QUICK = [(3, 0), (1, 0), (1, 1)]
MODULE_DEFAULT_DUMP = (1, 0)
# the engine's upload variants: (part_size MiB, concurrency); the repository defaults are 8/4
UPLOAD_VARIANTS = [(16, 4), (8, 4), (32, 4), (64, 4), (16, 2), (16, 8)]
DEFAULT_UPLOAD = (8, 4)
RESTORE_JOBS = [2, 4]
DEFAULT_RESTORE_JOBS = 2  # the engine's default on this machine: min(4, cpu_count)
# the settings this benchmark recommends (third column of the targets table): zstd level 1
# (level 3 costs ~2-4x the CPU on this data and compresses no better) in the reading thread
# (it outruns pg_dump; a worker thread only adds CPU on small machines), 8 MiB parts (memory
# well under 150 MB with concurrency 4), pg_restore -j2 on two cores
RECOMMENDED_DUMP = (1, 0)
RECOMMENDED_UPLOAD = (8, 4)
RECOMMENDED_RESTORE_JOBS = 2

TARGETS = {"dump_vs_pg_dump": 1.3, "upload_vs_boto3": 1.2, "seed_vs_ours": 3.0,
           "restore_vs_local": 1.15, "engine_rss_mib": 150, "encrypted_vs_plain": 1.15}


# ------------------------------------------------------------------------------------------
# child side: one engine call (or boto3 upload_file) in a fresh interpreter


def _engine():
    if str(COLLECTIONS) not in sys.path:
        sys.path.insert(0, str(COLLECTIONS))
    from ansible_collections.offsite.backup.plugins.module_utils._engine import operations
    return operations


def vm_hwm_kib() -> int:
    """This process's own peak RSS (VmHWM: per address space, reset by exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child_main(spec_path: str, result_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    op = spec["op"]
    if op == "boto3_upload":
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config
        s3 = spec["s3"]
        # timed from client creation, like the engine call (which builds its own client)
        rss_before = vm_hwm_kib()
        start = time.perf_counter()
        cfg = Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                     response_checksum_validation="when_required")
        client = boto3.client("s3", endpoint_url=s3["endpoint_url"], region_name=s3["region"],
                              aws_access_key_id=s3["access_key"], aws_secret_access_key=s3["secret_key"],
                              config=cfg)
        client.upload_file(spec["file"], s3["bucket"], spec["key"], Config=TransferConfig())
        seconds = time.perf_counter() - start
        result = {"size": os.path.getsize(spec["file"])}
    else:
        operations = _engine()
        import boto3  # noqa: F401  (imported by the s3 repository anyway: not part of the timing)
        rss_before = vm_hwm_kib()
        start = time.perf_counter()
        result = getattr(operations, op)(**spec["kwargs"])
        seconds = time.perf_counter() - start
    out = {"seconds": seconds, "rss_before_mib": rss_before / 1024,
           "self_rss_mib": vm_hwm_kib() / 1024,
           "result": result}
    Path(result_path).write_text(json.dumps(out, default=str))
    return 0


# ------------------------------------------------------------------------------------------
# parent side: helpers


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pg_env() -> dict:
    env = dict(os.environ)
    for k in ("PGPASSWORD", "PGDATABASE", "PGSERVICE"):
        env.pop(k, None)
    env.update({"PGHOST": "127.0.0.1", "PGPORT": "5432", "PGUSER": "postgres"})
    return env


def psql(db: str, sql: str) -> str:
    r = subprocess.run(["psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d", db, "-c", sql],
                       env=pg_env(), capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"psql failed on {db}: {sql[:200]}\n{r.stderr}")
    return r.stdout.strip()


def qlit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def scratch_database(db: str, what: str) -> str:
    """A database a benchmark restores into: named after ``db``, what for and this process, so
    that two benchmarks running at once never drop each other's."""
    return f"{db}_{what}_{os.getpid()}"


def drop_db(name: str) -> None:
    psql("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


REPORTED_KIB = Path("/sys/module/page_reporting/parameters/reported_kib")


def handed_back_kib() -> int | None:
    """KiB of free memory this VM has handed back to its host so far (free page reporting, a
    virtio-balloon feature), None where the kernel does not say. Memory handed back is
    faulted in again by the host when touched: on the 2-core Firecracker machines of
    2026-12-07, writing 848 MiB into a new file took 1.43 s of system CPU on such pages and
    0.16-0.19 s on pages used a moment before. A step that writes a large new file (our
    restore's work file) pays it, a step that reads a cached one (the local reference) does
    not; a run during which much was handed back measured a different machine."""
    try:
        return int(REPORTED_KIB.read_text())
    except (OSError, ValueError):
        return None


def settle() -> None:
    """Flush what the previous step left dirty so it is not billed to the next one."""
    os.sync()
    psql("postgres", "CHECKPOINT")


def pg_tool(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    cands = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                   key=lambda p: int(p.split("/")[-3]) if p.split("/")[-3].isdigit() else 0)
    if not cands:
        raise SystemExit(f"{name} not found (Debian: apt-get install postgresql-contrib or postgresql-<ver>)")
    return cands[-1]


def measure(argv: list[str], what: str, **popen) -> dict:
    """Run ``argv`` under ``/usr/bin/time``: wall time, CPU time and the peak RSS of the largest
    process of its tree. (Not wait4() on our own child: Linux starts a child's ru_maxrss at the
    RSS of the process it was forked from, and this benchmark's Python is large.)"""
    popen.setdefault("stdin", subprocess.DEVNULL)
    popen.setdefault("stdout", subprocess.DEVNULL)
    err = tempfile.TemporaryFile()
    popen.setdefault("stderr", err)
    with tempfile.NamedTemporaryFile(prefix="bench-time-", suffix=".txt") as stats:
        start = time.perf_counter()
        proc = subprocess.Popen([TIME, "-q", "-f", "%M %U %S", "-o", stats.name] + argv,
                                env=popen.pop("env", pg_env()), **popen)
        proc.wait()
        wall = time.perf_counter() - start
        fields = Path(stats.name).read_text().split()
    err.seek(0)
    text = err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}): {' '.join(argv)}\n{text[-3000:]}")
    rss_kib, user, system = int(fields[-3]), float(fields[-2]), float(fields[-1])
    return {"seconds": wall, "tree_rss_mib": rss_kib / 1024, "cpu_seconds": user + system,
            "sys_seconds": system, "load1": os.getloadavg()[0]}


def shell(cmd: str, what: str) -> dict:
    return measure(["bash", "-o", "pipefail", "-c", cmd], what)


def run_child(spec: dict, work: Path, what: str) -> dict:
    """Run one engine call / boto3 upload in a fresh interpreter; seconds are the call's own."""
    spec_path = work / "child-spec.json"
    result_path = work / "child-result.json"
    result_path.unlink(missing_ok=True)
    spec_path.write_text(json.dumps(spec))
    m = measure([sys.executable, str(Path(__file__).resolve()), "_child", str(spec_path), str(result_path)],
                what, env=pg_env())
    out = json.loads(result_path.read_text())
    spec_path.unlink()
    return {"seconds": out["seconds"], "process_seconds": m["seconds"], "tree_rss_mib": m["tree_rss_mib"],
            "py_rss_mib": out["self_rss_mib"], "py_rss_after_imports_mib": out["rss_before_mib"],
            "cpu_seconds": m["cpu_seconds"], "load1": m["load1"], "result": out["result"], "detail": _detail(out["result"])}


def _detail(result) -> dict:
    """The few numbers of an engine result worth keeping next to the timing."""
    if not isinstance(result, dict):
        return {}
    keep = {}
    for k in ("download_seconds", "restore_seconds", "duration"):
        if k in result:
            keep[k] = result[k]
    backup = result.get("backup") or {}
    for k in ("size", "raw_size", "duration"):
        if isinstance(backup, dict) and k in backup:
            keep["backup_" + k] = backup[k]
    for r in result.get("repositories") or []:
        keep["repository_duration"] = r.get("duration")
    return keep


# ------------------------------------------------------------------------------------------
# the database


def marker_for(cfg: dict) -> str:
    return (f"offsite-bench v{MARKER_VERSION} pgbench_scale={cfg['pgbench_scale']} "
            f"random_mib={cfg['random_mib']}")


def current_marker(db: str) -> str | None:
    out = psql("postgres", f"SELECT coalesce(shobj_description(oid, 'pg_database'), '') "
                           f"FROM pg_database WHERE datname = {qlit(db)}")
    return out if out else None


def build_database(db: str, cfg: dict, rebuild: bool) -> dict:
    marker = marker_for(cfg)
    have = current_marker(db)
    if have == marker and not rebuild:
        log(f"database {db}: present with marker '{marker}', reused")
        return {"built": False, "build_seconds": None}
    log(f"database {db}: building ({marker}; found {have!r})")
    start = time.perf_counter()
    drop_db(db)
    psql("postgres", f"CREATE DATABASE \"{db}\" TEMPLATE template0 ENCODING 'UTF8'")
    steps = ["-I", cfg["init_steps"]] if cfg.get("init_steps") else []
    subprocess.run([pg_tool("pgbench"), "-i", "-q", "-s", str(cfg["pgbench_scale"])] + steps + [db],
                   env=pg_env(), check=True, stdout=subprocess.DEVNULL)
    rows = cfg["random_mib"] * 1024 // BLOB_ROW_KIB
    per_row = BLOB_ROW_KIB  # KiB, 1 KiB per gen_random_bytes call
    psql(db, "CREATE TABLE bench_blobs (id int PRIMARY KEY, data bytea NOT NULL)")
    psql(db, "ALTER TABLE bench_blobs ALTER COLUMN data SET STORAGE EXTERNAL")  # no futile pglz
    try:
        psql(db, "CREATE EXTENSION IF NOT EXISTS pgcrypto")
        # correlated on i so every row gets its own bytes (an uncorrelated subquery runs once)
        gen = (f"(SELECT string_agg(gen_random_bytes(1024), ''::bytea) "
               f"FROM generate_series(1, {per_row} + 0 * i))")
    except RuntimeError:
        log("pgcrypto unavailable: md5 chains instead (slower to build)")
        gen = (f"(SELECT decode(string_agg(md5(random()::text || i || g), ''), 'hex') "
               f"FROM generate_series(1, {per_row * 64}) g)")
    batch = 256
    for first in range(1, rows + 1, batch):
        last = min(rows, first + batch - 1)
        psql(db, f"INSERT INTO bench_blobs SELECT i, {gen} FROM generate_series({first}, {last}) i")
    psql(db, "VACUUM ANALYZE")
    psql("postgres", f"COMMENT ON DATABASE \"{db}\" IS {qlit(marker)}")  # last: the build is complete
    seconds = time.perf_counter() - start
    log(f"database {db}: built in {seconds:.1f} s")
    return {"built": True, "build_seconds": seconds}


def database_facts(db: str) -> dict:
    size = int(psql(db, "SELECT pg_database_size(current_database())"))
    blobs = int(psql(db, "SELECT coalesce(sum(octet_length(data)), 0) FROM bench_blobs"))
    accounts = int(psql(db, "SELECT count(*) FROM pgbench_accounts"))
    return {"database_bytes": size, "random_bytes": blobs, "pgbench_accounts_rows": accounts,
            "server_version": psql(db, "SHOW server_version")}


def check_restored(db: str, facts: dict) -> None:
    rows = int(psql(db, "SELECT count(*) FROM pgbench_accounts"))
    blobs = int(psql(db, "SELECT coalesce(sum(octet_length(data)), 0) FROM bench_blobs"))
    if rows != facts["pgbench_accounts_rows"] or blobs != facts["random_bytes"]:
        raise RuntimeError(f"restored database {db} differs: {rows} rows, {blobs} random bytes")


# ------------------------------------------------------------------------------------------
# S3 (moto through the harness)


def s3_settings(args) -> tuple[dict, object]:
    """Endpoint and the IAM key of the harness's moto; starts one here if none was given."""
    svc = None
    if args.services_state:
        state = json.loads(Path(args.services_state).read_text())["moto"]
    elif args.endpoint_url:
        state = {"endpoint_url": args.endpoint_url, "access_key": args.access_key,
                 "secret_key": args.secret_key, "region": "us-east-1"}
    else:
        sys.path.insert(0, str(REPO))
        from tests.harness.services import MotoS3
        svc = MotoS3().start()
        state = svc.to_state()
        log(f"moto started in-process on {svc.endpoint_url}")
    s3 = {"endpoint_url": state["endpoint_url"], "access_key": state["access_key"],
          "secret_key": state["secret_key"], "region": state.get("region") or "us-east-1",
          "bucket": "offsite-bench"}
    return s3, svc


def database_argument(ap) -> None:
    """--database: the benchmark database to build or reuse, instead of the scale's default
    name (two benchmarks of different scales or versions at once must not share one)."""
    ap.add_argument("--database", help="database to build/reuse (default: the scale's, e.g. offsite_bench)")


def s3_arguments(ap) -> None:
    """The options s3_settings reads: the harness's state file, or an endpoint and its keys."""
    ap.add_argument("--services-state", help="state file of `python -m tests.harness.services up`")
    ap.add_argument("--endpoint-url")
    ap.add_argument("--access-key")
    ap.add_argument("--secret-key")


def s3_bucket(args) -> tuple[dict, object, object]:
    """s3_settings, a client, and the benchmark's bucket created if missing: (s3, client, svc)."""
    s3, svc = s3_settings(args)
    client = s3_client(s3)
    try:
        client.create_bucket(Bucket=s3["bucket"])
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    return s3, client, svc


def s3_client(s3: dict):
    import boto3
    from botocore.config import Config
    cfg = Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                 response_checksum_validation="when_required")
    return boto3.client("s3", endpoint_url=s3["endpoint_url"], region_name=s3["region"],
                        aws_access_key_id=s3["access_key"], aws_secret_access_key=s3["secret_key"], config=cfg)


def s3_clear(client, bucket: str, prefix: str = "") -> None:
    """Delete objects (moto keeps them all in memory)."""
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys})


def repo_options(s3: dict, prefix: str, part_size: int | None = None, concurrency: int | None = None) -> dict:
    opts = {"type": "s3", "bucket": s3["bucket"], "prefix": prefix, "endpoint_url": s3["endpoint_url"],
            "region": s3["region"], "access_key": s3["access_key"], "secret_key": s3["secret_key"]}
    if part_size is not None:
        opts["part_size"] = part_size
    if concurrency is not None:
        opts["concurrency"] = concurrency
    return opts


# ------------------------------------------------------------------------------------------
# the run


def record(samples: dict, key: str, m: dict) -> dict:
    samples.setdefault(key, []).append(m)
    extra = f", py {m['py_rss_mib']:.0f} MiB" if "py_rss_mib" in m else ""
    if m.get("detail"):
        extra += " " + json.dumps(m["detail"])
    log(f"  {key}: {m['seconds']:.2f} s, tree max RSS {m['tree_rss_mib']:.0f} MiB{extra}")
    return m


def source_spec(db: str) -> dict:
    return {"type": "postgresql", "database": db, "host": "127.0.0.1", "port": 5432, "user": "postgres"}


def run_round(rep: int, args, db: str, facts: dict, s3: dict, client, work: Path, samples: dict,
              sizes: dict) -> None:
    pg_dump = pg_tool("pg_dump")
    pg_restore = pg_tool("pg_restore")
    quick = args.quick
    log(f"round {rep + 1}/{args.repeat}")

    # -- dump side ---------------------------------------------------------------------
    settle()
    record(samples, "pg_dump_plain_null", shell(f"{pg_dump} {db} > /dev/null", "pg_dump"))
    settle()
    record(samples, "pg_dump_custom_z0_null", shell(f"{pg_dump} -Fc -Z0 {db} > /dev/null", "pg_dump -Fc"))

    seed_file = work / "seed.sql.gz"
    settle()
    record(samples, "seed_dump_gzip", shell(f"{pg_dump} {db} | gzip > {seed_file}", "pg_dump | gzip"))
    sizes["seed_sql_gz"] = seed_file.stat().st_size
    settle()
    record(samples, "seed_upload_boto3", run_child(
        {"op": "boto3_upload", "s3": s3, "file": str(seed_file), "key": f"seed/r{rep}.sql.gz"},
        work, "boto3 upload_file (seed)"))
    s3_clear(client, s3["bucket"], "seed/")

    artifact = None
    for level, threads in (DUMP_VARIANTS_QUICK if quick else DUMP_VARIANTS):
        dest = work / f"dump-l{level}-t{threads}"
        shutil.rmtree(dest, ignore_errors=True)
        settle()
        m = record(samples, f"ours_dump_l{level}_t{threads}", run_child(
            {"op": "dump", "kwargs": {"name": "bench", "source": source_spec(db), "dest": str(dest),
                                      "compression": "zstd", "level": level, "threads": threads}},
            work, f"dump level {level} threads {threads}"))
        sizes[f"ours_l{level}"] = m["result"]["backup"]["size"]
        sizes["raw_custom"] = m["result"]["backup"].get("raw_size")
        if (level, threads) == MODULE_DEFAULT_DUMP:
            artifact = m["result"]["backup"]["path"]
        else:
            shutil.rmtree(dest, ignore_errors=True)

    # -- upload side: the module-default artifact ------------------------------------
    for part_size, concurrency in ([DEFAULT_UPLOAD] if quick else UPLOAD_VARIANTS):
        prefix = f"up-p{part_size}-c{concurrency}-r{rep}"
        settle()
        record(samples, f"ours_upload_p{part_size}_c{concurrency}", run_child(
            {"op": "upload", "kwargs": {"backup": artifact,
                                        "repositories": [repo_options(s3, prefix, part_size, concurrency)]}},
            work, f"upload part {part_size} concurrency {concurrency}"))
        s3_clear(client, s3["bucket"], prefix + "/")
        settle()
        record(samples, "boto3_upload_file", run_child(
            {"op": "boto3_upload", "s3": s3, "file": artifact, "key": f"boto3/r{rep}-{part_size}-{concurrency}"},
            work, "boto3 upload_file"))
        s3_clear(client, s3["bucket"], "boto3/")

    run_encrypted(rep, db, s3, client, work, samples, sizes)

    # the backup our restore reads: uploaded with the defaults, not timed
    restore_prefix = f"restore-r{rep}"
    _engine().upload(artifact, [repo_options(s3, restore_prefix)])

    # -- restore side ----------------------------------------------------------------
    local_custom = work / "local.dump"
    local_dir = work / "local.dir"
    if not local_custom.exists():
        subprocess.run([pg_dump, "-Fc", "-Z0", "-f", str(local_custom), db], env=pg_env(), check=True)
        sizes["local_custom_z0"] = local_custom.stat().st_size
    if not local_dir.exists() and not quick:
        subprocess.run([pg_dump, "-Fd", "-Z0", "-f", str(local_dir), db], env=pg_env(), check=True)

    target = scratch_database(db, "restored")
    create = f"psql -X -q -v ON_ERROR_STOP=1 -d postgres -c 'CREATE DATABASE \"{target}\"'"

    def restore_step(key: str, cmd: str | None = None, spec: dict | None = None) -> None:
        drop_db(target)
        settle()
        if cmd:
            record(samples, key, shell(f"{create} && {cmd}", key))
        else:
            record(samples, key, run_child(spec, work, key))
        check_restored(target, facts)
        drop_db(target)

    restore_step("seed_restore_gunzip_psql",
                 f"gunzip -c {seed_file} | psql -X -q -v ON_ERROR_STOP=1 -d \"{target}\" > /dev/null")
    for jobs in ([DEFAULT_RESTORE_JOBS] if quick else RESTORE_JOBS):
        restore_step(f"local_pg_restore_custom_j{jobs}",
                     f"{pg_restore} --exit-on-error -j {jobs} -d \"{target}\" {local_custom}")
    if not quick:
        restore_step("local_pg_restore_dir_j2",
                     f"{pg_restore} --exit-on-error -j 2 -d \"{target}\" {local_dir}")
    for jobs in ([DEFAULT_RESTORE_JOBS] if quick else RESTORE_JOBS):
        tgt = dict(source_spec(target), jobs=jobs)
        restore_step(f"ours_restore_s3_j{jobs}", spec={
            "op": "restore", "kwargs": {"name": "bench", "repository": repo_options(s3, restore_prefix),
                                        "target": tgt, "mode": "create", "work_dir": str(work)}})
    s3_clear(client, s3["bucket"], restore_prefix + "/")
    shutil.rmtree(Path(artifact).parent.parent, ignore_errors=True)


def age_recipient(work: Path) -> str:
    """The public key of a throwaway age identity in ``work`` (made on first use)."""
    identity = work / "bench.agekey"
    if not identity.exists():
        subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
    return subprocess.run(["age-keygen", "-y", str(identity)], check=True, capture_output=True,
                          text=True).stdout.strip()


def run_encrypted(rep: int, db: str, s3: dict, client, work: Path, samples: dict, sizes: dict) -> None:
    """Issue 5: the module-default dump + upload again, with age encryption (one recipient)
    between compression and hashing; compared with the same rows unencrypted."""
    public = age_recipient(work)
    level, threads = MODULE_DEFAULT_DUMP
    dest = work / "dump-age"
    shutil.rmtree(dest, ignore_errors=True)
    settle()
    m = record(samples, "ours_dump_age", run_child(
        {"op": "dump", "kwargs": {"name": "bench", "source": source_spec(db), "dest": str(dest),
                                  "compression": "zstd", "level": level, "threads": threads,
                                  "encryption": {"recipients": [public]}}},
        work, "dump level %d threads %d, age" % (level, threads)))
    sizes["ours_age"] = m["result"]["backup"]["size"]
    prefix = f"up-age-r{rep}"
    settle()
    record(samples, "ours_upload_age", run_child(
        {"op": "upload", "kwargs": {"backup": m["result"]["backup"]["path"],
                                    "repositories": [repo_options(s3, prefix, *DEFAULT_UPLOAD)]}},
        work, "upload of the age artifact"))
    s3_clear(client, s3["bucket"], prefix + "/")
    shutil.rmtree(dest, ignore_errors=True)


# ------------------------------------------------------------------------------------------
# report


def med(samples: dict, key: str, field: str = "seconds") -> float | None:
    vals = [s[field] for s in samples.get(key, []) if s.get(field) is not None]
    return statistics.median(vals) if vals else None


def mx(samples: dict, key: str, field: str) -> float | None:
    vals = [s[field] for s in samples.get(key, []) if s.get(field) is not None]
    return max(vals) if vals else None


ROWS = [
    # key, label
    ("pg_dump_plain_null", "`pg_dump > /dev/null` (plain; the source's limit)"),
    ("pg_dump_custom_z0_null", "`pg_dump -Fc -Z0 > /dev/null`"),
    ("seed_dump_gzip", "seed: `pg_dump | gzip > file`"),
    ("seed_upload_boto3", "seed: boto3 `upload_file` of the .sql.gz"),
    ("ours_dump_l3_t-1", "ours: dump (module default: zstd 3, threads -1)"),
    ("ours_dump_l3_t0", "ours: dump zstd 3, threads 0"),
    ("ours_dump_l3_t1", "ours: dump zstd 3, threads 1"),
    ("ours_dump_l1_t-1", "ours: dump zstd 1, threads -1"),
    ("ours_dump_l1_t0", "ours: dump zstd 1, threads 0"),
    ("ours_dump_l1_t1", "ours: dump zstd 1, threads 1"),
    ("boto3_upload_file", "boto3 `upload_file` of our artifact"),
    ("ours_upload_p16_c4", "ours: upload (defaults: part 16 MiB, concurrency 4)"),
    ("ours_upload_p8_c4", "ours: upload part 8, concurrency 4"),
    ("ours_upload_p32_c4", "ours: upload part 32, concurrency 4"),
    ("ours_upload_p64_c4", "ours: upload part 64, concurrency 4"),
    ("ours_upload_p16_c2", "ours: upload part 16, concurrency 2"),
    ("ours_upload_p16_c8", "ours: upload part 16, concurrency 8"),
    ("seed_restore_gunzip_psql", "seed: `gunzip -c file | psql` (local file)"),
    ("local_pg_restore_custom_j2", "local `pg_restore -j2` of a custom -Z0 file"),
    ("local_pg_restore_custom_j4", "local `pg_restore -j4` of a custom -Z0 file"),
    ("local_pg_restore_dir_j2", "local `pg_restore -j2` of a directory -Z0 dump"),
    ("ours_restore_s3_j2", "ours: restore from S3 (jobs 2, the default here)"),
    ("ours_restore_s3_j4", "ours: restore from S3 (jobs 4)"),
]


def fmt(v, spec=".2f", none="–"):
    return none if v is None else format(v, spec)


def low(samples: dict, key: str, field: str = "seconds") -> float | None:
    vals = [s[field] for s in samples.get(key, []) if s.get(field) is not None]
    return min(vals) if vals else None


DEFAULT_KEYS = {"dump": "ours_dump_l%d_t%d" % MODULE_DEFAULT_DUMP,
                "upload": "ours_upload_p%d_c%d" % DEFAULT_UPLOAD,
                "restore": f"ours_restore_s3_j{DEFAULT_RESTORE_JOBS}"}
RECOMMENDED_KEYS = {"dump": "ours_dump_l%d_t%d" % RECOMMENDED_DUMP,
                    "upload": "ours_upload_p%d_c%d" % RECOMMENDED_UPLOAD,
                    "restore": f"ours_restore_s3_j{RECOMMENDED_RESTORE_JOBS}"}


def evaluate(samples: dict, stat=med, keys: dict | None = None) -> tuple[list, dict]:
    """The issue's targets. ``stat``: med or low (best of N); ``keys``: which engine rows
    stand for dump/upload/restore (default: the module defaults)."""
    keys = keys or DEFAULT_KEYS
    base = stat(samples, "pg_dump_plain_null")
    our_dump = stat(samples, keys["dump"])
    our_up = stat(samples, keys["upload"])
    boto_up = stat(samples, "boto3_upload_file")
    seed_parts = (stat(samples, "seed_dump_gzip"), stat(samples, "seed_upload_boto3"))
    seed = sum(seed_parts) if None not in seed_parts else None
    our_restore = stat(samples, keys["restore"])
    seed_restore = stat(samples, "seed_restore_gunzip_psql")
    local = [v for v in (stat(samples, "local_pg_restore_custom_j2"), stat(samples, "local_pg_restore_dir_j2"))
             if v is not None]
    best_local = min(local) if local else None
    engine_keys = [k for k in keys.values() if k in samples]  # the settings under evaluation
    py_peak = max((mx(samples, k, "py_rss_mib") or 0) for k in engine_keys) if engine_keys else None
    tree_peak = max((mx(samples, k, "tree_rss_mib") or 0) for k in engine_keys) if engine_keys else None

    def ratio(a, b):
        return a / b if a is not None and b else None

    checks = []
    r = ratio(our_dump, base)
    checks.append(("dump ≤ 1.3× `pg_dump > /dev/null`", f"{fmt(our_dump)} / {fmt(base)} s = {fmt(r)}×",
                   r is not None and r <= TARGETS["dump_vs_pg_dump"]))
    r = ratio(our_up, boto_up)
    checks.append(("upload ≤ 1.2× boto3 `upload_file`", f"{fmt(our_up)} / {fmt(boto_up)} s = {fmt(r)}×",
                   r is not None and r <= TARGETS["upload_vs_boto3"]))
    ours_total = our_dump + our_up if our_dump is not None and our_up is not None else None
    r = ratio(seed, ours_total)
    checks.append(("dump+upload ≥ 3× faster than seed (gzip + upload)",
                   f"{fmt(seed)} / {fmt(ours_total)} s = {fmt(r)}× faster",
                   r is not None and r >= TARGETS["seed_vs_ours"]))
    checks.append(("restore from S3 faster than seed `gunzip | psql`",
                   f"{fmt(our_restore)} vs {fmt(seed_restore)} s",
                   our_restore is not None and seed_restore is not None and our_restore < seed_restore))
    r = ratio(our_restore, best_local)
    checks.append(("restore from S3 ≤ 1.15× best local `pg_restore -j2`",
                   f"{fmt(our_restore)} / {fmt(best_local)} s = {fmt(r)}×",
                   r is not None and r <= TARGETS["restore_vs_local"]))
    enc_parts = (stat(samples, "ours_dump_age"), stat(samples, "ours_upload_age"))
    enc_total = sum(enc_parts) if None not in enc_parts else None
    r = ratio(enc_total, ours_total)
    checks.append(("encrypted (age) dump+upload ≤ 1.15× unencrypted", f"{fmt(enc_total)} / {fmt(ours_total)} s = {fmt(r)}×",
                   r is not None and r <= TARGETS["encrypted_vs_plain"]))
    enc_peak = max((mx(samples, k, "py_rss_mib") or 0) for k in ("ours_dump_age", "ours_upload_age"))
    enc_tree = max((mx(samples, k, "tree_rss_mib") or 0) for k in ("ours_dump_age", "ours_upload_age"))
    checks.append(("peak memory of the encrypted run < 150 MB",
                   f"{fmt(enc_peak, '.0f')} MiB (largest process incl. pg_dump/age: {fmt(enc_tree, '.0f')} MiB)",
                   bool(enc_peak) and enc_peak * MIB < TARGETS["engine_rss_mib"] * 1000 * 1000))
    checks.append(("peak memory of our engine processes < 150 MB",
                   f"{fmt(py_peak, '.0f')} MiB (largest process incl. pg_dump/pg_restore: {fmt(tree_peak, '.0f')} MiB)",
                   py_peak is not None and py_peak * MIB < TARGETS["engine_rss_mib"] * 1000 * 1000))
    summary = {"pg_dump_plain": base, "ours_dump": our_dump, "ours_upload": our_up, "boto3_upload": boto_up,
               "seed_dump_upload": seed, "ours_dump_upload": ours_total, "ours_restore": our_restore,
               "seed_restore": seed_restore, "best_local_restore": best_local, "engine_py_peak_mib": py_peak,
               "engine_tree_peak_mib": tree_peak, "keys": keys, "ours_encrypted_dump_upload": enc_total}
    return checks, summary


def best_of(samples: dict, prefix: str) -> tuple[str | None, float | None]:
    found = [(med(samples, k), k) for k in samples if k.startswith(prefix)]
    found = [f for f in found if f[0] is not None]
    if not found:
        return None, None
    v, k = min(found)
    return k, v


def markdown(samples: dict, meta: dict) -> str:
    base = med(samples, "pg_dump_plain_null")
    lines = [f"## offsite.backup benchmark ({meta['scale']}, {meta['repeat']} round(s), median)", "",
             f"Database `{meta['database']}`: {meta['facts']['database_bytes'] / MIB:.0f} MiB "
             f"(random bytes {meta['facts']['random_bytes'] / MIB:.0f} MiB, "
             f"{meta['facts']['pgbench_accounts_rows']} pgbench_accounts rows), "
             f"PostgreSQL {meta['facts']['server_version']}, {meta['cpus']} CPUs, load average "
             f"{meta['load_start']:.1f} at start, {meta['load_end']:.1f} at end (other work on the machine "
             f"inflates wall times; CPU s is the steadier figure). "
             f"Sizes: custom -Z0 {fmt((meta['sizes'].get('local_custom_z0') or 0) / MIB, '.0f')} MiB, "
             f"seed .sql.gz {fmt((meta['sizes'].get('seed_sql_gz') or 0) / MIB, '.0f')} MiB, "
             f"ours zstd 3 {fmt((meta['sizes'].get('ours_l3') or 0) / MIB, '.0f')} MiB, "
             f"zstd 1 {fmt((meta['sizes'].get('ours_l1') or 0) / MIB, '.0f')} MiB.", "",
             "| step | wall s (median) | min–max | × pg_dump>/dev/null | CPU s | peak RSS MiB: engine py / largest process |",
             "|---|---:|---:|---:|---:|---:|"]
    for key, label in ROWS:
        if key not in samples:
            continue
        vals = [s["seconds"] for s in samples[key]]
        py = mx(samples, key, "py_rss_mib")
        tree = mx(samples, key, "tree_rss_mib")
        mem = f"{fmt(py, '.0f')} / {fmt(tree, '.0f')}" if py is not None else f"– / {fmt(tree, '.0f')}"
        lines.append(f"| {label} | {med(samples, key):.2f} | {min(vals):.2f}–{max(vals):.2f} | "
                     f"{fmt(med(samples, key) / base if base else None)} | {fmt(med(samples, key, 'cpu_seconds'), '.1f')} | {mem} |")
    checks, summary = evaluate(samples)
    k, v = best_of(samples, "ours_dump_")
    k2, v2 = best_of(samples, "ours_upload_")
    k3, v3 = best_of(samples, "ours_restore_")
    fastest = {"dump": k, "upload": k2, "restore": k3}
    have_recommended = all(v in samples for v in RECOMMENDED_KEYS.values())
    variants = {"defaults, median": checks, "defaults, best of N": evaluate(samples, low)[0],
                "recommended settings, median": evaluate(samples, med, RECOMMENDED_KEYS)[0] if have_recommended else []}
    names = list(variants)
    lines += ["", "| target | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for i, (name, dummy, dummy2) in enumerate(checks):
        cells = []
        for n in names:
            if i < len(variants[n]):
                dummy, text, ok = variants[n][i]
                cells.append(f"{text} **{'PASS' if ok else 'MISS'}**")
            else:
                cells.append("–")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    summary["targets_by_variant"] = {n: [{"target": c[0], "measured": c[1], "pass": c[2]} for c in cs]
                                     for n, cs in variants.items()}
    summary["fastest"] = fastest
    custom = med(samples, "pg_dump_custom_z0_null")
    if custom:
        stricter = ", ".join(f"{key} {med(samples, key) / custom:.2f}×" for key, dummy in ROWS
                             if key.startswith("ours_dump_") and key in samples)
        lines += ["", f"Stricter reference, the same format as ours: `pg_dump -Fc -Z0 > /dev/null` "
                      f"{custom:.2f} s; dump ratios against it: {stricter}."]
    sweep_peak = max((mx(samples, key, "py_rss_mib") or 0) for key in samples if key.startswith("ours_"))
    lines += ["", "Defaults: " + ", ".join(f"{n} `{key}`" for n, key in DEFAULT_KEYS.items())
              + "; recommended: " + ", ".join(f"{n} `{key}`" for n, key in RECOMMENDED_KEYS.items()) + ".",
              f"Fastest measured (median): dump `{k}` ({fmt(v)} s), upload `{k2}` ({fmt(v2)} s), "
              f"restore `{k3}` ({fmt(v3)} s). Largest engine process over every variant: {sweep_peak:.0f} MiB "
              f"(upload memory is about part_size × concurrency plus the interpreter, boto3 and its client)."]
    return "\n".join(lines) + "\n", checks, summary


# ------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "_child":
        return child_main(argv[1], argv[2])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=sorted(SCALES), default="full")
    ap.add_argument("--repeat", type=int, help="rounds (median reported); default 3 full, 1 small")
    ap.add_argument("--quick", action="store_true", help="only the rows the targets need (no sweeps)")
    database_argument(ap)
    ap.add_argument("--rebuild", action="store_true", help="rebuild the database even if its marker matches")
    ap.add_argument("--work-dir", help="scratch directory for dumps (default: a new one under $TMPDIR)")
    ap.add_argument("--results-dir", default=str(REPO / "bench" / "results"))
    s3_arguments(ap)
    args = ap.parse_args(argv)
    cfg = SCALES[args.scale]
    args.repeat = args.repeat or cfg["repeat"]
    db = args.database or cfg["database"]

    build = build_database(db, cfg, args.rebuild)
    facts = database_facts(db)
    s3, client, svc = s3_bucket(args)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="offsite-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    samples: dict = {}
    sizes: dict = {}
    started = time.time()
    load_start = os.getloadavg()[0]
    try:
        log("warm-up: pg_dump > /dev/null (untimed; the database is read into the page cache)")
        shell(f"{pg_tool('pg_dump')} {db} > /dev/null", "warm-up")
        for rep in range(args.repeat):
            run_round(rep, args, db, facts, s3, client, work, samples, sizes)
    finally:
        drop_db(scratch_database(db, "restored"))
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
        try:
            s3_clear(client, s3["bucket"])
        except Exception:
            pass
        if svc is not None:
            svc.stop()
    meta = {"scale": args.scale, "repeat": args.repeat, "database": db, "facts": facts, "sizes": sizes,
            "cpus": os.cpu_count(), "build": build, "config": cfg, "python": platform.python_version(),
            "zstandard": _version("zstandard"), "boto3": _version("boto3"), "moto": _version("moto"),
            "pg_dump": subprocess.run([pg_tool("pg_dump"), "--version"], capture_output=True, text=True,
                                      check=False).stdout.strip(),
            "load_start": load_start, "load_end": os.getloadavg()[0],
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "duration_seconds": round(time.time() - started, 1)}
    text, checks, summary = markdown(samples, meta)
    print(text)
    out_dir = Path(args.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
    data = {"meta": meta, "summary": summary,
            "targets": [{"target": n, "measured": t, "pass": ok} for n, t, ok in checks],
            "samples": {k: [{f: v for f, v in s.items() if f != "result"} for s in vals] for k, vals in samples.items()}}
    (out_dir / f"bench-{args.scale}-{stamp}.json").write_text(json.dumps(data, indent=2, default=str))
    (out_dir / f"bench-{args.scale}-{stamp}.md").write_text(text)
    log(f"results: {out_dir}/bench-{args.scale}-{stamp}.json (.md)")
    return 0


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version
        return version(module)
    except Exception:
        return None


if __name__ == "__main__":
    sys.exit(main())
