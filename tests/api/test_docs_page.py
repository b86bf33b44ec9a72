"""`/docs` and `/redoc` carry a Content-Security-Policy: their scripts come from the CDN they
name and their one inline script by its hash; nothing else runs, nothing frames them."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from fastapi.testclient import TestClient

from wanforge.api.app import create_app
from wanforge.config import Settings


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_the_api_docs_pages_have_a_csp(settings: Settings, path: str) -> None:
    page = TestClient(create_app(settings)).get(path)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    script_src = re.search(r"script-src ([^;]*)", csp)
    assert script_src is not None and "'unsafe-inline'" not in script_src[1]
    for inline in re.findall(r"<script>(.*?)</script>", page.text, flags=re.S):
        digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in script_src[1]
    assert page.headers["x-content-type-options"] == "nosniff"
