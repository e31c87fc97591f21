"""Each S3 part is proven once in transit (issue 14, item 4): over plain http botocore signs every
body with SHA-256 (SigV4) and the store checks it, so the engine sends no Content-MD5 there;
where the body is not signed (https: botocore then sends UNSIGNED-PAYLOAD when a Content-MD5 is
present) every part carries its Content-MD5. Seen on the wire to moto, through botocore's own
``before-send`` event: the requests as they leave."""

from __future__ import annotations

import base64
import hashlib
import io
import os

import pytest

from tests.integration.helpers import s3_repo

pytestmark = pytest.mark.integration

MIB = 1024 * 1024


def engine():
    from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories import open_repository
    return open_repository


def sent_bodies(repo) -> list[dict]:
    """The headers of every PutObject / UploadPart request the repository's client sends."""
    seen = []

    def record(request, **kwargs):
        if request.method == "PUT" and "/crm/" in request.url:  # a PutObject or an UploadPart
            seen.append(dict((k.lower(), v.decode() if isinstance(v, bytes) else v) for k, v in request.headers.items()))
    repo.client.meta.events.register("before-send.s3", record)
    return seen


@pytest.mark.parametrize("size", [3 * MIB, 13 * MIB], ids=["one put", "multipart"])
def test_over_http_the_signature_proves_each_part_and_no_md5_is_sent(moto, bucket, size):
    data = os.urandom(size)
    with engine()(s3_repo(moto, bucket, part_size=5), None) as repo:
        assert repo.signs_payload()
        headers = sent_bodies(repo)
        result = repo.put("crm/a.dump", io.BytesIO(data), None, None)
        assert result.sha256 == hashlib.sha256(data).hexdigest() and result.size == size
        assert result.verification == "sha256 per part (SigV4) + etag"
        assert len(headers) == (1 if size < 5 * MIB else 3)
        for h in headers:
            assert "content-md5" not in h
            assert h["x-amz-content-sha256"] not in ("UNSIGNED-PAYLOAD", "")  # the body's SHA-256, signed
        with repo.get("crm/a.dump") as body:
            assert body.read() == data


def test_where_the_body_is_not_signed_each_part_carries_its_md5(moto, bucket):
    """botocore adding checksums of its own (when_supported) is treated like https: Content-MD5."""
    data = os.urandom(11 * MIB)
    with engine()(s3_repo(moto, bucket, part_size=5, checksums="when_supported"), None) as repo:
        assert not repo.signs_payload()
        headers = sent_bodies(repo)
        result = repo.put("crm/b.dump", io.BytesIO(data), None, None)
        assert result.verification == "md5 per part + etag"
        assert len(headers) == 3
        parts = (data[:5 * MIB], data[5 * MIB:10 * MIB], data[10 * MIB:])  # sent concurrently: any order
        assert sorted(h["content-md5"] for h in headers) == sorted(
            base64.b64encode(hashlib.md5(part).digest()).decode() for part in parts)
