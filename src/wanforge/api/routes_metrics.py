"""`GET /metrics`: Prometheus text (or OpenMetrics, when the scraper asks for it).

Open, like `/health`'s public part: scrapers rarely send a key, and nothing in it belongs to a
tenant (counts only: no prediction id, prompt, key or host). See docs/operations.md.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import choose_encoder

from wanforge.api.deps import StateDep
from wanforge.api.metrics import StoreCollector

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Metrics"}},
)
def metrics(request: Request, state: StateDep) -> Response:
    """Queue depth, jobs by status, job and step durations, workers, GPU memory, webhook
    deliveries and retention, read from the store now; plus this API process's own `process_*`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(state.db, state.settings))
    ProcessCollector(registry=registry)
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encoder(registry), media_type=content_type)
