"""A key's stored bytes (`wanforge.store.storage_quota`): its uploads (a ticket's declared size
from the start), its predictions' inputs and outputs; deleting gives them back; over the quota a
write is refused with a message that names it."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from wanforge.store import jobs, retention, uploads
from wanforge.store.db import Database
from wanforge.store.keys import create_key
from wanforge.store.storage_quota import InlineUpload, OverStorage, check_room, stored_bytes


def _upload(db: Database, key_id: str, size: int | None, *, complete: bool = True) -> str:
    row = uploads.create_upload(
        db,
        key=f"uploads/{size}-{complete}/f.png",
        filename="f.png",
        content_type="image/png",
        declared_size=size,
        put_token=None if complete else "t",
        api_key_id=key_id,
    )
    if complete and size is not None:
        uploads.mark_complete(db, row.id, size)
    return row.id


def _used(db: Database, key_id: str) -> int:
    with db.session() as s:
        return stored_bytes(s, key_id)


def test_uploads_inputs_and_outputs_count_and_deleting_gives_them_back(db: Database) -> None:
    key, other = create_key(db, "a")[1].id, create_key(db, "b")[1].id
    old_upload = _upload(db, key, 1000)
    _upload(db, key, 300, complete=False)  # a ticket holds its declared size until its PUT
    _upload(db, other, 5000)
    inp = {"image": "http://h/files/uploads/x/input.png", "prompt": "p"}
    job = jobs.create_prediction(
        db,
        model="m",
        kind="generate",
        input=inp,
        server_base="http://h",
        max_attempts=3,
        api_key_id=key,
        inline_uploads=[InlineUpload("uploads/x/input.png", "input.png", "image/png", 700)],
    )
    input_bytes = job.input_bytes
    assert input_bytes == len('{"image": "http://h/files/uploads/x/input.png", "prompt": "p"}')
    assert _used(db, key) == 1000 + 300 + 700 + input_bytes
    assert jobs.claim_next(db, "w", 30, ("generate",)) is not None
    assert jobs.complete(
        db,
        job.id,
        "w",
        outputs=["outputs/t/v.mp4"],
        result={},
        inference_ms=1,
        output_sizes={"outputs/t/v.mp4": 9000},
    )
    assert _used(db, key) == 1000 + 300 + 700 + input_bytes + 9000
    assert _used(db, other) == 5000
    # deleting the prediction gives back its input, the upload made from it, and its outputs
    deleted = jobs.delete_predictions(db, [job.id], visible_to=key)
    assert sorted(deleted[job.id]) == ["outputs/t/v.mp4", "uploads/x/input.png"]
    assert _used(db, key) == 1000 + 300
    assert retention.claim_upload(db, old_upload, datetime.max - timedelta(days=1)) is not None
    assert _used(db, key) == 300


def test_a_write_past_the_quota_is_refused_naming_it(db: Database) -> None:
    key = create_key(db, "a")[1].id
    _upload(db, key, 600)
    with db.session() as s:
        check_room(s, key, quota=1000, adding=400, what="this upload")  # exactly full is allowed
        check_room(s, key, quota=0, adding=10**12, what="this upload")  # 0: unlimited
        with pytest.raises(OverStorage) as over:
            check_room(s, key, quota=1000, adding=401, what="this upload")
    assert over.value.status == 413
    assert over.value.message == (
        "storage quota exceeded: this upload (401 bytes) would bring this key's stored bytes to "
        "1001, over its quota of 1000 bytes; delete predictions to free space"
    )
    _upload(db, key, 400)
    with db.session() as s, pytest.raises(OverStorage) as full:
        check_room(s, key, quota=1000, adding=1, what="this upload")
    assert full.value.status == 429
    assert full.value.message == (
        "storage quota reached: this key stores 1000 bytes, its quota is 1000 bytes; "
        "delete predictions to free space"
    )


def test_an_inputs_upload_lives_as_long_as_its_prediction_keeps_its_files(db: Database) -> None:
    """The retention sweep leaves a prediction's input upload to the prediction: kept while it
    waits or runs (however long), removed with its outputs when they expire."""
    key = create_key(db, "a")[1].id
    t0 = datetime(2026, 1, 1)
    job = jobs.create_prediction(
        db,
        model="m",
        kind="generate",
        input={"image": "http://h/files/uploads/x/input.png", "prompt": "p"},
        server_base="http://h",
        max_attempts=3,
        api_key_id=key,
        now=t0,
        inline_uploads=[InlineUpload("uploads/x/input.png", "input.png", "image/png", 700)],
    ).id
    later = t0 + timedelta(days=400)
    assert retention.expired_uploads(db, later) == []  # it waits: its input stays
    assert jobs.claim_next(db, "w", 30, ("generate",)) is not None
    assert jobs.complete(db, job, "w", outputs=["outputs/t/v.mp4"], result={}, inference_ms=1)
    assert retention.claim_prediction(db, job, later, later) == ["outputs/t/v.mp4", "uploads/x/input.png"]
    assert _used(db, key) == jobs.get_prediction(db, job).input_bytes  # type: ignore[union-attr]
