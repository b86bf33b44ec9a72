"""The FastAPI app factory. This process never imports torch: the model lives in workers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI

from wanforge import __version__
from wanforge.api import routes_health, routes_media, routes_predictions
from wanforge.api.deps import AppState
from wanforge.api.errors import install_handlers
from wanforge.api.guard import ApiGuard
from wanforge.config import Settings
from wanforge.media.storage import LocalStorage
from wanforge.store.db import Database
from wanforge.webhooks.sender import WebhookSender


def create_app(
    settings: Settings, db: Database | None = None, on_shutdown: Sequence[Callable[[], None]] = ()
) -> FastAPI:
    """Build the app; the database is expected to be migrated already (see `wanforge serve`).

    `on_shutdown` callbacks run when the server shuts down (e.g. stopping worker processes).
    """

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        sender = asyncio.create_task(WebhookSender(state.db, settings).run(stop))
        yield
        stop.set()
        await sender
        for callback in on_shutdown:
            await asyncio.to_thread(callback)

    app = FastAPI(
        lifespan=lifespan,
        title="wanforge",
        version=__version__,
        description="Self-hosted Wan 2.2 image-to-video and I2V LoRA training, "
        "wire-compatible with the WaveSpeed v3 API.",
    )
    app.state.wanforge = AppState(
        settings=settings,
        db=db or Database(settings.resolved_database_url()),
        storage=LocalStorage(settings.storage_dir),
    )
    install_handlers(app)
    state: AppState = app.state.wanforge
    app.add_middleware(
        ApiGuard,
        db=lambda: state.db,
        # a JSON body may carry a data: URI of up to max_download_bytes (base64: 4/3 of it)
        max_json_bytes=settings.max_download_bytes * 4 // 3 + 64 * 1024,
        max_upload_bytes=settings.max_upload_bytes,
    )
    app.include_router(routes_health.router)
    app.include_router(routes_media.router)
    app.include_router(routes_predictions.router)  # last: it ends with the unknown-model catch-all
    return app
