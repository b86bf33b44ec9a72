"""A receiver that hangs until its timeout does not hold up other deliveries; the number of
POSTs in flight is bounded by WANFORGE_WEBHOOK_CONCURRENCY."""

from __future__ import annotations

import asyncio
import threading

from tests.webhooks.receiver import finished, webhook_receiver
from wanforge.config import Settings
from wanforge.store import jobs
from wanforge.store.db import Database
from wanforge.webhooks.sender import WebhookSender

WAIT_S = 10.0  # an upper bound for events that come at once; never slept


def test_a_hanging_receiver_does_not_delay_the_others(settings: Settings, db: Database) -> None:
    settings.webhook_timeout_s = 60.0
    with webhook_receiver(hold=threading.Event()) as slow, webhook_receiver() as fast:
        hung = finished(db, slow.url)  # finished first, so it is claimed first
        quick = finished(db, fast.url)
        sending = threading.Thread(target=WebhookSender(db, settings).send_due, daemon=True)
        sending.start()
        assert fast.arrived.wait(WAIT_S), "the fast receiver waited for the hanging one"
        assert slow.holding.wait(WAIT_S) and not slow.arrived.is_set()
        assert slow.hold is not None
        slow.hold.set()
        sending.join(WAIT_S)
        assert not sending.is_alive()
    for pid in (hung, quick):
        row = jobs.get_prediction(db, pid)
        assert row is not None and (row.webhook_state, row.webhook_attempts) == ("delivered", 1)


def test_the_background_loop_keeps_delivering_while_one_receiver_hangs(
    settings: Settings, db: Database
) -> None:
    settings.webhook_timeout_s = 60.0
    sender = WebhookSender(db, settings)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    running = threading.Thread(target=loop.run_until_complete, args=(sender.run(stop, interval_s=0.02),))
    with webhook_receiver(hold=threading.Event()) as slow, webhook_receiver() as fast:
        hung = finished(db, slow.url)
        running.start()
        try:
            assert slow.holding.wait(WAIT_S)
            quick = finished(db, fast.url)  # finishes while the first POST hangs
            assert fast.arrived.wait(WAIT_S), "the loop waited for the hanging receiver"
            assert not slow.arrived.is_set()
        finally:
            loop.call_soon_threadsafe(stop.set)
            assert slow.hold is not None
            slow.hold.set()
            running.join(WAIT_S)
            sender.close(wait=True)
    assert not running.is_alive()
    loop.close()
    for pid in (hung, quick):
        row = jobs.get_prediction(db, pid)
        assert row is not None and (row.webhook_state, row.webhook_attempts) == ("delivered", 1)


def test_deliveries_in_flight_are_bounded(settings: Settings, db: Database) -> None:
    settings.webhook_concurrency = 1
    sender = WebhookSender(db, settings)
    with webhook_receiver(hold=threading.Event()) as slow, webhook_receiver() as fast:
        finished(db, slow.url)
        quick = finished(db, fast.url)
        [first] = sender.start_due()
        assert slow.holding.wait(WAIT_S)
        assert sender.start_due() == []  # the one slot is taken: the fast delivery stays queued
        row = jobs.get_prediction(db, quick)
        assert row is not None and (row.webhook_state, row.webhook_attempts) == ("pending", 0)
        assert slow.hold is not None
        slow.hold.set()
        first.result(WAIT_S)
        [second] = sender.start_due()
        second.result(WAIT_S)
    assert fast.arrived.is_set()
    sender.close()
