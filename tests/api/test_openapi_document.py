"""The OpenAPI document says what the API answers: each 200 names its model, files are any type,
and real answers validate against the document (what the schema fuzz test found)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient

from wanforge.api.app import create_app
from wanforge.catalog import MEDIA_URL_SCHEMA, check_media_url
from wanforge.config import Settings
from wanforge.media.storage import LocalStorage
from wanforge.store.db import Database


@pytest.fixture
def document(settings: Settings, db: Database) -> dict[str, Any]:
    return create_app(settings, db).openapi()


def _ok_schema(document: dict[str, Any], path: str, method: str) -> Any:
    return document["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]


@pytest.mark.parametrize(
    ("path", "method", "model"),
    [
        ("/api/v3/predictions", "post", "ListEnvelope"),
        ("/api/v3/predictions/delete", "post", "DeleteEnvelope"),
        ("/api/v3/webhook/secret", "get", "WebhookSecretEnvelope"),
        ("/api/v3/media/upload/binary", "post", "UploadEnvelope"),
        ("/api/v3/media/uploads", "post", "UploadTicketEnvelope"),
        ("/api/v3/media/uploads/{upload_id}", "put", "UploadDoneEnvelope"),
        ("/health", "get", "HealthOut"),
    ],
)
def test_each_200_names_its_model(document: dict[str, Any], path: str, method: str, model: str) -> None:
    assert _ok_schema(document, path, method) == {"$ref": f"#/components/schemas/{model}"}


def test_files_are_documented_as_any_type_with_ranges(document: dict[str, Any]) -> None:
    operation = document["paths"]["/files/{key}"]["get"]
    binary = {"*/*": {"schema": {"type": "string", "format": "binary"}}}
    assert operation["responses"]["200"]["content"] == binary
    assert operation["responses"]["206"]["content"] == binary
    assert set(operation["responses"]) >= {"404", "416"}
    assert [p["name"] for p in operation["parameters"] if p["in"] == "header"] == ["range"]


def test_real_answers_validate_against_the_document(
    settings: Settings, db: Database, auth: dict[str, str]
) -> None:
    app = create_app(settings, db)
    schema = schemathesis.openapi.from_dict(app.openapi())
    LocalStorage(settings.storage_dir).put_bytes("outputs/abc/video.mp4", b"0123456789")
    client = TestClient(app)
    answers = {
        ("/api/v3/predictions", "POST"): client.post("/api/v3/predictions", json={}, headers=auth),
        ("/api/v3/predictions/delete", "POST"): client.post(
            "/api/v3/predictions/delete", json={"ids": ["nope"]}, headers=auth
        ),
        ("/api/v3/webhook/secret", "GET"): client.get("/api/v3/webhook/secret", headers=auth),
        ("/api/v3/media/upload/binary", "POST"): client.post(
            "/api/v3/media/upload/binary", files={"file": ("a.png", b"png")}, headers=auth
        ),
        ("/health", "GET"): client.get("/health", headers=auth),
        ("/files/{key}", "GET"): client.get("/files/outputs/abc/video.mp4"),
    }
    ticket = client.post("/api/v3/media/uploads", json={"filename": "a.png", "size": 3}, headers=auth)
    answers["/api/v3/media/uploads", "POST"] = ticket
    answers["/api/v3/media/uploads/{upload_id}", "PUT"] = client.put(
        ticket.json()["data"]["upload"]["url"], content=b"png"
    )
    for (path, method), answer in answers.items():
        assert answer.status_code == 200, (path, answer.text)
        schema[path][method].validate_response(answer)  # raises on a mismatch
    assert answers["/files/{key}", "GET"].headers["content-type"] == "video/mp4"


@pytest.mark.parametrize(
    "url",
    ["http://x", "HTTPS://example.com/a.png", " data:image/png;base64,AA==", "/files/uploads/a.png"],
)
def test_media_urls_the_document_allows_are_accepted(url: str) -> None:
    assert re.match(MEDIA_URL_SCHEMA["pattern"], url)
    assert check_media_url(url) == url.strip()


@pytest.mark.parametrize("url", ["http://", "https:// ", "ftp://example.com/a.png", "files/a.png", "cat.png"])
def test_media_urls_the_document_refuses_are_refused(url: str) -> None:
    assert not re.match(MEDIA_URL_SCHEMA["pattern"], url)
    with pytest.raises(ValueError, match="must be an http"):
        check_media_url(url)
