"""Webhook signing secrets, one per API key: `whsec_` plus random bytes, made on first use.

A delivery is signed with the secret of the key that made its prediction, so a receiver that
trusts one key's secret accepts no other key's deliveries. A prediction without an owner (made
before tenancy, on a server with no key then) is signed with the old server-wide secret.
"""

from __future__ import annotations

import secrets

from wanforge.store.db import Database
from wanforge.store.secrets import server_secret
from wanforge.webhooks.signing import SECRET_PREFIX

SECRET_NAME = "webhook_secret"  # the server-wide one; a key's is stored as f"{SECRET_NAME}:{key id}"


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def webhook_secret(db: Database, api_key_id: str | None = None) -> str:
    """The secret the deliveries of `api_key_id`'s predictions are signed with (`whsec_...`)."""
    name = SECRET_NAME if api_key_id is None else f"{SECRET_NAME}:{api_key_id}"
    return server_secret(db, name, new_secret)
