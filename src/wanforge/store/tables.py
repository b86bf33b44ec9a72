"""The store's tables (SQLAlchemy 2 declarative). Timestamps are naive UTC."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, Index, Integer, String, Text, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Prediction(Base):
    __tablename__ = "predictions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    model: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), default="created")
    input: Mapped[dict[str, Any]] = mapped_column(JSON)
    # where the client reached the API: lets the worker read this server's own upload URLs locally
    server_base: Mapped[str] = mapped_column(String(500), default="")
    outputs: Mapped[list[str]] = mapped_column(JSON, default=list)  # storage keys
    error: Mapped[str] = mapped_column(Text, default="")
    error_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # seed used, sizes, reports
    logs: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    inference_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # the key that made it: only that key (and admin keys) can see it; None = admin keys only
    api_key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # webhook delivery: state none | pending | delivered | failed
    webhook_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    webhook_state: Mapped[str] = mapped_column(String(20), default="none", server_default="none")
    webhook_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    webhook_next_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    webhook_error: Mapped[str] = mapped_column(Text, default="", server_default="")
    # when the retention sweep removed its outputs (WANFORGE_RETENTION_DAYS); None = not swept
    expired_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # the LoRAs its input names (store/affinity.py): a worker holding one prefers the job; None = none
    lora_ids: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    # the stored input's size as JSON text, counted in its key's storage (store/storage_quota.py)
    input_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")

    __table_args__ = (
        Index("ix_predictions_webhook", "webhook_state", "webhook_next_at"),
        Index("ix_predictions_status_created", "status", "created_at"),
        Index("ix_predictions_created", "created_at"),
        Index("ix_predictions_key_status", "api_key_id", "status"),
        Index("ix_predictions_expiry", "expired_at", "completed_at"),
    )


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # sees and manages every key's predictions
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # own limits; None = the server's default (WANFORGE_DEFAULT_RPM / _CONCURRENCY), 0 = unlimited
    rpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    concurrency: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # submissions counted in the fixed minute that starts at rate_window (store/quotas.py)
    rate_window: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    rate_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # fair scheduling (store/fairness.py): its share of the workers, and its turns
    weight: Mapped[float] = mapped_column(Float, default=1.0, server_default="1")
    fair_start: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    fair_finish: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    # its predictions waiting in the queue at most; None = WANFORGE_DEFAULT_MAX_QUEUED, 0 = unlimited
    max_queued: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # bytes it may store (uploads, inputs, outputs); None = WANFORGE_DEFAULT_STORAGE_QUOTA_BYTES, 0 = unlimited
    storage_quota: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class Upload(Base):
    __tablename__ = "uploads"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(500), unique=True)
    filename: Mapped[str] = mapped_column(String(300))
    content_type: Mapped[str] = mapped_column(String(200), default="application/octet-stream")
    declared_size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    status: Mapped[str] = mapped_column(String(20), default="pending")  # uploads.UploadState
    put_token_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    api_key_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    # the prediction whose data: input it holds (deleted with it); None = uploaded by a client
    prediction_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)


class OutputFile(Base):
    """One output file of a prediction: whose it is, so it is usable as an input by its key only."""

    __tablename__ = "output_files"

    key: Mapped[str] = mapped_column(String(500), primary_key=True)
    prediction_id: Mapped[str] = mapped_column(String(32), index=True)
    api_key_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    size: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")  # bytes


class Worker(Base):
    """One row per worker process: what /health reports."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(20))  # starting | loading | ready | failed | stopped
    model: Mapped[str] = mapped_column(String(500), default="")
    detail: Mapped[str] = mapped_column(Text, default="")
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime)
    current_job: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # the worker's GPU memory in bytes ({"allocated", "reserved", "total"}); None without a GPU
    gpu_memory: Mapped[dict[str, int] | None] = mapped_column(JSON, nullable=True)


class MetricCount(Base):
    """A cumulative count that every process adds to (store/metrics.py): what happened in workers
    and senders, so each API process answers /metrics with the same numbers."""

    __tablename__ = "metric_counts"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    # the sample's labels as sorted, compact JSON (e.g. '{"le":"0.5","model":"..."}')
    labels: Mapped[str] = mapped_column(String(500), primary_key=True)
    value: Mapped[float] = mapped_column(Float, default=0.0)


class ServerSecret(Base):
    """Secrets the server makes for itself (the webhook signing secret)."""

    __tablename__ = "server_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)
