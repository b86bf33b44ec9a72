"""Prompt expansion in real generate jobs (demo model) against a local chat-completions server."""

from __future__ import annotations

import pytest

from tests.worker.chat_server import EXPANDED, Reply, chat_server
from tests.worker.generate_kit import RecordingEngine, run_one, submit
from wanforge.config import Settings
from wanforge.predictions import prediction_out
from wanforge.store import jobs
from wanforge.store.db import Database

PROMPT = "the camera pans left"


def _configure(settings: Settings, base_url: str) -> None:
    settings.prompt_expansion_url = base_url
    settings.prompt_expansion_model = "llama-3.2-3b"
    settings.prompt_expansion_retries = 0


def test_the_video_is_made_from_the_expanded_prompt(settings: Settings, db: Database) -> None:
    engine = RecordingEngine()
    with chat_server() as server:
        _configure(settings, server.base_url)
        settings.prompt_expansion_vision = True
        pid = submit(db, prompt=PROMPT, enable_prompt_expansion=True)
        run_one(settings, db, engine, None)
    (req,) = server.requests
    assert req.json["model"] == "llama-3.2-3b"
    assert req.json["messages"][1]["content"][0] == {"type": "text", "text": PROMPT}
    assert req.json["messages"][1]["content"][1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert [r.prompt for r in engine.requests] == [EXPANDED]
    row = jobs.get_prediction(db, pid)
    assert row is not None
    assert row.status == "completed", row.error
    assert row.result["expanded_prompt"] == EXPANDED
    assert "prompt expanded by llama-3.2-3b (1 try)" in row.logs
    out = prediction_out(row, "http://h", with_logs=True)
    assert out.prompt == PROMPT and out.expanded_prompt == EXPANDED
    assert "expanded_prompt" not in out.result


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (Reply(status=500), "the endpoint answered HTTP 500 (gave up after 1 try)"),
        (Reply(body=b"{garbage"), "the answer is not a chat completion (no choices[0].message.content)"),
        (Reply(hang=True), "no answer within 0.3s (gave up after 1 try)"),
    ],
)
def test_a_failed_expansion_falls_back_to_the_prompt(
    settings: Settings, db: Database, reply: Reply, reason: str
) -> None:
    engine = RecordingEngine()
    with chat_server(reply) as server:
        _configure(settings, server.base_url)
        settings.prompt_expansion_timeout_s = 0.3
        pid = submit(db, prompt=PROMPT, enable_prompt_expansion=True)
        run_one(settings, db, engine, None)
    assert [r.prompt for r in engine.requests] == [PROMPT]
    row = jobs.get_prediction(db, pid)
    assert row is not None
    assert row.status == "completed", row.error
    assert f"prompt expansion failed: {reason}; used the original prompt" in row.logs
    assert "expanded_prompt" not in row.result
    out = prediction_out(row, "http://h")
    assert out.prompt == PROMPT and out.expanded_prompt is None


def test_not_asked_for_no_request(settings: Settings, db: Database) -> None:
    engine = RecordingEngine()
    with chat_server() as server:
        _configure(settings, server.base_url)
        submit(db, prompt=PROMPT)
        run_one(settings, db, engine, None)
    assert server.requests == [] and [r.prompt for r in engine.requests] == [PROMPT]


def test_a_rerun_keeps_the_first_expansion(settings: Settings, db: Database) -> None:
    engine = RecordingEngine()
    with chat_server() as server:
        _configure(settings, server.base_url)
        pid = submit(db, prompt=PROMPT, enable_prompt_expansion=True)
        with db.session() as s:  # an earlier attempt expanded it and then crashed
            from wanforge.store.tables import Prediction

            row = s.get(Prediction, pid)
            assert row is not None
            row.result = {"seed": 7, "expanded_prompt": "an earlier expansion"}
        run_one(settings, db, engine, None)
    assert server.requests == [] and [r.prompt for r in engine.requests] == ["an earlier expansion"]


def test_a_worker_without_an_endpoint_falls_back(settings: Settings, db: Database) -> None:
    # the API that took the job had an endpoint configured; this worker has none
    engine = RecordingEngine()
    pid = submit(db, prompt=PROMPT, enable_prompt_expansion=True)
    run_one(settings, db, engine, None)
    row = jobs.get_prediction(db, pid)
    assert row is not None and row.status == "completed"
    assert [r.prompt for r in engine.requests] == [PROMPT]
    assert (
        "prompt expansion failed: no endpoint on this worker (set WANFORGE_PROMPT_EXPANSION_URL and "
        "WANFORGE_PROMPT_EXPANSION_MODEL); used the original prompt" in row.logs
    )
