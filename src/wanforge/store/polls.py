"""The read behind a result poll, the API's hottest path (the SDKs poll every second).

It reads only the columns the answer shows: not `logs`, and not `input`, whose `data:` image may
be megabytes that the database would parse as JSON to get at the one input the answer shows, the
prompt. A prompt never changes once submitted, so each API process remembers the last
`PromptMemo.size` prompts it read; the first poll of a prediction reads its prompt, later ones
do not.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from sqlalchemy import bindparam, select

from wanforge.store.db import Database, is_row_id
from wanforge.store.jobs import ANYONE
from wanforge.store.tables import Prediction

_COLUMNS = (
    Prediction.id,
    Prediction.model,
    Prediction.status,
    Prediction.outputs,
    Prediction.error,
    Prediction.error_code,
    Prediction.progress,
    Prediction.result,
    Prediction.created_at,
    Prediction.started_at,
    Prediction.completed_at,
    Prediction.expired_at,
    Prediction.inference_ms,
    Prediction.attempts,
    Prediction.webhook_url,
    Prediction.webhook_state,
    Prediction.webhook_attempts,
    Prediction.webhook_error,
)
_PROMPT = Prediction.input["prompt"].as_string().label("prompt")


def _statements(*columns: object) -> tuple[object, object]:
    """(any owner, one owner's) statements, built once: building one costs more than running it."""
    anyone = select(*columns).where(Prediction.id == bindparam("id"))  # type: ignore[call-overload]
    return anyone, anyone.where(Prediction.api_key_id == bindparam("owner"))


_WITH_PROMPT = _statements(*_COLUMNS, _PROMPT)
_WITHOUT_PROMPT = _statements(*_COLUMNS)


class PromptMemo:
    """The prompts of the last `size` predictions polled (a prompt never changes)."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._prompts: OrderedDict[str, str | None] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, prediction_id: str) -> tuple[bool, str | None]:
        with self._lock:
            if prediction_id not in self._prompts:
                return False, None
            self._prompts.move_to_end(prediction_id)
            return True, self._prompts[prediction_id]

    def put(self, prediction_id: str, prompt: str | None) -> None:
        with self._lock:
            self._prompts[prediction_id] = prompt
            while len(self._prompts) > self.size:
                self._prompts.popitem(last=False)


def get_for_poll(
    db: Database, prediction_id: str, visible_to: str | None = ANYONE, prompts: PromptMemo | None = None
) -> Prediction | None:
    """The prediction as a result poll shows it, or None when `visible_to` sees no such one: a
    detached `Prediction` whose `input` holds only the prompt and whose `logs` are empty."""
    if not is_row_id(prediction_id):
        return None
    known, prompt = prompts.get(prediction_id) if prompts is not None else (False, None)
    anyone, owned = _WITHOUT_PROMPT if known else _WITH_PROMPT
    with db.reading() as conn:
        if visible_to is ANYONE:
            found = conn.execute(anyone, {"id": prediction_id}).first()  # type: ignore[call-overload]
        else:
            found = conn.execute(owned, {"id": prediction_id, "owner": visible_to}).first()  # type: ignore[call-overload]
    if found is None:
        return None
    values = found._asdict()
    if not known:
        prompt = values.pop("prompt")
        if prompts is not None:
            prompts.put(prediction_id, prompt)
    return Prediction(**values, input={} if prompt is None else {"prompt": prompt}, logs=[])
