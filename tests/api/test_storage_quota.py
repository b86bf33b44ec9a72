"""A key's storage quota at the API: uploads (both forms) and submissions past it are refused
with 413 (this one would not fit) or 429 (it is full), naming the quota; nothing is kept of a
refused write; a large `data:` input is stored as an upload, not in the row; deleting frees."""

from __future__ import annotations

import base64

from fastapi.testclient import TestClient

from wanforge.api.app import create_app
from wanforge.config import Settings
from wanforge.store.db import Database
from wanforge.store.keys import KeyOptions, create_key
from wanforge.store.storage_quota import stored_bytes
from wanforge.store.tables import Prediction, Upload

I2V = "/api/v3/alibaba/wan-2.2/i2v-plus-480p"


def _used(db: Database, key_id: str) -> int:
    with db.session() as s:
        return stored_bytes(s, key_id)


def test_uploads_past_the_quota_are_refused_and_keep_nothing(settings: Settings, db: Database) -> None:
    client = TestClient(create_app(settings, db))
    plaintext, key = create_key(db, "k", KeyOptions(storage_quota=10_000))
    auth = {"Authorization": f"Bearer {plaintext}"}
    upload = "/api/v3/media/upload/binary"
    assert client.post(upload, headers=auth, files={"file": ("a.png", b"x" * 6000)}).status_code == 200
    over = client.post(upload, headers=auth, files={"file": ("b.png", b"x" * 4001)})
    assert over.status_code == 413 and over.json()["code"] == 1401
    assert over.json()["message"].startswith("storage quota exceeded: this upload")
    assert "over its quota of 10000 bytes" in over.json()["message"]
    assert _used(db, key.id) == 6000  # nothing of the refused one is counted (or kept)
    ticket = client.post("/api/v3/media/uploads", headers=auth, json={"filename": "c.png", "size": 4001})
    assert ticket.status_code == 413 and "quota of 10000 bytes" in ticket.json()["message"]
    unsized = client.post("/api/v3/media/uploads", headers=auth, json={"filename": "d.png"}).json()["data"]
    put = client.put(unsized["upload"]["url"], content=b"y" * 4001)
    assert put.status_code == 413 and "quota of 10000 bytes" in put.json()["message"]
    assert client.put(unsized["upload"]["url"], content=b"y" * 4000).status_code == 200
    full = client.post(upload, headers=auth, files={"file": ("e.png", b"x")})
    assert full.status_code == 429 and full.json() == {
        "code": 429,
        "message": "storage quota reached: this key stores 10000 bytes, its quota is 10000 bytes; "
        "delete predictions to free space",
        "data": None,
    }
    other = {"Authorization": f"Bearer {create_key(db, 'other')[0]}"}
    assert client.post(upload, headers=other, files={"file": ("f.png", b"x" * 6000)}).status_code == 200


def test_a_large_data_input_is_stored_as_an_upload_and_deleting_frees_it(
    settings: Settings, db: Database
) -> None:
    client = TestClient(create_app(settings, db))
    plaintext, key = create_key(db, "k", KeyOptions(storage_quota=200_000))
    auth = {"Authorization": f"Bearer {plaintext}"}
    image = b"\x89PNG" + bytes(60_000)
    body = {"image": "data:image/png;base64," + base64.b64encode(image).decode(), "prompt": "a cat"}
    submitted = client.post(I2V, headers=auth, json=body)
    assert submitted.status_code == 200, submitted.text
    pid = submitted.json()["data"]["id"]
    with db.session() as s:
        stored = s.get(Prediction, pid)
        assert stored is not None and stored.input["image"].startswith("http://testserver/files/uploads/")
        [made] = s.query(Upload).filter_by(prediction_id=pid).all()
    assert made.size == len(image) and made.api_key_id == key.id
    assert client.get(stored.input["image"].removeprefix("http://testserver")).content == image
    assert _used(db, key.id) == len(image) + stored.input_bytes < 70_000
    big = "data:image/png;base64," + base64.b64encode(b"\x89PNG" + bytes(150_000)).decode()
    over = client.post(I2V, headers=auth, json={**body, "image": big})
    assert over.status_code == 413 and "this prediction's input" in over.json()["message"]
    assert client.post("/api/v3/predictions/delete", headers=auth, json={"ids": [pid]}).json()["data"][
        "deleted"
    ] == [pid]
    assert _used(db, key.id) == 0
    assert client.get(stored.input["image"].removeprefix("http://testserver")).status_code == 404
