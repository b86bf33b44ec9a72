"""`GET /health`: always 200.

Anyone may ask whether the service is ready (`status`, `worker`, `version`): load balancers
probe without a key. The details (the model, each worker's state) are for a caller with a valid
API key only; a worker's id (host and pid), pid and any current job are an admin key's to see,
while another key sees the worker under an opaque label and its current job only when the job
is that key's own. Both name the content checker (`none` when no
checker is active: then `has_nsfw_contents` stays empty).
"""

from __future__ import annotations

import hashlib
from pathlib import PurePosixPath
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlalchemy import select

from wanforge import __version__
from wanforge.api.deps import StateDep
from wanforge.api.guard import key_problem
from wanforge.config import Settings
from wanforge.store.db import Database
from wanforge.store.tables import Prediction, Worker
from wanforge.store.workers import attention_backend_of, live_workers
from wanforge.vocabulary import WorkerState

router = APIRouter(tags=["health"])


class WorkerOut(BaseModel):
    id: str
    state: WorkerState
    model: str
    detail: str
    current_job: str | None
    pid: int | None
    heartbeat_at: str


class HealthOut(BaseModel):
    """The public answer; a valid API key adds `model`, `workers` and the features."""

    status: Literal["ok", "degraded"]
    version: str
    worker: str = Field(description="ready | loading | failed | no_worker; `unknown: ...` when degraded")
    content_checker: str = Field(description="the detector, or `none`")
    model: str | None = None
    content_safety: dict[str, Any] | None = None
    prompt_expansion: dict[str, Any] | None = None
    workers: list[WorkerOut] | None = None


def overall_state(workers: list[Worker]) -> str:
    """`ready` if any worker is, else `loading`, else `failed`, else `no_worker`."""
    states = {w.state for w in workers}
    if WorkerState.READY in states:
        return "ready"
    if WorkerState.LOADING in states or WorkerState.STARTING in states:
        return "loading"
    if WorkerState.FAILED in states:
        return "failed"
    return "no_worker"


def model_label(model: str) -> str:
    """The model as clients see it: `demo`, or the checkpoint directory's name, never the server
    path it lives at."""
    return PurePosixPath(model.rstrip("/")).name or model


def _features(settings: Settings) -> dict[str, Any]:
    """Content safety and prompt expansion as configured (no address or key of the endpoint)."""
    checker = settings.content_checker
    return {
        "content_safety": {
            "checker": checker,
            "policy": settings.nsfw_policy if checker != "none" else None,
            "threshold": settings.nsfw_threshold if checker != "none" else None,
            "check_input": settings.nsfw_check_input and checker != "none",
        },
        "prompt_expansion": {
            "configured": settings.prompt_expansion_configured,
            "model": settings.prompt_expansion_model if settings.prompt_expansion_configured else None,
            "vision": settings.prompt_expansion_vision and settings.prompt_expansion_configured,
        },
    }


def worker_label(worker_id: str) -> str:
    """A worker as a key that is not an admin sees it: told apart, the same on every call, but
    without the host and pid its id names."""
    return "worker-" + hashlib.sha256(worker_id.encode()).hexdigest()[:12]


def _own_jobs(db: Database, key_id: str, job_ids: list[str | None]) -> set[str]:
    """Which of the running `job_ids` are `key_id`'s."""
    wanted = [j for j in job_ids if j is not None]
    if not wanted:
        return set()
    with db.reading() as conn:
        found = conn.execute(
            select(Prediction.id).where(Prediction.id.in_(wanted), Prediction.api_key_id == key_id)
        )
        return {row.id for row in found}


@router.get("/health", response_model=None, responses={200: {"model": HealthOut}})
def health(request: Request, state: StateDep) -> dict[str, Any]:
    try:
        workers = live_workers(state.db, state.settings.worker_stale_s)
    except Exception as exc:  # the store is down: still answer, and say so
        return {
            "status": "degraded",
            "version": __version__,
            "worker": f"unknown: store {type(exc).__name__}",
            "content_checker": state.settings.content_checker,
        }
    backends = sorted({b for w in workers if (b := attention_backend_of(w.detail)) is not None})
    public: dict[str, Any] = {
        "status": "ok",
        "version": __version__,
        "worker": overall_state(workers),
        "content_checker": state.settings.content_checker,
        # what the ready workers run attention with (one name when they agree); null before any is ready
        "attention_backend": ", ".join(backends) or None,
    }
    header = request.headers.get("authorization")
    if not header:
        return public
    try:
        _problem, key = key_problem(header, state.db)
    except Exception:  # the key check needs the store; the public answer does not
        return public
    if key is None:
        return public
    own_jobs = None if key.is_admin else _own_jobs(state.db, key.id, [w.current_job for w in workers])
    return {
        **public,
        "model": model_label(state.settings.model),
        **_features(state.settings),
        "workers": [
            {
                "id": w.id if own_jobs is None else worker_label(w.id),
                "state": w.state,
                "model": model_label(w.model),
                "detail": w.detail,
                "attention_backend": attention_backend_of(w.detail),
                "current_job": w.current_job if own_jobs is None or w.current_job in own_jobs else None,
                "pid": w.pid if own_jobs is None else None,
                "heartbeat_at": w.heartbeat_at.isoformat() + "Z",
            }
            for w in workers
        ],
    }
