# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type


class ModuleDocFragment(object):
    # One text for both sides (dump encrypts, restore and verify decrypt), so one dict in
    # module_defaults serves a whole play; tests/unit/test_doc_fragments.py checks it against
    # _common.encryption_spec().

    DOCUMENTATION = r'''
options:
  encryption:
    description:
      - Client-side encryption. M(offsite.backup.dump) encrypts with public keys (or a passphrase)
        after compression and before hashing, so the sha256 in the manifest covers the ciphertext as
        stored. The backed-up server only needs public keys; it can encrypt but never decrypt.
      - M(offsite.backup.restore) and M(offsite.backup.verify) take the private side
        (O(encryption.identity_file), O(encryption.gpg_homedir), O(encryption.passphrase)) and decrypt while
        streaming. The scheme is read from the backup's manifest.
      - Give one of O(encryption.recipients) / O(encryption.recipients_file) (age),
        O(encryption.gpg_recipients) (gpg) or O(encryption.passphrase) when dumping.
      - See C(docs/encryption.md) for key generation and the measured cost.
    type: dict
    suboptions:
      recipients:
        description:
          - age X25519 public keys (C(age1...)) that can decrypt the backup (dump). Keep at least two,
            one of them offline.
        type: list
        elements: str
      recipients_file:
        description: A file of age public keys, one a line, C(#) comments allowed (dump).
        type: path
      gpg_recipients:
        description:
          - OpenPGP key ids, fingerprints or e-mail addresses from the keyring O(encryption.gpg_homedir)
            (dump). The manifest records their fingerprints.
        type: list
        elements: str
      gpg_homedir:
        description:
          - The gpg keyring directory. When dumping it needs the recipients' public keys; when
            restoring or verifying, the secret key (unlocked by O(encryption.passphrase) if it has one).
        type: path
      passphrase:
        description:
          - Dump - encrypt with this passphrase (C(gpg --symmetric), AES256) instead of public keys.
          - Restore and verify - the passphrase of a passphrase-encrypted backup, or of the secret key
            in O(encryption.gpg_homedir).
          - It reaches gpg through a pipe (C(--passphrase-fd)), never a command line or a file. Keep it
            in a vault.
        type: str
      identity_file:
        description:
          - The age private key file (C(AGE-SECRET-KEY-...), from C(age-keygen)) that opens backups
            encrypted for one of its public keys (restore, verify). Keep it off the backed-up
            server and readable only by its owner.
        type: path
      required:
        description:
          - Restore and verify refuse a backup whose manifest says it is not encrypted. A backup
            replaced by someone holding only upload keys is then rejected.
          - Defaults to true when a key (O(encryption.identity_file), O(encryption.gpg_homedir) or
            O(encryption.passphrase)) is given; set false for a repository that also holds older,
            unencrypted backups.
        type: bool
'''
