"""Files come back as they were (issue 12, item 5): a real dump and restore of a tree through the
modules keeps every mode bit (setuid, setgid, sticky, group/other write), numeric owners and
groups, mtimes, empty directories and hard links, and still refuses device files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.harness.ansible import run_playbook
from tests.integration.helpers import local_repo

pytestmark = pytest.mark.integration

MTIME = 1_600_000_000  # 2020-09-13: far from "now", so a reset mtime shows

# relative path -> (kind, mode, uid, gid)
ENTRIES = {
    "bin": ("dir", 0o755, 0, 0),
    "bin/setuid-tool": ("file", 0o4755, 0, 0),
    "bin/setgid-tool": ("file", 0o2711, 0, 50),
    "shared": ("dir", 0o2775, 1234, 2345),               # setgid directory: new files inherit the group
    "shared/team.txt": ("file", 0o664, 1234, 2345),      # group write
    "shared/everyone.txt": ("file", 0o666, 1234, 2345),  # other write
    "drop": ("dir", 0o1777, 0, 0),                       # sticky, world-writable (like /tmp)
    "drop/note": ("file", 0o600, 4321, 4321),            # an owner with no passwd entry
    "empty": ("dir", 0o750, 1234, 2345),                 # an empty directory
    "private": ("dir", 0o700, 4321, 4321),
    "private/key": ("file", 0o400, 4321, 4321),
    "private/key-hardlink": ("hardlink", "private/key"),
}


def build(root: Path) -> None:
    for rel, spec in ENTRIES.items():
        path = root / rel
        if spec[0] == "dir":
            path.mkdir()
        elif spec[0] == "file":
            path.write_bytes(rel.encode() * 10)
        else:
            os.link(root / spec[1], path)
    for rel, spec in sorted(ENTRIES.items(), key=lambda item: -item[0].count("/")):  # children first
        if spec[0] == "hardlink":
            continue
        path = root / rel
        os.chown(path, spec[2], spec[3])
        os.chmod(path, spec[1])  # after chown: chown clears setuid/setgid
        os.utime(path, (MTIME, MTIME + ENTRIES_INDEX[rel]))
    os.utime(root, (MTIME, MTIME))


ENTRIES_INDEX = {rel: i for i, rel in enumerate(ENTRIES)}


def attributes(root: Path) -> dict:
    out = {}
    for rel in ENTRIES:
        st = os.lstat(root / rel)
        out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, int(st.st_mtime),
                    st.st_nlink)
    return out


def dump_and_restore(workdir: Path, tree: Path):
    dest, restored = workdir / "dest", workdir / "restored"
    r = run_playbook([
        {"name": "dump", "offsite.backup.dump": {"name": "attrs", "dest": str(dest),
                                                 "source": {"type": "files", "paths": [str(tree)]}}},
        {"name": "restore", "offsite.backup.restore": {"name": "attrs", "repository": local_repo(dest),
                                                       "work_dir": str(workdir),
                                                       "target": {"type": "files", "path": str(restored)}}},
    ])
    return r, restored / str(tree).lstrip("/")


@pytest.mark.skipif(os.geteuid() != 0, reason="owners and setuid files need root")
def test_every_attribute_comes_back(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    build(tree)
    before = attributes(tree)
    r, back = dump_and_restore(tmp_path, tree)
    assert r.rc == 0, r.output
    after = attributes(back)
    for rel in ENTRIES:  # one line per bit that differs, e.g. "bin/setuid-tool mode 0o4755 != 0o755"
        assert after[rel] == before[rel], f"{rel}: {after[rel]} != {before[rel]}"
    assert os.stat(back / "private/key").st_ino == os.stat(back / "private/key-hardlink").st_ino
    assert os.listdir(back / "empty") == []


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_a_device_file_is_refused_and_nothing_written(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "data.txt").write_text("kept")
    os.mknod(tree / "null-copy", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    r, back = dump_and_restore(tmp_path, tree)
    assert r.rc != 0, r.output
    res = r.result("restore")
    assert res["error"] == "integrity" and "device file" in res["msg"] and "null-copy" in res["msg"], res
    assert not (tmp_path / "restored").exists()
    assert not [p for p in tmp_path.iterdir() if ".restore-" in p.name or p.name.startswith("offsite-restore-")]
