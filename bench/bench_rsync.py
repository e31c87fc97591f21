"""rsync snapshots: what an incremental snapshot of a tree where 1 % of the files changed costs
compared with the first, full one (issue 3's target: transfer and store under 5 % of a full copy).

Runs the engine's own snapshot operation (the code behind offsite.backup.snapshot) against the
test harness's OpenSSH sshd on loopback:

    .venv/bin/python bench/bench_rsync.py [--files 10000] [--size 4096] [--changed 0.01]

1. a tree of --files files of --size random bytes in 100 directories;
2. snapshot 1 (full), then --changed of the files rewritten (same size, new bytes);
3. snapshot 2 (--link-dest snapshot 1): rsync's "Total bytes sent" over snapshot 1's, and the
   disk the second snapshot adds on the server (du counts hard links once) over the first's;
4. the second snapshot is restored and compared with the tree.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / ".cache" / "collections"))

from tests.harness.services import Sshd  # noqa: E402  (needs the paths above)
from ansible_collections.offsite.backup.plugins.module_utils._engine import operations  # noqa: E402

TARGET = 0.05


def du(*paths: Path) -> list[int]:
    """Allocated bytes of each path as one du run sees them: a hard link counts once, for the
    first path that holds it."""
    out = subprocess.run(["du", "-s", "--block-size=1", *map(str, paths)], capture_output=True, text=True,
                         check=True).stdout
    return [int(line.split()[0]) for line in out.splitlines()]


def make_tree(root: Path, files: int, size: int) -> list[Path]:
    made = []
    for i in range(files):
        d = root / f"dir{i % 100:03d}"
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"file{i:05d}.bin"
        p.write_bytes(os.urandom(size))
        made.append(p)
    return made


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--size", type=int, default=4096, help="bytes per file")
    ap.add_argument("--changed", type=float, default=0.01, help="share of the files changed")
    ap.add_argument("--json", help="write the figures to this file too")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="offsite-bench-rsync-"))
    try:
        with Sshd(user="offsite-bench") as sshd:
            server = Path(sshd.make_dir(f"backups/bench-{os.getpid()}"))
            repo = {"type": "rsync", "host": sshd.host, "port": sshd.port, "user": sshd.user,
                    "private_key": sshd.private_key, "known_hosts": sshd.known_hosts, "path": str(server)}
            tree = work / "tree"
            files = make_tree(tree, args.files, args.size)
            source = {"type": "files", "paths": [str(tree)]}
            started = time.monotonic()
            first = operations.snapshot("bench", source, repo)
            first_seconds = time.monotonic() - started
            rng = random.Random(1)
            changed = rng.sample(files, max(1, int(len(files) * args.changed)))
            time.sleep(1.1)  # a new mtime second: rsync's quick check must see the change
            for p in changed:
                p.write_bytes(os.urandom(args.size))
            started = time.monotonic()
            second = operations.snapshot("bench", source, repo)
            second_seconds = time.monotonic() - started
            set_dir = server / "bench"
            full_disk, added_disk = du(set_dir / first["backup"]["id"], set_dir / second["backup"]["id"])
            restored = work / "restored"
            operations.restore("bench", repo, {"type": "files", "path": str(restored)})
            same = subprocess.run(["diff", "-r", "-q", str(tree), str(restored / str(tree).lstrip("/"))],
                                  capture_output=True, check=False).returncode == 0
            shutil.rmtree(server, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    figures = {
        "files": args.files, "file_size": args.size, "changed_files": len(changed),
        "full_bytes_sent": first["transfer"]["bytes_sent"], "incremental_bytes_sent": second["transfer"]["bytes_sent"],
        "full_wire_bytes": first["transfer"]["wire_bytes"], "incremental_wire_bytes": second["transfer"]["wire_bytes"],
        "incremental_files_transferred": second["transfer"]["files_transferred"],
        "full_disk_bytes": full_disk, "incremental_disk_bytes": added_disk,
        "full_seconds": round(first_seconds, 2), "incremental_seconds": round(second_seconds, 2),
        "restored_equal": same,
    }
    transfer = figures["incremental_wire_bytes"] / figures["full_wire_bytes"]
    data_only = figures["incremental_bytes_sent"] / figures["full_bytes_sent"]
    stored = added_disk / full_disk
    figures.update(transfer_ratio=round(transfer, 4), copy_pass_ratio=round(data_only, 4), stored_ratio=round(stored, 4))
    print("| rsync snapshot, %d files x %d B, %d changed | full | incremental | ratio | target |"
          % (args.files, args.size, len(changed)))
    print("|---|---:|---:|---:|---|")
    print("| bytes on the wire, all passes | %d | %d | %.2f %% | < 5 %% %s |"
          % (figures["full_wire_bytes"], figures["incremental_wire_bytes"], 100 * transfer,
             "PASS" if transfer < TARGET else "MISS"))
    print("| bytes sent by the copy pass | %d | %d | %.2f %% | |"
          % (figures["full_bytes_sent"], figures["incremental_bytes_sent"], 100 * data_only))
    print("| disk on the server | %d | %d | %.2f %% | < 5 %% %s |"
          % (full_disk, added_disk, 100 * stored, "PASS" if stored < TARGET else "MISS"))
    print("| seconds | %.1f | %.1f | %.2f | |" % (first_seconds, second_seconds, second_seconds / first_seconds))
    print("| restored tree equals the source | | %s | | |" % ("yes" if same else "NO"))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
