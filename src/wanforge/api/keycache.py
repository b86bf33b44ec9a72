"""Keys verified in the last `ttl_s` seconds, so a client polling many times a second costs one
store read per key per `ttl_s` instead of one per request.

The bound on `ttl_s` (`WANFORGE_KEY_CACHE_S`, at most 5 s) is how late a revocation, an expiry
or a changed limit can take effect in an API process that saw the key just before. Only keys
found valid are kept (an unknown key is looked up every time: a key made a moment ago works at
once), and a cached key's own expiry still holds to the second.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime

from wanforge.store.db import utcnow
from wanforge.store.tables import ApiKey


class KeyCache:
    def __init__(
        self,
        ttl_s: float,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self.wall_clock = wall_clock
        self._keys: OrderedDict[str, tuple[float, ApiKey]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _digest(token: str) -> str:
        # not the stored hash's function on purpose: the cache never holds what the store holds
        return hashlib.blake2b(token.encode(), digest_size=20).hexdigest()

    def get(self, token: str) -> ApiKey | None:
        """The key verified for `token` less than `ttl_s` ago and not expired since; else None."""
        if self.ttl_s <= 0:
            return None
        digest = self._digest(token)
        with self._lock:
            entry = self._keys.get(digest)
            if entry is None:
                return None
            until, key = entry
            if self.clock() >= until or (key.expires_at is not None and key.expires_at <= self.wall_clock()):
                del self._keys[digest]
                return None
            return key

    def put(self, token: str, key: ApiKey) -> None:
        if self.ttl_s <= 0:
            return
        with self._lock:
            self._keys[self._digest(token)] = (self.clock() + self.ttl_s, key)
            self._keys.move_to_end(self._digest(token))
            while len(self._keys) > self.max_entries:
                self._keys.popitem(last=False)
