"""The FastAPI app factory. This process never imports torch: the model lives in workers."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI

from wanforge import __version__
from wanforge.api import routes_docs, routes_health, routes_media, routes_metrics, routes_predictions
from wanforge.api.deps import AppState
from wanforge.api.errors import ERROR_RESPONSES, install_handlers
from wanforge.api.guard import ApiGuard
from wanforge.api.keycache import KeyCache
from wanforge.api.retention import RetentionSweeper
from wanforge.api.routes_playground import mount_playground
from wanforge.config import Settings
from wanforge.media.factory import make_storage
from wanforge.store.db import Database, PoolLimits
from wanforge.store.fairness import QueuePositions
from wanforge.store.polls import PollReader
from wanforge.webhooks.sender import WebhookSender


def create_app(
    settings: Settings,
    db: Database | None = None,
    on_shutdown: Sequence[Callable[[], None]] = (),
    *,
    send_webhooks: bool = True,
) -> FastAPI:
    """Build the app; the database is expected to be migrated already (see `wanforge serve`).

    `on_shutdown` callbacks run when the server shuts down (e.g. stopping worker processes).
    `send_webhooks=False` starts no webhook sender: the app then makes no outbound request at all
    (the schema fuzz test; deliveries stay pending in the store for another API process).
    `app.state.stopping` is set when shutdown begins: requests that wait (sync mode) end then.
    """
    stopping = threading.Event()  # set from a signal handler too (see `make_server`)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        sender = asyncio.create_task(WebhookSender(state.db, settings).run(stop)) if send_webhooks else None
        sweeper = asyncio.create_task(
            RetentionSweeper(state.db, state.storage, settings, lambda: state.clock()).run(stop)
        )
        yield
        stopping.set()
        stop.set()
        if sender is not None:
            await sender
        await sweeper
        for callback in on_shutdown:
            await asyncio.to_thread(callback)

    app = FastAPI(
        lifespan=lifespan,
        docs_url=None,  # routes_docs serves /docs and /redoc with a Content-Security-Policy
        redoc_url=None,
        title="wanforge",
        version=__version__,
        description="Self-hosted Wan 2.2 image-to-video and I2V LoRA training, "
        "wire-compatible with the WaveSpeed v3 API.",
    )
    db = db or Database(settings.resolved_database_url(), PoolLimits.from_settings(settings))
    app.state.wanforge = AppState(
        settings=settings,
        db=db,
        storage=make_storage(settings),
        polls=PollReader(db),
        queue=QueuePositions(db),
    )
    app.state.stopping = stopping
    install_handlers(app)
    state: AppState = app.state.wanforge
    app.add_middleware(
        ApiGuard,
        db=lambda: state.db,
        # a JSON body may carry a data: URI of up to max_download_bytes (base64: 4/3 of it)
        max_json_bytes=settings.max_download_bytes * 4 // 3 + 64 * 1024,
        max_upload_bytes=settings.max_upload_bytes,
        keys=KeyCache(settings.key_cache_s),
    )
    app.include_router(routes_health.router)
    app.include_router(routes_docs.router)
    app.include_router(routes_metrics.router)
    app.include_router(routes_media.router, responses=ERROR_RESPONSES)
    if settings.ultra_fast_configured:  # the distill LoRAs are set: serve the ultra-fast models
        app.include_router(routes_predictions.ultra_fast_router, responses=ERROR_RESPONSES)
    mount_playground(app)  # the page at / and /playground, and GET /api/v3/models
    # last: it ends with the unknown-model catch-all
    app.include_router(routes_predictions.router, responses=ERROR_RESPONSES)
    return app


def make_server(app: FastAPI, settings: Settings) -> uvicorn.Server:
    """A uvicorn server for `app` that tells waiting requests at once when a signal stops it.

    uvicorn runs the lifespan shutdown only after in-flight requests have finished, so a sync-mode
    wait would hold SIGTERM for up to `WANFORGE_SYNC_MODE_TIMEOUT_S` without this.
    """
    stopping: threading.Event = app.state.stopping

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            stopping.set()
            super().handle_exit(sig, frame)

    # JSON logs: uvicorn's loggers keep no handlers of their own and go through the root's
    logs: dict[str, Any] = {"log_config": None} if settings.log_format == "json" else {}
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level="info", access_log=settings.access_log, **logs
    )
    return Server(config)


def run_server(app: FastAPI, settings: Settings) -> None:
    """Run `app` as `uvicorn.run` would (Ctrl-C ends quietly; exit 3 when it could not start)."""
    server = make_server(app, settings)
    # Everything made so far (modules, the app, settings) lives as long as the process: moved
    # out of the collector's sight, a full collection scans only what requests made since, a few
    # milliseconds instead of 100 ms and more (docs/performance.md, "Where the tail went")
    gc.collect()
    gc.freeze()
    with suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(3)  # uvicorn's STARTUP_FAILURE
