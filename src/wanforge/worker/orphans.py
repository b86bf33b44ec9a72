"""The sweeps of what ended jobs left in storage: jobs' scratch (`jobs/<id>/...` keys), and
outputs no prediction recorded (`outputs/...`).

The worker that records a job's outcome deletes the job's scratch (its stored checkpoints). Some
endings have no such worker: a job cancelled while it waited to run again, one failed by the
store after its last worker vanished, a delete refused by a storage outage; and an attempt whose
training ZIP had changed leaves the checkpoints of the old bytes. A starting worker removes the
scratch of every job that has ended, or whose prediction is gone; a job still queued or running
keeps its scratch (its next attempt, on any node, needs it).

An output is stored before its job's outcome is recorded (with it, the output's record,
`output_files`); a worker killed in between leaves a file no prediction names, which the job's
next attempt does not reuse. A starting worker removes such files once they have not been
written for `WANFORGE_STALE_TMP_S`: one just written may belong to a job recording it now.
"""

from __future__ import annotations

import logging

from sqlalchemy import select

from wanforge.media.errors import MediaNotFound
from wanforge.media.keys import SCRATCH_PREFIX
from wanforge.media.storage import Storage
from wanforge.store.db import Database
from wanforge.store.tables import OutputFile, Prediction
from wanforge.vocabulary import ACTIVE

log = logging.getLogger("wanforge.worker")

BATCH = 500  # prediction ids looked up per query


def sweep_orphaned_scratch(db: Database, storage: Storage) -> int:
    """Delete the scratch of jobs that ended or no longer exist; return how many keys went."""
    by_job: dict[str, list[str]] = {}
    for key in storage.list_keys(SCRATCH_PREFIX):
        parts = key.split("/")
        if len(parts) >= 3:
            by_job.setdefault(parts[1], []).append(key)
    ids = sorted(by_job)
    live: set[str] = set()
    for start in range(0, len(ids), BATCH):
        with db.session() as s:
            live.update(
                s.scalars(
                    select(Prediction.id).where(
                        Prediction.id.in_(ids[start : start + BATCH]), Prediction.status.in_(list(ACTIVE))
                    )
                )
            )
    removed = 0
    for job_id in ids:
        if job_id in live:
            continue
        for key in by_job[job_id]:
            removed += storage.delete(key)
    return removed


OUTPUTS_PREFIX = "outputs"


def sweep_orphaned_outputs(db: Database, storage: Storage, older_than_s: float, now: float) -> int:
    """Delete output files no prediction recorded, not written for `older_than_s` seconds;
    return how many went."""
    keys = list(storage.list_keys(OUTPUTS_PREFIX))
    recorded: set[str] = set()
    for start in range(0, len(keys), BATCH):
        with db.session() as s:
            recorded.update(
                s.scalars(select(OutputFile.key).where(OutputFile.key.in_(keys[start : start + BATCH])))
            )
    removed = 0
    for key in keys:
        if key in recorded:
            continue
        try:
            if storage.modified_at(key) > now - older_than_s:
                continue
        except MediaNotFound:  # deleted meanwhile
            continue
        removed += storage.delete(key)
    return removed
