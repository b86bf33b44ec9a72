"""Rewrite a user's prompt into a fuller image-to-video description with a chat model.

Any OpenAI-compatible `POST {base}/chat/completions` works: vLLM, llama.cpp's server, Ollama, a
hosted API. The endpoint is the operator's, so it may be private; it is still held to a time
limit, a bounded number of tries and a size limit, and a redirect is never followed.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from PIL import Image

from wanforge.catalog import PROMPT_MAX_CHARS
from wanforge.config import Settings

log = logging.getLogger("wanforge.prompting")

MAX_ANSWER_BYTES = 1024 * 1024
MAX_TOKENS = 512  # about 100 words asked for; room for a model that thinks aloud first
RETRY_BASE_S = 0.5
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

_COMMON = (
    "You write prompts for Wan 2.2, an image-to-video model: the video starts from the user's "
    "image and lasts about five seconds. Rewrite the user's request as one paragraph of plain "
    "English of at most 100 words that says what moves and how (the action, its speed and "
    "direction), what the camera does (static, pan, tilt, dolly, zoom, tracking, handheld) and "
    "what the lighting is (its source, direction and colour, and how it changes). Stay faithful "
    "to the request: keep every subject, action, style and detail it names, make the motion, "
    "the camera and the light concrete, and add no people, objects, text or events it does not "
    "imply. If the request is in another language, write the prompt in English. "
)
SYSTEM_PROMPT_TEXT = _COMMON + (
    "You do not see the image: describe nothing in it beyond what the request says. "
    "Answer with the prompt only: no preamble, no quotes, no lists, no markdown."
)
SYSTEM_PROMPT_VISION = _COMMON + (
    "The image is attached: keep to what it shows (the subjects, the setting, the colours and "
    "the composition) and never contradict it. "
    "Answer with the prompt only: no preamble, no quotes, no lists, no markdown."
)


class ExpansionFailed(Exception):
    """The endpoint gave no usable prompt. The message is for the prediction's log: it names
    neither the endpoint's address nor the key."""


@dataclass(frozen=True)
class ExpansionConfig:
    base_url: str
    model: str
    api_key: str | None = None
    vision: bool = False
    image_side: int = 512
    timeout_s: float = 30.0
    retries: int = 2

    @classmethod
    def from_settings(cls, settings: Settings) -> ExpansionConfig | None:
        if not settings.prompt_expansion_url or not settings.prompt_expansion_model:
            return None
        key = settings.prompt_expansion_api_key
        return cls(
            base_url=settings.prompt_expansion_url,
            model=settings.prompt_expansion_model,
            api_key=key.get_secret_value() if key is not None else None,
            vision=settings.prompt_expansion_vision,
            image_side=settings.prompt_expansion_image_side,
            timeout_s=settings.prompt_expansion_timeout_s,
            retries=settings.prompt_expansion_retries,
        )

    @property
    def endpoint(self) -> str:
        return f"{self.base_url.rstrip('/')}/chat/completions"


@dataclass(frozen=True)
class Expansion:
    prompt: str
    tries: int


def image_data_url(image: Image.Image, side: int) -> str:
    """The image as a JPEG data: URL, its longest side at most `side` pixels."""
    small = image.convert("RGB")
    small.thumbnail((side, side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def request_body(config: ExpansionConfig, prompt: str, image: Image.Image | None) -> dict[str, Any]:
    """The chat-completions request: the system prompt, then the user's prompt (and, for a
    vision model, the image as an `image_url` part)."""
    user: str | list[dict[str, Any]] = prompt
    if config.vision and image is not None:
        user = [
            {"type": "text", "text": prompt},
            {"type": "image_url", "image_url": {"url": image_data_url(image, config.image_side)}},
        ]
    system = SYSTEM_PROMPT_VISION if config.vision and image is not None else SYSTEM_PROMPT_TEXT
    return {
        "model": config.model,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        "max_tokens": MAX_TOKENS,
        "stream": False,
    }


_THINKING = re.compile(r"^\s*<think>.*?</think>", re.DOTALL)


def parse_answer(body: bytes) -> str:
    """The prompt in a chat-completions answer: `choices[0].message.content`, with a reasoning
    model's leading <think> block, wrapping quotes and extra whitespace removed."""
    try:
        data = json.loads(body)
        content = data["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ExpansionFailed("the answer is not a chat completion (no choices[0].message.content)") from exc
    if isinstance(content, list):  # content parts
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        raise ExpansionFailed("the answer's message content is not text")
    text = " ".join(_THINKING.sub("", content).split()).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    if not text:
        raise ExpansionFailed("the answer is empty")
    if len(text) > PROMPT_MAX_CHARS:
        raise ExpansionFailed(f"the answer has {len(text)} characters, over {PROMPT_MAX_CHARS}")
    return text


class _Retryable(ExpansionFailed):
    """A failure that another try may not repeat (a time-out, a lost connection, a 5xx or 429)."""


def _one_try(client: httpx.Client, config: ExpansionConfig, body: dict[str, Any]) -> str:
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    try:
        with client.stream("POST", config.endpoint, json=body, headers=headers) as resp:
            if resp.is_redirect:
                raise ExpansionFailed(
                    f"the endpoint answered HTTP {resp.status_code}; redirects are not followed"
                )
            if resp.status_code in RETRY_STATUSES:
                raise _Retryable(f"the endpoint answered HTTP {resp.status_code}")
            if resp.status_code != 200:
                raise ExpansionFailed(f"the endpoint answered HTTP {resp.status_code}")
            data = bytearray()
            for chunk in resp.iter_bytes():
                data += chunk
                if len(data) > MAX_ANSWER_BYTES:
                    raise ExpansionFailed(f"the answer is over {MAX_ANSWER_BYTES} bytes")
    except httpx.TimeoutException as exc:
        raise _Retryable(f"no answer within {config.timeout_s:g}s") from exc
    except httpx.TransportError as exc:  # the message may carry the address: name the kind only
        raise _Retryable(f"connection failed ({type(exc).__name__})") from exc
    return parse_answer(bytes(data))


def expand_prompt(
    config: ExpansionConfig,
    prompt: str,
    image: Image.Image | None = None,
    *,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
    should_stop: Callable[[], bool] | None = None,
) -> Expansion:
    """The expanded prompt, after at most `1 + retries` tries of `timeout_s` each (waiting
    0.5 s, 1 s, 2 s ... between them); raises ExpansionFailed with the last reason."""
    body = request_body(config, prompt, image)
    last: ExpansionFailed | None = None
    tries = 0
    with httpx.Client(timeout=config.timeout_s, follow_redirects=False, transport=transport) as client:
        while tries <= config.retries:
            if tries:
                if should_stop is not None and should_stop():
                    break
                sleep(RETRY_BASE_S * 2 ** (tries - 1))
            tries += 1
            try:
                return Expansion(prompt=_one_try(client, config, body), tries=tries)
            except _Retryable as exc:
                log.warning("prompt expansion try %d failed: %s", tries, exc)
                last = exc
    assert last is not None
    raise ExpansionFailed(f"{last} (gave up after {tries} {'try' if tries == 1 else 'tries'})")
