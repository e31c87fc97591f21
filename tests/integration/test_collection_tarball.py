"""The collection tarball holds what users need and nothing else: built by
scripts/build-collection.sh from a checkout that holds untracked decoys (a secrets file, a
scratch file inside plugins/, a virtualenv under another name) and a wheel committed by mistake,
and by ansible-galaxy from a clean clone (how `ansible-galaxy collection install git+...` builds
it), its exact file list is the tracked files of the shipped paths."""

from __future__ import annotations

import os
import subprocess
import tarfile

from tests.harness import VENV_BIN
from tests.harness.ansible import REPO_ROOT

# what a user of the collection needs (packaging/: the client role builds the engine wheel with it
# on the controller; pyproject.toml names it as build backend); everything else tracked (tests,
# bench, scripts, demo, CI and tool configuration) stays in the repository
SHIPPED = {"CHANGELOG.md", "README.md", "bindep.txt", "requirements.txt", "changelogs", "docs", "extensions", "meta",
           "playbooks", "plugins", "roles", "packaging", "pyproject.toml"}
GENERATED = {"MANIFEST.json", "FILES.json"}


def git(cwd, *args) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, check=True).stdout


def members(tarball) -> set[str]:
    with tarfile.open(tarball) as tar:
        return {m.name for m in tar.getmembers() if not m.isdir()}


def test_tarball_from_a_dirty_checkout_holds_exactly_the_tracked_shipped_files(tmp_path):
    checkout = tmp_path / "checkout"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(REPO_ROOT), str(checkout)], check=True)
    expected = {path for path in git(checkout, "ls-files").splitlines() if path.split("/")[0] in SHIPPED} | GENERATED
    assert {"plugins/modules/dump.py", "roles/client/tasks/main.yml", "playbooks/dr_drill.yml"} <= expected

    # a clean clone, as `ansible-galaxy collection install git+...` builds it: build_ignore alone
    clean = tmp_path / "clean"
    subprocess.run([str(VENV_BIN / "ansible-galaxy"), "collection", "build", str(checkout), "--output-path", str(clean)],
                   capture_output=True, text=True, check=True)
    (from_clone,) = clean.glob("offsite-backup-*.tar.gz")
    assert members(from_clone) == expected

    (checkout / "decoy-secrets.env").write_text("AWS_SECRET_ACCESS_KEY=decoy\n")
    (checkout / "plugins" / "modules" / "decoy_scratch.py").write_text("# not tracked\n")
    (checkout / "myvenv" / "lib").mkdir(parents=True)
    (checkout / "myvenv" / "lib" / "site.py").write_text("")
    (checkout / "docs" / "stray-1.0-py3-none-any.whl").write_bytes(b"PK")
    git(checkout, "add", "-f", "docs/stray-1.0-py3-none-any.whl")
    git(checkout, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "a wheel by mistake")

    out = tmp_path / "out"
    r = subprocess.run([str(checkout / "scripts" / "build-collection.sh"), str(out)], capture_output=True, text=True,
                       env=dict(os.environ, VENV=str(VENV_BIN.parent)), check=False)
    assert r.returncode == 0, r.stderr
    tarball = r.stdout.strip()
    assert tarball.endswith(".tar.gz") and tarball.startswith(str(out))
    assert members(tarball) == expected
    assert (out / tarball.rsplit("/", 1)[1]).stat().st_size < 2 * 1024 * 1024
