"""Uploads (multipart and PUT ticket) and file serving."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient

from tests.api import asgi
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
    assert too_big.json()["message"].endswith("(the size declared when the upload was created)")
    assert too_big.headers["connection"] == "close"  # the rest of the body is not read
    too_small = client.put(url, content=b"01234")
    assert too_small.status_code == 400 and "declared 10" in too_small.json()["message"]
    assert client.get(_path_of(t["download_url"])).status_code == 404


def test_ticket_without_a_size_is_capped_by_the_upload_setting(
    client: TestClient, auth: dict[str, str]
) -> None:
    client.app.state.wanforge.settings.max_upload_bytes = 8  # type: ignore[attr-defined]
    t = client.post("/api/v3/media/uploads", headers=auth, json={"filename": "a.bin"}).json()["data"]
    resp = client.put(_path_of(t["upload"]["url"]), content=b"0123456789")
    assert resp.status_code == 413 and resp.json()["code"] == 1401
    assert resp.json()["message"].endswith("(WANFORGE_MAX_UPLOAD_BYTES sets the limit)"), resp.text


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


def test_ticket_is_claimed_by_one_put_at_a_time(client: TestClient, auth: dict[str, str]) -> None:
    """A second PUT while the first one streams is refused before it writes a byte."""
    t = client.post("/api/v3/media/uploads", headers=auth, json={"filename": "a.bin", "size": 8}).json()[
        "data"
    ]
    url = _path_of(t["upload"]["url"])

    async def race() -> tuple[asgi.Answer, asgi.Answer]:
        hold = asgi.Hold()
        first = asyncio.create_task(
            asgi.acall(client.app, "PUT", url, headers={}, chunks=[b"1234", hold, b"5678"])
        )
        await hold.reached.wait()  # the first PUT is streaming its body
        second = await asgi.acall(client.app, "PUT", url, headers={}, chunks=[b"abcdefgh"])
        hold.release.set()
        return await first, second

    first, second = asyncio.run(race())
    assert first.status == 200 and first.json()["data"]["size"] == 8, first.body
    assert second.status == 409 and second.json()["code"] == 409, second.body
    assert "already" in second.json()["message"] and second.pulled == 0
    assert client.get(_path_of(t["download_url"])).content == b"12345678"
    assert client.put(url, content=b"abcdefgh").status_code == 404  # used up


def test_failed_put_gives_the_ticket_back(client: TestClient, auth: dict[str, str]) -> None:
    t = client.post("/api/v3/media/uploads", headers=auth, json={"filename": "a.bin", "size": 4}).json()[
        "data"
    ]
    url = _path_of(t["upload"]["url"])
    assert client.put(url, content=b"123456").status_code == 413
    assert client.put(url, content=b"1234").status_code == 200


def _upload(client: TestClient, auth: dict[str, str], name: str, claimed: str, data: bytes) -> str:
    resp = client.post("/api/v3/media/upload/binary", headers=auth, files={"file": (name, data, claimed)})
    assert resp.status_code == 200, resp.text
    return _path_of(resp.json()["data"]["download_url"])


@pytest.mark.parametrize(
    ("name", "claimed", "served", "disposition"),
    [
        ("cat.png", "image/png", "image/png", "inline"),
        ("clip.mp4", "video/mp4", "video/mp4", "inline"),
        ("data.zip", "application/zip", "application/zip", "attachment"),
        ("lora.safetensors", "application/octet-stream", "application/octet-stream", "attachment"),
        ("notes.txt", "text/plain", "text/plain; charset=utf-8", "attachment"),
        ("page.html", "text/html", "application/octet-stream", "attachment"),
        ("page.htm", "image/png", "application/octet-stream", "attachment"),
        ("logo.svg", "image/svg+xml", "application/octet-stream", "attachment"),
        ("feed.xml", "text/xml", "application/octet-stream", "attachment"),
        ("app.js", "text/javascript", "application/octet-stream", "attachment"),
    ],
)
def test_files_are_served_safely(
    client: TestClient, auth: dict[str, str], name: str, claimed: str, served: str, disposition: str
) -> None:
    url = _upload(client, auth, name, claimed, b"<html><script>alert(1)</script></html>")
    got = client.get(url)
    assert got.status_code == 200
    assert got.headers["x-content-type-options"] == "nosniff"
    assert got.headers["content-type"] == served
    assert got.headers["content-disposition"] == f'{disposition}; filename="{name}"'


@pytest.mark.parametrize("spec", ["bytes=20-30", "bytes=10-", "bytes=-0", "bytes=10-11,20-30"])
def test_unsatisfiable_range_is_416_in_the_envelope(
    client: TestClient, auth: dict[str, str], spec: str
) -> None:
    url = _upload(client, auth, "a.bin", "application/octet-stream", b"0123456789")
    got = client.get(url, headers={"Range": spec})
    assert got.status_code == 416, (got.status_code, got.text)
    assert got.headers["content-range"] == "bytes */10"
    assert got.json() == {
        "code": 416,
        "message": "Range header not satisfiable: the file has 10 bytes",
        "data": None,
    }


@pytest.mark.parametrize("spec", ["bytes=5-2", "bytes=abc", "items=0-1", "bytes", "bytes=", "nonsense"])
def test_invalid_range_is_ignored(client: TestClient, auth: dict[str, str], spec: str) -> None:
    """RFC 9110: a Range of another unit or an invalid byte-range set is ignored: 200, all of it."""
    url = _upload(client, auth, "a.bin", "application/octet-stream", b"0123456789")
    got = client.get(url, headers={"Range": spec})
    assert got.status_code == 200 and got.content == b"0123456789", (spec, got.status_code)
    assert got.headers["x-content-type-options"] == "nosniff"


def test_range_set_serves_its_satisfiable_part(client: TestClient, auth: dict[str, str]) -> None:
    url = _upload(client, auth, "a.bin", "application/octet-stream", b"0123456789")
    got = client.get(url, headers={"Range": "bytes=0-1,1001-2000"})
    assert got.status_code == 206 and got.content == b"01"
    assert got.headers["content-range"] == "bytes 0-1/10"


def test_good_range_is_206(client: TestClient, auth: dict[str, str]) -> None:
    url = _upload(client, auth, "a.bin", "application/octet-stream", b"0123456789")
    got = client.get(url, headers={"Range": "bytes=2-4"})
    assert got.status_code == 206 and got.content == b"234"
    assert got.headers["content-range"] == "bytes 2-4/10"
    assert got.headers["x-content-type-options"] == "nosniff"


def test_two_files_in_one_upload_are_refused(client: TestClient, auth: dict[str, str]) -> None:
    files = [("file", ("a.png", b"first")), ("file", ("b.png", b"second"))]
    refused = client.post("/api/v3/media/upload/binary", headers=auth, files=files)
    assert refused.status_code == 400 and refused.json() == {
        "code": 1401,
        "message": "invalid parameter file: one file per upload, got 2",
        "data": None,
    }


def test_head_of_a_file_answers_its_headers(client: TestClient, auth: dict[str, str]) -> None:
    url = client.post(
        "/api/v3/media/upload/binary", headers=auth, files={"file": ("a.png", b"12345")}
    ).json()["data"]["download_url"]
    head = client.head(_path_of(url))
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == "5" and head.headers["content-type"] == "image/png"
    assert client.head("/files/uploads/none/x.png").status_code == 404
