# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The offsite.backup engine.

Plain Python below this package: no Ansible imports, so that the modules and the
``offsite-backup`` runner on a target call the very same code.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type
