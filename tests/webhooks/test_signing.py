from __future__ import annotations

import hashlib
import hmac

from wanforge.webhooks import signing


def test_signature_is_hmac_sha256_over_id_timestamp_body() -> None:
    body = b'{"id":"abc","status":"completed"}'
    expected = hmac.new(b"s3cret", b"msg1.1700000000." + body, hashlib.sha256).hexdigest()
    assert signing.signature("whsec_s3cret", "msg1", 1700000000, body) == f"v3,{expected}"


def test_verify_checks_signature_and_age() -> None:
    body = b"{}"
    headers = signing.headers("whsec_k", "id1", 1000, body)
    assert signing.verify("whsec_k", headers, body, tolerance_s=300, now=1100)
    assert not signing.verify("whsec_k", headers, b"{ }", tolerance_s=300, now=1100)
    assert not signing.verify("whsec_other", headers, body, tolerance_s=300, now=1100)
    assert not signing.verify("whsec_k", headers, body, tolerance_s=300, now=2000)
    assert not signing.verify("whsec_k", {}, body, tolerance_s=300, now=1000)
