"""The execution environment users build (extensions/awx/execution-environment.yml): ansible-builder
accepts the definition and writes a build context that installs our collection on the stated base
image, EPEL and the PostgreSQL 16 stream enabled before any system package; builder's own
introspection of the installed collection finds our Python and system requirements; and bindep
resolves them on the platforms it names, to packages that exist (checked against apt here)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml
from bindep.depends import Depends

from tests.harness import VENV_BIN
from tests.harness.ansible import REPO_ROOT

DEFINITION = REPO_ROOT / "extensions" / "awx" / "execution-environment.yml"
EL9 = ["platform:centos", "platform:centos-9", "platform:redhat", "platform:rpm"]
DEBIAN = ["platform:debian", "platform:debian-12", "platform:dpkg"]


def requirement_lines(path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    out = tmp_path_factory.mktemp("ee")
    r = subprocess.run([str(REPO_ROOT / "scripts" / "build-collection.sh"), str(out)], capture_output=True, text=True,
                       env=dict(os.environ, VENV=str(VENV_BIN.parent)), check=False)
    assert r.returncode == 0, r.stderr
    return out / os.path.basename(r.stdout.strip())


def test_ansible_builder_creates_the_build_context(tarball, tmp_path):
    definition = tmp_path / "execution-environment.yml"
    shutil.copy(DEFINITION, definition)
    shutil.copy(tarball, tmp_path / tarball.name)        # where scripts/build-collection.sh extensions/awx puts it
    context = tmp_path / "context"
    r = subprocess.run([str(VENV_BIN / "ansible-builder"), "create", "-f", str(definition), "--context", str(context)],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr

    steps = (context / "Dockerfile").read_text().splitlines()
    assert 'ARG EE_BASE_IMAGE="quay.io/centos/centos:stream9"' in steps
    repos = next(i for i, s in enumerate(steps) if "epel-release" in s and "postgresql:16" in s)
    assert repos < steps.index("RUN /output/scripts/install-from-bindep && rm -rf /output/wheels")
    assert repos < steps.index("RUN $PKGMGR install $PYPKG -y ; if [ -z $PKGMGR_PRESERVE_CACHE ]; then $PKGMGR clean all; fi")
    galaxy = yaml.safe_load((context / "_build" / "requirements.yml").read_text())
    assert galaxy["collections"] == [{"name": "/build/" + tarball.name, "type": "file"}]
    assert (context / "_build" / tarball.name).read_bytes() == tarball.read_bytes()


def test_builder_introspection_of_the_installed_collection_lists_our_requirements(tarball, tmp_path):
    collections = tmp_path / "collections"
    subprocess.run([str(VENV_BIN / "ansible-galaxy"), "collection", "install", str(tarball), "-p", str(collections)],
                   capture_output=True, text=True, check=True)
    r = subprocess.run([str(VENV_BIN / "ansible-builder"), "introspect", str(collections)],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    found = yaml.safe_load(r.stdout)
    python = requirement_lines(REPO_ROOT / "requirements.txt")
    system = requirement_lines(REPO_ROOT / "bindep.txt")
    assert "boto3>=1.34" in python and any(line.startswith("restic ") for line in system)
    assert found["python"] == ["%s  # from collection offsite.backup" % line for line in python]
    assert found["system"] == ["%s  # from collection offsite.backup" % line for line in system]


def test_bindep_names_packages_that_exist_on_each_platform_it_names():
    rules = Depends((REPO_ROOT / "bindep.txt").read_text())
    debian = [rule[0] for rule in rules.active_rules(DEBIAN)]
    el9 = [rule[0] for rule in rules.active_rules(EL9)]
    # the same tools everywhere it applies
    assert len(debian) == len(el9) == 10
    # this machine is Debian: every name is a real package of its apt sources
    missing = [name for name in debian
               if subprocess.run(["apt-cache", "show", name], capture_output=True, check=False).returncode != 0]
    assert missing == []
    # EL 9: the client package names of AppStream, EPEL (restic, age) and BaseOS
    assert sorted(el9) == sorted(["postgresql", "mariadb", "redis", "openssh-clients", "gnupg2", "rsync", "restic",
                                  "age", "zstd", "tar"])
    # platforms it does not name get nothing, rather than wrong names
    for profile in (["platform:fedora", "platform:redhat", "platform:rpm"], ["platform:opensuse", "platform:suse"],
                    ["platform:alpine", "platform:apk"]):
        assert rules.active_rules(profile) == [], profile
