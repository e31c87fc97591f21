# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type


class ModuleDocFragment(object):
    # The options of one repository appear twice: under `repository` (one dict) and under
    # `repositories` (upload's list). They are literal text because ansible-test's yamllint
    # reads fragments without running them; tests/unit/test_doc_fragments.py proves the two
    # copies say the same thing.

    DOCUMENTATION = r'''
options:
  repository:
    description:
      - The repository that holds the backup set. Set it once for a whole play with
        C(module_defaults) and the action group C(group/offsite.backup.all).
    type: dict
    suboptions:
      type:
        description:
          - The kind of repository.
          - C(s3) is Amazon S3 or any S3-compatible store (Backblaze B2's S3 API, Wasabi, MinIO,
            Google Cloud Storage interoperability with HMAC keys).
          - C(sftp) is a directory on an SSH server (a VPS, a Hetzner Storage Box on port 23).
          - C(local) is a directory on a local or mounted disk.
          - C(b2) is Backblaze B2 through its native API (the Python library C(b2sdk)).
          - C(rsync) is a directory on an SSH server written with rsync (also through an C(rrsync)
            forced command); file trees are stored as hard-linked snapshots (M(offsite.backup.snapshot)).
          - C(restic) is a restic repository on any backend restic supports (a directory, C(sftp:),
            C(s3:), C(b2:), C(gs:), C(rest:)); each object is one restic snapshot.
        type: str
        required: true
        choices: [b2, local, restic, rsync, s3, sftp]
      name:
        description:
          - A short stable name for the repository (for example C(offsite-eu)), used as the
            C(repository) label of the metrics and in reports.
          - Defaults to the repository's root location (type, bucket or host, prefix or path).
        type: str
      bucket:
        description: Bucket name (C(s3), C(b2)).
        type: str
      prefix:
        description: Key prefix inside the bucket under which backup sets are stored (C(s3), C(b2)).
        type: str
      endpoint_url:
        description:
          - URL of an S3-compatible endpoint (C(s3)); omit for AWS.
          - Falls back to the environment variable E(AWS_ENDPOINT_URL).
        type: str
      region:
        description:
          - Region of the bucket (C(s3)).
          - Falls back to E(AWS_REGION), then E(AWS_DEFAULT_REGION).
        type: str
      access_key:
        description:
          - Access key id (C(s3)). Falls back to E(AWS_ACCESS_KEY_ID).
        type: str
      secret_key:
        description:
          - Secret access key (C(s3)). Falls back to E(AWS_SECRET_ACCESS_KEY). Never logged.
        type: str
      session_token:
        description:
          - Session token of temporary credentials (C(s3)). Falls back to E(AWS_SESSION_TOKEN).
        type: str
      key_id:
        description:
          - Application key id (C(b2)). Falls back to E(B2_APPLICATION_KEY_ID).
          - A key restricted to the bucket and to O(repository.prefix) is enough; it needs the
            capabilities C(listFiles), C(readFiles), C(writeFiles) and C(deleteFiles)
            (C(listBuckets) too when the key is not restricted to the bucket).
        type: str
      application_key:
        description:
          - Application key (C(b2)). Falls back to E(B2_APPLICATION_KEY). Never logged.
        type: str
      hide_only:
        description:
          - Deleting a backup only hides its files (C(b2)) instead of deleting every version of
            them. Hidden files are still stored and billed until a bucket lifecycle rule removes
            them; use this with keys that lack C(deleteFiles).
          - Defaults to C(false).
        type: bool
      storage_class:
        description:
          - Storage class of uploaded artifacts (C(s3)), for example C(STANDARD_IA).
            Manifests always stay in the default class so that listing and restore can read them.
        type: str
      server_side_encryption:
        description: Server-side encryption requested for uploads (C(s3)), for example C(AES256).
        type: str
      object_lock_mode:
        description:
          - Put an Object Lock retention on every uploaded object (C(s3)), so that nobody holding
            this key can delete or overwrite a backup for O(repository.object_lock_days) days.
          - C(governance) can be lifted by a principal with C(s3:BypassGovernanceRetention);
            C(compliance) by nobody, not even the account root, until it expires.
          - Needs a bucket created with Object Lock (see M(offsite.backup.s3_bucket)); the upload
            fails before sending anything otherwise. Retention skips backups still locked and
            reports them under RV(offsite.backup.retention#module:locked).
        type: str
        choices: [governance, compliance]
      object_lock_days:
        description:
          - Days each uploaded object stays locked (C(s3)); required with O(repository.object_lock_mode).
          - Retention extends the lock of backups it keeps as monthly or yearly copies for as long
            as the policy keeps them.
        type: int
      part_size:
        description:
          - Multipart part size in MiB (C(s3), C(b2)); at least 5. Memory used is about
            O(repository.part_size) times O(repository.concurrency). Defaults to 8.
          - For C(b2), the part size of B2 large files; defaults to the account's recommended
            part size (100 MB); memory used is about part size times (concurrency + 1).
        type: int
      concurrency:
        description: Parts uploaded in parallel (C(s3), C(b2)). Defaults to 4.
        type: int
      checksums:
        description:
          - Whether botocore computes and validates its own request/response checksums (C(s3)).
          - C(auto) keeps botocore's default for AWS and uses C(when_required) for any other
            O(repository.endpoint_url), because many S3-compatible stores reject the checksum
            headers botocore 1.36+ sends by default.
        type: str
        choices: [auto, when_required, when_supported]
      host:
        description: SSH server (C(sftp), C(rsync)).
        type: str
      port:
        description: SSH port (C(sftp), C(rsync)). Defaults to 22; a Hetzner Storage Box uses 23.
        type: int
      user:
        description: SSH user (C(sftp), C(rsync)).
        type: str
      private_key:
        description: Path of the SSH private key on the node running the module (C(sftp), C(rsync)).
        type: path
      private_key_passphrase:
        description: Passphrase of O(repository.private_key) (C(sftp), C(rsync)). Never logged.
        type: str
      known_hosts:
        description:
          - Path of a known_hosts file holding the server's host key (C(sftp), C(rsync)).
          - One of O(repository.known_hosts) or O(repository.host_key) is required; an unknown
            or changed host key always fails the connection.
        type: path
      host_key:
        description: The server's public host key, pinned, for example C(ssh-ed25519 AAAA...) (C(sftp), C(rsync)).
        type: str
      path:
        description:
          - Directory that holds the backup sets (C(sftp), C(rsync), C(local)). On SFTP a relative path is
            relative to the login directory (what a Storage Box expects).
        type: str
      timeout:
        description:
          - Seconds one try waits for a server to connect or answer (default 15; C(s3), C(sftp), C(rsync),
            C(restic)). With the defaults a server that accepts connections and never answers fails the
            repository with C(error=unreachable) within 2 minutes.
          - C(s3) connect and read timeout of each try; C(sftp) connecting, the SSH banner, authentication,
            opening the SFTP channel and every SFTP request; C(rsync) ssh's C(ConnectTimeout) and
            C(ServerAliveInterval) (3 keepalives); C(restic) each try of the first look into the repository.
        type: int
      retries:
        description:
          - Tries after the first (default 2; C(s3) requests with botocore's standard backoff, C(restic)'s
            first look). SSH connections are not retried.
        type: int
      verify:
        description:
          - How an upload is proven. C(full) checks size and content (S3 per-part MD5 and the
            multipart ETag, or a re-read sha256 where the ETag is no MD5; B2 the SHA-1 of a small
            file or of every part of a large file; SFTP and local re-read the object and compare
            its sha256). C(size) checks only the size.
        type: str
        choices: [full, size]
        default: full
      legacy_timezone:
        description:
          - Time zone (IANA name) in which seed-script file names such as
            C(crm_backup_20251028_140000.sql.gz) were stamped. Defaults to UTC.
        type: str
      restic_repository:
        description:
          - The restic repository, in restic's own syntax (what C(RESTIC_REPOSITORY) holds), for
            example C(/srv/restic), C(sftp:backup@host:/srv/restic) or C(s3:https://s3.amazonaws.com/bucket/restic).
          - Required for C(restic). It reaches restic through the environment, never the command line.
        type: str
      restic_password:
        description:
          - The password of the restic repository (C(restic)), passed as C(RESTIC_PASSWORD).
          - One of O(repository.restic_password) and O(repository.restic_password_file) is required for C(restic).
        type: str
      restic_password_file:
        description: A file (mode 0600) holding the restic repository's password (C(restic)), passed as C(RESTIC_PASSWORD_FILE).
        type: path
      restic_env:
        description:
          - Extra environment variables for restic's backend (C(restic)), for example C(AWS_ACCESS_KEY_ID),
            C(B2_ACCOUNT_KEY), C(GOOGLE_APPLICATION_CREDENTIALS) or C(RESTIC_CACHE_DIR). Values are secrets.
          - O(repository.access_key), O(repository.secret_key), O(repository.session_token) and O(repository.region) are passed as
            the matching C(AWS_*) variables, O(repository.key_id) and O(repository.application_key) as C(B2_ACCOUNT_ID) and
            C(B2_ACCOUNT_KEY); O(repository.restic_env) wins over them.
        type: dict
      restic_init:
        description:
          - Create the restic repository (C(restic init)) on the first write if it does not exist (C(restic)).
          - Without it a missing repository is an error. Reads and check mode never create it.
        type: bool
        default: false
'''

    REPOSITORIES = r'''
options:
  repositories:
    description:
      - The repositories to copy the backup to, each a dict with a O(repositories[].type).
      - Each is tried even when another fails; the task fails if any failed.
      - One of O(repositories) and O(repository) is required; O(repositories) wins when both are set.
    type: list
    elements: dict
    suboptions:
      type:
        description:
          - The kind of repository.
          - C(s3) is Amazon S3 or any S3-compatible store (Backblaze B2's S3 API, Wasabi, MinIO,
            Google Cloud Storage interoperability with HMAC keys).
          - C(sftp) is a directory on an SSH server (a VPS, a Hetzner Storage Box on port 23).
          - C(local) is a directory on a local or mounted disk.
          - C(b2) is Backblaze B2 through its native API (the Python library C(b2sdk)).
          - C(rsync) is a directory on an SSH server written with rsync (also through an C(rrsync)
            forced command); file trees are stored as hard-linked snapshots (M(offsite.backup.snapshot)).
          - C(restic) is a restic repository on any backend restic supports (a directory, C(sftp:),
            C(s3:), C(b2:), C(gs:), C(rest:)); each object is one restic snapshot.
        type: str
        required: true
        choices: [b2, local, restic, rsync, s3, sftp]
      name:
        description:
          - A short stable name for the repository (for example C(offsite-eu)), used as the
            C(repository) label of the metrics and in reports.
          - Defaults to the repository's root location (type, bucket or host, prefix or path).
        type: str
      bucket:
        description: Bucket name (C(s3), C(b2)).
        type: str
      prefix:
        description: Key prefix inside the bucket under which backup sets are stored (C(s3), C(b2)).
        type: str
      endpoint_url:
        description:
          - URL of an S3-compatible endpoint (C(s3)); omit for AWS.
          - Falls back to the environment variable E(AWS_ENDPOINT_URL).
        type: str
      region:
        description:
          - Region of the bucket (C(s3)).
          - Falls back to E(AWS_REGION), then E(AWS_DEFAULT_REGION).
        type: str
      access_key:
        description:
          - Access key id (C(s3)). Falls back to E(AWS_ACCESS_KEY_ID).
        type: str
      secret_key:
        description:
          - Secret access key (C(s3)). Falls back to E(AWS_SECRET_ACCESS_KEY). Never logged.
        type: str
      session_token:
        description:
          - Session token of temporary credentials (C(s3)). Falls back to E(AWS_SESSION_TOKEN).
        type: str
      key_id:
        description:
          - Application key id (C(b2)). Falls back to E(B2_APPLICATION_KEY_ID).
          - A key restricted to the bucket and to O(repositories[].prefix) is enough; it needs the
            capabilities C(listFiles), C(readFiles), C(writeFiles) and C(deleteFiles)
            (C(listBuckets) too when the key is not restricted to the bucket).
        type: str
      application_key:
        description:
          - Application key (C(b2)). Falls back to E(B2_APPLICATION_KEY). Never logged.
        type: str
      hide_only:
        description:
          - Deleting a backup only hides its files (C(b2)) instead of deleting every version of
            them. Hidden files are still stored and billed until a bucket lifecycle rule removes
            them; use this with keys that lack C(deleteFiles).
          - Defaults to C(false).
        type: bool
      storage_class:
        description:
          - Storage class of uploaded artifacts (C(s3)), for example C(STANDARD_IA).
            Manifests always stay in the default class so that listing and restore can read them.
        type: str
      server_side_encryption:
        description: Server-side encryption requested for uploads (C(s3)), for example C(AES256).
        type: str
      object_lock_mode:
        description:
          - Put an Object Lock retention on every uploaded object (C(s3)), so that nobody holding
            this key can delete or overwrite a backup for O(repositories[].object_lock_days) days.
          - C(governance) can be lifted by a principal with C(s3:BypassGovernanceRetention);
            C(compliance) by nobody, not even the account root, until it expires.
          - Needs a bucket created with Object Lock (see M(offsite.backup.s3_bucket)); the upload
            fails before sending anything otherwise. Retention skips backups still locked and
            reports them under RV(offsite.backup.retention#module:locked).
        type: str
        choices: [governance, compliance]
      object_lock_days:
        description:
          - Days each uploaded object stays locked (C(s3)); required with O(repositories[].object_lock_mode).
          - Retention extends the lock of backups it keeps as monthly or yearly copies for as long
            as the policy keeps them.
        type: int
      part_size:
        description:
          - Multipart part size in MiB (C(s3), C(b2)); at least 5. Memory used is about
            O(repositories[].part_size) times O(repositories[].concurrency). Defaults to 8.
          - For C(b2), the part size of B2 large files; defaults to the account's recommended
            part size (100 MB); memory used is about part size times (concurrency + 1).
        type: int
      concurrency:
        description: Parts uploaded in parallel (C(s3), C(b2)). Defaults to 4.
        type: int
      checksums:
        description:
          - Whether botocore computes and validates its own request/response checksums (C(s3)).
          - C(auto) keeps botocore's default for AWS and uses C(when_required) for any other
            O(repositories[].endpoint_url), because many S3-compatible stores reject the checksum
            headers botocore 1.36+ sends by default.
        type: str
        choices: [auto, when_required, when_supported]
      host:
        description: SSH server (C(sftp), C(rsync)).
        type: str
      port:
        description: SSH port (C(sftp), C(rsync)). Defaults to 22; a Hetzner Storage Box uses 23.
        type: int
      user:
        description: SSH user (C(sftp), C(rsync)).
        type: str
      private_key:
        description: Path of the SSH private key on the node running the module (C(sftp), C(rsync)).
        type: path
      private_key_passphrase:
        description: Passphrase of O(repositories[].private_key) (C(sftp), C(rsync)). Never logged.
        type: str
      known_hosts:
        description:
          - Path of a known_hosts file holding the server's host key (C(sftp), C(rsync)).
          - One of O(repositories[].known_hosts) or O(repositories[].host_key) is required; an unknown
            or changed host key always fails the connection.
        type: path
      host_key:
        description: The server's public host key, pinned, for example C(ssh-ed25519 AAAA...) (C(sftp), C(rsync)).
        type: str
      path:
        description:
          - Directory that holds the backup sets (C(sftp), C(rsync), C(local)). On SFTP a relative path is
            relative to the login directory (what a Storage Box expects).
        type: str
      timeout:
        description:
          - Seconds one try waits for a server to connect or answer (default 15; C(s3), C(sftp), C(rsync),
            C(restic)). With the defaults a server that accepts connections and never answers fails the
            repository with C(error=unreachable) within 2 minutes.
          - C(s3) connect and read timeout of each try; C(sftp) connecting, the SSH banner, authentication,
            opening the SFTP channel and every SFTP request; C(rsync) ssh's C(ConnectTimeout) and
            C(ServerAliveInterval) (3 keepalives); C(restic) each try of the first look into the repository.
        type: int
      retries:
        description:
          - Tries after the first (default 2; C(s3) requests with botocore's standard backoff, C(restic)'s
            first look). SSH connections are not retried.
        type: int
      verify:
        description:
          - How an upload is proven. C(full) checks size and content (S3 per-part MD5 and the
            multipart ETag, or a re-read sha256 where the ETag is no MD5; B2 the SHA-1 of a small
            file or of every part of a large file; SFTP and local re-read the object and compare
            its sha256). C(size) checks only the size.
        type: str
        choices: [full, size]
        default: full
      legacy_timezone:
        description:
          - Time zone (IANA name) in which seed-script file names such as
            C(crm_backup_20251028_140000.sql.gz) were stamped. Defaults to UTC.
        type: str
      restic_repository:
        description:
          - The restic repository, in restic's own syntax (what C(RESTIC_REPOSITORY) holds), for
            example C(/srv/restic), C(sftp:backup@host:/srv/restic) or C(s3:https://s3.amazonaws.com/bucket/restic).
          - Required for C(restic). It reaches restic through the environment, never the command line.
        type: str
      restic_password:
        description:
          - The password of the restic repository (C(restic)), passed as C(RESTIC_PASSWORD).
          - One of O(repositories[].restic_password) and O(repositories[].restic_password_file) is required for C(restic).
        type: str
      restic_password_file:
        description: A file (mode 0600) holding the restic repository's password (C(restic)), passed as C(RESTIC_PASSWORD_FILE).
        type: path
      restic_env:
        description:
          - Extra environment variables for restic's backend (C(restic)), for example C(AWS_ACCESS_KEY_ID),
            C(B2_ACCOUNT_KEY), C(GOOGLE_APPLICATION_CREDENTIALS) or C(RESTIC_CACHE_DIR). Values are secrets.
          - O(repositories[].access_key), O(repositories[].secret_key), O(repositories[].session_token) and O(repositories[].region) are passed as
            the matching C(AWS_*) variables, O(repositories[].key_id) and O(repositories[].application_key) as C(B2_ACCOUNT_ID) and
            C(B2_ACCOUNT_KEY); O(repositories[].restic_env) wins over them.
        type: dict
      restic_init:
        description:
          - Create the restic repository (C(restic init)) on the first write if it does not exist (C(restic)).
          - Without it a missing repository is an error. Reads and check mode never create it.
        type: bool
        default: false
'''
