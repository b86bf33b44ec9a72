"""The result poll's fast path answers exactly what the full read answers (minus the log), reads
each prompt once, keeps tenancy, and reads the polls in flight together."""

from __future__ import annotations

import asyncio
import base64
import gc
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, update
from sqlalchemy.exc import OperationalError

from wanforge.api.app import create_app
from wanforge.config import Settings
from wanforge.store import jobs
from wanforge.store.db import Database
from wanforge.store.jobs import ANYONE
from wanforge.store.keys import create_key
from wanforge.store.polls import PollReader, PromptMemo, get_for_poll
from wanforge.store.tables import Prediction

COLUMNS = ("id", "model", "status", "outputs", "progress", "result", "created_at", "completed_at", "attempts")
IMAGE = "data:image/png;base64," + base64.b64encode(bytes(3000)).decode()


def _completed(db: Database, owner: str) -> str:
    pid = jobs.create_prediction(
        db,
        model="alibaba/wan-2.2/i2v-plus-480p",
        kind="generate",
        input={"image": IMAGE, "prompt": 'a cat, surfing: "big" wave ✓'},
        server_base="http://h",
        max_attempts=3,
        api_key_id=owner,
        webhook_url="http://hook.example/x",
    ).id
    with db.session() as s:
        s.execute(
            update(Prediction)
            .where(Prediction.id == pid)
            .values(
                status="completed",
                outputs=[f"outputs/{pid}/video.mp4"],
                inference_ms=1234,
                attempts=1,
                logs=["line 1"],
                progress={"step": 40, "total": 40},
                result={"seed": 7, "nsfw": [False], "timings": {"lora_load": 5}, "sizes": [480, 832]},
            )
        )
    return pid


def test_result_equals_the_full_answer_without_logs(
    settings: Settings, db: Database, api_key: str, owner: str
) -> None:
    pid = _completed(db, owner)
    client = TestClient(create_app(settings, db))
    auth = {"Authorization": f"Bearer {api_key}"}
    full = client.get(f"/api/v3/predictions/{pid}", headers=auth).json()
    assert full["data"]["logs"] == ["line 1"]
    for _ in range(2):  # the second answer comes with the remembered prompt
        polled = client.get(f"/api/v3/predictions/{pid}/result", headers=auth)
        assert polled.status_code == 200 and polled.headers["content-type"] == "application/json"
        # the detail alone carries the stored request body (`input`) and the job log
        assert polled.json() == {**full, "data": {**full["data"], "logs": [], "input": None}}
    assert polled.json()["data"]["prompt"] == 'a cat, surfing: "big" wave ✓'
    other, _ = create_key(db, "other")
    refused = client.get(f"/api/v3/predictions/{pid}/result", headers={"Authorization": f"Bearer {other}"})
    assert refused.status_code == 404
    assert refused.json() == {"code": 404, "message": f"prediction {pid} not found", "data": None}


def test_the_prompt_is_read_once_and_never_for_another_key(db: Database, owner: str) -> None:
    pid = _completed(db, owner)
    memo = PromptMemo(size=1)
    assert get_for_poll(db, pid, "someone-else", memo) is None
    assert memo.get(pid) == (False, None)
    first = get_for_poll(db, pid, owner, memo)
    assert first is not None and first.input == {"prompt": 'a cat, surfing: "big" wave ✓'}
    assert memo.get(pid) == (True, 'a cat, surfing: "big" wave ✓')
    with db.session() as s:  # a prompt never changes; this proves the second read skipped it
        s.execute(update(Prediction).where(Prediction.id == pid).values(input={"prompt": "changed"}))
    again = get_for_poll(db, pid, owner, memo)
    assert again is not None and again.input == {"prompt": 'a cat, surfing: "big" wave ✓'}
    assert again.logs == [] and again.status == "completed" and again.outputs == [f"outputs/{pid}/video.mp4"]
    assert get_for_poll(db, "not-an-id", owner, memo) is None


def _statements(db: Database) -> list[str]:
    """The statements `db` runs from now on (a list that fills as they run)."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    return seen


def test_polls_in_flight_are_read_with_one_statement_each_as_its_own_read_answers(
    db: Database, owner: str
) -> None:
    mine, theirs = _completed(db, owner), _completed(db, owner)
    other = create_key(db, "other")[1].id
    others = _completed(db, other)
    reader = PollReader(db)
    asks = [
        (mine, owner),
        (mine, other),  # another key's: answered as one that does not exist
        (theirs, owner),
        (others, ANYONE),  # an admin key sees every key's
        (others, owner),
        ("0" * 32, owner),  # no such prediction
        (mine, owner),  # the same one twice in one read
    ]
    expected = [get_for_poll(db, pid, key) for pid, key in asks]  # each poll read on its own
    statements = _statements(db)

    async def poll_all() -> list[Prediction | None]:
        return await asyncio.gather(*(reader.get(pid, key) for pid, key in asks))

    answers = asyncio.run(poll_all())
    assert len(statements) == 1 and " IN " in statements[0]
    assert [a is None for a in answers] == [False, True, False, False, True, True, False]
    for got, want in zip(answers, expected, strict=True):
        assert (got is None) == (want is None)
        if got is not None and want is not None:
            assert {c: getattr(got, c) for c in COLUMNS} == {c: getattr(want, c) for c in COLUMNS}
            assert got.input == want.input == {"prompt": 'a cat, surfing: "big" wave ✓'} and got.logs == []
    # the prompts read are remembered for their own key's polls only
    assert reader.prompts.get(mine)[0] and reader.prompts.get(theirs)[0] and reader.prompts.get(others)[0]
    assert asyncio.run(reader.get("not-an-id", owner)) is None and len(statements) == 1  # no query


def test_a_poll_never_remembers_the_prompt_of_another_keys_prediction(db: Database, owner: str) -> None:
    pid = _completed(db, owner)
    reader = PollReader(db)
    assert asyncio.run(reader.get(pid, "someone-else")) is None
    assert reader.prompts.get(pid) == (False, None)
    statements = _statements(db)
    found = asyncio.run(reader.get(pid, owner))
    assert found is not None and found.input == {"prompt": 'a cat, surfing: "big" wave ✓'}
    assert reader.prompts.get(pid) == (True, 'a cat, surfing: "big" wave ✓')
    again = asyncio.run(reader.get(pid, owner))  # remembered: the read skips the prompt
    assert again is not None and again.input == found.input
    assert len(statements) == 2 and "prompt" in statements[0] and "prompt" not in statements[1]


def test_a_failed_read_fails_each_poll_of_its_batch_and_the_next_read_runs(
    db: Database, owner: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = _completed(db, owner)
    reader = PollReader(db)
    real = reader._read
    calls: list[int] = []

    def fail_once(batch: list[Any]) -> Any:
        calls.append(len(batch))
        if len(calls) == 1:
            raise OperationalError("SELECT", {}, Exception("server closed the connection"))
        return real(batch)

    monkeypatch.setattr(reader, "_read", fail_once)

    async def poll_three() -> list[Prediction | BaseException | None]:
        return await asyncio.gather(*(reader.get(pid, owner) for _ in range(3)), return_exceptions=True)

    failed = asyncio.run(poll_three())
    assert calls == [3] and all(isinstance(f, OperationalError) for f in failed)
    answered = asyncio.run(poll_three())
    assert calls == [3, 3] and all(isinstance(a, Prediction) and a.id == pid for a in answered)


def test_the_server_freezes_what_start_up_made_out_of_the_collectors_sight(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wanforge.api import app as app_module

    frozen: list[int] = []

    class Server:
        started = True

        def run(self) -> None:
            frozen.append(gc.get_freeze_count())

    monkeypatch.setattr(app_module, "make_server", lambda _app, _settings: Server())
    before = gc.get_freeze_count()
    try:
        app_module.run_server(create_app(settings, send_webhooks=False), settings)
    finally:
        gc.unfreeze()
    assert before == 0 and frozen and frozen[0] > 10_000  # the modules, the app: all of start-up


def test_the_access_log_is_a_setting(settings: Settings) -> None:
    from wanforge.api.app import make_server

    app = create_app(settings, send_webhooks=False)
    assert make_server(app, settings).config.access_log is True
    quiet = settings.model_copy(update={"access_log": False})
    assert make_server(app, quiet).config.access_log is False
    assert Settings(data_dir=settings.data_dir, _env_file=None).access_log is True  # type: ignore[call-arg]


def test_a_poll_whose_client_went_away_leaves_the_others_of_its_read_answered(
    db: Database, owner: str
) -> None:
    pid = _completed(db, owner)
    reader = PollReader(db, max_batch=2)
    statements = _statements(db)

    async def scenario() -> list[Prediction | None]:
        gone = asyncio.ensure_future(reader.get(pid, owner))
        rest = [asyncio.ensure_future(reader.get(pid, owner)) for _ in range(4)]
        await asyncio.sleep(0)  # all five wait, the first read has begun
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        # a bound so that a lost answer fails the test instead of hanging it
        return list(await asyncio.wait_for(asyncio.gather(*rest), timeout=30))

    answers = asyncio.run(scenario())
    assert [a.id if a is not None else None for a in answers] == [pid] * 4
    assert len(statements) == 3  # five polls, at most two a read


def test_a_queued_prediction_shows_its_place_in_the_fair_queue(settings: Settings, db: Database) -> None:
    """`queue_position`: how many jobs start before it (0: next), in the fair order; null once
    it runs. The answers share one read of the queue for up to `max_age_s`."""
    client = TestClient(create_app(settings, db))
    client.app.state.wanforge.queue.max_age_s = 0.0  # type: ignore[attr-defined]
    a, b = ({"Authorization": f"Bearer {create_key(db, n)[0]}"} for n in ("a", "b"))
    body = {"image": "https://example.com/cat.png", "prompt": "a cat"}
    submit = "/api/v3/alibaba/wan-2.2/i2v-plus-480p"
    a_ids = [client.post(submit, headers=a, json=body).json()["data"]["id"] for _ in range(3)]
    submitted = client.post(submit, headers=b, json=body).json()["data"]
    assert submitted["queue_position"] == 1  # after A's first, before A's others

    def position(pid: str, auth: dict[str, str], path: str = "/result") -> Any:
        return client.get(f"/api/v3/predictions/{pid}{path}", headers=auth).json()["data"]["queue_position"]

    assert [position(pid, a) for pid in a_ids] == [0, 2, 3]
    claimed = jobs.claim_next(db, "w", 30, ("generate",))
    assert claimed is not None and claimed.id == a_ids[0]
    assert position(a_ids[0], a) is None
    assert position(submitted["id"], b) == 0 == position(submitted["id"], b, path="")
