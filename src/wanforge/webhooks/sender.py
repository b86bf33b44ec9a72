"""Sends due webhooks from the API process, in the background, with retries and back-off.

State lives in the store (see `wanforge.store.webhooks`), so a restart loses no delivery and
several API processes can share the work.

POSTs run concurrently on a pool of `WANFORGE_WEBHOOK_CONCURRENCY` threads, and a delivery is
claimed only when a thread is free for it: a receiver that hangs until its timeout holds one
thread, never the others, and nothing claimed waits in a queue while its claim runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait

from wanforge.config import Settings
from wanforge.logs import prediction_context
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
        self.concurrency = settings.webhook_concurrency
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="webhook")
        self._lock = threading.Lock()
        self._in_flight = 0

    def payload(self, row: Prediction) -> bytes:
        base = row.server_base or self.settings.public_url or ""
        # the prediction as GET answers it, less the state of this very delivery
        data = prediction_out(row, base).model_dump(exclude={"webhook"})
        return json.dumps(data, separators=(",", ":")).encode()

    def deliver(self, row: Prediction, secret: str) -> None:
        """One POST of `row`'s prediction, and its outcome written to the store."""
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

    def start_due(self) -> list[Future[None]]:
        """Claim as many due deliveries as there are free threads and start them; no waiting."""
        with self._lock:
            free = self.concurrency - self._in_flight
        if free <= 0:
            return []
        rows = claim_due(self.db, claim_s=self.settings.webhook_timeout_s + 30, limit=free)
        if not rows:
            return []
        # each delivery is signed with its prediction's key's secret
        secrets = {owner: webhook_secret(self.db, owner) for owner in {row.api_key_id for row in rows}}
        with self._lock:
            self._in_flight += len(rows)
        return [self._pool.submit(self._deliver_in_thread, row, secrets[row.api_key_id]) for row in rows]

    def send_due(self) -> int:
        """Start what is due and wait until those deliveries end; how many there were."""
        futures = self.start_due()
        wait(futures)
        return len(futures)

    def _deliver_in_thread(self, row: Prediction, secret: str) -> None:
        try:
            with prediction_context(row.id):
                self.deliver(row, secret)
        except Exception:  # the store failed: the claim runs out and the delivery is tried again
            log.exception("webhook for %s: could not record the attempt", row.id)
        finally:
            with self._lock:
                self._in_flight -= 1

    def close(self, *, wait: bool = False) -> None:
        """Start nothing more; with `wait`, also wait for the POSTs in flight. Those end by
        themselves within WANFORGE_WEBHOOK_TIMEOUT_S; one cut off by the process exiting is sent
        again when its claim runs out."""
        self._pool.shutdown(wait=wait, cancel_futures=True)

    async def run(self, stop: asyncio.Event, interval_s: float = 0.5) -> None:
        try:
            while not stop.is_set():
                try:
                    await asyncio.to_thread(self.start_due)
                except Exception:
                    log.exception("webhook sender: store unavailable; retrying")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=interval_s)
        finally:
            self.close()
