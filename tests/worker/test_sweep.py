"""A worker killed mid-write leaves a hidden temporary file; a starting worker removes old ones."""

from __future__ import annotations

import os
import time

from wanforge.config import Settings
from wanforge.media.storage import LocalStorage
from wanforge.store.db import Database
from wanforge.worker.loop import WorkerLoop


def test_starting_worker_sweeps_stale_temporary_files_only(settings: Settings, db: Database) -> None:
    storage = LocalStorage(settings.storage_dir)
    kept_key = storage.new_key("outputs", "v.mp4")
    storage.put_bytes(kept_key, b"done")
    folder = storage.path(kept_key).parent
    stale = folder / ".v.mp4.0123456789ab.tmp"  # as a killed writer leaves it
    live = folder / ".w.mp4.ba9876543210.tmp"  # another worker is writing it right now
    lookalike = folder / ".notes.tmp"  # not a name the storage makes
    for path in (stale, live, lookalike):
        path.write_bytes(b"partial")
    now = time.time()
    old = now - settings.stale_tmp_s - 1
    os.utime(stale, (old, old))
    os.utime(lookalike, (old, old))

    loop = WorkerLoop(settings, db, loader=lambda _s: {})
    loop.shutdown.set()  # start, sweep, load, and stop at once
    loop.run_forever()
    assert not stale.exists()
    assert live.exists() and lookalike.exists()
    assert storage.read_bytes(kept_key) == b"done"
