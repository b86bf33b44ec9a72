"""LoRA affinity at claim: a worker takes the oldest queued job using a LoRA it holds, unless the
oldest job has waited longer than `affinity_wait_s` (then strict FIFO), so nothing starves.

Every wait is measured on the database's clock; `now` stands in for it here (no sleeping)."""

from __future__ import annotations

import re
import threading
from datetime import datetime, timedelta
from typing import Any

import pytest

from wanforge.store import jobs
from wanforge.store.affinity import AFFINITY_WINDOW, input_lora_ids, lora_identity
from wanforge.store.clock import database_now
from wanforge.store.db import Database

T0 = datetime(2026, 1, 1, 12, 0, 0)
WAIT_S = 30.0
A = "https://loras.example/a.safetensors"
B = "https://loras.example/b.safetensors"


def _job(db: Database, at_s: float, *paths: str, kind: str = "generate", field: str = "loras") -> str:
    inp: dict[str, Any] = {"image": "https://example.com/i.png", "prompt": "p"}
    if paths:
        inp[field] = [{"path": p, "scale": 1.0} for p in paths]
    return jobs.create_prediction(
        db,
        model="m",
        kind=kind,
        input=inp,
        server_base="http://h",
        max_attempts=3,
        now=T0 + timedelta(seconds=at_s),
    ).id


def _claim(
    db: Database, worker: str, at_s: float, prefer: frozenset[str], wait_s: float = WAIT_S
) -> str | None:
    row = jobs.claim_next(
        db,
        worker,
        600,
        ("generate", "train"),
        now=T0 + timedelta(seconds=at_s),
        prefer=prefer,
        affinity_wait_s=wait_s,
    )
    return row.id if row is not None else None


def test_identities_are_the_paths_as_given_normalized() -> None:
    assert lora_identity("  HTTPS://Loras.Example/A.safetensors ") == "https://loras.example/A.safetensors"
    assert lora_identity(" my_style.safetensors\n") == "my_style.safetensors"
    inp = {
        "loras": [{"path": A, "scale": 1.0}],
        "high_noise_loras": [{"path": f" {B} ", "scale": 0.5}, {"path": A, "scale": 1.0}],
        "low_noise_loras": [],
        "image": "https://example.com/i.png",
    }
    assert input_lora_ids(inp) == [A, B]
    assert input_lora_ids({"data": "https://example.com/d.zip", "steps": 50}) == []
    assert input_lora_ids({"loras": "not a list", "high_noise_loras": [{"scale": 1}, "x"]}) == []


def test_a_worker_takes_the_oldest_job_using_a_lora_it_holds(db: Database) -> None:
    plain = _job(db, 0)
    with_b = _job(db, 1, B)
    with_a = _job(db, 2, A, field="high_noise_loras")
    later_a = _job(db, 3, A)
    assert _claim(db, "w1", 10, frozenset({A})) == with_a
    assert _claim(db, "w1", 11, frozenset({A})) == later_a
    assert _claim(db, "w1", 12, frozenset({A})) == plain  # none left with A: FIFO
    assert _claim(db, "w2", 12, frozenset({B})) == with_b


def test_without_held_loras_or_with_affinity_off_the_queue_is_fifo(db: Database) -> None:
    first, _, third = _job(db, 0, B), _job(db, 1, A), _job(db, 2, A)
    assert _claim(db, "w1", 5, frozenset()) == first
    assert _claim(db, "w2", 5, frozenset({A}), wait_s=0) != third  # 0 turns affinity off: FIFO
    assert _claim(db, "w3", 5, frozenset({A}), wait_s=0) == third


def test_an_oldest_job_waiting_longer_than_the_limit_is_taken_first(db: Database) -> None:
    old_b = _job(db, 0, B)
    _job(db, 1, A)
    assert _claim(db, "w1", WAIT_S, frozenset({A})) != old_b  # waited exactly the limit: not yet
    assert _claim(db, "w1", WAIT_S + 0.001, frozenset({A})) == old_b  # longer: strict FIFO


def test_a_job_never_starves_behind_a_stream_of_preferred_jobs(db: Database) -> None:
    """One job with LoRA B, then a new job with LoRA A every second, and a worker holding A that
    takes a job every second: B's job is taken as soon as it has waited longer than the limit."""
    starving = _job(db, 0, B)
    taken: list[tuple[float, str | None]] = []
    for second in range(1, 60):
        _job(db, second, A)
        taken.append((second + 0.5, _claim(db, "w1", second + 0.5, frozenset({A}))))
        if taken[-1][1] == starving:
            break
    assert taken[-1] == (30.5, starving)
    assert all(pid is not None and pid != starving for _, pid in taken[:-1])


def test_only_the_oldest_window_of_jobs_is_looked_at(db: Database) -> None:
    first = _job(db, 0, B)
    for i in range(AFFINITY_WINDOW - 1):
        _job(db, 1 + i * 0.01, B)
    beyond = _job(db, 2, A)  # the 33rd oldest: out of the window
    assert _claim(db, "w1", 5, frozenset({A})) == first
    assert _claim(db, "w1", 5, frozenset({A})) == beyond  # now in the window


def test_a_preferred_job_another_worker_holds_is_not_taken_twice(db: Database) -> None:
    with_a = _job(db, 0, A)
    plain = _job(db, 1)
    assert _claim(db, "w1", 5, frozenset({A})) == with_a
    assert _claim(db, "w2", 5, frozenset({A})) == plain
    assert _claim(db, "w3", 5, frozenset({A})) is None
    row = jobs.get_prediction(db, with_a)
    assert row is not None and (row.lease_owner, row.attempts) == ("w1", 1)


def test_training_jobs_name_no_lora(db: Database) -> None:
    train = _job(db, 0, kind="train")
    with_a = _job(db, 1, A)
    assert _claim(db, "w1", 5, frozenset({A})) == with_a
    assert _claim(db, "w1", 5, frozenset({A})) == train


@pytest.mark.parametrize("wait_s", [float("inf"), 1e300])
def test_a_wait_past_what_a_timedelta_holds_keeps_affinity(db: Database, wait_s: float) -> None:
    """WANFORGE_AFFINITY_WAIT_S=inf (the settings accept it) means affinity without aging; it
    must not fail every claim (a timedelta cannot hold it)."""
    _job(db, 0, B)
    with_a = _job(db, 1, A)
    assert _claim(db, "w1", 3600, frozenset({A}), wait_s=wait_s) == with_a


def test_a_negative_wait_is_refused(db: Database) -> None:
    with pytest.raises(ValueError, match=re.escape("affinity_wait_s must be >= 0, got -1.0")):
        _claim(db, "w1", 0, frozenset({A}), wait_s=-1.0)


def test_waits_are_measured_on_the_database_clock(db: Database) -> None:
    """No `now`: the database's own clock; jobs made just now have not waited 30 s."""
    created = database_now(db)
    for field, path in (("loras", B), ("loras", A)):
        jobs.create_prediction(
            db,
            model="m",
            kind="generate",
            input={field: [{"path": path, "scale": 1.0}]},
            server_base="http://h",
            max_attempts=3,
            now=created,
        )
    row = jobs.claim_next(db, "w1", 600, ("generate",), prefer=frozenset({A}), affinity_wait_s=WAIT_S)
    assert row is not None and row.input["loras"][0]["path"] == A
    old = jobs.create_prediction(
        db,
        model="m",
        kind="generate",
        input={},
        server_base="http://h",
        max_attempts=3,
        now=created - timedelta(seconds=WAIT_S + 5),
    )
    jobs.create_prediction(
        db,
        model="m",
        kind="generate",
        input={"loras": [{"path": A, "scale": 1.0}]},
        server_base="http://h",
        max_attempts=3,
        now=created,
    )
    row = jobs.claim_next(db, "w1", 600, ("generate",), prefer=frozenset({A}), affinity_wait_s=WAIT_S)
    assert row is not None and row.id == old.id


def test_concurrent_preferring_workers_never_share_a_job(db: Database) -> None:
    ids = {_job(db, i * 0.01, A if i % 2 else B) for i in range(20)}
    claimed: list[str] = []
    lock = threading.Lock()

    def grab(worker: str) -> None:
        while (pid := _claim(db, worker, 5, frozenset({A}))) is not None:
            with lock:
                claimed.append(pid)

    threads = [threading.Thread(target=grab, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(ids)
