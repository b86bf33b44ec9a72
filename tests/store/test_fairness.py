"""Fair scheduling between keys at claim (`wanforge.store.fairness`): one key's flood never keeps
another waiting; weights share the workers; within a key, FIFO; LoRA affinity within the fair
choice. Times are `now` arguments (the database's clock in production): no sleeping."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from wanforge.store import jobs
from wanforge.store.db import Database
from wanforge.store.fairness import queue_snapshot
from wanforge.store.keys import KeyOptions, create_key

T0 = datetime(2026, 3, 1, 9, 0, 0)
LORA = "https://loras.example/x.safetensors"


def _key(db: Database, name: str, weight: float = 1.0) -> str:
    return create_key(db, name, KeyOptions(weight=weight))[1].id


def _submit(db: Database, key_id: str | None, at_s: float, lora: str | None = None) -> str:
    inp: dict[str, Any] = {"image": "https://example.com/i.png", "prompt": "p"}
    if lora:
        inp["loras"] = [{"path": lora, "scale": 1.0}]
    return jobs.create_prediction(
        db,
        model="m",
        kind="generate",
        input=inp,
        server_base="http://h",
        max_attempts=3,
        api_key_id=key_id,
        now=T0 + timedelta(seconds=at_s),
    ).id


def _claim(db: Database, worker: str, at_s: float, prefer: frozenset[str] = frozenset()) -> str | None:
    row = jobs.claim_next(
        db,
        worker,
        600,
        ("generate",),
        now=T0 + timedelta(seconds=at_s),
        prefer=prefer,
        affinity_wait_s=30.0 if prefer else 0.0,
    )
    return row.id if row is not None else None


def test_one_key_flooding_the_queue_lets_another_keys_job_start_next(db: Database) -> None:
    """The acceptance: A submits 50, then B submits 1: at most one more of A's jobs starts
    between B's submit and the start of B's job (here none: two workers take turns)."""
    a, b = _key(db, "a"), _key(db, "b")
    flood = [_submit(db, a, i * 0.01) for i in range(50)]
    started = [_claim(db, "w1", 1), _claim(db, "w2", 2)]  # A has had the workers to itself
    only_b = _submit(db, b, 3)
    while only_b not in started:
        claimed = _claim(db, f"w{len(started) % 2 + 1}", 3 + len(started))
        assert claimed is not None
        started.append(claimed)
    after_b = started[2 : started.index(only_b)]
    assert len(after_b) <= 1, after_b
    rest = [_claim(db, "w1", 100 + i) for i in range(50 - len(started) + 1)]
    assert None not in rest and _claim(db, "w1", 200) is None
    # within A, first come first served
    assert [j for j in started + rest if j != only_b] == flood


def test_weights_share_the_workers_and_each_key_stays_fifo(db: Database) -> None:
    heavy, light = _key(db, "heavy", weight=2), _key(db, "light")
    h = [_submit(db, heavy, i) for i in range(20)]
    lt = [_submit(db, light, 0.5 + i) for i in range(20)]
    order = [_claim(db, "w", 100 + i) for i in range(15)]
    # two of heavy's for one of light's; a tie goes to the key whose next job is older
    expected = [h[0], lt[0], h[1], lt[1], h[2], h[3], lt[2], h[4], h[5], lt[3], h[6], h[7], lt[4], h[8], h[9]]
    assert order == expected  # fmt: skip


def test_an_idle_key_saves_up_no_turns(db: Database) -> None:
    """A key that was idle while another ran joins at the current turn: it alternates with the
    busy key instead of running its backlog of missed turns first."""
    a, b = _key(db, "a"), _key(db, "b")
    a_jobs = [_submit(db, a, i) for i in range(10)]
    for i in range(6):
        assert _claim(db, "w", 20 + i) == a_jobs[i]
    b_jobs = [_submit(db, b, 30 + i) for i in range(3)]
    order = [_claim(db, "w", 40 + i) for i in range(6)]
    assert order == [b_jobs[0], a_jobs[6], b_jobs[1], a_jobs[7], b_jobs[2], a_jobs[8]]


def test_lora_affinity_applies_within_the_fair_choice(db: Database) -> None:
    """A worker holding a LoRA takes the key's younger job that uses it, but never another key's
    job out of that key's turn."""
    a, b = _key(db, "a"), _key(db, "b")
    a_plain = _submit(db, a, 0)
    a_lora = _submit(db, a, 1, LORA)
    b_plain = _submit(db, b, 2)
    b_lora = _submit(db, b, 3, LORA)
    held = frozenset({LORA})
    assert _claim(db, "w", 10, held) == a_lora  # A's turn (its job is the oldest): its LoRA job
    assert _claim(db, "w", 11, held) == b_lora  # B's turn, not A's older plain job
    assert _claim(db, "w", 12, held) == a_plain
    assert _claim(db, "w", 13, held) == b_plain


def test_jobs_without_a_key_take_turns_too(db: Database) -> None:
    a = _key(db, "a")
    a_jobs = [_submit(db, a, i) for i in range(3)]
    keyless = _submit(db, None, 5)
    assert _claim(db, "w", 10) == a_jobs[0]
    assert _claim(db, "w", 11) == keyless
    assert [_claim(db, "w", 12), _claim(db, "w", 13)] == a_jobs[1:]


def test_queue_positions_are_the_order_the_claims_take(db: Database) -> None:
    a, b, c = _key(db, "a", weight=2), _key(db, "b"), _key(db, "c", weight=0.5)
    for i in range(12):
        _submit(db, (a, b, c)[i % 3] if i < 9 else a, i)
    _claim(db, "w", 20)  # history: A has run one
    positions = queue_snapshot(db).positions
    expected = sorted(positions, key=positions.__getitem__)
    assert sorted(positions.values()) == list(range(11))
    assert [_claim(db, "w", 30 + i) for i in range(11)] == expected
