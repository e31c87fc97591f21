"""Test harness for offsite.backup: real services on loopback, PostgreSQL helpers and an
ansible-playbook runner.

    from tests.harness.services import MotoS3, Sshd, ScramPostgres
    from tests.harness import pg
    from tests.harness.ansible import run_playbook

Command line (for the demo script):

    python -m tests.harness.services up --state FILE [--services moto,sshd,scram_pg]
    python -m tests.harness.services down --state FILE
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = REPO_ROOT / ".venv" / "bin"
COLLECTIONS_PATH = REPO_ROOT / ".cache" / "collections"
#: restic as the tests run it, first on their PATH (tests/conftest.py): the real one, whose local
#: repositories get cheap key-derivation parameters (tests/harness/restic_keys.py)
RESTIC_BIN = REPO_ROOT / "tests" / "harness" / "restic_bin"
