"""The playground: a page at `/` and `/playground` to generate, train and watch in a browser,
and `GET /api/v3/models`, the model list its forms are generated from.

The page is static (HTML, CSS and plain ES modules under `api/static/`, no build step). It reads
every form from the OpenAPI schema of the model's submit route, so the catalog stays the one
source of truth. It asks nothing of any host but this server; its Content-Security-Policy says
so to the browser too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

from wanforge.api.deps import KeyDep
from wanforge.api.errors import envelope
from wanforge.catalog import MODELS, ModelSpec, served

STATIC_DIR = Path(__file__).parent / "static"
STATIC_PREFIX = "/playground/static"

# scripts and styles from this server only; media and API calls may go to `public_url` (which may
# differ from the address the page was opened at), never anywhere the page itself names
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src * data: blob:; "
    "media-src * blob:; connect-src *; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter()


@router.get("/", include_in_schema=False)
@router.get("/playground", include_in_schema=False)
@router.get("/playground/", include_in_schema=False)
def playground_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=PAGE_HEADERS)


class _StaticFiles(StaticFiles):
    """The page's files, revalidated on each load (so a new release is never half cached)."""

    async def get_response(self, path: str, scope: Scope) -> Any:
        response = await super().get_response(path, scope)
        response.headers.update({"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})
        return response


def _schema_ref(app: FastAPI, spec: ModelSpec) -> str:
    """The `$ref` of the model's request body in the app's own OpenAPI document."""
    operation = app.openapi()["paths"][f"/api/v3/{spec.id}"]["post"]
    ref: str = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    return ref


@router.get("/api/v3/models", tags=["models"])
def list_models(request: Request, _key: KeyDep) -> dict[str, Any]:
    """Every model this server offers: `id`, `kind` (`generate` or `train`), `resolution` (null
    when the input chooses it), `summary`, `submit_url`, and `input_schema`, the `$ref` of its
    request body in `/openapi.json` (defaults, bounds, enums, required fields, descriptions)."""
    app: FastAPI = request.app
    return envelope(
        [
            {
                "id": spec.id,
                "kind": spec.kind.value,
                "resolution": spec.resolution,
                "summary": spec.summary,
                "submit_url": f"/api/v3/{spec.id}",
                "input_schema": _schema_ref(app, spec),
            }
            for spec in MODELS.values()
            if served(
                spec, request.app.state.wanforge.settings
            )  # the ultra-fast ones only with their distill LoRAs
        ]
    )


def mount_playground(app: FastAPI) -> None:
    """The page, its files and the model list (before the unknown-model catch-all)."""
    app.include_router(router)
    app.mount(STATIC_PREFIX, _StaticFiles(directory=STATIC_DIR), name="playground-static")
