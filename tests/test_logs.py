"""JSON log lines: one object per line, parseable, carrying the prediction id where there is one."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.worker.generate_kit import png_data_uri
from wanforge.api.app import create_app
from wanforge.config import Settings
from wanforge.logs import make_handler, prediction_context
from wanforge.store import jobs
from wanforge.store.db import Database
from wanforge.worker.context import JobContext, TaskOutcome
from wanforge.worker.loop import WorkerLoop


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """What the `wanforge` loggers write, as JSON lines, while the test runs."""
    stream = io.StringIO()
    handler = make_handler("json", stream)
    logger = logging.getLogger("wanforge")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(old_level)


@pytest.fixture
def auth(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


def _parsed(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_json_line_has_its_fields_and_the_prediction_id(json_lines: io.StringIO) -> None:
    log = logging.getLogger("wanforge.test")
    with prediction_context("0123456789abcdef0123456789abcdef"):
        log.warning("disk at %d%%", 93)
    log.info("outside")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("it broke")
    inside, outside, failed = _parsed(json_lines)
    assert set(inside) == {"time", "level", "logger", "message", "prediction_id"}
    assert inside["level"] == "WARNING" and inside["logger"] == "wanforge.test"
    assert inside["message"] == "disk at 93%"
    assert inside["prediction_id"] == "0123456789abcdef0123456789abcdef"
    assert inside["time"].endswith("+00:00") and "T" in inside["time"]
    assert set(outside) == {"time", "level", "logger", "message"}
    assert failed["message"] == "it broke" and "ValueError: boom" in failed["exc_info"]


def test_the_text_format_names_the_prediction() -> None:
    stream = io.StringIO()
    record = logging.LogRecord("wanforge.x", logging.INFO, __file__, 1, "hello", None, None)
    handler = make_handler("text", stream)
    with prediction_context("ab" * 16):
        handler.handle(record)
    assert stream.getvalue().rstrip().endswith(f"wanforge.x: hello [prediction {'ab' * 16}]")


def test_worker_lines_carry_the_job_s_prediction_id(
    settings: Settings, db: Database, json_lines: io.StringIO
) -> None:
    def task(_ctx: JobContext) -> TaskOutcome:
        logging.getLogger("wanforge.task").info("working on it")
        return TaskOutcome(outputs=[], result={})

    pid = jobs.create_prediction(
        db, model="m", kind="generate", input={}, server_base="http://h", max_attempts=3
    ).id
    loop = WorkerLoop(settings, db)
    loop.tasks = {"generate": task}
    row = jobs.claim_next(db, loop.worker_id, settings.lease_s, ("generate",))
    assert row is not None
    loop.run_job(row)
    logging.getLogger("wanforge.worker").info("idle again")
    lines = _parsed(json_lines)
    by_message = {line["message"]: line for line in lines}
    assert by_message["working on it"]["prediction_id"] == pid
    assert by_message[f"job {pid}: attempt 1 on worker {loop.worker_id}"]["prediction_id"] == pid
    assert "prediction_id" not in by_message["idle again"]


def test_api_lines_carry_the_prediction_id(
    settings: Settings, db: Database, auth: dict[str, str], json_lines: io.StringIO
) -> None:
    client = TestClient(create_app(settings, db))
    answer = client.post(
        "/api/v3/alibaba/wan-2.2/i2v-plus-480p", json={"image": png_data_uri(), "prompt": "p"}, headers=auth
    )
    pid = answer.json()["data"]["id"]
    [line] = [line for line in _parsed(json_lines) if line["logger"] == "wanforge.api"]
    assert line == {
        "time": line["time"],
        "level": "INFO",
        "logger": "wanforge.api",
        "message": "prediction created for model alibaba/wan-2.2/i2v-plus-480p",
        "prediction_id": pid,
    }
