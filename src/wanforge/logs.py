"""Log lines as text or JSON, each carrying the id of the prediction it concerns.

Code that works on one prediction runs inside `prediction_context(id)` (the worker while a job
runs, the API while a request names one, the webhook sender while it POSTs one); a filter on the
handler copies that id onto every record as `prediction_id`. Nothing is configured at import:
`configure_logging` is called by the CLI's entry points only.

The JSON formatter is written here because the standard library has none and the line it makes
is five fields; `python-json-logger` would be one more dependency for it.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Literal, TextIO

_prediction: ContextVar[str | None] = ContextVar("wanforge_prediction_id", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(prediction_suffix)s"


@contextmanager
def prediction_context(prediction_id: str | None) -> Iterator[None]:
    """Log lines written inside this block (in this thread or task) concern `prediction_id`."""
    token = _prediction.set(prediction_id)
    try:
        yield
    finally:
        _prediction.reset(token)


def set_prediction(prediction_id: str | None) -> None:
    """Mark the rest of the current context (e.g. one request handled in its own thread) as
    concerning `prediction_id`."""
    _prediction.set(prediction_id)


def current_prediction() -> str | None:
    return _prediction.get()


class PredictionFilter(logging.Filter):
    """Adds `prediction_id` (None outside a prediction) and, for the text format, a suffix."""

    def filter(self, record: logging.LogRecord) -> bool:
        prediction_id = getattr(record, "prediction_id", None) or _prediction.get()
        record.prediction_id = prediction_id
        record.prediction_suffix = f" [prediction {prediction_id}]" if prediction_id else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601 UTC), level, logger, message, prediction_id when
    the line concerns one, and exc_info (the traceback as text) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if prediction_id := getattr(record, "prediction_id", None):
            line["prediction_id"] = prediction_id
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        elif record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def make_handler(fmt: Literal["text", "json"], stream: TextIO | None = None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(PredictionFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    return handler


def configure_logging(fmt: Literal["text", "json"], level: int = logging.INFO) -> None:
    """The root logger writes `fmt` lines to stderr (replacing its handlers); for the CLI."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(make_handler(fmt))
    root.setLevel(level)
    logging.getLogger("alembic").setLevel(logging.WARNING)
