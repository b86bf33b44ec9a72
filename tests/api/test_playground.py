"""The playground page and the model list it builds its forms from."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from wanforge.catalog import MODELS

PAGE_FILES = (
    "index.html",
    "app.js",
    "api.js",
    "dom.js",
    "form.js",
    "code.js",
    "run.js",
    "history.js",
    "trainer.js",
    "style.css",
)


def test_page_served_at_root_and_playground_without_a_key(client: TestClient) -> None:
    for path in ("/", "/playground", "/playground/"):
        resp = client.get(path)
        assert resp.status_code == 200, path
        assert resp.headers["content-type"] == "text/html; charset=utf-8"
        assert "<title>wanforge playground</title>" in resp.text
        csp = resp.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "style-src 'self'" in csp
        assert resp.headers["x-content-type-options"] == "nosniff"


def test_page_references_only_its_own_files(client: TestClient) -> None:
    html = client.get("/").text
    refs = re.findall(r'(?:src|href)="([^"#][^"]*)"', html)  # not in-page anchors
    assert refs, html
    for ref in refs:
        assert ref.startswith("/") and not ref.startswith("//"), ref  # this server's own
        assert client.get(ref).status_code == 200, ref
    assert {ref for ref in refs if ref.startswith("/playground/static/")} == {
        "/playground/static/favicon.svg",
        "/playground/static/style.css",
        "/playground/static/app.js",
    }


def test_static_files_have_their_types(client: TestClient) -> None:
    for name in PAGE_FILES:
        resp = client.get(f"/playground/static/{name}")
        assert resp.status_code == 200, name
        body = resp.text
        # no absolute URL anywhere in the page's code: everything comes from this server
        assert "http://" not in body and "https://" not in body and "//cdn" not in body, name
    assert client.get("/playground/static/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/playground/static/style.css").headers["content-type"].startswith("text/css")
    assert client.get("/playground/static/missing.js").status_code == 404


def test_models_lists_every_catalog_model_with_its_openapi_schema(
    client: TestClient, auth: dict[str, str]
) -> None:
    resp = client.get("/api/v3/models", headers=auth)
    assert resp.status_code == 200
    items = resp.json()["data"]
    # every model this server offers: the ultra-fast ones only once their distill LoRAs are set
    offered = [spec.id for spec in MODELS.values() if spec.sampling != "ultra_fast"]
    assert [m["id"] for m in items] == offered
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    for item in items:
        spec = MODELS[item["id"]]
        assert item["kind"] == spec.kind.value
        assert item["resolution"] == spec.resolution
        assert item["summary"] == spec.summary
        assert item["submit_url"] == f"/api/v3/{spec.id}"
        name = item["input_schema"].removeprefix("#/components/schemas/")
        assert name == spec.input_model.__name__
        assert schemas[name]["properties"].keys() >= {"enable_sync_mode"}


def test_models_needs_a_key(client: TestClient) -> None:
    resp = client.get("/api/v3/models")
    assert resp.status_code == 401
    assert resp.json()["message"] == "missing API key: send the header 'Authorization: Bearer <key>'"


def test_openapi_documents_models_but_not_the_page(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "get" in paths["/api/v3/models"]
    assert "/" not in paths and "/playground" not in paths


def test_prediction_detail_carries_its_input_for_rerun(client: TestClient, auth: dict[str, str]) -> None:
    body = {"image": "https://example.com/cat.png", "prompt": "a cat walks", "seed": 7}
    pid = client.post("/api/v3/alibaba/wan-2.2/i2v-plus-480p", headers=auth, json=body).json()["data"]["id"]
    detail = client.get(f"/api/v3/predictions/{pid}", headers=auth).json()["data"]
    assert detail["input"] == {
        "image": "https://example.com/cat.png",
        "prompt": "a cat walks",
        "negative_prompt": "",
        "duration": 5,
        "enable_prompt_expansion": False,
        "seed": 7,
    }
    # the polled result and the list stay as small as before
    assert client.get(f"/api/v3/predictions/{pid}/result", headers=auth).json()["data"]["input"] is None
    listed = client.post("/api/v3/predictions", headers=auth, json={}).json()["data"]["items"]
    assert [item["input"] for item in listed] == [None]
