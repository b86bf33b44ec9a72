"""Wire types: the prediction object exactly as WaveSpeed v3 returns it, plus a few extras."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field, field_validator

from wanforge.store.tables import Prediction
from wanforge.vocabulary import Status


class Timings(BaseModel):
    inference: int | None = Field(default=None, description="inference time in milliseconds")


class Urls(BaseModel):
    get: str


class PredictionOut(BaseModel):
    id: str
    model: str
    outputs: list[str] = Field(description="output URLs; empty until completed")
    urls: Urls
    has_nsfw_contents: list[bool] = Field(
        description="one boolean per output from a real check; empty while no checker is configured"
    )
    status: str = Field(description="created | processing | completed | failed | cancelled")
    created_at: str
    error: str = ""
    timings: Timings
    # extras (allowed by the contract)
    error_code: int | None = None
    progress: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = None
    attempts: int = 0
    started_at: str | None = None
    completed_at: str | None = None
    result: dict[str, Any] = Field(default_factory=dict)
    logs: list[str] = Field(default_factory=list)


class PredictionEnvelope(BaseModel):
    code: int = 200
    message: str = "success"
    data: PredictionOut


class UploadOut(BaseModel):
    type: str = "file"
    download_url: str
    filename: str
    size: int
    content_type: str


class UploadTicketIn(BaseModel):
    filename: str = Field(min_length=1, max_length=300)
    size: int | None = Field(default=None, ge=0)
    content_type: str | None = Field(default=None, max_length=200)


MAX_PAGE = 100_000  # with page_size <= 100: an offset of at most 10 million rows


class ListIn(BaseModel):
    page: int = Field(default=1, ge=1, le=MAX_PAGE)
    page_size: int = Field(default=20, ge=1, le=100)
    model: str | None = Field(default=None, max_length=200)
    status: Status | None = None
    created_after: datetime | None = Field(default=None, description="naive times are taken as UTC")
    created_before: datetime | None = Field(default=None, description="naive times are taken as UTC")

    @field_validator("created_after", "created_before")
    @classmethod
    def _naive_utc(cls, ts: datetime | None) -> datetime | None:
        """The store keeps naive UTC: an aware time is converted, a naive one is taken as UTC."""
        if ts is None or ts.tzinfo is None:
            return ts
        try:
            return ts.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:
            raise ValueError("out of range once converted to UTC") from None


class DeleteIn(BaseModel):
    ids: list[Annotated[str, Field(max_length=64)]] = Field(min_length=1, max_length=1000)


def iso(ts: datetime | None) -> str | None:
    if ts is None:
        return None
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def file_url(base: str, key: str) -> str:
    return f"{base.rstrip('/')}/files/{key}"


def prediction_out(row: Prediction, base: str, *, with_logs: bool = False) -> PredictionOut:
    base = base.rstrip("/")
    seed = row.result.get("seed") if row.result else None
    return PredictionOut(
        id=row.id,
        model=row.model,
        outputs=[file_url(base, key) for key in row.outputs] if row.status == Status.COMPLETED else [],
        urls=Urls(get=f"{base}/api/v3/predictions/{row.id}/result"),
        has_nsfw_contents=[],
        status=row.status,
        created_at=iso(row.created_at) or "",
        error=row.error or "",
        timings=Timings(inference=row.inference_ms),
        error_code=row.error_code,
        progress=row.progress or {},
        seed=seed if isinstance(seed, int) else None,
        attempts=row.attempts,
        started_at=iso(row.started_at),
        completed_at=iso(row.completed_at),
        result={k: v for k, v in (row.result or {}).items() if k != "seed"},
        logs=list(row.logs or []) if with_logs else [],
    )
