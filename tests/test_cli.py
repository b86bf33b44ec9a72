"""The `wanforge` command line: generate, train and keys, in process."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
from safetensors import safe_open
from typer.testing import CliRunner

from tests.samples import png_bytes
from wanforge.cli import app

runner = CliRunner()


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path)]
    created = runner.invoke(app, ["keys", "create", "--name", "alice", *data])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[0]
    assert key.startswith("wf_")
    listed = runner.invoke(app, ["keys", "list", *data])
    assert "alice" in listed.stdout and key[:8] in listed.stdout and key not in listed.stdout
    assert runner.invoke(app, ["keys", "revoke", key[:8], *data]).exit_code == 0
    assert "revoked" in runner.invoke(app, ["keys", "list", *data]).stdout
    assert runner.invoke(app, ["keys", "revoke", "nomatch", *data]).exit_code == 1


def test_keys_admin_limits_expiry_and_update(tmp_path: Path) -> None:
    from datetime import datetime, timedelta

    from wanforge.cli import parse_expiry
    from wanforge.store.db import Database
    from wanforge.store.keys import list_keys

    data = ["--data-dir", str(tmp_path)]
    created = runner.invoke(
        app,
        ["keys", "create", "--admin", "--rpm", "60", "--concurrency", "4", "--expires", "2030-01-01", *data],
    )
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[0]
    db = Database(f"sqlite:///{tmp_path / 'wanforge.db'}")
    [row] = list_keys(db)
    assert (row.is_admin, row.rpm, row.concurrency, row.expires_at) == (True, 60, 4, datetime(2030, 1, 1))
    listed = runner.invoke(app, ["keys", "list", *data]).stdout
    assert "admin" in listed and "expires 2030-01-01 00:00" in listed and "rpm 60, concurrency 4" in listed
    updated = runner.invoke(
        app,
        ["keys", "update", key[:8], "--rpm", "0", "--concurrency", "default", "--expires", "never", *data],
    )
    assert updated.exit_code == 0, updated.output
    [row] = list_keys(db)
    assert (row.rpm, row.concurrency, row.expires_at) == (0, None, None)
    assert "rpm unlimited, concurrency default" in runner.invoke(app, ["keys", "list", *data]).stdout
    bad = runner.invoke(app, ["keys", "update", key[:8], "--rpm", "lots", *data])
    assert bad.exit_code != 0 and "--rpm" in bad.output
    assert runner.invoke(app, ["keys", "update", "nomatch", "--rpm", "1", *data]).exit_code == 1
    db.dispose()
    now = datetime(2026, 5, 1, 12, 0)
    assert parse_expiry("30d", now) == now + timedelta(days=30)
    assert parse_expiry("90m", now) == now + timedelta(minutes=90)
    assert parse_expiry("2026-06-01T12:00:00+02:00", now) == datetime(2026, 6, 1, 10, 0)
    assert parse_expiry("never", now) is None


def test_keys_weight_and_queue_cap(tmp_path: Path) -> None:
    from wanforge.store.db import Database
    from wanforge.store.keys import list_keys

    data = ["--data-dir", str(tmp_path)]
    created = runner.invoke(app, ["keys", "create", "--weight", "2.5", "--max-queued", "5", *data])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[0]
    assert "weight 2.5, queue 5" in runner.invoke(app, ["keys", "list", *data]).stdout
    for bad in ("0", "-1", "nan", "1001"):
        refused = runner.invoke(app, ["keys", "update", key[:8], "--weight", bad, *data])
        assert refused.exit_code != 0 and "--weight" in refused.output, refused.output
    updated = runner.invoke(
        app, ["keys", "update", key[:8], "--weight", "0.5", "--max-queued", "default", *data]
    )
    assert updated.exit_code == 0, updated.output
    db = Database(f"sqlite:///{tmp_path / 'wanforge.db'}")
    [row] = list_keys(db)
    assert (row.weight, row.max_queued) == (0.5, None)
    db.dispose()
    assert "weight 0.5, queue default" in runner.invoke(app, ["keys", "list", *data]).stdout


def test_keys_storage_quota_and_what_is_stored(tmp_path: Path) -> None:
    from wanforge.store import uploads
    from wanforge.store.db import Database
    from wanforge.store.keys import list_keys

    data = ["--data-dir", str(tmp_path)]
    created = runner.invoke(app, ["keys", "create", "--storage-quota", "2GiB", *data])
    assert created.exit_code == 0, created.output
    db = Database(f"sqlite:///{tmp_path / 'wanforge.db'}")
    [row] = list_keys(db)
    assert row.storage_quota == 2 * 1024**3
    done = uploads.create_upload(
        db, key="uploads/a/x.png", filename="x.png", content_type="image/png", declared_size=None,
        put_token=None, api_key_id=row.id,
    )  # fmt: skip
    uploads.mark_complete(db, done.id, 3 * 1024**2)
    db.dispose()
    assert "storage 3.0 MiB of 2.0 GiB" in runner.invoke(app, ["keys", "list", *data]).stdout
    key = created.stdout.strip().splitlines()[0]
    bad = runner.invoke(app, ["keys", "update", key[:8], "--storage-quota", "lots", *data])
    assert bad.exit_code != 0 and "--storage-quota" in bad.output
    assert runner.invoke(app, ["keys", "update", key[:8], "--storage-quota", "0", *data]).exit_code == 0
    assert "storage 3.0 MiB of unlimited" in runner.invoke(app, ["keys", "list", *data]).stdout


def test_generate_writes_an_mp4(tmp_path: Path) -> None:
    from wanforge.training.videos import probe_video

    image = tmp_path / "in.png"
    image.write_bytes(png_bytes(160, 90))
    out = tmp_path / "out.mp4"
    result = runner.invoke(
        app, ["generate", str(image), "-p", "waves", "--resolution", "480p", "--seed", "5", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    info = probe_video(out)
    assert (info.width, info.height, info.frames, info.fps) == (832, 480, 81, 16)
    assert "seed 5" in result.stdout


@pytest.mark.parametrize(
    ("args", "hint"), [(["--resolution", "4k"], "--resolution"), (["--seed", "-2"], "--seed")]
)
def test_generate_refuses_bad_options(tmp_path: Path, args: list[str], hint: str) -> None:
    image = tmp_path / "in.png"
    image.write_bytes(png_bytes())
    result = runner.invoke(app, ["generate", str(image), "-p", "x", *args])
    assert result.exit_code != 0 and hint in result.output


def test_train_writes_two_loras(tmp_path: Path) -> None:
    from tests.training.synthetic import make_dataset_zip

    data = make_dataset_zip(tmp_path / "d.zip", {"a.mp4": "a square slides right"}, frames=24)
    out = tmp_path / "loras"
    result = runner.invoke(app, ["train", str(data), "--steps", "50", "--lora-rank", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in out.iterdir())
    assert files == ["p3r5on_high_noise.safetensors", "p3r5on_low_noise.safetensors"]
    with safe_open(str(out / files[0]), "pt") as f:
        assert f.metadata()["expert"] == "high_noise" and f.metadata()["lora_rank"] == "4"


def test_train_refuses_a_hostile_zip(tmp_path: Path) -> None:
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    result = runner.invoke(app, ["train", str(bad), "--steps", "50", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "not a ZIP" in result.output


def test_train_refuses_steps_out_of_range(tmp_path: Path) -> None:
    bad = tmp_path / "d.zip"
    bad.write_bytes(b"x")
    result = runner.invoke(app, ["train", str(bad), "--steps", "10"])
    assert result.exit_code != 0 and "--steps" in result.output


def _lora(path: Path, fill: float = 1.0) -> Path:
    import numpy as np
    from safetensors.numpy import save_file

    save_file({"blocks.0.lora_A.weight": np.full((2, 4), fill, dtype=np.float32)}, str(path))
    return path


class _Captured:
    """Stands in for the engine: records the request, returns 9 black frames."""

    requests: ClassVar[list[object]] = []

    def __init__(self, loaded: object, *args: object, **kwargs: object) -> None:
        pass

    def generate(self, req: object, **kwargs: object) -> object:
        import numpy as np

        from wanforge.engine.generate import GenerationResult

        self.requests.append(req)
        return GenerationResult(np.zeros((9, 16, 16, 3), np.uint8), 16, 1, 16, 16)


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    from wanforge.engine import generate
    from wanforge.worker import tasks

    monkeypatch.setattr(generate, "Engine", _Captured)
    monkeypatch.setattr(tasks, "Engine", _Captured)  # the CLI builds it with tasks.build_engine
    monkeypatch.setattr(tasks, "load_model", lambda *a, **k: None)
    _Captured.requests = []
    return _Captured.requests


def test_generate_passes_loras_last_image_and_duration(tmp_path: Path, captured: list[object]) -> None:
    import hashlib

    image, last = tmp_path / "in.png", tmp_path / "last.png"
    image.write_bytes(png_bytes(160, 90))
    last.write_bytes(png_bytes(64, 48, seed=3))
    both, high, low = (_lora(tmp_path / f"{n}.safetensors", i) for i, n in enumerate(("both", "high", "low")))
    args = ["generate", str(image), "-p", "x", "--seed", "1", "-o", str(tmp_path / "o.mp4")]
    args += ["--duration", "8", "--last-image", str(last), "--lora", str(both)]
    args += [
        "--high-noise-lora",
        f"{high}:0.5",
        "--high-noise-lora",
        f"{both}:4",
        "--low-noise-lora",
        f"{low}:0",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (req,) = captured
    assert req.duration_s == 8 and req.last_image.size == (64, 48)  # type: ignore[attr-defined]
    assert [(r.file, r.scale, sorted(r.experts), r.name) for r in req.loras] == [  # type: ignore[attr-defined]
        (both, 1.0, ["high_noise", "low_noise"], "both.safetensors"),
        (high, 0.5, ["high_noise"], "high.safetensors"),
        (both, 4.0, ["high_noise"], "both.safetensors"),
        (low, 0.0, ["low_noise"], "low.safetensors"),
    ]
    assert req.loras[0].sha256 == hashlib.sha256(both.read_bytes()).hexdigest()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("--lora", "{lora}:5", "SCALE must be in 0..4, got 5"),
        ("--lora", "{lora}:-1", "SCALE must be in 0..4, got -1"),
        ("--high-noise-lora", "{lora}:strong", "SCALE after ':' must be a number"),
        ("--low-noise-lora", "{dir}/missing.safetensors", "no such file"),
        ("--lora", "{dir}/model.pt", "convert it to .safetensors"),
        ("--lora", "{dir}/fake.safetensors", "not a safetensors file"),
        ("--duration", "6", "must be 5 or 8"),
    ],
)
def test_generate_refuses_bad_lora_options(
    tmp_path: Path, captured: list[object], option: str, value: str, needle: str
) -> None:
    image = tmp_path / "in.png"
    image.write_bytes(png_bytes())
    (tmp_path / "model.pt").write_bytes(b"PK\x03\x04")
    (tmp_path / "fake.safetensors").write_bytes(b"<html>nope</html>")
    lora = _lora(tmp_path / "ok.safetensors")
    result = runner.invoke(
        app, ["generate", str(image), "-p", "x", option, value.format(lora=lora, dir=tmp_path)]
    )
    assert result.exit_code == 2, result.output
    assert option in result.output and needle in " ".join(result.output.split())
    assert captured == []


def test_generate_takes_at_most_3_loras_per_list(tmp_path: Path, captured: list[object]) -> None:
    image = tmp_path / "in.png"
    image.write_bytes(png_bytes())
    lora = str(_lora(tmp_path / "ok.safetensors"))
    result = runner.invoke(app, ["generate", str(image), "-p", "x", *["--low-noise-lora", lora] * 4])
    assert result.exit_code == 2 and "at most 3" in result.output and "--low-noise-lora" in result.output


@pytest.mark.parametrize("command", [["serve"], ["worker"], ["keys", "list"]])
def test_a_bad_setting_is_named_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    monkeypatch.setenv("WANFORGE_WORKER_TASKS", "everything")
    monkeypatch.setenv("WANFORGE_TRAIN_FRAMES", "30")
    result = runner.invoke(app, [*command, "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        "invalid settings:",
        "  WANFORGE_WORKER_TASKS: String should match pattern '^(generate|train)(,(generate|train))*$' "
        "(got 'everything')",
        "  WANFORGE_TRAIN_FRAMES: WANFORGE_TRAIN_FRAMES must be 4k+1 (5, 9, ..., 81), got 30",
    ]
    assert "Traceback" not in result.output


def test_an_infinite_lora_cache_is_refused_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """WANFORGE_LORA_CACHE_GB=inf was accepted, then failed every job that fetched a LoRA when the
    cache was pruned (int(inf)); it is refused at start, naming the setting."""
    monkeypatch.setenv("WANFORGE_LORA_CACHE_GB", "inf")
    result = runner.invoke(app, ["keys", "list", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        "invalid settings:",
        "  WANFORGE_LORA_CACHE_GB: Input should be a finite number (got 'inf')",
    ]


def test_a_setting_pair_that_does_not_fit_is_named_without_the_other_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A check across settings has no one setting to name: its message names them; no 'WANFORGE_:'
    and no dump of every setting given (a database password among them)."""
    monkeypatch.setenv("WANFORGE_ULTRA_FAST_HIGH_NOISE_LORA", str(tmp_path / "h.safetensors"))
    monkeypatch.setenv("WANFORGE_DATABASE_URL", "postgresql://u:s3cret@db.example/w")
    result = runner.invoke(app, ["keys", "list", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        "invalid settings:",
        "  set both WANFORGE_ULTRA_FAST_HIGH_NOISE_LORA and WANFORGE_ULTRA_FAST_LOW_NOISE_LORA "
        "(one distill LoRA per expert), or neither",
    ]


def test_plan_prints_the_plan_a_worker_takes_on_a_card(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANFORGE_FP8", raising=False)
    result = runner.invoke(app, ["plan", "--gpu", "h100-80gb"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "plan for h100-80gb (79.6 GiB, sm90): 1280x720, 81 frames"
    assert lines[1] == "  memory mode      text_encoder_offload (on the GPU: transformer, transformer_2, vae)"
    assert lines[-1].startswith("  predicted peak   71.6 GiB (weights 53.8, activations 17.8;")
    assert lines[-1].endswith("of 77.1 GiB available: fits")


def test_plan_as_json_and_the_settings_it_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    monkeypatch.setenv("WANFORGE_FP8", "auto")
    result = runner.invoke(app, ["plan", "--gpu", "l40s-48gb", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert (plan["memory_mode"], plan["fp8"], plan["vae_tiled"], plan["fits"]) == (
        "text_encoder_offload",
        "compute",
        True,
        True,
    )
    assert plan["gpu"]["capability"] == [8, 9]
    assert plan["card"] == "l40s-48gb"
    assert plan["peak_bytes"] == plan["weights_bytes"] + plan["activation_bytes"]


def test_plan_for_training_that_does_not_fit_says_what_would(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANFORGE_TRAIN_FRAMES", raising=False)
    result = runner.invoke(app, ["plan", "--gpu", "24gb", "--capability", "8.9", "--train", "--rank", "32"])
    assert result.exit_code == 1, result.output
    assert "33-frame 480x832 windows, LoRA rank 32" in result.output
    assert "does not fit" in result.output
    assert (
        "  to fit           set WANFORGE_TRAIN_FP8_BASE=1 and WANFORGE_TRAIN_OFFLOAD=activations"
        in result.output
    )


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["--gpu", "h100"], "--gpu"),
        (["--gpu", "h100-80gb", "--resolution", "4k"], "--resolution"),
        (["--gpu", "h100-80gb", "--frames", "80"], "--frames"),
        (["--gpu", "h100-80gb", "--train", "--rank", "0"], "--rank"),
        (["--gpu", "24gb", "--capability", "ada"], "--capability"),
    ],
)
def test_plan_refuses_bad_input_naming_the_flag(args: list[str], hint: str) -> None:
    result = runner.invoke(app, ["plan", *args])
    assert result.exit_code == 2
    assert hint in result.output


def test_plan_refuses_a_setting_the_card_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANFORGE_FP8", "compute")
    result = runner.invoke(app, ["plan", "--gpu", "a100-80gb"])
    assert result.exit_code == 2
    assert result.output.startswith("error: WANFORGE_FP8=compute needs a CUDA GPU of compute capability 8.9")
