"""`enable_prompt_expansion: true` at submission: refused (1401) without an endpoint, saying how to
configure one; taken with one, and the prediction shows the prompt as sent."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from wanforge.catalog import STORED_INPUT, I2VInput

I2V = "/api/v3/alibaba/wan-2.2/i2v-plus-480p"
BODY = {"image": "https://example.com/cat.png", "prompt": "a cat walks", "enable_prompt_expansion": True}


@pytest.fixture(autouse=True)
def no_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("URL", "MODEL", "API_KEY", "VISION"):
        monkeypatch.delenv(f"WANFORGE_PROMPT_EXPANSION_{name}", raising=False)


def test_refused_without_an_endpoint(client: TestClient, auth: dict[str, str]) -> None:
    resp = client.post(I2V, headers=auth, json=BODY)
    assert resp.status_code == 400
    body = resp.json()
    assert body["code"] == 1401
    message = body["message"]
    assert "enable_prompt_expansion" in message and "not configured" in message
    assert "WANFORGE_PROMPT_EXPANSION_URL" in message and "WANFORGE_PROMPT_EXPANSION_MODEL" in message


def test_a_url_without_a_model_is_not_enough(
    client: TestClient, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANFORGE_PROMPT_EXPANSION_URL", "http://127.0.0.1:8080/v1")
    assert client.post(I2V, headers=auth, json=BODY).json()["code"] == 1401


def test_taken_with_an_endpoint(
    client: TestClient, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANFORGE_PROMPT_EXPANSION_URL", "http://127.0.0.1:8080/v1")
    monkeypatch.setenv("WANFORGE_PROMPT_EXPANSION_MODEL", "qwen2.5-7b-instruct")
    resp = client.post(I2V, headers=auth, json=BODY)
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert data["prompt"] == "a cat walks" and data["expanded_prompt"] is None
    assert data["has_nsfw_contents"] == []


def test_a_stored_input_is_read_back_whatever_the_configuration() -> None:
    # the worker re-reads what the API took; its own settings do not refuse it
    assert I2VInput.model_validate(BODY, context=STORED_INPUT).enable_prompt_expansion is True
    with pytest.raises(ValueError, match="not configured"):
        I2VInput.model_validate(BODY)
