"""The server's webhook signing secret: `whsec_` plus random bytes, made once and stored."""

from __future__ import annotations

import secrets

from wanforge.store.db import Database
from wanforge.store.secrets import server_secret
from wanforge.webhooks.signing import SECRET_PREFIX

SECRET_NAME = "webhook_secret"


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def webhook_secret(db: Database) -> str:
    """The secret webhook signatures are made with (`whsec_...`), made on first use."""
    return server_secret(db, SECRET_NAME, new_secret)
