# Copyright (c) offsite.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The harness's login users (tests/harness/services.py, ``ensure_login_user``): on a new
machine the tests' workers start their sshd at the same moment, and every one of them must get
the user (two of them once both found it missing, and the second ``useradd`` failed)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import pwd
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKERS = 6


@pytest.mark.skipif(os.geteuid() != 0, reason="creates a system user")
def test_workers_creating_one_login_user_at_once_all_get_it():
    user = "offsite-race%d" % (os.getpid() % 100000)
    subprocess.run(["userdel", "--remove", user], capture_output=True, check=False)  # a killed run's
    create = "from tests.harness.services import ensure_login_user; print(ensure_login_user(%r).pw_uid)" % user
    try:
        workers = [subprocess.Popen([sys.executable, "-c", create], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for dummy in range(WORKERS)]
        results = [(w.wait(), w.stdout.read().strip(), w.stderr.read()) for w in workers]
        uid = pwd.getpwnam(user).pw_uid
        assert [(rc, out) for rc, out, err in results] == [(0, str(uid))] * WORKERS, \
            [err[-600:] for rc, out, err in results if rc]
        ssh_dir = os.path.join(pwd.getpwnam(user).pw_dir, ".ssh")
        assert os.stat(ssh_dir).st_uid == uid and os.stat(ssh_dir).st_mode & 0o777 == 0o700
    finally:
        subprocess.run(["userdel", "--remove", user], capture_output=True, check=False)
