"""Pure parts of the rsync repository: listing parser, listing digest, --stats, error mapping,
options. The transfers themselves are tested against a real sshd in tests/integration."""
import datetime
import os
import shutil
import subprocess

import pytest

from ansible_collections.offsite.backup.plugins.module_utils._engine import manifest as mf
from ansible_collections.offsite.backup.plugins.module_utils._engine import operations
from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import (
    ConfigError, DiskFullError, NotFoundError, RepositoryError, UnreachableError)
from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories import open_repository
from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories.rsync import (
    listing_digest, local_listing, parse_listing, parse_stats)

LISTING = """\
drwxr-xr-x           4096 2026/11/23 22:24:20 .
-rw-r--r--              3 2026/11/23 22:24:20 a
-rw-r--r--        1234567 2026/11/23 22:24:20 big file
lrwxrwxrwx              1 2026/11/23 22:24:20 l -> a
drwxr-xr-x           4096 2026/11/23 22:24:20 d
-rw-------              4 2026/11/23 22:24:20 d/\\#303\\#251t\\#303\\#251
prw-r--r--              0 2026/11/23 22:24:20 fifo
skipping non-regular file "x"
"""


def repo(**extra):
    options = {"type": "rsync", "host": "backup.example.net", "user": "host1", "path": "snapshots",
               "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"}
    options.update(extra)
    return open_repository(options)


def test_parse_listing_kinds_sizes_and_escaped_names():
    entries = list(parse_listing(LISTING))
    assert [(kind, size, name) for kind, size, modified, name in entries] == [
        ("d", 4096, "."), ("f", 3, "a"), ("f", 1234567, "big file"), ("l", 1, "l"), ("d", 4096, "d"),
        ("f", 4, "d/été"), ("o", 0, "fifo")]
    assert entries[1][2].isoformat() == "2026-11-23T22:24:20+00:00"


def test_listing_digest_ignores_directory_sizes_and_order():
    one = [("d", 4096, "d"), ("f", 3, "a"), ("l", 1, "l"), ("o", 0, "fifo")]
    two = [("f", 3, "a"), ("d", 60, "d"), ("l", 7, "l")]
    assert listing_digest(one) == listing_digest(two)
    assert listing_digest(one) != listing_digest([("f", 4, "a"), ("d", 0, "d"), ("l", 0, "l")])
    assert listing_digest(one) != listing_digest([("f", 3, "b"), ("d", 0, "d"), ("l", 0, "l")])


@pytest.mark.skipif(not shutil.which("rsync"), reason="rsync not installed")
def test_local_walk_and_rsync_listing_give_the_same_digest(tmp_path):
    """What the restore computes on the files it received equals what the snapshot recorded
    from rsync's own listing (names with spaces, accents, symlinks, nested directories)."""
    root = tmp_path / "tree"
    (root / "sub dir" / "deeper").mkdir(parents=True)
    (root / "a").write_bytes(b"x" * 10)
    (root / "sub dir" / "été.txt").write_text("accents")
    (root / "sub dir" / "deeper" / "empty").write_bytes(b"")
    os.symlink("../a", root / "sub dir" / "link")
    out = subprocess.run(["rsync", "--list-only", "--no-h", "--recursive", str(root) + "/"],
                         capture_output=True, text=True, check=True, env=dict(os.environ, LANG="C")).stdout
    remote = [(kind, size, name) for kind, size, modified, name in parse_listing(out)]
    assert listing_digest(remote) == listing_digest(local_listing(str(root)))
    (root / "a").write_bytes(b"x" * 11)
    assert listing_digest(remote) != listing_digest(local_listing(str(root)))


def test_parse_stats():
    text = """
Number of files: 10,026 (reg: 10,000, dir: 26)
Number of regular files transferred: 100
Total file size: 41,000,000 bytes
Total transferred file size: 410,000 bytes
Total bytes sent: 452,118
Total bytes received: 3,016
"""
    assert parse_stats(text) == {"entries": 10026, "files_transferred": 100, "source_bytes": 41000000,
                                 "transferred_bytes": 410000, "bytes_sent": 452118, "bytes_received": 3016}


@pytest.mark.parametrize("rc, stderr, kind, words", [
    (11, "rsync: [receiver] write failed on \"x\": No space left on device (28)", DiskFullError, "no space left"),
    (12, "rsync: write failed: Disk quota exceeded (122)", DiskFullError, "no space left"),
    (255, "@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\nHost key verification failed.", RepositoryError,
     "does NOT match"),
    (255, "No ED25519 host key is known for [h]:23.\nHost key verification failed.", RepositoryError, "is unknown"),
    (255, "host1@h: Permission denied (publickey).", RepositoryError, "refused the SSH key"),
    (255, "ssh: connect to host h port 23: Connection refused", UnreachableError, "cannot reach"),
    (255, "Connection timed out during banner exchange\nConnection to h port 23 timed out", UnreachableError,
     "timeout (15 s per try)"),
    (23, "rsync: [sender] change_dir \"/x\" failed: No such file or directory (2)", NotFoundError, "does not exist"),
    (12, "/usr/bin/rrsync error: post-realpath open failed: www/ No such file or directory", NotFoundError,
     "does not exist"),
    (23, "rsync: mkdir \"/srv\" failed: Permission denied (13)", RepositoryError, "permission denied"),
    (1, "rsync: syntax or usage error", RepositoryError, "exit 1"),
])
def test_errors_say_what_happened(rc, stderr, kind, words):
    error = repo()._error(rc, stderr, "writing", "www")
    assert error.__class__.__name__ == kind.__name__ and isinstance(error, kind)
    assert words in str(error)


def test_the_host_key_must_be_pinned():
    with pytest.raises(ConfigError, match="neither known_hosts nor host_key"):
        repo(host_key=None)
    with pytest.raises(ConfigError, match="needs host, user, path|needs user"):
        repo(user=None)


def test_pinned_host_key_file_and_no_secret_in_the_ssh_command(tmp_path):
    key = tmp_path / "id"
    key.write_text("not really a key")
    r = repo(port=23, private_key=str(key), private_key_passphrase="s3cret-phrase")
    try:
        command = r._ssh_command()
        env = r._env()
        assert "s3cret-phrase" not in command
        assert "StrictHostKeyChecking=yes" in command and "-p 23" in command
        pinned = os.path.join(r.scratch(), "known_hosts")
        assert open(pinned).read().startswith("[backup.example.net]:23 ssh-ed25519 ")
        assert env["OFFSITE_SSH_PASSPHRASE"] == "s3cret-phrase" and env["SSH_ASKPASS_REQUIRE"] == "force"
        assert os.stat(env["SSH_ASKPASS"]).st_mode & 0o777 == 0o700
        assert "s3cret-phrase" not in open(env["SSH_ASKPASS"]).read()
        assert os.stat(r.scratch()).st_mode & 0o777 == 0o700
    finally:
        r.close()
    assert not os.path.exists(pinned)


def test_locations_and_remote_paths():
    assert repo().location("www/x") == "rsync://host1@backup.example.net:22/~/snapshots/www/x"
    assert repo(path="/srv/b/").location() == "rsync://host1@backup.example.net:22/srv/b"
    jailed = repo(path=".")
    assert jailed._remote("www/x") == "host1@backup.example.net:www/x"
    assert jailed._remote("", directory=True) == "host1@backup.example.net:./"


def test_delete_refuses_patterns():
    with pytest.raises(ConfigError, match="not a plain name"):
        repo().delete("www/*")


# -- times: listings in UTC whatever the node's zone; an upload is as old as the upload ------------
SHIM = """#!/bin/sh
# a local stand-in for ssh: [-l user] [options] host command... -> command, run here
while [ $# -gt 0 ]; do
    case "$1" in
        -l|-p|-o|-i|-F) shift 2 ;;
        -*) shift ;;
        *) shift; break ;;
    esac
done
exec sh -c "$*"
"""


@pytest.fixture
def honolulu(monkeypatch):
    """The node's zone is UTC-10 (no DST): a listing read in local time is 10 h off."""
    import time
    monkeypatch.setenv("TZ", "Pacific/Honolulu")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def local_rsync(tmp_path, monkeypatch):
    """Options of an rsync repository whose "server" is a local directory: real rsync on both
    ends, over a shell stand-in for ssh (ssh itself is tested against a real sshd in
    tests/integration/test_rsync.py)."""
    from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories.rsync import RsyncRepository
    shim = tmp_path / "fake-ssh"
    shim.write_text(SHIM)
    shim.chmod(0o700)
    server = tmp_path / "server"
    server.mkdir()
    monkeypatch.setattr(RsyncRepository, "_ssh_command", lambda self: str(shim))
    options = {"type": "rsync", "host": "backup.example.net", "user": "host1", "path": str(server),
               "host_key": repo().options["host_key"]}
    return options, server


@pytest.mark.skipif(not shutil.which("rsync"), reason="rsync not installed")
def test_listing_times_are_utc_whatever_the_node_zone(honolulu, local_rsync):
    options, server = local_rsync
    (server / "crm").mkdir()
    (server / "crm" / "leftover.dump").write_bytes(b"x")
    with open_repository(options) as r:
        found = r.list("crm/")
    assert [o.key for o in found] == ["crm/leftover.dump"]
    age = mf.utcnow() - found[0].modified
    assert abs(age) < datetime.timedelta(minutes=5), age  # was 10 h under TZ=Pacific/Honolulu


@pytest.mark.skipif(not shutil.which("rsync"), reason="rsync not installed")
def test_an_old_backup_being_uploaded_is_not_a_removable_leftover(honolulu, local_rsync, tmp_path):
    """A 3-day-old local backup uploaded while retention runs: at the moment its artifact has
    landed and its manifest is not written yet, retention (grace 24 h) sees a fresh artifact."""
    options, server = local_rsync
    source = tmp_path / "site"
    source.mkdir()
    (source / "a").write_text("a\n")
    dumped = operations.dump("site", {"type": "files", "paths": [str(source)]}, str(tmp_path / "local"),
                             compression="none")["backup"]
    three_days_ago = (mf.utcnow() - datetime.timedelta(days=3)).timestamp()
    os.utime(dumped["path"], (three_days_ago, three_days_ago))
    key = "site/" + os.path.basename(dumped["path"])
    with open(dumped["path"], "rb") as handle:
        with open_repository(options) as r:  # as upload hands it: rsync sends the local file itself
            r.put(key, handle, dumped["size"], dumped["sha256"], local=dumped["path"])  # landed; no manifest yet
            assert abs(mf.utcnow() - r.stat(key).modified) < datetime.timedelta(minutes=5)
    result = operations.retention("site", options, {"keep_last": 1})
    assert result["incomplete"] == [] and result["incomplete_removed"] == []
    assert (server / key).read_bytes() == open(dumped["path"], "rb").read()
    finished = operations.upload(dumped["path"], [options])  # the upload completes: a complete backup
    assert finished["repositories"][0]["status"] == "uploaded"
    assert operations.info("site", options)["latest"]["id"] == dumped["id"]
