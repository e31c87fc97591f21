"""Files and volumes end to end (real ansible-playbook, real GNU tar): what a server's tree holds
comes back - permissions, owners, symlinks (absolute ones too), sparse files, hard links - with
its file count and bytes proven before the swap; subsets with include; hostile archives refused."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from tests.harness.ansible import run_playbook
from tests.integration.helpers import local_repo, tree

pytestmark = pytest.mark.integration


def task(title: str, module: str, /, **args) -> dict:
    return {"name": title, f"offsite.backup.{module}": args}


def assert_ok(r, *tasks):
    assert r.rc == 0, r.output
    for t in tasks:
        assert r.status(t) in ("ok", "changed"), f"{t}: {r.status(t)}\n{r.output}"


def make_volume(root: Path) -> Path:
    vol = root / "volumes" / "app_data" / "_data"
    (vol / "vault" / "file").mkdir(parents=True)
    (vol / "uploads").mkdir()
    (vol / "vault" / "file" / "core").write_bytes(os.urandom(20_000))
    os.chmod(vol / "vault" / "file" / "core", 0o600)
    os.chown(vol / "vault" / "file" / "core", 100, 1000)
    (vol / "uploads" / "a.bin").write_bytes(os.urandom(3000))
    os.link(vol / "uploads" / "a.bin", vol / "uploads" / "a-hardlink.bin")
    os.symlink("/usr/share/zoneinfo/UTC", vol / "localtime")          # absolute: restored as is
    os.symlink("../../../elsewhere", vol / "uploads" / "outward")      # points out: restored as is
    with open(vol / "sparse.img", "wb") as handle:                      # 64 MiB apparent, one block real
        handle.truncate(64 * 1024 * 1024)
        handle.seek(32 * 1024 * 1024)
        handle.write(b"middle")
    (vol / "uploads" / "skip.tmp").write_bytes(b"excluded")
    return vol


def test_volume_round_trip_with_counts_sparse_and_absolute_symlinks(workdir):
    vol = make_volume(workdir)
    dest, restored = workdir / "dest", workdir / "restored"
    r = run_playbook([
        {**task("dump", "dump", name="volumes", dest=str(dest),
                source={"type": "files", "paths": [str(vol)], "exclude": ["*.tmp"]}), "register": "dumped"},
        task("restore", "restore", name="volumes", repository=local_repo(dest), work_dir=str(workdir),
             target={"type": "files", "path": str(restored)}),
    ])
    assert_ok(r, "dump", "restore")
    counts = r.result("dump")["backup"]["source"]["counts"]
    assert counts == {"files": 4, "bytes": 20_000 + 3000 + 64 * 1024 * 1024}
    assert r.result("restore")["restored"]["verified"] == counts
    back = restored / str(vol).lstrip("/")
    expected = {k: v for k, v in tree(vol).items() if not k.endswith(".tmp")}
    assert tree(back) == expected
    st = os.lstat(back / "vault" / "file" / "core")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (100, 1000, 0o600)
    assert os.readlink(back / "localtime") == "/usr/share/zoneinfo/UTC"
    assert os.stat(back / "uploads" / "a.bin").st_ino == os.stat(back / "uploads" / "a-hardlink.bin").st_ino
    sparse = os.stat(back / "sparse.img")
    assert sparse.st_size == 64 * 1024 * 1024 and sparse.st_blocks * 512 < 1024 * 1024  # still sparse
    # the artifact did not carry the holes either
    assert os.path.getsize(r.result("dump")["backup"]["path"]) < 1024 * 1024


def test_include_restores_a_subset(workdir):
    vol = make_volume(workdir)
    dest, restored = workdir / "dest", workdir / "restored"
    sub = str(vol / "vault").lstrip("/")
    r = run_playbook([
        task("dump", "dump", name="volumes", dest=str(dest), source={"type": "files", "paths": [str(vol)]}),
        task("restore", "restore", name="volumes", repository=local_repo(dest), work_dir=str(workdir),
             target={"type": "files", "path": str(restored), "include": [sub]}),
    ])
    assert_ok(r, "dump", "restore")
    assert r.result("restore")["restored"]["verified"] == {"files": 1, "bytes": 20_000}
    assert sorted(p.name for p in (restored / str(vol).lstrip("/")).iterdir()) == ["vault"]


def test_missing_path_fails_clearly(workdir):
    r = run_playbook([task("dump", "dump", name="volumes", dest=str(workdir / "dest"),
                           source={"type": "files", "paths": [str(workdir / "no-such-volume")]})])
    assert r.rc != 0 and r.status("dump") == "failed", r.output
    res = r.result("dump")
    assert res["error"] == "not_found" and "no-such-volume does not exist" in res["msg"], res
    assert not (workdir / "dest").exists() or not any((workdir / "dest").rglob("*.tar*"))


def _replace_artifact(backup: dict, payload: bytes) -> None:
    """Put ``payload`` (an uncompressed tar) where the backup's artifact is, with a manifest
    that matches it: only the archive's content is hostile, its checksums are right."""
    path, manifest = Path(backup["path"]), Path(backup["manifest"])
    data = json.loads(manifest.read_text())
    raw = path if path.suffix == ".tar" else path.with_suffix("")  # .tar.zst -> .tar: written uncompressed
    raw.write_bytes(payload)
    if raw != path:
        path.unlink()
    data.update(artifact=raw.name, extension="tar", compression="none", size=len(payload),
                sha256=hashlib.sha256(payload).hexdigest(), raw_size=len(payload))
    manifest.write_text(json.dumps(data))


@pytest.mark.parametrize("hostile", ["dotdot", "through-symlink"])
def test_hostile_archive_is_refused_and_the_target_untouched(workdir, hostile):
    vol = make_volume(workdir)
    dest, target, outside = workdir / "dest", workdir / "target", workdir / "outside"
    target.mkdir()
    outside.mkdir()
    (target / "keep.txt").write_text("current data")
    r = run_playbook([{**task("dump", "dump", name="volumes", dest=str(dest), compression="none",
                              source={"type": "files", "paths": [str(vol)]}), "register": "dumped"}])
    assert_ok(r, "dump")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add(name, data=None, link=None):
            info = tarfile.TarInfo(name)
            if link:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        add("fine.txt", b"ok")
        if hostile == "dotdot":
            add("../outside/evil", b"pwned")
        else:
            add("l", link=str(outside))
            add("l/evil", b"pwned")
    _replace_artifact(r.result("dump")["backup"], buf.getvalue())
    r = run_playbook([task("restore", "restore", name="volumes", repository=local_repo(dest), work_dir=str(workdir),
                           target={"type": "files", "path": str(target), "mode": "replace"})])
    assert r.rc != 0 and r.status("restore") == "failed", r.output
    res = r.result("restore")
    assert res["error"] == "integrity" and ("not touched" in res["msg"] or "nothing was written" in res["msg"]), res
    assert sorted(os.listdir(target)) == ["keep.txt"] and os.listdir(outside) == []
    assert sorted(p.name for p in workdir.iterdir() if p.name.startswith(".target")) == []
