# Copyright (c) offsite.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pytest (rootdir-relative, prepend import mode) refuses two test files with one basename, and
then collects nothing at all: a fresh clone's CI stops before the first test."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import collections
import os

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_test_file_has_its_own_basename():
    seen = collections.defaultdict(list)
    for folder, dummy, files in os.walk(TESTS):
        for name in files:
            if name.startswith('test_') and name.endswith('.py'):
                seen[name].append(os.path.relpath(os.path.join(folder, name), TESTS))
    assert {name: paths for name, paths in seen.items() if len(paths) > 1} == {}
