# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type


class ModuleDocFragment(object):

    # one text for retention, restore, backup_info and verify (and the job file's clock_skew)
    DOCUMENTATION = r'''
options:
  clock_skew:
    description:
      - How far in the future a backup may be dated before it is I(suspect) - C(90m), C(1h), C(2d), C(1w)
        or a number of seconds.
      - A suspect backup (made on a machine whose clock was ahead, or with an edited manifest) is never
        the newest backup, fills no C(keep_last) or calendar slot, is never deleted automatically, and is
        never chosen by C(latest) or a time; only its id restores it. M(offsite.backup.backup_info)
        lists it under C(suspect), M(offsite.backup.retention) warns, M(offsite.backup.verify) fails.
    type: str
    default: 1h
'''
