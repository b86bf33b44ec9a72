"""Retention: outputs and uploads past WANFORGE_RETENTION_DAYS are swept, with injected time."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from wanforge.api.app import create_app
from wanforge.api.retention import RetentionSweeper, SweepReport
from wanforge.config import Settings
from wanforge.media.storage import LocalStorage, Storage
from wanforge.store import jobs, retention, uploads
from wanforge.store.db import Database
from wanforge.store.tables import OutputFile, Prediction, Upload
from wanforge.vocabulary import Status

T0 = datetime(2026, 1, 10, 12, 0, 0)
WEEK = timedelta(days=7)
MODEL = "alibaba/wan-2.2/i2v-plus-480p"


class CountingStorage(LocalStorage):
    """Local storage that counts each delete that removed a file, by key."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.deleted: dict[str, int] = {}
        self._lock = threading.Lock()

    def delete(self, key: str) -> bool:
        removed = super().delete(key)
        if removed:
            with self._lock:
                self.deleted[key] = self.deleted.get(key, 0) + 1
        return removed


def _prediction(
    db: Database,
    storage: Storage,
    owner: str,
    *,
    created: datetime,
    status: Status = Status.COMPLETED,
    ended: datetime | None = None,
) -> tuple[str, list[str]]:
    """A prediction made at `created` that ended at `ended` with one output file (when completed)."""
    row = jobs.create_prediction(
        db, model=MODEL, kind="generate", input={"prompt": "p"}, server_base="", max_attempts=3,
        api_key_id=owner, now=created,
    )  # fmt: skip
    keys: list[str] = []
    if status is Status.COMPLETED:
        keys = [storage.new_key("outputs", f"{row.id}.mp4")]
        storage.put_bytes(keys[0], b"video")
    with db.session() as s:
        if status.terminal:
            s.execute(
                update(Prediction)
                .where(Prediction.id == row.id)
                .values(jobs.ended(status, ended or created, outputs=keys))
            )
        else:
            s.execute(update(Prediction).where(Prediction.id == row.id).values(status=status))
        for key in keys:
            s.add(OutputFile(key=key, prediction_id=row.id, api_key_id=owner, created_at=created))
    return row.id, keys


def _upload(db: Database, storage: LocalStorage, owner: str, created: datetime) -> tuple[str, str]:
    key = storage.new_key("uploads", "in.png")
    storage.put_bytes(key, b"image")
    row = uploads.create_upload(
        db, key=key, filename="in.png", content_type="image/png", declared_size=5, put_token=None,
        api_key_id=owner,
    )  # fmt: skip
    uploads.mark_complete(db, row.id, 5)
    with db.session() as s:
        s.execute(update(Upload).where(Upload.id == row.id).values(created_at=created))
    return row.id, key


@pytest.fixture
def storage(settings: Settings) -> CountingStorage:
    return CountingStorage(settings.storage_dir)


def _sweeper(db: Database, storage: LocalStorage, settings: Settings, now: datetime) -> RetentionSweeper:
    return RetentionSweeper(db, storage, settings, clock=lambda: now)


def test_outputs_are_kept_for_the_window_then_removed_and_answer_410(
    settings: Settings, db: Database, storage: CountingStorage, owner: str, auth: dict[str, str]
) -> None:
    pid, [key] = _prediction(db, storage, owner, created=T0 - timedelta(hours=1), ended=T0)
    # the window counts from when the prediction ended: one second short of it, nothing goes
    assert _sweeper(db, storage, settings, T0 + WEEK - timedelta(seconds=1)).sweep_once() == SweepReport()
    assert storage.exists(key)

    swept_at = T0 + WEEK + timedelta(seconds=1)
    assert _sweeper(db, storage, settings, swept_at).sweep_once() == SweepReport(predictions=1, files=1)
    assert not storage.exists(key) and storage.deleted == {key: 1}

    client = TestClient(create_app(settings, db))
    got = client.get(f"/api/v3/predictions/{pid}/result", headers=auth).json()["data"]
    # the record stays, says when its outputs went, and keeps its status and output URLs
    assert got["status"] == "completed"
    assert got["expired_at"] == "2026-01-17T12:00:01.000Z"
    assert got["outputs"] == [f"http://testserver/files/{key}"]
    answer = client.get(f"/files/{key}")
    assert answer.status_code == 410
    assert answer.json() == {
        "code": 410,
        "message": "file expired: outputs are deleted 7 days after their prediction ended "
        "(WANFORGE_RETENTION_DAYS); this one was deleted at 2026-01-17T12:00:01.000Z",
        "data": None,
    }
    # a file that never was stays a plain 404
    assert client.get("/files/outputs/abcdefabcdefabcdefabcdef/x.mp4").status_code == 404
    # a second sweep finds nothing more
    assert _sweeper(db, storage, settings, swept_at + WEEK).sweep_once() == SweepReport()


def test_running_and_queued_jobs_are_never_swept(
    settings: Settings, db: Database, storage: CountingStorage, owner: str
) -> None:
    long_ago = T0 - timedelta(days=60)
    running, _ = _prediction(db, storage, owner, created=long_ago, status=Status.PROCESSING)
    queued, _ = _prediction(db, storage, owner, created=long_ago, status=Status.CREATED)
    failed, _ = _prediction(db, storage, owner, created=long_ago, status=Status.FAILED)
    report = _sweeper(db, storage, settings, T0).sweep_once()
    assert report == SweepReport(predictions=1, files=0)  # the failed one: expired, with no files
    with db.session() as s:
        expired = {pid: at for pid, at in s.execute(select(Prediction.id, Prediction.expired_at))}
    assert expired == {running: None, queued: None, failed: T0}


def test_uploads_past_the_window_are_deleted_with_their_rows(
    settings: Settings, db: Database, storage: CountingStorage, owner: str, auth: dict[str, str]
) -> None:
    old_id, old_key = _upload(db, storage, owner, T0 - WEEK - timedelta(seconds=1))
    new_id, new_key = _upload(db, storage, owner, T0 - WEEK + timedelta(seconds=1))
    assert _sweeper(db, storage, settings, T0).sweep_once() == SweepReport(uploads=1)
    assert uploads.get_upload(db, old_id) is None and not storage.exists(old_key)
    assert uploads.get_upload(db, new_id) is not None and storage.exists(new_key)
    client = TestClient(create_app(settings, db))
    assert client.get(f"/files/{old_key}").status_code == 404
    assert client.get(f"/files/{new_key}").content == b"image"


def _listed(client: TestClient, auth: dict[str, str]) -> tuple[list[str], int]:
    data = client.post("/api/v3/predictions", json={"page": 1, "page_size": 50}, headers=auth).json()["data"]
    return [item["id"] for item in data["items"]], data["total"]


def test_the_list_shows_only_what_is_within_the_window(
    settings: Settings, db: Database, storage: CountingStorage, owner: str, auth: dict[str, str]
) -> None:
    old, _ = _prediction(db, storage, owner, created=T0 - timedelta(days=9), ended=T0 - timedelta(days=8))
    recent, _ = _prediction(db, storage, owner, created=T0 - timedelta(days=6))
    # made long ago, but still running: within the window until it ends
    running, _ = _prediction(db, storage, owner, created=T0 - timedelta(days=30), status=Status.PROCESSING)
    app = create_app(settings, db)
    app.state.wanforge.clock = lambda: T0
    client = TestClient(app)
    # not swept yet, and already not listed
    assert _listed(client, auth) == ([recent, running], 2)
    # still readable by id until the sweep, and after it
    assert client.get(f"/api/v3/predictions/{old}/result", headers=auth).status_code == 200

    settings.retention_days = 0  # keep forever: everything is listed, and nothing is swept
    assert _listed(client, auth) == ([recent, old, running], 3)
    assert _sweeper(db, storage, settings, T0 + 100 * WEEK).sweep_once() == SweepReport()


def test_a_swept_prediction_is_not_listed_even_if_the_window_grows(
    settings: Settings, db: Database, storage: CountingStorage, owner: str, auth: dict[str, str]
) -> None:
    pid, _ = _prediction(db, storage, owner, created=T0 - timedelta(days=9))
    _sweeper(db, storage, settings, T0).sweep_once()
    settings.retention_days = 30
    app = create_app(settings, db)
    app.state.wanforge.clock = lambda: T0
    assert _listed(TestClient(app), auth) == ([], 0)
    assert jobs.get_prediction(db, pid) is not None


def test_one_claim_per_prediction_and_upload(
    settings: Settings, db: Database, storage: CountingStorage, owner: str
) -> None:
    pid, keys = _prediction(db, storage, owner, created=T0 - timedelta(days=9))
    upload_id, upload_key = _upload(db, storage, owner, T0 - timedelta(days=9))
    before = retention.cutoff(T0, settings.retention_s or 0)
    assert retention.claim_prediction(db, pid, before, T0) == keys
    assert retention.claim_prediction(db, pid, before, T0) is None
    assert retention.claim_upload(db, upload_id, before) == upload_key
    assert retention.claim_upload(db, upload_id, before) is None


def test_several_sweepers_delete_each_file_once(
    settings: Settings, db: Database, storage: CountingStorage, owner: str
) -> None:
    made = [_prediction(db, storage, owner, created=T0 - timedelta(days=9)) for _ in range(12)]
    ups = [_upload(db, storage, owner, T0 - timedelta(days=9)) for _ in range(6)]
    sweepers = [_sweeper(db, storage, settings, T0) for _ in range(3)]
    reports: list[SweepReport] = []
    start = threading.Barrier(len(sweepers))

    def sweep(sweeper: RetentionSweeper) -> None:
        start.wait()
        reports.append(sweeper.sweep_once())

    threads = [threading.Thread(target=sweep, args=(s,)) for s in sweepers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(r.predictions for r in reports) == 12
    assert sum(r.files for r in reports) == 12
    assert sum(r.uploads for r in reports) == 6
    expected = {key: 1 for _, keys in made for key in keys} | {key: 1 for _, key in ups}
    assert storage.deleted == expected


def test_the_server_sweeps_in_the_background(
    settings: Settings, db: Database, storage: CountingStorage, owner: str
) -> None:
    pid, [key] = _prediction(db, storage, owner, created=T0 - timedelta(days=9))
    app = create_app(settings, db)
    app.state.wanforge.clock = lambda: T0
    done = threading.Event()
    with TestClient(app):
        # the lifespan's sweeper runs at once; wait for its mark (a bound against a hang, not timing)
        for _ in range(200):
            row = jobs.get_prediction(db, pid)
            if row is not None and row.expired_at is not None:
                done.set()
                break
            threading.Event().wait(0.05)
    assert done.is_set()
    assert not LocalStorage(settings.storage_dir).exists(key)


def test_the_sweeper_removes_what_killed_writers_left_without_a_worker_start(
    settings: Settings, db: Database
) -> None:
    """Unfinished writes and outputs no prediction recorded, older than WANFORGE_STALE_TMP_S,
    go with each sweep of the API process (retention on or off); fresh ones stay."""
    import os
    import time

    settings.retention_days = 0  # the storage sweep does not depend on retention
    storage = LocalStorage(settings.storage_dir)
    orphan, fresh = storage.new_key("outputs", "a.mp4"), storage.new_key("outputs", "b.mp4")
    for key in (orphan, fresh):
        storage.put_bytes(key, b"video")
    tmp = storage.path(fresh).parent / ".b.mp4.0123456789ab.tmp"
    tmp.write_bytes(b"partial")
    old = time.time() - settings.stale_tmp_s - 1
    for path in (storage.path(orphan), tmp):
        os.utime(path, (old, old))
    assert RetentionSweeper(db, storage, settings).sweep_storage() == 2
    assert not storage.exists(orphan) and not tmp.exists() and storage.exists(fresh)
