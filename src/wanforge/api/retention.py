"""The retention sweep: a background task of each API process (beside the webhook sender).
It also removes, each time, what writers killed mid-job left in storage (`sweep_storage`).

Every `WANFORGE_RETENTION_SWEEP_S` it deletes the output files of predictions that ended more
than `WANFORGE_RETENTION_DAYS` ago (the prediction stays, with `expired_at`; its output URLs
answer 410) and the uploads made before then (file and row). Each item is claimed in the store
first (`wanforge.store.retention`), so several API processes sweeping at once delete each file
once. The clock is injected: tests sweep at any time they like, without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from wanforge.config import Settings
from wanforge.logs import prediction_context
from wanforge.media.errors import MediaError
from wanforge.media.storage import Storage
from wanforge.store import metrics, retention
from wanforge.store.db import Database, utcnow
from wanforge.worker.orphans import sweep_orphaned_outputs

log = logging.getLogger("wanforge.retention")

BATCH = 100  # rows looked at per query; a sweep goes on until none is left


@dataclass(frozen=True)
class SweepReport:
    predictions: int = 0  # predictions marked expired by this sweeper
    files: int = 0  # output files it deleted
    uploads: int = 0  # uploads (rows) it deleted


class RetentionSweeper:
    def __init__(
        self,
        db: Database,
        storage: Storage,
        settings: Settings,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.storage = storage
        self.settings = settings
        self.clock = clock

    def _delete_file(self, key: str) -> bool:
        try:
            return self.storage.delete(key)
        except (MediaError, OSError):  # a key that is not valid any more, or a storage error
            log.warning("retention: could not delete a stored file", exc_info=True)
            return False

    def sweep_once(self) -> SweepReport:
        """One full sweep at the clock's `now`; what this sweeper (not another) removed."""
        window = self.settings.retention_s
        if window is None:
            return SweepReport()
        now = self.clock()
        before = retention.cutoff(now, window)
        predictions = files = uploads = 0
        while ids := retention.expired_predictions(self.db, before, BATCH):
            for prediction_id in ids:
                keys = retention.claim_prediction(self.db, prediction_id, before, now)
                if keys is None:  # another sweeper took it
                    continue
                predictions += 1
                with prediction_context(prediction_id):
                    removed = sum(self._delete_file(key) for key in keys)
                    log.info("retention: removed %d output file(s)", removed)
                files += removed
        while ids := retention.expired_uploads(self.db, before, BATCH):
            for upload_id in ids:
                key = retention.claim_upload(self.db, upload_id, before)
                if key is not None:
                    uploads += 1
                    self._delete_file(key)
        metrics.add(
            self.db,
            [
                *(
                    metrics.counter(metrics.RETENTION_SWEPT, {"what": "predictions"}, predictions)
                    if predictions
                    else []
                ),
                *(metrics.counter(metrics.RETENTION_SWEPT, {"what": "output_files"}, files) if files else []),
                *(metrics.counter(metrics.RETENTION_SWEPT, {"what": "uploads"}, uploads) if uploads else []),
            ],
        )
        if predictions or uploads:
            log.info(
                "retention: %d prediction(s) expired (%d file(s)), %d upload(s) deleted",
                predictions,
                files,
                uploads,
            )
        return SweepReport(predictions, files, uploads)

    def sweep_storage(self) -> int:
        """Remove what writers killed mid-job left in storage, not written for
        `WANFORGE_STALE_TMP_S`: unfinished writes, and outputs no prediction recorded
        (`worker/orphans.py`). Workers do it when they start; this does it without waiting for one."""
        now = time.time()
        removed = self.storage.sweep_unfinished(self.settings.stale_tmp_s, now)
        removed += sweep_orphaned_outputs(self.db, self.storage, self.settings.stale_tmp_s, now)
        if removed:
            log.info("storage sweep: removed %d unfinished or unrecorded file(s)", removed)
        return removed

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                if self.settings.retention_s is not None:
                    await asyncio.to_thread(self.sweep_once)
                await asyncio.to_thread(self.sweep_storage)
            except Exception:
                log.exception("retention sweep failed; trying again later")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.settings.retention_sweep_s)
