"""Kill the engine at a chosen point of its work: the fault-injection driver of the tests.

    OFFSITE_FAULT='{"label": "put s3 manifest", "nth": 1}' \\
    OFFSITE_FAULT_TRACE=/tmp/trace python -m tests.harness.faults run JOB.yml [--json]
    python -m tests.harness.faults snapshot '{"name": ..., "source": ..., "repository": ...}'

Runs the ``offsite-backup`` command (``cli.main``, the code cron runs; or, with ``snapshot``,
``operations.snapshot`` as the module calls it) after wrapping the
engine's phase boundaries *in this process only*: nothing in the product knows about faults.
Each boundary reached is a label; with ``OFFSITE_FAULT_TRACE`` set, every label is appended to
that file as it is reached (one a line), so a clean run lists the boundaries a run has:

    dump running                 pg_dump (or tar) started, nothing written yet
    before|after rename artifact|manifest     os.rename of a local file into place
                                  (the local copy's artifact and manifest, a local repository's)
    before|after put <type> artifact|manifest|proven     a repository's put / put_bytes
    before|after delete <type> artifact|manifest|proven|partial    retention deleting
    before get <type>             a download starts
    before|after prune restic     restic prune after a retention run's forgets
    before|after rsync <doing>    each rsync an rsync repository runs (uploading, writing a
                                  snapshot, linking it, deleting, listing...)
    before|after sql <what>       PostgreSQL statements of a restore (scratch, swap, drop)
    before|after load             pg_restore / psql loading the scratch database (loading
                                  while downloading: its final pg_restore -j, after the checksum)

``OFFSITE_FAULT`` (JSON) says where the process SIGKILLs itself:

    {"label": L, "nth": N}            when label L is reached for the N-th time
    {"stream": S, "bytes": K}         once K bytes went through stream S: "dump" (the bytes the
                                      dump writes), "put <type>" (a put's reader), "get <type>"

SIGKILL of itself is what an OOM killer or ``kill -9`` does: no handler, no ``finally``, the
children (pg_dump, pg_restore, restic, ssh) lose their parent. The driver only decides *when*.
"""

from __future__ import annotations

import functools
import json
import os
import random
import re
import signal
import sys
import threading
from pathlib import Path

COLLECTIONS = str(Path(__file__).resolve().parents[2] / ".cache" / "collections")
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)

SCRATCH_NAME = re.compile(r'\S+_(restore|previous)_[0-9a-f]{8}')
PARTIAL, MANIFEST, PROVEN = ".partial", ".manifest.json", ".proven.json"


def seed() -> int:
    """The seed of this test session's fault choices: ``OFFSITE_FAULT_SEED``, or a fresh one
    that is put there, so that pytest's header and every test of the session agree."""
    if not os.environ.get("OFFSITE_FAULT_SEED"):
        os.environ["OFFSITE_FAULT_SEED"] = str(random.SystemRandom().randrange(1, 2 ** 31))
    return int(os.environ["OFFSITE_FAULT_SEED"])


class Injector:
    """Counts labels and bytes; SIGKILLs this process at the fault."""

    def __init__(self, fault: dict | None, trace: str | None):
        self.fault = fault or {}
        self.trace = open(trace, "a", buffering=1) if trace else None
        self.lock = threading.Lock()
        self.seen: dict[str, int] = {}

    def reached(self, label: str) -> None:
        with self.lock:
            count = self.seen[label] = self.seen.get(label, 0) + 1
            if self.trace:
                self.trace.write(label + "\n")
            if self.fault.get("label") == label and self.fault.get("nth", 1) == count:
                self.kill()

    def passed(self, stream: str, total: int) -> None:
        if self.fault.get("stream") == stream and total >= self.fault["bytes"]:
            with self.lock:
                self.kill()

    def kill(self) -> None:
        if self.trace:
            self.trace.write("KILLED\n")
            self.trace.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def key_kind(key: str) -> str:
    if key.endswith(PARTIAL):
        return "partial"
    for suffix, kind in ((MANIFEST, "manifest"), (PROVEN, "proven")):
        if key.endswith(suffix):
            return kind
    return "artifact"


class Counting:
    """A reader (or writer) that reports the bytes passing through it."""

    def __init__(self, inner, stream: str, injector: Injector):
        self.inner, self.stream, self.injector, self.total = inner, stream, injector, 0

    def read(self, *args):
        data = self.inner.read(*args)
        self.total += len(data)
        self.injector.passed(self.stream, self.total)
        return data

    def write(self, data):
        # count first: a fault at K bytes leaves at most K bytes written
        self.total += len(data)
        self.injector.passed(self.stream, self.total)
        return self.inner.write(data)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def install(injector: Injector) -> None:
    from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories import TYPES
    from ansible_collections.offsite.backup.plugins.module_utils._engine.sources import postgresql, postgresql_following
    from ansible_collections.offsite.backup.plugins.module_utils._engine.usecases import dump as dumping

    reached = injector.reached

    def around(label_of, function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            label = label_of(*args, **kwargs)
            reached("before " + label)
            result = function(*args, **kwargs)
            reached("after " + label)
            return result
        return wrapper

    real_rename = os.rename
    os.rename = around(lambda src, dst, *a, **k: "rename " + key_kind(str(dst)), real_rename)

    real_compress = dumping.compress

    def compress(reader, sink, *args, **kwargs):
        reached("dump running")
        return real_compress(reader, Counting(sink, "dump", injector), *args, **kwargs)
    dumping.compress = compress

    for repo_class in set(TYPES.values()):
        kind = repo_class.type

        def put(self, key, reader, size, sha256, _real=repo_class.put, _kind=kind, **local):
            label = "put %s %s" % (_kind, key_kind(key))
            reached("before " + label)
            result = _real(self, key, Counting(reader, "put " + _kind, injector), size, sha256, **local)
            reached("after " + label)
            return result

        def get(self, key, _real=repo_class.get, _kind=kind):
            reached("before get " + _kind)
            return _counting_get(_real(self, key), "get " + _kind, injector)

        repo_class.put = put
        repo_class.get = get
        repo_class.delete = around(lambda self, key, _kind=kind: "delete %s %s" % (_kind, key_kind(key)),
                                   repo_class.delete)
        if hasattr(repo_class, "prune"):
            repo_class.prune = around(lambda self, _kind=kind: "prune " + _kind, repo_class.prune)
        if hasattr(repo_class, "rsync"):
            repo_class.rsync = around(lambda self, args, doing, *a, **k: "rsync " + doing, repo_class.rsync)

    pg = postgresql.PostgresqlSource
    pg._psql = around(lambda self, sql, database, what: "sql " + SCRATCH_NAME.sub("<scratch>", what), pg._psql)
    pg._load = around(lambda *a, **k: "load", pg._load)
    # a restore that loads while downloading: its last step, after the checksum, is the load
    following = postgresql_following.FollowingLoad
    following.finish = around(lambda *a, **k: "load", following.finish)


class _counting_get:
    """The context manager ``get`` returns, yielding a counting reader."""

    def __init__(self, manager, stream, injector):
        self.manager, self.stream, self.injector = manager, stream, injector

    def __enter__(self):
        return Counting(self.manager.__enter__(), self.stream, self.injector)

    def __exit__(self, *exc):
        return self.manager.__exit__(*exc)


def main(argv=None) -> int:
    fault = json.loads(os.environ.get("OFFSITE_FAULT") or "null")
    install(Injector(fault, os.environ.get("OFFSITE_FAULT_TRACE")))
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["snapshot"]:
        from ansible_collections.offsite.backup.plugins.module_utils._engine import operations
        print(json.dumps(operations.snapshot(**json.loads(argv[1])), default=str))
        return 0
    from ansible_collections.offsite.backup.plugins.module_utils._engine import cli
    return cli.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
