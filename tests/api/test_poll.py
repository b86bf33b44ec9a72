"""The result poll's fast path answers exactly what the full read answers (minus the log), reads
each prompt once, and keeps tenancy."""

from __future__ import annotations

import base64

from fastapi.testclient import TestClient
from sqlalchemy import update

from wanforge.api.app import create_app
from wanforge.config import Settings
from wanforge.store import jobs
from wanforge.store.db import Database
from wanforge.store.keys import create_key
from wanforge.store.polls import PromptMemo, get_for_poll
from wanforge.store.tables import Prediction

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
