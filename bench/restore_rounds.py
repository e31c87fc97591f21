"""What the restore benchmarks share (``restore_offsets.py``, ``restore_overlap.py``): rounds of
restores into a scratch database, each step a whole process timed side by side (a shell
pipeline, or an engine call in a fresh interpreter with a piece of the engine switched off for
"before"), checked and dropped; medians in a table; the common command line and its clean-up.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402


# -- the child: one engine restore (or a plain download) in a fresh interpreter -----------------
def child_main(spec_path: str, result_path: str) -> int:
    """``spec``: {"op": "restore", "kwargs", "offsets": bool, "follow": bool, "held": bool} or
    {"op": "download", "s3", "key"}. ``offsets: false`` switches the TOC offset recorder off,
    ``follow: false`` the overlapped restore (download, then restore), ``held: false`` the
    download's hold within ``LEAD`` of the loaders, ``frames: false`` the fetch frame by frame of a
    laid-out artifact (it is read in order), ``keys: false`` the keys and indexes built as soon as
    their table is loaded (the final ``pg_restore -j`` builds them all): "before" rows, in the
    benchmark's own child only (nothing in the product switches them off)."""
    spec = json.loads(Path(spec_path).read_text())
    import boto3  # noqa: F401  (the S3 repository imports it anyway: not timed)
    if spec["op"] == "download":
        s3 = spec["s3"]
        start = time.perf_counter()
        body = bench.s3_client(s3).get_object(Bucket=s3["bucket"], Key=spec["key"])["Body"]
        size = 0
        for chunk in iter(lambda: body.read(1024 * 1024), b""):
            size += len(chunk)
        result = {"size": size}
    else:
        operations = bench._engine()
        from ansible_collections.offsite.backup.plugins.module_utils._engine import pgcustom
        from ansible_collections.offsite.backup.plugins.module_utils._engine.sources import postgresql
        if not spec.get("offsets", True):
            pgcustom.recorder_for = lambda *args, **kwargs: None
        if not spec.get("follow", True):
            postgresql.PostgresqlSource.follows = lambda self, manifest: False
        from ansible_collections.offsite.backup.plugins.module_utils._engine.sources import postgresql_following
        if not spec.get("held", True):
            postgresql_following.LEAD = float("inf")
        if not spec.get("keys", True):
            pgcustom.EarlyPostData.take = lambda self, loaded, free: []
        if not spec.get("frames", True):
            from ansible_collections.offsite.backup.plugins.module_utils._engine.usecases import restore
            restore._frames_to_fetch = lambda *args, **kwargs: None
        start = time.perf_counter()
        result = operations.restore(**spec["kwargs"])
    Path(result_path).write_text(json.dumps({"seconds": time.perf_counter() - start, "result": result},
                                            default=str))
    return 0


def child(script: str, work: Path, spec: dict, what: str) -> dict:
    """Run ``spec`` through ``script``'s ``_child`` entry: bench.measure's figures, plus the
    call's own seconds and the restore's download time and data offsets."""
    spec_path, out = work / "restore-spec.json", work / "restore-result.json"
    spec_path.write_text(json.dumps(spec))
    m = bench.measure([sys.executable, script, "_child", str(spec_path), str(out)], what, env=bench.pg_env())
    got = json.loads(out.read_text())
    m["call_seconds"] = got["seconds"]
    result = got["result"]
    for key in ("download_seconds", "restore_seconds", "data_offsets"):
        if result.get(key) is not None:
            m[key] = result[key]
    if result.get("data_offsets"):
        m["loaded_while_downloading"] = result["data_offsets"].get("loaded_while_downloading")
    return m


def restore_spec(repository: dict, target: str, work: Path, **switches) -> dict:
    """An engine restore of the benchmark's backup into ``target`` (jobs 2, mode create)."""
    return dict({"op": "restore", "kwargs": {"name": "bench", "repository": repository, "mode": "create",
                                             "work_dir": str(work),
                                             "target": dict(bench.source_spec(target), jobs=2)}}, **switches)


# -- a round -----------------------------------------------------------------------------------
def run_steps(script: str, steps: list, target: str, facts: dict, work: Path, samples: dict) -> None:
    """Each step (name, shell command or child spec) into a fresh ``target``, after sync +
    CHECKPOINT; the restored database is checked (unless it is a download) and dropped."""
    create = f"psql -X -q -v ON_ERROR_STOP=1 -d postgres -c 'CREATE DATABASE \"{target}\"'"
    for name, step in steps:
        bench.drop_db(target)
        bench.settle()
        if isinstance(step, str):
            m = bench.shell(f"{create} && {step}", name)
        else:
            m = child(script, work, step, name)
        if not (isinstance(step, dict) and step["op"] == "download"):
            bench.check_restored(target, facts)
        bench.drop_db(target)
        samples.setdefault(name, []).append(m)
        bench.log(f"  {name}: {m['seconds']:.2f} s, {m['cpu_seconds']:.2f} CPU s, load {m['load1']:.1f}"
                  + (f", download {m['download_seconds']:.2f} s" if m.get("download_seconds") else "")
                  + (f", {m['loaded_while_downloading']} tables loaded while downloading"
                     if m.get("loaded_while_downloading") is not None else ""))


def median(samples: dict, key: str, field: str = "seconds") -> float | None:
    rows = [m[field] for m in samples.get(key) or [] if m.get(field) is not None]
    return statistics.median(rows) if rows else None


def table(samples: dict, rows: list, reference: str, download: bool = False) -> list:
    """Markdown rows: wall, x the reference row, CPU seconds of the tree (and x its CPU), load."""
    ref, ref_cpu = median(samples, reference), median(samples, reference, "cpu_seconds")
    head = ("| row | wall s | × reference | CPU s (tree) | × reference CPU | of which system |"
            + (" download s |" if download else ""))
    lines = [head + " load (1 min) |", "|---|---:|---:|---:|---:|---:|" + ("---:|" if download else "") + "---:|"]
    for key, label in rows:
        if not samples.get(key):
            continue
        wall, cpu = median(samples, key), median(samples, key, "cpu_seconds")
        down = median(samples, key, "download_seconds")
        system = median(samples, key, "sys_seconds")
        lines.append(f"| {label} | {wall:.2f} | {wall / ref:.2f} | {cpu:.2f} | {cpu / ref_cpu:.2f} |"
                     + f" {'–' if system is None else format(system, '.2f')} |"
                     + (f" {'–' if down is None else format(down, '.2f')} |" if download else "")
                     + f" {median(samples, key, 'load1'):.1f} |")
    return lines


# -- the command line and the run ----------------------------------------------------------------
def arguments(doc: str, repeat: int | None) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=sorted(bench.SCALES), default="full")
    ap.add_argument("--repeat", type=int, default=repeat, help="rounds (medians reported)")
    bench.database_argument(ap)
    ap.add_argument("--work-dir")
    ap.add_argument("--results-dir", default=str(bench.REPO / "bench" / "results"))
    bench.s3_arguments(ap)
    return ap


def run(args, kind: str, what: str, prepare, round_, markdown, cleanup=None) -> int:
    """Build/reuse the database, ``prepare(db, work, s3)`` -> context (a dict; its
    ``raw_mib`` is the archive's size), ``round_(rep, db, facts, context, work, samples)``
    ``--repeat`` times, then print and store ``markdown(samples, meta)``. Scratch databases,
    S3 objects under ``kind``/ and the work directory are removed whatever happens."""
    cfg = bench.SCALES[args.scale]
    repeat = args.repeat or cfg["repeat"]
    db = args.database or cfg["database"]
    bench.build_database(db, cfg, False)
    facts = bench.database_facts(db)
    s3, client, svc = bench.s3_bucket(args)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix=f"offsite-{kind}-"))
    work.mkdir(parents=True, exist_ok=True)
    samples: dict = {}
    load_start, started, handed_back = os.getloadavg()[0], time.time(), bench.handed_back_kib()
    context: dict = {}
    try:
        context = prepare(db, work, s3)
        for rep in range(repeat):
            bench.log(f"round {rep + 1}/{repeat}")
            round_(rep, db, facts, context, work, samples)
    finally:
        bench.drop_db(bench.scratch_database(db, kind))
        if cleanup is not None:
            cleanup(context)
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
        try:
            bench.s3_clear(client, s3["bucket"], f"{kind}/")
        except Exception:
            pass
        if svc is not None:
            svc.stop()
    meta = {"database": db, "repeat": repeat, "raw_mib": context.get("raw_mib"), "cpus": os.cpu_count(),
            "load_start": load_start, "load_end": os.getloadavg()[0], "what": what,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "handed_back_mib": None if handed_back is None else (bench.handed_back_kib() - handed_back) / 1024}
    meta.update(context.get("meta") or {})
    text, checks = markdown(samples, meta)
    print(text)
    out = Path(args.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
    (out / f"{kind}-{args.scale}-{stamp}.json").write_text(json.dumps(
        {"meta": meta, "targets": checks, "samples": samples}, indent=2, default=str))
    (out / f"{kind}-{args.scale}-{stamp}.md").write_text(text)
    bench.log(f"results: {out}/{kind}-{args.scale}-{stamp}.md")
    return 0


def main_behind_link(argv, doc: str, kind: str, what: str, prepare, round_, markdown, link_mib: list,
                     help_text: str = "MiB/s of the throttled link", cleanup=None, link: list | None = None) -> int:
    """The command line of a benchmark with a throttled link: its ``_child`` entry, or ``run``
    with ``--link-mib`` (appended to ``link_mib``, which ``prepare`` reads) and, given ``link``,
    ``--link`` (appended to it); the context's ``proxy`` or ``link`` is closed, then
    ``cleanup(context)`` runs."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_child":
        return child_main(argv[1], argv[2])
    ap = arguments(doc, None)
    ap.add_argument("--link-mib", type=float, default=40, help=help_text)
    if link is not None:
        import netlink  # here: the timed child imports this module too, and must not pay for it
        netlink.link_argument(ap)
    args = ap.parse_args(argv)
    link_mib.append(args.link_mib)
    if link is not None:
        link.append(args.link)

    def close(context):
        for key in ("proxy", "link"):
            if context.get(key) is not None:
                context[key].close()
        if cleanup is not None:
            cleanup(context)
    return run(args, kind, what, prepare, round_, markdown, cleanup=close)


def header(meta: dict, extra: str = "") -> list:
    return [f"# {meta['what']} ({meta['database']}, {meta['raw_mib']:.0f} MiB archive, {meta['repeat']} rounds, "
            f"medians{extra})", "",
            f"load average {meta['load_start']:.2f} at start, {meta['load_end']:.2f} at end; "
            f"{meta['cpus']} CPUs shared with other sessions"
            + ("" if meta.get("handed_back_mib") is None else
               f"; {meta['handed_back_mib']:.0f} MiB of free memory handed back to the host during the run "
               "(bench.handed_back_kib: touching it again costs system CPU)"), ""]
