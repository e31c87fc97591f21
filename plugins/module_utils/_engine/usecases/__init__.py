# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The engine's use cases, one file each (dump, upload, backup, snapshot, retention, info,
restore). Callers reach them through ``operations``, never here."""
