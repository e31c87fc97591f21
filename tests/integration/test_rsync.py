"""`type: rsync` repositories end to end: real ansible-playbook runs against the harness's
OpenSSH sshd, checked by looking at the server's files directly.

- tree snapshots (offsite.backup.snapshot): hard links to the previous snapshot, idempotence,
  check mode, backup_info, retention, restore equal to the source;
- a PostgreSQL dump uploaded to an rsync repository and restored;
- a key forced through rrsync: everything works, nothing can be written outside its directory;
- failures: a full target, an unpinned or wrong host key, a refused key, a key passphrase that
  stays out of every output.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.harness import pg
from tests.harness.ansible import run_playbook
from tests.integration.helpers import engine_dump, pg_source, pg_target, tree

pytestmark = [pytest.mark.integration, pytest.mark.sftp]

SNAPSHOT = "offsite.backup.snapshot"
INFO = "offsite.backup.backup_info"
RETENTION = "offsite.backup.retention"
RESTORE = "offsite.backup.restore"
UPLOAD = "offsite.backup.upload"


def _uid() -> str:
    return uuid.uuid4().hex[:10]


def play(tasks: list, **kwargs):
    return run_playbook([{"name": "rsync", "hosts": "localhost", "gather_facts": False, "tasks": tasks}], **kwargs)


def t(title: str, module: str, register: str | None = None, **args) -> dict:
    task = {"name": title, module: args}
    if register:
        task["register"] = register
    return task


def assert_ok(r):
    assert r.rc == 0 and not r.failed_tasks, r.output


def assert_failed(r, title: str, kind: str, *words: str) -> dict:
    assert r.rc != 0, r.output
    assert r.status(title) == "failed", f"{title}: {r.status(title)}\n{r.output}"
    res = r.result(title)
    assert res.get("error") == kind, f"{res.get('error')!r} != {kind!r}: {res.get('msg')}"
    for word in words:
        assert word in res["msg"], f"{word!r} not in {res['msg']}"
    return res


def rsync_repo(sshd, path: str, **extra) -> dict:
    repo = {"type": "rsync", "host": sshd.host, "port": sshd.port, "user": sshd.user,
            "private_key": sshd.private_key, "known_hosts": sshd.known_hosts, "path": path}
    repo.update(extra)
    return repo


@pytest.fixture
def server_dir(sshd):
    """A fresh directory below the sshd user's home (absolute path), removed afterwards."""
    made = []

    def make(prefix: str) -> str:
        path = sshd.make_dir(f"backups/{prefix}-{_uid()}")
        made.append(path)
        return path

    try:
        yield make
    finally:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def web_tree(tmp_path) -> Path:
    """A small website: nested directories, a symlink, odd names, modes, 300 files."""
    root = tmp_path / "srv" / "www"
    for i in range(300):
        d = root / f"section-{i % 7}" / ("deep" if i % 3 else "")
        d.mkdir(parents=True, exist_ok=True)
        (d / f"page {i}.html").write_bytes(os.urandom(64) + f"page {i}\n".encode() * (i % 50))
    (root / "été.txt").write_text("accents\n")
    os.chmod(root / "section-1" / "deep" / "page 1.html", 0o640)
    (root / "current").symlink_to("section-0")
    return root


def snapshot_dirs(set_dir: Path) -> list[str]:
    return sorted(p.name for p in set_dir.iterdir() if p.is_dir()) if set_dir.exists() else []


# --------------------------------------------------------------------------------------------
# 1. tree snapshots, the whole cycle


def test_snapshot_cycle_hard_links_check_mode_retention_restore(sshd, server_dir, web_tree, tmp_path):
    root = server_dir("rsync-cycle")
    repo = rsync_repo(sshd, root)
    source = {"type": "files", "paths": [str(web_tree)], "exclude": ["*.tmp"]}
    (web_tree / "scratch.tmp").write_text("excluded")
    first = play([t("snap 1", SNAPSHOT, "s1", name="www", source=source, repository=repo, tags=["daily"]),
                  t("snap again", SNAPSHOT, name="www", source=source, repository=repo)])
    assert_ok(first)
    s1 = first.result("snap 1")
    assert first.tasks["snap 1"]["changed"] and s1["status"] == "snapshot" and s1["previous"] is None
    assert s1["backup"]["files"] == 301 and s1["transfer"]["files_transferred"] == 301
    again = first.result("snap again")
    assert not first.tasks["snap again"]["changed"] and again["status"] == "unchanged", again
    set_dir = Path(root) / "www"
    first_id = s1["backup"]["id"]
    assert snapshot_dirs(set_dir) == [first_id]
    manifest = json.loads((set_dir / f"{first_id}.manifest.json").read_text())
    assert manifest["format"] == "tree" and manifest["files"] == 301 and manifest["artifact"] == first_id
    assert manifest["tags"] == ["daily"] and manifest["source"]["type"] == "files"
    snap_root = set_dir / first_id / str(web_tree).lstrip("/")
    assert not (snap_root / "scratch.tmp").exists()

    # change 2 files: check mode writes nothing; the real run transfers just those
    (web_tree / "section-2" / "deep" / "page 2.html").write_text("changed\n")
    (web_tree / "new.html").write_text("new\n")
    second = play([t("dry", SNAPSHOT, name="www", source=source, repository=repo)], check=True)
    assert_ok(second)
    assert second.tasks["dry"]["changed"] and second.result("dry")["status"] == "would snapshot"
    assert snapshot_dirs(set_dir) == [first_id]
    third = play([t("snap 2", SNAPSHOT, name="www", source=source, repository=repo, tags=["daily"]),
                  t("info", INFO, name="www", repository=repo)])
    assert_ok(third)
    s2 = third.result("snap 2")
    second_id = s2["backup"]["id"]
    assert s2["previous"] == first_id and s2["transfer"]["files_transferred"] == 2, s2
    assert snapshot_dirs(set_dir) == sorted([first_id, second_id])  # the partial is gone
    new_root = set_dir / second_id / str(web_tree).lstrip("/")
    same, changed = "section-0/page 0.html", "section-2/deep/page 2.html"
    assert (new_root / same).stat().st_ino == (snap_root / same).stat().st_ino  # a hard link
    assert (new_root / same).stat().st_nlink == 2
    assert (new_root / changed).stat().st_ino != (snap_root / changed).stat().st_ino
    assert (new_root / changed).read_text() == "changed\n"
    info = third.result("info")
    assert [b["id"] for b in info["backups"]] == [second_id, first_id] and info["count"] == 2
    assert info["latest"]["complete"] and info["latest"]["format"] == "tree"
    assert info["latest"]["size"] == s2["backup"]["size"]

    # retention keeps the newest; restore gives back the tree as it is now
    target = tmp_path / "restored"
    fourth = play([t("retention", RETENTION, name="www", repository=repo, policy={"keep_last": 1}),
                   t("retention again", RETENTION, name="www", repository=repo, policy={"keep_last": 1}),
                   t("restore", RESTORE, name="www", repository=repo, target={"type": "files", "path": str(target)})])
    assert_ok(fourth)
    assert fourth.result("retention")["removed"] == [first_id]
    assert not fourth.tasks["retention again"]["changed"]
    assert sorted(p.name for p in set_dir.iterdir()) == [second_id, f"{second_id}.manifest.json"]
    restored = fourth.result("restore")
    assert restored["status"] == "restored" and restored["restored"]["files"] == 302
    expected = tree(web_tree)
    del expected["scratch.tmp"]
    assert tree(target / str(web_tree).lstrip("/")) == expected
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".restored")] == []  # no scratch left


def test_restore_refuses_a_snapshot_changed_on_the_server(sshd, server_dir, web_tree, tmp_path):
    root = server_dir("rsync-tamper")
    repo = rsync_repo(sshd, root)
    r = play([t("snap", SNAPSHOT, name="www", source={"type": "files", "paths": [str(web_tree)]}, repository=repo)])
    assert_ok(r)
    snap = Path(root) / "www" / r.result("snap")["backup"]["id"] / str(web_tree).lstrip("/")
    # same total size (the catalog still calls it complete), one file renamed
    (snap / "été.txt").rename(snap / "ete.txt")
    target = tmp_path / "target"
    r = play([t("restore", RESTORE, name="www", repository=repo, target={"type": "files", "path": str(target)})])
    assert_failed(r, "restore", "integrity", "does not match its manifest")
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".target")] == []


# --------------------------------------------------------------------------------------------
# 2. ordinary artifacts: a PostgreSQL dump through an rsync repository


def test_pg_dump_upload_and_restore_over_rsync(sshd, server_dir, sample_db, unique_db_name, tmp_path):
    root = server_dir("rsync-pg")
    repo = rsync_repo(sshd, root)
    backup = engine_dump("crm", pg_source(sample_db), tmp_path / "local")  # the dump module: elsewhere
    r = play([t("upload", UPLOAD, backup=backup, repository=repo),
              t("upload again", UPLOAD, backup=backup, repository=repo),
              t("restore", RESTORE, name="crm", repository=repo, target=pg_target(unique_db_name))])
    assert_ok(r)
    up = r.result("upload")["repositories"][0]
    assert up["status"] == "uploaded" and up["location"].startswith("rsync://"), up
    assert r.result("upload again")["repositories"][0]["status"] == "unchanged"
    assert not r.tasks["upload again"]["changed"]
    stored = Path(root) / "crm" / os.path.basename(backup["path"])
    assert stored.stat().st_size == backup["size"] and stored.read_bytes() == Path(backup["path"]).read_bytes()
    assert sorted(p.name for p in stored.parent.iterdir()) == sorted([stored.name, f"{backup['id']}.manifest.json"])
    assert pg.fingerprint(unique_db_name) == pg.fingerprint(sample_db)


def test_times_on_a_node_in_honolulu_and_an_old_backup_being_uploaded(sshd, server_dir, tmp_path):
    """TZ=Pacific/Honolulu (UTC-10) on the node, a backup dumped 3 days ago: uploaded, and caught
    by retention at the moment its artifact has landed but its manifest is not written yet (the
    manifest is removed to hold that moment). The artifact is as old as its upload, and the
    listing is read in UTC: with incomplete_grace 5 h it is not a leftover (before: 3 days old by
    the dump's mtime, or 10 h old by a local-time listing, and deleted)."""
    root = server_dir("rsync-tz")
    repo = rsync_repo(sshd, root)
    honolulu = {"TZ": "Pacific/Honolulu"}
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("aloha\n")
    # the backup (its id and times are UTC whatever the node's TZ), made by the engine here
    backup = engine_dump("site", {"type": "files", "paths": [str(site)]}, tmp_path / "local", compression="none")
    three_days_ago = time.time() - 3 * 86400
    os.utime(backup["path"], (three_days_ago, three_days_ago))
    stored = Path(root) / "site" / os.path.basename(backup["path"])
    r = play([t("upload", UPLOAD, backup=backup, repository=repo),
              {"name": "the moment before the manifest", "ansible.builtin.file": {
                  "path": str(stored.parent / f"{backup['id']}.manifest.json"), "state": "absent"}},
              t("retention", RETENTION, name="site", repository=repo, policy={"keep_last": 1}, incomplete_grace=5),
              t("info", INFO, name="site", repository=repo)], env=honolulu)
    assert_ok(r)
    assert r.result("retention")["incomplete"] == [] and r.result("retention")["incomplete_removed"] == []
    assert stored.read_bytes() == Path(backup["path"]).read_bytes()
    assert abs(stored.stat().st_mtime - time.time()) < 600  # the upload's age, not the dump's
    listed = r.result("info")["backups"]
    assert [b["id"] for b in listed] == [backup["id"]] and listed[0]["complete"] is False


# --------------------------------------------------------------------------------------------
# 3. a key forced through rrsync


def test_rrsync_forced_key_works_and_cannot_escape(sshd, server_dir, web_tree, tmp_path):
    jail = server_dir("rrsync")
    key = sshd.add_key(f"forced-{_uid()}", forced_dir=jail)
    repo = rsync_repo(sshd, ".", private_key=key)
    source = {"type": "files", "paths": [str(web_tree)]}
    target = tmp_path / "restored"
    r = play([t("snap 1", SNAPSHOT, "s1", name="www", source=source, repository=repo),
              {"name": "change", "ansible.builtin.copy": {"content": "v2\n", "dest": str(web_tree / "index.html")}},
              t("snap 2", SNAPSHOT, name="www", source=source, repository=repo),
              t("retention", RETENTION, name="www", repository=repo, policy={"keep_last": 1}),
              t("restore", RESTORE, name="www", repository=repo, target={"type": "files", "path": str(target)})])
    assert_ok(r)
    assert r.result("snap 2")["transfer"]["files_transferred"] == 1
    kept = r.result("snap 2")["backup"]["id"]
    assert sorted(p.name for p in (Path(jail) / "www").iterdir()) == [kept, f"{kept}.manifest.json"]
    assert tree(target / str(web_tree).lstrip("/")) == tree(web_tree)

    # the same key, used by hand: no shell, no path outside the jail
    outside = Path(sshd.home) / f"escaped-{_uid()}"
    in_tmp = Path("/tmp") / f"offsite-escaped-{_uid()}"
    ssh = "ssh " + " ".join(sshd.ssh_args(key=key))
    probe = tmp_path / "probe"
    probe.write_text("x")
    for dest in (f"../../{outside.name}", str(in_tmp), f"../{Path(jail).name}-sibling"):
        subprocess.run(["rsync", "-e", ssh, str(probe), f"{sshd.user}@{sshd.host}:{dest}"],
                       capture_output=True, check=False, timeout=60)
    shell = subprocess.run(["ssh", *sshd.ssh_args(key=key), f"{sshd.user}@{sshd.host}", f"touch {outside}"],
                           capture_output=True, text=True, check=False, timeout=60)
    assert shell.returncode != 0
    assert not outside.exists() and not in_tmp.exists()
    assert not (Path(jail).parent / f"{Path(jail).name}-sibling").exists()
    # the normal key of the same account could have written there: the jail is the forced command
    ok = subprocess.run(["rsync", "-e", "ssh " + " ".join(sshd.ssh_args()), str(probe),
                         f"{sshd.user}@{sshd.host}:{in_tmp}"], capture_output=True, check=False, timeout=60)
    assert ok.returncode == 0 and in_tmp.exists()
    in_tmp.unlink()


# --------------------------------------------------------------------------------------------
# 4. failures


@pytest.fixture
def full_server_dir(sshd, server_dir):
    """A 1 MiB tmpfs owned by the sshd user, below its home (needs root / CAP_SYS_ADMIN)."""
    path = server_dir("rsync-full")
    pw = pwd.getpwnam(sshd.user)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=1m,mode=0700,uid={pw.pw_uid},gid={pw.pw_gid}",
                        "tmpfs", path], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", path], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", path], capture_output=True, check=False)


def test_full_target_fails_clearly_and_leaves_nothing_complete(sshd, full_server_dir, tmp_path):
    big = tmp_path / "data"
    big.mkdir()
    for i in range(3):
        (big / f"blob{i}").write_bytes(os.urandom(700 * 1024))
    repo = rsync_repo(sshd, full_server_dir)
    r = play([t("snap", SNAPSHOT, name="data", source={"type": "files", "paths": [str(big)]}, repository=repo)])
    assert_failed(r, "snap", "disk_full", "no space left", "nothing was marked complete")
    set_dir = Path(full_server_dir) / "data"
    assert not set_dir.exists() or [p.name for p in set_dir.iterdir() if not p.name.startswith(".")] == []

    backup = engine_dump("files", {"type": "files", "paths": [str(big)]}, tmp_path / "local", compression="none")
    r = play([t("upload", UPLOAD, backup=backup, repository=repo)])
    assert_failed(r, "upload", "disk_full", "no space left")
    files_dir = Path(full_server_dir) / "files"
    assert not files_dir.exists() or not any(p.name.endswith(".manifest.json") for p in files_dir.iterdir())
    # and once there is room again, it works
    for p in Path(full_server_dir).rglob("*"):
        if p.is_file():
            p.unlink()
    small = tmp_path / "small"
    small.mkdir()
    (small / "a").write_text("a\n")
    r = play([t("snap", SNAPSHOT, name="data", source={"type": "files", "paths": [str(small)]}, repository=repo)])
    assert_ok(r)


def test_host_keys_and_client_keys(sshd, server_dir, web_tree, tmp_path):
    root = server_dir("rsync-keys")
    source = {"type": "files", "paths": [str(web_tree)]}
    other_host_key = (Path(sshd.wrong_private_key + ".pub").read_text().split()[:2])
    wrong_known = tmp_path / "known_hosts"
    wrong_known.write_text(f"[{sshd.host}]:{sshd.port} {' '.join(other_host_key)}\n")
    unpinned = rsync_repo(sshd, root)
    del unpinned["known_hosts"]
    r = play([t("unpinned", SNAPSHOT, name="www", source=source, repository=unpinned)])
    assert_failed(r, "unpinned", "config", "neither known_hosts nor host_key")
    r = play([t("impostor", SNAPSHOT, name="www", source=source,
                repository=rsync_repo(sshd, root, known_hosts=str(wrong_known)))])
    assert_failed(r, "impostor", "repository", "does NOT match the pinned one")
    r = play([t("wrong key", SNAPSHOT, name="www", source=source,
                repository=rsync_repo(sshd, root, private_key=sshd.wrong_private_key))])
    assert_failed(r, "wrong key", "repository", "refused the SSH key")
    r = play([t("pinned host_key", SNAPSHOT, name="www", source=source,
                repository=dict(unpinned, host_key=sshd.host_key))])
    assert_ok(r)
    assert not (Path(root) / "www").exists() or len(snapshot_dirs(Path(root) / "www")) == 1


def test_key_passphrase_never_shows(sshd, server_dir, web_tree):
    root = server_dir("rsync-passphrase")
    secret = f"pass-{_uid()}-phrase"
    key = sshd.add_key(f"locked-{_uid()}", passphrase=secret)
    repo = rsync_repo(sshd, root, private_key=key, private_key_passphrase="{{ key_passphrase }}")
    r = play([t("snap", SNAPSHOT, "s", name="www", source={"type": "files", "paths": [str(web_tree)]}, repository=repo),
              t("info", INFO, name="www", repository=repo)],
             extravars={"key_passphrase": secret})
    assert_ok(r)
    assert r.result("info")["count"] == 1
    assert secret not in r.output
    assert secret not in json.dumps(r.tasks)
    bad = play([t("snap", SNAPSHOT, name="www", source={"type": "files", "paths": [str(web_tree)]},
                  repository=dict(repo, private_key_passphrase="{{ key_passphrase }}"))],
               extravars={"key_passphrase": "wrong-" + secret})
    res = assert_failed(bad, "snap", bad.result("snap").get("error"))
    assert res["error"] in ("config", "repository") and secret not in bad.output
