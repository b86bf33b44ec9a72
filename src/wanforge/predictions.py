"""The prediction object exactly as WaveSpeed v3 sends it, plus a few extras.

Below both the API (which answers with it) and the webhook sender (which POSTs it).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from wanforge.store.tables import Prediction
from wanforge.vocabulary import Status, WebhookState

# keys of predictions.result shown as fields of their own (the worker writes them): the seed,
# the checker's verdicts, the expanded prompt, `timings` beside `timings.inference`, and
# `named_outputs` ({name: storage key}) as `{name: URL}` in `result` once completed
NSFW = "nsfw"
EXPANDED_PROMPT = "expanded_prompt"
TIMINGS_KEY = "timings"
NAMED_OUTPUTS_KEY = "named_outputs"
RENDERED_ELSEWHERE = frozenset({"seed", NSFW, EXPANDED_PROMPT, TIMINGS_KEY, NAMED_OUTPUTS_KEY})


class Timings(BaseModel):
    """`inference` (ms) as WaveSpeed sends it; a LoRA job adds `lora_fetch`, `lora_load` and
    `lora_activate` (ms): getting the files, loading adapters not yet cached, switching them on."""

    model_config = ConfigDict(extra="allow")

    inference: int | None = Field(default=None, description="inference time in milliseconds")


class Urls(BaseModel):
    get: str


class WebhookOut(BaseModel):
    status: WebhookState = Field(description="pending | delivered | failed (given up)")
    attempts: int = Field(description="POSTs made so far")
    last_error: str = Field(default="", description="why the last POST failed; empty after a success")


class PredictionOut(BaseModel):
    id: str
    model: str
    outputs: list[str] = Field(description="output URLs; empty until completed")
    urls: Urls
    has_nsfw_contents: list[bool] = Field(
        description="one boolean per output from the content checker (true: flagged); empty until "
        "completed, and while no checker is configured (WANFORGE_CONTENT_CHECKER=none)"
    )
    status: str = Field(description="created | processing | completed | failed | cancelled")
    created_at: str
    error: str = ""
    timings: Timings
    # extras (allowed by the contract)
    error_code: int | None = None
    progress: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = None
    prompt: str | None = Field(default=None, description="the prompt as the client sent it")
    expanded_prompt: str | None = Field(
        default=None,
        description="the prompt the video was generated from, when enable_prompt_expansion was true "
        "and the expansion endpoint answered; null otherwise (then the prompt was used as sent)",
    )
    attempts: int = 0
    started_at: str | None = None
    completed_at: str | None = None
    result: dict[str, Any] = Field(default_factory=dict)
    logs: list[str] = Field(default_factory=list)
    input: dict[str, Any] | None = Field(
        default=None,
        description="the request body as the server took it (defaults filled in), to re-run it; "
        "only in GET /api/v3/predictions/{id} (with `logs`), null in results, lists and webhooks",
    )
    webhook: WebhookOut | None = Field(
        default=None, description="delivery of the ?webhook= POST; null when none was asked for"
    )
    expired_at: str | None = Field(
        default=None,
        description="when the retention sweep deleted the outputs (WANFORGE_RETENTION_DAYS after the "
        "prediction ended): its output URLs then answer 410; null while they are kept",
    )
    queue_position: int | None = Field(
        default=None,
        description="while `created`: how many queued predictions start before it (0: it is next) in "
        "the fair order between keys, if no other key's arrive; up to a second old; null once it runs "
        "(and for a moment after the submit, until the queue is read again)",
    )


class PredictionEnvelope(BaseModel):
    code: int = 200
    message: str = "success"
    data: PredictionOut


def iso(ts: datetime | None) -> str | None:
    if ts is None:
        return None
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def file_url(base: str, key: str) -> str:
    return f"{base.rstrip('/')}/files/{key}"


def _extra_timings(result: dict[str, Any]) -> dict[str, int]:
    extra = result.get(TIMINGS_KEY)
    if not isinstance(extra, dict):
        return {}
    return {k: v for k, v in extra.items() if isinstance(v, int) and k != "inference"}


def _shown_result(row: Prediction, base: str) -> dict[str, Any]:
    result = row.result or {}
    shown = {k: v for k, v in result.items() if k not in RENDERED_ELSEWHERE}
    named = result.get(NAMED_OUTPUTS_KEY)
    if isinstance(named, dict) and row.status == Status.COMPLETED:
        shown.update({name: file_url(base, key) for name, key in named.items() if isinstance(key, str)})
    return shown


def prediction_out(
    row: Prediction, base: str, *, with_logs: bool = False, queue_position: int | None = None
) -> PredictionOut:
    base = base.rstrip("/")
    result = row.result or {}
    seed = result.get("seed")
    return PredictionOut(
        id=row.id,
        model=row.model,
        outputs=[file_url(base, key) for key in row.outputs] if row.status == Status.COMPLETED else [],
        urls=Urls(get=f"{base}/api/v3/predictions/{row.id}/result"),
        has_nsfw_contents=_nsfw_flags(row),
        status=row.status,
        created_at=iso(row.created_at) or "",
        error=row.error or "",
        timings=Timings(**_extra_timings(result), inference=row.inference_ms),
        error_code=row.error_code,
        progress=row.progress or {},
        seed=seed if isinstance(seed, int) else None,
        prompt=_text((row.input or {}).get("prompt")),
        expanded_prompt=_text(result.get(EXPANDED_PROMPT)),
        attempts=row.attempts,
        started_at=iso(row.started_at),
        completed_at=iso(row.completed_at),
        result=_shown_result(row, base),
        logs=list(row.logs or []) if with_logs else [],
        input=dict(row.input or {}) if with_logs else None,
        webhook=_webhook_out(row),
        expired_at=iso(row.expired_at),
        queue_position=queue_position if row.status == Status.CREATED else None,
    )


def _nsfw_flags(row: Prediction) -> list[bool]:
    """The checker's verdicts, one per output, for a completed prediction that has them."""
    flags = (row.result or {}).get(NSFW)
    if row.status != Status.COMPLETED or not isinstance(flags, list) or len(flags) != len(row.outputs):
        return []
    return flags if all(isinstance(flag, bool) for flag in flags) else []


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _webhook_out(row: Prediction) -> WebhookOut | None:
    if not row.webhook_url or row.webhook_state == WebhookState.NONE:
        return None
    return WebhookOut(
        status=WebhookState(row.webhook_state), attempts=row.webhook_attempts, last_error=row.webhook_error
    )
