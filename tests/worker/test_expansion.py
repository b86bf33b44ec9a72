"""The prompt expansion client against a real local chat-completions server."""

from __future__ import annotations

import base64
import io
import logging
import socket

import pytest
from PIL import Image

from tests.worker.chat_server import EXPANDED, Reply, chat_server, completion
from wanforge.config import Settings
from wanforge.prompting.expand import (
    SYSTEM_PROMPT_TEXT,
    SYSTEM_PROMPT_VISION,
    ExpansionConfig,
    ExpansionFailed,
    expand_prompt,
    parse_answer,
)

PROMPT = "the cat turns its head"


def _config(base_url: str, **overrides: object) -> ExpansionConfig:
    fields: dict[str, object] = {"base_url": base_url, "model": "qwen2.5-7b-instruct", "timeout_s": 5.0}
    return ExpansionConfig(**{**fields, **overrides})  # type: ignore[arg-type]


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def test_text_model_request_and_answer() -> None:
    with chat_server() as server:
        result = expand_prompt(_config(server.base_url, api_key="sk-local"), PROMPT, Image.new("RGB", (8, 8)))
    assert result.prompt == EXPANDED and result.tries == 1
    (req,) = server.requests
    assert req.path == "/v1/chat/completions"
    assert req.headers["authorization"] == "Bearer sk-local"
    assert req.json == {
        "model": "qwen2.5-7b-instruct",
        "messages": [{"role": "system", "content": SYSTEM_PROMPT_TEXT}, {"role": "user", "content": PROMPT}],
        "max_tokens": 512,
        "stream": False,
    }
    for asked in ("English", "100 words", "camera", "lighting", "faithful"):
        assert asked in SYSTEM_PROMPT_TEXT


def test_vision_model_gets_the_image_downscaled() -> None:
    image = Image.new("RGB", (1024, 640), (200, 30, 30))
    with chat_server() as server:
        result = expand_prompt(_config(server.base_url, vision=True), PROMPT, image)
    assert result.prompt == EXPANDED
    (req,) = server.requests
    assert "authorization" not in req.headers  # no key configured, none sent
    system, user = req.json["messages"]
    assert system == {"role": "system", "content": SYSTEM_PROMPT_VISION}
    assert "image is attached" in SYSTEM_PROMPT_VISION
    text, picture = user["content"]
    assert text == {"type": "text", "text": PROMPT} and picture["type"] == "image_url"
    url = picture["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert sent.format == "JPEG" and sent.size == (512, 320)
    r, g, b = sent.getpixel((256, 160))  # type: ignore[misc]
    assert abs(r - 200) < 8 and g < 40 and b < 40


def test_a_5xx_is_tried_again_then_succeeds() -> None:
    sleeps = Sleeps()
    with chat_server(Reply(status=503, body=b"busy")) as server:
        result = expand_prompt(_config(server.base_url), PROMPT, sleep=sleeps)
    assert result.prompt == EXPANDED and result.tries == 2
    assert len(server.requests) == 2 and sleeps.waits == [0.5]


def test_a_failing_endpoint_gives_up_after_the_retries() -> None:
    sleeps = Sleeps()
    with chat_server(*[Reply(status=500)] * 3) as server:
        with pytest.raises(ExpansionFailed) as err:
            expand_prompt(_config(server.base_url, retries=2), PROMPT, sleep=sleeps)
        assert str(err.value) == "the endpoint answered HTTP 500 (gave up after 3 tries)"
        assert len(server.requests) == 3 and sleeps.waits == [0.5, 1.0]
        assert server.base_url not in str(err.value)


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (
            Reply(body=b"<html>not json"),
            "the answer is not a chat completion (no choices[0].message.content)",
        ),
        (
            Reply(body=b'{"choices": []}'),
            "the answer is not a chat completion (no choices[0].message.content)",
        ),
        (Reply(body=completion("   ")), "the answer is empty"),
        (Reply(status=400, body=b'{"error": "bad model"}'), "the endpoint answered HTTP 400"),
        (Reply(status=401), "the endpoint answered HTTP 401"),
    ],
)
def test_answers_another_try_would_not_change_are_not_retried(reply: Reply, message: str) -> None:
    sleeps = Sleeps()
    with chat_server(reply) as server, pytest.raises(ExpansionFailed) as err:
        expand_prompt(_config(server.base_url), PROMPT, sleep=sleeps)
    assert str(err.value) == message
    assert len(server.requests) == 1 and sleeps.waits == []


def test_a_redirect_is_never_followed() -> None:
    with (
        chat_server() as elsewhere,
        chat_server(
            Reply(status=307, headers={"location": f"{elsewhere.base_url}/chat/completions"})
        ) as server,
        pytest.raises(ExpansionFailed, match="HTTP 307; redirects are not followed"),
    ):
        expand_prompt(_config(server.base_url), PROMPT)
    assert len(server.requests) == 1 and elsewhere.requests == []


def test_a_hanging_endpoint_times_out() -> None:
    sleeps = Sleeps()
    with chat_server(Reply(hang=True), Reply(hang=True)) as server, pytest.raises(ExpansionFailed) as err:
        expand_prompt(_config(server.base_url, timeout_s=0.2, retries=1), PROMPT, sleep=sleeps)
    assert str(err.value) == "no answer within 0.2s (gave up after 2 tries)"
    assert len(server.requests) == 2


def test_a_closed_port_is_a_connection_failure() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ExpansionFailed) as err:
        expand_prompt(_config(f"http://127.0.0.1:{port}/v1", retries=0), PROMPT)
    assert str(err.value) == "connection failed (ConnectError) (gave up after 1 try)"


def test_stopping_ends_the_retries() -> None:
    with (
        chat_server(*[Reply(status=502)] * 3) as server,
        pytest.raises(ExpansionFailed, match="gave up after 1 try"),
    ):
        expand_prompt(_config(server.base_url), PROMPT, sleep=Sleeps(), should_stop=lambda: True)
    assert len(server.requests) == 1


def test_parse_answer_cleans_up() -> None:
    assert parse_answer(completion('  "A pan\n left."  ')) == "A pan left."
    assert parse_answer(completion("<think>\nthe user wants...\n</think>\n\nA pan left.")) == "A pan left."
    parts = b'{"choices": [{"message": {"content": [{"type": "text", "text": "A pan"}, {"type": "text", "text": "left."}]}}]}'
    assert parse_answer(parts) == "A pan left."
    with pytest.raises(ExpansionFailed, match="4001 characters, over 4000"):
        parse_answer(completion("x" * 4001))


def test_config_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ExpansionConfig.from_settings(Settings()) is None
    monkeypatch.setenv("WANFORGE_PROMPT_EXPANSION_URL", "http://127.0.0.1:11434/v1/")
    monkeypatch.setenv("WANFORGE_PROMPT_EXPANSION_MODEL", "qwen2.5vl")
    monkeypatch.setenv("WANFORGE_PROMPT_EXPANSION_API_KEY", "sk-x")
    monkeypatch.setenv("WANFORGE_PROMPT_EXPANSION_VISION", "1")
    config = ExpansionConfig.from_settings(Settings())
    assert config == ExpansionConfig(
        base_url="http://127.0.0.1:11434/v1", model="qwen2.5vl", api_key="sk-x", vision=True
    )
    assert config.endpoint == "http://127.0.0.1:11434/v1/chat/completions"
    assert "sk-x" not in repr(Settings())
    monkeypatch.setenv("WANFORGE_PROMPT_EXPANSION_URL", "ftp://h/v1")
    with pytest.raises(ValueError, match="http"):
        Settings()


def test_failures_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "wanforge.prompting")
    with chat_server(Reply(status=500)) as server:
        expand_prompt(_config(server.base_url), PROMPT, sleep=Sleeps())
    assert [r.getMessage() for r in caplog.records] == [
        "prompt expansion try 1 failed: the endpoint answered HTTP 500"
    ]
