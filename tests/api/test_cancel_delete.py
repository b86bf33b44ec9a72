"""Cancel and bulk delete answer what really happened to each id."""

from __future__ import annotations

from fastapi.testclient import TestClient

from wanforge.store import jobs
from wanforge.store.db import Database


def _new(db: Database, owner: str) -> str:
    return jobs.create_prediction(
        db, model="m", kind="generate", input={}, server_base="http://h", max_attempts=3, api_key_id=owner
    ).id


def test_bulk_delete_sorts_ids_by_outcome(
    client: TestClient, db: Database, auth: dict[str, str], owner: str
) -> None:
    finished = _new(db, owner)
    assert jobs.claim_next(db, "A", 30, ("generate",)) is not None
    assert jobs.complete(db, finished, "A", outputs=[], result={}, inference_ms=1)
    running = _new(db, owner)
    assert jobs.claim_next(db, "A", 30, ("generate",)) is not None
    queued = _new(db, owner)
    unknown = "0" * 32
    resp = client.post(
        "/api/v3/predictions/delete", headers=auth, json={"ids": [running, queued, finished, unknown]}
    )
    assert resp.status_code == 200
    data = resp.json()["data"]
    assert data == {
        "deleted": [queued, finished],
        "cancelling": [running],
        "not_found": [unknown],
    }
    assert jobs.get_prediction(db, running).cancel_requested  # type: ignore[union-attr]
    assert jobs.get_prediction(db, finished) is None


def test_cancel_answers_the_true_status(
    client: TestClient, db: Database, auth: dict[str, str], owner: str
) -> None:
    done = _new(db, owner)
    assert jobs.claim_next(db, "A", 30, ("generate",)) is not None
    assert jobs.complete(db, done, "A", outputs=["k"], result={}, inference_ms=1)
    resp = client.delete(f"/api/v3/predictions/{done}", headers=auth)
    assert resp.status_code == 200 and resp.json()["data"]["status"] == "completed"
    missing = client.delete(f"/api/v3/predictions/{'0' * 32}", headers=auth)
    assert missing.status_code == 404 and missing.json()["code"] == 404
