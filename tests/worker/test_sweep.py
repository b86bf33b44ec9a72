"""A worker killed mid-write leaves a hidden temporary file; a starting worker removes old ones."""

from __future__ import annotations

import os
import time

from sqlalchemy import update

from wanforge.config import Settings
from wanforge.media.keys import job_scratch_key
from wanforge.media.storage import LocalStorage
from wanforge.store import jobs
from wanforge.store.db import Database
from wanforge.store.tables import Prediction
from wanforge.vocabulary import Status
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


def test_starting_worker_removes_the_scratch_of_ended_jobs_only(settings: Settings, db: Database) -> None:
    """Scratch whose job ended without its worker deleting it (cancelled while queued after an
    attempt, failed by the store, gone) is removed; a queued or running job's is kept."""
    storage = LocalStorage(settings.storage_dir)

    def job(status: Status | None) -> list[str]:
        job_id = jobs.new_id()
        if status is not None:
            row = jobs.create_prediction(
                db, model="m", kind="train", input={}, server_base="http://h", max_attempts=1
            )
            job_id = row.id
            with db.session() as s:
                s.execute(update(Prediction).where(Prediction.id == job_id).values(status=status))
        keys = [job_scratch_key(job_id, "checkpoints", f"{e}-0123456789abcdef.pt") for e in ("high", "low")]
        for key in keys:
            storage.put_bytes(key, b"ckpt")
        return keys

    kept = [*job(Status.CREATED), *job(Status.PROCESSING)]
    swept = [*job(Status.CANCELLED), *job(Status.FAILED), *job(Status.COMPLETED), *job(None)]
    output = storage.new_key("outputs", "v.mp4")
    storage.put_bytes(output, b"done")

    loop = WorkerLoop(settings, db, loader=lambda _s: {})
    loop.shutdown.set()
    loop.run_forever()
    assert [storage.exists(k) for k in kept] == [True] * len(kept)
    assert [storage.exists(k) for k in swept] == [False] * len(swept)
    assert sorted(storage.list_keys("jobs")) == sorted(kept)
    assert storage.exists(output)


def test_starting_worker_removes_outputs_no_prediction_recorded(settings: Settings, db: Database) -> None:
    """A worker killed between storing an output and recording the outcome leaves a file no
    prediction names: removed once older than WANFORGE_STALE_TMP_S; a recorded output, or one
    just written (its job may be recording it now), is kept."""
    storage = LocalStorage(settings.storage_dir)
    orphan, fresh, recorded = (
        storage.new_key("outputs", f"{n}.mp4") for n in ("orphan", "fresh", "recorded")
    )
    for key in (orphan, fresh, recorded):
        storage.put_bytes(key, b"video")
    pid = jobs.create_prediction(db, model="m", kind="generate", input={}, server_base="", max_attempts=1).id
    assert jobs.claim_next(db, "w", 30, ("generate",)) is not None
    assert jobs.complete(db, pid, "w", outputs=[recorded], result={}, inference_ms=1)
    old = time.time() - settings.stale_tmp_s - 1
    for key in (orphan, recorded):
        os.utime(storage.path(key), (old, old))

    loop = WorkerLoop(settings, db, loader=lambda _s: {})
    loop.shutdown.set()
    loop.run_forever()
    assert not storage.exists(orphan)
    assert storage.exists(fresh) and storage.exists(recorded)
