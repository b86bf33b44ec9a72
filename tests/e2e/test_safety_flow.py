"""Acceptance, through a real server and worker: with a local chat-completions server configured,
`enable_prompt_expansion: true` completes and shows the expansion; the detector gives one verdict
per output."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.server import running_server
from tests.worker.chat_server import EXPANDED, chat_server

pytestmark = pytest.mark.slow


def test_expansion_and_content_check_end_to_end(tmp_path: Path, image_16x9: Path) -> None:
    with (
        chat_server() as chat,
        running_server(
            tmp_path,
            WANFORGE_PROMPT_EXPANSION_URL=chat.base_url,
            WANFORGE_PROMPT_EXPANSION_MODEL="local-llm",
            WANFORGE_PROMPT_EXPANSION_API_KEY="sk-test",
        ) as server,
    ):
        assert server.health()["content_checker"] == "opennsfw"
        body = {"image": server.upload(image_16x9), "prompt": "a cat", "enable_prompt_expansion": True}
        with server.client() as c:
            resp = c.post("/api/v3/alibaba/wan-2.2/i2v-plus-480p", json=body)
        assert resp.status_code == 200, resp.text
        data = server.wait_for(resp.json()["data"]["id"])
    assert data["status"] == "completed", data
    assert data["prompt"] == "a cat" and data["expanded_prompt"] == EXPANDED
    assert len(data["outputs"]) == 1 and data["has_nsfw_contents"] == [False]
    (req,) = chat.requests
    assert req.json["model"] == "local-llm" and req.headers["authorization"] == "Bearer sk-test"
    assert req.json["messages"][1] == {"role": "user", "content": "a cat"}
