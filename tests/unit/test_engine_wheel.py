# Copyright (c) offsite.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The engine wheel the client role installs: every file of the engine directory, found by
walking it (a subpackage added tomorrow ships without touching a list), reproducible bytes
(the role skips the install when the hash is unchanged), and installable by pip with its
console script."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENGINE = REPO / "plugins" / "module_utils" / "_engine"


def _load_builder(root: Path):
    spec = importlib.util.spec_from_file_location(f"engine_wheel_{abs(hash(root))}", root / "packaging" / "engine_wheel.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def checkout(tmp_path):
    """A copy of the parts of the collection the wheel is built from."""
    root = tmp_path / "collection"
    shutil.copytree(ENGINE, root / "plugins" / "module_utils" / "_engine",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (root / "packaging").mkdir()
    shutil.copy(REPO / "packaging" / "engine_wheel.py", root / "packaging")
    shutil.copy(REPO / "galaxy.yml", root)
    shutil.copy(REPO / "pyproject.toml", root)
    return root


def _build(root: Path, out: Path) -> dict:
    """{"path", "name", "sha256"} of the wheel built from ``root`` into ``out``."""
    proc = subprocess.run([sys.executable, str(root / "packaging" / "engine_wheel.py"), str(out)],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def test_every_engine_file_is_in_the_wheel_and_nothing_else(tmp_path):
    path = _build(REPO, tmp_path)["path"]
    names = set(zipfile.ZipFile(path).namelist())
    engine = {"offsite_backup/" + p.relative_to(ENGINE).as_posix() for p in ENGINE.rglob("*")
              if p.is_file() and "__pycache__" not in p.parts}
    assert {n for n in names if not n.startswith("offsite_backup-")} == engine
    assert "offsite_backup/repositories/s3.py" in names and "offsite_backup/sources/postgresql.py" in names
    info = [n for n in names if n.startswith("offsite_backup-")]
    assert sorted(Path(n).name for n in info) == ["METADATA", "RECORD", "WHEEL", "entry_points.txt"]


def test_a_new_engine_subpackage_ships_without_a_file_list(checkout, tmp_path):
    new = checkout / "plugins" / "module_utils" / "_engine" / "archives"
    new.mkdir()
    (new / "__init__.py").write_text("")
    (new / "zip.py").write_text("KIND = 'zip'\n")
    path = _build(checkout, tmp_path / "out")["path"]
    names = zipfile.ZipFile(path).namelist()
    assert "offsite_backup/archives/__init__.py" in names and "offsite_backup/archives/zip.py" in names
    record = zipfile.ZipFile(path).read(next(n for n in names if n.endswith("/RECORD"))).decode()
    assert "offsite_backup/archives/zip.py,sha256=" in record


def test_the_build_is_reproducible_and_its_hash_follows_the_sources(checkout, tmp_path):
    first = _build(checkout, tmp_path / "a")
    again = _build(checkout, tmp_path / "b")
    assert first["sha256"] == again["sha256"] == hashlib.sha256(Path(first["path"]).read_bytes()).hexdigest()
    with (checkout / "plugins" / "module_utils" / "_engine" / "errors.py").open("a") as source:
        source.write("# changed\n")
    assert _build(checkout, tmp_path / "c")["sha256"] != first["sha256"]


def test_pip_installs_the_wheel_with_the_console_script(tmp_path):
    path = _build(REPO, tmp_path / "dist")["path"]
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target",
                    str(target), path], check=True, capture_output=True)
    assert (target / "offsite_backup" / "cli.py").exists()
    script = (target / "bin" / "offsite-backup").read_text()
    assert "from offsite_backup.cli import main" in script
    proc = subprocess.run([sys.executable, "-c", "import sys; sys.argv[0] = 'offsite-backup';"
                           "from offsite_backup.cli import main; sys.exit(main(['--help']))"],
                          env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: offsite-backup"), proc.stderr

    # every module imports as part of offsite_backup: the engine uses relative imports only
    names = sorted("offsite_backup." + ".".join(p.relative_to(target / "offsite_backup").with_suffix("").parts)
                   for p in (target / "offsite_backup").rglob("*.py") if p.name != "__init__.py")
    imported = subprocess.run([sys.executable, "-c", "import importlib, sys\nfor n in sys.argv[1:]: importlib.import_module(n)",
                               *names], env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
                              capture_output=True, text=True, check=False)
    assert imported.returncode == 0, imported.stderr
    assert len(names) > 25
