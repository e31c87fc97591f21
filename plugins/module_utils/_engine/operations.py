# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The engine's entry points: dump, upload, backup, snapshot, retention, plan, restore, cleanup, info.

Modules and the ``offsite-backup`` runner call these and nothing below them. Each returns
a plain dict (JSON-able) and records the commands it ran in the ``CommandLog`` it is given.
Each use case lives in its own file under ``usecases/``; this module only names them.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from .repositories import open_repository
from .usecases.backup import backup
from .usecases.dump import dump, set_lock
from .usecases.info import info
from .usecases.restore import cleanup, restore
from .usecases.retention import DEFAULT_GRACE_HOURS, ESTIMATE_KEYS, check_grace, estimate_cost, plan, retention
from .usecases.snapshot import snapshot
from .usecases.upload import load_local_backup, upload

__all__ = ['DEFAULT_GRACE_HOURS', 'ESTIMATE_KEYS', 'backup', 'check_grace', 'cleanup', 'dump', 'estimate_cost',
           'info', 'load_local_backup', 'open_repository', 'plan', 'restore', 'retention', 'set_lock', 'snapshot',
           'upload']
