"""Tenancy: a key sees, cancels, deletes and uses only its own predictions and files; another
key's are answered exactly as unknown ones; an admin key sees and manages all."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.samples import png_bytes
from wanforge.store import jobs
from wanforge.store.db import Database
from wanforge.store.keys import KeyOptions, create_key

I2V = "/api/v3/alibaba/wan-2.2/i2v-plus-480p"
GOOD = {"image": "https://example.com/cat.png", "prompt": "a cat walks"}
UNKNOWN = "0" * 32


def _auth(plaintext: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {plaintext}"}


@pytest.fixture
def keys(db: Database) -> dict[str, tuple[dict[str, str], str]]:
    """Three keys: one, two and an admin, each as (headers, id)."""
    made: dict[str, tuple[dict[str, str], str]] = {}
    for name, options in (("one", KeyOptions()), ("two", KeyOptions()), ("admin", KeyOptions(is_admin=True))):
        plaintext, row = create_key(db, name, options)
        made[name] = (_auth(plaintext), row.id)
    return made


def _submit(client: TestClient, auth: dict[str, str], body: dict[str, Any] | None = None) -> str:
    resp = client.post(I2V, headers=auth, json=body or GOOD)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["data"]["id"])


def _not_found(resp: Any, prediction_id: str) -> None:
    assert resp.status_code == 404, resp.text
    assert resp.json() == {"code": 404, "message": f"prediction {prediction_id} not found", "data": None}


def test_another_key_gets_404_as_for_an_unknown_id(
    client: TestClient, db: Database, keys: dict[str, tuple[dict[str, str], str]]
) -> None:
    one, two = keys["one"][0], keys["two"][0]
    pid = _submit(client, one)
    for ident in (pid, UNKNOWN):
        _not_found(client.get(f"/api/v3/predictions/{ident}/result", headers=two), ident)
        _not_found(client.get(f"/api/v3/predictions/{ident}", headers=two), ident)
        _not_found(client.delete(f"/api/v3/predictions/{ident}", headers=two), ident)
    bulk = client.post("/api/v3/predictions/delete", headers=two, json={"ids": [pid, UNKNOWN]})
    assert bulk.json()["data"] == {"deleted": [], "cancelling": [], "not_found": [pid, UNKNOWN]}
    listed = client.post("/api/v3/predictions", headers=two, json={}).json()["data"]
    assert listed["items"] == [] and listed["total"] == 0
    # nothing key two did touched key one's prediction
    row = jobs.get_prediction(db, pid)
    assert row is not None and row.status == "created" and not row.cancel_requested
    own = client.get(f"/api/v3/predictions/{pid}/result", headers=one)
    assert own.status_code == 200 and own.json()["data"]["id"] == pid
    assert [
        i["id"] for i in client.post("/api/v3/predictions", headers=one, json={}).json()["data"]["items"]
    ] == [pid]


def test_another_key_cannot_delete_outputs(
    client: TestClient, db: Database, keys: dict[str, tuple[dict[str, str], str]]
) -> None:
    one, two = keys["one"][0], keys["two"][0]
    pid = _submit(client, one)
    storage = client.app.state.wanforge.storage  # type: ignore[attr-defined]
    out = storage.new_key("outputs", "v.mp4")
    storage.put_bytes(out, b"video")
    assert jobs.claim_next(db, "w", 30, ("generate",)) is not None
    assert jobs.complete(db, pid, "w", outputs=[out], result={}, inference_ms=1)
    bulk = client.post("/api/v3/predictions/delete", headers=two, json={"ids": [pid]})
    assert bulk.json()["data"] == {"deleted": [], "cancelling": [], "not_found": [pid]}
    assert storage.exists(out) and jobs.get_prediction(db, pid) is not None
    mine = client.post("/api/v3/predictions/delete", headers=one, json={"ids": [pid]})
    assert mine.json()["data"] == {"deleted": [pid], "cancelling": [], "not_found": []}
    assert not storage.exists(out)


def test_admin_sees_and_manages_every_key(
    client: TestClient, keys: dict[str, tuple[dict[str, str], str]]
) -> None:
    one, two, admin = keys["one"][0], keys["two"][0], keys["admin"][0]
    a, b = _submit(client, one), _submit(client, two)
    listed = client.post("/api/v3/predictions", headers=admin, json={}).json()["data"]
    assert sorted(i["id"] for i in listed["items"]) == sorted([a, b]) and listed["total"] == 2
    assert client.get(f"/api/v3/predictions/{a}", headers=admin).json()["data"]["id"] == a
    cancelled = client.delete(f"/api/v3/predictions/{b}", headers=admin)
    assert cancelled.status_code == 200 and cancelled.json()["data"]["status"] == "cancelled"
    bulk = client.post("/api/v3/predictions/delete", headers=admin, json={"ids": [a, b]})
    assert bulk.json()["data"] == {"deleted": [a, b], "cancelling": [], "not_found": []}


def test_each_key_has_its_own_webhook_secret(
    client: TestClient, keys: dict[str, tuple[dict[str, str], str]]
) -> None:
    secrets = {
        name: client.get("/api/v3/webhook/secret", headers=auth).json()["data"]["secret"]
        for name, (auth, _id) in keys.items()
    }
    assert len(set(secrets.values())) == 3 and all(s.startswith("whsec_") for s in secrets.values())
    again = client.get("/api/v3/webhook/secret", headers=keys["one"][0]).json()["data"]["secret"]
    assert again == secrets["one"]


def _upload(client: TestClient, auth: dict[str, str]) -> str:
    resp = client.post(
        "/api/v3/media/upload/binary", headers=auth, files={"file": ("cat.png", png_bytes(), "image/png")}
    )
    assert resp.status_code == 200, resp.text
    return str(resp.json()["data"]["download_url"])


def test_another_keys_upload_is_refused_as_not_found(
    client: TestClient, keys: dict[str, tuple[dict[str, str], str]]
) -> None:
    one, two, admin = keys["one"][0], keys["two"][0], keys["admin"][0]
    url = _upload(client, one)
    path = url.removeprefix("http://testserver")
    for given in (url, path):
        resp = client.post(I2V, headers=two, json={**GOOD, "image": given})
        assert resp.status_code == 400
        assert resp.json() == {
            "code": 1401,
            "message": f"invalid parameter image: upload not found: image points to {path}",
            "data": None,
        }
    _submit(client, one, {**GOOD, "image": url})
    _submit(client, admin, {**GOOD, "image": path})
    # the trainer's data field is checked the same way
    trainer = client.post("/api/v3/wavespeed-ai/wan-2.2-i2v-lora-trainer", headers=two, json={"data": url})
    assert trainer.status_code == 400 and trainer.json()["message"].startswith(
        "invalid parameter data: upload not found"
    )
    # a prompt is text, never a reference
    _submit(client, two, {**GOOD, "prompt": path})


@pytest.mark.parametrize("spelling", ["localhost", "127.1", "0x7f000001", "[::ffff:127.0.0.1]"])
def test_another_keys_upload_by_another_spelling_of_this_server_is_refused(
    client: TestClient, keys: dict[str, tuple[dict[str, str], str]], spelling: str
) -> None:
    """Whatever the Host a request gives (here a spoofed one), this server's own address in any
    spelling names its own files: the tenancy check sees them (the worker would fetch them)."""
    url = _upload(client, keys["one"][0])
    path = url.removeprefix("http://testserver")
    given = f"http://{spelling}:8000{path}"  # the server's own port (Settings.port)
    resp = client.post(I2V, headers={**keys["two"][0], "Host": "evil.example"}, json={**GOOD, "image": given})
    assert resp.status_code == 400, resp.text
    assert resp.json()["message"] == f"invalid parameter image: upload not found: image points to {path}"


def test_another_keys_output_is_refused_as_not_found(
    client: TestClient, db: Database, keys: dict[str, tuple[dict[str, str], str]]
) -> None:
    one, two = keys["one"][0], keys["two"][0]
    pid = _submit(client, one)
    assert jobs.claim_next(db, "w", 30, ("generate",)) is not None
    assert jobs.complete(db, pid, "w", outputs=["outputs/t/v.png"], result={}, inference_ms=1)
    url = client.get(f"/api/v3/predictions/{pid}/result", headers=one).json()["data"]["outputs"][0]
    refused = client.post(I2V, headers=two, json={**GOOD, "image": url})
    assert refused.status_code == 400 and refused.json()["code"] == 1401
    assert refused.json()["message"] == (
        "invalid parameter image: upload not found: image points to /files/outputs/t/v.png"
    )
    _submit(client, one, {**GOOD, "image": url})
    # a LoRA entry is named as every other message names it
    lora = client.post(
        "/api/v3/wavespeed-ai/wan-2.2/i2v-480p-lora",
        headers=two,
        json={**GOOD, "high_noise_loras": [{"path": "https://example.com/a.safetensors"}, {"path": url}]},
    )
    assert lora.json()["message"] == (
        "invalid parameter high_noise_loras[1].path: upload not found: "
        "high_noise_loras[1].path points to /files/outputs/t/v.png"
    )


def test_revocation_holds_from_the_next_request(
    client: TestClient, keys: dict[str, tuple[dict[str, str], str]], db: Database
) -> None:
    from wanforge.store.keys import revoke_key

    one, one_id = keys["one"]
    assert client.post("/api/v3/predictions", headers=one, json={}).status_code == 200
    assert [r.id for r in revoke_key(db, one_id)] == [one_id]
    resp = client.post("/api/v3/predictions", headers=one, json={})
    assert resp.status_code == 401 and resp.json()["message"] == "invalid API key"


def test_expiry_holds_from_the_next_request(
    client: TestClient, keys: dict[str, tuple[dict[str, str], str]], db: Database
) -> None:
    from datetime import timedelta

    from wanforge.store.db import utcnow
    from wanforge.store.keys import update_key

    one, one_id = keys["one"]
    update_key(db, one_id, expires_at=utcnow() + timedelta(hours=1))
    assert client.post("/api/v3/predictions", headers=one, json={}).status_code == 200
    update_key(db, one_id, expires_at=utcnow() - timedelta(seconds=1))
    resp = client.post("/api/v3/predictions", headers=one, json={})
    assert resp.status_code == 401 and resp.json()["message"] == "invalid API key"
