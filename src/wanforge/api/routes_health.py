"""`GET /health`: always 200; says whether a worker is loading, ready or failed, and which model."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from wanforge import __version__
from wanforge.api.deps import StateDep
from wanforge.store.workers import live_workers
from wanforge.vocabulary import WorkerState

router = APIRouter(tags=["health"])

STALE_AFTER_S = 30.0


@router.get("/health")
def health(state: StateDep) -> dict[str, Any]:
    try:
        workers = live_workers(state.db, STALE_AFTER_S)
    except Exception as exc:  # the store is down: still answer, and say so
        return {"status": "degraded", "store": f"unavailable: {type(exc).__name__}", "worker": "unknown"}
    states = [w.state for w in workers]
    if WorkerState.READY in states:
        overall = "ready"
    elif WorkerState.LOADING in states or WorkerState.STARTING in states:
        overall = "loading"
    elif WorkerState.FAILED in states:
        overall = "failed"
    else:
        overall = "no_worker"
    return {
        "status": "ok",
        "version": __version__,
        "worker": overall,
        "model": state.settings.model,
        "workers": [
            {
                "id": w.id,
                "state": w.state,
                "model": w.model,
                "detail": w.detail,
                "current_job": w.current_job,
                "pid": w.pid,
            }
            for w in workers
        ],
    }
