# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type


class ModuleDocFragment(object):
    # One text for both sides (dump and snapshot sign, the readers check), so one dict in
    # module_defaults serves a whole play; tests/unit/test_doc_fragments.py checks it against
    # _common.signing_spec().

    DOCUMENTATION = r'''
options:
  signing:
    description:
      - Signed manifests (C(ssh-keygen -Y sign), namespace C(offsite-backup)). The signature covers the
        whole manifest, so the artifact's sha256 and size too, and is stored inside it, on every repository.
      - M(offsite.backup.dump) and M(offsite.backup.snapshot) sign with O(signing.key_file).
      - M(offsite.backup.restore), M(offsite.backup.verify), M(offsite.backup.backup_info) and
        M(offsite.backup.retention) check against O(signing.trusted_keys) / O(signing.trusted_keys_file).
        With trusted keys, an unsigned backup or one whose signature does not verify fails with
        C(error=authenticity) before anything is written to a restore target; retention neither counts
        nor deletes it.
      - See C(docs/signing.md) for key generation and what signing does and does not protect against.
    type: dict
    suboptions:
      key_file:
        description:
          - The OpenSSH private key the backed-up server signs with (ed25519, without a passphrase,
            mode 0600). Only its path is passed to C(ssh-keygen); the key itself is never read into
            the module's memory, a log or a command line.
          - M(offsite.backup.dump) and M(offsite.backup.snapshot) only.
        type: path
      trusted_keys:
        description:
          - Public key lines (C(ssh-ed25519 AAAA... comment)) whose signatures are trusted. Public, not secret.
          - Restore, verify, backup_info and retention.
        type: list
        elements: str
      trusted_keys_file:
        description:
          - A file of trusted public key lines, one a line, C(#) comments allowed; added to O(signing.trusted_keys).
        type: path
'''
