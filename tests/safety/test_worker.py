"""Content safety in real generate jobs (demo model): one verdict per output, flag and block."""

from __future__ import annotations

import pytest

from tests.worker.generate_kit import RecordingEngine, png_data_uri, run_one, submit
from wanforge.config import Settings
from wanforge.predictions import prediction_out
from wanforge.safety.opennsfw import OpenNsfwChecker
from wanforge.store import jobs
from wanforge.store.db import Database


def _outputs_in_storage(settings: Settings) -> list[str]:
    root = settings.storage_dir / "outputs"
    return sorted(p.name for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_a_completed_job_has_one_verdict_per_output(
    settings: Settings, db: Database, opennsfw: OpenNsfwChecker
) -> None:
    pid = submit(db)
    run_one(settings, db, RecordingEngine(), opennsfw)
    row = jobs.get_prediction(db, pid)
    assert row is not None
    assert row.status == "completed", row.error
    assert len(row.outputs) == 1
    assert row.result["nsfw"] == [False] and row.result["content_checker"] == "opennsfw"
    [score] = row.result["nsfw_scores"]
    assert 0.0 <= score < settings.nsfw_threshold
    out = prediction_out(row, "http://h")
    assert out.has_nsfw_contents == [False] and len(out.outputs) == 1
    assert "nsfw" not in out.result  # shown as has_nsfw_contents, not twice


def test_flag_policy_completes_a_flagged_output(
    settings: Settings, db: Database, opennsfw: OpenNsfwChecker
) -> None:
    settings.nsfw_threshold = 0.0  # flags everything
    pid = submit(db)
    run_one(settings, db, RecordingEngine(), opennsfw)
    row = jobs.get_prediction(db, pid)
    assert row is not None and row.status == "completed"
    assert prediction_out(row, "http://h").has_nsfw_contents == [True]
    assert len(_outputs_in_storage(settings)) == 1


def test_block_policy_withholds_a_flagged_output(
    settings: Settings, db: Database, opennsfw: OpenNsfwChecker
) -> None:
    settings.nsfw_threshold = 0.0
    settings.nsfw_policy = "block"
    pid = submit(db)
    engine = RecordingEngine()
    run_one(settings, db, engine, opennsfw)
    row = jobs.get_prediction(db, pid)
    assert row is not None and row.status == "failed" and row.error_code == 1200
    assert row.error == "content moderation: the output was flagged by the opennsfw checker and withheld"
    assert len(engine.requests) == 1 and row.outputs == []
    assert _outputs_in_storage(settings) == []  # never stored
    assert row.result["nsfw"] == [True]  # the verdict stays on the record for the operator
    out = prediction_out(row, "http://h")
    assert out.outputs == [] and out.has_nsfw_contents == []


def test_block_policy_passes_an_unflagged_output(
    settings: Settings, db: Database, opennsfw: OpenNsfwChecker
) -> None:
    settings.nsfw_policy = "block"
    pid = submit(db)
    run_one(settings, db, RecordingEngine(), opennsfw)
    row = jobs.get_prediction(db, pid)
    assert row is not None and row.status == "completed"
    assert prediction_out(row, "http://h").has_nsfw_contents == [False]


def test_without_a_checker_the_field_stays_empty(settings: Settings, db: Database) -> None:
    pid = submit(db)
    run_one(settings, db, RecordingEngine(), None)
    row = jobs.get_prediction(db, pid)
    assert row is not None and row.status == "completed"
    assert "nsfw" not in row.result and "nsfw_scores" not in row.result
    assert prediction_out(row, "http://h").has_nsfw_contents == []


@pytest.mark.parametrize("policy", ["flag", "block"])
def test_input_check(settings: Settings, db: Database, opennsfw: OpenNsfwChecker, policy: str) -> None:
    settings.nsfw_check_input = True
    settings.nsfw_threshold = 0.0
    settings.nsfw_policy = policy  # type: ignore[assignment]
    pid = submit(db, image=png_data_uri((220, 170, 140)))
    engine = RecordingEngine()
    run_one(settings, db, engine, opennsfw)
    row = jobs.get_prediction(db, pid)
    assert row is not None and row.result["input_nsfw"] is True
    assert 0.0 <= row.result["input_nsfw_score"] <= 1.0
    if policy == "block":  # refused before generating
        assert row.status == "failed" and row.error_code == 1200 and engine.requests == []
        assert row.error == "content moderation: the input image was flagged by the opennsfw checker"
    else:
        assert row.status == "completed" and len(engine.requests) == 1
        assert "the input image was flagged by the opennsfw checker" in row.logs


def test_input_check_is_off_by_default(settings: Settings, db: Database, opennsfw: OpenNsfwChecker) -> None:
    settings.nsfw_threshold = 0.0
    settings.nsfw_policy = "block"
    pid = submit(db)
    engine = RecordingEngine()
    run_one(settings, db, engine, opennsfw)
    row = jobs.get_prediction(db, pid)
    assert row is not None and "input_nsfw" not in row.result and len(engine.requests) == 1
