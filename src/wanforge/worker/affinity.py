"""Which LoRAs this worker holds loaded, as the identities queued jobs name them by (LoRA affinity).

The engine's adapter cache knows its LoRAs by content hash; a queued job names its LoRAs by
`path`. The generate task notes, for each LoRA it resolved, its path's identity and the file's
hash; `identities()` answers the identities whose file the cache still holds, for `claim_next`'s
`prefer` (see `wanforge.store.affinity`). Training jobs name no LoRA and add none.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from wanforge.store.affinity import lora_identity


class HeldLoras:
    """Path identity -> sha256 of the LoRAs this worker resolved, filtered by what is still held."""

    def __init__(self, held_files: Callable[[], frozenset[str]]) -> None:
        self._held_files = held_files
        self._by_identity: dict[str, str] = {}
        self._lock = threading.Lock()

    def note(self, resolved: Iterable[tuple[str, str]]) -> None:
        """Remember `(path as the input gave it, sha256 of the file it resolved to)` pairs."""
        with self._lock:
            for path, sha256 in resolved:
                self._by_identity[lora_identity(path)] = sha256

    def identities(self) -> frozenset[str]:
        """The identities whose file the adapter cache holds now; forgets the others."""
        held = self._held_files()
        with self._lock:
            self._by_identity = {i: sha for i, sha in self._by_identity.items() if sha in held}
            return frozenset(self._by_identity)
