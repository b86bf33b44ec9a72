"""Whose a stored file is: an upload belongs to the key that uploaded it, an output to the key of
its prediction. A key may use only its own files as inputs; an admin key may use any."""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import select

from wanforge.store.db import Database
from wanforge.store.tables import ApiKey, OutputFile, Upload


class Access(StrEnum):
    OWN = "own"  # the key's own file (or the key is an admin's): usable
    OTHER = "other"  # another key's: answered as if it did not exist
    UNKNOWN = "unknown"  # no upload or output has this storage key


def file_access(db: Database, storage_key: str, api_key_id: str | None) -> Access:
    """May `api_key_id` use the stored file `storage_key` as an input?

    `api_key_id` None is a prediction without an owner (made before tenancy on a server that had
    no key to give it): only admins see those, so it may use any file, as an admin key may."""
    with db.session() as s:
        owners = [
            *s.scalars(select(Upload.api_key_id).where(Upload.key == storage_key)),
            *s.scalars(select(OutputFile.api_key_id).where(OutputFile.key == storage_key)),
        ]
        if not owners:
            return Access.UNKNOWN
        if api_key_id is None or api_key_id in owners:
            return Access.OWN
        admin = s.scalar(select(ApiKey.is_admin).where(ApiKey.id == api_key_id))
        return Access.OWN if admin else Access.OTHER
