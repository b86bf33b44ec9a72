"""The read behind a result poll, the API's hottest path (the SDKs poll every second).

It reads only the columns the answer shows: not `logs`, and not `input`, whose `data:` image may
be megabytes that the database would parse as JSON to get at the one input the answer shows, the
prompt. A prompt never changes once submitted, so each API process remembers the last
`PromptMemo.size` prompts it read; the first poll of a prediction reads its prompt, later ones
do not.

`PollReader` is how the API runs it (docs/performance.md, "Where the tail went"): a worker
thread per poll made 32 polls in flight queue for the GIL behind each other, 5 ms (the
interpreter's switch interval) at a time, and paid SQLAlchemy's cost of a statement each. It
reads the polls waiting at one time with one statement in one thread hop instead.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Row, bindparam, select

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


def _query(
    prediction_id: str, visible_to: str | None, prompts: PromptMemo | None
) -> tuple[Any, dict[str, str | None], bool, str | None]:
    """(statement, parameters, whether the prompt is known, the known prompt)."""
    known, prompt = prompts.get(prediction_id) if prompts is not None else (False, None)
    anyone, owned = _WITHOUT_PROMPT if known else _WITH_PROMPT
    if visible_to is ANYONE:
        return anyone, {"id": prediction_id}, known, prompt
    return owned, {"id": prediction_id, "owner": visible_to}, known, prompt


def _prediction(
    found: Row[Any] | None, known: bool, prompt: str | None, prompts: PromptMemo | None
) -> Prediction | None:
    if found is None:
        return None
    values = found._asdict()
    if not known:
        prompt = values.pop("prompt")
        if prompts is not None:
            prompts.put(values["id"], prompt)
    return Prediction(**values, input={} if prompt is None else {"prompt": prompt}, logs=[])


def get_for_poll(
    db: Database, prediction_id: str, visible_to: str | None = ANYONE, prompts: PromptMemo | None = None
) -> Prediction | None:
    """The prediction as a result poll shows it, or None when `visible_to` sees no such one: a
    detached `Prediction` whose `input` holds only the prompt and whose `logs` are empty."""
    if not is_row_id(prediction_id):
        return None
    statement, params, known, prompt = _query(prediction_id, visible_to, prompts)
    with db.reading() as conn:
        found = conn.execute(statement, params).first()
    return _prediction(found, known, prompt, prompts)


_BATCH_WITH_PROMPT = select(*_COLUMNS, _PROMPT, Prediction.api_key_id).where(
    Prediction.id.in_(bindparam("ids", expanding=True))
)
_BATCH_WITHOUT_PROMPT = select(*_COLUMNS, Prediction.api_key_id).where(
    Prediction.id.in_(bindparam("ids", expanding=True))
)


@dataclass
class _Poll:
    prediction_id: str
    visible_to: str | None
    known: bool  # whether the prompt is remembered
    prompt: str | None
    answer: asyncio.Future[Prediction | None]


@dataclass
class _Queue:
    """The polls of one event loop waiting for the next read, and whether a read is under way."""

    waiting: list[_Poll] = field(default_factory=list)
    reading: bool = False
    task: asyncio.Task[None] | None = None  # the reading task (held: the loop keeps only a weak one)


class PollReader:
    """`get_for_poll` for code on an event loop: the polls that arrive while a read runs are read
    together by the next one, one statement in one worker thread (see the module's doc).

    With 32 polls in flight that is one thread hop and one round trip for many polls instead of
    one each; a poll alone is read at once. Each poll's answer is exactly `get_for_poll`'s: the
    owner is compared in Python instead of in SQL, and a prompt is read only for a poll whose
    prompt is not remembered yet."""

    def __init__(self, db: Database, prompts: PromptMemo | None = None, max_batch: int = 256) -> None:
        self.db = db
        self.prompts = prompts if prompts is not None else PromptMemo()
        self.max_batch = max_batch
        # per event loop: a server has one; a test client may start one per request
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Queue] = (
            weakref.WeakKeyDictionary()
        )

    async def get(self, prediction_id: str, visible_to: str | None = ANYONE) -> Prediction | None:
        """The prediction as a result poll shows it, or None when `visible_to` sees no such one."""
        if not is_row_id(prediction_id):
            return None
        loop = asyncio.get_running_loop()
        queue = self._queues.setdefault(loop, _Queue())
        known, prompt = self.prompts.get(prediction_id)
        poll = _Poll(prediction_id, visible_to, known, prompt, loop.create_future())
        queue.waiting.append(poll)
        if not queue.reading:
            queue.reading = True
            queue.task = loop.create_task(self._drain(queue))
        return await poll.answer

    async def _drain(self, queue: _Queue) -> None:
        """Read for the waiting polls, batch after batch, until none waits."""
        try:
            while queue.waiting:
                batch, queue.waiting = queue.waiting[: self.max_batch], queue.waiting[self.max_batch :]
                try:
                    rows = await asyncio.to_thread(self._read, batch)
                except Exception as exc:  # each poll of the batch fails as its own read would
                    for poll in batch:
                        if not poll.answer.done():
                            poll.answer.set_exception(exc)
                    continue
                for poll in batch:
                    if poll.answer.done():  # cancelled: the client went away
                        continue
                    try:
                        poll.answer.set_result(self._answer(poll, rows.get(poll.prediction_id)))
                    except Exception as exc:  # this poll's answer alone; the others still get theirs
                        poll.answer.set_exception(exc)
        finally:
            queue.reading = False

    def _read(self, batch: list[_Poll]) -> dict[str, Row[Any]]:
        ids = list(dict.fromkeys(poll.prediction_id for poll in batch))
        statement = _BATCH_WITHOUT_PROMPT if all(poll.known for poll in batch) else _BATCH_WITH_PROMPT
        with self.db.reading() as conn:
            return {row.id: row for row in conn.execute(statement, {"ids": ids})}

    def _answer(self, poll: _Poll, found: Row[Any] | None) -> Prediction | None:
        if found is None or (poll.visible_to is not ANYONE and found.api_key_id != poll.visible_to):
            return None  # another key's prediction is answered as one that does not exist
        values = found._asdict()
        del values["api_key_id"]
        read = values.pop("prompt", None)  # there when the batch read prompts
        prompt = poll.prompt if poll.known else read
        if not poll.known:
            self.prompts.put(poll.prediction_id, prompt)
        return Prediction(**values, input={} if prompt is None else {"prompt": prompt}, logs=[])
