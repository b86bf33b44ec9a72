"""Sends due webhooks from the API process, in the background, with retries and back-off.

State lives in the store (see `wanforge.store.webhooks`), so a restart loses no delivery and
several API processes can share the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from wanforge.config import Settings
from wanforge.media.errors import MediaError, Refused
from wanforge.media.fetch import post_url
from wanforge.predictions import prediction_out
from wanforge.store.db import Database
from wanforge.store.tables import Prediction
from wanforge.store.webhooks import claim_due, record_attempt
from wanforge.webhooks import signing
from wanforge.webhooks.secret import webhook_secret

log = logging.getLogger("wanforge.webhooks")


class WebhookSender:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    def payload(self, row: Prediction) -> bytes:
        base = row.server_base or self.settings.public_url or ""
        # the prediction as GET answers it, less the state of this very delivery
        data = prediction_out(row, base).model_dump(exclude={"webhook"})
        return json.dumps(data, separators=(",", ":")).encode()

    def deliver(self, row: Prediction, secret: str) -> None:
        body = self.payload(row)
        headers = signing.headers(secret, row.id, int(time.time()), body)
        ok, error, permanent = False, "", False
        try:
            status = post_url(
                row.webhook_url or "",
                content=body,
                headers=headers,
                timeout_s=self.settings.webhook_timeout_s,
                allow_private=self.settings.allow_private_urls,
            )
            ok = 200 <= status < 300
            error = "" if ok else f"the webhook answered HTTP {status}"
        except Refused as exc:  # an invalid URL or a refused address: it will not get better
            error, permanent = str(exc), True
        except MediaError as exc:  # DNS, connection, timeout: it may pass
            error = str(exc)
        record_attempt(
            self.db,
            row.id,
            ok=ok,
            error=error,
            max_attempts=self.settings.webhook_max_attempts,
            retry_base_s=self.settings.webhook_retry_base_s,
            permanent=permanent,
        )
        if not ok:
            log.warning("webhook for %s failed: %s", row.id, error)

    def send_due(self) -> int:
        rows = claim_due(self.db, claim_s=self.settings.webhook_timeout_s + 30)
        if rows:
            secret = webhook_secret(self.db)
            for row in rows:
                self.deliver(row, secret)
        return len(rows)

    async def run(self, stop: asyncio.Event, interval_s: float = 0.5) -> None:
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.send_due)
            except Exception:
                log.exception("webhook sender: store unavailable; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
