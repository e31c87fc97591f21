"""Backblaze B2 without Backblaze: b2sdk's own API simulator (RawSimulator), shared by the
unit tests of the b2 repository and the repository contract suite. No mocks of our code: the
repository talks to b2sdk's B2Api as it would in production, only the HTTP layer is simulated.

    sim = Simulated()
    monkeypatch.setattr(b2repo, 'API_FACTORY', lambda: sim.api)   # or use the ``simulated`` helper
    open_repository(sim.options())
"""

from __future__ import annotations

import contextlib

import b2sdk.v2 as b2


class Simulated:
    """One simulated B2 account with a bucket, shared by every repository a test opens."""

    def __init__(self, bucket: str = "offsite-test"):
        self.api = b2.B2Api(b2.InMemoryAccountInfo(), api_config=b2.B2HttpApiConfig(_raw_api_class=b2.RawSimulator))
        self.key_id, self.key = self.api.session.raw_api.create_account()
        self.api.authorize_account("production", self.key_id, self.key)
        self.bucket_name = bucket
        self.bucket = self.api.create_bucket(bucket, "allPrivate")

    def options(self, **extra) -> dict:
        return dict({"type": "b2", "bucket": self.bucket_name, "key_id": self.key_id,
                     "application_key": self.key, "prefix": "backups"}, **extra)

    def restricted_key(self, capabilities, prefix: str = "backups/"):
        """A key limited to the bucket and a name prefix, as the docs recommend."""
        self.api.authorize_account("production", self.key_id, self.key)
        created = self.api.create_key(capabilities, "restricted", bucket_id=self.bucket.id_, name_prefix=prefix)
        return created.id_, created.application_key

    def versions(self, name: str):
        return [(v.file_name, v.action) for v in self.bucket.list_file_versions(name)]


@contextlib.contextmanager
def simulated(**kwargs):
    """A Simulated account that every b2 repository opened inside the block talks to."""
    from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories import b2 as b2repo

    sim = Simulated(**kwargs)
    saved = b2repo.API_FACTORY
    b2repo.API_FACTORY = lambda: sim.api
    try:
        yield sim
    finally:
        b2repo.API_FACTORY = saved
