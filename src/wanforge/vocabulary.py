"""One vocabulary for every layer: a prediction's status and the WaveSpeed v3 error codes.

The API, the store, the worker and the trainer all speak these; none spells a status or a code
as a bare literal. Both enums compare equal to their plain values (`Status.COMPLETED ==
"completed"`, `ErrorCode.INVALID_PARAMETER == 1401`), so they go into the store and onto the
wire unchanged.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class Status(StrEnum):
    """A prediction's lifecycle: created -> processing -> completed | failed | cancelled."""

    CREATED = "created"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


ACTIVE: frozenset[Status] = frozenset({Status.CREATED, Status.PROCESSING})
TERMINAL: frozenset[Status] = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})


class ErrorCode(IntEnum):
    """The codes of the WaveSpeed v3 API: request errors and a failed task's `error_code`."""

    CONTENT_MODERATION = 1200
    MISSING_PARAMETER = 1400
    INVALID_PARAMETER = 1401
    MEDIA_ACCESS_FAILED = 1402
    TASK_FAILED = 1403
    INTERNAL = 5000
    UNAVAILABLE = 5003
    TIMEOUT = 5004


class WorkerState(StrEnum):
    """What a worker process reports for /health."""

    STARTING = "starting"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    STOPPED = "stopped"


class WebhookState(StrEnum):
    """A prediction's webhook delivery: none asked, pending, delivered, or given up."""

    NONE = "none"
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
