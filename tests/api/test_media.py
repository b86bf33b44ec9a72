"""Uploads (multipart and PUT ticket) and file serving."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.samples import png_bytes


def _path_of(url: str) -> str:
    return url.removeprefix("http://testserver")


def test_binary_upload_round_trip(client: TestClient, auth: dict[str, str]) -> None:
    data = png_bytes()
    resp = client.post(
        "/api/v3/media/upload/binary", headers=auth, files={"file": ("cat.png", data, "image/png")}
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()["data"]
    assert body["size"] == len(data) and body["filename"] == "cat.png"
    url = body["download_url"]
    assert url.startswith("http://testserver/files/uploads/") and url.endswith("/cat.png")
    token = url.split("/")[-2]
    assert len(token) >= 24  # unguessable
    got = client.get(_path_of(url))
    assert got.status_code == 200 and got.content == data
    assert got.headers["content-type"] == "image/png"


def test_ticket_upload_round_trip(client: TestClient, auth: dict[str, str]) -> None:
    data = png_bytes(seed=3)
    ticket = client.post(
        "/api/v3/media/uploads",
        headers=auth,
        json={"filename": "a.png", "size": len(data), "content_type": "image/png"},
    )
    assert ticket.status_code == 200, ticket.text
    t = ticket.json()["data"]
    assert t["upload"]["method"] == "PUT" and t["upload"]["headers"] == {"Content-Type": "image/png"}
    # not there before the PUT
    assert client.get(_path_of(t["download_url"])).status_code == 404
    put = client.put(_path_of(t["upload"]["url"]), content=data, headers=t["upload"]["headers"])
    assert put.status_code == 200, put.text
    assert client.get(_path_of(t["download_url"])).content == data
    # the ticket is single-use
    assert client.put(_path_of(t["upload"]["url"]), content=data).status_code == 404


def test_ticket_put_wrong_token_or_size(client: TestClient, auth: dict[str, str]) -> None:
    t = client.post("/api/v3/media/uploads", headers=auth, json={"filename": "a.bin", "size": 10}).json()[
        "data"
    ]
    url = _path_of(t["upload"]["url"])
    bad = url.split("?token=")[0] + "?token=forged"
    assert client.put(bad, content=b"0123456789").status_code == 404
    too_big = client.put(url, content=b"0123456789abc")
    assert too_big.status_code == 413 and too_big.json()["code"] == 1401
    too_small = client.put(url, content=b"01234")
    assert too_small.status_code == 400 and "declared 10" in too_small.json()["message"]
    assert client.get(_path_of(t["download_url"])).status_code == 404


def test_upload_limits(client: TestClient, auth: dict[str, str]) -> None:
    limit = client.app.state.wanforge.settings.max_upload_bytes  # type: ignore[attr-defined]
    resp = client.post(
        "/api/v3/media/uploads", headers=auth, json={"filename": "huge.zip", "size": limit + 1}
    )
    assert resp.status_code == 413 and resp.json()["code"] == 1401 and "size" in resp.json()["message"]
    missing = client.post("/api/v3/media/uploads", headers=auth, json={})
    assert (
        missing.status_code == 400
        and missing.json()["code"] == 1400
        and "filename" in missing.json()["message"]
    )


def test_files_refuse_traversal(client: TestClient) -> None:
    for path in (
        "/files/../wanforge.db",
        "/files/%2e%2e/wanforge.db",
        "/files/uploads/..%2F..%2Fwanforge.db",
    ):
        assert client.get(path).status_code == 404


def test_health_without_worker(client: TestClient) -> None:
    resp = client.get("/health")
    assert resp.status_code == 200
    assert resp.json()["worker"] == "no_worker"
