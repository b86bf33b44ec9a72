"""Webhook delivery state: which finished predictions still owe their caller a POST.

A delivery is claimed by pushing its `webhook_next_at` forward (compare-and-set), so several API
processes can send without sending the same attempt twice; a sender that dies mid-attempt just
lets the claim run out, and the delivery is tried again.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import or_, select, update

from wanforge.store.db import Database, utcnow
from wanforge.store.metrics import WEBHOOK_DELIVERIES, add_in, counter
from wanforge.store.tables import Prediction
from wanforge.vocabulary import TERMINAL, WebhookState


def claim_due(db: Database, *, claim_s: float, limit: int = 20) -> list[Prediction]:
    """Finished predictions with a pending webhook whose time has come, claimed for `claim_s`."""
    now = utcnow()
    claimed: list[Prediction] = []
    with db.session() as s:
        candidates = list(
            s.scalars(
                select(Prediction.id)
                .where(
                    Prediction.webhook_state == WebhookState.PENDING,
                    Prediction.status.in_(TERMINAL),
                    or_(Prediction.webhook_next_at.is_(None), Prediction.webhook_next_at <= now),
                )
                .order_by(Prediction.completed_at)
                .limit(limit)
            )
        )
    for prediction_id in candidates:
        with db.session() as s:
            seen = s.scalar(select(Prediction.webhook_next_at).where(Prediction.id == prediction_id))
            won = s.execute(
                update(Prediction)
                .where(
                    Prediction.id == prediction_id,
                    Prediction.webhook_state == WebhookState.PENDING,
                    Prediction.webhook_next_at.is_(None)
                    if seen is None
                    else Prediction.webhook_next_at == seen,
                )
                .values(webhook_next_at=now + timedelta(seconds=claim_s))
            ).rowcount  # type: ignore[attr-defined]
        if won == 1:
            with db.session() as s:
                fresh = s.get(Prediction, prediction_id)
            if fresh is not None:
                claimed.append(fresh)
    return claimed


def record_attempt(
    db: Database,
    prediction_id: str,
    *,
    ok: bool,
    error: str,
    max_attempts: int,
    retry_base_s: float,
    permanent: bool = False,
) -> None:
    """After one POST: delivered, or retried later with exponential back-off, or given up (at
    once when the failure is `permanent`: trying again cannot help)."""
    with db.session() as s:
        row = s.get(Prediction, prediction_id)
        if row is None:
            return
        row.webhook_attempts += 1
        row.webhook_error = error
        if ok:
            row.webhook_state = WebhookState.DELIVERED
            row.webhook_next_at = None
            outcome = "delivered"
        elif permanent or row.webhook_attempts >= max_attempts:
            row.webhook_state = WebhookState.FAILED
            row.webhook_next_at = None
            outcome = "failed"
        else:
            row.webhook_next_at = utcnow() + timedelta(seconds=retry_base_s * 2 ** (row.webhook_attempts - 1))
            outcome = "retry"
        # one POST: delivered, failed to be tried again, or failed for good (given up)
        add_in(s, counter(WEBHOOK_DELIVERIES, {"outcome": outcome}))
