"""The webhook POST itself (media.fetch.post_url): its errors name the webhook settings."""

from __future__ import annotations

import threading

import pytest

from tests.webhooks.receiver import webhook_receiver
from wanforge.media.errors import MediaError
from wanforge.media.fetch import post_url


def test_timeout_names_the_webhook_setting() -> None:
    with webhook_receiver(hold=threading.Event()) as receiver:
        with pytest.raises(MediaError) as caught:
            post_url(receiver.url, content=b"{}", headers={}, timeout_s=0.2, allow_private=True)
        assert receiver.holding.is_set()
    assert str(caught.value) == "webhook URL timed out after 0.2 s; WANFORGE_WEBHOOK_TIMEOUT_S sets the limit"
