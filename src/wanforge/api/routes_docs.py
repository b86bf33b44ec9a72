"""`/docs` (Swagger UI) and `/redoc`: FastAPI's pages, with a Content-Security-Policy.

Their scripts and styles come from the CDN FastAPI names (jsdelivr); the one inline script each
page has is allowed by its hash, nothing else runs, and no other site may frame them.
"""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import APIRouter
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)

CDN = "https://cdn.jsdelivr.net"
TITLE = "wanforge"
OPENAPI_URL = "/openapi.json"


def _with_csp(
    page: HTMLResponse, *, extra_style: str = "", extra_font: str = "", extra_img: str = ""
) -> HTMLResponse:
    inline = re.findall(rb"<script>(.*?)</script>", page.body, flags=re.S)
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s).digest()).decode()}'" for s in inline)
    policy = "; ".join(
        [
            "default-src 'none'",
            f"script-src {CDN} {hashes}".rstrip(),
            # Swagger UI and ReDoc set style attributes as they render
            f"style-src {CDN} 'unsafe-inline'{extra_style}",
            f"img-src 'self' data: https://fastapi.tiangolo.com {CDN}{extra_img}",
            f"font-src {CDN}{extra_font}".rstrip(),
            "connect-src 'self'",
            "worker-src blob:",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'none'",
        ]
    )
    page.headers["Content-Security-Policy"] = policy
    page.headers["X-Content-Type-Options"] = "nosniff"
    return page


@router.get("/docs")
def swagger_ui() -> HTMLResponse:
    return _with_csp(get_swagger_ui_html(openapi_url=OPENAPI_URL, title=f"{TITLE} - Swagger UI"))


@router.get("/redoc")
def redoc() -> HTMLResponse:
    # ReDoc's page loads its fonts from Google Fonts
    return _with_csp(
        get_redoc_html(openapi_url=OPENAPI_URL, title=f"{TITLE} - ReDoc"),
        extra_style=" https://fonts.googleapis.com",
        extra_font=" https://fonts.gstatic.com",
        extra_img=" https://cdn.redoc.ly",
    )
